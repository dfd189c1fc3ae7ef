// Loader throughput (img/s) at 256^2 and 512^2 from raw, PNG-encoded and JPEG-encoded shards with 1, 4 and 8
// worker threads. Synthetic shards are written to a temp folder first (stored at the training resolution, so the
// work per image is read/decode, flip and normalise). Usage: loader_bench [images=96] [batches=24] [batch=16]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <unistd.h>

#include "core/tensor/philox.h"
#include "datasets/image_decode.h"
#include "datasets/loader.h"
#include "datasets/shard_format.h"

using namespace dcae;
using namespace dcae::datasets;

namespace {

// Smooth gradients plus noise: compresses like a photo rather than like noise or a flat colour.
Tensor bench_image(int64_t size, uint64_t seed) {
  Tensor out = empty({size, size, 3}, DType::u8);
  uint8_t* p = out.data<uint8_t>();
  for (int64_t i = 0; i < size * size * 3; ++i) {
    const int64_t y = i / (size * 3), x = (i / 3) % size, c = i % 3;
    const uint32_t noise = philox4x32_10(seed, static_cast<uint64_t>(i)).v[0] % 16;
    p[i] = static_cast<uint8_t>((c == 0 ? x : c == 1 ? y : (x + y) / 2) * 200 / size + noise + seed % 32);
  }
  return out;
}

std::string make_shard(const std::string& dir, int64_t size, int64_t images, const std::string& kind) {
  const std::string path = dir + "/" + kind + "_" + std::to_string(size) + ".h5";
  const bool raw = kind == "raw";
  ShardWriter writer(path, {size, "dmcrop", raw ? ShardStorage::raw : ShardStorage::encoded, raw ? "" : kind, "bench"});
  for (int64_t i = 0; i < images; ++i) {
    const Tensor image = bench_image(size, static_cast<uint64_t>(i));
    if (raw) writer.append(image, i % 1000, "b" + std::to_string(i));
    else writer.append_encoded(kind == "png" ? encode_png(image) : encode_jpeg(image, 95), i % 1000, "b");
  }
  writer.close();
  return path;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t images = argc > 1 ? std::atoll(argv[1]) : 96;
  const int64_t batches = argc > 2 ? std::atoll(argv[2]) : 24;
  const int64_t batch_size = argc > 3 ? std::atoll(argv[3]) : 16;
  const std::string dir = (std::filesystem::temp_directory_path() / ("dcae_loader_bench_" + std::to_string(getpid()))).string();
  std::filesystem::create_directories(dir);
  std::printf("loader_bench: %lld stored images per shard, %lld batches of %lld (timed from loader start), %u cores\n",
              static_cast<long long>(images), static_cast<long long>(batches), static_cast<long long>(batch_size),
              std::thread::hardware_concurrency());
  std::printf("%-6s %-5s %8s %8s %8s   (img/s by worker threads)\n", "res", "store", "1", "4", "8");
  for (int64_t size : {256, 512}) {
    for (const std::string kind : {"raw", "jpeg", "png"}) {
      const std::string shard = make_shard(dir, size, images, kind);
      std::printf("%-6lld %-5s", static_cast<long long>(size), kind.c_str());
      for (int workers : {1, 4, 8}) {
        LoaderOptions options;
        options.shards = {shard};
        options.batch_size = batch_size;
        options.resolution = size;
        options.workers = workers;
        options.prefetch = 2 * workers;
        // Timed from construction (opening the shard, starting threads) so the prefetch head start is counted.
        const auto start = std::chrono::steady_clock::now();
        Loader loader(options);
        for (int64_t b = 0; b < batches; ++b) loader.next();
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::printf(" %8.0f", static_cast<double>(batches * batch_size) / seconds);
        std::fflush(stdout);
      }
      std::printf("\n");
    }
  }
  std::filesystem::remove_all(dir);
  return 0;
}
