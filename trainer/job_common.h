// Pieces the DC-AE job (trainer/dcae_job*.cpp) and the diffusion job (trainer/diffusion/) share: the run folder's
// recipe copy and metrics file, the progress meter, loss terms summed by name and averaged over ranks.
#pragma once
#include <memory>
#include <string>

#include "core/tensor/tensor.h"
#include "dist/communicator.h"
#include "trainer/metrics.h"

namespace dcae::trainer {

class Recipe;

// Adds `value` to the term called `name`, appending it (display order) when new.
void add_loss_term(LossTerms& terms, const std::string& name, double value);

// Every term replaced by its mean over the ranks of `comm` (one all-reduce on `device`); nothing without a comm.
void average_loss_terms(const std::shared_ptr<dist::Communicator>& comm, Device device, LossTerms& terms);

// On the logging rank: creates `run_dir`, writes the recipe into it and opens its metrics.jsonl (continued from
// `step` when resumed, replaced with a warning when starting afresh); elsewhere a writer that writes nothing.
std::unique_ptr<MetricsWriter> open_run_metrics(const Recipe& recipe, const std::string& run_dir, int rank,
                                                bool logging_rank, bool resumed, int64_t step);

// The progress line from log.every / log.all_ranks, with the GPU's peak memory on a CUDA device.
std::unique_ptr<ProgressMeter> make_progress_meter(const Recipe& recipe, int64_t total_steps, int rank, Device device);

}  // namespace dcae::trainer
