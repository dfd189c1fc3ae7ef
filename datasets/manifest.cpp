#include "datasets/manifest.h"

#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/tensor/error.h"

namespace dcae::datasets {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string join(const std::string& dir, const std::string& file) { return (fs::path(dir) / file).string(); }

json read_json(const std::string& path) {
  std::ifstream in(path);
  DCAE_CHECK(in.good(), "cannot open '", path, "'");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    DCAE_FAIL("'", path, "' is not valid JSON: ", e.what());
  }
}

}  // namespace

int64_t Manifest::total() const {
  int64_t n = 0;
  for (const ShardEntry& shard : shards) n += shard.count;
  return n;
}

uint32_t file_crc32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DCAE_CHECK(in.good(), "cannot open '", path, "' to checksum it");
  std::vector<char> buffer(1 << 20);
  uLong crc = crc32(0L, Z_NULL, 0);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize got = in.gcount();
    if (got > 0) crc = crc32(crc, reinterpret_cast<const Bytef*>(buffer.data()), static_cast<uInt>(got));
  }
  DCAE_CHECK(in.eof(), "error while reading '", path, "' to checksum it");
  return static_cast<uint32_t>(crc);
}

ShardEntry describe_shard(const std::string& dir, const std::string& file, int64_t count) {
  const std::string path = join(dir, file);
  ShardEntry entry;
  entry.file = file;
  entry.count = count;
  entry.bytes = fs::file_size(path);
  entry.crc32 = file_crc32(path);
  return entry;
}

void write_text_atomically(const std::string& path, const std::string& text) {
  const std::string temp = path + ".partial";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    DCAE_CHECK(out.good(), "cannot open '", temp, "' for writing");
    out << text;
    out.flush();
    DCAE_CHECK(out.good(), "error while writing '", temp, "'");
  }
  fs::rename(temp, path);
}

void write_manifest(const std::string& dir, const Manifest& manifest) {
  json shards = json::array();
  for (const ShardEntry& s : manifest.shards)
    shards.push_back({{"file", s.file}, {"count", s.count}, {"bytes", s.bytes}, {"crc32", s.crc32}});
  const json document = {{"format_version", manifest.format_version},
                         {"resolution", manifest.resolution},
                         {"crop", manifest.crop},
                         {"storage", manifest.storage},
                         {"codec", manifest.codec},
                         {"source", manifest.source},
                         {"num_classes", manifest.num_classes},
                         {"total", manifest.total()},
                         {"shards", shards}};
  write_text_atomically(join(dir, kManifestFile), document.dump(2) + "\n");
}

Manifest read_manifest(const std::string& dir) {
  const std::string path = join(dir, kManifestFile);
  DCAE_CHECK(fs::exists(path), "no manifest: '", path, "' does not exist");
  const json document = read_json(path);
  Manifest manifest;
  try {
    manifest.format_version = document.at("format_version").get<int64_t>();
    manifest.resolution = document.at("resolution").get<int64_t>();
    manifest.crop = document.value("crop", "");
    manifest.storage = document.at("storage").get<std::string>();
    manifest.codec = document.value("codec", "");
    manifest.source = document.value("source", "");
    manifest.num_classes = document.value("num_classes", int64_t{0});
    for (const json& s : document.at("shards")) {
      ShardEntry entry;
      entry.file = s.at("file").get<std::string>();
      entry.count = s.at("count").get<int64_t>();
      entry.bytes = s.at("bytes").get<uint64_t>();
      entry.crc32 = s.at("crc32").get<uint32_t>();
      manifest.shards.push_back(entry);
    }
  } catch (const json::exception& e) {
    DCAE_FAIL("manifest '", path, "' is malformed: ", e.what());
  }
  return manifest;
}

std::string check_shard_file(const std::string& dir, const ShardEntry& entry) {
  const std::string path = join(dir, entry.file);
  std::error_code error;
  if (!fs::exists(path, error)) return "shard '" + path + "' listed in the manifest does not exist";
  const uint64_t bytes = fs::file_size(path, error);
  if (bytes != entry.bytes) {
    std::ostringstream out;
    out << "shard '" << path << "' has " << bytes << " bytes but the manifest lists " << entry.bytes
        << " (truncated or replaced)";
    return out.str();
  }
  const uint32_t crc = file_crc32(path);
  if (crc != entry.crc32) {
    std::ostringstream out;
    out << "shard '" << path << "' fails its checksum (crc32 " << crc << ", manifest " << entry.crc32
        << "): the file is corrupt";
    return out.str();
  }
  return "";
}

void write_classes(const std::string& dir, const std::vector<std::string>& classes) {
  write_text_atomically(join(dir, kClassesFile), json(classes).dump(2) + "\n");
}

std::vector<std::string> read_classes(const std::string& dir) {
  const std::string path = join(dir, kClassesFile);
  try {
    return read_json(path).get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    DCAE_FAIL("'", path, "' must be a JSON list of class names: ", e.what());
  }
}

}  // namespace dcae::datasets
