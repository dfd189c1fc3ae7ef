#include "datasets/shard_builder.h"

#include <glog/logging.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <thread>

#include "datasets/image_decode.h"
#include "datasets/manifest.h"

namespace dcae::datasets {

namespace fs = std::filesystem;

namespace {

// One decoded and cropped input, ready to append; `error` set when the file was skipped.
struct Prepared {
  Tensor image;
  std::vector<uint8_t> bytes;
  std::string error;
};

Prepared prepare_one(const InputImage& input, const ShardBuildOptions& options) {
  Prepared out;
  try {
    Tensor image = prepare_image(read_image_file(input.path), options.resolution, options.crop);
    if (options.storage == ShardStorage::raw) out.image = std::move(image);
    else out.bytes = options.codec == "png" ? encode_png(image) : encode_jpeg(image, options.jpeg_quality);
  } catch (const std::exception& e) {  // dcae::Error for bad data; bad_alloc for absurd image sizes
    out.error = e.what();
  }
  return out;
}

// Refuses an output folder that holds anything unless overwrite is set; then removes only what a run writes.
void prepare_output_dir(const ShardBuildOptions& options) {
  const fs::path dir(options.output_dir);
  if (fs::exists(dir)) {
    DCAE_CHECK(fs::is_directory(dir), "output '", options.output_dir, "' exists and is not a folder");
    const bool empty = fs::directory_iterator(dir) == fs::directory_iterator();
    DCAE_CHECK(empty || options.overwrite, "output folder '", options.output_dir,
               "' is not empty; refusing to overwrite it (pass --overwrite to replace an earlier run)");
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      const bool ours = name == kManifestFile || name == kClassesFile || entry.path().extension() == ".h5" ||
                        entry.path().extension() == ".partial";
      if (ours && entry.is_regular_file()) fs::remove(entry.path());
    }
  } else {
    fs::create_directories(dir);
  }
}

std::string format_seconds(double seconds) {
  char text[32];
  if (seconds < 120) std::snprintf(text, sizeof(text), "%.0f s", seconds);
  else if (seconds < 7200) std::snprintf(text, sizeof(text), "%.1f min", seconds / 60);
  else std::snprintf(text, sizeof(text), "%.1f h", seconds / 3600);
  return text;
}

}  // namespace

std::string shard_file_name(int64_t index) {
  char name[32];
  std::snprintf(name, sizeof(name), "shard-%05lld.h5", static_cast<long long>(index));
  return name;
}

InputSet list_image_folder(const std::string& root, bool labels_from_folders) {
  DCAE_CHECK(fs::is_directory(root), "input folder '", root, "' does not exist or is not a folder");
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(root, fs::directory_options::follow_directory_symlink))
    if (entry.is_regular_file()) files.push_back(fs::relative(entry.path(), root));
  std::sort(files.begin(), files.end());
  InputSet set;
  set.source = root;
  std::map<std::string, int64_t> class_index;
  if (labels_from_folders) {
    for (const fs::path& file : files)
      if (std::distance(file.begin(), file.end()) > 1) class_index.emplace(file.begin()->string(), 0);
    for (auto& [name, index] : class_index) {
      index = static_cast<int64_t>(set.classes.size());
      set.classes.push_back(name);
    }
  }
  for (const fs::path& file : files) {
    InputImage image{(fs::path(root) / file).string(), file.generic_string(), -1};
    if (labels_from_folders) {
      if (std::distance(file.begin(), file.end()) < 2) {
        set.rejected.push_back(image.path + ": not inside a class folder (--labels-from-folders)");
        continue;
      }
      image.label = class_index.at(file.begin()->string());
    }
    set.images.push_back(std::move(image));
  }
  return set;
}

InputSet list_from_file(const std::string& list_file, bool labels_from_folders) {
  std::ifstream in(list_file);
  DCAE_CHECK(in.good(), "cannot open the input list '", list_file, "'");
  const fs::path base = fs::path(list_file).parent_path();
  InputSet set;
  set.source = list_file;
  std::string line;
  std::map<std::string, int64_t> class_index;
  std::vector<std::string> class_of_image;
  while (std::getline(in, line)) {
    const size_t comment = line.find('#');
    if (comment != std::string::npos) line.erase(comment);
    const size_t first = line.find_first_not_of(" \t\r"), last = line.find_last_not_of(" \t\r");
    if (first == std::string::npos) continue;
    const std::string entry = line.substr(first, last - first + 1);
    const fs::path path = fs::path(entry).is_absolute() ? fs::path(entry) : base / entry;
    set.images.push_back({path.string(), entry, -1});
    class_of_image.push_back(path.parent_path().filename().string());
    if (labels_from_folders) class_index.emplace(class_of_image.back(), 0);
  }
  for (auto& [name, index] : class_index) {
    index = static_cast<int64_t>(set.classes.size());
    set.classes.push_back(name);
  }
  if (labels_from_folders)
    for (size_t i = 0; i < set.images.size(); ++i) set.images[i].label = class_index.at(class_of_image[i]);
  return set;
}

