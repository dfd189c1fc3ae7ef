// The adversarial loss term ("gan"): a PatchGAN discriminator (loss.disc_layers / disc_channels / disc_norm) with
// its own optimizer ([disc_optim]) and LR schedule ([disc_schedule], counted from loss.gan_start_step), hinge or
// non-saturating objective (loss.gan_loss). The generator side is compute(); the discriminator trains in
// update_critic() on the step's detached reconstructions, after the autoencoder's update (the taming/VQGAN order).
// On several ranks (distribute) the discriminator is data parallel on its own: rank 0's weights to every rank, its
// gradients averaged over ranks in the last micro-batch's backward, the logged d_loss/logits averaged over ranks
// (so the non-finite skip agrees), and rank 0's BatchNorm statistics broadcast after each update, so every rank
// holds the same discriminator and optimizer state.
#pragma once
#include <memory>

#include "nn/loss_nets/patchgan.h"
#include "trainer/losses.h"
#include "trainer/optim/optimizer.h"
#include "trainer/schedule.h"

namespace dcae::dist {
class DataParallel;
}

namespace dcae::trainer {

class GanLoss final : public LossTerm {
 public:
  explicit GanLoss(const LossSpec& spec);
  ~GanLoss() override;
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
  // Wraps the discriminator in dist::DataParallel over `comm` (and remakes its optimizer from the broadcast weights).
  void distribute(const std::shared_ptr<dist::Communicator>& comm) override;

  nn::PatchGanDiscriminator& discriminator() { return *disc_; }
  Optimizer& optimizer() { return *optim_; }

 private:
  // Averages the logged values over ranks (in place) and copies rank 0's discriminator buffers to every rank.
  void agree_over_ranks(LossTerms& logged);

  std::unique_ptr<nn::PatchGanDiscriminator> disc_;
  OptimizerConfig optim_config_;
  std::unique_ptr<Optimizer> optim_;
  std::unique_ptr<Schedule> schedule_;
  std::shared_ptr<dist::Communicator> comm_;  // several ranks only
  std::unique_ptr<dist::DataParallel> ddp_;
  bool hinge_ = true;
  int64_t start_step_ = 0;
};

std::unique_ptr<LossTerm> make_gan_loss(const LossSpec& spec);

}  // namespace dcae::trainer
