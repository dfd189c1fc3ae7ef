#include "nn/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

namespace dcae::nn {

namespace {

constexpr uint64_t kMaxHeader = 100ull << 20;  // the reference implementation's limit

DType dtype_from_safetensors(const std::string& name, const std::string& path, const std::string& tensor) {
  if (name == "F32") return DType::f32;
  if (name == "F64") return DType::f64;
  if (name == "BF16") return DType::bf16;
  if (name == "F16") return DType::f16;
  if (name == "I64") return DType::i64;
  if (name == "I32") return DType::i32;
  if (name == "U8") return DType::u8;
  if (name == "BOOL") return DType::boolean;
  DCAE_FAIL("safetensors file '", path, "': tensor '", tensor, "' has dtype '", name,
            "', which dcae does not read (F32, F64, BF16, F16, I64, I32, U8, BOOL)");
}

}  // namespace

const char* safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::i64: return "I64";
    case DType::i32: return "I32";
    case DType::u8: return "U8";
    case DType::boolean: return "BOOL";
  }
  return "?";
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  DCAE_CHECK(fd >= 0, "cannot open safetensors file '", path, "': ", std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) mapping_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  DCAE_CHECK(size_ == 0 || mapping_ != MAP_FAILED, "cannot map '", path, "': ", std::strerror(errno));
  if (mapping_ == MAP_FAILED) mapping_ = nullptr;

  auto fail = [&](const auto&... parts) { DCAE_FAIL("corrupt safetensors file '", path, "': ", parts...); };
  if (size_ < 8) fail("only ", size_, " bytes, shorter than the 8-byte header length");
  const auto* bytes = static_cast<const uint8_t*>(mapping_);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxHeader) fail("header length ", header_len, " exceeds the 100 MB limit");
  if (8 + header_len > size_) fail("header length ", header_len, " runs past the end of the ", size_, "-byte file");
  const std::string header(reinterpret_cast<const char*>(bytes + 8), header_len);
  data_ = bytes + 8 + header_len;
  const uint64_t data_size = size_ - 8 - header_len;

  // Duplicate names are rejected (a JSON parser would silently keep the last).
  std::set<std::string> seen;
  bool duplicate = false;
  std::string duplicate_name;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header, [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
      if (depth == 1 && event == nlohmann::json::parse_event_t::key && !seen.insert(parsed.get<std::string>()).second) {
        duplicate = true;
        duplicate_name = parsed.get<std::string>();
      }
      return true;
    });
  } catch (const nlohmann::json::exception& e) {
    fail("header is not valid JSON (", e.what(), ")");
  }
  if (duplicate) fail("tensor name '", duplicate_name, "' appears twice");
  if (!j.is_object()) fail("header is not a JSON object");

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& info = it.value();
    if (name == "__metadata__") {
      if (!info.is_object()) fail("__metadata__ is not an object");
      for (auto m = info.begin(); m != info.end(); ++m) {
        if (!m.value().is_string()) fail("__metadata__ value for '", m.key(), "' is not a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!info.is_object() || !info.contains("dtype") || !info.contains("shape") || !info.contains("data_offsets") ||
        !info["dtype"].is_string() || !info["shape"].is_array() || !info["data_offsets"].is_array() ||
        info["data_offsets"].size() != 2)
      fail("entry '", name, "' needs dtype (string), shape (array) and data_offsets ([begin, end])");
    SafetensorsEntry e;
    e.name = name;
    e.dtype = dtype_from_safetensors(info["dtype"].get<std::string>(), path, name);
    uint64_t numel = 1;
    for (const auto& d : info["shape"]) {
      if (!d.is_number_unsigned()) fail("entry '", name, "' has a shape entry that is not a non-negative integer");
      e.shape.push_back(d.get<int64_t>());
      numel *= d.get<uint64_t>();
    }
    for (const auto& o : info["data_offsets"])
      if (!o.is_number_unsigned()) fail("entry '", name, "' has a data offset that is not a non-negative integer");
    e.begin = info["data_offsets"][0].get<uint64_t>();
    e.end = info["data_offsets"][1].get<uint64_t>();
    if (e.end < e.begin) fail("entry '", name, "' ends (", e.end, ") before it begins (", e.begin, ")");
    if (e.end - e.begin != numel * dtype_size(e.dtype))
      fail("entry '", name, "' spans ", e.end - e.begin, " bytes but shape ", shape_str(e.shape), " of ",
           dtype_name(e.dtype), " needs ", numel * dtype_size(e.dtype));
    if (e.end > data_size) fail("entry '", name, "' ends at byte ", e.end, " of a ", data_size, "-byte data section");
    entries_.push_back(std::move(e));
  }
  // Empty tensors may sit at the same offset as the next tensor: order by (begin, end) so they come first.
  std::sort(entries_.begin(), entries_.end(),
            [](const auto& a, const auto& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t cursor = 0;
  for (const auto& e : entries_) {
    if (e.begin != cursor)
      fail(e.begin < cursor ? "entry '" + e.name + "' overlaps the previous tensor"
                            : "a gap of " + std::to_string(e.begin - cursor) + " bytes before entry '" + e.name + "'");
    cursor = e.end;
  }
  if (cursor != data_size) fail(data_size - cursor, " bytes after the last tensor are not described by the header");
  for (size_t i = 0; i < entries_.size(); ++i) index_[entries_[i].name] = i;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& e : entries_) out.push_back(e.name);
  return out;
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = index_.find(name);
  DCAE_CHECK(it != index_.end(), "safetensors file '", path_, "' has no tensor named '", name, "'");
  return entries_[it->second];
}

Tensor SafetensorsFile::load(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  Tensor t = empty(e.shape, e.dtype);
  if (e.end > e.begin) std::memcpy(t.raw_data(), data_ + e.begin, e.end - e.begin);
  return t;
}

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<Tensor> packed;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) {
    DCAE_CHECK(names.insert(name).second, "write_safetensors: tensor name '", name, "' given twice");
    Tensor host = t.to(Device::cpu()).contiguous();
    const uint64_t bytes = host.nbytes();
    header[name] = {{"dtype", safetensors_dtype_name(host.dtype())}, {"shape", host.shape()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    packed.push_back(std::move(host));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    DCAE_CHECK(out.good(), "cannot write '", temp, "'");
    uint8_t length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const Tensor& t : packed) out.write(static_cast<const char*>(t.raw_data()), static_cast<std::streamsize>(t.nbytes()));
    out.flush();
    DCAE_CHECK(out.good(), "writing '", temp, "' failed (disk full?)");
  }
  std::filesystem::rename(temp, path);
}

}  // namespace dcae::nn
