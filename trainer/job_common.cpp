#include "trainer/job_common.h"

#include <glog/logging.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "trainer/dcae_job.h"  // device_peak_bytes
#include "trainer/recipe.h"

namespace dcae::trainer {

namespace fs = std::filesystem;

void add_loss_term(LossTerms& terms, const std::string& name, double value) {
  for (auto& [n, v] : terms)
    if (n == name) {
      v += value;
      return;
    }
  terms.emplace_back(name, value);
}

void average_loss_terms(const std::shared_ptr<dist::Communicator>& comm, Device device, LossTerms& terms) {
  if (!comm || terms.empty()) return;
  std::vector<double> values;
  for (const auto& [name, value] : terms) values.push_back(value);
  Tensor buffer = from_vector(values, {static_cast<int64_t>(values.size())}).to(device);
  comm->all_reduce(buffer, dist::ReduceOp::avg);
  values = buffer.to(Device::cpu()).to_vector<double>();
  for (size_t i = 0; i < terms.size(); ++i) terms[i].second = values[i];
}

std::unique_ptr<MetricsWriter> open_run_metrics(const Recipe& recipe, const std::string& run_dir, int rank,
                                                bool logging_rank, bool resumed, int64_t step) {
  if (!logging_rank) return std::make_unique<MetricsWriter>();
  fs::create_directories(run_dir);
  std::ofstream(fs::path(run_dir) / "recipe.toml") << recipe.to_toml();
  const std::string metrics_file = metrics_path(run_dir, rank);
  if (!resumed && fs::exists(metrics_file)) {
    LOG(WARNING) << "starting afresh in " << run_dir << ": replacing its metrics.jsonl";
    fs::remove(metrics_file);
  }
  return std::make_unique<MetricsWriter>(metrics_file, resumed ? step : -1);
}

std::unique_ptr<ProgressMeter> make_progress_meter(const Recipe& recipe, int64_t total_steps, int rank, Device device) {
  ProgressMeter::Options progress;
  progress.every = recipe.get<int64_t>("log.every");
  progress.total_steps = total_steps;
  progress.rank = rank;
  progress.all_ranks = recipe.get<bool>("log.all_ranks");
  if (device.is_cuda())  // the GPU's peak, not the host's
    progress.peak_memory = [device] { return static_cast<size_t>(device_peak_bytes(device)); };
  return std::make_unique<ProgressMeter>(progress);
}

}  // namespace dcae::trainer
