// LPIPS (Zhang et al. 2018), VGG16 variant v0.1: frozen VGG16 features at five depths, unit-normalised over
// channels, squared differences weighted by learned 1x1 heads, averaged over space and summed. Parameter names
// equal the `lpips` package's state_dict, so its weights convert to safetensors by a plain dump
// (tools/scripts/make_lpips_weights.py).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"

namespace dcae::nn {

class Lpips : public Module {
 public:
  explicit Lpips(InitOptions init = {});
  // Loads every weight from a safetensors file (errors name missing or mismatched tensors) and freezes the net.
  void load(const std::string& path);
  // x, y: NHWC images in [-1, 1], same shape. Returns the distance per image, shape [N].
  Tensor distance(const Tensor& x, const Tensor& y);

 private:
  std::vector<Tensor> features(const Tensor& x);
  // VGG16 convs per slice, with the torchvision `features` indices as names.
  std::vector<std::vector<std::shared_ptr<Conv2d>>> slices_;
  std::vector<std::shared_ptr<Conv2d>> heads_;  // lin0..lin4 ("linK.model.1")
  Tensor shift_, scale_;
};

}  // namespace dcae::nn
