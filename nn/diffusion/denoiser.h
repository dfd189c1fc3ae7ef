// The contract between the diffusion transformers (nn/diffusion: DiT, UViT, USiT) and the diffusion training job
// (trainer/): a class-conditional network on DC-AE latents. The objective (noise, velocity) and the meaning of t
// belong to the job; the network only maps (x_t, t, y) to its prediction.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/module.h"

namespace dcae::nn::diffusion {

class Denoiser : public Module {
 public:
  // x: noisy latents, NHWC [N, H, W, in_channels()] (the layout of the rest of dcae); t: [N] float timesteps on
  // the objective's own scale (DDPM: 0..999, flow matching: 0..1); labels: [N] int64 class ids, where
  // num_classes() is the "no class" id used for classifier-free guidance. Returns NHWC [N, H, W, out_channels()].
  virtual Tensor forward(const Tensor& x, const Tensor& t, const Tensor& labels) = 0;
  Tensor operator()(const Tensor& x, const Tensor& t, const Tensor& labels) { return forward(x, t, labels); }

  virtual int64_t in_channels() const = 0;
  // in_channels(), or 2 * in_channels() when the network also predicts a variance (DiT's learn_sigma).
  virtual int64_t out_channels() const = 0;
  virtual int64_t num_classes() const = 0;
  // The latent side length the positional embeddings were built for.
  virtual int64_t input_size() const = 0;
};

// What a denoiser is built for: the latent it sees and the classes it knows.
struct DenoiserShape {
  int64_t in_channels = 32;  // DC-AE latent channels (f32c32: 32, f64c128: 128)
  int64_t input_size = 16;   // latent side (512^2 images through f32: 16)
  int64_t num_classes = 1000;
};

}  // namespace dcae::nn::diffusion
