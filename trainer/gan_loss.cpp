#include "trainer/gan_loss.h"

#include <glog/logging.h>

#include <cmath>

#include "core/autograd/engine.h"
#include "core/autograd/grad_mode.h"
#include "dist/data_parallel.h"
#include "ops/elementwise.h"
#include "ops/loss.h"
#include "ops/reduce.h"
#include "ops/view.h"
#include "trainer/optim/clip.h"
#include "trainer/recipe.h"
#include "trainer/registries.h"

namespace dcae::trainer {

namespace {

Tensor as_f32(const Tensor& t) { return t.dtype() == DType::f32 || t.dtype() == DType::f64 ? t : ops::cast(t, DType::f32); }

}  // namespace

GanLoss::GanLoss(const LossSpec& spec) {
  DCAE_CHECK(spec.recipe != nullptr, "the gan loss reads loss.* and disc_optim from a recipe");
  const Recipe& r = *spec.recipe;
  nn::PatchGanOptions options;
  options.layers = r.get<int64_t>("loss.disc_layers");
  options.base_channels = r.get<int64_t>("loss.disc_channels");
  options.norm = r.get<std::string>("loss.disc_norm") == "batch" ? "batch_norm" : "none";
  hinge_ = r.get<std::string>("loss.gan_loss") == "hinge";
  start_step_ = r.get<int64_t>("loss.gan_start_step");
  Generator gen(spec.seed);
  nn::InitOptions init;
  init.generator = &gen;
  disc_ = std::make_unique<nn::PatchGanDiscriminator>(options, init);
  disc_->to(spec.dtype);
  disc_->to(spec.device);
  optim_config_ = optimizer_config(r, "disc_optim");
  optim_ = make_optimizer(disc_->named_parameters(), optim_config_);
  schedule_ = make_schedule(schedule_config(r, "disc_schedule", std::max<int64_t>(1, spec.total_steps - start_step_)));
}

GanLoss::~GanLoss() = default;

Tensor GanLoss::compute(const Tensor& recon, const Tensor&, int64_t) {
  disc_->set_trainable({"*"}, false);
  const Tensor logits = as_f32(disc_->forward(recon));
  return hinge_ ? ops::hinge_g_loss(logits) : mean_softplus(ops::neg(logits));
}

LossTerms GanLoss::update_critic(const std::vector<std::pair<Tensor, Tensor>>& micro_batches, int64_t step) {
  disc_->set_trainable({"*"}, true);
  optim_->zero_grad();
  const double share = 1.0 / static_cast<double>(micro_batches.size());
  double d_loss = 0.0, real_mean = 0.0, fake_mean = 0.0;
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    const auto& [fake, real] = micro_batches[i];
    // Several ranks: the last micro-batch's backward averages the accumulated gradients over ranks.
    if (ddp_) ddp_->set_gradient_sync(i + 1 == micro_batches.size());
    const Tensor logits_real = as_f32(disc_->forward(real.detach()));
    const Tensor logits_fake = as_f32(disc_->forward(fake.detach()));
    const Tensor loss = hinge_ ? ops::hinge_d_loss(logits_real, logits_fake)
                               : ops::mul(ops::add(mean_softplus(ops::neg(logits_real)), mean_softplus(logits_fake)), 0.5);
    autograd::backward(ops::mul(loss, share));
    d_loss += share * loss.item<double>();
    autograd::NoGradGuard no_grad;
    real_mean += share * ops::mean(logits_real).item<double>();
    fake_mean += share * ops::mean(logits_fake).item<double>();
  }
  LossTerms logged = {{"d_loss", d_loss}, {"logits_real", real_mean}, {"logits_fake", fake_mean}};
  if (ddp_) {
    ddp_->finish_gradient_sync();  // (a no-op: the backward-end hook finished it)
    agree_over_ranks(logged);
    d_loss = logged.front().second;  // the global value: every rank takes the same decision below
  }
  const GradNorm norm = clip_grad_norm(optim_->params(), 0.0);
  if (norm.finite && std::isfinite(d_loss)) {
    optim_->set_lr_factor(schedule_->factor(step - start_step_));
    optim_->step();
  } else {
    LOG(WARNING) << "step " << step + 1 << ": non-finite discriminator loss or gradient; discriminator update skipped";
  }
  optim_->zero_grad();
  disc_->set_trainable({"*"}, false);
  return logged;
}

void GanLoss::add_checkpoint_items(CheckpointItems& items) {
  items.modules.emplace_back("disc", disc_.get());
  items.optimizers.emplace_back("disc_optim", optim_.get());
}

void GanLoss::distribute(const std::shared_ptr<dist::Communicator>& comm) {
  DCAE_CHECK(comm != nullptr, "GanLoss::distribute needs a communicator");
  DCAE_CHECK(!ddp_, "GanLoss::distribute called twice");
  if (comm->size() <= 1) return;
  comm_ = comm;
  disc_->set_trainable({"*"}, true);  // DataParallel hooks the parameters that are trainable when it wraps
  ddp_ = std::make_unique<dist::DataParallel>(*disc_, comm_);  // rank 0's weights and buffers to every rank
  // Rank 0's weights reached every rank after the optimizer copied its fp32 masters: copy them again.
  optim_ = make_optimizer(disc_->named_parameters(), optim_config_);
  disc_->set_trainable({"*"}, false);
  LOG(INFO) << "gan: discriminator data parallel over " << comm_->size() << " ranks (" << comm_->backend() << "), "
            << ddp_->bucket_layout().size() << " gradient buckets";
}

void GanLoss::agree_over_ranks(LossTerms& logged) {
  autograd::NoGradGuard no_grad;
  std::vector<double> values;
  for (const auto& [name, value] : logged) values.push_back(value);
  const Device device = disc_->parameters().front().device();  // where the communicator reduces (NCCL: the GPU)
  Tensor buffer = from_vector(values, {static_cast<int64_t>(values.size())}).to(device);
  comm_->all_reduce(buffer, dist::ReduceOp::avg);
  values = buffer.to(Device::cpu()).to_vector<double>();
  for (size_t i = 0; i < logged.size(); ++i) logged[i].second = values[i];
  // BatchNorm statistics moved with each rank's own images: rank 0's go to every rank.
  std::vector<std::pair<Tensor, Tensor>> staged;  // (buffer, contiguous copy it travels through)
  std::vector<dist::WorkPtr> works;
  for (const auto& [name, statistic] : disc_->named_buffers()) {
    Tensor contiguous = statistic.is_contiguous() ? statistic : statistic.contiguous();
    staged.emplace_back(statistic, contiguous);
    works.push_back(comm_->broadcast_async(contiguous, 0));
  }
  for (auto& work : works) work->wait();
  for (auto& [statistic, contiguous] : staged)
    if (!contiguous.is_same(statistic)) Tensor(statistic).copy_(contiguous);
}

std::unique_ptr<LossTerm> make_gan_loss(const LossSpec& spec) { return std::make_unique<GanLoss>(spec); }

}  // namespace dcae::trainer
