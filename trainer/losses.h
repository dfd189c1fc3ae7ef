// Loss terms of a training job, registered by name. A recipe weights the built-ins with loss.l1, loss.mse,
// loss.lpips and loss.gan, and any registered term (plugins included) through [loss.terms] name = weight.
// A term sees the reconstructions and the images they came from; adversarial terms (the GAN) also train a critic
// of their own after each generator step and may be scaled by the adaptive weight (loss.adaptive_gan_weight).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor/tensor.h"
#include "trainer/checkpoint.h"
#include "trainer/metrics.h"

namespace dcae::dist {
class Communicator;
}

namespace dcae::trainer {

class Recipe;

struct LossSpec {
  std::string name;
  double weight = 1.0;
  const Recipe* recipe = nullptr;  // the term reads its own keys (loss.lpips_weights, loss.disc_*, plugin keys)
  Device device = Device::cpu();
  DType dtype = DType::f32;        // the compute dtype of the images it receives
  uint64_t seed = 0;               // for networks the term initialises (the discriminator)
  int64_t total_steps = 0;         // train.steps (schedules of the term's own optimizer)
};

class LossTerm {
 public:
  virtual ~LossTerm() = default;
  // The unweighted scalar loss of `recon` against `target` (NHWC, [-1, 1], the compute dtype) at 0-based
  // optimizer step `step`; differentiable with respect to `recon`.
  virtual Tensor compute(const Tensor& recon, const Tensor& target, int64_t step) = 0;
  // False while the term sits out (the GAN before loss.gan_start_step): not computed, not logged.
  virtual bool active(int64_t step) const { return true; }
  // Adversarial terms get the adaptive weight and a critic update.
  virtual bool adversarial() const { return false; }
  // After the generator's update at `step`: one update of the term's own networks from the step's micro-batches
  // (detached reconstructions, targets). Returns values to log ("d_loss", ...).
  virtual LossTerms update_critic(const std::vector<std::pair<Tensor, Tensor>>& micro_batches, int64_t step) {
    return {};
  }
  // Networks and optimizers the term owns, so checkpoints hold them ("disc", "disc_optim").
  virtual void add_checkpoint_items(CheckpointItems& items) {}
  // Several ranks (called once, before resuming): a term that trains networks of its own keeps their replicas
  // identical over `comm` from here on (the GAN: its discriminator in dist::DataParallel). A term with nothing
  // of its own to train has nothing to do; an adversarial term that cannot must refuse.
  virtual void distribute(const std::shared_ptr<dist::Communicator>& comm) {
    DCAE_CHECK(!adversarial(), "this adversarial loss trains a critic of its own but does not synchronise it over ",
               "ranks (LossTerm::distribute); run it on one rank");
  }
};

using LossFactory = std::function<std::unique_ptr<LossTerm>(const LossSpec&)>;

// mean(softplus(x)), computed stably as relu(x) + log(1 + exp(-|x|)).
Tensor mean_softplus(const Tensor& x);

}  // namespace dcae::trainer
