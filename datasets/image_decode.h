// Image files and in-memory image bytes <-> u8 RGB tensors [H, W, 3]. JPEG through libjpeg, PNG through libpng
// (files via datasets/png.h). Every failure throws dcae::Error naming the file (or what the bytes are) and the cause.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::datasets {

enum class ImageFormat { unknown, jpeg, png };

// Recognises JPEG and PNG by their leading bytes (file extensions are not trusted).
ImageFormat sniff_image_format(const uint8_t* data, size_t size);
const char* image_format_name(ImageFormat format);

std::vector<uint8_t> read_file_bytes(const std::string& path);

// Decodes JPEG (grey, RGB, CMYK) or PNG bytes to u8 [H, W, 3]. `what` names the source in error messages.
// A truncated JPEG is an error (libjpeg would otherwise pad it with grey).
Tensor decode_image(const uint8_t* data, size_t size, const std::string& what);
inline Tensor decode_image(const std::vector<uint8_t>& bytes, const std::string& what) {
  return decode_image(bytes.data(), bytes.size(), what);
}
// Reads and decodes an image file (JPEG or PNG, found by content).
Tensor read_image_file(const std::string& path);

// Encodes u8 [H, W, 3] (any strides) to PNG (lossless) or baseline JPEG bytes.
std::vector<uint8_t> encode_png(const Tensor& image);
std::vector<uint8_t> encode_jpeg(const Tensor& image, int quality = 95);

}  // namespace dcae::datasets