ShardBuildSummary build_shards(const InputSet& inputs, const ShardBuildOptions& options) {
  DCAE_CHECK(!inputs.images.empty(), "no input files found in '", inputs.source, "'");
  DCAE_CHECK(options.resolution > 0, "resolution must be positive, got ", options.resolution);
  DCAE_CHECK(options.images_per_shard > 0, "images per shard must be positive, got ", options.images_per_shard);
  DCAE_CHECK(options.workers > 0, "workers must be positive, got ", options.workers);
  DCAE_CHECK(options.storage == ShardStorage::raw || options.codec == "png" || options.codec == "jpeg",
             "unknown codec '", options.codec, "' (expected png or jpeg)");
  prepare_output_dir(options);

  ShardBuildSummary summary;
  summary.inputs = static_cast<int64_t>(inputs.images.size() + inputs.rejected.size());
  for (const std::string& rejected : inputs.rejected) {
    LOG(WARNING) << "skipping " << rejected;
    summary.skipped_files.push_back(rejected);
  }
  ShardAttributes attributes{options.resolution, crop_method_name(options.crop), options.storage,
                             options.storage == ShardStorage::encoded ? options.codec : "", inputs.source};
  Manifest manifest{kShardFormatVersion, options.resolution, attributes.crop, storage_name(options.storage),
                    attributes.codec, inputs.source, static_cast<int64_t>(inputs.classes.size()), {}};
  std::unique_ptr<ShardWriter> writer;
  const auto finish_shard = [&] {
    writer->close();
    manifest.shards.push_back(
        describe_shard(options.output_dir, fs::path(writer->path()).filename().string(), writer->count()));
    writer.reset();
  };

  const auto start = std::chrono::steady_clock::now();
  auto last_report = start;
  const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  const int64_t total = static_cast<int64_t>(inputs.images.size());
  // Windows of inputs are prepared in parallel, then appended in order.
  const int64_t window = std::max<int64_t>(64, 8 * options.workers);
  for (int64_t begin = 0; begin < total; begin += window) {
    const int64_t end = std::min(total, begin + window);
    std::vector<Prepared> prepared(static_cast<size_t>(end - begin));
    std::atomic<int64_t> next{begin};
    const auto work = [&] {
      for (int64_t i = next++; i < end; i = next++) prepared[i - begin] = prepare_one(inputs.images[i], options);
    };
    std::vector<std::thread> threads;
    for (int t = 1; t < std::min<int64_t>(options.workers, end - begin); ++t) threads.emplace_back(work);
    work();
    for (std::thread& thread : threads) thread.join();

    for (int64_t i = begin; i < end; ++i) {
      Prepared& item = prepared[i - begin];
      const InputImage& input = inputs.images[i];
      if (!item.error.empty()) {
        LOG(WARNING) << "skipping '" << input.path << "': " << item.error;
        summary.skipped_files.push_back(input.path + ": " + item.error);
        continue;
      }
      if (!writer) {
        const std::string file = shard_file_name(static_cast<int64_t>(manifest.shards.size()));
        writer = std::make_unique<ShardWriter>((fs::path(options.output_dir) / file).string(), attributes);
      }
      if (options.storage == ShardStorage::raw) writer->append(item.image, input.label, input.name);
      else writer->append_encoded(item.bytes, input.label, input.name);
      item = Prepared{};  // free the pixels early
      ++summary.written;
      if (writer->count() == options.images_per_shard) finish_shard();
    }
    const auto now = std::chrono::steady_clock::now();
    if (std::chrono::duration<double>(now - last_report).count() >= options.progress_seconds || end == total) {
      last_report = now;
      const double seconds = elapsed(), rate = static_cast<double>(end) / std::max(seconds, 1e-9);
      char line[160];
      std::snprintf(line, sizeof(line), "%lld/%lld files (%.1f%%), %.1f files/s, ETA %s, %lld skipped",
                    static_cast<long long>(end), static_cast<long long>(total), 100.0 * end / total, rate,
                    format_seconds(static_cast<double>(total - end) / std::max(rate, 1e-9)).c_str(),
                    static_cast<long long>(summary.skipped_files.size()));
      LOG(INFO) << line;
    }
  }
  if (writer && writer->count() > 0) finish_shard();
  summary.skipped = static_cast<int64_t>(summary.skipped_files.size());
  DCAE_CHECK(summary.written > 0, "none of the ", summary.inputs, " input files in '", inputs.source,
             "' could be used (all ", summary.skipped, " skipped; see the warnings above)");
  if (!inputs.classes.empty()) write_classes(options.output_dir, inputs.classes);
  write_manifest(options.output_dir, manifest);
  summary.shards = static_cast<int64_t>(manifest.shards.size());
  summary.seconds = elapsed();
  return summary;
}

}  // namespace dcae::datasets
