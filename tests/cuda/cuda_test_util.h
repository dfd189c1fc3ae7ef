// Helpers for the CUDA suites: skip without a GPU, poison fresh device memory with NaN, and compare a GPU run of an
// op against the CPU run on the same inputs (forward, and gradients through autograd).
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "core/autograd/engine.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "tests/testing/check.h"
#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/cuda_tensor.h"
#endif

namespace dcae::testing {

inline Device gpu() { return Device::cuda(0); }

// Every CUDA test starts here: skipped (with the reason) where no GPU is visible, and with every block the
// allocator hands out filled with 0xFF bytes - NaN in every float dtype - so an output element a kernel forgot to
// write fails the comparison (all_close never passes NaN).
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifdef DCAE_WITH_CUDA
    if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU is visible; the CUDA suites run on the GPU machine";
    cuda::caching_allocator(0).set_poison_on_allocate(true);
#else
    GTEST_SKIP() << "this build has no CUDA backend (configure with -DDCAE_CUDA=ON)";
#endif
  }
  void TearDown() override {
#ifdef DCAE_WITH_CUDA
    if (cuda_available()) cuda::caching_allocator(0).set_poison_on_allocate(false);
#endif
  }
};

// Tolerances for GPU-vs-CPU results of `dtype`: fp32 1e-5 relative, bf16/f16 one rounding step or two.
struct Tolerance {
  double atol, rtol;
};
inline Tolerance tolerance_for(DType dtype) {
  switch (dtype) {
    case DType::f64: return {1e-12, 1e-12};
    case DType::f32: return {1e-6, 1e-5};
    case DType::bf16: return {1e-2, 1e-2};
    case DType::f16: return {2e-3, 2e-3};
    default: return {0, 0};
  }
}

inline ::testing::AssertionResult gpu_matches_cpu(const Tensor& gpu_result, const Tensor& cpu_result,
                                                  Tolerance tol) {
  if (!gpu_result.device().is_cuda())
    return ::testing::AssertionFailure() << "expected a GPU result, got " << gpu_result.str();
  if (gpu_result.dtype() != cpu_result.dtype())
    return ::testing::AssertionFailure() << "dtype " << gpu_result.dtype() << " != CPU's " << cpu_result.dtype();
  return all_close(gpu_result.to(Device::cpu()), cpu_result, tol.atol, tol.rtol);
}
inline ::testing::AssertionResult gpu_matches_cpu(const Tensor& gpu_result, const Tensor& cpu_result) {
  return gpu_matches_cpu(gpu_result, cpu_result, tolerance_for(cpu_result.dtype()));
}

// Bitwise-equal element values (for ops that only move data), NaN never equal.
inline ::testing::AssertionResult gpu_equals_cpu(const Tensor& gpu_result, const Tensor& cpu_result) {
  return gpu_matches_cpu(gpu_result, cpu_result, {0, 0});
}

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs f on the CPU inputs and on copies on the GPU; compares the outputs.
inline ::testing::AssertionResult forward_matches(const OpFn& f, const std::vector<Tensor>& cpu_inputs,
                                                  Tolerance tol) {
  std::vector<Tensor> gpu_inputs;
  for (const Tensor& t : cpu_inputs) gpu_inputs.push_back(t.defined() ? t.to(gpu()) : t);
  return gpu_matches_cpu(f(gpu_inputs), f(cpu_inputs), tol);
}

// Gradients of sum(f(inputs) * direction) for the inputs flagged in `wants_grad`, computed by autograd on the GPU
// and on the CPU; every gradient is compared.
inline ::testing::AssertionResult gradients_match(const OpFn& f, const std::vector<Tensor>& cpu_inputs,
                                                  const std::vector<bool>& wants_grad, Tolerance tol,
                                                  uint64_t seed = 4242) {
  const auto run = [&](Device device) {
    std::vector<Tensor> inputs;
    for (size_t i = 0; i < cpu_inputs.size(); ++i) {
      Tensor t = cpu_inputs[i].to(device).detach();
      if (wants_grad[i]) t = t.clone().set_requires_grad(true);
      inputs.push_back(t);
    }
    const Tensor out = f(inputs);
    const Tensor direction = random_tensor(out.shape(), seed, out.dtype()).to(device);
    autograd::backward(ops::sum(ops::mul(out, direction)));
    std::vector<Tensor> grads;
    for (size_t i = 0; i < inputs.size(); ++i)
      if (wants_grad[i]) grads.push_back(inputs[i].grad());
    return grads;
  };
  const std::vector<Tensor> on_gpu = run(gpu()), on_cpu = run(Device::cpu());
  for (size_t i = 0; i < on_cpu.size(); ++i) {
    if (!on_gpu[i].defined() || !on_cpu[i].defined())
      return ::testing::AssertionFailure() << "gradient " << i << " missing";
    auto result = gpu_matches_cpu(on_gpu[i], on_cpu[i], tol);
    if (!result) return result << " (gradient of input " << i << ")";
  }
  return ::testing::AssertionSuccess();
}

// Random values in dtype on the CPU (integers: small whole numbers), never all zeros.
inline Tensor random_values(const Shape& shape, uint64_t seed, DType dtype) {
  if (is_floating(dtype)) return random_tensor(shape, seed, dtype);
  if (dtype == DType::boolean) return ops::greater(random_tensor(shape, seed), zeros({}, DType::f64)).to(DType::boolean);
  const Tensor whole = random_uniform(shape, seed, 1.0, dtype == DType::u8 ? 200.0 : 1000.0, DType::f64);
  std::vector<double> values = whole.to_vector<double>();
  for (double& v : values) v = static_cast<double>(static_cast<int64_t>(v));
  return from_doubles(values, shape, dtype);
}

}  // namespace dcae::testing
