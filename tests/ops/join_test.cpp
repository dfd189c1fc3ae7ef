#include <gtest/gtest.h>

#include <string>

#include "core/autograd/engine.h"
#include "ops/elementwise.h"
#include "ops/join.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "ops/view.h"
#include "tests/testing/check.h"

namespace dcae {
namespace {

using testing::expect_error;

using testing::all_close;
using testing::gradcheck;
using testing::random_tensor;

// Reference concat of rank-3 tensors along `dim`: walks every output index and finds the input holding it.
Tensor reference_concat3(const std::vector<Tensor>& xs, int64_t dim) {
  Shape shape = xs[0].shape();
  shape[dim] = 0;
  std::vector<std::vector<double>> values;
  for (const Tensor& x : xs) {
    shape[dim] += x.size(dim);
    values.push_back(x.to_vector<double>());
  }
  std::vector<double> out;
  for (int64_t a = 0; a < shape[0]; ++a)
    for (int64_t b = 0; b < shape[1]; ++b)
      for (int64_t c = 0; c < shape[2]; ++c) {
        int64_t idx[3] = {a, b, c};
        size_t k = 0;
        while (idx[dim] >= xs[k].size(dim)) idx[dim] -= xs[k++].size(dim);
        const Shape& s = xs[k].shape();
        out.push_back(values[k][(idx[0] * s[1] + idx[1]) * s[2] + idx[2]]);
      }
  return from_doubles(out, shape, xs[0].dtype());
}

TEST(JoinConcat, MatchesReferenceLoop) {
  for (DType dtype : {DType::f64, DType::f32}) {
    for (int64_t dim : {0, 1, 2}) {
      Shape a{2, 3, 4}, b{2, 3, 4}, c{2, 3, 4};
      a[dim] = 1;
      b[dim] = 3;
      c[dim] = 2;
      const std::vector<Tensor> xs = {random_tensor(a, 10 + dim, dtype), random_tensor(b, 20 + dim, dtype),
                                      random_tensor(c, 30 + dim, dtype)};
      const Tensor expected = reference_concat3(xs, dim);
      EXPECT_TRUE(all_close(ops::concat(xs, dim), expected, 0, 0)) << dim << " " << dtype;
      EXPECT_TRUE(all_close(ops::concat(xs, dim - 3), expected, 0, 0)) << "negative dim " << dim;
    }
  }
}

TEST(JoinConcat, NonContiguousAndEmptyInputs) {
  const Tensor a = random_tensor({4, 3, 2}, 40).permute({2, 1, 0});  // [2, 3, 4], non-contiguous
  const Tensor b = random_tensor({2, 3, 5}, 41).slice(2, 0, 5, 2);   // [2, 3, 3], strided
  const Tensor empty_piece = zeros({2, 3, 0}, DType::f64);
  ASSERT_FALSE(a.is_contiguous());
  const Tensor out = ops::concat({a, empty_piece, b}, 2);
  EXPECT_TRUE(all_close(out, reference_concat3({a.contiguous(), b.contiguous()}, 2), 0, 0));
  // A single input is copied unchanged.
  EXPECT_TRUE(all_close(ops::concat({a}, 0), a, 0, 0));
}

TEST(JoinConcat, GradcheckAndPerInputGradients) {
  const Tensor a = random_tensor({2, 3, 2}, 50).set_requires_grad(true);
  const Tensor b = random_tensor({2, 1, 2}, 51).set_requires_grad(true);
  const Tensor frozen = random_tensor({2, 2, 2}, 52);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::concat({in[0], in[2], in[1]}, 1); },
                        {a, b, frozen}));
  // Each trainable input gets exactly its window of the output gradient; the frozen one gets none.
  const Tensor g = random_tensor({2, 6, 2}, 53);
  a.set_grad(Tensor());
  b.set_grad(Tensor());
  autograd::backward(ops::concat({a, frozen, b}, 1), g);
  EXPECT_TRUE(all_close(a.grad(), g.narrow(1, 0, 3).contiguous(), 0, 0));
  EXPECT_TRUE(all_close(b.grad(), g.narrow(1, 5, 1).contiguous(), 0, 0));
  EXPECT_FALSE(frozen.grad().defined());
}

