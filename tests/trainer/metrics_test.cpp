#include "trainer/metrics.h"

#include <glog/logging.h>
#include <gtest/gtest.h>

#include <fstream>

#include "tests/trainer/trainer_testing.h"

namespace dcae::trainer {
namespace {

using testing::ScratchDir;

std::vector<nlohmann::json> read_rows(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> rows;
  std::string line;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

// Collects INFO lines logged through glog while alive.
class CapturedLog : public google::LogSink {
 public:
  using google::LogSink::send;
  CapturedLog() { google::AddLogSink(this); }
  ~CapturedLog() override { google::RemoveLogSink(this); }
  void send(google::LogSeverity, const char*, const char*, int, const struct ::tm*, const char* message,
            size_t length) override {
    lines.emplace_back(message, length);
  }
  std::vector<std::string> lines;
};

TEST(MetricsWriter, WritesOneFlushedJsonObjectPerLine) {
  ScratchDir dir;
  const std::string path = metrics_path(dir.file("run"));
  EXPECT_EQ(path, dir.file("run/metrics.jsonl"));
  EXPECT_EQ(metrics_path("run", 3), "run/metrics.rank3.jsonl");
  MetricsWriter writer(path);
  writer.write({{"step", 1}, {"loss", 0.5}});
  writer.write({{"step", 2}, {"loss", 0.25}, {"psnr", 21.5}});
  const auto rows = read_rows(path);  // readable while the writer is open: every row is flushed
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1]["psnr"], 21.5);
  MetricsWriter disabled;
  EXPECT_FALSE(disabled.enabled());
  disabled.write({{"step", 1}});  // no file, no error
}

TEST(MetricsWriter, ResumeDropsRowsAfterTheCheckpointAndTornLines) {
  ScratchDir dir;
  const std::string path = dir.file("metrics.jsonl");
  {
    MetricsWriter writer(path);
    for (int step = 10; step <= 50; step += 10) writer.write({{"step", step}, {"loss", 1.0 / step}});
    writer.write({{"event", "no step: kept"}});
  }
  std::ofstream(path, std::ios::app) << "{\"step\": 60, \"lo";  // a crash mid-line
  MetricsWriter resumed(path, /*resume_step=*/30);
  resumed.write({{"step", 40}, {"loss", 0.0}});
  const auto rows = read_rows(path);
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[0]["step"], 10);
  EXPECT_EQ(rows[2]["step"], 30);
  EXPECT_EQ(rows[3]["event"], "no step: kept");
  EXPECT_EQ(rows[4]["loss"], 0.0);
}

TEST(Progress, FormatsStepLossesLrThroughputEtaAndMemory) {
  ProgressInfo info;
  info.step = 120;
  info.total_steps = 1000;
  info.losses = {{"loss", 0.123456}, {"l1", 0.08}};
  info.lr = 6.4e-5;
  info.images_per_second = 35.24;
  info.eta_seconds = 723;
  info.peak_memory_bytes = size_t{1320} << 20;
  EXPECT_EQ(format_progress(info), "step 120/1000 | loss 0.1235 l1 0.08 | lr 6.40e-05 | 35.2 img/s | ETA 12m03s | peak 1.29 GiB");
  info.losses.clear();
  EXPECT_EQ(format_progress(info), "step 120/1000 | lr 6.40e-05 | 35.2 img/s | ETA 12m03s | peak 1.29 GiB");
  EXPECT_EQ(format_duration(45), "45s");
  EXPECT_EQ(format_duration(3 * 3600 + 7 * 60 + 5), "3h07m");
  EXPECT_EQ(format_duration(-1), "?");
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
}

TEST(Progress, ReportsEveryNStepsWithWindowedThroughputAndLogsOnlyOnRankZero) {
  double now = 100.0;
  ProgressMeter::Options options;
  options.every = 2;
  options.total_steps = 5;
  options.clock = [&] { return now; };
  options.peak_memory = [] { return size_t{2048}; };
  ProgressMeter meter(options);
  CapturedLog log;
  now += 1.0;
  EXPECT_FALSE(meter.step(1, 8, {{"loss", 1.0}}, 1e-3).has_value());
  now += 3.0;
  auto report = meter.step(2, 8, {{"loss", 0.5}}, 1e-3);
  ASSERT_TRUE(report.has_value());
  EXPECT_DOUBLE_EQ(report->row["img_per_s"].get<double>(), 16.0 / 4.0);
  EXPECT_DOUBLE_EQ(report->row["eta_s"].get<double>(), 3 * 2.0);  // 3 steps left at 2 s/step
  EXPECT_EQ(report->row["step"], 2);
  EXPECT_EQ(report->row["loss"], 0.5);
  EXPECT_EQ(report->row["peak_mem_bytes"], 2048);
  EXPECT_NE(report->line.find("step 2/5 | loss 0.5 | lr 1.00e-03 | 4.0 img/s | ETA 6s | peak 2.00 KiB"), std::string::npos)
      << report->line;
  now += 1.0;
  EXPECT_FALSE(meter.step(3, 8, {}, 1e-3).has_value());
  now += 1.0;
  EXPECT_TRUE(meter.step(4, 8, {}, 1e-3).has_value());
  now += 1.0;
  EXPECT_TRUE(meter.step(5, 8, {}, 1e-3).has_value());  // the last step always reports
  ASSERT_EQ(log.lines.size(), 3u);
  EXPECT_NE(log.lines[0].find("step 2/5"), std::string::npos);

  options.rank = 1;
  ProgressMeter quiet(options);
  EXPECT_TRUE(quiet.step(2, 8, {}, 1e-3).has_value());  // the report exists (for metrics) ...
  EXPECT_EQ(log.lines.size(), 3u);                       // ... but rank 1 does not log
  options.all_ranks = true;
  ProgressMeter loud(options);
  loud.step(2, 8, {}, 1e-3);
  ASSERT_EQ(log.lines.size(), 4u);
  EXPECT_EQ(log.lines[3].rfind("[rank 1] step 2/5", 0), 0u) << log.lines[3];
  EXPECT_TRUE(is_logging_rank(0, false));
  EXPECT_FALSE(is_logging_rank(2, false));
  EXPECT_TRUE(is_logging_rank(2, true));
  const Tensor held = zeros({1024});  // run alone (ctest), nothing else may have allocated yet
  EXPECT_GE(host_peak_memory_bytes(), held.nbytes());
}

}  // namespace
}  // namespace dcae::trainer
