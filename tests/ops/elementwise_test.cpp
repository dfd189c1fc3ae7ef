#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "ops/view.h"
#include "tests/testing/check.h"

namespace dcae {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::random_tensor;

// Plain reference: out[i] = f(a[i'], b[i'']) with broadcasting done by explicit index arithmetic.
template <typename F>
std::vector<double> reference_broadcast(const Tensor& a, const Tensor& b, F f) {
  const Shape out_shape = broadcast_shapes(a.shape(), b.shape());
  const auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  const int64_t n = shape_numel(out_shape), rank = static_cast<int64_t>(out_shape.size());
  std::vector<double> out(n);
  for (int64_t flat = 0; flat < n; ++flat) {
    int64_t rest = flat, ia = 0, ib = 0, sa = 1, sb = 1;
    for (int64_t d = rank - 1; d >= 0; --d) {
      const int64_t i = rest % out_shape[d];
      rest /= out_shape[d];
      const int64_t da = d - (rank - a.dim()), db = d - (rank - b.dim());
      if (da >= 0) { ia += (a.size(da) == 1 ? 0 : i) * sa; sa *= a.size(da); }
      if (db >= 0) { ib += (b.size(db) == 1 ? 0 : i) * sb; sb *= b.size(db); }
    }
    out[flat] = f(va[ia], vb[ib]);
  }
  return out;
}

struct BinaryCase {
  ops::BinaryOp op;
  double (*reference)(double, double);
};

TEST(Binary, ForwardMatchesReferenceWithBroadcasting) {
  const std::vector<BinaryCase> cases = {
      {ops::BinaryOp::add, [](double x, double y) { return x + y; }},
      {ops::BinaryOp::sub, [](double x, double y) { return x - y; }},
      {ops::BinaryOp::mul, [](double x, double y) { return x * y; }},
      {ops::BinaryOp::div, [](double x, double y) { return x / y; }},
      {ops::BinaryOp::maximum, [](double x, double y) { return std::max(x, y); }},
      {ops::BinaryOp::minimum, [](double x, double y) { return std::min(x, y); }},
      {ops::BinaryOp::ge, [](double x, double y) { return x >= y ? 1.0 : 0.0; }},
  };
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{2, 3, 4}, {2, 3, 4}}, {{2, 3, 4}, {4}}, {{2, 1, 4}, {3, 1}}, {{5}, {}}, {{1, 3}, {2, 1}}};
  for (const auto& c : cases) {
    for (const auto& [sa, sb] : shapes) {
      for (DType dtype : {DType::f64, DType::f32}) {
        Tensor a = random_tensor(sa, 1, dtype), b = random_tensor(sb, 2, dtype);
        Tensor out = ops::binary(c.op, a, b);
        const Tensor expected = from_doubles(reference_broadcast(a, b, c.reference), out.shape());
        EXPECT_TRUE(all_close(out, expected, 1e-6, 1e-6)) << shape_str(sa) << " " << shape_str(sb);
      }
    }
  }
}

TEST(Binary, NonContiguousOperands) {
  Tensor a = random_tensor({4, 3}, 3).transpose(0, 1);  // [3, 4], strided
  Tensor b = random_tensor({3, 8}, 4).slice(1, 0, 8, 2);  // [3, 4], step 2
  EXPECT_TRUE(all_close(ops::mul(a, b), from_doubles(reference_broadcast(a, b, [](double x, double y) { return x * y; }),
                                                     {3, 4}, DType::f64),
                        1e-12, 0));
}

TEST(Binary, GradientsUnbroadcast) {
  for (auto op : {ops::BinaryOp::add, ops::BinaryOp::sub, ops::BinaryOp::mul, ops::BinaryOp::div, ops::BinaryOp::maximum, ops::BinaryOp::minimum}) {
    Tensor a = random_tensor({2, 3, 4}, 5).set_requires_grad(true);
    Tensor b = ops::add(random_tensor({3, 1}, 6), 3.0).detach().set_requires_grad(true);  // away from 0 for div
    EXPECT_TRUE(gradcheck([op](const std::vector<Tensor>& in) { return ops::binary(op, in[0], in[1]); }, {a, b}))
        << static_cast<int>(op);
  }
}

