// matmul_forward and linear_forward on the GPU (cuBLASLt, and the classic cuBLAS fallback) against the CPU
// kernels: transposes, batches with broadcasting, strided views read in place, empty and misaligned operands, the
// bias epilogue, and the gradients of matmul / linear through autograd.
#include <gtest/gtest.h>

#include <array>

#include "ops/cpu/matmul.h"
#include "ops/dispatch.h"
#include "ops/matmul.h"
#include "ops/view.h"
#include "tests/cuda/accumulation_check.h"
#include "tests/cuda/cuda_test_util.h"
#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/cuda_graph.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/math_mode.h"
#endif

namespace dcae {
namespace {

using testing::gpu;
using testing::random_tensor;
using testing::sums_match;

class CudaMatmul : public testing::CudaTest {};

constexpr DType kFloatDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16};

// GPU kernel on copies of the CPU operands (or on `view` of them) vs the CPU kernel.
::testing::AssertionResult matmul_matches(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  return sums_match(DCAE_KERNEL(gpu(), matmul_forward, a.to(gpu()), b.to(gpu()), ta, tb),
                    ops::cpu::matmul_forward(a, b, ta, tb));
}

#ifdef DCAE_WITH_CUDA
// Runs the body with the classic cuBLAS path forced, then restores cuBLASLt.
struct ClassicCublas {
  ClassicCublas() { ops::cuda::set_gemm_backend(ops::cuda::GemmBackend::cublas_only); }
  ~ClassicCublas() { ops::cuda::set_gemm_backend(ops::cuda::GemmBackend::automatic); }
};
#endif

TEST_F(CudaMatmul, TwoDimensionalAllTransposesAndDtypes) {
  uint64_t seed = 10;
  // Odd sizes (no vector-friendly leading dimension) and tensor-core friendly ones.
  for (const auto& [m, k, n] : {std::array<int64_t, 3>{37, 53, 29}, {64, 128, 96}, {1, 40, 17}, {33, 1, 8}}) {
    for (DType dtype : kFloatDtypes) {
      for (bool ta : {false, true}) {
        for (bool tb : {false, true}) {
          const Tensor a = random_tensor(ta ? Shape{k, m} : Shape{m, k}, ++seed, dtype);
          const Tensor b = random_tensor(tb ? Shape{n, k} : Shape{k, n}, ++seed, dtype);
          EXPECT_TRUE(matmul_matches(a, b, ta, tb)) << dtype << " m " << m << " k " << k << " n " << n << " ta " << ta
                                                    << " tb " << tb;
        }
      }
    }
  }
}

TEST_F(CudaMatmul, BatchedAndBroadcast) {
  struct Case {
    Shape a, b;
    bool ta, tb;
  };
  const std::vector<Case> cases = {
      {{3, 4, 5}, {5, 6}, false, false},           // shared 2-D b: one GEMM over all rows
      {{3, 5, 4}, {5, 6}, true, false},            // shared b, transposed a: a strided batch with b's stride 0
      {{3, 4, 5}, {3, 5, 6}, false, false},        // plain bmm
      {{2, 3, 4, 5}, {3, 6, 5}, false, true},      // b broadcast over the leading dim
      {{2, 1, 4, 5}, {1, 3, 5, 6}, false, false},  // mixed broadcast: outer dim loops on the host
      {{4, 5}, {2, 3, 5, 6}, false, false},        // 2-D a shared by a batched b
      {{1, 4, 5}, {3, 5, 6}, true, false},
  };
  uint64_t seed = 100;
  for (const Case& c : cases) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      Shape a_shape = c.a, b_shape = c.b;
      if (c.ta) std::swap(a_shape[a_shape.size() - 1], a_shape[a_shape.size() - 2]);
      if (c.tb) std::swap(b_shape[b_shape.size() - 1], b_shape[b_shape.size() - 2]);
      const Tensor a = random_tensor(a_shape, ++seed, dtype), b = random_tensor(b_shape, ++seed, dtype);
      EXPECT_TRUE(matmul_matches(a, b, c.ta, c.tb)) << dtype << " " << shape_str(a_shape) << " x " << shape_str(b_shape);
    }
  }
}

