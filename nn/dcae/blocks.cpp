#include "nn/dcae/blocks.h"

#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/fused.h"
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

namespace {

// x + norm(h) in one pass where the norm allows (RMSNorm; BatchNorm on running statistics).
Tensor add_normed(const Tensor& x, Layer& norm, const Tensor& h) {
  if (auto* rms = dynamic_cast<RMSNorm2d*>(&norm)) return ops::add_rms_norm(x, h, rms->weight, rms->bias, rms->eps());
  if (auto* bn = dynamic_cast<BatchNorm2d*>(&norm); bn != nullptr && !bn->is_training())
    return ops::add_batch_norm_eval(x, h, bn->weight, bn->bias, bn->running_mean, bn->running_var, bn->eps());
  return ops::add(x, norm.forward(h));
}

}  // namespace

Tensor ResBlock::forward(const Tensor& x) {
  // conv1 is 3x3, stride 1, padding 1: its bias and activation can ride in the convolution's epilogue.
  const Tensor h = act_ == Activation::relu || act_ == Activation::silu
                       ? ops::conv2d_activation(x, conv1_->weight, conv1_->bias, ops::Conv2dParams{1, 1, 1},
                                                act_ == Activation::relu ? ops::UnaryOp::relu : ops::UnaryOp::silu)
                       : activate(act_, conv1_->forward(x));
  return add_normed(x, *norm_, conv2_->forward(h));
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
  return add_normed(x, *norm_out_, to_out_->forward(attended));
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
  return add_normed(x, *norm_, conv_point_->forward(ops::silu_gate(h)));  // first half * silu(second half)
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
  if (pixel_unshuffle_ && shortcut_) return ops::pixel_unshuffle_with_shortcut(conv_->forward(x), x, out_channels_, 2);
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
  if (!interpolate_ && shortcut_) return ops::pixel_shuffle_with_shortcut(conv_->forward(x), x, out_channels_, 2);
  const Tensor y = interpolate_ ? conv_->forward(ops::upsample_nearest2x(x)) : ops::pixel_shuffle(conv_->forward(x), 2);
  return shortcut_ ? ops::add(y, ops::upsample_shortcut(x, out_channels_, 2)) : y;
}

}  // namespace dcae::nn::dcae_model
