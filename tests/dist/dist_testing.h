// Helpers for the dist tests. The binary runs both alone (world of 1, each test discovered by ctest) and under
// `mpirun -np 2` (every rank runs every test in the same order, so collectives match).
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/autograd/engine.h"
#include "dist/bootstrap.h"
#include "nn/dcae/blocks.h"
#include "nn/layers.h"
#include "ops/elementwise.h"
#include "ops/loss.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "tests/testing/check.h"

namespace dcae::dist::testing {

using dcae::testing::all_close;
using dcae::testing::random_tensor;

// MPI (under mpirun) or a single process for the whole test binary.
class DistEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { init(); }
  void TearDown() override { finalize(); }
};
inline ::testing::Environment* const g_dist_environment = ::testing::AddGlobalTestEnvironment(new DistEnvironment);

inline std::shared_ptr<Communicator> world_comm() { return world(); }

// A folder every rank agrees on (rank 0's process id), removed by rank 0 at the end.
class SharedTempDir {
 public:
  explicit SharedTempDir(const std::string& tag) {
    Tensor pid = from_vector<int64_t>({static_cast<int64_t>(::getpid())}, {1});
    world_comm()->broadcast(pid, 0);
    path_ = (std::filesystem::temp_directory_path() / ("dcae_dist_" + tag + "_" + std::to_string(pid.item<int64_t>())))
                .string();
    if (world_comm()->rank() == 0) {
      std::filesystem::remove_all(path_);
      std::filesystem::create_directories(path_);
    }
    world_comm()->barrier();
  }
  ~SharedTempDir() {
    world_comm()->barrier();
    if (world_comm()->rank() == 0) std::filesystem::remove_all(path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// blocks.i = Linear(widths[i] -> widths[i+1]) then SiLU; head = Linear(widths.back() -> 3). Features [N, F].
class Block : public nn::Layer {
 public:
  Block(int64_t in, int64_t out, nn::InitOptions init) {
    fc = register_module("fc", std::make_shared<nn::Linear>(in, out, true, init));
  }
  Tensor forward(const Tensor& x) override { return ops::silu(fc->forward(x)); }
  std::shared_ptr<nn::Linear> fc;
};

class TinyNet : public nn::Layer {
 public:
  TinyNet(const std::vector<int64_t>& widths, uint64_t seed, DType dtype = DType::f32) {
    Generator generator(seed);
    nn::InitOptions init{&generator, dtype};
    auto blocks_module = register_module("blocks", std::make_shared<nn::Sequential>());
    for (size_t i = 0; i + 1 < widths.size(); ++i) {
      blocks.push_back(std::make_shared<Block>(widths[i], widths[i + 1], init));
      blocks_module->append(blocks.back());
    }
    runners = blocks;
    head = register_module("head", std::make_shared<nn::Linear>(widths.back(), 3, true, init));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = x;
    for (auto& runner : runners) h = runner->forward(h);
    return head->forward(h);
  }
  std::vector<std::shared_ptr<nn::Layer>> blocks;   // the modules
  std::vector<std::shared_ptr<nn::Layer>> runners;  // what forward calls (FSDP tests put wrappers here)
  std::shared_ptr<nn::Linear> head;
};

// conv 3->8, a DC-AE ResBlock (RMSNorm, SiLU), conv 8->3 over NHWC images; children "0", "1", "2".
inline std::shared_ptr<nn::Sequential> conv_net(uint64_t seed) {
  Generator generator(seed);
  nn::InitOptions init{&generator};
  auto net = std::make_shared<nn::Sequential>();
  net->append(std::make_shared<nn::Conv2d>(3, 8, 3, 1, -1, 1, true, init));
  net->append(std::make_shared<nn::dcae_model::ResBlock>(8, "rms_norm", nn::Activation::silu, init));
  net->append(std::make_shared<nn::Conv2d>(8, 3, 3, 1, -1, 1, true, init));
  return net;
}

// Plain AdamW over any leaf tensors (full parameters or shards): elementwise, so a shard is updated exactly like
// its rows of the full parameter. Tensors without a gradient are skipped.
class TestAdamW {
 public:
  explicit TestAdamW(double lr = 1e-2, double weight_decay = 0.01) : lr_(lr), weight_decay_(weight_decay) {}
  void step(const std::vector<Tensor>& params) {
    ++steps_;
    const double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    for (const Tensor& p : params) {
      if (!p.grad().defined()) continue;
      std::vector<double> value = p.to_vector<double>(), grad = p.grad().to_vector<double>();
      auto& [m, v] = moments_[p.impl()];
      m.resize(value.size(), 0.0);
      v.resize(value.size(), 0.0);
      for (size_t i = 0; i < value.size(); ++i) {
        m[i] = beta1 * m[i] + (1 - beta1) * grad[i];
        v[i] = beta2 * v[i] + (1 - beta2) * grad[i] * grad[i];
        const double m_hat = m[i] / (1 - std::pow(beta1, steps_)), v_hat = v[i] / (1 - std::pow(beta2, steps_));
        value[i] -= lr_ * (m_hat / (std::sqrt(v_hat) + eps) + weight_decay_ * value[i]);
      }
      copy_strided(p, from_doubles(value, p.shape(), p.dtype()));
    }
  }
  static void zero_grad(const std::vector<Tensor>& params) {
    for (const Tensor& p : params) p.set_grad(Tensor());
  }

 private:
  double lr_, weight_decay_;
  int64_t steps_ = 0;
  std::map<const TensorImpl*, std::pair<std::vector<double>, std::vector<double>>> moments_;
};

// SGD with momentum: unlike AdamW it is sensitive to the gradient's scale (a sum where a mean belongs shows).
class TestSgd {
 public:
  explicit TestSgd(double lr = 0.05, double momentum = 0.9) : lr_(lr), momentum_(momentum) {}
  void step(const std::vector<Tensor>& params) {
    for (const Tensor& p : params) {
      if (!p.grad().defined()) continue;
      std::vector<double> value = p.to_vector<double>(), grad = p.grad().to_vector<double>();
      std::vector<double>& buffer = buffers_[p.impl()];
      buffer.resize(value.size(), 0.0);
      for (size_t i = 0; i < value.size(); ++i) {
        buffer[i] = momentum_ * buffer[i] + grad[i];
        value[i] -= lr_ * buffer[i];
      }
      copy_strided(p, from_doubles(value, p.shape(), p.dtype()));
    }
  }

 private:
  double lr_, momentum_;
  std::map<const TensorImpl*, std::vector<double>> buffers_;
};

// Global batch for `steps` steps: inputs [batch, features] and targets [batch, 3].
struct Batch {
  Tensor x, y;
};
inline std::vector<Batch> make_batches(int steps, int64_t batch, int64_t features, DType dtype = DType::f32) {
  std::vector<Batch> out;
  for (int s = 0; s < steps; ++s)
    out.push_back(
        {random_tensor({batch, features}, 1000 + 2 * s, dtype), random_tensor({batch, 3}, 1001 + 2 * s, dtype)});
  return out;
}
// This rank's equal share of the global batch (dim 0).
inline Tensor local_rows(const Tensor& t, int rank, int world) {
  const int64_t n = t.size(0) / world;
  return t.narrow(0, rank * n, n).contiguous();
}

inline std::vector<Tensor> values(const std::vector<nn::NamedTensor>& named) {
  std::vector<Tensor> out;
  for (const auto& entry : named) out.push_back(entry.second);
  return out;
}

}  // namespace dcae::dist::testing