TEST(JoinConcat, Bf16MatchesF32) {
  const Tensor a = random_tensor({3, 4}, 60, DType::f32), b = random_tensor({3, 2}, 61, DType::f32);
  const Tensor low = ops::concat({a.to(DType::bf16), b.to(DType::bf16)}, 1);
  EXPECT_EQ(low.dtype(), DType::bf16);
  EXPECT_TRUE(all_close(low, ops::concat({a, b}, 1), 1e-2, 1e-2));
}

TEST(JoinConcat, RejectsMismatchedInputs) {
  expect_error([] { ops::concat({}, 0); }, "at least one");
  expect_error([] { ops::concat({random_tensor({2, 3}, 70), random_tensor({3, 3}, 71)}, 1); }, "[3, 3]");
  expect_error([] { ops::concat({random_tensor({2, 3}, 72), random_tensor({2, 3, 1}, 73)}, 0); },
                      "[2, 3, 1]");
  expect_error(
      [] { ops::concat({random_tensor({2, 3}, 74), random_tensor({2, 3}, 75, DType::f32)}, 0); }, "f32");
  expect_error([] { ops::concat({random_tensor({2, 3}, 76)}, 2); }, "2");
}

TEST(JoinSplit, PiecesAreDifferentiableViews) {
  const Tensor x = random_tensor({3, 7, 2}, 80);
  const std::vector<Tensor> pieces = ops::split(x, {2, 0, 5}, 1);
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[0].shape(), (Shape{3, 2, 2}));
  EXPECT_EQ(pieces[1].shape(), (Shape{3, 0, 2}));
  EXPECT_EQ(pieces[2].shape(), (Shape{3, 5, 2}));
  EXPECT_EQ(pieces[2].storage(), x.storage());  // a view, not a copy
  // Reference: element [a, b, c] of piece 2 is x[a, 2 + b, c].
  const std::vector<double> xv = x.to_vector<double>(), pv = pieces[2].to_vector<double>();
  for (int64_t a = 0; a < 3; ++a)
    for (int64_t b = 0; b < 5; ++b)
      for (int64_t c = 0; c < 2; ++c) EXPECT_EQ(pv[(a * 5 + b) * 2 + c], xv[(a * 7 + 2 + b) * 2 + c]);
  EXPECT_TRUE(all_close(ops::concat(pieces, 1), x, 0, 0));
  EXPECT_TRUE(all_close(ops::concat(ops::split(x, {1, 2}, -3), 0), x, 0, 0));

  // Pieces used differently still give the right gradient to x.
  const Tensor w = random_tensor({3, 7, 2}, 81).set_requires_grad(true);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        const std::vector<Tensor> p = ops::split(in[0], {3, 4}, 1);
        return ops::concat({ops::exp(p[1]), ops::mul(p[0], 3.0)}, 1);
      },
      {w}));
}

TEST(JoinChunk, EqualPiecesAndGradient) {
  const Tensor x = random_tensor({2, 6, 3}, 90, DType::f32);
  const std::vector<Tensor> thirds = ops::chunk(x, 3, 1);
  ASSERT_EQ(thirds.size(), 3u);
  for (int64_t k = 0; k < 3; ++k) EXPECT_TRUE(all_close(thirds[k], x.narrow(1, 2 * k, 2).contiguous(), 0, 0));
  const Tensor w = random_tensor({4, 2}, 91).set_requires_grad(true);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        const std::vector<Tensor> halves = ops::chunk(in[0], 2, 0);
        return ops::mul(halves[0], halves[1]);
      },
      {w}));
}

TEST(JoinSplit, RejectsBadSizes) {
  const Tensor x = random_tensor({2, 5}, 100);
  expect_error([&] { ops::split(x, {2, 2}, 1); }, "[2, 5]");
  expect_error([&] { ops::split(x, {6, -1}, 1); }, "negative");
  expect_error([&] { ops::chunk(x, 2, 1); }, "[2, 5]");
  expect_error([&] { ops::chunk(x, 0, 0); }, "[2, 5]");
  expect_error([&] { ops::split(x, {1, 1}, 2); }, "2");
}

}  // namespace
}  // namespace dcae
