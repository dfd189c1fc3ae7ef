// DC-AE building blocks (spec/dcae-model.md §4-5, diffusers-format.md §3), NHWC, with diffusers' names.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"

namespace dcae::nn::dcae_model {

// out = x + norm(conv2(act(conv1(x)))); conv2 has no bias.
class ResBlock : public Layer {
 public:
  ResBlock(int64_t channels, const std::string& norm_type, Activation act, InitOptions init);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<Layer> norm_;
  Activation act_;
};

// One multi-scale qkv branch: depthwise k x k conv then grouped 1x1 conv (one group per 32-channel head slice).
class QkvMultiscaleBranch : public Layer {
 public:
  QkvMultiscaleBranch(int64_t qkv_channels, int64_t kernel, int64_t groups, InitOptions init);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<Conv2d> proj_in_, proj_out_;
};

// ReLU linear attention with optional multi-scale qkv branches ("attn" in diffusers), including its residual.
class MultiscaleLinearAttention : public Layer {
 public:
  MultiscaleLinearAttention(int64_t channels, int64_t head_dim, const std::vector<int64_t>& scales,
                            const std::string& norm_type, InitOptions init);
  Tensor forward(const Tensor& x) override;

 private:
  int64_t head_dim_;
  std::shared_ptr<Linear> to_q_, to_k_, to_v_, to_out_;
  std::vector<std::shared_ptr<QkvMultiscaleBranch>> branches_;  // to_qkv_multiscale.{s}
  std::shared_ptr<Layer> norm_out_;
};

// conv_inverted 1x1 -> SiLU -> depthwise 3x3 -> a * SiLU(gate) -> conv_point 1x1 -> RMSNorm, plus residual.
class GLUMBConv : public Layer {
 public:
  GLUMBConv(int64_t channels, InitOptions init);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<Conv2d> conv_inverted_, conv_depth_, conv_point_;
  std::shared_ptr<RMSNorm2d> norm_;
};

class EfficientViTBlock : public Layer {
 public:
  EfficientViTBlock(int64_t channels, int64_t head_dim, const std::vector<int64_t>& scales,
                    const std::string& norm_type, InitOptions init);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<MultiscaleLinearAttention> attn_;
  std::shared_ptr<GLUMBConv> conv_out_;
};

// Down-sampling by 2: conv then pixel-unshuffle, or a stride-2 conv; optional channel-averaging shortcut.
class DownBlock : public Layer {
 public:
  DownBlock(int64_t in_channels, int64_t out_channels, bool pixel_unshuffle, bool shortcut, InitOptions init);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<Conv2d> conv_;
  bool pixel_unshuffle_, shortcut_;
  int64_t out_channels_;
};

// Up-sampling by 2: conv then pixel-shuffle, or nearest x2 then conv; optional channel-duplicating shortcut.
class UpBlock : public Layer {
 public:
  UpBlock(int64_t in_channels, int64_t out_channels, bool interpolate, bool shortcut, InitOptions init);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<Conv2d> conv_;
  bool interpolate_, shortcut_;
  int64_t out_channels_;
};

}  // namespace dcae::nn::dcae_model
