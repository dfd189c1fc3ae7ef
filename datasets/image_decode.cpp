#include "datasets/image_decode.h"

// libjpeg's header needs FILE and size_t declared first.
#include <cstdio>
#include <cstring>
#include <csetjmp>
#include <fstream>
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "datasets/png.h"

namespace dcae::datasets {

namespace {

Tensor contiguous_rgb(const Tensor& image, const char* op) {
  DCAE_CHECK(image.defined() && image.dim() == 3 && image.size(2) == 3 && image.dtype() == DType::u8, op,
             ": expected a u8 image [H, W, 3], got ", image.defined() ? image.str() : std::string("undefined"));
  DCAE_CHECK(image.size(0) > 0 && image.size(1) > 0, op, ": empty image ", image.str());
  return image.contiguous();
}

// ---- JPEG ----
// libjpeg reports errors through a callback that must not return: it longjmps back to the decode call. Only plain
// C data lives between setjmp and longjmp; the output buffer belongs to the caller.
struct JpegErrors {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;
};

void jpeg_fail(j_common_ptr cinfo) {
  auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, errors->message);
  std::longjmp(errors->jump, 1);
}

// Warnings are silent, except that running out of data means the file is truncated.
void jpeg_warn(j_common_ptr cinfo, int level) {
  auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) errors->truncated = true;
}

// Decodes into `pixels` (RGB, or CMYK when *channels == 4). Returns false with errors.message set on failure.
bool decode_jpeg_pixels(const uint8_t* data, size_t size, JpegErrors& errors, jpeg_decompress_struct& cinfo,
                        std::vector<uint8_t>& pixels, int64_t& height, int64_t& width, int& channels,
                        bool& inverted_cmyk) {
  cinfo.err = jpeg_std_error(&errors.base);
  errors.base.error_exit = jpeg_fail;
  errors.base.emit_message = jpeg_warn;
  errors.truncated = false;
  if (setjmp(errors.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  height = cinfo.output_height;
  width = cinfo.output_width;
  channels = cinfo.output_components;
  inverted_cmyk = cmyk && cinfo.saw_Adobe_marker;  // Adobe writers store CMYK inverted
  pixels.resize(static_cast<size_t>(height * width * channels));
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = pixels.data() + static_cast<size_t>(cinfo.output_scanline) * width * channels;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

Tensor decode_jpeg(const uint8_t* data, size_t size, const std::string& what) {
  JpegErrors errors{};
  jpeg_decompress_struct cinfo{};
  std::vector<uint8_t> pixels;
  int64_t height = 0, width = 0;
  int channels = 0;
  bool inverted_cmyk = false;
  if (!decode_jpeg_pixels(data, size, errors, cinfo, pixels, height, width, channels, inverted_cmyk))
    DCAE_FAIL("corrupt JPEG '", what, "': ", errors.message);
  // Bad data is the input's fault, not a failed internal check: plain messages.
  if (errors.truncated) DCAE_FAIL("truncated JPEG '", what, "' (the data ends before the image does)");
  if (channels != 3 && channels != 4) DCAE_FAIL("JPEG '", what, "' decoded to ", channels, " channels, expected 3");
  Tensor out = empty({height, width, 3}, DType::u8);
  uint8_t* rgb = out.data<uint8_t>();
  if (channels == 3) {
    std::memcpy(rgb, pixels.data(), pixels.size());
  } else {
    for (int64_t p = 0; p < height * width; ++p) {
      const uint8_t* cmyk = pixels.data() + p * 4;
      const int k = inverted_cmyk ? cmyk[3] : 255 - cmyk[3];
      for (int c = 0; c < 3; ++c) {
        const int ink_free = inverted_cmyk ? cmyk[c] : 255 - cmyk[c];
        rgb[p * 3 + c] = static_cast<uint8_t>((ink_free * k + 127) / 255);
      }
    }
  }
  return out;
}

// ---- PNG from memory (the same normalisation to 8-bit RGB as read_png) ----
struct PngSource {
  const uint8_t* data;
  size_t size;
  size_t position;
};

void png_read_from_memory(png_structp png, png_bytep out, png_size_t length) {
  auto* source = static_cast<PngSource*>(png_get_io_ptr(png));
  if (source->size - source->position < length) png_error(png, "the data ends before the image does (truncated)");
  std::memcpy(out, source->data + source->position, length);
  source->position += length;
}

void png_quiet_warning(png_structp, png_const_charp) {}

void png_fail(png_structp png, png_const_charp message) {
  auto* text = static_cast<char*>(png_get_error_ptr(png));
  std::snprintf(text, 256, "%s", message);
  png_longjmp(png, 1);
}

// `pixels` and `rows` belong to the caller so that a longjmp skips no destructor.
bool decode_png_pixels(PngSource& source, char* message, std::vector<uint8_t>& pixels,
                       std::vector<png_bytep>& rows, int64_t& height, int64_t& width) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, message, png_fail, png_quiet_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info) {
    std::snprintf(message, 256, "libpng could not start");
    png_destroy_read_struct(&png, nullptr, nullptr);
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, &source, png_read_from_memory);
  png_read_info(png, info);
  png_set_strip_16(png);
  png_set_packing(png);
  png_set_palette_to_rgb(png);
  png_set_expand_gray_1_2_4_to_8(png);
  png_set_gray_to_rgb(png);
  png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  height = png_get_image_height(png, info);
  width = png_get_image_width(png, info);
  if (png_get_rowbytes(png, info) != static_cast<size_t>(width) * 3) png_error(png, "did not decode to 8-bit RGB");
  pixels.resize(static_cast<size_t>(height * width * 3));
  rows.resize(static_cast<size_t>(height));
  for (int64_t r = 0; r < height; ++r) rows[r] = pixels.data() + r * width * 3;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

Tensor decode_png(const uint8_t* data, size_t size, const std::string& what) {
  PngSource source{data, size, 0};
  char message[256] = {};
  std::vector<uint8_t> pixels;
  std::vector<png_bytep> rows;
  int64_t height = 0, width = 0;
  if (!decode_png_pixels(source, message, pixels, rows, height, width)) DCAE_FAIL("corrupt PNG '", what, "': ", message);
  Tensor out = empty({height, width, 3}, DType::u8);
  std::memcpy(out.data<uint8_t>(), pixels.data(), pixels.size());
  return out;
}

}  // namespace

ImageFormat sniff_image_format(const uint8_t* data, size_t size) {
  static const uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size >= 8 && std::memcmp(data, png_signature, 8) == 0) return ImageFormat::png;
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return ImageFormat::jpeg;
  return ImageFormat::unknown;
}

