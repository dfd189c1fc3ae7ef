// Basic layers over NHWC activations. Parameter names and shapes follow PyTorch, so checkpoints map directly.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor/philox.h"
#include "nn/module.h"

namespace dcae::nn {

// Runs in place of a layer's forward when the layer is called through operator(): receives the input and the
// layer's own forward, and returns the output. FSDP installs one on each unit's module to gather its parameters
// before the forward, free them after it and hook its backward.
using ForwardInterceptor = std::function<Tensor(const Tensor& x, const std::function<Tensor(const Tensor&)>& forward)>;

// A module with one tensor in and one out. Containers and models call their children through operator(), the
// hook point for a forward interceptor; forward() itself never intercepts.
class Layer : public Module {
 public:
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) {
    if (!interceptor_) return forward(x);
    return interceptor_(x, [this](const Tensor& in) { return forward(in); });
  }
  // At most one interceptor per layer: installing a second is an error; an empty function removes it.
  void set_forward_interceptor(ForwardInterceptor interceptor);
  bool has_forward_interceptor() const { return static_cast<bool>(interceptor_); }

 private:
  ForwardInterceptor interceptor_;
};

enum class Activation { identity, relu, silu, gelu_tanh };
Activation activation_from_name(const std::string& name);  // "relu", "silu"/"swish", "gelu", "identity"
Tensor activate(Activation act, const Tensor& x);

// PyTorch's default init: weights and biases uniform in +-1/sqrt(fan_in).
struct InitOptions {
  Generator* generator = &default_generator();
  DType dtype = DType::f32;
  bool random_init = true;  // false: leave weights unwritten (they are about to be loaded from a checkpoint)
};

class Conv2d : public Layer {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1, int64_t padding = -1,
         int64_t groups = 1, bool bias = true, InitOptions init = {});  // padding -1: kernel / 2 ("same")
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;

 private:
  int64_t stride_, padding_, groups_;
};

class Linear : public Layer {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, InitOptions init = {});
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;
};

// RMSNorm over the channel (last) dim with weight and bias: DC-AE's "trms2d".
class RMSNorm2d : public Layer {
 public:
  explicit RMSNorm2d(int64_t channels, double eps = 1e-5, DType dtype = DType::f32);
  Tensor forward(const Tensor& x) override;
  double eps() const { return eps_; }
  Tensor weight, bias;

 private:
  double eps_;
};

class BatchNorm2d : public Layer {
 public:
  explicit BatchNorm2d(int64_t channels, double eps = 1e-5, double momentum = 0.1, DType dtype = DType::f32);
  Tensor forward(const Tensor& x) override;
  double eps() const { return eps_; }
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  double eps_, momentum_;
};

// "rms_norm" or "batch_norm" (diffusers' names).
std::shared_ptr<Layer> make_norm(const std::string& type, int64_t channels, DType dtype = DType::f32);

// Children named "0", "1", ... run in order.
class Sequential : public Layer {
 public:
  void append(std::shared_ptr<Layer> layer);
  Tensor forward(const Tensor& x) override;
  size_t size() const { return layers_.size(); }
  Layer& at(size_t i) { return *layers_.at(i); }

 private:
  std::vector<std::shared_ptr<Layer>> layers_;
};

}  // namespace dcae::nn
