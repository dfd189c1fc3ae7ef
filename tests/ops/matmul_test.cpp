#include <gtest/gtest.h>

#include <string>

#include "core/autograd/engine.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/reduce.h"
#include "ops/view.h"
#include "tests/testing/check.h"

namespace dcae {
namespace {

using testing::expect_error;

using testing::all_close;
using testing::gradcheck;
using testing::random_tensor;

Shape with_matrix(Shape batch, int64_t rows, int64_t cols) {
  batch.push_back(rows);
  batch.push_back(cols);
  return batch;
}

// op(a) @ op(b) straight from the definition, in f64, batch dims broadcast.
Tensor reference_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const Shape batch = broadcast_shapes(Shape(a.shape().begin(), a.shape().end() - 2),
                                       Shape(b.shape().begin(), b.shape().end() - 2));
  const int64_t ra = a.size(-2), ca = a.size(-1), rb = b.size(-2), cb = b.size(-1);
  const std::vector<double> va = a.expand(with_matrix(batch, ra, ca)).to_vector<double>();
  const std::vector<double> vb = b.expand(with_matrix(batch, rb, cb)).to_vector<double>();
  const int64_t m = ta ? ca : ra, k = ta ? ra : ca, n = tb ? rb : cb, count = shape_numel(batch);
  std::vector<double> out(count * m * n, 0.0);
  for (int64_t bi = 0; bi < count; ++bi)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (int64_t p = 0; p < k; ++p) {
          const double x = ta ? va[bi * ra * ca + p * ca + i] : va[bi * ra * ca + i * ca + p];
          const double y = tb ? vb[bi * rb * cb + j * cb + p] : vb[bi * rb * cb + p * cb + j];
          s += x * y;
        }
        out[(bi * m + i) * n + j] = s;
      }
  return from_doubles(out, with_matrix(batch, m, n), DType::f64);
}

// x [..., in] @ w^T + bias, from the definition.
Tensor reference_linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t in = w.size(1), out_features = w.size(0), rows = x.numel() / in;
  const std::vector<double> vx = x.to_vector<double>(), vw = w.to_vector<double>();
  const std::vector<double> vb = bias.defined() ? bias.to_vector<double>() : std::vector<double>(out_features, 0.0);
  std::vector<double> out(rows * out_features);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out_features; ++o) {
      double s = vb[o];
      for (int64_t i = 0; i < in; ++i) s += vx[r * in + i] * vw[o * in + i];
      out[r * out_features + o] = s;
    }
  Shape shape = x.shape();
  shape.back() = out_features;
  return from_doubles(out, shape, DType::f64);
}

double tolerance(DType dtype) { return dtype == DType::f64 ? 1e-10 : 2e-4; }

struct Sizes {
  int64_t m, k, n;
};

TEST(Matmul, TwoDimensionalAllTransposesMatchReference) {
  uint64_t seed = 100;
  for (DType dtype : {DType::f64, DType::f32})
    for (Sizes s : {Sizes{7, 13, 5}, Sizes{1, 9, 1}, Sizes{6, 1, 4}, Sizes{130, 257, 70}})
      for (bool ta : {false, true})
        for (bool tb : {false, true}) {
          const Tensor a = random_tensor(ta ? Shape{s.k, s.m} : Shape{s.m, s.k}, ++seed, dtype);
          const Tensor b = random_tensor(tb ? Shape{s.n, s.k} : Shape{s.k, s.n}, ++seed, dtype);
          const Tensor out = ops::matmul(a, b, ta, tb);
          EXPECT_EQ(out.dtype(), dtype);
          EXPECT_TRUE(all_close(out, reference_matmul(a, b, ta, tb), tolerance(dtype), tolerance(dtype)))
              << dtype << " m" << s.m << " k" << s.k << " n" << s.n << " ta" << ta << " tb" << tb;
        }
}

