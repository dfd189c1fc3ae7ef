// Run metrics: metrics.jsonl (one JSON object per line, flushed as written) and the progress line logged through
// glog every N steps (step/total, loss terms, lr, img/s, ETA, peak memory). Rank-aware: only rank 0 logs and writes
// unless every rank is asked to (each rank then writes its own file).
//
//   MetricsWriter metrics(metrics_path(run_dir, rank), resumed_step);   // on logging ranks only
//   ProgressMeter progress({.every = 10, .total_steps = steps, .rank = rank});
//   loop: if (auto report = progress.step(step, images, {{"loss", l}, {"l1", l1}}, lr)) metrics.write(report->row);
#pragma once
#include <cstdint>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace dcae::trainer {

// True on the ranks that log: rank 0, or every rank with all_ranks.
inline bool is_logging_rank(int rank, bool all_ranks) { return all_ranks || rank == 0; }
// <run_dir>/metrics.jsonl on rank 0, <run_dir>/metrics.rank<r>.jsonl elsewhere.
std::string metrics_path(const std::string& run_dir, int rank = 0);

class MetricsWriter {
 public:
  MetricsWriter() = default;  // disabled: write() does nothing
  // Appends to `path` (parent folders created). With resume_step >= 0, rows whose "step" exceeds it are dropped
  // first, so the file reads as one run that never stopped.
  explicit MetricsWriter(const std::string& path, int64_t resume_step = -1);
  void write(const nlohmann::json& row);
  bool enabled() const { return out_.is_open(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

using LossTerms = std::vector<std::pair<std::string, double>>;  // in display order

struct ProgressInfo {
  int64_t step = 0;
  int64_t total_steps = 0;
  LossTerms losses;
  double lr = 0.0;
  double images_per_second = 0.0;
  double eta_seconds = 0.0;
  size_t peak_memory_bytes = 0;
};
// "step 120/1000 | loss 0.1234 l1 0.0800 | lr 6.40e-05 | 35.2 img/s | ETA 12m03s | peak 1.23 GiB"
std::string format_progress(const ProgressInfo& info);
std::string format_duration(double seconds);  // "45s", "12m03s", "3h07m"
std::string format_bytes(size_t bytes);       // "512 B", "1.50 KiB", "1.23 GiB"

// Peak memory in use on the host (CpuAllocator); the CUDA build adds the device's peak through ProgressMeter's hook.
size_t host_peak_memory_bytes();

class ProgressMeter {
 public:
  struct Options {
    int64_t every = 10;
    int64_t total_steps = 0;
    int rank = 0;
    bool all_ranks = false;
    std::function<size_t()> peak_memory = host_peak_memory_bytes;
    std::function<double()> clock;  // seconds; default: steady_clock
  };
  explicit ProgressMeter(Options options);

  struct Report {
    std::string line;
    nlohmann::json row;  // {"step", "lr", loss terms..., "img_per_s", "eta_s", "peak_mem_bytes"}
  };
  // Call after each completed optimizer step (`step` = steps done, `images` = images it consumed on this rank).
  // Every `every` steps and at the last step it logs the line (INFO, on logging ranks) and returns the report;
  // otherwise nothing. Throughput and ETA are measured over the steps since the previous report.
  std::optional<Report> step(int64_t step, int64_t images, const LossTerms& losses, double lr);

 private:
  Options options_;
  double window_start_ = 0.0;
  int64_t window_steps_ = 0;
  int64_t window_images_ = 0;
};

}  // namespace dcae::trainer
