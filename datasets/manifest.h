// manifest.json: the list of shards of a shard folder, with image counts and a CRC-32 (zlib's, as Python's
// zlib.crc32) of each file's bytes; classes.json: the class names of class-per-folder datasets (label = index).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dcae::datasets {

struct ShardEntry {
  std::string file;  // relative to the manifest's folder
  int64_t count = 0;
  uint64_t bytes = 0;
  uint32_t crc32 = 0;
};

struct Manifest {
  int64_t format_version = 0;
  int64_t resolution = 0;
  std::string crop, storage, codec, source;
  int64_t num_classes = 0;  // 0 when the images have no labels
  std::vector<ShardEntry> shards;
  int64_t total() const;
};

constexpr const char* kManifestFile = "manifest.json";
constexpr const char* kClassesFile = "classes.json";

// CRC-32 of a whole file, streamed.
uint32_t file_crc32(const std::string& path);
// Fills bytes and crc32 of an entry from the file dir/entry.file.
ShardEntry describe_shard(const std::string& dir, const std::string& file, int64_t count);

// Writes dir/manifest.json atomically (temp file, then rename).
void write_manifest(const std::string& dir, const Manifest& manifest);
// Reads dir/manifest.json; throws naming the file when it is missing or malformed.
Manifest read_manifest(const std::string& dir);
// "" when dir/entry.file exists with the listed size and checksum, else what is wrong (naming the file).
std::string check_shard_file(const std::string& dir, const ShardEntry& entry);

void write_classes(const std::string& dir, const std::vector<std::string>& classes);
std::vector<std::string> read_classes(const std::string& dir);

// Writes `text` to `path` through a temp file and a rename.
void write_text_atomically(const std::string& path, const std::string& text);

}  // namespace dcae::datasets
