// Helpers shared by the dataset tests: scratch folders, synthetic images, error-message checks.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <string>
#include <unistd.h>

#include "core/tensor/philox.h"
#include "core/tensor/tensor.h"

namespace dcae::datasets::testing {

// A fresh empty folder under the temp directory, removed when the object goes.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("dcae_" + tag + "_" + (info ? std::string(info->name()) : "x") + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// A u8 [h, w, 3] image: per-channel gradients, a per-seed offset and Philox noise (values in [20, 232]).
inline Tensor synthetic_image(int64_t h, int64_t w, uint64_t seed) {
  Tensor out = empty({h, w, 3}, DType::u8);
  uint8_t* p = out.data<uint8_t>();
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t c = 0; c < 3; ++c) {
        const int64_t i = (y * w + x) * 3 + c;
        const uint32_t noise = philox4x32_10(seed, static_cast<uint64_t>(i)).v[0] % 24;
        const int64_t gradient = c == 0 ? x * 150 / w : (c == 1 ? y * 150 / h : (x + y) * 150 / (w + h));
        p[i] = static_cast<uint8_t>(20 + gradient + static_cast<int64_t>(seed * 37 % 40) + noise);
      }
  return out;
}

// Runs `body`, expects a dcae::Error whose message contains every one of `parts`.
inline ::testing::AssertionResult throws_with(const std::function<void()>& body,
                                              const std::vector<std::string>& parts) {
  try {
    body();
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const std::string& part : parts)
      if (message.find(part) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks '" << part << "': " << message;
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "no dcae::Error thrown";
}

}  // namespace dcae::datasets::testing
