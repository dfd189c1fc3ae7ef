// DcaeJob: one training step (micro-batches, adaptive GAN weight, sync, clipping, non-finite handling, update,
// EMA, discriminator) and evaluation.
#include <glog/logging.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/autograd/engine.h"
#include "core/autograd/grad_mode.h"
#include "datasets/png.h"
#include "dist/data_parallel.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "trainer/dcae_job.h"
#include "trainer/image_metrics.h"
#include "trainer/job_common.h"

namespace dcae::trainer {

namespace fs = std::filesystem;

namespace {

// Takes every parameter's gradient out (leaving none), in parameter order.
std::vector<Tensor> take_grads(const std::vector<Tensor>& params) {
  std::vector<Tensor> out;
  for (const Tensor& p : params) {
    out.push_back(p.grad());
    p.set_grad(Tensor());
  }
  return out;
}

double l2_norm(const Tensor& t) {
  DCAE_CHECK(t.defined(), "adaptive GAN weight: the decoder's last layer received no gradient");
  autograd::NoGradGuard no_grad;
  return std::sqrt(ops::sum(ops::square(t.to(DType::f32))).item<double>());
}

Tensor sum_defined(const Tensor& a, const Tensor& b) { return !a.defined() ? b : !b.defined() ? a : ops::add(a, b); }

}  // namespace

double DcaeJob::backward_micro_batch(const Tensor& rec, const Tensor& adv, double scale) {
  if (!adv.defined()) {
    autograd::backward(ops::mul(rec, scale));
    return 0.0;
  }
  if (!adaptive_gan_) {
    autograd::backward(ops::mul(ops::add(rec, adv), scale));
    return 0.0;
  }
  // VQGAN's adaptive weight ||d rec / d W_last|| / (||d gan / d W_last|| + 1e-4), clamped to [0, max]: the two
  // losses go backward separately (one shared forward, graph retained for the second pass), so each gradient is
  // seen alone; the step's gradient is then rec + w * gan, added to what earlier micro-batches accumulated.
  // Several ranks: both passes are averaged over ranks (as if one process saw the global micro-batch), so the
  // weight, and the gradient built from it, are the same on every rank; earlier micro-batches were averaged alike.
  if (ddp_) ddp_->set_gradient_sync(true);
  const std::vector<Tensor> params = optim_->params();
  size_t last = params.size();
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].is_same(last_layer_)) last = i;
  DCAE_CHECK(last < params.size(), "adaptive GAN weight: the decoder's last layer is not among the trained parameters");
  const std::vector<Tensor> earlier = take_grads(params);
  autograd::backward(ops::mul(rec, scale), Tensor(), /*retain_graph=*/true);
  const std::vector<Tensor> rec_grads = take_grads(params);
  autograd::backward(ops::mul(adv, scale));
  const std::vector<Tensor> adv_grads = take_grads(params);
  const double weight = std::clamp(
      (l2_norm(rec_grads[last]) / scale) / (l2_norm(adv_grads[last]) / scale + 1e-4), 0.0, adaptive_gan_max_);
  autograd::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor adv_part = adv_grads[i].defined() ? ops::mul(adv_grads[i], weight) : Tensor();
    const Tensor total = sum_defined(earlier[i], sum_defined(rec_grads[i], adv_part));
    if (total.defined()) params[i].set_grad(total);
  }
  return weight;
}

