// RMSNorm / LayerNorm / GroupNorm / BatchNorm on the GPU against the CPU kernels: every launch path (warp per row
// with 1-8 register packs, the scalar warp and block paths, misaligned rows), every gradient mask, the running
// statistics, and gradients through autograd.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/cpu/norm.h"
#include "ops/dispatch.h"
#include "ops/norm.h"
#include "ops/unary.h"
#include "tests/cuda/cuda_test_util.h"

namespace dcae {
namespace {

using testing::gpu;
using testing::gpu_matches_cpu;
using testing::random_tensor;
using testing::Tolerance;
using testing::tolerance_for;

class CudaNorm : public testing::CudaTest {};

constexpr DType kFloatDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16};
constexpr std::array<bool, 3> kAllGrads = {true, true, true};

Tensor on_gpu(const Tensor& t) { return t.defined() ? t.to(gpu()) : t; }

// Parameter gradients are sums over every row: compare them on the scale of sqrt(rows) terms of size ~1.
Tolerance summed(DType dtype, int64_t terms) {
  Tolerance tol = tolerance_for(dtype);
  tol.atol *= std::sqrt(static_cast<double>(terms));
  return tol;
}

::testing::AssertionResult grads_match(const std::vector<Tensor>& on_gpu_grads, const std::vector<Tensor>& on_cpu,
                                       DType dtype, int64_t rows) {
  for (size_t i = 0; i < 3; ++i) {
    if (on_gpu_grads[i].defined() != on_cpu[i].defined())
      return ::testing::AssertionFailure() << "gradient " << i << " defined on one device only";
    if (!on_cpu[i].defined()) continue;
    auto result = gpu_matches_cpu(on_gpu_grads[i], on_cpu[i], i == 0 ? tolerance_for(dtype) : summed(dtype, rows));
    if (!result) return result << " (gradient " << i << ")";
  }
  return ::testing::AssertionSuccess();
}

struct RowCase {
  Shape shape;
  const char* path;
};

TEST_F(CudaNorm, RowNormsMatchCpuOnEveryPath) {
  const std::vector<RowCase> cases = {
      {{7, 5}, "odd C: scalar, warp per row"},
      {{4, 3, 64}, "one pack per lane"},
      {{3, 520}, "several packs per lane, a partial last pack round"},
      {{2, 1536}, "bf16: 6 packs forward, scalar block backward"},
      {{3, 2056}, "wide rows: a block per row"},
      {{5000, 32}, "many rows per warp and many blocks of partials"},
  };
  for (const RowCase& c : cases) {
    for (DType dtype : kFloatDtypes) {
      for (bool center : {false, true}) {
        const int64_t channels = c.shape.back(), rows = shape_numel(c.shape) / channels;
        const Tensor x = random_tensor(c.shape, 1, dtype, 2.0);
        const Tensor w = random_tensor({channels}, 2, dtype), b = random_tensor({channels}, 3, dtype);
        Tensor gm, gr, cm, cr;
        const Tensor gy = DCAE_KERNEL(gpu(), row_norm_forward, x.to(gpu()), w.to(gpu()), b.to(gpu()), 1e-5, center, gm, gr);
        const Tensor cy = ops::cpu::row_norm_forward(x, w, b, 1e-5, center, cm, cr);
        EXPECT_TRUE(gpu_matches_cpu(gy, cy)) << c.path << " " << dtype << " center " << center;
        EXPECT_TRUE(gpu_matches_cpu(gr, cr)) << c.path << " rstd " << dtype;
        if (center) {
          EXPECT_TRUE(gpu_matches_cpu(gm, cm)) << c.path << " mean " << dtype;
        }
        const Tensor g = random_tensor(c.shape, 4, dtype);
        EXPECT_TRUE(grads_match(
            DCAE_KERNEL(gpu(), row_norm_backward, g.to(gpu()), x.to(gpu()), w.to(gpu()), on_gpu(cm), cr.to(gpu()), center, kAllGrads),
            ops::cpu::row_norm_backward(g, x, w, cm, cr, center, kAllGrads), dtype, rows))
            << c.path << " backward " << dtype << " center " << center;
      }
    }
  }
}

TEST_F(CudaNorm, RowNormWithoutParametersMisalignedRowsAndPartialMasks) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    // A view one element into its storage: no 16-byte loads possible.
    const Tensor base = random_tensor({6 * 64 + 1}, 5, dtype);
    const Tensor x = base.narrow(0, 1, 6 * 64).view({6, 64});
    Tensor gm, gr, cm, cr;
    const Tensor gy = DCAE_KERNEL(gpu(), row_norm_forward, base.to(gpu()).narrow(0, 1, 6 * 64).view({6, 64}), Tensor(),
                                  Tensor(), 1e-6, true, gm, gr);
    EXPECT_TRUE(gpu_matches_cpu(gy, ops::cpu::row_norm_forward(x, Tensor(), Tensor(), 1e-6, true, cm, cr))) << dtype;
    const Tensor w = random_tensor({64}, 6, dtype), g = random_tensor({6, 64}, 7, dtype);
    for (std::array<bool, 3> needs : {std::array<bool, 3>{true, false, false}, std::array<bool, 3>{false, true, true},
                                      std::array<bool, 3>{false, false, true}}) {
      // Only the bias gradient wanted: the gradient stands in for x, as ops/norm.cpp passes it.
      const Tensor xin = needs[0] || needs[1] ? x : g;
      EXPECT_TRUE(grads_match(DCAE_KERNEL(gpu(), row_norm_backward, g.to(gpu()), xin.to(gpu()), w.to(gpu()), Tensor(),
                                          cr.to(gpu()), false, needs),
                              ops::cpu::row_norm_backward(g, xin, w, Tensor(), cr, false, needs), dtype, 6))
          << dtype << " needs " << needs[0] << needs[1] << needs[2];
    }
  }
}

