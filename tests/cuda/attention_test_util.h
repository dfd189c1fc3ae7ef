// Shared by the CUDA attention suites (attention_test.cpp, attention_cudnn_test.cpp): GPU-vs-CPU comparison in
// relative L2 norm (accumulation orders differ from the CPU's GEMMs; fp32 1e-5, bf16/f16 1e-2, NaN never passes),
// one forward + backward case checked against the CPU kernels, random masks, and a scope that selects which
// implementation scaled dot-product attention runs on bf16/f16 (cuDNN's fused attention or ours).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "ops/attention.h"
#include "ops/cpu/attention.h"
#include "ops/dispatch.h"
#include "tests/cuda/cuda_test_util.h"
#ifdef DCAE_WITH_CUDA
#include "ops/cuda/attention.h"
#endif

namespace dcae::testing {

#ifdef DCAE_WITH_CUDA
using AttentionBackend = ops::cuda::AttentionBackend;
#else
enum class AttentionBackend { automatic, cudnn, own };
#endif

// Selects the attention implementation for a scope and restores the previous one.
class AttentionBackendScope {
 public:
  explicit AttentionBackendScope(AttentionBackend backend) {
#ifdef DCAE_WITH_CUDA
    previous_ = ops::cuda::set_attention_backend(backend);
#else
    (void)backend;
#endif
  }
  ~AttentionBackendScope() {
#ifdef DCAE_WITH_CUDA
    ops::cuda::set_attention_backend(previous_);
#endif
  }
  AttentionBackendScope(const AttentionBackendScope&) = delete;
  AttentionBackendScope& operator=(const AttentionBackendScope&) = delete;

 private:
  AttentionBackend previous_ = AttentionBackend::automatic;
};

// What the last attention kernel call on this thread ran ("cudnn engine N", "mma", "simt").
inline std::string last_attention_kernels() {
#ifdef DCAE_WITH_CUDA
  return ops::cuda::last_attention_kernels();
#else
  return "none";
#endif
}

inline bool ran_cudnn() { return last_attention_kernels().rfind("cudnn", 0) == 0; }

inline constexpr DType kFloatDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16};

inline double l2_tolerance(DType dtype) {
  switch (dtype) {
    case DType::f64: return 1e-12;
    case DType::f32: return 1e-5;
    default: return 1e-2;
  }
}

// ||gpu - cpu|| <= tol * ||cpu|| over the whole tensor, same shape and dtype, no NaN anywhere.
inline ::testing::AssertionResult close_in_l2(const Tensor& on_gpu, const Tensor& on_cpu, double tol) {
  if (!on_gpu.defined() || !on_cpu.defined()) return ::testing::AssertionFailure() << "undefined result";
  if (!on_gpu.device().is_cuda()) return ::testing::AssertionFailure() << "not a GPU result: " << on_gpu.str();
  if (on_gpu.shape() != on_cpu.shape() || on_gpu.dtype() != on_cpu.dtype())
    return ::testing::AssertionFailure() << on_gpu.str() << " vs CPU " << on_cpu.str();
  const std::vector<double> a = on_gpu.to(Device::cpu()).to_vector<double>(), b = on_cpu.to_vector<double>();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i]))
      return ::testing::AssertionFailure() << "NaN at " << i << " (GPU " << a[i] << ", CPU " << b[i] << ")";
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  if (std::sqrt(diff) > tol * std::sqrt(norm) + 1e-300)
    return ::testing::AssertionFailure() << "relative L2 error " << std::sqrt(diff / std::max(norm, 1e-300))
                                         << " > " << tol;
  return ::testing::AssertionSuccess();
}

// f on the CPU inputs and on GPU copies, then the gradients of sum(f * direction) w.r.t. every floating input; the
// output and every gradient compared in relative L2.
inline ::testing::AssertionResult gradients_close(const testing::OpFn& f, const std::vector<Tensor>& cpu_inputs, double tol) {
  const auto run = [&](Device device) {
    std::vector<Tensor> inputs;
    for (const Tensor& t : cpu_inputs) inputs.push_back(t.to(device).detach().clone().set_requires_grad(true));
    const Tensor out = f(inputs);
    autograd::backward(ops::sum(ops::mul(out, random_tensor(out.shape(), 4242, out.dtype()).to(device))));
    std::vector<Tensor> results = {out.detach()};
    for (const Tensor& t : inputs) results.push_back(t.grad());
    return results;
  };
  const std::vector<Tensor> on_gpu = run(gpu()), on_cpu = run(Device::cpu());
  for (size_t i = 0; i < on_cpu.size(); ++i) {
    auto result = close_in_l2(on_gpu[i], on_cpu[i], tol);
    if (!result) return result << (i == 0 ? " (output)" : " (gradient of input " + std::to_string(i - 1) + ")");
  }
  return ::testing::AssertionSuccess();
}

