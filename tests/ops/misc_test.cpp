// Embedding, dropout and losses.
#include <gtest/gtest.h>

#include <cmath>

#include "core/autograd/engine.h"
#include "ops/dropout.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/loss.h"
#include "tests/testing/check.h"

namespace dcae {
namespace {

using testing::expect_error;

using testing::all_close;
using testing::random_tensor;

// ---------------------------------------------------------------------------------------------------------------
// Embedding

TEST(Embedding, GathersRowsInEveryDtype) {
  const Tensor weight = random_tensor({5, 3}, 401);
  const std::vector<int64_t> idx{4, 0, 2, 2, 1, 4};
  const Tensor indices = from_vector<int64_t>(idx, {2, 3});
  const std::vector<double> w = weight.to_vector<double>();
  std::vector<double> expected;
  for (int64_t i : idx)
    for (int c = 0; c < 3; ++c) expected.push_back(w[i * 3 + c]);
  for (DType dtype : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    const Tensor out = ops::embedding(weight.to(dtype), indices);
    EXPECT_EQ(out.dtype(), dtype);
    // A gather copies: exact in every dtype.
    EXPECT_TRUE(all_close(out, from_doubles(expected, {2, 3, 3}, DType::f64).to(dtype), 0, 0)) << dtype;
  }
  // A 0-dim index gives one row; a non-contiguous weight works too.
  EXPECT_TRUE(all_close(ops::embedding(weight, from_vector<int64_t>({3}, {})), weight.select(0, 3), 0, 0));
  const Tensor transposed = random_tensor({3, 5}, 402).transpose(0, 1);
  EXPECT_TRUE(all_close(ops::embedding(transposed, indices).select(0, 0).select(0, 0), transposed.select(0, 4), 0, 0));
}

TEST(Embedding, BackwardScatterAddsRepeatedIndices) {
  Tensor weight = random_tensor({5, 3}, 403).set_requires_grad(true);
  const std::vector<int64_t> idx{4, 0, 2, 2, 1, 4, 2};
  const Tensor indices = from_vector<int64_t>(idx, {7});
  const Tensor g = random_tensor({7, 3}, 404);
  autograd::backward(ops::embedding(weight, indices), g);
  const std::vector<double> gv = g.to_vector<double>();
  std::vector<double> expected(15, 0.0);  // row 3 is never picked: zero gradient
  for (size_t i = 0; i < idx.size(); ++i)
    for (int c = 0; c < 3; ++c) expected[idx[i] * 3 + c] += gv[i * 3 + c];
  EXPECT_TRUE(all_close(weight.grad(), from_doubles(expected, {5, 3}, DType::f64), 1e-15, 0));
  EXPECT_TRUE(
      testing::gradcheck([&](const std::vector<Tensor>& in) { return ops::embedding(in[0], indices); }, {weight}));
}

TEST(Embedding, ReducedPrecisionBackwardMatchesF32) {
  const Tensor indices = from_vector<int64_t>({1, 1, 1, 0, 1, 1, 1, 1}, {8});
  const Tensor g = random_tensor({8, 4}, 405, DType::bf16);
  Tensor w16 = random_tensor({2, 4}, 406, DType::bf16).set_requires_grad(true);
  Tensor w32 = w16.detach().to(DType::f32).set_requires_grad(true);
  autograd::backward(ops::embedding(w16, indices), g);
  autograd::backward(ops::embedding(w32, indices), g.to(DType::f32));
  EXPECT_EQ(w16.grad().dtype(), DType::bf16);
  EXPECT_TRUE(all_close(w16.grad(), w32.grad(), 1e-2, 1e-2));
}

TEST(Embedding, Errors) {
  const Tensor weight = random_tensor({5, 3}, 407);
  expect_error([&] { ops::embedding(weight, from_vector<int64_t>({1, 5}, {2})); }, {"index 5", "V = 5"});
  expect_error([&] { ops::embedding(weight, from_vector<int64_t>({-1}, {1})); }, {"index -1", "V = 5"});
  expect_error([&] { ops::embedding(weight, from_vector<int32_t>({1}, {1})); }, {"i64", "i32"});
  expect_error([&] { ops::embedding(random_tensor({5}, 1), from_vector<int64_t>({1}, {1})); }, {"[5]"});
}

// ---------------------------------------------------------------------------------------------------------------
// Dropout

TEST(Dropout, KeepsAboutOneMinusPScaledAndIsReproducible) {
  const Tensor x = testing::random_uniform({200, 500}, 408, 1.0, 2.0);  // never zero: a zero output means dropped
  const double p = 0.3;
  Generator gen_a(7), gen_b(7), gen_c(8);
  const Tensor a = ops::dropout(x, p, true, gen_a);
  const Tensor b = ops::dropout(x, p, true, gen_b);
  const Tensor c = ops::dropout(x, p, true, gen_c);
  EXPECT_TRUE(all_close(a, b, 0, 0));  // same seed, same mask
  const std::vector<double> xv = x.to_vector<double>(), av = a.to_vector<double>(), cv = c.to_vector<double>();
  int64_t kept = 0, differs = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    if (av[i] != 0.0) {
      ++kept;
      EXPECT_NEAR(av[i], xv[i] / (1 - p), 1e-12);
    }
    differs += (av[i] != 0.0) != (cv[i] != 0.0);
  }
  const double n = static_cast<double>(xv.size()), sigma = std::sqrt(n * p * (1 - p));
  EXPECT_NEAR(static_cast<double>(kept), n * (1 - p), 5 * sigma);
  EXPECT_GT(differs, n * 0.3);  // another seed gives another mask (expected fraction 2p(1-p) = 0.42)
  // The generator advanced: a second draw from gen_a differs from the first.
  EXPECT_FALSE(all_close(ops::dropout(x, p, true, gen_a), a, 0, 0));
}

TEST(Dropout, EvalAndZeroPAreIdentityAndPOneZeros) {
  const Tensor x = random_tensor({3, 4}, 409);
  Generator gen(1);
  EXPECT_TRUE(ops::dropout(x, 0.5, false, gen).is_same(x));
  EXPECT_TRUE(ops::dropout(x, 0.0, true, gen).is_same(x));
  EXPECT_EQ(gen.offset(), 0u);  // nothing drawn
  EXPECT_TRUE(all_close(ops::dropout(x, 1.0, true, gen), zeros({3, 4}, DType::f64), 0, 0));
}

TEST(Dropout, BackwardUsesTheSameMask) {
  Tensor x = testing::random_uniform({6, 7}, 410, 1.0, 2.0).set_requires_grad(true);
  Generator gen(3);
  const Tensor out = ops::dropout(x, 0.4, true, gen);
  const Tensor g = random_tensor({6, 7}, 411);
  autograd::backward(out, g);
  // d out / d x = out / x elementwise (mask / (1 - p)).
  EXPECT_TRUE(all_close(x.grad(), ops::mul(g, ops::div(out.detach(), x.detach())), 1e-12, 1e-12));
  // gradcheck with a fresh generator per call, so every evaluation draws the same mask.
  EXPECT_TRUE(testing::gradcheck(
      [](const std::vector<Tensor>& in) {
        Generator fixed(11);
        return ops::dropout(in[0], 0.25, true, fixed);
      },
      {x}));
}

TEST(Dropout, ReducedPrecisionMatchesF32) {
  const Tensor x = random_tensor({40, 50}, 412, DType::bf16);
  Generator gen_a(5), gen_b(5);
  const Tensor out16 = ops::dropout(x, 0.1, true, gen_a);
  EXPECT_EQ(out16.dtype(), DType::bf16);
  EXPECT_TRUE(all_close(out16, ops::dropout(x.to(DType::f32), 0.1, true, gen_b), 1e-6, 4e-3));
}

TEST(Dropout, Errors) {
  const Tensor x = random_tensor({2, 3}, 413);
  expect_error([&] { ops::dropout(x, 1.5, true); }, {"1.5", "[2, 3]"});
  expect_error([&] { ops::dropout(x, -0.1, false); }, {"-0.1"});
  expect_error([&] { ops::dropout(from_vector<int64_t>({1, 2}, {2}), 0.5, true); }, {"i64"});
}

// ---------------------------------------------------------------------------------------------------------------
// Losses

double mean_of(const std::vector<double>& v) {
  double total = 0;
  for (double x : v) total += x;
  return total / static_cast<double>(v.size());
}

TEST(Losses, MatchReferenceLoops) {
  const Tensor pred = random_tensor({2, 3, 5}, 414), target = random_tensor({2, 3, 5}, 415);
  const std::vector<double> p = pred.to_vector<double>(), t = target.to_vector<double>();
  std::vector<double> l1, l2;
  for (size_t i = 0; i < p.size(); ++i)
    l1.push_back(std::abs(p[i] - t[i])), l2.push_back((p[i] - t[i]) * (p[i] - t[i]));
  for (DType dtype : {DType::f64, DType::f32}) {
    const double tol = dtype == DType::f64 ? 1e-14 : 1e-6;
    const Tensor l1_loss = ops::l1_loss(pred.to(dtype), target.to(dtype));
    EXPECT_EQ(l1_loss.dim(), 0);
    EXPECT_NEAR(l1_loss.item<double>(), mean_of(l1), tol);
    EXPECT_NEAR(ops::mse_loss(pred.to(dtype), target.to(dtype)).item<double>(), mean_of(l2), tol);
  }
  // Hinge: logits of different shapes; values on both sides of the hinge.
  const Tensor real = random_tensor({4, 1, 3, 3}, 416, DType::f64, 2.0),
               fake = random_tensor({2, 7}, 417, DType::f64, 2.0);
  std::vector<double> r, f, fake_values = fake.to_vector<double>();
  for (double x : real.to_vector<double>()) r.push_back(std::max(0.0, 1.0 - x));
  for (double x : fake_values) f.push_back(std::max(0.0, 1.0 + x));
  EXPECT_NEAR(ops::hinge_d_loss(real, fake).item<double>(), 0.5 * (mean_of(r) + mean_of(f)), 1e-14);
  EXPECT_NEAR(ops::hinge_g_loss(fake).item<double>(), -mean_of(fake_values), 1e-14);
}

TEST(Losses, GradcheckEveryInput) {
  const Tensor pred = random_tensor({3, 4}, 418).set_requires_grad(true);
  const Tensor target = random_tensor({3, 4}, 419).set_requires_grad(true);
  EXPECT_TRUE(
      testing::gradcheck([](const std::vector<Tensor>& in) { return ops::l1_loss(in[0], in[1]); }, {pred, target}));
  EXPECT_TRUE(
      testing::gradcheck([](const std::vector<Tensor>& in) { return ops::mse_loss(in[0], in[1]); }, {pred, target}));
  const Tensor real = random_tensor({2, 5}, 420, DType::f64, 2.0).set_requires_grad(true);
  const Tensor fake = random_tensor({7}, 421, DType::f64, 2.0).set_requires_grad(true);
  EXPECT_TRUE(
      testing::gradcheck([](const std::vector<Tensor>& in) { return ops::hinge_d_loss(in[0], in[1]); }, {real, fake}));
  EXPECT_TRUE(testing::gradcheck([](const std::vector<Tensor>& in) { return ops::hinge_g_loss(in[0]); }, {fake}));
}

TEST(Losses, ReducedPrecisionMatchesF32) {
  const Tensor pred = random_tensor({8, 16}, 422, DType::bf16), target = random_tensor({8, 16}, 423, DType::bf16);
  const auto f32 = [](const Tensor& t) { return t.to(DType::f32); };
  for (DType dtype : {DType::bf16, DType::f16}) {
    const Tensor p = pred.to(dtype), t = target.to(dtype);
    EXPECT_EQ(ops::l1_loss(p, t).dtype(), dtype);
    EXPECT_TRUE(all_close(ops::l1_loss(p, t), ops::l1_loss(f32(p), f32(t)), 1e-3, 1e-2)) << dtype;
    EXPECT_TRUE(all_close(ops::mse_loss(p, t), ops::mse_loss(f32(p), f32(t)), 1e-3, 1e-2)) << dtype;
    EXPECT_TRUE(all_close(ops::hinge_d_loss(p, t), ops::hinge_d_loss(f32(p), f32(t)), 1e-3, 1e-2)) << dtype;
    EXPECT_TRUE(all_close(ops::hinge_g_loss(t), ops::hinge_g_loss(f32(t)), 1e-3, 1e-2)) << dtype;
  }
}

TEST(Losses, Errors) {
  const Tensor a = random_tensor({2, 3}, 424);
  expect_error([&] { ops::l1_loss(a, random_tensor({3, 2}, 1)); }, {"[2, 3]", "[3, 2]"});
  expect_error([&] { ops::mse_loss(a, a.to(DType::f32)); }, {"f64", "f32"});
  expect_error([&] { ops::hinge_d_loss(a, a.to(DType::f32)); }, {"f64", "f32"});
  expect_error([&] { ops::hinge_g_loss(zeros({0}, DType::f64)); }, {"[0]"});
  expect_error([&] { ops::l1_loss(from_vector<int64_t>({1}, {1}), from_vector<int64_t>({1}, {1})); }, {"i64"});
}

}  // namespace
}  // namespace dcae
