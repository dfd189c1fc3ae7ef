#include "nn/io/safetensors.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/testing/check.h"

namespace dcae::nn {
namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("dcae_st_" + name)).string();
}

// Writes a file with a hand-made header, to build corrupt cases.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  out << std::string(data_bytes, '\0');
}

std::string error_of(const std::string& path) {
  try {
    SafetensorsFile f(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Safetensors, RoundTripsEveryDtypeShapeAndMetadata) {
  const std::string path = temp_path("roundtrip.safetensors");
  std::vector<NamedTensor> tensors = {
      {"w", testing::random_tensor({3, 4, 2}, 1, DType::f32)},
      {"b", testing::random_tensor({5}, 2, DType::bf16)},
      {"h", testing::random_tensor({2, 2}, 3, DType::f16)},
      {"d", testing::random_tensor({3}, 4, DType::f64).transpose(0, 0)},
      {"count", from_vector<int64_t>({7}, {})},
      {"empty", zeros({0, 3})},
  };
  write_safetensors(path, tensors, {{"format", "pt"}});
  SafetensorsFile file(path);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.names().size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const Tensor back = file.load(name);
    EXPECT_EQ(back.dtype(), t.dtype()) << name;
    EXPECT_EQ(back.shape(), t.shape()) << name;
    EXPECT_EQ(back.to_vector<double>(), t.to_vector<double>()) << name;
  }
  // Header length is a multiple of 8 so the data stays aligned.
  std::ifstream in(path, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_THROW(file.load("missing"), Error);
  std::filesystem::remove(path);
}

TEST(Safetensors, RejectsCorruptFilesWithTheReason) {
  const std::string path = temp_path("corrupt.safetensors");
  std::ofstream(path) << "abc";
  EXPECT_NE(error_of(path).find("shorter than"), std::string::npos);
  write_raw(path, "{not json", 0);
  EXPECT_NE(error_of(path).find("not valid JSON"), std::string::npos);
  write_raw(path, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4);
  EXPECT_NE(error_of(path).find("ends at byte"), std::string::npos);
  write_raw(path, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  EXPECT_NE(error_of(path).find("needs 12"), std::string::npos);
  write_raw(path, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8);
  EXPECT_NE(error_of(path).find("overlaps"), std::string::npos);
  write_raw(path, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8);
  EXPECT_NE(error_of(path).find("gap"), std::string::npos);
  // Empty tensors sharing an offset with a real one are valid (the reference writer produces them).
  write_raw(path, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"f":{"dtype":"F32","shape":[0,3],"data_offsets":[8,8]}})", 8);
  EXPECT_EQ(error_of(path), "");
  write_raw(path, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8);
  EXPECT_NE(error_of(path).find("not described"), std::string::npos);
  write_raw(path, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8);
  EXPECT_NE(error_of(path).find("appears twice"), std::string::npos);
  write_raw(path, R"({"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})", 8);
  EXPECT_NE(error_of(path).find("C64"), std::string::npos);
  write_raw(path, R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4);
  EXPECT_NE(error_of(path).find("non-negative"), std::string::npos);
  // Header length larger than the file.
  {
    std::ofstream out(path, std::ios::binary);
    const uint64_t n = 1000;
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << "{}";
  }
  EXPECT_NE(error_of(path).find("runs past the end"), std::string::npos);
  EXPECT_NE(error_of(temp_path("missing.safetensors")).find("cannot open"), std::string::npos);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace dcae::nn