StepResult DcaeJob::train_step() {
  if (cuda_graph_) return graphed_train_step();
  const int64_t step = step_;
  StepResult result;
  reset_device_peak(device_);  // the progress line's peak is this step's (not the first step's, nor an evaluation's)
  optim_->zero_grad();
  // Forward passes move BatchNorm statistics (the model's and the discriminator's); a skipped step restores them,
  // so it leaves no trace, and NaN activations cannot poison the running statistics.
  std::vector<std::pair<Tensor, Tensor>> buffers_before;
  for (const auto& [module_name, module] : checkpoint_items().modules)
    for (const auto& [name, buffer] : module->named_buffers()) buffers_before.emplace_back(buffer, buffer.clone());
  const double loss_scale = scaler_ ? scaler_->scale() : 1.0;
  const double share = 1.0 / static_cast<double>(grad_accum_);
  std::vector<std::pair<Tensor, Tensor>> critic_batches;
  double total_loss = 0.0;
  for (int64_t micro = 0; micro < grad_accum_; ++micro) {
    // DDP reduces once per step: the last micro-batch's backward all-reduces the accumulated gradients.
    if (ddp_) ddp_->set_gradient_sync(micro == grad_accum_ - 1);
    Tensor images = source_->next().to(device_);
    if (dtype_ != DType::f32) images = images.to(dtype_);
    Tensor recon;
    Tensor rec, adv;  // weighted reconstruction terms; weighted adversarial terms (before the adaptive weight)
    double micro_loss = 0.0, adv_value = 0.0;
    const dist::MemoryStats held_before = micro == 0 ? memory_by_category() : dist::MemoryStats{};
    const int64_t in_use_before = micro == 0 ? device_bytes_in_use(device_) : 0;
    run_model([&] {
      recon = model_.decode(model_.encode(images));
      for (Term& t : terms_) {
        if (!t.term->active(step)) continue;
        const Tensor value = t.term->compute(recon, images, step);
        const double v = value.item<double>();
        add_loss_term(result.losses, t.name, share * v);
        const Tensor weighted = ops::mul(value, t.weight);
        if (t.term->adversarial()) {
          adv = sum_defined(adv, weighted);
          adv_value += t.weight * v;
        } else {
          rec = sum_defined(rec, weighted);
          micro_loss += t.weight * v;
        }
      }
      DCAE_CHECK(rec.defined() || adv.defined(), "step ", step, ": no loss term is active");
      if (!rec.defined()) rec = ops::mul(adv, 0.0);  // only adversarial terms: keep the adaptive path well-defined
      return rec;
    });
    if (micro == 0) {
      // What the forward kept for its backward: the growth in use, less parameters it gathered and staging.
      const dist::MemoryStats held_after = memory_by_category();
      activation_bytes_ = std::max<int64_t>(
          0, device_bytes_in_use(device_) - in_use_before -
                 (held_after.gathered_parameters - held_before.gathered_parameters) -
                 (held_after.communication_buffers - held_before.communication_buffers));
    }
    const double gan_weight = backward_micro_batch(rec, adv, share * loss_scale);
    if (adv.defined()) {
      const double w = adaptive_gan_ ? gan_weight : 1.0;
      micro_loss += w * adv_value;
      if (adaptive_gan_) add_loss_term(result.losses, "gan_weight", share * gan_weight);
      critic_batches.emplace_back(recon.detach(), images);
    }
    total_loss += share * micro_loss;
  }
  result.losses.insert(result.losses.begin(), {"loss", total_loss});
  sync_gradients();
  // Global losses: every rank logs and decides on a non-finite skip from the same (averaged) values.
  average_losses_over_ranks(result.losses);
  total_loss = result.losses.front().second;
  if (scaler_) scale_grads(optim_->params(), 1.0 / loss_scale);
  // Under fsdp each rank holds only its shards' gradients: the norm is summed over ranks.
  const GradNorm norm = fsdp_ ? clip_sharded_gradients() : clip_grad_norm(optim_->params(), clip_);
  result.grad_norm = norm.norm;
  const bool loss_finite = std::isfinite(total_loss);
  if (scaler_ && loss_finite && !norm.finite) {
    // An fp16 overflow: a smaller scale next time; not a failure of the run.
    LOG(WARNING) << "step " << step + 1 << ": fp16 gradient overflow at loss scale " << loss_scale << "; step skipped";
    scaler_->update(false);
    result.skipped = true;
  } else if (nonfinite_->skip(loss_finite && norm.finite, step + 1)) {  // numbered as the metrics rows count
    result.skipped = true;
  }
  if (result.skipped) {
    autograd::NoGradGuard no_grad;
    for (auto& [buffer, saved] : buffers_before) Tensor(buffer).copy_(saved);
  } else {
    if (scaler_) scaler_->update(true);
    optim_->set_lr_factor(schedule_->factor(step));
    optim_->step();
    if (ema_) ema_->update_from(optim_->named_masters());
    for (Term& t : terms_)
      if (t.term->adversarial() && t.term->active(step) && !critic_batches.empty())
        for (const auto& [name, value] : t.term->update_critic(critic_batches, step)) add_loss_term(result.losses, name, value);
  }
  broadcast_buffers();
  step_memory_ = memory_by_category();  // with this step's gradients and optimizer state, before they are dropped
  optim_->zero_grad();
  ++step_;
  log_step(result, grad_accum_ * batch_size_ * options_.world_size);  // the global batch: img/s of the whole job
  return result;
}

void DcaeJob::log_step(const StepResult& result, int64_t images) {
  for (const auto& [name, value] : result.losses) {
    add_loss_term(window_sums_, name, value);
    ++window_counts_[name];
  }
  LossTerms means = window_sums_;
  for (auto& [name, value] : means) value /= static_cast<double>(window_counts_[name]);
  auto report = progress_->step(step_, images, means, optim_->groups().front().lr);
  if (!report) return;
  write_train_row(*report, means.front().second, result.grad_norm, result.skipped);
  window_sums_.clear();
  window_counts_.clear();
}

