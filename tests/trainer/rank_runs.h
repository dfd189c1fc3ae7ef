// Running the built dcae-trainer on one process or on several ranks (`mpirun --oversubscribe -np N`, as root
// allowed, one OpenMP thread) from a test, with DCAE_PARAM_DIGEST on, and reading what the run wrote.
#pragma once
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "nn/io/safetensors.h"
#include "tests/trainer/trainer_testing.h"

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

// dcae-trainer `args` on `ranks` processes; the output of every rank lands in dir/<log_name>.
inline RankRun run_trainer_on_ranks(const ScratchDir& dir, int ranks, const std::string& args,
                                    const std::string& log_name) {
  const std::string log = dir.file(log_name);
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

// The "split": "train" rows of a metrics.jsonl.
inline std::vector<nlohmann::json> train_rows(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    nlohmann::json row = nlohmann::json::parse(line);
    if (row.value("split", "") == "train") rows.push_back(std::move(row));
  }
  return rows;
}

// Largest |a - b| / (atol + rtol |b|) over every tensor of two safetensors files with the same names and shapes.
inline double worst_ratio(const std::string& a_path, const std::string& b_path, double atol, double rtol) {
  nn::SafetensorsFile a(a_path), b(b_path);
  EXPECT_EQ(a.names(), b.names());
  double worst = 0.0;
  for (const std::string& name : a.names()) {
    const Tensor ta = a.load(name), tb = b.load(name);
    EXPECT_EQ(ta.shape(), tb.shape()) << name;
    const std::vector<double> va = ta.to(DType::f64).to_vector<double>(), vb = tb.to(DType::f64).to_vector<double>();
    for (size_t i = 0; i < va.size() && i < vb.size(); ++i)
      worst = std::max(worst, std::abs(va[i] - vb[i]) / (atol + rtol * std::abs(vb[i])));
  }
  return worst;
}

}  // namespace dcae::trainer::testing
