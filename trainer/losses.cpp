#include "trainer/losses.h"

#include "nn/loss_nets/lpips.h"
#include "ops/elementwise.h"
#include "ops/loss.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "ops/view.h"
#include "trainer/gan_loss.h"
#include "trainer/recipe.h"
#include "trainer/registries.h"

namespace dcae::trainer {

Tensor mean_softplus(const Tensor& x) {
  return ops::mean(ops::add(ops::relu(x), ops::log(ops::add(ops::exp(ops::neg(ops::abs(x))), 1.0))));
}

namespace {

// Pixel losses are taken in f32 even when the model computes in bf16/f16: the mean of many small differences
// needs the mantissa.
Tensor as_f32(const Tensor& t) { return t.dtype() == DType::f32 || t.dtype() == DType::f64 ? t : ops::cast(t, DType::f32); }

class L1Term final : public LossTerm {
 public:
  Tensor compute(const Tensor& recon, const Tensor& target, int64_t) override {
    return ops::l1_loss(as_f32(recon), as_f32(target));
  }
};

class MseTerm final : public LossTerm {
 public:
  Tensor compute(const Tensor& recon, const Tensor& target, int64_t) override {
    return ops::mse_loss(as_f32(recon), as_f32(target));
  }
};

// The mean LPIPS distance; the VGG16 net runs in the compute dtype, frozen, from loss.lpips_weights.
class LpipsTerm final : public LossTerm {
 public:
  explicit LpipsTerm(const LossSpec& spec) {
    const std::string path = spec.recipe ? spec.recipe->get<std::string>("loss.lpips_weights") : "";
    DCAE_CHECK(!path.empty(), "loss '", spec.name, "' (weight ", spec.weight,
               ") needs loss.lpips_weights: a safetensors file with the LPIPS VGG16 weights ",
               "(scripts/make_lpips_weights.py converts the published ones)");
    nn::InitOptions init;
    init.random_init = false;
    net_ = std::make_unique<nn::Lpips>(init);
    net_->load(path);
    net_->eval();
    net_->to(spec.dtype);
    net_->to(spec.device);
  }
  Tensor compute(const Tensor& recon, const Tensor& target, int64_t) override {
    return ops::mean(as_f32(net_->distance(recon, target)));
  }

 private:
  std::unique_ptr<nn::Lpips> net_;
};

}  // namespace

void register_builtin_losses(Registry<LossFactory>& losses) {
  losses.add("l1", [](const LossSpec&) -> std::unique_ptr<LossTerm> { return std::make_unique<L1Term>(); },
             "mean absolute pixel error (loss.l1)");
  losses.add("mse", [](const LossSpec&) -> std::unique_ptr<LossTerm> { return std::make_unique<MseTerm>(); },
             "mean squared pixel error (loss.mse)");
  losses.add("lpips",
             [](const LossSpec& spec) -> std::unique_ptr<LossTerm> { return std::make_unique<LpipsTerm>(spec); },
             "LPIPS VGG16 perceptual distance (loss.lpips, weights from loss.lpips_weights)");
  losses.add("gan", [](const LossSpec& spec) -> std::unique_ptr<LossTerm> { return make_gan_loss(spec); },
             "PatchGAN adversarial loss with its own discriminator optimizer (loss.gan, loss.disc_*, disc_optim)");
}

}  // namespace dcae::trainer