TEST(Matmul, BatchedAndBroadcastMatchReference) {
  struct Case {
    Shape a, b;
    bool ta, tb;
  };
  const std::vector<Case> cases = {
      {{2, 3, 4, 5}, {2, 3, 5, 6}, false, false},  // same batch dims
      {{2, 3, 5, 4}, {2, 3, 6, 5}, true, true},
      {{2, 1, 4, 5}, {3, 5, 6}, false, false},     // batch broadcast both ways
      {{3, 4, 5}, {5, 6}, false, false},           // shared 2-D b (linear): folded into one GEMM
      {{3, 4, 5}, {6, 5}, false, true},
      {{3, 5, 4}, {5, 6}, true, false},            // shared b with transposed a: per-batch GEMMs
      {{4, 5}, {3, 5, 6}, false, false},           // 2-D a shared by a batched b
      {{1, 4, 5}, {7, 5, 2}, false, false},        // more batch entries than threads
      {{4, 40, 48}, {4, 40, 48}, false, true},     // big enough to run one GEMM per thread
      {{2, 1, 48, 40}, {3, 48, 40}, true, false},
  };
  uint64_t seed = 200;
  for (DType dtype : {DType::f64, DType::f32})
    for (const Case& c : cases) {
      const Tensor a = random_tensor(c.a, ++seed, dtype), b = random_tensor(c.b, ++seed, dtype);
      EXPECT_TRUE(all_close(ops::matmul(a, b, c.ta, c.tb), reference_matmul(a, b, c.ta, c.tb), tolerance(dtype),
                            tolerance(dtype)))
          << shape_str(c.a) << " x " << shape_str(c.b) << " " << dtype;
    }
}

TEST(Matmul, NonContiguousOperands) {
  const Tensor base = random_tensor({6, 8}, 300);
  const Tensor transposed = base.transpose(0, 1);      // [8, 6]: read as base with the flag flipped
  const Tensor strided = base.slice(1, 0, 8, 2);       // [6, 4] with column step 2
  const Tensor b = random_tensor({6, 3}, 301);
  EXPECT_TRUE(all_close(ops::matmul(transposed, b), reference_matmul(transposed, b, false, false), 1e-12, 1e-12));
  EXPECT_TRUE(all_close(ops::matmul(transposed, transposed, true, false),
                        reference_matmul(transposed, transposed, true, false), 1e-12, 1e-12));
  EXPECT_TRUE(all_close(ops::matmul(strided, strided, true, false), reference_matmul(strided, strided, true, false),
                        1e-12, 1e-12));
  // An expanded (stride-0) batch and a batched transposed view.
  const Tensor shared = random_tensor({4, 6}, 302).expand({3, 4, 6});
  const Tensor batched_t = random_tensor({3, 5, 6}, 303).transpose(1, 2);  // [3, 6, 5]
  EXPECT_TRUE(all_close(ops::matmul(shared, batched_t), reference_matmul(shared, batched_t, false, false), 1e-12,
                        1e-12));
}

TEST(Matmul, EmptyInnerDimGivesZeros) {
  const Tensor out = ops::matmul(random_tensor({3, 0}, 1), random_tensor({0, 4}, 2));
  EXPECT_TRUE(all_close(out, zeros({3, 4}, DType::f64), 0, 0));
  EXPECT_EQ(ops::matmul(random_tensor({0, 5}, 3), random_tensor({5, 2}, 4)).shape(), (Shape{0, 2}));
}

TEST(Matmul, GradientsMatchFiniteDifferences) {
  struct Case {
    Shape a, b;
    bool ta, tb;
  };
  const std::vector<Case> cases = {
      {{3, 4}, {4, 5}, false, false}, {{4, 3}, {4, 5}, true, false},  {{3, 4}, {5, 4}, false, true},
      {{4, 3}, {5, 4}, true, true},   {{2, 3, 4}, {2, 4, 2}, false, false}, {{2, 1, 3, 4}, {3, 4, 2}, false, false},
      {{2, 3, 4}, {4, 5}, false, false}, {{2, 3, 4}, {5, 4}, false, true}, {{2, 4, 3}, {4, 5}, true, false},
      {{2, 4, 3}, {5, 4}, true, true},   {{3, 4}, {2, 4, 5}, false, false},
  };
  uint64_t seed = 400;
  for (const Case& c : cases) {
    Tensor a = random_tensor(c.a, ++seed).set_requires_grad(true);
    Tensor b = random_tensor(c.b, ++seed).set_requires_grad(true);
    EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return ops::matmul(in[0], in[1], c.ta, c.tb); },
                          {a, b}))
        << shape_str(c.a) << " x " << shape_str(c.b) << " ta" << c.ta << " tb" << c.tb;
  }
}

