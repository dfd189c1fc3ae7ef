#include "trainer/metrics.h"

#include <glog/logging.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "core/tensor/error.h"
#include "core/tensor/storage.h"

namespace dcae::trainer {

using nlohmann::json;
namespace fs = std::filesystem;

std::string metrics_path(const std::string& run_dir, int rank) {
  return (fs::path(run_dir) / (rank == 0 ? "metrics.jsonl" : "metrics.rank" + std::to_string(rank) + ".jsonl")).string();
}

MetricsWriter::MetricsWriter(const std::string& path, int64_t resume_step) : path_(path) {
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  if (resume_step >= 0 && fs::exists(path)) {
    // Keep rows up to the resumed step; rows logged after the checkpoint will be written again.
    std::ifstream in(path);
    std::string kept, line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      json row = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (row.is_discarded()) continue;  // a line cut short by a crash
      if (row.contains("step") && row["step"].is_number_integer() && row["step"].get<int64_t>() > resume_step) continue;
      kept += line + "\n";
    }
    in.close();
    std::ofstream rewrite(path, std::ios::trunc);
    rewrite << kept;
  }
  out_.open(path, std::ios::app);
  DCAE_CHECK(out_.is_open(), "cannot open metrics file '", path, "' for appending");
}

void MetricsWriter::write(const json& row) {
  if (!out_.is_open()) return;
  out_ << row.dump() << "\n";
  out_.flush();
  DCAE_CHECK(out_.good(), "writing metrics to '", path_, "' failed");
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  char text[32];
  if (s < 60) std::snprintf(text, sizeof(text), "%llds", static_cast<long long>(s));
  else if (s < 3600) std::snprintf(text, sizeof(text), "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else std::snprintf(text, sizeof(text), "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s % 3600 / 60));
  return text;
}

std::string format_bytes(size_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  if (unit == 0) std::snprintf(text, sizeof(text), "%zu B", bytes);
  else std::snprintf(text, sizeof(text), "%.2f %s", value, units[unit]);
  return text;
}

std::string format_progress(const ProgressInfo& info) {
  char buffer[64];
  std::ostringstream out;
  out << "step " << info.step << "/" << info.total_steps;
  for (size_t i = 0; i < info.losses.size(); ++i) {
    std::snprintf(buffer, sizeof(buffer), "%s%s %.4g", i == 0 ? " | " : " ", info.losses[i].first.c_str(),
                  info.losses[i].second);
    out << buffer;
  }
  std::snprintf(buffer, sizeof(buffer), " | lr %.2e | %.1f img/s | ETA ", info.lr, info.images_per_second);
  out << buffer << format_duration(info.eta_seconds) << " | peak " << format_bytes(info.peak_memory_bytes);
  return out.str();
}

size_t host_peak_memory_bytes() { return CpuAllocator::instance().peak_bytes(); }

namespace {
double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

ProgressMeter::ProgressMeter(Options options) : options_(std::move(options)) {
  DCAE_CHECK(options_.every >= 1, "progress: log.every must be >= 1, got ", options_.every);
  if (!options_.clock) options_.clock = steady_seconds;
  window_start_ = options_.clock();
}

std::optional<ProgressMeter::Report> ProgressMeter::step(int64_t step, int64_t images, const LossTerms& losses,
                                                          double lr) {
  ++window_steps_;
  window_images_ += images;
  if (step % options_.every != 0 && step != options_.total_steps) return std::nullopt;
  const double now = options_.clock(), elapsed = std::max(now - window_start_, 1e-9);
  ProgressInfo info;
  info.step = step;
  info.total_steps = options_.total_steps;
  info.losses = losses;
  info.lr = lr;
  info.images_per_second = static_cast<double>(window_images_) / elapsed;
  info.eta_seconds = static_cast<double>(std::max<int64_t>(options_.total_steps - step, 0)) * elapsed /
                     static_cast<double>(window_steps_);
  info.peak_memory_bytes = options_.peak_memory ? options_.peak_memory() : 0;
  window_start_ = now;
  window_steps_ = window_images_ = 0;

  Report report;
  report.line = format_progress(info);
  report.row = {{"step", step}, {"lr", lr}};
  for (const auto& [name, value] : losses) report.row[name] = value;
  report.row["img_per_s"] = info.images_per_second;
  report.row["eta_s"] = info.eta_seconds;
  report.row["peak_mem_bytes"] = info.peak_memory_bytes;
  if (is_logging_rank(options_.rank, options_.all_ranks))
    LOG(INFO) << (options_.all_ranks ? "[rank " + std::to_string(options_.rank) + "] " : std::string()) << report.line;
  return report;
}

}  // namespace dcae::trainer