struct Case {
  int64_t batch, heads, lq, lk, d, dv;
};

// The kernels one check_case ran (last_attention_kernels() after each GPU call).
struct CaseKernels {
  std::string forward, backward_out_given, backward_out_recomputed;
};

// Forward and backward (all four gradients) of one case on both devices.
inline CaseKernels check_case(const Case& c, DType dtype, const Tensor& mask, double scale, const std::string& what) {
  const Tensor q = random_tensor({c.batch, c.heads, c.lq, c.d}, 1, dtype);
  const Tensor k = random_tensor({c.batch, c.heads, c.lk, c.d}, 2, dtype);
  const Tensor v = random_tensor({c.batch, c.heads, c.lk, c.dv}, 3, dtype);
  const Tensor gmask = mask.defined() ? mask.to(gpu()) : mask;
  Tensor glse, clse;
  CaseKernels kernels;
  const Tensor gout = DCAE_KERNEL(gpu(), attention_forward, q.to(gpu()), k.to(gpu()), v.to(gpu()), gmask, scale, glse);
  kernels.forward = last_attention_kernels();
  const Tensor cout = ops::cpu::attention_forward(q, k, v, mask, scale, clse);
  const double tol = l2_tolerance(dtype);
  EXPECT_TRUE(close_in_l2(gout, cout, tol)) << what << " " << dtype << " out";
  // Log-sum-exp is an fp32 (f64) statistic: compared at the compute dtype's tolerance, -inf rows included.
  const std::vector<double> gl = glse.to(Device::cpu()).to_vector<double>(), cl = clse.to_vector<double>();
  EXPECT_EQ(gl.size(), cl.size()) << what;
  if (gl.size() != cl.size()) return kernels;
  for (size_t i = 0; i < cl.size(); ++i) {
    if (std::isinf(cl[i])) {
      EXPECT_EQ(gl[i], cl[i]) << what << " " << dtype << " lse " << i;
    } else {
      EXPECT_NEAR(gl[i], cl[i], (dtype == DType::f64 ? 1e-12 : 1e-4) * (1 + std::abs(cl[i])))
          << what << " " << dtype << " lse " << i;
    }
  }
  const Tensor g = random_tensor({c.batch, c.heads, c.lq, c.dv}, 4, dtype);
  const bool scores = mask.defined();
  const std::vector<Tensor> cd = ops::cpu::attention_backward(g, q, k, v, mask, scale, clse, cout, scores);
  const char* names[] = {"dq", "dk", "dv", "dscores"};
  // With the forward output (what autograd passes) and without it (the tensor-core path recomputes it).
  for (const Tensor& saved_out : {gout, Tensor()}) {
    const std::vector<Tensor> gd = DCAE_KERNEL(gpu(), attention_backward, g.to(gpu()), q.to(gpu()), k.to(gpu()),
                                               v.to(gpu()), gmask, scale, glse, saved_out, scores);
    (saved_out.defined() ? kernels.backward_out_given : kernels.backward_out_recomputed) = last_attention_kernels();
    const std::string with = saved_out.defined() ? " (out given)" : " (out recomputed)";
    for (size_t i = 0; i < (scores ? 4u : 3u); ++i) {
      EXPECT_TRUE(close_in_l2(gd[i], cd[i], tol)) << what << " " << dtype << " " << names[i] << with;
    }
    if (!scores) {
      EXPECT_FALSE(gd[3].defined());
    }
  }
  return kernels;
}

// An additive mask of `shape` with about a fifth of the entries -inf.
inline Tensor random_mask(const Shape& shape, uint64_t seed, DType dtype = DType::f32) {
  std::vector<double> v = random_tensor(shape, seed).to_vector<double>();
  for (double& e : v)
    if (e > 0.85) e = -std::numeric_limits<double>::infinity();
  return from_doubles(v, shape, dtype);
}

}  // namespace dcae::testing
