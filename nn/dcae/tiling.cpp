#include "nn/dcae/tiling.h"

#include <algorithm>

#include "ops/elementwise.h"
#include "ops/join.h"
#include "ops/spatial.h"
#include "ops/view.h"

namespace dcae::nn::dcae_model {

namespace {

using TileGrid = std::vector<std::vector<Tensor>>;

// Blends every tile with its final neighbours above and to the left (in grid order, so each neighbour is already
// blended, as diffusers' in-place blending leaves it), keeps its first keep_h x keep_w part, and joins the parts.
Tensor blend_and_join(TileGrid& grid, int64_t keep_h, int64_t keep_w, int64_t blend_h, int64_t blend_w) {
  std::vector<Tensor> rows;
  for (size_t i = 0; i < grid.size(); ++i) {
    std::vector<Tensor> parts;
    for (size_t j = 0; j < grid[i].size(); ++j) {
      Tensor tile = grid[i][j];
      if (i > 0) tile = blend_tiles(grid[i - 1][j], tile, 1, blend_h);
      if (j > 0) tile = blend_tiles(grid[i][j - 1], tile, 2, blend_w);
      grid[i][j] = tile;
      tile = ops::narrow(tile, 1, 0, std::min(keep_h, tile.size(1)));
      parts.push_back(ops::narrow(tile, 2, 0, std::min(keep_w, tile.size(2))));
    }
    rows.push_back(parts.size() == 1 ? parts[0] : ops::concat(parts, 2));
  }
  return rows.size() == 1 ? rows[0] : ops::concat(rows, 1);
}

// The tile of `x` (NHWC) starting at (top, left), at most height x width.
Tensor crop(const Tensor& x, int64_t top, int64_t left, int64_t height, int64_t width) {
  return ops::narrow(ops::narrow(x, 1, top, std::min(height, x.size(1) - top)), 2, left,
                     std::min(width, x.size(2) - left));
}

}  // namespace

void validate_tiling(const TileOptions& o, int64_t compression) {
  const std::pair<const char*, int64_t> sizes[] = {{"tile height", o.tile_height},
                                                   {"tile width", o.tile_width},
                                                   {"tile stride height", o.stride_height},
                                                   {"tile stride width", o.stride_width}};
  for (const auto& [what, value] : sizes)
    DCAE_CHECK(value > 0 && value % compression == 0, what, " ", value,
               " must be a positive multiple of the compression factor ", compression);
  DCAE_CHECK(o.stride_height <= o.tile_height && o.stride_width <= o.tile_width, "tile stride ", o.stride_height, "x",
             o.stride_width, " must not exceed the tile size ", o.tile_height, "x", o.tile_width,
             " (tiles would leave gaps)");
}

Tensor blend_tiles(const Tensor& from, const Tensor& into, int64_t dim, int64_t extent) {
  DCAE_CHECK(from.dim() == 4 && into.dim() == 4 && (dim == 1 || dim == 2), "blend_tiles needs two NHWC tiles and dim 1 "
             "or 2, got ", from.str(), ", ", into.str(), ", dim ", dim);
  extent = std::min({extent, from.size(dim), into.size(dim)});
  if (extent <= 0) return into;
  std::vector<double> own(extent), other(extent);
  for (int64_t y = 0; y < extent; ++y) {
    own[y] = static_cast<double>(y) / static_cast<double>(extent);
    other[y] = 1.0 - own[y];
  }
  Shape weight_shape{1, 1, 1, 1};
  weight_shape[dim] = extent;
  const Tensor own_w = from_doubles(own, weight_shape, into.dtype(), into.device());
  const Tensor other_w = from_doubles(other, weight_shape, into.dtype(), into.device());
  const Tensor blended = ops::add(ops::mul(ops::narrow(from, dim, from.size(dim) - extent, extent), other_w),
                                  ops::mul(ops::narrow(into, dim, 0, extent), own_w));
  if (extent == into.size(dim)) return blended;
  return ops::concat({blended, ops::narrow(into, dim, extent, into.size(dim) - extent)}, dim);
}

Tensor tiled_encode(AutoencoderDC& model, const Tensor& images, const TileOptions& o) {
  const int64_t f = model.config().spatial_compression();
  validate_tiling(o, f);
  DCAE_CHECK(images.dim() == 4 && images.size(3) == model.config().in_channels,
             "tiled_encode needs NHWC images [N, H, W, ", model.config().in_channels, "], got ", images.str());
  const int64_t height = images.size(1), width = images.size(2);
  if (height <= o.tile_height && width <= o.tile_width) return model.encode(images);
  DCAE_CHECK(height >= f && width >= f, "tiled_encode: image ", images.str(), " is smaller than the compression factor ", f);
  TileGrid grid;
  for (int64_t top = 0; top < height; top += o.stride_height) {
    grid.emplace_back();
    for (int64_t left = 0; left < width; left += o.stride_width) {
      Tensor tile = crop(images, top, left, o.tile_height, o.tile_width);
      const int64_t pad_h = (f - tile.size(1) % f) % f, pad_w = (f - tile.size(2) % f) % f;
      if (pad_h || pad_w) tile = ops::pad(tile, ops::Padding2d{0, pad_h, 0, pad_w});
      grid.back().push_back(model.encode(tile));
    }
  }
  const int64_t keep_h = o.stride_height / f, keep_w = o.stride_width / f;
  const Tensor joined = blend_and_join(grid, keep_h, keep_w, o.tile_height / f - keep_h, o.tile_width / f - keep_w);
  return ops::narrow(ops::narrow(joined, 1, 0, height / f), 2, 0, width / f);
}

Tensor tiled_decode(AutoencoderDC& model, const Tensor& latent, const TileOptions& o) {
  const int64_t f = model.config().spatial_compression();
  validate_tiling(o, f);
  DCAE_CHECK(latent.dim() == 4 && latent.size(3) == model.config().latent_channels,
             "tiled_decode needs NHWC latents [N, h, w, ", model.config().latent_channels, "], got ", latent.str());
  const int64_t tile_h = o.tile_height / f, tile_w = o.tile_width / f;
  if (latent.size(1) <= tile_h && latent.size(2) <= tile_w) return model.decode(latent);
  TileGrid grid;
  for (int64_t top = 0; top < latent.size(1); top += o.stride_height / f) {
    grid.emplace_back();
    for (int64_t left = 0; left < latent.size(2); left += o.stride_width / f)
      grid.back().push_back(model.decode(crop(latent, top, left, tile_h, tile_w)));
  }
  return blend_and_join(grid, o.stride_height, o.stride_width, o.tile_height - o.stride_height,
                        o.tile_width - o.stride_width);
}

}  // namespace dcae::nn::dcae_model