TEST_F(CudaNorm, GroupNormMatchesCpu) {
  const std::vector<std::pair<Shape, int64_t>> cases = {{{2, 3, 4, 12}, 3}, {{3, 5, 7}, 7}, {{3, 5, 7}, 1},
                                                        {{2, 40, 33, 64}, 32}};
  for (const auto& [shape, groups] : cases) {
    for (DType dtype : kFloatDtypes) {
      for (bool affine : {true, false}) {
        const int64_t channels = shape.back();
        const Tensor x = random_tensor(shape, 8, dtype, 3.0);
        const Tensor w = affine ? random_tensor({channels}, 9, dtype) : Tensor();
        const Tensor b = affine ? random_tensor({channels}, 10, dtype) : Tensor();
        Tensor gm, gr, cm, cr;
        const Tensor gy = DCAE_KERNEL(gpu(), group_norm_forward, x.to(gpu()), groups, on_gpu(w), on_gpu(b), 1e-5, gm, gr);
        EXPECT_TRUE(gpu_matches_cpu(gy, ops::cpu::group_norm_forward(x, groups, w, b, 1e-5, cm, cr)))
            << shape_str(shape) << " " << dtype;
        EXPECT_TRUE(gpu_matches_cpu(gm, cm)) << shape_str(shape) << " mean " << dtype;
        EXPECT_TRUE(gpu_matches_cpu(gr, cr)) << shape_str(shape) << " rstd " << dtype;
        const Tensor g = random_tensor(shape, 11, dtype);
        const std::array<bool, 3> needs = {true, affine, affine};
        EXPECT_TRUE(grads_match(DCAE_KERNEL(gpu(), group_norm_backward, g.to(gpu()), x.to(gpu()), groups, on_gpu(w),
                                            cm.to(gpu()), cr.to(gpu()), needs),
                                ops::cpu::group_norm_backward(g, x, groups, w, cm, cr, needs), dtype,
                                x.numel() / channels))
            << shape_str(shape) << " backward " << dtype;
      }
    }
  }
}

TEST_F(CudaNorm, BatchNormTrainingUpdatesRunningStatsAsTheCpu) {
  for (DType dtype : kFloatDtypes) {
    const Shape shape = {4, 9, 11, 24};
    const Tensor x = random_tensor(shape, 12, dtype, 2.0);
    const Tensor w = random_tensor({24}, 13, dtype), b = random_tensor({24}, 14, dtype);
    // Running stats in f32 under any activation dtype (as BatchNorm2d keeps them).
    const Tensor rm = random_tensor({24}, 15, DType::f32), rv = ops::add(ops::abs(random_tensor({24}, 16, DType::f32)), 0.5);
    Tensor grm = rm.to(gpu()), grv = rv.to(gpu()), crm = rm.clone(), crv = rv.clone();
    Tensor gm, gr, cm, cr;
    const Tensor gy = DCAE_KERNEL(gpu(), batch_norm_forward, x.to(gpu()), w.to(gpu()), b.to(gpu()), grm, grv, true, 0.1,
                                  1e-5, gm, gr);
    const Tensor cy = ops::cpu::batch_norm_forward(x, w, b, crm, crv, true, 0.1, 1e-5, cm, cr);
    EXPECT_TRUE(gpu_matches_cpu(gy, cy)) << dtype;
    EXPECT_TRUE(gpu_matches_cpu(grm, crm)) << "running mean " << dtype;
    EXPECT_TRUE(gpu_matches_cpu(grv, crv)) << "running var " << dtype;
    EXPECT_TRUE(gpu_matches_cpu(gr, cr)) << "rstd " << dtype;
    const Tensor g = random_tensor(shape, 17, dtype);
    EXPECT_TRUE(grads_match(DCAE_KERNEL(gpu(), batch_norm_backward, g.to(gpu()), x.to(gpu()), w.to(gpu()), cm.to(gpu()),
                                        cr.to(gpu()), true, kAllGrads),
                            ops::cpu::batch_norm_backward(g, x, w, cm, cr, true, kAllGrads), dtype, x.numel() / 24))
        << "backward " << dtype;
  }
}

