#include "datasets/loader.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>

#include "datasets/image_decode.h"
#include "datasets/image_resize.h"
#include "datasets/manifest.h"
#include "datasets/sampler.h"
#include "datasets/shard_format.h"
#include "tests/datasets/datasets_testing.h"

namespace dcae::datasets {
namespace {

using testing::ScratchDir;
using testing::synthetic_image;
using testing::throws_with;
namespace fs = std::filesystem;

// Shards of `counts[s]` images of [size, size] each; sample k of the set is synthetic_image(size, size, 100 + k)
// with label k % 5. Writes manifest.json too.
std::vector<std::string> make_shards(const ScratchDir& dir, const std::vector<int64_t>& counts, int64_t size,
                                     ShardStorage storage = ShardStorage::raw) {
  std::vector<std::string> paths;
  Manifest manifest{kShardFormatVersion, size, "dmcrop", storage_name(storage), "", "test", 5, {}};
  int64_t k = 0;
  for (size_t s = 0; s < counts.size(); ++s) {
    const std::string file = "shard-" + std::to_string(s) + ".h5";
    ShardWriter writer(dir / file, {size, "dmcrop", storage, storage == ShardStorage::raw ? "" : "png", "test"});
    for (int64_t i = 0; i < counts[s]; ++i, ++k) {
      const Tensor image = synthetic_image(size, size, 100 + k);
      if (storage == ShardStorage::raw) writer.append(image, k % 5, "img" + std::to_string(k));
      else writer.append_encoded(encode_png(image), k % 5, "img" + std::to_string(k));
    }
    writer.close();
    manifest.shards.push_back(describe_shard(dir.str(), file, counts[s]));
    paths.push_back(dir / file);
  }
  write_manifest(dir.str(), manifest);
  return paths;
}

LoaderOptions small_options(const std::vector<std::string>& shards) {
  LoaderOptions o;
  o.shards = shards;
  o.batch_size = 4;
  o.resolution = 8;
  o.seed = 7;
  o.workers = 2;
  o.prefetch = 3;
  return o;
}

std::vector<Batch> take(Loader& loader, int n) {
  std::vector<Batch> out;
  for (int i = 0; i < n; ++i) out.push_back(loader.next());
  return out;
}

void expect_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].samples, b[i].samples) << "batch " << i;
    EXPECT_EQ(a[i].epoch, b[i].epoch);
    EXPECT_EQ(a[i].index, b[i].index);
    EXPECT_EQ(a[i].labels.to_vector<int64_t>(), b[i].labels.to_vector<int64_t>());
    EXPECT_EQ(a[i].images.to_vector<float>(), b[i].images.to_vector<float>()) << "batch " << i;
  }
}

// The reference for one output image: crop at the draw, optional mirror, (x/255 - 0.5)/0.5.
std::vector<float> expected_sample(const Tensor& stored, int64_t r, const AugmentDraw& draw) {
  std::vector<float> out;
  for (int64_t y = 0; y < r; ++y)
    for (int64_t x = 0; x < r; ++x)
      for (int64_t c = 0; c < 3; ++c) {
        const int64_t sx = draw.left + (draw.flip ? r - 1 - x : x);
        const double v = stored.select(0, draw.top + y).select(0, sx).select(0, c).item<double>();
        out.push_back(static_cast<float>((v / 255.0 - 0.5) / 0.5));
      }
  return out;
}

TEST(Loader, BatchesHoldCroppedFlippedNormalisedImagesAndLabels) {
  ScratchDir dir("loader_values");
  const auto shards = make_shards(dir, {5, 6}, 12);
  Loader loader(small_options(shards));
  EXPECT_EQ(loader.dataset_size(), 11);
  EXPECT_EQ(loader.batches_per_epoch(), 2);
  int flips = 0;
  std::set<std::pair<int64_t, int64_t>> origins;
  for (const Batch& batch : take(loader, 4)) {
    ASSERT_EQ(batch.images.shape(), (Shape{4, 8, 8, 3}));
    ASSERT_EQ(batch.labels.dtype(), DType::i64);
    for (int64_t i = 0; i < 4; ++i) {
      const int64_t k = batch.samples[i];
      const AugmentDraw draw = augment_draw(7, batch.epoch, k, 4, 4);
      flips += draw.flip;
      origins.insert({draw.top, draw.left});
      EXPECT_EQ(batch.images.select(0, i).to_vector<float>(), expected_sample(synthetic_image(12, 12, 100 + k), 8, draw));
      EXPECT_EQ(batch.labels.to_vector<int64_t>()[i], k % 5);
    }
  }
  EXPECT_GT(flips, 0);
  EXPECT_LT(flips, 16);
  EXPECT_GT(origins.size(), 3u);
  // Centre crop without flips and the full range: -1 for 0 and 1 for 255 exactly.
  LoaderOptions plain = small_options(shards);
  plain.random_crop = plain.horizontal_flip = false;
  Loader centre(plain);
  const Batch batch = centre.next();
  EXPECT_EQ(batch.images.select(0, 0).to_vector<float>(),
            expected_sample(synthetic_image(12, 12, 100 + batch.samples[0]), 8, {2, 2, false}));
}

