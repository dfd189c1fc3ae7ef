#include "datasets/png.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/testing/check.h"

namespace dcae::datasets {
namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("dcae_png_test_" + name)).string();
}

TEST(Png, RoundTripsU8AndMapsFloatRange) {
  std::vector<uint8_t> pixels(5 * 7 * 3);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>((i * 37) % 256);
  const Tensor image = from_vector(pixels, {5, 7, 3});
  const std::string path = temp_path("u8.png");
  write_png(path, image);
  EXPECT_EQ(read_png(path).to_vector<uint8_t>(), pixels);
  // -1 -> 0, 1 -> 255, 0 -> 128 (round half up), out of range clamps.
  write_png(path, from_vector<float>({-1.f, 1.f, 0.f, 3.f, -3.f, 0.5f}, {1, 2, 3}));
  EXPECT_EQ(read_png(path).to_vector<uint8_t>(), (std::vector<uint8_t>{0, 255, 128, 255, 0, 191}));
  std::filesystem::remove(path);
}

TEST(Png, CorruptOrMissingFilesGiveClearErrors) {
  const std::string path = temp_path("bad.png");
  std::ofstream(path) << "not a png at all";
  try {
    read_png(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a PNG"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_png(temp_path("missing.png")), Error);
  // Truncated after a valid header.
  write_png(path, zeros({16, 16, 3}, DType::u8));
  std::filesystem::resize_file(path, 40);
  EXPECT_THROW(read_png(path), Error);
  std::filesystem::remove(path);
}

TEST(Png, GridPlacesImagesInRowsWithBorders) {
  Tensor batch = full({3, 2, 2, 3}, 0.0, DType::u8);
  batch.select(0, 2).fill_(7);
  const Tensor grid = image_grid(batch, 2);
  EXPECT_EQ(grid.shape(), (Shape{2 * 4 + 2, 2 * 4 + 2, 3}));
  EXPECT_EQ(grid.select(0, 6).select(0, 2).to_vector<uint8_t>(), (std::vector<uint8_t>{7, 7, 7}));
  EXPECT_EQ(grid.select(0, 0).select(0, 0).to_vector<uint8_t>(), (std::vector<uint8_t>{255, 255, 255}));
}

}  // namespace
}  // namespace dcae::datasets