TEST_F(CudaMatmul, StridedViewsAreReadInPlaceOrPacked) {
  const Tensor a = random_tensor({3, 6, 10}, 200, DType::f32), b = random_tensor({3, 10, 7}, 201, DType::f32);
  const Tensor ga = a.to(gpu()), gb = b.to(gpu());
  const auto both = [&](auto&& view_a, auto&& view_b, bool ta, bool tb) {
    return sums_match(DCAE_KERNEL(gpu(), matmul_forward, view_a(ga), view_b(gb), ta, tb),
                      ops::cpu::matmul_forward(view_a(a), view_b(b), ta, tb));
  };
  const auto same = [](const Tensor& t) { return t; };
  // Transposed views (column-major operands), narrowed columns (ld > cols), batches interleaved with the rows
  // (batch stride 10, row stride 30), an expanded (stride-0) batch, and a step-2 slice of the last dim (no unit
  // stride: packed first).
  EXPECT_TRUE(both([](const Tensor& t) { return t.transpose(1, 2); }, same, true, false));
  EXPECT_TRUE(both(same, [](const Tensor& t) { return t.transpose(1, 2); }, false, true));
  EXPECT_TRUE(both([](const Tensor& t) { return t.narrow(2, 1, 7); }, [](const Tensor& t) { return t.narrow(1, 2, 7); },
                   false, false));
  EXPECT_TRUE(both([](const Tensor& t) { return t.reshape({6, 3, 10}).transpose(0, 1); }, same, false, false));
  EXPECT_TRUE(both([](const Tensor& t) { return t.narrow(0, 0, 1).expand({3, 6, 10}); }, same, false, false));
  EXPECT_TRUE(both([](const Tensor& t) { return t.slice(2, 0, 10, 2); },
                   [](const Tensor& t) { return t.slice(1, 0, 10, 2); }, false, false));
  // An operand that starts one element into its storage (2-byte aligned in bf16).
  const Tensor flat = random_tensor({1 + 33 * 24}, 202, DType::bf16), c = random_tensor({24, 40}, 203, DType::bf16);
  const Tensor offset_gpu = flat.to(gpu()).narrow(0, 1, 33 * 24).view({33, 24});
  EXPECT_TRUE(sums_match(DCAE_KERNEL(gpu(), matmul_forward, offset_gpu, c.to(gpu()), false, false),
                         ops::cpu::matmul_forward(flat.narrow(0, 1, 33 * 24).view({33, 24}), c, false, false)));
}

TEST_F(CudaMatmul, EmptyDimensions) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    // K = 0 gives zeros (the poisoned output must be overwritten); M = 0 an empty result.
    EXPECT_TRUE(matmul_matches(random_tensor({4, 0}, 1, dtype), random_tensor({0, 5}, 2, dtype), false, false));
    EXPECT_TRUE(matmul_matches(random_tensor({2, 4, 0}, 3, dtype), random_tensor({0, 5}, 4, dtype), false, false));
    const Tensor empty_rows = DCAE_KERNEL(gpu(), matmul_forward, random_tensor({0, 3}, 5, dtype).to(gpu()),
                                          random_tensor({3, 5}, 6, dtype).to(gpu()), false, false);
    EXPECT_EQ(empty_rows.shape(), (Shape{0, 5}));
  }
}