TEST(Matmul, GradientOnlyWhereRequired) {
  Tensor a = random_tensor({3, 4}, 500).set_requires_grad(true);
  const Tensor b = random_tensor({4, 2}, 501);
  autograd::backward(ops::sum(ops::matmul(a, b)));
  EXPECT_FALSE(b.grad().defined());
  // d sum(a b) / da = ones @ b^T.
  EXPECT_TRUE(all_close(a.grad(), reference_matmul(ones({3, 2}, DType::f64), b, false, true), 1e-12, 1e-12));
  const Tensor c = random_tensor({3, 4}, 502);
  EXPECT_EQ(ops::matmul(c, b).grad_fn(), nullptr);  // nothing requires grad: no history
}

TEST(Matmul, ReducedPrecisionCloseToF32) {
  for (DType dtype : {DType::bf16, DType::f16}) {
    Tensor a = random_tensor({2, 33, 40}, 600, dtype).set_requires_grad(true);
    Tensor b = random_tensor({40, 17}, 601, dtype).set_requires_grad(true);
    Tensor a32 = a.detach().to(DType::f32).set_requires_grad(true);
    Tensor b32 = b.detach().to(DType::f32).set_requires_grad(true);
    const Tensor out = ops::matmul(a, b);
    const Tensor out32 = ops::matmul(a32, b32);
    EXPECT_EQ(out.dtype(), dtype);
    EXPECT_TRUE(all_close(out, out32, 1e-2, 1e-2)) << dtype;
    // The same (representable) output gradient for both, so only the rounding of results differs.
    const Tensor g = random_tensor(out.shape(), 602, dtype);
    autograd::backward(out, g);
    autograd::backward(out32, g.to(DType::f32));
    EXPECT_EQ(a.grad().dtype(), dtype);
    EXPECT_TRUE(all_close(a.grad(), a32.grad(), 1e-2, 1e-2)) << dtype;
    EXPECT_TRUE(all_close(b.grad(), b32.grad(), 1e-2, 1e-2)) << dtype;
  }
}

TEST(Matmul, ErrorsNameTheShapes) {
  const Tensor a = random_tensor({3, 4}, 1), b = random_tensor({5, 6}, 2);
  expect_error([&] { ops::matmul(a, b); }, {"matmul", "[3, 4]", "[5, 6]"});
  expect_error([&] { ops::matmul(a, b, false, true); }, {"[3, 4]", "[5, 6]", "transposed"});
  expect_error([&] { ops::matmul(random_tensor({4}, 3), b); }, {"at least 2 dims", "[4]"});
  expect_error([&] { ops::matmul(random_tensor({2, 3, 4}, 4), random_tensor({3, 4, 5}, 5)); },
                      {"batch dims", "[2]", "[3]"});
  expect_error([&] { ops::matmul(a, random_tensor({4, 2}, 6, DType::f32)); }, {"dtypes", "f64", "f32"});
  expect_error([&] { ops::matmul(from_vector<int64_t>({1, 2}, {1, 2}), from_vector<int64_t>({1, 2}, {2, 1})); },
                      {"floating"});
}

TEST(Bmm, MatchesReferenceGradientsAndChecksShapes) {
  for (DType dtype : {DType::f64, DType::f32}) {
    const Tensor a = random_tensor({3, 4, 5}, 700, dtype), b = random_tensor({3, 5, 2}, 701, dtype);
    EXPECT_TRUE(all_close(ops::bmm(a, b), reference_matmul(a, b, false, false), tolerance(dtype), tolerance(dtype)));
  }
  Tensor a = random_tensor({2, 3, 4}, 702).set_requires_grad(true);
  Tensor b = random_tensor({2, 4, 3}, 703).set_requires_grad(true);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::bmm(in[0], in[1]); }, {a, b}));
  expect_error([] { ops::bmm(random_tensor({2, 3, 4}, 1), random_tensor({3, 4, 5}, 2)); },
                      {"bmm", "[2, 3, 4]", "[3, 4, 5]"});
  expect_error([] { ops::bmm(random_tensor({3, 4}, 1), random_tensor({4, 5}, 2)); }, {"3-D", "[3, 4]"});
}

TEST(Linear, MatchesReference) {
  uint64_t seed = 800;
  for (DType dtype : {DType::f64, DType::f32})
    for (const Shape& x_shape : {Shape{5}, Shape{4, 5}, Shape{2, 3, 5}}) {
      const Tensor x = random_tensor(x_shape, ++seed, dtype);
      const Tensor w = random_tensor({7, 5}, ++seed, dtype), bias = random_tensor({7}, ++seed, dtype);
      EXPECT_TRUE(all_close(ops::linear(x, w, bias), reference_linear(x, w, bias), tolerance(dtype),
                            tolerance(dtype)))
          << shape_str(x_shape);
      EXPECT_TRUE(all_close(ops::linear(x, w), reference_linear(x, w, Tensor()), tolerance(dtype), tolerance(dtype)));
    }
}

