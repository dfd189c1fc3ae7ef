#include "ops/softmax.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/autograd/engine.h"
#include "ops/view.h"
#include "tests/testing/check.h"

namespace dcae {
namespace {

using testing::all_close;
using testing::random_tensor;

// Plain double loops: softmax / log-softmax of each row along `dim` (max-shifted, as any careful reference).
Tensor reference_softmax(const Tensor& x, int64_t dim, bool log) {
  const Shape shape = x.shape();
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= shape[d];
  for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= shape[d];
  const int64_t n = shape[dim];
  const std::vector<double> in = x.to_vector<double>();
  std::vector<double> out(in.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t j) { return (o * n + j) * inner + i; };
      double row_max = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < n; ++j) row_max = std::max(row_max, in[at(j)]);
      double total = 0;
      for (int64_t j = 0; j < n; ++j) total += std::exp(in[at(j)] - row_max);
      for (int64_t j = 0; j < n; ++j)
        out[at(j)] = log ? in[at(j)] - row_max - std::log(total) : std::exp(in[at(j)] - row_max) / total;
    }
  return from_doubles(out, shape, DType::f64);
}

Tensor run(const Tensor& x, int64_t dim, bool log) { return log ? ops::log_softmax(x, dim) : ops::softmax(x, dim); }

class SoftmaxTest : public ::testing::TestWithParam<bool> {};  // param: log_softmax

TEST_P(SoftmaxTest, MatchesReferenceAlongEveryDimInF64AndF32) {
  const bool log = GetParam();
  const Tensor x = random_tensor({3, 5, 7}, 101, DType::f64, 2.0);
  for (int64_t dim : {0, 1, 2, -1}) {
    const Tensor expected = reference_softmax(x, dim < 0 ? dim + 3 : dim, log);
    EXPECT_TRUE(all_close(run(x, dim, log), expected, 1e-14, 1e-12)) << "dim " << dim;
    const Tensor out32 = run(x.to(DType::f32), dim, log);
    EXPECT_EQ(out32.dtype(), DType::f32);
    EXPECT_TRUE(all_close(out32, expected, 1e-6, 1e-5)) << "dim " << dim;
  }
}

TEST_P(SoftmaxTest, WideInnerDimsAndNonContiguousInputs) {
  const bool log = GetParam();
  // inner = 300 spans two row blocks of the kernel; odd sizes everywhere.
  const Tensor x = random_tensor({2, 3, 300}, 102, DType::f64);
  EXPECT_TRUE(all_close(run(x, 1, log), reference_softmax(x, 1, log), 1e-14, 1e-12));
  const Tensor permuted = random_tensor({5, 3, 4}, 103).permute({2, 0, 1});  // [4, 5, 3], not contiguous
  ASSERT_FALSE(permuted.is_contiguous());
  EXPECT_TRUE(all_close(run(permuted, 1, log), reference_softmax(permuted.contiguous(), 1, log), 1e-14, 1e-12));
  // A single-element dim: softmax 1, log_softmax 0.
  const Tensor single = random_tensor({4, 1}, 104);
  EXPECT_TRUE(all_close(run(single, 1, log), full({4, 1}, log ? 0.0 : 1.0, DType::f64), 0, 0));
}

TEST_P(SoftmaxTest, StableForHugeLogits) {
  const bool log = GetParam();
  const Tensor x = random_tensor({4, 9}, 105, DType::f64, 1000.0);  // exp would overflow without the shift
  const Tensor expected = reference_softmax(x, 1, log);
  EXPECT_TRUE(all_close(run(x, 1, log), expected, 1e-12, 1e-12));
  EXPECT_TRUE(all_close(run(x.to(DType::f32), 1, log), expected, 1e-4, 1e-5));
}

TEST_P(SoftmaxTest, GradcheckEveryDim) {
  const bool log = GetParam();
  for (int64_t dim : {0, 1, 2}) {
    const Tensor x = random_tensor({2, 3, 4}, 106 + dim).set_requires_grad(true);
    EXPECT_TRUE(testing::gradcheck([&](const std::vector<Tensor>& in) { return run(in[0], dim, log); }, {x}))
        << "dim " << dim;
  }
}