TEST_F(CudaMatmul, LinearBiasEpilogue) {
  uint64_t seed = 300;
  for (DType dtype : kFloatDtypes) {
    for (const Shape& x_shape : {Shape{7, 48}, Shape{2, 5, 48}, Shape{64, 48}}) {
      const Tensor x = random_tensor(x_shape, ++seed, dtype);
      const Tensor w = random_tensor({40, 48}, ++seed, dtype), bias = random_tensor({40}, ++seed, dtype);
      EXPECT_TRUE(sums_match(DCAE_KERNEL(gpu(), linear_forward, x.to(gpu()), w.to(gpu()), bias.to(gpu())),
                             ops::cpu::linear_forward(x, w, bias)))
          << dtype << " " << shape_str(x_shape);
    }
    // No inputs (K = 0): the bias alone.
    const Tensor x0 = random_tensor({3, 0}, ++seed, dtype), w0 = random_tensor({5, 0}, ++seed, dtype);
    const Tensor b0 = random_tensor({5}, ++seed, dtype);
    EXPECT_TRUE(sums_match(DCAE_KERNEL(gpu(), linear_forward, x0.to(gpu()), w0.to(gpu()), b0.to(gpu())),
                           ops::cpu::linear_forward(x0, w0, b0)))
        << dtype;
  }
}

TEST_F(CudaMatmul, GradientsOfMatmulAndLinear) {
  for (DType dtype : {DType::f32, DType::bf16, DType::f64}) {
    const Tensor a = random_tensor({2, 3, 6, 8}, 400, dtype), b = random_tensor({8, 5}, 401, dtype);
    EXPECT_TRUE(testing::gradient_sums_match([](const auto& in) { return ops::matmul(in[0], in[1]); }, {a, b},
                                             {true, true}))
        << dtype;
    const Tensor c = random_tensor({3, 8, 6}, 402, dtype), d = random_tensor({3, 5, 8}, 403, dtype);
    EXPECT_TRUE(testing::gradient_sums_match([](const auto& in) { return ops::matmul(in[0], in[1], true, true); },
                                             {c, d}, {true, true}))
        << dtype;
    const Tensor x = random_tensor({2, 7, 8}, 404, dtype), w = random_tensor({5, 8}, 405, dtype);
    const Tensor bias = random_tensor({5}, 406, dtype);
    EXPECT_TRUE(testing::gradient_sums_match([](const auto& in) { return ops::linear(in[0], in[1], in[2]); },
                                             {x, w, bias}, {true, true, true}))
        << dtype;
    EXPECT_TRUE(testing::gradient_sums_match([](const auto& in) { return ops::linear(in[0], in[1], in[2]); },
                                             {random_tensor({8}, 407, dtype), w, bias}, {true, false, true}))
        << dtype;
  }
}

TEST_F(CudaMatmul, ClassicCublasFallbackMatches) {
#ifdef DCAE_WITH_CUDA
  ClassicCublas classic;
  uint64_t seed = 500;
  for (DType dtype : kFloatDtypes) {
    seed += 10;
    EXPECT_TRUE(matmul_matches(random_tensor({37, 53}, seed, dtype), random_tensor({29, 53}, seed + 1, dtype), false,
                               true))
        << dtype;
    EXPECT_TRUE(matmul_matches(random_tensor({3, 9, 4}, seed + 2, dtype), random_tensor({3, 9, 6}, seed + 3, dtype),
                               true, false))
        << dtype;
    const Tensor x = random_tensor({6, 16}, ++seed, dtype), w = random_tensor({12, 16}, ++seed, dtype);
    const Tensor bias = random_tensor({12}, ++seed, dtype);  // no epilogue here: the bias is added afterwards
    EXPECT_TRUE(sums_match(DCAE_KERNEL(gpu(), linear_forward, x.to(gpu()), w.to(gpu()), bias.to(gpu())),
                           ops::cpu::linear_forward(x, w, bias)))
        << dtype;
  }
#endif
}

