// What a step replayed from a CUDA graph (train.cuda_graph) keeps on the device, so the host reads it only on log
// steps: per-term loss sums over the current log window, the last step's gradient norm, and the non-finite
// bookkeeping the eager job does on the host (NonFiniteTracker): steps skipped, skips in a row, the step at which
// the run reached train.max_nonfinite_steps. record() launches device ops only (no host read or copy), so it can be
// captured; the take_* calls read (one synchronisation) and reset the window. Plain ops: it runs on the CPU too.
//
//   DeviceStepStats stats({"loss", "l1"}, device, /*steps_done=*/step, tracker.in_a_row(), max_in_a_row);
//   captured step: ... Tensor applied = stats.record({total, l1}, norm, gated_norm); (skip decided on the device)
//   log step:      auto window = stats.take_window(); means = window.sums / steps in window
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor/tensor.h"
#include "trainer/metrics.h"

namespace dcae::trainer {

class DeviceStepStats {
 public:
  // `names`: the logged values in order (the weighted total "loss" first, then each term). Step numbers continue
  // from `steps_done` (the eager job numbers a step as the steps done after it, 1-based); `in_a_row` continues the
  // host tracker's run of skips; `max_in_a_row` is train.max_nonfinite_steps.
  DeviceStepStats(std::vector<std::string> names, Device device, int64_t steps_done, int64_t in_a_row,
                  int64_t max_in_a_row);

  // One step. `values`: f64 [1] each, in names order (what the eager job sums on the host). `grad_norm`: f32 [1],
  // the global gradient norm; `gated_norm`: the same made NaN when the loss is not finite (what decides the skip).
  // Returns f64 [1]: 1 when the step's update applies, 0 when it is skipped.
  Tensor record(const std::vector<Tensor>& values, const Tensor& grad_norm, const Tensor& gated_norm);

  struct Window {
    LossTerms sums;               // names with their sums over the steps since the last take_window
    double last_grad_norm = 0.0;  // the last recorded step's norm
    bool last_skipped = false;    // whether the last recorded step was skipped
  };
  // Reads the window (a host synchronisation) and starts a new one.
  Window take_window();

  struct NonFinite {
    int64_t skipped = 0;       // skipped since the last take_nonfinite
    int64_t last_skipped = 0;  // number of the last skipped step (0: none yet)
    int64_t in_a_row = 0;      // skips in a row now
    int64_t limit_step = 0;    // the step whose skip made in_a_row reach max_in_a_row (0: not reached)
  };
  // Reads the non-finite counters (a host synchronisation) and zeroes the skipped count.
  NonFinite take_nonfinite();

  const std::vector<std::string>& names() const { return names_; }

 private:
  std::vector<std::string> names_;
  double max_in_a_row_;
  Tensor zero_, one_;                // f64 [1] constants
  Tensor sums_;                      // f64 [names]
  Tensor step_number_;               // f64 [1]: steps done
  Tensor skipped_, in_a_row_, limit_step_, last_skipped_;  // f64 [1]
  Tensor last_norm_, last_applied_;  // f32 [1], f64 [1]
};

}  // namespace dcae::trainer