TEST(Binary, ScalarFormsWhereAndClamp) {
  Tensor x = random_tensor({3, 5}, 7).set_requires_grad(true);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) {
        return ops::rsub(2.0, ops::div(ops::sub(ops::mul(ops::add(in[0], 1.5), 3.0), 0.5), 4.0));
      },
      {x}));
  // clamp: gradient only where inside; keep samples away from the clamp edges for finite differences.
  Tensor y = random_tensor({40}, 8);
  const auto v = y.to_vector<double>();
  std::vector<double> away;
  for (double e : v) away.push_back(std::abs(std::abs(e) - 0.5) < 0.01 ? e + 0.05 : e);
  Tensor z = from_doubles(away, {40}, DType::f64).set_requires_grad(true);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::clamp(in[0], -0.5, 0.5); }, {z}));
  const auto clamped = ops::clamp(z, -0.5, 0.5).to_vector<double>();
  for (size_t i = 0; i < away.size(); ++i) EXPECT_EQ(clamped[i], std::min(0.5, std::max(-0.5, away[i])));
  // where with a broadcast condition.
  Tensor cond = from_vector<uint8_t>({1, 0, 1}, {3});
  Tensor a = random_tensor({2, 3}, 9).set_requires_grad(true), b = random_tensor({3}, 10).set_requires_grad(true);
  const auto w = ops::where(cond, a, b).to_vector<double>();
  const auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  for (int i = 0; i < 6; ++i) EXPECT_EQ(w[i], i % 3 != 1 ? va[i] : vb[i % 3]);
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return ops::where(cond, in[0], in[1]); }, {a, b}));
}

TEST(Binary, ReducedPrecisionMatchesF32) {
  Tensor a = random_tensor({64}, 11, DType::f32), b = random_tensor({64}, 12, DType::f32);
  for (DType low : {DType::bf16, DType::f16}) {
    Tensor out = ops::mul(a.to(low), b.to(low));
    EXPECT_EQ(out.dtype(), low);
    EXPECT_TRUE(all_close(out.to(DType::f32), ops::mul(a, b), 1e-2, 1e-2)) << low;
  }
}

TEST(Binary, ErrorsNameShapesAndDtypes) {
  try {
    ops::add(zeros({2, 3}), zeros({4}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[4]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ops::add(zeros({2}), zeros({2}, DType::f64)), Error);
}

struct UnaryCase {
  ops::UnaryOp op;
  double (*reference)(double);
  double low, high;  // input range for the test
};

TEST(Unary, ForwardAndGradientForEveryOp) {
  const std::vector<UnaryCase> cases = {
      {ops::UnaryOp::relu, [](double x) { return x > 0 ? x : 0; }, -2, 2},
      {ops::UnaryOp::silu, [](double x) { return x / (1 + std::exp(-x)); }, -4, 4},
      {ops::UnaryOp::gelu_tanh,
       [](double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }, -4, 4},
      {ops::UnaryOp::gelu_erf, [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }, -4, 4},
      {ops::UnaryOp::sigmoid, [](double x) { return 1 / (1 + std::exp(-x)); }, -5, 5},
      {ops::UnaryOp::tanh, [](double x) { return std::tanh(x); }, -3, 3},
      {ops::UnaryOp::exp, [](double x) { return std::exp(x); }, -2, 2},
      {ops::UnaryOp::log, [](double x) { return std::log(x); }, 0.2, 3},
      {ops::UnaryOp::sqrt, [](double x) { return std::sqrt(x); }, 0.2, 3},
      {ops::UnaryOp::rsqrt, [](double x) { return 1 / std::sqrt(x); }, 0.2, 3},
      {ops::UnaryOp::abs, [](double x) { return std::abs(x); }, -2, 2},
      {ops::UnaryOp::square, [](double x) { return x * x; }, -2, 2},
      {ops::UnaryOp::neg, [](double x) { return -x; }, -2, 2},
      {ops::UnaryOp::sin, [](double x) { return std::sin(x); }, -4, 4},
      {ops::UnaryOp::cos, [](double x) { return std::cos(x); }, -4, 4},
  };
  Tensor lx = testing::random_uniform({3, 7}, 21, -2, 2).set_requires_grad(true);
  std::vector<double> leaky;
  for (double v : lx.to_vector<double>()) leaky.push_back(v > 0 ? v : 0.2 * v);
  EXPECT_TRUE(all_close(ops::leaky_relu(lx, 0.2), from_doubles(leaky, {3, 7}, DType::f64), 1e-12, 0));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::leaky_relu(in[0], 0.2); }, {lx}));
  for (const auto& c : cases) {
    Tensor x = testing::random_uniform({3, 7}, 13, c.low, c.high).set_requires_grad(true);
    std::vector<double> expected;
    for (double v : x.to_vector<double>()) expected.push_back(c.reference(v));
    EXPECT_TRUE(all_close(ops::unary(c.op, x), from_doubles(expected, {3, 7}, DType::f64), 1e-12, 1e-12))
        << ops::unary_name(c.op);
    // relu and abs have kinks at 0: uniform samples are never within eps of 0 here.
    EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return ops::unary(c.op, in[0]); }, {x}))
        << ops::unary_name(c.op);
    Tensor x32 = x.detach().to(DType::f32);
    EXPECT_TRUE(all_close(ops::unary(c.op, x32.to(DType::bf16)).to(DType::f32), ops::unary(c.op, x32), 2e-2, 2e-2))
        << ops::unary_name(c.op);
  }
  Tensor p = testing::random_uniform({5}, 14, 0.5, 2.0).set_requires_grad(true);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::pow(in[0], 2.5); }, {p}));
  EXPECT_THROW(ops::relu(zeros({2}, DType::i64)), Error);
}

