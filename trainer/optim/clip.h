// Global gradient norm, clipping and scaling over a set of parameters' .grad() (undefined gradients are skipped).
// Norms accumulate in double; a NaN or Inf anywhere makes the norm non-finite, which the trainer treats as a step
// to skip (and never scales by).
#pragma once
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::trainer {

struct GradNorm {
  double norm = 0.0;  // the global L2 norm before clipping
  bool finite = true;
  bool clipped = false;
};

double grad_norm(const std::vector<Tensor>& params);
// The global L2 norm of device gradients as one f32 on their device, with no host read (capturable in a CUDA
// graph; AdamW::clip_next_step takes it). Throws for a CPU gradient or gradients on two devices.
Tensor grad_norm_tensor(const std::vector<Tensor>& params);
// Scales every gradient by max_norm / (norm + 1e-6) when the norm exceeds max_norm (torch's clip_grad_norm_);
// max_norm <= 0 only measures. Non-finite norms leave the gradients untouched.
GradNorm clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
// grad *= factor for every defined gradient (gradient accumulation averaging, loss-scale removal).
void scale_grads(const std::vector<Tensor>& params, double factor);

// Counts non-finite steps in a row (train.max_nonfinite_steps): a non-finite loss or gradient norm skips the step
// with a warning; reaching the limit stops the run with an error naming the step.
class NonFiniteTracker {
 public:
  explicit NonFiniteTracker(int64_t max_in_a_row);
  // True when the step at `step` must be skipped. Throws dcae::Error on the max_in_a_row-th skip in a row.
  bool skip(bool finite, int64_t step);
  // Steps decided on the device (train.cuda_graph) arrive in batches: `skipped` more skipped steps since the last
  // call (the last of them numbered `last_skipped`), `in_a_row` as it stands now, and `limit_step` > 0 when the
  // device saw the max_in_a_row-th skip in a row at that step: then it throws as skip() would have there.
  void account_device_steps(int64_t skipped, int64_t last_skipped, int64_t in_a_row, int64_t limit_step);
  int64_t in_a_row() const { return in_a_row_; }
  int64_t total_skipped() const { return total_; }
  void restore(int64_t in_a_row, int64_t total) { in_a_row_ = in_a_row, total_ = total; }  // from a checkpoint

 private:
  int64_t max_in_a_row_;
  int64_t in_a_row_ = 0;
  int64_t total_ = 0;
};

}  // namespace dcae::trainer