TEST_P(SoftmaxTest, ReducedPrecisionMatchesF32) {
  const bool log = GetParam();
  const Tensor x = random_tensor({6, 33}, 109, DType::f32, 3.0);
  for (DType dtype : {DType::bf16, DType::f16}) {
    // Same (already rounded) inputs in f32, so only the kernel's own precision is measured.
    const Tensor rounded = x.to(dtype);
    const Tensor out = run(rounded, -1, log);
    EXPECT_EQ(out.dtype(), dtype);
    const double rtol = dtype == DType::bf16 ? 1e-2 : 2e-3;
    EXPECT_TRUE(all_close(out, run(rounded.to(DType::f32), -1, log), 1e-4, rtol)) << dtype;
  }
  // Backward in bf16 against f32 on the same rounded input and upstream gradient.
  const Tensor x16 = x.to(DType::bf16).set_requires_grad(true);
  const Tensor x32 = x16.detach().to(DType::f32).set_requires_grad(true);
  const Tensor g = random_tensor({6, 33}, 110, DType::bf16);
  autograd::backward(run(x32, -1, log), g.to(DType::f32));
  autograd::backward(run(x16, -1, log), g);
  EXPECT_EQ(x16.grad().dtype(), DType::bf16);
  EXPECT_TRUE(all_close(x16.grad(), x32.grad(), 2e-2, 2e-2));
}

INSTANTIATE_TEST_SUITE_P(Softmax, SoftmaxTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "LogSoftmax" : "Softmax"; });

TEST(Softmax, BackwardFormulasAgainstHandComputedValues) {
  // softmax: dx = y (g - sum g y); log_softmax: dx = g - exp(y) sum g.
  const Tensor x = random_tensor({2, 5}, 111);
  const Tensor g = random_tensor({2, 5}, 112);
  for (bool log : {false, true}) {
    Tensor xg = x.clone().set_requires_grad(true);
    autograd::backward(run(xg, 1, log), g);
    const std::vector<double> p = reference_softmax(x, 1, false).to_vector<double>(), gv = g.to_vector<double>();
    std::vector<double> expected(10);
    for (int r = 0; r < 2; ++r) {
      double dot = 0, total = 0;
      for (int j = 0; j < 5; ++j) dot += gv[r * 5 + j] * p[r * 5 + j], total += gv[r * 5 + j];
      for (int j = 0; j < 5; ++j)
        expected[r * 5 + j] = log ? gv[r * 5 + j] - p[r * 5 + j] * total : p[r * 5 + j] * (gv[r * 5 + j] - dot);
    }
    EXPECT_TRUE(all_close(xg.grad(), from_doubles(expected, {2, 5}, DType::f64), 1e-14, 1e-12)) << log;
  }
}

TEST(Softmax, NanInputGivesNanRow) {
  Tensor x = from_doubles({1.0, std::nan(""), 2.0, 0.5, 0.25, 0.125}, {2, 3}, DType::f64);
  const std::vector<double> out = ops::softmax(x, 1).to_vector<double>();
  for (int j = 0; j < 3; ++j) EXPECT_TRUE(std::isnan(out[j]));
  for (int j = 3; j < 6; ++j) EXPECT_FALSE(std::isnan(out[j]));
}

TEST(Softmax, Errors) {
  const Tensor x = random_tensor({2, 3}, 113);
  try {
    ops::softmax(x, 2);
    FAIL() << "dim 2 of a rank-2 tensor should throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 2"), std::string::npos) << e.what();
  }
  try {
    ops::log_softmax(from_vector<int64_t>({1, 2}, {2}), 0);
    FAIL() << "integer input should throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2] i64"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ops::softmax(scalar_tensor(1.0), 0), Error);
  EXPECT_THROW(ops::softmax(Tensor(), 0), Error);
}

}  // namespace
}  // namespace dcae
