// Tiled encode/decode against a plain re-statement of diffusers' algorithm (tiles in row-major order, each blended in
// place with its already-blended upper and left neighbours, first `stride` rows/cols kept).
#include <gtest/gtest.h>

#include <cmath>

#include "core/autograd/grad_mode.h"
#include "nn/dcae/tiling.h"
#include "tests/testing/check.h"
#include "tests/testing/tiny_dcae.h"

namespace dcae::nn::dcae_model {
namespace {

// f = 4 (three stages), an attention stage, BatchNorm, a pixel-unshuffle stem.
DcaeConfig tiny() {
  return dcae::testing::tiny_dcae_config({{"ResBlock", 8, 0, "batch_norm", "relu"},
                                    {"ResBlock", 8, 1, "batch_norm", "relu"},
                                    {"EfficientViTBlock", 16, 1, "rms_norm", "silu"}});
}

// A tile as plain [h][w][c] floats (batch 1).
struct Plane {
  int64_t h = 0, w = 0, c = 0;
  std::vector<double> v;
  double& at(int64_t y, int64_t x, int64_t k) { return v[(y * w + x) * c + k]; }
};

Plane to_plane(const Tensor& t) { return {t.size(1), t.size(2), t.size(3), t.to_vector<double>()}; }

// Zero-padded crop [top, top+h) x [left, left+w) of x (rows/cols past the image are zeros), as a Tensor.
Tensor padded_crop(const Tensor& x, int64_t top, int64_t left, int64_t h, int64_t w) {
  Tensor out = zeros({x.size(0), h, w, x.size(3)}, x.dtype());
  const int64_t ch = std::min(h, x.size(1) - top), cw = std::min(w, x.size(2) - left);
  out.narrow(1, 0, ch).narrow(2, 0, cw).copy_(x.narrow(1, top, ch).narrow(2, left, cw));
  return out;
}

// diffusers' blend_v / blend_h loops, in place on `b`.
void blend_rows(Plane& a, Plane& b, int64_t extent) {
  extent = std::min({a.h, b.h, extent});
  for (int64_t y = 0; y < extent; ++y)
    for (int64_t x = 0; x < b.w; ++x)
      for (int64_t k = 0; k < b.c; ++k)
        b.at(y, x, k) = a.at(a.h - extent + y, x, k) * (1.0 - double(y) / extent) + b.at(y, x, k) * (double(y) / extent);
}
void blend_cols(Plane& a, Plane& b, int64_t extent) {
  extent = std::min({a.w, b.w, extent});
  for (int64_t y = 0; y < b.h; ++y)
    for (int64_t x = 0; x < extent; ++x)
      for (int64_t k = 0; k < b.c; ++k)
        b.at(y, x, k) = a.at(y, a.w - extent + x, k) * (1.0 - double(x) / extent) + b.at(y, x, k) * (double(x) / extent);
}

// Blends the grid in place and assembles the kept parts into an out_h x out_w result.
Tensor assemble(std::vector<std::vector<Plane>>& grid, int64_t keep, int64_t blend, int64_t out_h, int64_t out_w) {
  const int64_t channels = grid[0][0].c;
  std::vector<double> out(out_h * out_w * channels, std::nan(""));
  for (size_t i = 0; i < grid.size(); ++i)
    for (size_t j = 0; j < grid[i].size(); ++j) {
      Plane& tile = grid[i][j];
      if (i > 0) blend_rows(grid[i - 1][j], tile, blend);
      if (j > 0) blend_cols(grid[i][j - 1], tile, blend);
      for (int64_t y = 0; y < std::min(keep, tile.h); ++y)
        for (int64_t x = 0; x < std::min(keep, tile.w); ++x)
          for (int64_t k = 0; k < channels; ++k) {
            const int64_t oy = static_cast<int64_t>(i) * keep + y, ox = static_cast<int64_t>(j) * keep + x;
            if (oy < out_h && ox < out_w) out[(oy * out_w + ox) * channels + k] = tile.at(y, x, k);
          }
    }
  return from_doubles(out, {1, out_h, out_w, channels}, DType::f64);
}

Tensor reference_encode(AutoencoderDC& model, const Tensor& images, int64_t tile, int64_t stride) {
  const int64_t f = model.config().spatial_compression();
  std::vector<std::vector<Plane>> grid;
  for (int64_t top = 0; top < images.size(1); top += stride) {
    grid.emplace_back();
    for (int64_t left = 0; left < images.size(2); left += stride) {
      const int64_t h = std::min(tile, images.size(1) - top), w = std::min(tile, images.size(2) - left);
      const int64_t padded_h = (h + f - 1) / f * f, padded_w = (w + f - 1) / f * f;
      grid.back().push_back(to_plane(model.encode(padded_crop(images, top, left, padded_h, padded_w))));
    }
  }
  return assemble(grid, stride / f, (tile - stride) / f, images.size(1) / f, images.size(2) / f);
}

Tensor reference_decode(AutoencoderDC& model, const Tensor& latent, int64_t tile, int64_t stride) {
  const int64_t f = model.config().spatial_compression();
  std::vector<std::vector<Plane>> grid;
  for (int64_t top = 0; top < latent.size(1); top += stride / f) {
    grid.emplace_back();
    for (int64_t left = 0; left < latent.size(2); left += stride / f) {
      const int64_t h = std::min(tile / f, latent.size(1) - top), w = std::min(tile / f, latent.size(2) - left);
      grid.back().push_back(to_plane(model.decode(latent.narrow(1, top, h).narrow(2, left, w))));
    }
  }
  return assemble(grid, stride, tile - stride, latent.size(1) * f, latent.size(2) * f);
}

class Tiling : public ::testing::Test {
 protected:
  void SetUp() override {
    Generator gen(11);
    model = std::make_unique<AutoencoderDC>(tiny(), InitOptions{&gen, DType::f32});
    // Non-trivial BatchNorm statistics (eval mode uses them).
    for (const auto& [name, t] : model->named_buffers())
      if (name.find("running_var") != std::string::npos)
        assign_in_place(t, testing::random_uniform(t.shape(), 3, 0.5, 1.5, DType::f32));
    model->eval();
  }
  std::unique_ptr<AutoencoderDC> model;
  autograd::NoGradGuard no_grad;
};

TEST_F(Tiling, BlendTilesWeightsRowsLinearly) {
  const Tensor from = from_vector<float>({1, 2, 3, 4}, {1, 4, 1, 1});
  const Tensor into = from_vector<float>({10, 20, 30, 40}, {1, 4, 1, 1});
  EXPECT_EQ(blend_tiles(from, into, 1, 2).to_vector<float>(), (std::vector<float>{3, 12, 30, 40}));
  EXPECT_EQ(blend_tiles(from, into, 1, 0).to_vector<float>(), into.to_vector<float>());
  // The extent is clipped to the shorter tile; columns blend the same way.
  EXPECT_EQ(blend_tiles(from.narrow(1, 0, 1), into, 1, 3).to_vector<float>(), (std::vector<float>{1, 20, 30, 40}));
  EXPECT_EQ(blend_tiles(from.reshape({1, 1, 4, 1}), into.reshape({1, 1, 4, 1}), 2, 2).to_vector<float>(),
            (std::vector<float>{3, 12, 30, 40}));
}

TEST_F(Tiling, OneTileEqualsTheUntiledModel) {
  const Tensor images = testing::random_tensor({2, 16, 12, 3}, 21, DType::f32);
  const Tensor latent = model->encode(images);
  EXPECT_EQ(tiled_encode(*model, images, TileOptions::square(16, 8)).to_vector<float>(), latent.to_vector<float>());
  EXPECT_EQ(tiled_decode(*model, latent, TileOptions::square(16, 12)).to_vector<float>(),
            model->decode(latent).to_vector<float>());
}

TEST_F(Tiling, OverlappingTilesAreBlendedLikeDiffusers) {
  // 24x36 pixels with 16-pixel tiles every 8: a 3x5 grid with short tiles at the bottom and right edges.
  const Tensor images = testing::random_tensor({1, 24, 36, 3}, 22, DType::f32);
  const Tensor latent = tiled_encode(*model, images, TileOptions::square(16, 8));
  EXPECT_EQ(latent.shape(), (Shape{1, 6, 9, 4}));
  EXPECT_TRUE(testing::all_close(latent.to(DType::f64), reference_encode(*model, images, 16, 8), 1e-5, 1e-5));
  EXPECT_FALSE(testing::all_close(latent, model->encode(images), 1e-3, 1e-3));  // tiling is not a no-op here
  const Tensor decoded = tiled_decode(*model, latent, TileOptions::square(16, 8));
  EXPECT_EQ(decoded.shape(), images.shape());
  EXPECT_TRUE(testing::all_close(decoded.to(DType::f64), reference_decode(*model, latent, 16, 8), 1e-5, 1e-5));
  // Rectangular tiles and an image that is not a multiple of f (edge tiles are zero-padded, the latent cropped).
  const Tensor odd = testing::random_tensor({1, 22, 30, 3}, 23, DType::f32);
  const Tensor odd_latent = tiled_encode(*model, odd, TileOptions{16, 12, 8, 8});
  EXPECT_EQ(odd_latent.shape(), (Shape{1, 5, 7, 4}));
  const Tensor square_latent = tiled_encode(*model, odd, TileOptions::square(16, 8));
  EXPECT_TRUE(testing::all_close(square_latent.to(DType::f64), reference_encode(*model, odd, 16, 8), 1e-5, 1e-5));
}

TEST_F(Tiling, OptionsMustFitTheCompressionFactor) {
  const Tensor images = testing::random_tensor({1, 24, 24, 3}, 24, DType::f32);
  auto message = [&](TileOptions o) {
    try {
      tiled_encode(*model, images, o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message(TileOptions::square(14, 8)).find("tile height 14 must be a positive multiple of the compression "
                                                     "factor 4"),
            std::string::npos);
  EXPECT_NE(message(TileOptions::square(16, 6)).find("tile stride height 6"), std::string::npos);
  EXPECT_NE(message(TileOptions::square(8, 16)).find("must not exceed the tile size"), std::string::npos);
  EXPECT_NE(message(TileOptions::square(16, 0)).find("stride"), std::string::npos);
  EXPECT_THROW(tiled_decode(*model, zeros({1, 4, 4, 3}), TileOptions::square(8, 4)), Error);  // 3 != 4 channels
}

}  // namespace
}  // namespace dcae::nn::dcae_model
