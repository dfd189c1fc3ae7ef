#include "datasets/image_decode.h"

#include <gtest/gtest.h>
#include <jpeglib.h>

#include <cmath>
#include <fstream>

#include "datasets/png.h"
#include "tests/datasets/datasets_testing.h"

namespace dcae::datasets {
namespace {

using testing::ScratchDir;
using testing::synthetic_image;
using testing::throws_with;

double mean_abs_difference(const Tensor& a, const Tensor& b) {
  const auto x = a.to_vector<double>(), y = b.to_vector<double>();
  double total = 0;
  for (size_t i = 0; i < x.size(); ++i) total += std::fabs(x[i] - y[i]);
  return total / static_cast<double>(x.size());
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// A grey (1-component) JPEG, which must come back as three equal channels.
std::vector<uint8_t> grey_jpeg(int64_t h, int64_t w) {
  jpeg_compress_struct cinfo{};
  jpeg_error_mgr errors{};
  cinfo.err = jpeg_std_error(&errors);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = w;
  cinfo.image_height = h;
  cinfo.input_components = 1;
  cinfo.in_color_space = JCS_GRAYSCALE;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 100, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  std::vector<uint8_t> row(static_cast<size_t>(w));
  while (cinfo.next_scanline < cinfo.image_height) {
    for (int64_t x = 0; x < w; ++x) row[x] = static_cast<uint8_t>(x * 255 / (w - 1));
    JSAMPROW pointer = row.data();
    jpeg_write_scanlines(&cinfo, &pointer, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::vector<uint8_t> bytes(buffer, buffer + size);
  jpeg_destroy_compress(&cinfo);
  free(buffer);
  return bytes;
}

TEST(ImageDecode, PngBytesRoundTripExactlyAtOddSizes) {
  for (auto [h, w] : {std::pair<int64_t, int64_t>{5, 7}, {1, 1}, {33, 17}}) {
    const Tensor image = synthetic_image(h, w, 3 + h);
    const std::vector<uint8_t> bytes = encode_png(image);
    EXPECT_EQ(sniff_image_format(bytes.data(), bytes.size()), ImageFormat::png);
    const Tensor back = decode_image(bytes, "mem.png");
    EXPECT_EQ(back.shape(), (Shape{h, w, 3}));
    EXPECT_EQ(back.to_vector<uint8_t>(), image.to_vector<uint8_t>());
  }
}

TEST(ImageDecode, JpegRoundTripIsCloseAndNonContiguousInputsWork) {
  const Tensor image = synthetic_image(40, 50, 11);
  const std::vector<uint8_t> bytes = encode_jpeg(image, 98);
  EXPECT_EQ(sniff_image_format(bytes.data(), bytes.size()), ImageFormat::jpeg);
  const Tensor back = decode_image(bytes, "mem.jpg");
  EXPECT_EQ(back.shape(), (Shape{40, 50, 3}));
  EXPECT_LT(mean_abs_difference(back, image), 8.0);  // per-channel noise suffers from chroma subsampling
  EXPECT_GT(mean_abs_difference(back, zeros_like(image)), 50.0);  // not a blank decode
  // A transposed (non-contiguous) view encodes as its logical content.
  const Tensor transposed = image.transpose(0, 1);
  EXPECT_EQ(decode_image(encode_png(transposed), "t.png").to_vector<uint8_t>(),
            transposed.contiguous().to_vector<uint8_t>());
}

TEST(ImageDecode, GreyJpegBecomesThreeEqualChannels) {
  const Tensor back = decode_image(grey_jpeg(8, 16), "grey.jpg");
  ASSERT_EQ(back.shape(), (Shape{8, 16, 3}));
  const auto v = back.to_vector<int>();
  for (size_t p = 0; p < v.size(); p += 3) {
    EXPECT_EQ(v[p], v[p + 1]);
    EXPECT_EQ(v[p], v[p + 2]);
  }
  EXPECT_NEAR(v[(0 * 16 + 15) * 3], 255, 3);
}

TEST(ImageDecode, FilesAreRecognisedByContentNotExtension) {
  ScratchDir dir("decode");
  const Tensor image = synthetic_image(9, 13, 5);
  write_png(dir / "looks_like.jpg", image);  // a PNG with the wrong extension
  EXPECT_EQ(read_image_file(dir / "looks_like.jpg").to_vector<uint8_t>(), image.to_vector<uint8_t>());
  const std::vector<uint8_t> jpeg = encode_jpeg(image, 95);
  write_bytes(dir / "photo.png", jpeg);
  EXPECT_EQ(read_image_file(dir / "photo.png").to_vector<uint8_t>(),
            decode_image(jpeg, "x").to_vector<uint8_t>());
}

TEST(ImageDecode, CorruptTruncatedAndForeignBytesNameTheSource) {
  ScratchDir dir("decode_bad");
  const Tensor image = synthetic_image(96, 96, 2);  // large enough that half the file is scan data
  std::vector<uint8_t> jpeg = encode_jpeg(image, 90);
  jpeg.resize(jpeg.size() / 2);
  EXPECT_TRUE(throws_with([&] { decode_image(jpeg, "half.jpg"); }, {"truncated JPEG", "half.jpg"}));
  jpeg.resize(40);  // inside the headers
  EXPECT_TRUE(throws_with([&] { decode_image(jpeg, "head.jpg"); }, {"JPEG", "head.jpg"}));
  std::vector<uint8_t> png = encode_png(image);
  png.resize(png.size() - 30);
  EXPECT_TRUE(throws_with([&] { decode_image(png, "cut.png"); }, {"corrupt PNG", "cut.png"}));
  std::vector<uint8_t> garbage = encode_png(image);
  for (size_t i = 40; i < garbage.size(); i += 7) garbage[i] ^= 0x5a;  // CRC errors inside the chunks
  EXPECT_TRUE(throws_with([&] { decode_image(garbage, "flipped.png"); }, {"corrupt PNG", "flipped.png"}));
  const std::vector<uint8_t> text = {'h', 'e', 'l', 'l', 'o'};
  EXPECT_TRUE(throws_with([&] { decode_image(text, "notes.txt"); }, {"not a JPEG or PNG", "notes.txt"}));
  EXPECT_TRUE(throws_with([&] { decode_image(std::vector<uint8_t>{}, "empty.jpg"); }, {"empty.jpg"}));
  write_bytes(dir / "cut.jpg", std::vector<uint8_t>(jpeg.begin(), jpeg.end()));
  EXPECT_TRUE(throws_with([&] { read_image_file(dir / "cut.jpg"); }, {dir / "cut.jpg"}));
  EXPECT_TRUE(throws_with([&] { read_image_file(dir / "missing.png"); }, {"missing.png"}));
}

TEST(ImageDecode, EncodersRejectWrongShapesAndDtypes) {
  EXPECT_TRUE(throws_with([] { encode_png(zeros({4, 4, 4}, DType::u8)); }, {"encode_png", "[4, 4, 4]"}));
  EXPECT_TRUE(throws_with([] { encode_jpeg(zeros({4, 4, 3}, DType::f32)); }, {"encode_jpeg", "f32"}));
  EXPECT_TRUE(throws_with([] { encode_jpeg(zeros({4, 4, 3}, DType::u8), 0); }, {"quality"}));
}

}  // namespace
}  // namespace dcae::datasets
