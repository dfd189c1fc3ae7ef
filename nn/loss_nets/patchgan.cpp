#include "nn/loss_nets/patchgan.h"

#include <algorithm>

#include "core/tensor/init.h"
#include "ops/unary.h"

namespace dcae::nn {

namespace {

class LeakyRelu : public Layer {
 public:
  Tensor forward(const Tensor& x) override { return ops::leaky_relu(x, 0.2); }
};

}  // namespace

PatchGanDiscriminator::PatchGanDiscriminator(PatchGanOptions o, InitOptions init) {
  DCAE_CHECK(o.layers >= 1 && o.base_channels >= 1, "PatchGAN needs layers >= 1 and base_channels >= 1");
  DCAE_CHECK(o.norm == "batch_norm" || o.norm == "none", "PatchGAN norm must be batch_norm or none, got '", o.norm, "'");
  const bool norm = o.norm != "none";
  main_ = register_module("main", std::make_shared<Sequential>());
  main_->append(std::make_shared<Conv2d>(o.in_channels, o.base_channels, 4, 2, 1, 1, true, init));
  main_->append(std::make_shared<LeakyRelu>());
  int64_t channels = o.base_channels;
  for (int64_t n = 1; n <= o.layers; ++n) {
    const int64_t next = o.base_channels * std::min<int64_t>(int64_t{1} << n, 8);
    const int64_t stride = n < o.layers ? 2 : 1;  // the last of these keeps the resolution, as in taming
    main_->append(std::make_shared<Conv2d>(channels, next, 4, stride, 1, 1, !norm, init));
    if (norm) main_->append(make_norm("batch_norm", next, init.dtype));
    main_->append(std::make_shared<LeakyRelu>());
    channels = next;
  }
  main_->append(std::make_shared<Conv2d>(channels, 1, 4, 1, 1, 1, true, init));
  // taming's weights_init: conv weights N(0, 0.02), norm weights N(1, 0.02) (norm biases start at 0).
  if (init.random_init) {
    for (const auto& [name, p] : named_parameters()) {
      Tensor t = p;
      if (p.dim() == 4) normal_(t, 0.0, 0.02, *init.generator);
      else if (name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0) normal_(t, 1.0, 0.02, *init.generator);
    }
  }
}

Tensor PatchGanDiscriminator::forward(const Tensor& images) { return main_->forward(images); }

}  // namespace dcae::nn
