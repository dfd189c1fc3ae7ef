// Tiled encode/decode for images larger than memory allows, following diffusers' AutoencoderDC.tiled_encode /
// tiled_decode (diffusers-format.md §5.1): overlapping tiles are processed independently, each is blended linearly
// with the (already blended) tile above and to the left over the overlap, and each contributes its first `stride`
// rows/columns. Encode blends in latent space, decode in pixel space. Tiled results differ from untiled ones
// (attention is global only within a tile); when the input fits in one tile the plain encode/decode runs.
#pragma once
#include "nn/dcae/model.h"

namespace dcae::nn::dcae_model {

// Sizes in image pixels. Tiles and strides must be multiples of the model's compression factor (diffusers' default
// stride 448 is not one for f128, which misaligns its tiles), with 0 < stride <= tile.
struct TileOptions {
  int64_t tile_height = 512, tile_width = 512;
  int64_t stride_height = 448, stride_width = 448;
  static TileOptions square(int64_t tile, int64_t stride) { return {tile, tile, stride, stride}; }
};

// Throws naming the offending value when the options do not fit `compression`.
void validate_tiling(const TileOptions& options, int64_t compression);

// images NHWC [N, H, W, C] -> raw latents [N, H/f, W/f, L]. Tiles whose size is not a multiple of f (at the bottom
// and right edges of an image that is not) are zero-padded, as diffusers does, and the result is cropped.
Tensor tiled_encode(AutoencoderDC& model, const Tensor& images, const TileOptions& options);
// raw latents [N, h, w, L] -> images [N, h*f, w*f, C].
Tensor tiled_decode(AutoencoderDC& model, const Tensor& latent, const TileOptions& options);

// Blends `from` into the first rows (dim 1, vertical) or columns (dim 2) of `into` over min(extent, both sizes):
// row y takes from's row (size - extent + y) with weight 1 - y/extent and its own with weight y/extent.
Tensor blend_tiles(const Tensor& from, const Tensor& into, int64_t dim, int64_t extent);

}  // namespace dcae::nn::dcae_model
