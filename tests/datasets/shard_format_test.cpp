#include "datasets/shard_format.h"

#include <gtest/gtest.h>
#include <hdf5.h>

#include <filesystem>
#include <fstream>

#include "datasets/image_decode.h"
#include "datasets/manifest.h"
#include "tests/datasets/datasets_testing.h"

namespace dcae::datasets {
namespace {

using testing::ScratchDir;
using testing::synthetic_image;
using testing::throws_with;
namespace fs = std::filesystem;

ShardAttributes raw_attributes(int64_t resolution) { return {resolution, "dmcrop", ShardStorage::raw, "", "unit-test"}; }

std::string write_raw_shard(const std::string& path, int64_t count, int64_t h, int64_t w, uint64_t seed) {
  ShardWriter writer(path, raw_attributes(std::max(h, w)));
  for (int64_t i = 0; i < count; ++i)
    writer.append(synthetic_image(h, w, seed + i), i % 3 - 1, "img_" + std::to_string(i) + ".png");
  writer.close();
  return path;
}

void flip_byte(const std::string& path, std::streamoff at) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(at);
  char c = 0;
  file.get(c);
  file.seekp(at);
  file.put(static_cast<char>(c ^ 0x41));
}

TEST(ShardFormat, RawShardsRoundTripImagesLabelsNamesAndAttributes) {
  ScratchDir dir("shard_raw");
  const std::string path = dir / "a.h5";
  std::vector<Tensor> images;
  {
    ShardWriter writer(path, {7, "resize", ShardStorage::raw, "", "/data/in"});
    const std::vector<std::string> names = {"cats/1.jpg", "d\xC3\xBCr/zwei.png", "x"};
    for (int i = 0; i < 3; ++i) {
      images.push_back(synthetic_image(5, 7, 40 + i));
      // Non-contiguous input: a transposed view of a [7, 5, 3] image.
      if (i == 1) writer.append(images.back().transpose(0, 1).contiguous().transpose(0, 1), 4, names[i]);
      else writer.append(images.back(), i == 0 ? 2 : -1, names[i]);
    }
    EXPECT_FALSE(fs::exists(path));  // only the temp file exists until close
    writer.close();
  }
  EXPECT_TRUE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".partial"));
  const ShardReader reader(path);
  ASSERT_EQ(reader.size(), 3);
  EXPECT_EQ(reader.image_shape(), (Shape{5, 7, 3}));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(reader.image(i).to_vector<uint8_t>(), images[i].to_vector<uint8_t>()) << i;
  EXPECT_EQ(reader.labels(), (std::vector<int64_t>{2, 4, -1}));
  EXPECT_EQ(reader.name(1), "d\xC3\xBCr/zwei.png");
  EXPECT_EQ(reader.attributes().resolution, 7);
  EXPECT_EQ(reader.attributes().crop, "resize");
  EXPECT_EQ(reader.attributes().source, "/data/in");
  EXPECT_EQ(reader.attributes().storage, ShardStorage::raw);
  std::vector<uint8_t> raw(5 * 7 * 3);
  reader.read_raw(2, raw.data());
  EXPECT_EQ(raw, images[2].to_vector<uint8_t>());
  EXPECT_TRUE(throws_with([&] { reader.image(3); }, {path, "index 3 out of range [0, 3)"}));
  EXPECT_TRUE(throws_with([&] { reader.encoded(0); }, {path, "raw"}));
}

TEST(ShardFormat, EncodedShardsKeepTheBytesAndDecode) {
  ScratchDir dir("shard_encoded");
  const std::string path = dir / "e.h5";
  const Tensor a = synthetic_image(6, 6, 1), b = synthetic_image(6, 6, 2);
  const std::vector<uint8_t> png = encode_png(a), jpeg = encode_jpeg(b, 90);
  {
    ShardWriter writer(path, {6, "dmcrop", ShardStorage::encoded, "png", "src"});
    writer.append_encoded(png, 0, "a.png");
    writer.append_encoded(jpeg, 1, "b.jpg");
    EXPECT_TRUE(throws_with([&] { writer.append(a, 0, "c"); }, {path, "append_encoded"}));
    writer.close();
  }
  const ShardReader reader(path);
  ASSERT_EQ(reader.size(), 2);
  EXPECT_EQ(reader.attributes().storage, ShardStorage::encoded);
  EXPECT_EQ(reader.attributes().codec, "png");
  EXPECT_EQ(reader.encoded(0), png);
  EXPECT_EQ(reader.encoded(1), jpeg);
  EXPECT_EQ(reader.image(0).to_vector<uint8_t>(), a.to_vector<uint8_t>());
  EXPECT_EQ(reader.image(1).to_vector<uint8_t>(), decode_image(jpeg, "b").to_vector<uint8_t>());
  EXPECT_EQ(reader.image_shape(), (Shape{6, 6, 3}));
}

TEST(ShardFormat, EmptyShardsAndAbandonedWritersLeaveNoPartialFiles) {
  ScratchDir dir("shard_empty");
  { ShardWriter writer(dir / "empty.h5", raw_attributes(4)); writer.close(); }
  const ShardReader empty(dir / "empty.h5");
  EXPECT_EQ(empty.size(), 0);
  EXPECT_EQ(empty.image_shape(), (Shape{4, 4, 3}));
  {
    ShardWriter writer(dir / "abandoned.h5", raw_attributes(4));
    writer.append(synthetic_image(4, 4, 1), 0, "a");
  }
  EXPECT_FALSE(fs::exists(dir / "abandoned.h5"));
  EXPECT_FALSE(fs::exists(dir / "abandoned.h5.partial"));
}