TEST_F(CudaNorm, BatchNormEvalUsesTheRunningStatsUntouched) {
  for (DType dtype : kFloatDtypes) {
    const Shape shape = {3, 5, 7, 40};
    const Tensor x = random_tensor(shape, 18, dtype);
    const Tensor w = random_tensor({40}, 19, dtype), b = random_tensor({40}, 20, dtype);
    const Tensor rm = random_tensor({40}, 21, DType::f32), rv = ops::add(ops::abs(random_tensor({40}, 22, DType::f32)), 0.5);
    const Tensor grm = rm.to(gpu()), grv = rv.to(gpu());
    Tensor gm, gr, cm, cr;
    const Tensor gy = DCAE_KERNEL(gpu(), batch_norm_forward, x.to(gpu()), w.to(gpu()), b.to(gpu()), grm, grv, false, 0.1,
                                  1e-5, gm, gr);
    EXPECT_TRUE(gpu_matches_cpu(gy, ops::cpu::batch_norm_forward(x, w, b, rm, rv, false, 0.1, 1e-5, cm, cr))) << dtype;
    EXPECT_TRUE(gpu_matches_cpu(grm, rm, {0, 0})) << "running mean changed " << dtype;
    EXPECT_TRUE(gpu_matches_cpu(grv, rv, {0, 0})) << "running var changed " << dtype;
    const Tensor g = random_tensor(shape, 23, dtype);
    EXPECT_TRUE(grads_match(DCAE_KERNEL(gpu(), batch_norm_backward, g.to(gpu()), x.to(gpu()), w.to(gpu()), cm.to(gpu()),
                                        cr.to(gpu()), false, kAllGrads),
                            ops::cpu::batch_norm_backward(g, x, w, cm, cr, false, kAllGrads), dtype, x.numel() / 40))
        << "eval backward " << dtype;
  }
}

TEST_F(CudaNorm, GradientsThroughAutogradMatchCpu) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor x = random_tensor({2, 6, 5, 32}, 24, dtype), w = random_tensor({32}, 25, dtype);
    const Tensor b = random_tensor({32}, 26, dtype);
    const std::vector<bool> all = {true, true, true};
    EXPECT_TRUE(testing::gradients_match([](const auto& in) { return ops::rms_norm(in[0], in[1], in[2]); }, {x, w, b},
                                         all, summed(dtype, 60)))
        << dtype;
    EXPECT_TRUE(testing::gradients_match([](const auto& in) { return ops::layer_norm(in[0], in[1], in[2]); }, {x, w, b},
                                         all, summed(dtype, 60)))
        << dtype;
    EXPECT_TRUE(testing::gradients_match([](const auto& in) { return ops::group_norm(in[0], 4, in[1], in[2]); },
                                         {x, w, b}, all, summed(dtype, 60)))
        << dtype;
    EXPECT_TRUE(testing::gradients_match(
        [](const auto& in) { return ops::batch_norm(in[0], in[1], in[2], Tensor(), Tensor(), true); }, {x, w, b}, all,
        summed(dtype, 60)))
        << dtype;
  }
}

TEST_F(CudaNorm, ErrorsNameTheShapes) {
  const Tensor x = random_tensor({2, 8}, 27, DType::f32).to(gpu());
  testing::expect_error([&] { ops::rms_norm(x, ones({7}, DType::f32, gpu()), Tensor()); }, {"rms_norm", "[7]", "[2, 8]"});
  testing::expect_error([&] { ops::layer_norm(x, ones({8}, DType::bf16, gpu()), Tensor()); }, {"layer_norm", "bf16"});
  testing::expect_error([&] { ops::group_norm(x, 3, Tensor(), Tensor()); }, {"group_norm", "3", "[2, 8]"});
  testing::expect_error([&] { ops::rms_norm(x, ones({8}), Tensor()); }, {"rms_norm", "device"});
}

}  // namespace
}  // namespace dcae
