// Philox fills on the GPU produce the CPU's numbers for the same seed and offset.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "tests/cuda/cuda_test_util.h"

namespace dcae {
namespace {

using testing::all_close;
using testing::gpu;

class CudaRandom : public testing::CudaTest {};

// Element-by-element bit equality (after conversion to double, which is exact for every float dtype).
::testing::AssertionResult bit_equal(const Tensor& gpu_result, const Tensor& cpu_result) {
  const std::vector<double> a = gpu_result.to_vector<double>(), b = cpu_result.to_vector<double>();
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(double)) != 0)
      return ::testing::AssertionFailure() << "element " << i << ": GPU " << a[i] << ", CPU " << b[i];
  return ::testing::AssertionSuccess();
}

// Runs fill on a fresh GPU tensor and a fresh CPU tensor, each from its own generator with the same state.
template <typename Fill>
std::pair<Tensor, Tensor> fill_both(const Shape& shape, DType dtype, uint64_t seed, Fill&& fill) {
  Generator gpu_gen(seed), cpu_gen(seed);
  gpu_gen.reserve(123);  // a non-zero starting offset
  cpu_gen.reserve(123);
  Tensor on_gpu = empty(shape, dtype, gpu()), on_cpu = empty(shape, dtype);
  fill(on_gpu, gpu_gen);
  fill(on_cpu, cpu_gen);
  EXPECT_EQ(gpu_gen.offset(), cpu_gen.offset());
  return {on_gpu, on_cpu};
}

TEST_F(CudaRandom, UniformAndBernoulliAreBitExact) {
  for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    for (const Shape& shape : {Shape{1}, Shape{7}, Shape{1001}, Shape{64, 130}}) {
      auto [g, c] = fill_both(shape, dtype, 11, [](Tensor& t, Generator& gen) { uniform_(t, -1.5, 2.25, gen); });
      EXPECT_TRUE(bit_equal(g, c)) << "uniform " << dtype << " " << shape_str(shape);
      auto [gb, cb] = fill_both(shape, dtype, 12, [](Tensor& t, Generator& gen) { bernoulli_(t, 0.3, gen); });
      EXPECT_TRUE(bit_equal(gb, cb)) << "bernoulli " << dtype << " " << shape_str(shape);
    }
  }
  auto [g, c] = fill_both({999}, DType::u8, 13, [](Tensor& t, Generator& gen) { bernoulli_(t, 0.9, gen); });
  EXPECT_TRUE(bit_equal(g, c)) << "bernoulli u8";
}

TEST_F(CudaRandom, NormalIsBitExactInReducedAndSinglePrecision) {
  // The draw goes through log/cos/sin in double; rounded to f32 or below, the libraries' last-bit differences
  // vanish, so these must match exactly.
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    auto [g, c] = fill_both({50003}, dtype, 14, [](Tensor& t, Generator& gen) { normal_(t, 0.5, 2.0, gen); });
    EXPECT_TRUE(bit_equal(g, c)) << dtype;
  }
  // In f64 the GPU's and glibc's log/cos/sin may differ in the last bit: equal to a few ulps.
  auto [g, c] = fill_both({50003}, DType::f64, 15, [](Tensor& t, Generator& gen) { normal_(t, 0.0, 1.0, gen); });
  EXPECT_TRUE(all_close(g.to(Device::cpu()), c, 1e-15, 1e-14));
}

TEST_F(CudaRandom, TruncNormalMatchesClosely) {
  auto [g, c] = fill_both({4001}, DType::f64, 16,
                          [](Tensor& t, Generator& gen) { trunc_normal_(t, 0.1, 0.7, -1.0, 1.2, gen); });
  EXPECT_TRUE(all_close(g.to(Device::cpu()), c, 1e-12, 1e-12));
  const auto values = g.to_vector<double>();
  for (double v : values) ASSERT_TRUE(v >= -1.0 && v <= 1.2) << v;
}

TEST_F(CudaRandom, StridedTargetsAndConsecutiveDraws) {
  Generator gpu_gen(17), cpu_gen(17);
  Tensor on_gpu = zeros({8, 6}, DType::f32, gpu()), on_cpu = zeros({8, 6});
  Tensor gpu_view = on_gpu.transpose(0, 1).slice(1, 1, 8, 2), cpu_view = on_cpu.transpose(0, 1).slice(1, 1, 8, 2);
  normal_(gpu_view, 0.0, 1.0, gpu_gen);
  normal_(cpu_view, 0.0, 1.0, cpu_gen);
  uniform_(gpu_view, 0.0, 1.0, gpu_gen);  // the second draw continues from the advanced offset
  uniform_(cpu_view, 0.0, 1.0, cpu_gen);
  EXPECT_TRUE(bit_equal(on_gpu, on_cpu));  // including the untouched zeros
  EXPECT_EQ(gpu_gen.offset(), cpu_gen.offset());
  Tensor ints = empty({4}, DType::i64, gpu());
  EXPECT_THROW(uniform_(ints, 0.0, 1.0, gpu_gen), Error);
}

}  // namespace
}  // namespace dcae
