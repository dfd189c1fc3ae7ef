// GPU-vs-CPU comparison for results that are long sums (GEMMs, convolutions): cuBLAS and cuDNN add in a different
// order than the CPU, and single elements that cancel to near zero carry a relative error far above the
// tensor's, so the criterion is relative to the tensor's magnitude:
//   ||gpu - cpu||_2 <= tol * ||cpu||_2   and   |gpu_i - cpu_i| <= tol * (rms(cpu) + |cpu_i|) for every i.
// The second bound still fails a single wrong element; NaN or a missing (poisoned) element always fails.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/tensor/tensor.h"
#include "tests/cuda/cuda_test_util.h"

namespace dcae::testing {

// f64 1e-12, f32 1e-5 (no TF32), bf16 and f16 1e-2 (one rounding of the result, sometimes two).
inline double accumulation_tolerance(DType dtype) {
  switch (dtype) {
    case DType::f64: return 1e-12;
    case DType::f32: return 1e-5;
    default: return 1e-2;
  }
}

inline ::testing::AssertionResult sums_match(const Tensor& gpu_result, const Tensor& cpu_result, double tol) {
  if (!gpu_result.defined() || !cpu_result.defined()) return ::testing::AssertionFailure() << "undefined result";
  if (!gpu_result.device().is_cuda())
    return ::testing::AssertionFailure() << "expected a GPU result, got " << gpu_result.str();
  if (gpu_result.dtype() != cpu_result.dtype())
    return ::testing::AssertionFailure() << "dtype " << gpu_result.dtype() << " != CPU's " << cpu_result.dtype();
  if (gpu_result.shape() != cpu_result.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(gpu_result.shape()) << " != CPU's "
                                         << shape_str(cpu_result.shape());
  const std::vector<double> got = gpu_result.to(Device::cpu()).to_vector<double>();
  const std::vector<double> want = cpu_result.to_vector<double>();
  double diff2 = 0, norm2 = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i]) || std::isnan(want[i]))
      return ::testing::AssertionFailure() << "NaN at element " << i << " (GPU " << got[i] << ", CPU " << want[i]
                                           << ") of " << cpu_result.str();
    diff2 += (got[i] - want[i]) * (got[i] - want[i]);
    norm2 += want[i] * want[i];
  }
  if (want.empty()) return ::testing::AssertionSuccess();
  const double rms = std::sqrt(norm2 / static_cast<double>(want.size()));
  const double relative_l2 = norm2 > 0 ? std::sqrt(diff2 / norm2) : std::sqrt(diff2);
  if (relative_l2 > tol)
    return ::testing::AssertionFailure() << "relative L2 error " << relative_l2 << " > " << tol << " for "
                                         << cpu_result.str();
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::abs(got[i] - want[i]) > tol * (rms + std::abs(want[i])))
      return ::testing::AssertionFailure() << "element " << i << ": GPU " << got[i] << " vs CPU " << want[i]
                                           << " (rms " << rms << ", tol " << tol << ") of " << cpu_result.str();
  }
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult sums_match(const Tensor& gpu_result, const Tensor& cpu_result) {
  return sums_match(gpu_result, cpu_result, accumulation_tolerance(cpu_result.dtype()));
}

// Gradients of sum(f(inputs) * direction) for the flagged inputs through autograd on the GPU and on the CPU,
// each compared with sums_match at the dtype's tolerance.
inline ::testing::AssertionResult gradient_sums_match(const OpFn& f, const std::vector<Tensor>& cpu_inputs,
                                                      const std::vector<bool>& wants_grad, uint64_t seed = 4242) {
  const auto run = [&](Device device) {
    std::vector<Tensor> inputs;
    for (size_t i = 0; i < cpu_inputs.size(); ++i) {
      Tensor t = cpu_inputs[i].defined() ? cpu_inputs[i].to(device).detach() : Tensor();
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
    auto result = sums_match(on_gpu[i], on_cpu[i]);
    if (!result) return result << " (gradient " << i << " of the flagged inputs)";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace dcae::testing
