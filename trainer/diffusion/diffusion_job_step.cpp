// DiffusionJob: one training step (micro-batches, gradient sync, clipping, non-finite handling, update, EMA), the
// progress line and sampling at evaluation steps.
#include <glog/logging.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/autograd/engine.h"
#include "core/autograd/grad_mode.h"
#include "datasets/png.h"
#include "dist/data_parallel.h"
#include "nn/io/safetensors.h"
#include "ops/elementwise.h"
#include "ops/join.h"
#include "ops/view.h"
#include "trainer/diffusion/diffusion_job.h"
#include "trainer/image_metrics.h"
#include "trainer/job_common.h"

namespace dcae::trainer::diffusion {

namespace fs = std::filesystem;

namespace {

std::string step_file(const std::string& dir, int64_t step, const char* extension) {
  char name[48];
  std::snprintf(name, sizeof(name), "step_%08lld.%s", static_cast<long long>(step), extension);
  return (fs::path(dir) / name).string();
}

}  // namespace

LabelledNet DiffusionJob::network() {
  return [this](const Tensor& x, const Tensor& t, const Tensor& labels) {
    const Tensor input = x.dtype() == dtype_ ? x : ops::cast(x, dtype_);
    const Tensor out = (*model_)(input, t, labels);
    return out.dtype() == DType::f32 ? out : ops::cast(out, DType::f32);
  };
}

StepResult DiffusionJob::train_step() {
  const int64_t step = step_;
  StepResult result;
  reset_device_peak(device_);
  optim_->zero_grad();
  const double loss_scale = scaler_ ? scaler_->scale() : 1.0;
  const double share = 1.0 / static_cast<double>(grad_accum_);
  const LabelledNet net = network();
  for (int64_t micro = 0; micro < grad_accum_; ++micro) {
    if (ddp_) ddp_->set_gradient_sync(micro == grad_accum_ - 1);  // one all-reduce per step, at the last backward
    const LatentBatch batch = source_->next();
    const Tensor x0 = batch.latents.to(device_);
    const Tensor labels = drop_labels(batch.labels, label_dropout_, model_->num_classes(), noise_gen_).to(device_);
    const DenoiseFn model = [&](const Tensor& x_t, const Tensor& t) { return net(x_t, t, labels); };
    const ObjectiveLoss loss = objective_->loss(model, x0, noise_gen_);
    add_loss_term(result.losses, "loss", share * loss.loss.item<double>());
    for (const auto& [name, value] : loss.terms) add_loss_term(result.losses, name, share * value.item<double>());
    autograd::backward(ops::mul(loss.loss, share * loss_scale));
  }
  if (ddp_) ddp_->finish_gradient_sync();
  average_losses_over_ranks(result.losses);
  const double total_loss = result.losses.front().second;
  if (scaler_) scale_grads(optim_->params(), 1.0 / loss_scale);
  const GradNorm norm = clip_grad_norm(optim_->params(), clip_);
  result.grad_norm = norm.norm;
  const bool loss_finite = std::isfinite(total_loss);
  if (scaler_ && loss_finite && !norm.finite) {
    LOG(WARNING) << "step " << step + 1 << ": fp16 gradient overflow at loss scale " << loss_scale << "; step skipped";
    scaler_->update(false);
    result.skipped = true;
  } else if (nonfinite_->skip(loss_finite && norm.finite, step + 1)) {
    result.skipped = true;
  }
  if (!result.skipped) {
    if (scaler_) scaler_->update(true);
    optim_->set_lr_factor(schedule_->factor(step));
    optim_->step();
    if (ema_) ema_->update_from(optim_->named_masters());
  }
  optim_->zero_grad();
  ++step_;
  log_step(result);
  return result;
}

void DiffusionJob::log_step(const StepResult& result) {
  for (const auto& [name, value] : result.losses) add_loss_term(window_sums_, name, value);
  ++window_steps_;
  LossTerms means = window_sums_;
  for (auto& [name, value] : means) value /= static_cast<double>(window_steps_);
  auto report = progress_->step(step_, grad_accum_ * batch_size_ * options_.world_size, means, optim_->groups().front().lr);
  if (!report) return;
  if (first_window_loss_ < 0.0) first_window_loss_ = means.front().second;
  last_window_loss_ = means.front().second;
  report->row["split"] = "train";
  report->row["grad_norm"] = result.grad_norm;
  report->row["skipped_steps"] = nonfinite_->total_skipped();
  if (result.skipped) report->row["skipped"] = true;
  if (scaler_) report->row["loss_scale"] = scaler_->scale();
  metrics_->write(report->row);
  window_sums_.clear();
  window_steps_ = 0;
}

SampleResult DiffusionJob::evaluate() {
  SampleResult result;
  result.step = step_;
  const int64_t n = recipe_.get<int64_t>("eval.samples");
  int64_t batch = recipe_.get<int64_t>("eval.batch_size");
  if (batch <= 0) batch = n;
  const std::vector<int64_t> classes = recipe_.get<std::vector<int64_t>>("eval.classes");
  const Shape latent = source_->latent_shape();
  // The same noise and classes at every evaluation (own stream: sampling never moves the training streams).
  Generator sample_gen(static_cast<uint64_t>(recipe_.get<int64_t>("train.seed")) * 31 + 0xe7a1);
  std::vector<Tensor> pieces;
  {
    autograd::NoGradGuard no_grad;
    EmaSwapGuard use_ema(recipe_.get<bool>("eval.use_ema") ? ema_.get() : nullptr);
    model_->eval();
    for (int64_t begin = 0; begin < n; begin += batch) {
      const int64_t count = std::min(batch, n - begin);
      std::vector<int64_t> labels;
      for (int64_t i = begin; i < begin + count; ++i) {
        const int64_t label = classes.empty() ? i % model_->num_classes() : classes[i % classes.size()];
        DCAE_CHECK(label >= 0 && label < model_->num_classes(), "eval.classes: class ", label, " is outside [0, ",
                   model_->num_classes(), ")");
        labels.push_back(label);
      }
      Tensor noise = empty({count, latent[0], latent[1], latent[2]}, DType::f32, device_);
      normal_(noise, 0.0, 1.0, sample_gen);
      const DenoiseFn model = guided_denoiser(network(), from_vector(labels, {count}).to(device_), model_->num_classes(),
                                              cfg_scale_, model_->in_channels());
      pieces.push_back(sampler_->sample(model, noise, sample_gen).to(Device::cpu()));
    }
    model_->train();
  }
  result.latents = pieces.size() == 1 ? pieces.front() : ops::concat(pieces, 0);
  const std::vector<float> values = result.latents.to_vector<float>();
  double sum = 0.0, squares = 0.0;
  for (float v : values) sum += v;
  result.mean = sum / static_cast<double>(values.size());
  for (float v : values) squares += (v - result.mean) * (v - result.mean);
  result.std = std::sqrt(squares / static_cast<double>(values.size()));
  last_eval_step_ = step_;
  if (!logging_rank()) return result;
  if (options_.rank == 0) {
    const std::string dir = (fs::path(run_dir_) / "samples").string();
    fs::create_directories(dir);
    if (decoder_.module) {
      autograd::NoGradGuard no_grad;
      std::vector<Tensor> images;
      for (int64_t begin = 0; begin < n; begin += batch) {
        const Tensor z = result.latents.narrow(0, begin, std::min(batch, n - begin)).contiguous().to(device_);
        images.push_back(to_uint8_images(decoder_.decode(ops::div(z, scaling_factor_))).to(Device::cpu()));
      }
      result.path = step_file(dir, step_, "png");
      datasets::write_png(result.path, datasets::image_grid(images.size() == 1 ? images.front() : ops::concat(images, 0),
                                                            std::min<int64_t>(n, 8)));
    } else {
      result.path = step_file(dir, step_, "safetensors");
      nn::write_safetensors(result.path, {{"latents", result.latents}},
                            {{"scaling_factor", std::to_string(scaling_factor_)}, {"step", std::to_string(step_)}});
    }
  }
  metrics_->write({{"step", step_}, {"split", "eval"}, {"samples", n}, {"sample_mean", result.mean},
                   {"sample_std", result.std}, {"sampler", sampler_->summary()}, {"cfg_scale", cfg_scale_}});
  LOG(INFO) << "eval step " << step_ << ": " << n << " samples (" << sampler_->summary() << ", guidance " << cfg_scale_
            << "), mean " << result.mean << ", std " << result.std
            << (result.path.empty() ? "" : "; " + result.path);
  return result;
}

}  // namespace dcae::trainer::diffusion