TEST(Linear, GradientsMatchFiniteDifferences) {
  Tensor x = random_tensor({2, 3, 4}, 900).set_requires_grad(true);
  Tensor w = random_tensor({5, 4}, 901).set_requires_grad(true);
  Tensor bias = random_tensor({5}, 902).set_requires_grad(true);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::linear(in[0], in[1], in[2]); }, {x, w, bias}));
  Tensor v = random_tensor({4}, 903).set_requires_grad(true);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::linear(in[0], in[1]); }, {v, w}));
}

TEST(Linear, BiasIsFusedForAnyBatchShapeAndGradientsFlowToEachInput) {
  // The bias path is one kernel with its own backward: 4-D and 1-D inputs, and each input alone requiring grad.
  const Tensor x4 = random_tensor({2, 3, 2, 5}, 960), w = random_tensor({4, 5}, 961), bias = random_tensor({4}, 962);
  EXPECT_TRUE(all_close(ops::linear(x4, w, bias), reference_linear(x4, w, bias), 1e-10, 1e-10));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::linear(in[0], in[1], in[2]); },
                        {x4.clone().set_requires_grad(true), w.clone().set_requires_grad(true),
                         bias.clone().set_requires_grad(true)}));
  for (int wanted = 0; wanted < 3; ++wanted) {
    std::vector<Tensor> in = {x4.clone(), w.clone(), bias.clone()};
    in[wanted].set_requires_grad(true);
    EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& v) { return ops::linear(v[0], v[1], v[2]); }, in)) << wanted;
  }
  const Tensor v = random_tensor({5}, 963).set_requires_grad(true);
  EXPECT_EQ(ops::linear(v, w, bias).shape(), (Shape{4}));
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return ops::linear(in[0], w, in[1]); },
                        {v, bias.clone().set_requires_grad(true)}));
}

TEST(Linear, ReducedPrecisionRoundsOnceAfterTheBias) {
  // bf16 inputs: the product and the bias are summed in f32 and rounded to bf16 once, so the result is the
  // f32 result rounded - bit for bit, not merely close.
  const Tensor x = random_tensor({5, 32}, 970, DType::bf16), w = random_tensor({9, 32}, 971, DType::bf16);
  const Tensor bias = random_tensor({9}, 972, DType::bf16);
  const Tensor rounded_f32 =
      ops::linear(x.to(DType::f32), w.to(DType::f32), bias.to(DType::f32)).to(DType::bf16).to(DType::f32);
  EXPECT_TRUE(all_close(ops::linear(x, w, bias).to(DType::f32), rounded_f32, 0, 0));
}

TEST(Linear, ReducedPrecisionCloseToF32) {
  const Tensor x = random_tensor({3, 6, 48}, 950, DType::bf16);
  const Tensor w = random_tensor({20, 48}, 951, DType::bf16), bias = random_tensor({20}, 952, DType::bf16);
  const Tensor out = ops::linear(x, w, bias);
  EXPECT_EQ(out.dtype(), DType::bf16);
  EXPECT_TRUE(all_close(out, ops::linear(x.to(DType::f32), w.to(DType::f32), bias.to(DType::f32)), 1e-2, 1e-2));
}

TEST(Linear, ErrorsNameTheShapes) {
  const Tensor x = random_tensor({2, 4}, 1), w = random_tensor({3, 5}, 2);
  expect_error([&] { ops::linear(x, w); }, {"linear", "[2, 4]", "[3, 5]"});
  expect_error([&] { ops::linear(x, random_tensor({3, 4, 1}, 3)); }, {"[out, in]", "[3, 4, 1]"});
  expect_error([&] { ops::linear(x, random_tensor({3, 4}, 4), random_tensor({4}, 5)); },
                      {"bias", "[4]", "[3, 4]"});
  expect_error([&] { ops::linear(x, random_tensor({3, 4}, 4), random_tensor({3}, 5, DType::f32)); },
                      {"bias", "f32"});
}

}  // namespace
}  // namespace dcae
