#include "datasets/png.h"

#include <png.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

namespace dcae::datasets {

namespace {

Tensor to_u8_image(const Tensor& image) {
  DCAE_CHECK(image.dim() == 3 && image.size(2) == 3, "an RGB image must be [H, W, 3], got ", image.str());
  if (image.dtype() == DType::u8) return image.contiguous();
  const auto v = image.to_vector<float>();
  std::vector<uint8_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const float x = std::floor(255.0f * (v[i] * 0.5f + 0.5f) + 0.5f);
    out[i] = static_cast<uint8_t>(std::isnan(x) ? 0.0f : std::fmin(255.0f, std::fmax(0.0f, x)));
  }
  return from_vector(out, image.shape());
}

struct FileCloser {
  void operator()(FILE* f) const { if (f) std::fclose(f); }
};

}  // namespace

void write_png(const std::string& path, const Tensor& image) {
  const Tensor u8 = to_u8_image(image);
  const std::string temp = path + ".tmp";
  std::unique_ptr<FILE, FileCloser> file(std::fopen(temp.c_str(), "wb"));
  DCAE_CHECK(file != nullptr, "cannot open '", temp, "' for writing");
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  DCAE_CHECK(png && info, "libpng could not start writing '", path, "'");
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    DCAE_FAIL("libpng failed while writing '", path, "'");
  }
  png_init_io(png, file.get());
  const auto height = static_cast<png_uint_32>(u8.size(0)), width = static_cast<png_uint_32>(u8.size(1));
  png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  const uint8_t* data = u8.data<uint8_t>();
  for (png_uint_32 row = 0; row < height; ++row) png_write_row(png, const_cast<uint8_t*>(data + row * width * 3));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  file.reset();
  std::filesystem::rename(temp, path);
}

Tensor read_png(const std::string& path) {
  std::unique_ptr<FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  DCAE_CHECK(file != nullptr, "cannot open PNG '", path, "'");
  unsigned char signature[8] = {};
  DCAE_CHECK(std::fread(signature, 1, 8, file.get()) == 8 && png_sig_cmp(signature, 0, 8) == 0, "'", path,
             "' is not a PNG file (bad signature)");
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  DCAE_CHECK(png && info, "libpng could not start reading '", path, "'");
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    DCAE_FAIL("corrupt PNG '", path, "'");
  }
  png_init_io(png, file.get());
  png_set_sig_bytes(png, 8);
  png_read_info(png, info);
  // Normalise every PNG flavour to 8-bit RGB.
  png_set_strip_16(png);
  png_set_packing(png);
  png_set_palette_to_rgb(png);
  png_set_expand_gray_1_2_4_to_8(png);
  png_set_gray_to_rgb(png);
  png_set_strip_alpha(png);
  png_read_update_info(png, info);
  const png_uint_32 height = png_get_image_height(png, info), width = png_get_image_width(png, info);
  DCAE_CHECK(png_get_rowbytes(png, info) == width * 3, "'", path, "' did not decode to 8-bit RGB");
  Tensor out = empty({height, width, 3}, DType::u8);
  uint8_t* data = out.data<uint8_t>();
  std::vector<png_bytep> rows(height);
  for (png_uint_32 r = 0; r < height; ++r) rows[r] = data + r * width * 3;
  png_read_image(png, rows.data());
  png_destroy_read_struct(&png, &info, nullptr);
  return out;
}

Tensor image_grid(const Tensor& batch, int64_t columns) {
  DCAE_CHECK(batch.dim() == 4 && batch.size(3) == 3, "image_grid needs [N, H, W, 3], got ", batch.str());
  const int64_t n = batch.size(0), h = batch.size(1), w = batch.size(2), border = 2;
  columns = std::max<int64_t>(1, std::min(columns, n));
  const int64_t rows = (n + columns - 1) / columns;
  Tensor grid = full({rows * (h + border) + border, columns * (w + border) + border, 3},
                     batch.dtype() == DType::u8 ? 255.0 : 1.0, batch.dtype());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t top = border + (i / columns) * (h + border), left = border + (i % columns) * (w + border);
    grid.narrow(0, top, h).narrow(1, left, w).copy_(batch.select(0, i));
  }
  return grid;
}

}  // namespace dcae::datasets