TEST(Loader, BatchesDoNotDependOnWorkerCountOrPrefetchAndEpochsReshuffle) {
  ScratchDir dir("loader_determinism");
  const auto shards = make_shards(dir, {7, 6}, 10);
  LoaderOptions one = small_options(shards), many = small_options(shards);
  one.workers = 1;
  one.prefetch = 1;
  many.workers = 4;
  many.prefetch = 6;
  Loader a(one), b(many);
  const auto batches = take(a, 9);
  expect_same_batches(batches, take(b, 9));
  // 13 images, batches of 4 with drop_last: 3 batches per epoch; epochs 0, 1 and 2 use different orders.
  EXPECT_EQ(batches[3].epoch, 1);
  EXPECT_EQ(batches[3].index, 0);
  EXPECT_NE(batches[0].samples, batches[3].samples);
  LoaderOptions other_seed = small_options(shards);
  other_seed.seed = 8;
  Loader c(other_seed);
  EXPECT_NE(c.next().samples, batches[0].samples);
}

TEST(Loader, ResumingFromASavedStateGivesExactlyTheFollowingBatches) {
  ScratchDir dir("loader_resume");
  const auto shards = make_shards(dir, {9}, 10);
  LoaderOptions options = small_options(shards);
  options.drop_last = false;  // 9 images: batches of 4, 4, 1 per epoch
  Loader original(options);
  take(original, 2);
  const LoaderState saved = original.state();
  EXPECT_EQ(saved, (LoaderState{0, 2}));
  const auto expected = take(original, 5);  // crosses into epoch 1 and on into epoch 2
  EXPECT_EQ(expected[0].images.size(0), 1);
  EXPECT_EQ(expected[1].epoch, 1);
  const LoaderState restored = LoaderState::parse(saved.to_string());
  EXPECT_EQ(restored, saved);
  Loader resumed(options, restored);
  EXPECT_EQ(resumed.state(), saved);
  expect_same_batches(expected, take(resumed, 5));
  EXPECT_TRUE(throws_with([&] { LoaderState::parse("epoch=1"); }, {"epoch=1"}));
  EXPECT_TRUE(throws_with([&] { Loader(options, {0, 3}); }, {"epoch=0 batch=3", "3 batches"}));
}

TEST(Loader, RanksReadDisjointPartsThatCoverTheDataset) {
  ScratchDir dir("loader_ranks");
  const auto shards = make_shards(dir, {6, 5, 3}, 8);  // 14 images
  for (bool drop_last : {false, true}) {
    for (int64_t epoch : {0, 3}) {
      std::multiset<int64_t> seen;
      std::vector<int64_t> sizes;
      for (int64_t rank = 0; rank < 3; ++rank) {
        LoaderOptions o = small_options(shards);
        o.batch_size = 1;
        o.resolution = 4;
        o.world_size = 3;
        o.rank = rank;
        o.drop_last = drop_last;
        Loader loader(o, {epoch, 0});
        sizes.push_back(loader.samples_per_epoch());
        for (int64_t b = 0; b < loader.batches_per_epoch(); ++b) {
          const Batch batch = loader.next();
          EXPECT_EQ(batch.epoch, epoch);
          seen.insert(batch.samples.begin(), batch.samples.end());
        }
      }
      std::set<int64_t> distinct(seen.begin(), seen.end());
      EXPECT_EQ(distinct.size(), seen.size()) << "a sample was read by two ranks";
      if (drop_last) {
        EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4, 4}));
        EXPECT_EQ(seen.size(), 12u);
      } else {
        EXPECT_EQ(sizes, (std::vector<int64_t>{5, 5, 4}));
        EXPECT_EQ(seen.size(), 14u);
        EXPECT_EQ(*distinct.rbegin(), 13);
      }
    }
  }
  // The pure sampler agrees: rank parts of one epoch are an exact partition.
  std::vector<int64_t> all;
  for (int64_t rank = 0; rank < 4; ++rank) {
    const auto part = rank_samples(10, 3, 2, true, rank, 4, false);
    all.insert(all.end(), part.begin(), part.end());
  }
  std::sort(all.begin(), all.end());
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(all[i], i);
}

