// Shared helpers of the trainer tests: a scratch folder, a small file writer and a tiny trainable model.
#pragma once
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/tensor/philox.h"
#include "nn/module.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "ops/view.h"

namespace dcae::trainer::testing {

// A fresh folder under the system temp dir, removed when the object goes away.
class ScratchDir {
 public:
  ScratchDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("dcae_trainer_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline std::string write_file(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path) << text;
  return path;
}

// y = x W^T + b on [N, in] inputs, written with broadcasting ops (no GEMM needed at this size).
class Affine : public nn::Module {
 public:
  Affine(int64_t in, int64_t out, Generator& gen, DType dtype) {
    Tensor w = empty({out, in}, DType::f64), b = empty({out}, DType::f64);
    normal_(w, 0.0, 0.5, gen);
    normal_(b, 0.0, 0.1, gen);
    weight = register_parameter("weight", w.to(dtype));
    bias = register_parameter("bias", b.to(dtype));
  }
  Tensor forward(const Tensor& x) const {
    Tensor products = ops::mul(ops::unsqueeze(x, 1), ops::unsqueeze(weight, 0));  // [N, out, in]
    return ops::add(ops::sum(products, {2}), bias);
  }
  Tensor weight, bias;
};

class Scale : public nn::Module {
 public:
  Scale(int64_t n, DType dtype) { weight = register_parameter("weight", full({n}, 1.0, dtype)); }
  Tensor weight;
};

// fc1 (4 -> 6), tanh, norm (per-channel scale), fc2 (6 -> 3): names fc1.weight, fc1.bias, norm.weight, fc2.weight,
// fc2.bias, plus a buffer to check that buffers travel with checkpoints.
class TinyNet : public nn::Module {
 public:
  explicit TinyNet(uint64_t seed, DType dtype = DType::f32) {
    Generator gen(seed);
    fc1 = register_module("fc1", std::make_shared<Affine>(4, 6, gen, dtype));
    norm = register_module("norm", std::make_shared<Scale>(6, dtype));
    fc2 = register_module("fc2", std::make_shared<Affine>(6, 3, gen, dtype));
    steps_seen = register_buffer("steps_seen", zeros({}, DType::i64));
  }
  Tensor forward(const Tensor& x) const {
    return fc2->forward(ops::mul(ops::tanh(fc1->forward(x)), norm->weight));
  }
  std::shared_ptr<Affine> fc1, fc2;
  std::shared_ptr<Scale> norm;
  Tensor steps_seen;
};

}  // namespace dcae::trainer::testing
