// silu_gate (GLUMBConv's GLU step): forward against a plain loop, gradcheck, reduced precision against f32, layouts
// and errors.
#include <gtest/gtest.h>

#include <cmath>

#include "core/autograd/engine.h"
#include "ops/glu.h"
#include "ops/view.h"
#include "tests/testing/check.h"

namespace dcae {
namespace {

using testing::all_close;
using testing::random_tensor;

// out[r, c] = x[r, c] * silu(x[r, M + c]) over rows of 2M, in double.
Tensor reference(const Tensor& x) {
  const std::vector<double> v = x.contiguous().to_vector<double>();
  const int64_t two_m = x.shape().back(), m = two_m / 2, rows = x.numel() / two_m;
  std::vector<double> out(rows * m);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < m; ++c) {
      const double a = v[r * two_m + c], g = v[r * two_m + m + c];
      out[r * m + c] = a * g / (1.0 + std::exp(-g));
    }
  Shape shape = x.shape();
  shape.back() = m;
  return from_doubles(out, shape, DType::f64);
}

TEST(SiluGate, ForwardMatchesAPlainLoop) {
  for (const Shape& shape : {Shape{2, 3, 4, 16}, Shape{5, 6}, Shape{2}, Shape{3, 1, 14}}) {
    const Tensor x = random_tensor(shape, 1, DType::f64, 3.0);
    EXPECT_TRUE(all_close(ops::silu_gate(x), reference(x), 1e-14, 1e-14)) << shape_str(shape);
    const Tensor out32 = ops::silu_gate(x.to(DType::f32));
    EXPECT_EQ(out32.dtype(), DType::f32);
    EXPECT_TRUE(all_close(out32, reference(x.to(DType::f32)).to(DType::f32), 1e-6, 1e-6)) << shape_str(shape);
  }
}

TEST(SiluGate, GradcheckInF64) {
  for (const Shape& shape : {Shape{2, 3, 8}, Shape{4, 6}}) {
    const Tensor x = random_tensor(shape, 2, DType::f64, 2.0).set_requires_grad(true);
    EXPECT_TRUE(testing::gradcheck([](const std::vector<Tensor>& in) { return ops::silu_gate(in[0]); }, {x}))
        << shape_str(shape);
  }
}

TEST(SiluGate, ReducedPrecisionMatchesF32) {
  const Tensor x = random_tensor({3, 5, 24}, 3, DType::f32, 2.0);
  const Tensor g = random_tensor({3, 5, 12}, 4, DType::f32);
  Tensor x32 = x.clone().set_requires_grad(true);
  autograd::backward(ops::silu_gate(x32), g);
  for (DType dtype : {DType::bf16, DType::f16}) {
    Tensor xr = x.to(dtype).set_requires_grad(true);
    const Tensor y = ops::silu_gate(xr);
    EXPECT_EQ(y.dtype(), dtype);
    EXPECT_TRUE(all_close(y.to(DType::f32), ops::silu_gate(x), 2e-2, 1e-2)) << dtype;
    autograd::backward(y, g.to(dtype));
    EXPECT_TRUE(all_close(xr.grad().to(DType::f32), x32.grad(), 2e-2, 1e-2)) << dtype;
  }
}

TEST(SiluGate, NonContiguousInputsAndErrors) {
  // Channels last after a transpose: the op packs the input first.
  const Tensor base = random_tensor({8, 3}, 5, DType::f64);
  const Tensor x = base.transpose(0, 1);  // [3, 8], not contiguous
  EXPECT_TRUE(all_close(ops::silu_gate(x), reference(x), 1e-14, 1e-14));
  Tensor leaf = base.clone().set_requires_grad(true);
  EXPECT_TRUE(testing::gradcheck(
      [](const std::vector<Tensor>& in) { return ops::silu_gate(ops::transpose(in[0], 0, 1)); }, {leaf}));
  testing::expect_error([] { ops::silu_gate(random_tensor({2, 5}, 6)); }, {"silu_gate", "[2, 5]", "even"});
  testing::expect_error([] { ops::silu_gate(zeros({2, 4}, DType::i64)); }, {"silu_gate", "i64"});
  testing::expect_error([] { ops::silu_gate(zeros({3, 0})); }, {"silu_gate", "[3, 0]"});
}

}  // namespace
}  // namespace dcae
