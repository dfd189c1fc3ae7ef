#include "nn/layers.h"

#include <cmath>

#include "core/autograd/grad_mode.h"
#include "core/tensor/init.h"
#include "ops/conv2d.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/unary.h"

namespace dcae::nn {

void Layer::set_forward_interceptor(ForwardInterceptor interceptor) {
  DCAE_CHECK(!interceptor || !interceptor_,
             "this layer already has a forward interceptor (is the model wrapped twice, e.g. by two FSDP instances?)");
  interceptor_ = std::move(interceptor);
}

Activation activation_from_name(const std::string& name) {
  if (name == "relu") return Activation::relu;
  if (name == "silu" || name == "swish") return Activation::silu;
  if (name == "gelu" || name == "gelu_tanh") return Activation::gelu_tanh;
  if (name == "identity" || name == "none" || name.empty()) return Activation::identity;
  DCAE_FAIL("unknown activation '", name, "' (expected relu, silu, gelu or identity)");
}

Tensor activate(Activation act, const Tensor& x) {
  switch (act) {
    case Activation::identity: return x;
    case Activation::relu: return ops::relu(x);
    case Activation::silu: return ops::silu(x);
    case Activation::gelu_tanh: return ops::gelu_tanh(x);
  }
  return x;
}

namespace {

// Uniform(+-1/sqrt(fan_in)) in `dtype`, drawn in f32 so every dtype sees the same numbers.
Tensor default_uniform(const Shape& shape, int64_t fan_in, const InitOptions& init) {
  if (!init.random_init) return empty(shape, init.dtype);
  Tensor t = empty(shape, DType::f32);
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  uniform_(t, -bound, bound, *init.generator);
  return t.to(init.dtype);
}

}  // namespace

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride, int64_t padding,
               int64_t groups, bool has_bias, InitOptions init)
    : stride_(stride), padding_(padding < 0 ? kernel / 2 : padding), groups_(groups) {
  DCAE_CHECK(groups > 0 && in_channels % groups == 0 && out_channels % groups == 0, "Conv2d(", in_channels, " -> ",
             out_channels, ", groups ", groups, "): groups must divide both channel counts");
  const int64_t fan_in = in_channels / groups * kernel * kernel;
  weight = register_parameter("weight", default_uniform({out_channels, in_channels / groups, kernel, kernel}, fan_in, init));
  if (has_bias) bias = register_parameter("bias", default_uniform({out_channels}, fan_in, init));
}

Tensor Conv2d::forward(const Tensor& x) {
  return ops::conv2d(x, weight, bias, ops::Conv2dParams{stride_, padding_, groups_});
}

Linear::Linear(int64_t in_features, int64_t out_features, bool has_bias, InitOptions init) {
  weight = register_parameter("weight", default_uniform({out_features, in_features}, in_features, init));
  if (has_bias) bias = register_parameter("bias", default_uniform({out_features}, in_features, init));
}

Tensor Linear::forward(const Tensor& x) { return ops::linear(x, weight, bias); }

RMSNorm2d::RMSNorm2d(int64_t channels, double eps, DType dtype) : eps_(eps) {
  weight = register_parameter("weight", ones({channels}, dtype));
  bias = register_parameter("bias", zeros({channels}, dtype));
}

Tensor RMSNorm2d::forward(const Tensor& x) { return ops::rms_norm(x, weight, bias, eps_); }

BatchNorm2d::BatchNorm2d(int64_t channels, double eps, double momentum, DType dtype) : eps_(eps), momentum_(momentum) {
  weight = register_parameter("weight", ones({channels}, dtype));
  bias = register_parameter("bias", zeros({channels}, dtype));
  running_mean = register_buffer("running_mean", zeros({channels}, dtype));
  running_var = register_buffer("running_var", ones({channels}, dtype));
  num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, DType::i64));
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  const bool training = is_training();
  if (training) {
    autograd::NoGradGuard no_grad;
    num_batches_tracked.add_(ones({}, DType::i64, num_batches_tracked.device()));
  }
  return ops::batch_norm(x, weight, bias, running_mean, running_var, training, momentum_, eps_);
}

std::shared_ptr<Layer> make_norm(const std::string& type, int64_t channels, DType dtype) {
  if (type == "rms_norm" || type == "trms2d") return std::make_shared<RMSNorm2d>(channels, 1e-5, dtype);
  if (type == "batch_norm" || type == "bn2d") return std::make_shared<BatchNorm2d>(channels, 1e-5, 0.1, dtype);
  DCAE_FAIL("unknown norm type '", type, "' (expected rms_norm or batch_norm)");
}

void Sequential::append(std::shared_ptr<Layer> layer) {
  register_module(std::to_string(layers_.size()), layer);
  layers_.push_back(std::move(layer));
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& layer : layers_) h = (*layer)(h);  // through the children's forward hooks
  return h;
}

}  // namespace dcae::nn
