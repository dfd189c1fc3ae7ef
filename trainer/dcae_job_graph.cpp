// DcaeJob under train.cuda_graph = true: the whole training step captured once in a CUDA graph and replayed.
//
// The step function below is the eager step (dcae_job_step.cpp) without its host decisions: loss values are
// summed on the device in f64 exactly as the host sums them, the skip of a non-finite loss or gradient norm is
// decided by the capturable AdamW (its norm made NaN when the loss is not finite), BatchNorm statistics of a
// skipped step are put back with a device select, the EMA update is applied or not on the device. The first step
// of each process runs it eagerly (moments, algorithm choices, plan caches); the second captures and replays it.
#include <glog/logging.h>

#include "core/autograd/engine.h"
#include "core/autograd/grad_mode.h"
#include "ops/elementwise.h"
#include "ops/view.h"
#include "trainer/dcae_job.h"
#include "trainer/device_step_stats.h"
#include "trainer/optim/adamw.h"
#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/caching_allocator.h"
#include "core/tensor/cuda/cuda_graph.h"
#include "trainer/cuda/graphed_step.h"
#endif

namespace dcae::trainer {

struct DcaeJob::GraphState {
  std::vector<Tensor> inputs;                      // static batches, one per micro-batch (compute dtype, GPU)
  std::vector<size_t> terms;                       // indices into terms_ of the terms the step computes
  std::vector<std::pair<Tensor, Tensor>> buffers;  // floating buffers and their copies from before the forward
  std::unique_ptr<DeviceStepStats> stats;
  AdamW* adamw = nullptr;
  int64_t capture_step = 0;  // the step the terms see (they are the same at every step; checked)
  int64_t window_steps = 0;  // steps since the last log step
  bool warm_up = false;      // the eager run: also measures memory
#ifdef DCAE_WITH_CUDA
  std::unique_ptr<GraphedTrainStep> graphed;
#endif
};

void DcaeJob::GraphStateDeleter::operator()(GraphState* state) const { delete state; }

namespace {
Tensor sum_defined(const Tensor& a, const Tensor& b) { return !a.defined() ? b : ops::add(a, b); }
}  // namespace

void DcaeJob::check_cuda_graph_support() {
  // The recipe rule (check_cuda_graph_recipe) refused what the recipe alone shows; this is what the job knows.
  DCAE_CHECK(device_.is_cuda(), "train.cuda_graph = true needs a GPU, but train.device = '",
             recipe_.get<std::string>("train.device"), "' resolved to ", device_.str());
  DCAE_CHECK(options_.world_size == 1, "train.cuda_graph = true runs on one rank, but this job has ",
             options_.world_size, " ranks: data-parallel gradient all-reduces run from host hooks during backward");
  for (const Term& t : terms_)
    DCAE_CHECK(!t.term->adversarial(), "train.cuda_graph = true cannot take the adversarial loss term '", t.name,
               "': it trains a critic of its own with host decisions after every step");
#ifndef DCAE_WITH_CUDA
  DCAE_FAIL("train.cuda_graph = true: this build has no CUDA backend");
#endif
}

void DcaeJob::setup_graph() {
  auto state = std::unique_ptr<GraphState, GraphStateDeleter>(new GraphState);
  GraphState& g = *state;
  g.adamw = dynamic_cast<AdamW*>(optim_.get());
  DCAE_CHECK(g.adamw != nullptr, "train.cuda_graph = true needs the adamw optimizer, got '", optim_->type(), "'");
  g.capture_step = step_;
  // A captured step cannot switch its terms on or off: refuse a term whose activity changes in the steps ahead.
  std::vector<std::string> names = {"loss"};
  for (size_t i = 0; i < terms_.size(); ++i) {
    const bool active = terms_[i].term->active(step_);
    for (int64_t s = step_ + 1; s < total_steps_; ++s)
      DCAE_CHECK(terms_[i].term->active(s) == active, "train.cuda_graph = true: loss term '", terms_[i].name, "' is ",
                 active ? "active" : "inactive", " at step ", step_, " but not at step ", s,
                 "; a captured step cannot switch its terms");
    if (!active) continue;
    g.terms.push_back(i);
    names.push_back(terms_[i].name);
  }
  DCAE_CHECK(g.terms.size() > 0, "step ", step_, ": no loss term is active");
  const int64_t r = recipe_.get<int64_t>("data.resolution");
  for (int64_t micro = 0; micro < grad_accum_; ++micro)
    g.inputs.push_back(zeros({batch_size_, r, r, 3}, dtype_, device_));
  for (const auto& [module_name, module] : checkpoint_items().modules)
    for (const auto& [name, buffer] : module->named_buffers())
      if (is_floating(buffer.dtype())) g.buffers.emplace_back(buffer, buffer.clone());  // integer ones never move
  g.stats = std::make_unique<DeviceStepStats>(names, device_, step_, nonfinite_->in_a_row(),
                                              recipe_.get<int64_t>("train.max_nonfinite_steps"));
  g.adamw->make_capturable();  // device step counts from state() (a resumed run's included)
  if (ema_) ema_->make_capturable();
  graph_ = std::move(state);
}

void DcaeJob::run_graph_step_function() {
  GraphState& g = *graph_;
  const double share = 1.0 / static_cast<double>(grad_accum_);
  {
    autograd::NoGradGuard no_grad;
    for (auto& [buffer, saved] : g.buffers) saved.copy_(buffer);
  }
  Tensor total;                                 // f64 [1]: what the eager step sums as "loss"
  std::vector<Tensor> term_sums(g.terms.size());  // f64 [1] each
  for (int64_t micro = 0; micro < grad_accum_; ++micro) {
    const Tensor& images = g.inputs[static_cast<size_t>(micro)];
    const int64_t in_use_before = g.warm_up && micro == 0 ? device_bytes_in_use(device_) : 0;
    const Tensor recon = model_.decode(model_.encode(images));
    Tensor rec, micro_loss;
    for (size_t k = 0; k < g.terms.size(); ++k) {
      Term& t = terms_[g.terms[k]];
      const Tensor value = t.term->compute(recon, images, g.capture_step);
      {
        autograd::NoGradGuard no_grad;
        const Tensor v = ops::cast(ops::reshape(value.detach(), {1}), DType::f64);
        term_sums[k] = sum_defined(term_sums[k], ops::mul(v, share));
        micro_loss = sum_defined(micro_loss, ops::mul(v, t.weight));
      }
      rec = sum_defined(rec, ops::mul(value, t.weight));
    }
    if (g.warm_up && micro == 0) activation_bytes_ = std::max<int64_t>(0, device_bytes_in_use(device_) - in_use_before);
    {
      autograd::NoGradGuard no_grad;
      total = sum_defined(total, ops::mul(micro_loss, share));
    }
    autograd::backward(ops::mul(rec, share));
  }
  autograd::NoGradGuard no_grad;
  const Tensor norm = grad_norm_tensor(optim_->params());
  // norm + 0 * loss: NaN when the loss is not finite, so the optimizer skips exactly the steps the eager job skips.
  const Tensor gated = ops::add(norm, ops::cast(ops::mul(total, 0.0), DType::f32));
  g.adamw->clip_next_step(gated, clip_);
  g.adamw->step();
  std::vector<Tensor> values = {total};
  values.insert(values.end(), term_sums.begin(), term_sums.end());
  const Tensor applied = g.stats->record(values, norm, gated);
  for (auto& [buffer, saved] : g.buffers) Tensor(buffer).copy_(ops::where(applied, buffer, saved));
  if (ema_) ema_->update_from_if(optim_->named_masters(), applied);
  if (g.warm_up) step_memory_ = memory_by_category();  // with the gradients, before they are dropped
  optim_->zero_grad();
}

StepResult DcaeJob::graphed_train_step() {
#ifndef DCAE_WITH_CUDA
  DCAE_FAIL("train.cuda_graph = true: this build has no CUDA backend");
#else
  const int64_t step = step_;
  if (!graph_) setup_graph();
  GraphState& g = *graph_;
  reset_device_peak(device_);
  for (Tensor& input : g.inputs) {
    Tensor images = source_->next();
    DCAE_CHECK(images.shape() == input.shape(), "train.cuda_graph = true needs every batch shaped like the first, ",
               input.str(), ", but the data source gave ", images.str(), " at step ", step + 1,
               " (a last partial batch? the graph replays static shapes)");
    images = images.to(device_);
    if (dtype_ != DType::f32) images = images.to(dtype_);
    input.copy_(images);
  }
  optim_->set_lr_factor(schedule_->factor(step));
  if (!g.graphed) {
    // The first step of this process runs eagerly: it creates the optimizer moments, picks algorithms and fills
    // plan caches, so the capture at the next step records only kernels.
    g.warm_up = true;
    run_graph_step_function();
    g.warm_up = false;
    g.graphed = std::make_unique<GraphedTrainStep>([this] { run_graph_step_function(); }, optim_.get(), device_.index);
  } else {
    if (!g.graphed->captured()) {
      cuda::caching_allocator(device_.index).empty_cache();  // the eager step's blocks back: the graph has a pool
      g.graphed->capture();
      LOG(INFO) << "train.cuda_graph: step captured at step " << step + 1 << " (" << g.graphed->graph().node_count()
                << " graph nodes, pool " << format_bytes(g.graphed->graph().pool_bytes()) << ")";
    }
    g.graphed->replay();
  }
  ++step_;
  ++g.window_steps;
  StepResult result;
  log_graphed_step(result, grad_accum_ * batch_size_ * options_.world_size);
  return result;
#endif
}

void DcaeJob::log_graphed_step(StepResult& result, int64_t images) {
  GraphState& g = *graph_;
  const int64_t every = recipe_.get<int64_t>("log.every");
  const double lr = optim_->groups().front().lr;
  if (step_ % every != 0 && step_ != total_steps_) {  // ProgressMeter reports nothing here: no host read either
    progress_->step(step_, images, {}, lr);
    return;
  }
  account_graph_nonfinite();
  // The host's first read since the last log step: it waits for the replays, so img/s counts finished work.
  const DeviceStepStats::Window window = g.stats->take_window();
  LossTerms means = window.sums;
  for (auto& [name, value] : means) value /= static_cast<double>(g.window_steps);
  g.window_steps = 0;
  result.losses = means;  // under train.cuda_graph: the window's means, on log steps only
  result.grad_norm = window.last_grad_norm;
  result.skipped = window.last_skipped;
  auto report = progress_->step(step_, images, means, lr);
  DCAE_CHECK(report.has_value(), "train.cuda_graph: the progress meter skipped log step ", step_);
  report->row["cuda_graph"] = true;
#ifdef DCAE_WITH_CUDA
  if (g.graphed && g.graphed->captured()) report->row["cuda_graph_pool_bytes"] = g.graphed->graph().pool_bytes();
#endif
  write_train_row(*report, means.front().second, result.grad_norm, result.skipped);
}

void DcaeJob::account_graph_nonfinite() {
  const DeviceStepStats::NonFinite counts = graph_->stats->take_nonfinite();
  nonfinite_->account_device_steps(counts.skipped, counts.last_skipped, counts.in_a_row, counts.limit_step);
}

void DcaeJob::sync_graph_to_host() {
  if (!graph_) return;
  account_graph_nonfinite();
  graph_->adamw->sync_steps_to_host();
  if (ema_) ema_->sync_updates_to_host();
}

}  // namespace dcae::trainer