TEST(ShardFormat, WriterRejectsMismatchedImages) {
  ScratchDir dir("shard_writer_errors");
  ShardWriter writer(dir / "w.h5", raw_attributes(4));
  writer.append(synthetic_image(4, 4, 1), 0, "a");
  EXPECT_TRUE(throws_with([&] { writer.append(synthetic_image(4, 5, 1), 0, "b"); }, {"[4, 4, 3]", "[4, 5, 3]"}));
  EXPECT_TRUE(throws_with([&] { writer.append(zeros({4, 4, 3}), 0, "c"); }, {"u8", "f32"}));
  EXPECT_TRUE(throws_with([&] { writer.append_encoded({1, 2}, 0, "d"); }, {"raw"}));
  EXPECT_TRUE(throws_with([&] { ShardWriter(dir / "x.h5", {4, "dmcrop", ShardStorage::encoded, "gif", ""}); },
                          {"x.h5", "codec 'gif'"}));
}

TEST(ShardFormat, ReaderNamesTheFileForMissingForeignAndTruncatedShards) {
  ScratchDir dir("shard_reader_errors");
  EXPECT_TRUE(throws_with([&] { ShardReader(dir / "nope.h5"); }, {dir / "nope.h5", "does not exist"}));
  std::ofstream(dir / "text.h5") << "this is not hdf5";
  EXPECT_TRUE(throws_with([&] { ShardReader(dir / "text.h5"); }, {dir / "text.h5", "not an HDF5 file"}));
  const std::string path = write_raw_shard(dir / "t.h5", 4, 8, 8, 3);
  fs::resize_file(path, fs::file_size(path) / 2);
  EXPECT_TRUE(throws_with([&] { ShardReader reader(path); }, {path, "truncated"}));
}

TEST(ShardFormat, ReaderRejectsWrongVersionsAndMissingDatasets) {
  ScratchDir dir("shard_reader_format");
  const std::string version = write_raw_shard(dir / "v.h5", 2, 4, 4, 1);
  const std::string names = write_raw_shard(dir / "n.h5", 2, 4, 4, 1);
  {
    const hid_t file = H5Fopen(version.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Adelete(file, "format_version");
    const hid_t space = H5Screate(H5S_SCALAR);
    const hid_t attribute = H5Acreate2(file, "format_version", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    const int64_t future = 99;
    H5Awrite(attribute, H5T_NATIVE_INT64, &future);
    H5Aclose(attribute);
    H5Sclose(space);
    H5Fclose(file);
    const hid_t other = H5Fopen(names.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(other, "names", H5P_DEFAULT);
    H5Fclose(other);
  }
  EXPECT_TRUE(throws_with([&] { ShardReader reader(version); }, {version, "format_version is 99"}));
  EXPECT_TRUE(throws_with([&] { ShardReader reader(names); }, {names, "'names' is missing"}));
}

TEST(ShardFormat, ManifestRoundTripsAndChecksumsCatchCorruption) {
  ScratchDir dir("manifest");
  {
    std::ofstream(dir / "check.txt") << "123456789";
    EXPECT_EQ(file_crc32(dir / "check.txt"), 0xCBF43926u);  // the standard CRC-32 check value
  }
  Manifest manifest{kShardFormatVersion, 8, "dmcrop", "raw", "", "src", 3, {}};
  for (int s = 0; s < 2; ++s) {
    const std::string file = "shard-" + std::to_string(s) + ".h5";
    write_raw_shard(dir / file, 3 + s, 8, 8, 10 * s);
    manifest.shards.push_back(describe_shard(dir.str(), file, 3 + s));
  }
  write_manifest(dir.str(), manifest);
  const Manifest back = read_manifest(dir.str());
  EXPECT_EQ(back.total(), 7);
  ASSERT_EQ(back.shards.size(), 2u);
  EXPECT_EQ(back.shards[1].crc32, manifest.shards[1].crc32);
  EXPECT_EQ(back.shards[1].bytes, fs::file_size(dir / "shard-1.h5"));
  EXPECT_EQ(back.num_classes, 3);
  EXPECT_EQ(check_shard_file(dir.str(), back.shards[0]), "");
  // A flipped byte in the pixel data is invisible to HDF5 but not to the checksum.
  flip_byte(dir / "shard-0.h5", static_cast<std::streamoff>(back.shards[0].bytes / 2));
  EXPECT_NE(check_shard_file(dir.str(), back.shards[0]).find("fails its checksum"), std::string::npos);
  EXPECT_NE(check_shard_file(dir.str(), back.shards[0]).find("shard-0.h5"), std::string::npos);
  fs::resize_file(dir / "shard-1.h5", 100);
  EXPECT_NE(check_shard_file(dir.str(), back.shards[1]).find("truncated"), std::string::npos);
  fs::remove(dir / "shard-1.h5");
  EXPECT_NE(check_shard_file(dir.str(), back.shards[1]).find("does not exist"), std::string::npos);
  write_classes(dir.str(), {"cat", "dog", "eel"});
  EXPECT_EQ(read_classes(dir.str()), (std::vector<std::string>{"cat", "dog", "eel"}));
  std::ofstream(dir / kManifestFile) << "{\"shards\": 3";
  EXPECT_TRUE(throws_with([&] { read_manifest(dir.str()); }, {"manifest.json", "not valid JSON"}));
  EXPECT_TRUE(throws_with([&] { read_manifest(dir / "elsewhere"); }, {"elsewhere", "does not exist"}));
}

}  // namespace
}  // namespace dcae::datasets