TEST(Loader, OneShardSetServesSeveralResolutionsAndEncodedEqualsRaw) {
  ScratchDir raw_dir("loader_raw"), encoded_dir("loader_encoded");
  const auto raw = make_shards(raw_dir, {5}, 12);
  const auto encoded = make_shards(encoded_dir, {5}, 12, ShardStorage::encoded);
  LoaderOptions o = small_options(raw);
  LoaderOptions e = small_options(encoded);
  Loader from_raw(o), from_encoded(e);
  expect_same_batches(take(from_raw, 3), take(from_encoded, 3));
  // 6^2 from the 12^2 shards by scaling first (box halving), centre crop, no flip.
  o.resolution = 6;
  o.resize = true;
  o.random_crop = o.horizontal_flip = false;
  Loader scaled(o);
  const Batch batch = scaled.next();
  ASSERT_EQ(batch.images.shape(), (Shape{4, 6, 6, 3}));
  const Tensor reference = resize_short_side(synthetic_image(12, 12, 100 + batch.samples[1]), 6);
  EXPECT_EQ(batch.images.select(0, 1).to_vector<float>(), expected_sample(reference, 6, {0, 0, false}));
  // Asking for more than is stored, without resize, names the shard and both sizes.
  LoaderOptions too_big = small_options(raw);
  too_big.resolution = 16;
  EXPECT_TRUE(throws_with([&] { Loader loader(too_big); }, {raw[0], "12x12", "16"}));
}

TEST(Loader, MissingOrCorruptShardsStopWithTheFileNamedOrAreSkipped) {
  ScratchDir dir("loader_bad");
  auto shards = make_shards(dir, {5, 5, 5}, 8);
  LoaderOptions o = small_options(shards);
  o.shards.push_back(dir / "gone.h5");
  EXPECT_TRUE(throws_with([&] { Loader loader(o); }, {"gone.h5", "does not exist"}));
  o.skip_bad_shards = true;
  {
    Loader loader(o);
    EXPECT_EQ(loader.dataset_size(), 15);
    EXPECT_EQ(loader.shard_paths(), shards);
  }
  // Through the manifest: a flipped byte is caught by the checksum.
  {
    std::fstream file(shards[1], std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(fs::file_size(shards[1]) / 2));
    file.put('\x7f');
  }
  LoaderOptions m;
  m.shard_dir = dir.str();
  m.verify_checksums = true;
  m.batch_size = 2;
  m.resolution = 8;
  EXPECT_TRUE(throws_with([&] { Loader loader(m); }, {"shard-1.h5", "checksum"}));
  m.skip_bad_shards = true;
  Loader skipping(m);
  EXPECT_EQ(skipping.dataset_size(), 10);
  EXPECT_EQ(skipping.shard_paths().size(), 2u);
  skipping.next();
  LoaderOptions none = small_options({dir / "a.h5", dir / "b.h5"});
  none.skip_bad_shards = true;
  EXPECT_TRUE(throws_with([&] { Loader loader(none); }, {"no usable shards"}));
}

TEST(Loader, AnUndecodableImageStopsTheLoaderWithShardAndIndexNamed) {
  ScratchDir dir("loader_undecodable");
  const std::string path = dir / "bad.h5";
  {
    ShardWriter writer(path, {8, "dmcrop", ShardStorage::encoded, "png", "t"});
    for (int i = 0; i < 4; ++i) {
      std::vector<uint8_t> bytes = encode_png(synthetic_image(8, 8, i));
      if (i == 2) bytes.resize(bytes.size() / 2);
      writer.append_encoded(bytes, 0, "n" + std::to_string(i));
    }
    writer.close();
  }
  LoaderOptions o = small_options({path});
  o.shuffle = false;
  o.batch_size = 2;
  Loader loader(o);
  loader.next();
  EXPECT_TRUE(throws_with([&] { loader.next(); }, {"bad.h5", "image 2", "n2"}));
  EXPECT_EQ(loader.state(), (LoaderState{0, 1}));
  EXPECT_TRUE(throws_with([&] { loader.next(); }, {"bad.h5"}));  // reported again, not skipped silently
}

TEST(Loader, BatchAllocatorHookAndOptionErrors) {
  ScratchDir dir("loader_alloc");
  const auto shards = make_shards(dir, {6}, 8);
  std::atomic<int> calls{0};
  LoaderOptions o = small_options(shards);
  o.allocate = [&](const Shape& shape, DType dtype) {
    ++calls;
    return empty(shape, dtype);
  };
  {
    Loader loader(o);
    loader.next();
  }
  EXPECT_GE(calls.load(), 1);
  o.allocate = [](const Shape& shape, DType) { return empty(shape, DType::f64); };
  Loader wrong(o);
  EXPECT_TRUE(throws_with([&] { wrong.next(); }, {"batch allocator", "f64"}));
  LoaderOptions bad = small_options(shards);
  bad.rank = 2;
  bad.world_size = 2;
  EXPECT_TRUE(throws_with([&] { Loader loader(bad); }, {"rank 2", "size 2"}));
  bad = small_options(shards);
  bad.batch_size = 7;
  EXPECT_TRUE(throws_with([&] { Loader loader(bad); }, {"6", "batch of 7"}));
  bad = small_options(shards);
  bad.shard_dir = dir.str();
  EXPECT_TRUE(throws_with([&] { Loader loader(bad); }, {"not both"}));
}

}  // namespace
}  // namespace dcae::datasets