const char* image_format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::jpeg: return "jpeg";
    case ImageFormat::png: return "png";
    default: return "unknown";
  }
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  DCAE_CHECK(in.good(), "cannot open '", path, "' for reading");
  const std::streamsize size = in.tellg();
  DCAE_CHECK(size >= 0, "cannot read the size of '", path, "'");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  DCAE_CHECK(in.read(reinterpret_cast<char*>(bytes.data()), size).good() || size == 0, "cannot read '", path, "'");
  return bytes;
}

Tensor decode_image(const uint8_t* data, size_t size, const std::string& what) {
  switch (sniff_image_format(data, size)) {
    case ImageFormat::jpeg: return decode_jpeg(data, size, what);
    case ImageFormat::png: return decode_png(data, size, what);
    default: DCAE_FAIL("'", what, "' is not a JPEG or PNG image (", size, " bytes, unrecognised signature)");
  }
}

Tensor read_image_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DCAE_CHECK(in.good(), "cannot open image '", path, "'");
  uint8_t head[8] = {};
  in.read(reinterpret_cast<char*>(head), 8);
  const ImageFormat format = sniff_image_format(head, static_cast<size_t>(in.gcount()));
  if (format == ImageFormat::png) return read_png(path);
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return decode_image(bytes, path);
}

std::vector<uint8_t> encode_png(const Tensor& image) {
  const Tensor rgb = contiguous_rgb(image, "encode_png");
  png_image description{};
  description.version = PNG_IMAGE_VERSION;
  description.width = static_cast<png_uint_32>(rgb.size(1));
  description.height = static_cast<png_uint_32>(rgb.size(0));
  description.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  // First call sizes the buffer, the second fills it.
  DCAE_CHECK(png_image_write_to_memory(&description, nullptr, &size, 0, rgb.data<uint8_t>(), 0, nullptr),
             "encode_png failed for ", rgb.str(), ": ", description.message);
  std::vector<uint8_t> bytes(size);
  DCAE_CHECK(png_image_write_to_memory(&description, bytes.data(), &size, 0, rgb.data<uint8_t>(), 0, nullptr),
             "encode_png failed for ", rgb.str(), ": ", description.message);
  bytes.resize(size);
  return bytes;
}

std::vector<uint8_t> encode_jpeg(const Tensor& image, int quality) {
  const Tensor rgb = contiguous_rgb(image, "encode_jpeg");
  DCAE_CHECK(quality >= 1 && quality <= 100, "encode_jpeg: quality must be in [1, 100], got ", quality);
  jpeg_compress_struct cinfo{};
  jpeg_error_mgr errors{};
  cinfo.err = jpeg_std_error(&errors);  // encoding our own valid buffer cannot hit a data error
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(rgb.size(1));
  cinfo.image_height = static_cast<JDIMENSION>(rgb.size(0));
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  const uint8_t* pixels = rgb.data<uint8_t>();
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(pixels) + static_cast<size_t>(cinfo.next_scanline) * rgb.size(1) * 3;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::vector<uint8_t> bytes(buffer, buffer + size);
  jpeg_destroy_compress(&cinfo);
  std::free(buffer);
  return bytes;
}

}  // namespace dcae::datasets
