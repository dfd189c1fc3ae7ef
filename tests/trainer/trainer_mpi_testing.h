// Helpers of the end-to-end dcae-trainer tests that start `mpirun -np N dcae-trainer` (trainer_ddp_test.cpp,
// trainer_fsdp_test.cpp): the built binary, one run with its log, metrics rows and tolerance checks on safetensors.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "nn/io/safetensors.h"
#include "tests/trainer/job_testing.h"

namespace dcae::trainer::testing {

inline std::string trainer_binary() {
  if (const char* dir = std::getenv("DCAE_BIN")) return std::string(dir) + "/dcae-trainer";
  return DCAE_TRAINER_BIN;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct RankRun {
  int code = -1;
  std::string output;
};

// dcae-trainer on `ranks` processes (mpirun for more than one) with DCAE_PARAM_DIGEST on; `tag` names the log.
inline RankRun run_trainer(const ScratchDir& dir, int ranks, const std::string& args, const std::string& tag = "") {
  const std::string log = dir.file("trainer_" + (tag.empty() ? std::to_string(ranks) : tag) + ".log");
  std::ostringstream command;
  command << "env OMP_NUM_THREADS=1 DCAE_PARAM_DIGEST=1 DCAE_DIST_TIMEOUT_S=60 ";
  if (ranks > 1) {
#ifdef DCAE_MPIEXEC
    command << "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1 '"
            << DCAE_MPIEXEC << "' --oversubscribe -np " << ranks << " ";
#endif
  }
  command << "'" << trainer_binary() << "' " << args << " > '" << log << "' 2>&1";
  const int status = std::system(command.str().c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text(log)};
}

inline std::vector<nlohmann::json> train_rows(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && nlohmann::json::parse(line).value("split", "") == "train") rows.push_back(nlohmann::json::parse(line));
  return rows;
}

// Largest |a - b| / (atol + rtol |b|) over the tensors of `a` whose names `b` has too (same shapes).
inline double worst_ratio(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b, double atol,
                          double rtol) {
  double worst = 0.0;
  for (const auto& [name, ta] : a) {
    auto it = b.find(name);
    EXPECT_NE(it, b.end()) << name;
    if (it == b.end()) continue;
    const Tensor& tb = it->second;
    EXPECT_EQ(ta.shape(), tb.shape()) << name;
    const std::vector<double> va = ta.to(DType::f64).to_vector<double>(), vb = tb.to(DType::f64).to_vector<double>();
    for (size_t i = 0; i < va.size(); ++i) worst = std::max(worst, std::abs(va[i] - vb[i]) / (atol + rtol * std::abs(vb[i])));
  }
  return worst;
}

inline std::map<std::string, Tensor> read_safetensors(const std::string& path) {
  nn::SafetensorsFile file(path);
  std::map<std::string, Tensor> out;
  for (const std::string& name : file.names()) out[name] = file.load(name);
  return out;
}

// The same for two safetensors files with the same names and shapes.
inline double worst_ratio(const std::string& a_path, const std::string& b_path, double atol, double rtol) {
  const auto a = read_safetensors(a_path), b = read_safetensors(b_path);
  EXPECT_EQ(a.size(), b.size());
  return worst_ratio(a, b, atol, rtol);
}

}  // namespace dcae::trainer::testing
