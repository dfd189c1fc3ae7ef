// Embedding gather/scatter-add on the GPU against the CPU kernels, the out-of-range error, and dropout on CUDA
// tensors (Philox masks identical to the CPU's for the same generator state).
#include <gtest/gtest.h>

#include "ops/cpu/embedding.h"
#include "ops/dispatch.h"
#include "ops/dropout.h"
#include "ops/embedding.h"
#include "tests/cuda/cuda_test_util.h"

namespace dcae {
namespace {

using testing::gpu;
using testing::gpu_equals_cpu;
using testing::gpu_matches_cpu;
using testing::random_tensor;

class CudaEmbedding : public testing::CudaTest {};

constexpr DType kFloatDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16};

Tensor indices_of(const std::vector<int64_t>& values, const Shape& shape) { return from_vector(values, shape); }

TEST_F(CudaEmbedding, GatherCopiesRowsExactly) {
  const Tensor idx = indices_of({3, 0, 9, 3, 3, 7, 1, 0}, {2, 4});  // repeats included
  for (DType dtype : kFloatDtypes) {
    for (int64_t width : {7, 8, 24}) {  // 16-byte rows or not, depending on the dtype
      const Tensor w = random_tensor({10, width}, 1, dtype);
      EXPECT_TRUE(gpu_equals_cpu(DCAE_KERNEL(gpu(), embedding_forward, w.to(gpu()), idx.to(gpu())),
                                 ops::cpu::embedding_forward(w, idx)))
          << dtype << " width " << width;
    }
  }
  // Strided weight (a transposed view) and scalar indices.
  const Tensor wt = random_tensor({6, 10}, 2, DType::f32).transpose(0, 1);
  EXPECT_TRUE(gpu_equals_cpu(DCAE_KERNEL(gpu(), embedding_forward, wt.to(gpu()), indices_of({4}, {}).to(gpu())),
                             ops::cpu::embedding_forward(wt, indices_of({4}, {}))));
}

TEST_F(CudaEmbedding, ScatterAddAccumulatesRepeatsInOrder) {
  const Tensor idx = indices_of({3, 0, 9, 3, 3, 7, 1, 0, 3, 3, 5}, {11});
  for (DType dtype : kFloatDtypes) {
    const Tensor g = random_tensor({11, 13}, 3, dtype);
    // Same order of additions as the CPU: equal, not just close.
    EXPECT_TRUE(gpu_equals_cpu(DCAE_KERNEL(gpu(), embedding_backward, g.to(gpu()), idx.to(gpu()), 12),
                               ops::cpu::embedding_backward(g, idx, 12)))
        << dtype;
  }
  const Tensor w = random_tensor({12, 5}, 4, DType::f32);
  EXPECT_TRUE(testing::gradients_match([&](const auto& in) { return ops::embedding(in[0], in[1]); },
                                       {w, indices_of({2, 2, 11, 0}, {2, 2})}, {true, false}, {0, 0}));
}

TEST_F(CudaEmbedding, OutOfRangeIndexThrowsNamingItAndV) {
  const Tensor w = random_tensor({10, 4}, 5, DType::f32).to(gpu());
  testing::expect_error([&] { ops::embedding(w, indices_of({1, 12, -1}, {3}).to(gpu())); },
                        {"index 12", "position 1", "V = 10", "[3]"});
  testing::expect_error([&] { ops::embedding(w, indices_of({-3}, {1}).to(gpu())); }, {"index -3", "V = 10"});
  testing::expect_error([&] { ops::embedding(w, indices_of({1}, {1})); }, {"embedding", "different devices"});
}

TEST_F(CudaEmbedding, DropoutOnTheGpuDrawsTheCpuMask) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor x = random_tensor({4, 33, 5}, 6, dtype);
    Generator gpu_gen(77), cpu_gen(77);
    Tensor xg = x.to(gpu()).set_requires_grad(true), xc = x.clone().set_requires_grad(true);
    const Tensor yg = ops::dropout(xg, 0.3, true, gpu_gen), yc = ops::dropout(xc, 0.3, true, cpu_gen);
    EXPECT_TRUE(gpu_equals_cpu(yg, yc)) << dtype;
    EXPECT_EQ(gpu_gen.offset(), cpu_gen.offset());
    const Tensor g = random_tensor({4, 33, 5}, 7, dtype);
    autograd::backward(ops::sum(ops::mul(yg, g.to(gpu()))));
    autograd::backward(ops::sum(ops::mul(yc, g)));
    EXPECT_TRUE(gpu_matches_cpu(xg.grad(), xc.grad())) << dtype;
  }
}

}  // namespace
}  // namespace dcae