TEST_F(CudaMatmul, Tf32IsOptInAndPlansFollowTheSetting) {
#ifdef DCAE_WITH_CUDA
  const Tensor a = random_tensor({128, 256}, 600, DType::f32), b = random_tensor({256, 64}, 601, DType::f32);
  ASSERT_FALSE(ops::cuda::allow_tf32()) << "TF32 must be off unless asked for (DCAE_ALLOW_TF32 set?)";
  EXPECT_TRUE(matmul_matches(a, b, false, false));
  ops::cuda::set_allow_tf32(true);
  // TF32 keeps 10 mantissa bits of the inputs: about 1e-3 relative.
  EXPECT_TRUE(sums_match(DCAE_KERNEL(gpu(), matmul_forward, a.to(gpu()), b.to(gpu()), false, false),
                         ops::cpu::matmul_forward(a, b, false, false), 5e-3));
  ops::cuda::set_allow_tf32(false);
  EXPECT_TRUE(matmul_matches(a, b, false, false)) << "a TF32 plan was reused after TF32 was turned off";
#endif
}

TEST_F(CudaMatmul, ErrorsNameTheOperands) {
  const Tensor a = random_tensor({4, 5}, 1, DType::f32).to(gpu());
  testing::expect_error([&] { ops::matmul(a, random_tensor({5, 3}, 2, DType::f32)); },
                        {"matmul", "different devices", "[4, 5]", "[5, 3]"});
  testing::expect_error([&] { ops::matmul(a, random_tensor({4, 3}, 3, DType::f32).to(gpu())); },
                        {"inner dims", "[4, 5]", "[4, 3]"});
  testing::expect_error([&] { ops::linear(a, random_tensor({3, 5}, 4, DType::bf16).to(gpu())); },
                        {"linear", "different dtypes"});
}

TEST_F(CudaMatmul, LargeProblemsTimeTheCandidatesAndStayCorrect) {
#ifdef DCAE_WITH_CUDA
  // 2^30 multiply-adds and more: cuBLASLt's candidates are timed on first use; the kept one must be right, in
  // both layouts and with the bias epilogue, and again from the cache.
  uint64_t seed = 700;
  for (bool tb : {false, true})
    for (int call = 0; call < 2; ++call) {
      const Tensor a = random_tensor({1024, 1024}, ++seed, DType::bf16);
      const Tensor b = random_tensor({1024, 1024}, ++seed, DType::bf16);
      EXPECT_TRUE(matmul_matches(a, b, false, tb)) << "tb " << tb << " call " << call;
    }
  const Tensor x = random_tensor({1024, 1152}, 710, DType::bf16), w = random_tensor({1024, 1152}, 711, DType::bf16);
  const Tensor bias = random_tensor({1024}, 712, DType::bf16);
  EXPECT_TRUE(sums_match(DCAE_KERNEL(gpu(), linear_forward, x.to(gpu()), w.to(gpu()), bias.to(gpu())),
                         ops::cpu::linear_forward(x, w, bias)));
  // Untimed, the heuristic's first answer runs (a shape of its own, so no cached plan answers).
  const bool previous = ops::cuda::set_gemm_autotune(false);
  const Tensor c = random_tensor({1040, 1024}, 713, DType::bf16), d = random_tensor({1024, 1024}, 714, DType::bf16);
  EXPECT_TRUE(matmul_matches(c, d, false, true));
  ops::cuda::set_gemm_autotune(previous);
#endif
}

TEST_F(CudaMatmul, FirstUseOfALargeShapeInsideAGraphCapture) {
#ifdef DCAE_WITH_CUDA
  // Timing waits on events, which a capture forbids: a shape first seen while capturing keeps the heuristic's
  // answer, and the captured graph computes the product.
  const Tensor a = random_tensor({1056, 1024}, 720, DType::bf16), b = random_tensor({1024, 1056}, 721, DType::bf16);
  const Tensor ga = a.to(gpu()), gb = b.to(gpu());
  DCAE_KERNEL(gpu(), matmul_forward, ga.narrow(0, 0, 8), gb, false, false);  // handles exist before the capture
  Tensor out;
  cuda::CudaGraph graph;
  graph.capture([&] { out = DCAE_KERNEL(gpu(), matmul_forward, ga, gb, false, false); });
  graph.replay();
  EXPECT_TRUE(sums_match(out, ops::cpu::matmul_forward(a, b, false, false)));
#endif
}

}  // namespace
}  // namespace dcae
