// Scaled dot-product attention through cuDNN's fused flash attention: that cuDNN really runs where it can (bf16/f16,
// no mask, head sizes multiples of 8) and matches the CPU kernels, forward and backward; that its saved log-sum-exp
// and ours are interchangeable (cuDNN forward + our backward and the reverse); that the dispatcher falls back to our
// kernels where cuDNN has no engine or cannot express the problem; and the automatic choice by size.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "ops/attention.h"
#include "ops/cpu/attention.h"
#include "ops/dispatch.h"
#include "tests/cuda/attention_test_util.h"
#ifdef DCAE_WITH_CUDA
#include "ops/cuda/cudnn_attention.h"
#endif

namespace dcae {
namespace {

using testing::AttentionBackend;
using testing::AttentionBackendScope;
using testing::Case;
using testing::check_case;
using testing::close_in_l2;
using testing::gpu;
using testing::l2_tolerance;
using testing::last_attention_kernels;
using testing::ran_cudnn;
using testing::random_mask;
using testing::random_tensor;

class CudnnAttention : public testing::CudaTest {};

std::string describe(const Case& c) {
  return "B" + std::to_string(c.batch) + " H" + std::to_string(c.heads) + " Lq" + std::to_string(c.lq) + " Lk" +
         std::to_string(c.lk) + " D" + std::to_string(c.d);
}

int64_t cudnn_version() {
#ifdef DCAE_WITH_CUDA
  return ops::cuda::attention_detail::cudnn_runtime_version();
#else
  return 0;
#endif
}

// Transformer shapes cuDNN takes forward and backward (key counts multiples of 128, which every cuDNN 9 runs
// without a padding mask), against the CPU; the forward run twice on one shape (the cached plan) gives identical
// bits.
TEST_F(CudnnAttention, RunsWhereItCanAndMatchesCpu) {
  const AttentionBackendScope scope(AttentionBackend::cudnn);
  const std::vector<Case> cases = {
      {2, 3, 256, 256, 72, 72},
      {1, 2, 70, 128, 64, 64},
      {1, 2, 200, 384, 128, 128},
      {2, 2, 128, 256, 32, 32},
  };
  for (const Case& c : cases) {
    for (DType dtype : {DType::bf16, DType::f16}) {
      const std::string what = describe(c) + " " + dtype_name(dtype);
      const testing::CaseKernels kernels = check_case(c, dtype, Tensor(), 1.0 / std::sqrt(double(c.d)), what);
      EXPECT_EQ(kernels.forward.rfind("cudnn", 0), 0u) << what << " forward ran " << kernels.forward;
      EXPECT_EQ(kernels.backward_out_given.rfind("cudnn", 0), 0u)
          << what << " backward ran " << kernels.backward_out_given;
      EXPECT_EQ(kernels.backward_out_recomputed.rfind("cudnn", 0), 0u)
          << what << " backward (out recomputed) ran " << kernels.backward_out_recomputed;
    }
  }
  const Tensor q = random_tensor({2, 3, 256, 72}, 30, DType::bf16).to(gpu());
  const Tensor k = random_tensor({2, 3, 256, 72}, 31, DType::bf16).to(gpu());
  Tensor lse_a, lse_b;
  const Tensor a = DCAE_KERNEL(gpu(), attention_forward, q, k, k, Tensor(), 0.1, lse_a);
  const Tensor b = DCAE_KERNEL(gpu(), attention_forward, q, k, k, Tensor(), 0.1, lse_b);
  EXPECT_TRUE(ran_cudnn()) << last_attention_kernels();
  EXPECT_TRUE(testing::gpu_equals_cpu(a, b.to(Device::cpu())));
  EXPECT_TRUE(testing::gpu_equals_cpu(lse_a, lse_b.to(Device::cpu())));
}

// The log-sum-exp each forward saves is the other's: cuDNN forward then our backward, and ours then cuDNN's.
TEST_F(CudnnAttention, ForwardAndBackwardMixAcrossImplementations) {
  const Case c{2, 2, 100, 256, 72, 72};
  for (DType dtype : {DType::bf16, DType::f16}) {
    const Tensor q = random_tensor({c.batch, c.heads, c.lq, c.d}, 40, dtype);
    const Tensor k = random_tensor({c.batch, c.heads, c.lk, c.d}, 41, dtype);
    const Tensor v = random_tensor({c.batch, c.heads, c.lk, c.dv}, 42, dtype);
    const Tensor g = random_tensor({c.batch, c.heads, c.lq, c.dv}, 43, dtype);
    const double scale = 0.125;
    Tensor cpu_lse;
    const Tensor cpu_out = ops::cpu::attention_forward(q, k, v, Tensor(), scale, cpu_lse);
    const std::vector<Tensor> cpu_grads =
        ops::cpu::attention_backward(g, q, k, v, Tensor(), scale, cpu_lse, cpu_out, false);
    for (const auto& [forward_backend, backward_backend] :
         {std::pair{AttentionBackend::cudnn, AttentionBackend::own},
          std::pair{AttentionBackend::own, AttentionBackend::cudnn}}) {
      const bool cudnn_first = forward_backend == AttentionBackend::cudnn;
      const std::string what = std::string(dtype_name(dtype)) +
                               (cudnn_first ? " cuDNN forward, own backward" : " own forward, cuDNN backward");
      Tensor lse, out;
      {
        const AttentionBackendScope scope(forward_backend);
        out = DCAE_KERNEL(gpu(), attention_forward, q.to(gpu()), k.to(gpu()), v.to(gpu()), Tensor(), scale, lse);
        EXPECT_EQ(ran_cudnn(), cudnn_first) << what << ": forward ran " << last_attention_kernels();
      }
      const AttentionBackendScope scope(backward_backend);
      const std::vector<Tensor> grads = DCAE_KERNEL(gpu(), attention_backward, g.to(gpu()), q.to(gpu()), k.to(gpu()),
                                                    v.to(gpu()), Tensor(), scale, lse, out, false);
      EXPECT_EQ(ran_cudnn(), !cudnn_first) << what << ": backward ran " << last_attention_kernels();
      EXPECT_TRUE(close_in_l2(out, cpu_out, l2_tolerance(dtype))) << what << " out";
      const char* names[] = {"dq", "dk", "dv"};
      for (size_t i = 0; i < 3; ++i)
        EXPECT_TRUE(close_in_l2(grads[i], cpu_grads[i], l2_tolerance(dtype))) << what << " " << names[i];
    }
  }
}

#ifdef DCAE_WITH_CUDA
// Whether cuDNN finalizes any plan for a contiguous problem of these sizes (what its heuristics answer).
bool cudnn_has_engine(const Case& c, DType dtype, bool backward) {
  ops::cuda::attention_detail::AttentionParams p;
  p.batch = c.batch;
  p.heads = c.heads;
  p.lq = c.lq;
  p.lk = c.lk;
  p.d = c.d;
  p.dv_dim = c.dv;
  p.q_strides = p.o_strides = p.grad_strides = {c.heads * c.lq * c.d, c.lq * c.d, c.d};
  p.k_strides = p.v_strides = {c.heads * c.lk * c.d, c.lk * c.d, c.d};
  for (const auto& engine : ops::cuda::attention_detail::cudnn_attention_report(p, dtype, 0, backward).engines)
    if (engine.finalized) return true;
  return false;
}
#endif

// Forced to cuDNN, problems it has no engine for or cannot express run our kernels, with correct results.
TEST_F(CudnnAttention, FallsBackWhereCudnnHasNoEngine) {
  const AttentionBackendScope scope(AttentionBackend::cudnn);
  // Head size 264: the graph is valid, but cuDNN 9's Hopper backward engines stop at 256 (its forward has an
  // engine on 9.14): the dispatcher does what cuDNN's heuristics answer, and our SIMT kernels run otherwise.
  const Case wide{1, 2, 40, 128, 264, 264};
  testing::CaseKernels kernels = check_case(wide, DType::bf16, Tensor(), 0.06, describe(wide));
#ifdef DCAE_WITH_CUDA
  const bool forward_engine = cudnn_has_engine(wide, DType::bf16, false);
  const bool backward_engine = cudnn_has_engine(wide, DType::bf16, true);
  EXPECT_FALSE(backward_engine) << "cuDNN " << cudnn_version() << " now has a backward engine for head size 264";
  EXPECT_EQ(kernels.forward.rfind("cudnn", 0) == 0, forward_engine) << kernels.forward;
  if (!forward_engine) EXPECT_EQ(kernels.forward, "simt");
  if (!backward_engine) {
    EXPECT_EQ(kernels.backward_out_given, "simt");
    EXPECT_EQ(kernels.backward_out_recomputed, "simt");
  }
#endif
  // Not expressible as cuDNN's graph: f32, a mask, a head size that is not a multiple of 8.
  const Case dit{1, 2, 70, 128, 64, 64};
  kernels = check_case(dit, DType::f32, Tensor(), 0.125, describe(dit) + " f32");
  EXPECT_EQ(kernels.forward, "simt");
  kernels = check_case(dit, DType::bf16, random_mask({1, 1, 70, 128}, 44), 0.125, describe(dit) + " masked");
  EXPECT_EQ(kernels.forward, "mma");
  EXPECT_EQ(kernels.backward_out_given, "mma");
  const Case odd_head{1, 2, 33, 128, 20, 20};
  kernels = check_case(odd_head, DType::f16, Tensor(), 0.2, describe(odd_head));
  EXPECT_EQ(kernels.forward, "simt");
  // Before cuDNN 9.16 the backward needs a padding mask for key counts that are not multiples of 128: ours runs.
  const Case ragged{1, 2, 77, 77, 72, 72};
  kernels = check_case(ragged, DType::bf16, Tensor(), 0.1, describe(ragged));
  EXPECT_TRUE(kernels.forward.rfind("cudnn", 0) == 0) << kernels.forward;
  if (cudnn_version() < 91600) EXPECT_EQ(kernels.backward_out_given, "mma");
}

// Automatic: our kernels below kCudnnAttention{Forward,Backward}MinKeys keys, cuDNN from there on.
TEST_F(CudnnAttention, AutomaticChoosesBySize) {
  const AttentionBackendScope scope(AttentionBackend::automatic);
  for (int64_t keys : {64, 128, 256}) {
    const Tensor q = random_tensor({2, 4, 64, 64}, 50, DType::bf16).to(gpu());
    const Tensor k = random_tensor({2, 4, keys, 64}, 51, DType::bf16).to(gpu());
    const Tensor g = random_tensor({2, 4, 64, 64}, 52, DType::bf16).to(gpu());
    Tensor lse;
    const Tensor out = DCAE_KERNEL(gpu(), attention_forward, q, k, k, Tensor(), 0.125, lse);
#ifdef DCAE_WITH_CUDA
    EXPECT_EQ(ran_cudnn(), keys >= ops::cuda::kCudnnAttentionForwardMinKeys)
        << keys << " keys, forward ran " << last_attention_kernels();
#endif
    DCAE_KERNEL(gpu(), attention_backward, g, q, k, k, Tensor(), 0.125, lse, out, false);
#ifdef DCAE_WITH_CUDA
    EXPECT_EQ(ran_cudnn(), keys >= ops::cuda::kCudnnAttentionBackwardMinKeys)
        << keys << " keys, backward ran " << last_attention_kernels();
#endif
  }
}

// Gradients of q, k and v through autograd with cuDNN forward and backward, at a DiT shape.
TEST_F(CudnnAttention, GradientsThroughAutograd) {
  const AttentionBackendScope scope(AttentionBackend::cudnn);
  for (DType dtype : {DType::bf16, DType::f16}) {
    const Tensor q = random_tensor({2, 3, 128, 72}, 60, dtype), k = random_tensor({2, 3, 256, 72}, 61, dtype);
    const Tensor v = random_tensor({2, 3, 256, 72}, 62, dtype);
    EXPECT_TRUE(
        testing::gradients_close([](const auto& in) { return ops::scaled_dot_product_attention(in[0], in[1], in[2]); },
                                 {q, k, v}, l2_tolerance(dtype)))
        << dtype;
    EXPECT_TRUE(ran_cudnn()) << last_attention_kernels();
  }
}

#ifdef DCAE_WITH_CUDA
// The values DCAE_ATTENTION_BACKEND takes (read once, at the first attention call); no GPU needed.
TEST(AttentionBackendSetting, ParsesTheEnvironmentValues) {
  EXPECT_EQ(ops::cuda::attention_backend_from_string(""), AttentionBackend::automatic);
  EXPECT_EQ(ops::cuda::attention_backend_from_string("auto"), AttentionBackend::automatic);
  EXPECT_EQ(ops::cuda::attention_backend_from_string("cudnn"), AttentionBackend::cudnn);
  EXPECT_EQ(ops::cuda::attention_backend_from_string("own"), AttentionBackend::own);
  testing::expect_error([] { ops::cuda::attention_backend_from_string("fast"); },
                        {"DCAE_ATTENTION_BACKEND", "auto, cudnn or own", "'fast'"});
}
#endif

}  // namespace
}  // namespace dcae
