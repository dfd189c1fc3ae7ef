#include "nn/loss_nets/lpips.h"

#include "nn/io/safetensors.h"
#include "ops/elementwise.h"
#include "ops/pool.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "ops/view.h"

namespace dcae::nn {

namespace {

// A module whose children have the names given (the lpips/torchvision indices).
class Named : public Module {
 public:
  template <typename M>
  std::shared_ptr<M> add(const std::string& name, std::shared_ptr<M> m) { return register_module(name, m); }
  Tensor buffer(const std::string& name, const Tensor& value) { return register_buffer(name, value); }
};

struct SliceSpec {
  std::vector<int64_t> conv_indices;  // torchvision vgg16.features indices of the convs in this slice
  int64_t channels;
};

const std::vector<SliceSpec>& vgg16_slices() {
  static const std::vector<SliceSpec> specs = {
      {{0, 2}, 64}, {{5, 7}, 128}, {{10, 12, 14}, 256}, {{17, 19, 21}, 512}, {{24, 26, 28}, 512}};
  return specs;
}

}  // namespace

Lpips::Lpips(InitOptions init) {
  auto scaling = register_module("scaling_layer", std::make_shared<Named>());
  // lpips' ScalingLayer constants (ImageNet statistics mapped to the [-1, 1] input range).
  shift_ = scaling->buffer("shift", from_doubles({-.030, -.088, -.188}, {3}, init.dtype));
  scale_ = scaling->buffer("scale", from_doubles({.458, .448, .450}, {3}, init.dtype));
  auto net = register_module("net", std::make_shared<Named>());
  int64_t in_channels = 3;
  for (size_t s = 0; s < vgg16_slices().size(); ++s) {
    auto slice = net->add("slice" + std::to_string(s + 1), std::make_shared<Named>());
    slices_.emplace_back();
    for (int64_t index : vgg16_slices()[s].conv_indices) {
      auto conv = std::make_shared<Conv2d>(in_channels, vgg16_slices()[s].channels, 3, 1, 1, 1, true, init);
      slices_.back().push_back(slice->add(std::to_string(index), conv));
      in_channels = vgg16_slices()[s].channels;
    }
  }
  for (size_t s = 0; s < vgg16_slices().size(); ++s) {
    auto lin = register_module("lin" + std::to_string(s), std::make_shared<Named>());
    auto model = lin->add("model", std::make_shared<Named>());
    heads_.push_back(model->add("1", std::make_shared<Conv2d>(vgg16_slices()[s].channels, 1, 1, 1, 0, 1, false, init)));
  }
  set_trainable({"*"}, false);
}

void Lpips::load(const std::string& path) {
  SafetensorsFile file(path);
  for (const auto& [name, t] : state()) {
    DCAE_CHECK(file.contains(name), "LPIPS weights '", path, "' lack tensor '", name, "'");
    Tensor value = file.load(name);
    // lpips stores the scaling constants as [1, 3, 1, 1] and the heads as 4-D convs: accept any shape of equal size.
    DCAE_CHECK(value.numel() == t.numel(), "LPIPS weights '", path, "': tensor '", name, "' has shape ",
               shape_str(value.shape()), ", expected ", shape_str(t.shape()));
    assign_in_place(t, value.reshape(t.shape()).to(t.dtype()));
  }
  set_trainable({"*"}, false);
}

std::vector<Tensor> Lpips::features(const Tensor& x) {
  std::vector<Tensor> out;
  Tensor h = ops::div(ops::sub(x, shift_), scale_);
  for (size_t s = 0; s < slices_.size(); ++s) {
    if (s > 0) h = ops::max_pool2d(h, 2, 2);
    for (auto& conv : slices_[s]) h = ops::relu(conv->forward(h));
    out.push_back(h);
  }
  return out;
}

Tensor Lpips::distance(const Tensor& x, const Tensor& y) {
  DCAE_CHECK(x.shape() == y.shape() && x.dim() == 4 && x.size(3) == 3, "LPIPS needs two NHWC RGB batches of one shape, got ",
             x.str(), " and ", y.str());
  const std::vector<Tensor> fx = features(x), fy = features(y);
  Tensor total;
  for (size_t s = 0; s < fx.size(); ++s) {
    auto unit = [](const Tensor& f) {
      return ops::div(f, ops::add(ops::sqrt(ops::sum(ops::square(f), {-1}, true)), 1e-10));
    };
    const Tensor diff = ops::square(ops::sub(unit(fx[s]), unit(fy[s])));
    const Tensor per_image = ops::mean(heads_[s]->forward(diff), {1, 2, 3});
    total = total.defined() ? ops::add(total, per_image) : per_image;
  }
  return total;
}

}  // namespace dcae::nn
