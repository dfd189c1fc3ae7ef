// Turning a folder (or a list) of image files into a folder of shards plus manifest.json (and classes.json):
// the work behind the dcae-shard tool, kept in the library so tests and other tools can call it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "datasets/image_resize.h"
#include "datasets/shard_format.h"

namespace dcae::datasets {

struct InputImage {
  std::string path;    // where to read it
  std::string name;    // what the shard records (path relative to the input folder, or as listed)
  int64_t label = -1;  // class index, -1 without labels
};

struct InputSet {
  std::vector<InputImage> images;  // in a fixed (sorted or listed) order, so shards are reproducible
  std::vector<std::string> classes;
  std::vector<std::string> rejected;  // files that cannot get a label (outside any class folder)
  std::string source;
};

// Every regular file below `root`, recursively, sorted by relative path. With labels_from_folders, the first
// folder level names the class (ImageNet layout; classes sorted, label = index) and top-level files are rejected.
InputSet list_image_folder(const std::string& root, bool labels_from_folders);
// One path per line ('#' starts a comment; relative paths are relative to the list's folder). With
// labels_from_folders, each file's parent folder name is its class.
InputSet list_from_file(const std::string& list_file, bool labels_from_folders);

struct ShardBuildOptions {
  std::string output_dir;
  int64_t resolution = 256;
  int64_t images_per_shard = 1000;
  int workers = 1;
  CropMethod crop = CropMethod::dmcrop;
  ShardStorage storage = ShardStorage::raw;
  std::string codec = "png";  // encoded storage: png (lossless) or jpeg
  int jpeg_quality = 95;
  bool overwrite = false;       // replace the shards, manifest and classes of an earlier run in output_dir
  double progress_seconds = 5;  // interval of the progress log line
};

struct ShardBuildSummary {
  int64_t inputs = 0, written = 0, skipped = 0, shards = 0;
  std::vector<std::string> skipped_files;  // "path: reason"
  double seconds = 0;
};

// Decodes, crops and stores every input (worker threads decode; shards are written in input order, so the result
// does not depend on the thread count). Unreadable inputs are skipped with a warning each. Throws when there is
// no input, when nothing could be used, or when output_dir holds an earlier run and overwrite is off.
ShardBuildSummary build_shards(const InputSet& inputs, const ShardBuildOptions& options);

std::string shard_file_name(int64_t index);  // "shard-00000.h5"

}  // namespace dcae::datasets
