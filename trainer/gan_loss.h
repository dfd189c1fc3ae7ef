// The adversarial loss term ("gan"): a PatchGAN discriminator (loss.disc_layers / disc_channels / disc_norm) with
// its own optimizer ([disc_optim]) and LR schedule ([disc_schedule], counted from loss.gan_start_step), hinge or
// non-saturating objective (loss.gan_loss). The generator side is compute(); the discriminator trains in
// update_critic() on the step's detached reconstructions, after the autoencoder's update (the taming/VQGAN order).
#pragma once
#include <memory>

#include "nn/loss_nets/patchgan.h"
#include "trainer/losses.h"
#include "trainer/optim/optimizer.h"
#include "trainer/schedule.h"

namespace dcae::trainer {

class GanLoss final : public LossTerm {
 public:
  explicit GanLoss(const LossSpec& spec);
  // Generator loss: hinge -mean(D(recon)), non-saturating mean(softplus(-D(recon))). The discriminator is frozen
  // here, so the backward fills no discriminator gradient.
  Tensor compute(const Tensor& recon, const Tensor& target, int64_t step) override;
  bool active(int64_t step) const override { return step >= start_step_; }
  bool adversarial() const override { return true; }
  // Discriminator loss: hinge 0.5 (mean relu(1 - D(real)) + mean relu(1 + D(fake))), non-saturating
  // 0.5 (mean softplus(-D(real)) + mean softplus(D(fake))); averaged over the micro-batches, one optimizer step.
  // A non-finite discriminator gradient skips that update. Logs d_loss, logits_real, logits_fake.
  LossTerms update_critic(const std::vector<std::pair<Tensor, Tensor>>& micro_batches, int64_t step) override;
  void add_checkpoint_items(CheckpointItems& items) override;

  nn::PatchGanDiscriminator& discriminator() { return *disc_; }
  Optimizer& optimizer() { return *optim_; }

 private:
  std::unique_ptr<nn::PatchGanDiscriminator> disc_;
  std::unique_ptr<Optimizer> optim_;
  std::unique_ptr<Schedule> schedule_;
  bool hinge_ = true;
  int64_t start_step_ = 0;
};

std::unique_ptr<LossTerm> make_gan_loss(const LossSpec& spec);

}  // namespace dcae::trainer
