#include "nn/dcae/blocks.h"

#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/glu.h"
#include "ops/join.h"
#include "ops/matmul.h"
#include "ops/spatial.h"
#include "ops/unary.h"

namespace dcae::nn::dcae_model {

ResBlock::ResBlock(int64_t channels, const std::string& norm_type, Activation act, InitOptions init) : act_(act) {
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(channels, channels, 3, 1, 1, 1, true, init));
  conv2_ = register_module("conv2", std::make_shared<Conv2d>(channels, channels, 3, 1, 1, 1, false, init));
  norm_ = register_module("norm", make_norm(norm_type, channels, init.dtype));
}

Tensor ResBlock::forward(const Tensor& x) {
  return ops::add(x, norm_->forward(conv2_->forward(activate(act_, conv1_->forward(x)))));
}

QkvMultiscaleBranch::QkvMultiscaleBranch(int64_t qkv_channels, int64_t kernel, int64_t groups, InitOptions init) {
  proj_in_ = register_module("proj_in", std::make_shared<Conv2d>(qkv_channels, qkv_channels, kernel, 1, kernel / 2,
                                                                 qkv_channels, false, init));
  proj_out_ = register_module("proj_out", std::make_shared<Conv2d>(qkv_channels, qkv_channels, 1, 1, 0, groups, false, init));
}

Tensor QkvMultiscaleBranch::forward(const Tensor& x) { return proj_out_->forward(proj_in_->forward(x)); }

MultiscaleLinearAttention::MultiscaleLinearAttention(int64_t channels, int64_t head_dim,
                                                     const std::vector<int64_t>& scales, const std::string& norm_type,
                                                     InitOptions init)
    : head_dim_(head_dim) {
  const int64_t inner = channels;  // diffusers: mult 1.0, heads = C / head_dim
  const int64_t heads = inner / head_dim;
  to_q_ = register_module("to_q", std::make_shared<Linear>(channels, inner, false, init));
  to_k_ = register_module("to_k", std::make_shared<Linear>(channels, inner, false, init));
  to_v_ = register_module("to_v", std::make_shared<Linear>(channels, inner, false, init));
  if (!scales.empty()) {
    auto list = register_module("to_qkv_multiscale", std::make_shared<Sequential>());
    for (int64_t kernel : scales) {
      branches_.push_back(std::make_shared<QkvMultiscaleBranch>(3 * inner, kernel, 3 * heads, init));
      list->append(branches_.back());
    }
  }
  to_out_ = register_module("to_out", std::make_shared<Linear>(inner * (1 + static_cast<int64_t>(scales.size())),
                                                               channels, false, init));
  norm_out_ = register_module("norm_out", make_norm(norm_type, channels, init.dtype));
}

Tensor MultiscaleLinearAttention::forward(const Tensor& x) {
  // One GEMM for the three projections: their weights are the row-thirds of the original fused qkv 1x1 conv.
  const Tensor qkv_weight = ops::concat({to_q_->weight, to_k_->weight, to_v_->weight}, 0);
  Tensor qkv = ops::linear(x, qkv_weight);
  std::vector<Tensor> all{qkv};
  for (auto& branch : branches_) all.push_back(branch->forward(qkv));
  const Tensor merged = all.size() == 1 ? qkv : ops::concat(all, -1);
  const Tensor attended = ops::relu_linear_attention(merged, head_dim_);
  return ops::add(x, norm_out_->forward(to_out_->forward(attended)));
}

GLUMBConv::GLUMBConv(int64_t channels, InitOptions init) {
  const int64_t hidden = 4 * channels;
  conv_inverted_ = register_module("conv_inverted", std::make_shared<Conv2d>(channels, 2 * hidden, 1, 1, 0, 1, true, init));
  conv_depth_ = register_module("conv_depth", std::make_shared<Conv2d>(2 * hidden, 2 * hidden, 3, 1, 1, 2 * hidden, true, init));
  conv_point_ = register_module("conv_point", std::make_shared<Conv2d>(hidden, channels, 1, 1, 0, 1, false, init));
  norm_ = register_module("norm", std::make_shared<RMSNorm2d>(channels, 1e-5, init.dtype));
}

Tensor GLUMBConv::forward(const Tensor& x) {
  const Tensor h = conv_depth_->forward(ops::silu(conv_inverted_->forward(x)));
  return ops::add(x, norm_->forward(conv_point_->forward(ops::silu_gate(h))));  // first half * silu(second half)
}

EfficientViTBlock::EfficientViTBlock(int64_t channels, int64_t head_dim, const std::vector<int64_t>& scales,
                                     const std::string& norm_type, InitOptions init) {
  attn_ = register_module("attn", std::make_shared<MultiscaleLinearAttention>(channels, head_dim, scales, norm_type, init));
  conv_out_ = register_module("conv_out", std::make_shared<GLUMBConv>(channels, init));
}

Tensor EfficientViTBlock::forward(const Tensor& x) { return conv_out_->forward(attn_->forward(x)); }

DownBlock::DownBlock(int64_t in_channels, int64_t out_channels, bool pixel_unshuffle, bool shortcut, InitOptions init)
    : pixel_unshuffle_(pixel_unshuffle), shortcut_(shortcut), out_channels_(out_channels) {
  if (pixel_unshuffle) {
    DCAE_CHECK(out_channels % 4 == 0, "pixel-unshuffle down block needs out channels divisible by 4, got ", out_channels);
    conv_ = register_module("conv", std::make_shared<Conv2d>(in_channels, out_channels / 4, 3, 1, 1, 1, true, init));
  } else {
    conv_ = register_module("conv", std::make_shared<Conv2d>(in_channels, out_channels, 3, 2, 1, 1, true, init));
  }
}

Tensor DownBlock::forward(const Tensor& x) {
  Tensor y = conv_->forward(x);
  if (pixel_unshuffle_) y = ops::pixel_unshuffle(y, 2);
  return shortcut_ ? ops::add(y, ops::downsample_shortcut(x, out_channels_, 2)) : y;
}

UpBlock::UpBlock(int64_t in_channels, int64_t out_channels, bool interpolate, bool shortcut, InitOptions init)
    : interpolate_(interpolate), shortcut_(shortcut), out_channels_(out_channels) {
  conv_ = register_module("conv", std::make_shared<Conv2d>(in_channels, interpolate ? out_channels : 4 * out_channels,
                                                           3, 1, 1, 1, true, init));
}

Tensor UpBlock::forward(const Tensor& x) {
  const Tensor y = interpolate_ ? conv_->forward(ops::upsample_nearest2x(x)) : ops::pixel_shuffle(conv_->forward(x), 2);
  return shortcut_ ? ops::add(y, ops::upsample_shortcut(x, out_channels_, 2)) : y;
}

}  // namespace dcae::nn::dcae_model