TEST(Reduce, SumMeanVarMaxMatchReference) {
  Tensor x = random_tensor({3, 4, 5}, 15);
  const auto v = x.to_vector<double>();
  // sum over dims {0, 2}, keepdim false -> [4]
  std::vector<double> s(4, 0.0);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 5; ++k) s[j] += v[(i * 4 + j) * 5 + k];
  EXPECT_TRUE(all_close(ops::sum(x, {0, 2}), from_doubles(s, {4}, DType::f64), 1e-12, 1e-12));
  EXPECT_EQ(ops::sum(x, {0, -1}, true).shape(), (Shape{1, 4, 1}));
  // Leading-prefix fast path (bias gradients): sum over {0, 1}.
  std::vector<double> s01(5, 0.0);
  for (int i = 0; i < 12; ++i)
    for (int k = 0; k < 5; ++k) s01[k] += v[i * 5 + k];
  EXPECT_TRUE(all_close(ops::sum(x, {0, 1}), from_doubles(s01, {5}, DType::f64), 1e-12, 1e-12));
  // mean / var over the last dim.
  std::vector<double> m(12), var(12), mx(12);
  for (int r = 0; r < 12; ++r) {
    double acc = 0, best = -1e300;
    for (int k = 0; k < 5; ++k) acc += v[r * 5 + k], best = std::max(best, v[r * 5 + k]);
    m[r] = acc / 5;
    mx[r] = best;
    double sq = 0;
    for (int k = 0; k < 5; ++k) sq += (v[r * 5 + k] - m[r]) * (v[r * 5 + k] - m[r]);
    var[r] = sq / 4;
  }
  EXPECT_TRUE(all_close(ops::mean(x, {-1}), from_doubles(m, {3, 4}, DType::f64), 1e-12, 1e-12));
  EXPECT_TRUE(all_close(ops::var(x, {-1}), from_doubles(var, {3, 4}, DType::f64), 1e-12, 1e-12));
  EXPECT_TRUE(all_close(ops::max(x, -1), from_doubles(mx, {3, 4}, DType::f64), 0, 0));
  EXPECT_NEAR(ops::sum(x).item<double>(), std::accumulate(v.begin(), v.end(), 0.0), 1e-12);
}

TEST(Reduce, Gradients) {
  Tensor x = random_tensor({3, 4, 5}, 16).set_requires_grad(true);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::sum(in[0], {1}); }, {x}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::mean(in[0], {0, 2}, true); }, {x}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::var(in[0], {2}, 0); }, {x}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::max(in[0], 1); }, {x}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::sum(in[0]); }, {x}));
}

TEST(Reduce, Bf16AccumulatesInFloat) {
  // 4096 ones summed in bf16 arithmetic would stall at 256; fp32 accumulation gives 4096 exactly.
  Tensor x = ones({4096}, DType::bf16);
  EXPECT_EQ(ops::sum(x).to(DType::f32).item<float>(), 4096.0f);
  EXPECT_THROW(ops::sum(x, {1}), Error);
  EXPECT_THROW(ops::sum(x, {0, 0}), Error);
}

}  // namespace
}  // namespace dcae
