// The latent shard: round trips of latents, labels, names and attributes; corrupt and wrong files are errors that
// name the file.
#include "datasets/latent_shard.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "datasets/shard_format.h"
#include "tests/datasets/datasets_testing.h"
#include "tests/testing/check.h"

namespace dcae::datasets {
namespace {

using testing::ScratchDir;
using testing::throws_with;
namespace fs = std::filesystem;

LatentShardAttributes some_attributes() {
  LatentShardAttributes attributes;
  attributes.scaling_factor = 0.41407;
  attributes.model = "models/tiny";
  attributes.source_shard = "shards/shard-00003.h5";
  attributes.flipped = true;
  return attributes;
}

// Writes `count` random f32 latents [3, 5, 4] (odd sizes) and returns them stacked [count, 3, 5, 4].
Tensor write_shard(const std::string& path, int64_t count) {
  const Tensor latents = dcae::testing::random_tensor({count, 3, 5, 4}, 11, DType::f32);
  LatentShardWriter writer(path, some_attributes());
  for (int64_t i = 0; i < count; ++i)
    writer.append(latents.select(0, i), i % 2 == 0 ? 7 - i : -1, "img" + std::to_string(i) + (i % 2 ? "#flip" : ""));
  EXPECT_EQ(writer.count(), count);
  EXPECT_FALSE(fs::exists(path)) << "visible before close";
  writer.close();
  return latents;
}

TEST(LatentShard, RoundTripsLatentsLabelsNamesAndAttributes) {
  ScratchDir scratch("latent");
  const std::string path = scratch / "a.h5";
  const Tensor latents = write_shard(path, 5);
  EXPECT_FALSE(fs::exists(path + ".partial"));
  const LatentShardReader reader(path);
  ASSERT_EQ(reader.size(), 5);
  EXPECT_EQ(reader.latent_shape(), (Shape{3, 5, 4}));
  EXPECT_EQ(reader.attributes().scaling_factor, 0.41407);
  EXPECT_EQ(reader.attributes().model, "models/tiny");
  EXPECT_EQ(reader.attributes().source_shard, "shards/shard-00003.h5");
  EXPECT_TRUE(reader.attributes().flipped);
  EXPECT_EQ(reader.labels(), (std::vector<int64_t>{7, -1, 5, -1, 3}));
  EXPECT_EQ(reader.name(1), "img1#flip");
  EXPECT_EQ(reader.names().back(), "img4");
  EXPECT_EQ(reader.latents(0, 5).to_vector<float>(), latents.to_vector<float>());  // float32 is stored exactly
  EXPECT_EQ(reader.latent(3).shape(), (Shape{3, 5, 4}));
  EXPECT_EQ(reader.latent(3).to_vector<float>(), latents.select(0, 3).contiguous().to_vector<float>());
  EXPECT_EQ(reader.latents(1, 2).to_vector<float>(), latents.narrow(0, 1, 2).contiguous().to_vector<float>());
  EXPECT_EQ(reader.latents(5, 0).shape(), (Shape{0, 3, 5, 4}));
}

TEST(LatentShard, OtherFloatTypesAndNonContiguousLatentsAreStoredAsFloat32) {
  ScratchDir scratch("latent_types");
  const std::string path = scratch / "b.h5";
  const Tensor f64 = dcae::testing::random_tensor({4, 2, 3}, 12, DType::f64);  // [C, h, w]: permuted below
  const Tensor bf16 = dcae::testing::random_tensor({2, 3, 4}, 13, DType::f32).to(DType::bf16);
  LatentShardWriter writer(path, {});
  writer.append(f64.permute({1, 2, 0}), 0, "a");
  writer.append(bf16, 1, "b");
  writer.close();
  const LatentShardReader reader(path);
  EXPECT_EQ(reader.attributes().scaling_factor, 1.0);
  EXPECT_FALSE(reader.attributes().flipped);
  EXPECT_EQ(reader.latent(0).to_vector<float>(), f64.permute({1, 2, 0}).to(DType::f32).contiguous().to_vector<float>());
  EXPECT_EQ(reader.latent(1).to_vector<float>(), bf16.to(DType::f32).to_vector<float>());
}

TEST(LatentShard, WriterRejectsBadLatentsAndRemovesPartialFiles) {
  ScratchDir scratch("latent_writer");
  const std::string path = scratch / "c.h5";
  {
    LatentShardWriter writer(path, {});
    writer.append(dcae::testing::random_tensor({2, 2, 4}, 14, DType::f32), 0, "a");
    EXPECT_TRUE(throws_with([&] { writer.append(dcae::testing::random_tensor({2, 2, 3}, 15, DType::f32), 0, "b"); },
                            {path, "[2, 2, 4]", "[2, 2, 3]"}));
    EXPECT_TRUE(throws_with([&] { writer.append(dcae::testing::random_tensor({1, 2, 2, 4}, 15), 0, "b"); },
                            {path, "[h, w, C]", "[1, 2, 2, 4]"}));
    EXPECT_TRUE(throws_with([&] { writer.append(zeros({2, 2, 4}, DType::i64), 0, "b"); }, {path, "floating"}));
    EXPECT_TRUE(fs::exists(path + ".partial"));
  }  // destroyed unclosed
  EXPECT_FALSE(fs::exists(path + ".partial"));
  EXPECT_FALSE(fs::exists(path));
  LatentShardWriter empty_writer(path, {});
  EXPECT_TRUE(throws_with([&] { empty_writer.close(); }, {path, "at least one latent"}));
}

TEST(LatentShard, CorruptOrWrongFilesAreErrorsNamingTheFile) {
  ScratchDir scratch("latent_corrupt");
  const std::string missing = scratch / "missing.h5";
  EXPECT_TRUE(throws_with([&] { LatentShardReader{missing}; }, {missing, "does not exist"}));

  const std::string text = scratch / "text.h5";
  std::ofstream(text) << "not an HDF5 file";
  EXPECT_TRUE(throws_with([&] { LatentShardReader{text}; }, {text, "not an HDF5 file"}));

  const std::string good = scratch / "good.h5";
  write_shard(good, 6);
  const std::string truncated = scratch / "truncated.h5";
  fs::copy_file(good, truncated);
  fs::resize_file(truncated, fs::file_size(good) / 2);
  EXPECT_TRUE(throws_with(
      [&] {
        const LatentShardReader reader(truncated);
        for (int64_t i = 0; i < reader.size(); ++i) reader.latent(i);
      },
      {truncated}));

  const std::string image_shard = scratch / "images.h5";
  ShardAttributes image_attributes;
  image_attributes.resolution = 4;
  ShardWriter images(image_shard, image_attributes);
  images.append(testing::synthetic_image(4, 4, 1), 0, "x.png");
  images.close();
  EXPECT_TRUE(throws_with([&] { LatentShardReader{image_shard}; }, {image_shard, "image shard", "dcae-encode"}));

  const LatentShardReader reader(good);
  EXPECT_TRUE(throws_with([&] { reader.latent(6); }, {good, "index 6", "[0, 6)"}));
  EXPECT_TRUE(throws_with([&] { reader.latents(4, 3); }, {good, "[4, 7)"}));
  EXPECT_TRUE(throws_with([&] { reader.name(-1); }, {good, "index -1"}));
  EXPECT_TRUE(throws_with([&] { reader.label(9); }, {good, "index 9"}));
}

}  // namespace
}  // namespace dcae::datasets
