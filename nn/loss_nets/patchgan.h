// PatchGAN discriminator (Isola et al. 2017; the taming-transformers "NLayerDiscriminator" used by VQGAN-style
// autoencoder training): 4x4 convs, stride 2 for the first `layers`, LeakyReLU(0.2), a norm after every conv but the
// first and last, one logit per overlapping patch.
#pragma once
#include <memory>
#include <string>

#include "nn/layers.h"

namespace dcae::nn {

struct PatchGanOptions {
  int64_t in_channels = 3;
  int64_t base_channels = 64;  // ndf
  int64_t layers = 3;          // stride-2 layers
  std::string norm = "batch_norm";  // "batch_norm" | "none"
};

class PatchGanDiscriminator : public Layer {
 public:
  explicit PatchGanDiscriminator(PatchGanOptions options = {}, InitOptions init = {});
  // NHWC images -> NHWC logits [N, h, w, 1].
  Tensor forward(const Tensor& images) override;

 private:
  std::shared_ptr<Sequential> main_;
};

}  // namespace dcae::nn