void DcaeJob::write_train_row(ProgressMeter::Report& report, double loss, double grad_norm, bool skipped) {
  if (first_window_loss_ < 0.0) first_window_loss_ = loss;
  last_window_loss_ = loss;
  report.row["split"] = "train";
  report.row["grad_norm"] = grad_norm;  // the log step's own (not a window mean)
  report.row["skipped_steps"] = nonfinite_->total_skipped();
  if (skipped) report.row["skipped"] = true;
  if (scaler_) report.row["loss_scale"] = scaler_->scale();
  const dist::MemoryStats& memory = step_memory_;
  report.row["memory"] = memory.to_json();
  if (logging_rank())
    LOG(INFO) << "memory (rank " << options_.rank << "): params " << dist::format_bytes(memory.parameters)
              << ", grads " << dist::format_bytes(memory.gradients) << ", optim "
              << dist::format_bytes(memory.optimizer_state) << ", activations " << dist::format_bytes(memory.activations)
              << ", comm " << dist::format_bytes(memory.communication_buffers) << " (peak "
              << dist::format_bytes(memory.communication_peak) << ")"
              << (fsdp_ ? ", gathered " + dist::format_bytes(memory.gathered_parameters) : std::string());
  metrics_->write(report.row);
}

EvalResult DcaeJob::evaluate() {
  EvalResult result;
  result.step = step_;
  const int64_t n = eval_images_.size(0);
  int64_t batch = recipe_.get<int64_t>("eval.batch_size");
  if (batch <= 0) batch = batch_size_;
  std::vector<Tensor> originals, reconstructions;
  std::vector<double> psnr, ssim;
  double lpips_sum = 0.0;
  {
    autograd::NoGradGuard no_grad;
    EmaSwapGuard use_ema(recipe_.get<bool>("eval.use_ema") ? ema_.get() : nullptr);
    model_.module->eval();
    for (int64_t begin = 0; begin < n; begin += batch) {
      const int64_t count = std::min(batch, n - begin);
      Tensor images = eval_images_.narrow(0, begin, count).contiguous().to(device_);
      if (dtype_ != DType::f32) images = images.to(dtype_);
      // Under fsdp: gathered unit by unit and freed again (no backward follows a no-grad forward).
      const Tensor decoded = run_model([&] { return model_.decode(model_.encode(images)); });
      // LPIPS (our VGG16 net, when the recipe trains with it) on the float images; the protocol's AlexNet LPIPS
      // is not available here.
      if (LossTerm* lpips = loss_term("lpips"))
        lpips_sum += static_cast<double>(count) * lpips->compute(ops::clamp(decoded, -1.0, 1.0), images, step_).item<double>();
      const Tensor original = to_uint8_images(images), recon = to_uint8_images(decoded);
      for (double v : psnr_u8(recon, original)) psnr.push_back(v);
      for (double v : ssim_u8(recon, original)) ssim.push_back(v);
      originals.push_back(original);
      reconstructions.push_back(recon);
    }
    model_.module->train();
  }
  result.images = n;
  result.psnr = mean_of(psnr);
  result.ssim = mean_of(ssim);
  if (loss_term("lpips") != nullptr) result.lpips = lpips_sum / static_cast<double>(n);
  last_eval_step_ = step_;
  if (!logging_rank()) return result;
  if (recipe_.get<bool>("eval.grid") && options_.rank == 0) {  // one grid per step, also with log.all_ranks
    // Originals in the top row, their reconstructions below, up to 8 columns.
    const int64_t shown = std::min<int64_t>(n, 8), h = eval_images_.size(1), w = eval_images_.size(2);
    Tensor tiles = empty({2 * shown, h, w, 3}, DType::u8);
    for (int64_t i = 0; i < shown; ++i) {
      tiles.select(0, i).copy_(originals[i / batch].select(0, i % batch));
      tiles.select(0, shown + i).copy_(reconstructions[i / batch].select(0, i % batch));
    }
    char name[32];
    std::snprintf(name, sizeof(name), "step_%08lld.png", static_cast<long long>(step_));
    result.grid_path = (fs::path(run_dir_) / "grids" / name).string();
    fs::create_directories(fs::path(result.grid_path).parent_path());
    datasets::write_png(result.grid_path, datasets::image_grid(tiles, shown));
  }
  nlohmann::json row = {{"step", step_}, {"split", "eval"}, {"psnr", result.psnr}, {"ssim", result.ssim}, {"images", n}};
  if (result.lpips) row["lpips"] = *result.lpips;
  metrics_->write(row);
  LOG(INFO) << "eval step " << step_ << ": PSNR " << result.psnr << " dB, SSIM " << result.ssim << " on " << n
            << " held-out images" << (result.grid_path.empty() ? "" : "; grid " + result.grid_path);
  return result;
}

}  // namespace dcae::trainer
