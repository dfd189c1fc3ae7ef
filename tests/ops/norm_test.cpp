#include "ops/norm.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <functional>
#include <string>

#include "core/autograd/engine.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/view.h"
#include "tests/testing/check.h"

namespace dcae {
namespace {

using testing::expect_error;

using testing::all_close;
using testing::gradcheck;
using testing::random_tensor;
using testing::random_uniform;

// ---- plain reference loops (f64) ----

std::vector<double> values_or(const Tensor& t, int64_t n, double fill) {
  return t.defined() ? t.to_vector<double>() : std::vector<double>(n, fill);
}

// Per row of the last dim; center=false is RMSNorm.
Tensor ref_row_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool center) {
  const std::vector<double> xv = x.to_vector<double>();
  const int64_t C = x.size(-1), rows = x.numel() / C;
  const std::vector<double> wv = values_or(w, C, 1.0), bv = values_or(b, C, 0.0);
  std::vector<double> y(xv.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0.0, var = 0.0;
    if (center) {
      for (int64_t c = 0; c < C; ++c) mean += xv[r * C + c] / C;
    }
    for (int64_t c = 0; c < C; ++c) var += (xv[r * C + c] - mean) * (xv[r * C + c] - mean) / C;
    for (int64_t c = 0; c < C; ++c) y[r * C + c] = (xv[r * C + c] - mean) / std::sqrt(var + eps) * wv[c] + bv[c];
  }
  return from_doubles(y, x.shape(), DType::f64);
}

Tensor ref_group_norm(const Tensor& x, int64_t G, const Tensor& w, const Tensor& b, double eps) {
  const std::vector<double> xv = x.to_vector<double>();
  const int64_t N = x.size(0), C = x.size(-1), P = x.numel() / (N * C), Cg = C / G;
  const std::vector<double> wv = values_or(w, C, 1.0), bv = values_or(b, C, 0.0);
  std::vector<double> y(xv.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      auto at = [&](int64_t p, int64_t k) { return (n * P + p) * C + g * Cg + k; };
      double mean = 0.0, var = 0.0;
      for (int64_t p = 0; p < P; ++p)
        for (int64_t k = 0; k < Cg; ++k) mean += xv[at(p, k)] / (P * Cg);
      for (int64_t p = 0; p < P; ++p)
        for (int64_t k = 0; k < Cg; ++k) var += (xv[at(p, k)] - mean) * (xv[at(p, k)] - mean) / (P * Cg);
      for (int64_t p = 0; p < P; ++p)
        for (int64_t k = 0; k < Cg; ++k)
          y[at(p, k)] = (xv[at(p, k)] - mean) / std::sqrt(var + eps) * wv[g * Cg + k] + bv[g * Cg + k];
    }
  return from_doubles(y, x.shape(), DType::f64);
}

// Per-channel batch statistics of x [..., C]: mean and biased variance.
void ref_channel_stats(const Tensor& x, std::vector<double>& mean, std::vector<double>& var) {
  const std::vector<double> xv = x.to_vector<double>();
  const int64_t C = x.size(-1), rows = x.numel() / C;
  mean.assign(C, 0.0);
  var.assign(C, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) mean[c] += xv[r * C + c] / rows;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) var[c] += (xv[r * C + c] - mean[c]) * (xv[r * C + c] - mean[c]) / rows;
}

Tensor ref_channel_affine(const Tensor& x, const std::vector<double>& mean, const std::vector<double>& var,
                          const Tensor& w, const Tensor& b, double eps) {
  const std::vector<double> xv = x.to_vector<double>();
  const int64_t C = x.size(-1);
  const std::vector<double> wv = values_or(w, C, 1.0), bv = values_or(b, C, 0.0);
  std::vector<double> y(xv.size());
  for (size_t i = 0; i < xv.size(); ++i) {
    const int64_t c = static_cast<int64_t>(i) % C;
    y[i] = (xv[i] - mean[c]) / std::sqrt(var[c] + eps) * wv[c] + bv[c];
  }
  return from_doubles(y, x.shape(), DType::f64);
}

Tensor ref_batch_norm_train(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  std::vector<double> mean, var;
  ref_channel_stats(x, mean, var);
  return ref_channel_affine(x, mean, var, w, b, eps);
}

// ---- the four ops behind one signature, so shared checks loop over them ----

struct NormCase {
  const char* name;
  std::function<Tensor(const Tensor& x, const Tensor& w, const Tensor& b)> op;
  std::function<Tensor(const Tensor& x, const Tensor& w, const Tensor& b)> reference;
};

std::vector<NormCase> all_norms() {
  return {
      {"rms_norm", [](auto& x, auto& w, auto& b) { return ops::rms_norm(x, w, b); },
       [](auto& x, auto& w, auto& b) { return ref_row_norm(x, w, b, 1e-5, false); }},
      {"layer_norm", [](auto& x, auto& w, auto& b) { return ops::layer_norm(x, w, b); },
       [](auto& x, auto& w, auto& b) { return ref_row_norm(x, w, b, 1e-5, true); }},
      {"group_norm(3)", [](auto& x, auto& w, auto& b) { return ops::group_norm(x, 3, w, b); },
       [](auto& x, auto& w, auto& b) { return ref_group_norm(x, 3, w, b, 1e-5); }},
      {"batch_norm(train)",
       [](auto& x, auto& w, auto& b) { return ops::batch_norm(x, w, b, Tensor(), Tensor(), true); },
       [](auto& x, auto& w, auto& b) { return ref_batch_norm_train(x, w, b, 1e-5); }},
  };
}

// Inputs with a nonzero mean, so a kernel that forgets (or wrongly adds) centering fails.
Tensor offset_input(const Shape& shape, uint64_t seed, DType dtype = DType::f64) {
  return ops::add(random_tensor(shape, seed), 1.5).to(dtype);
}

TEST(Norm, ForwardMatchesReferenceInF64AndF32) {
  for (const NormCase& n : all_norms()) {
    SCOPED_TRACE(n.name);
    for (const Shape& shape : {Shape{2, 3, 5, 6}, Shape{3, 6}, Shape{1, 1, 2, 3}}) {
      SCOPED_TRACE(shape_str(shape));
      const int64_t C = shape.back();
      const Tensor x = offset_input(shape, 11), w = random_tensor({C}, 12), b = random_tensor({C}, 13);
      EXPECT_TRUE(all_close(n.op(x, w, b), n.reference(x, w, b), 1e-12, 1e-12));
      EXPECT_TRUE(all_close(n.op(x, Tensor(), Tensor()), n.reference(x, Tensor(), Tensor()), 1e-12, 1e-12));
      const Tensor x32 = x.to(DType::f32), w32 = w.to(DType::f32), b32 = b.to(DType::f32);
      const Tensor y32 = n.op(x32, w32, b32);
      EXPECT_EQ(y32.dtype(), DType::f32);
      EXPECT_TRUE(all_close(y32, n.reference(x32, w32, b32), 2e-6, 2e-6));
    }
  }
}

TEST(Norm, RmsNormDoesNotSubtractTheMean) {
  // A constant row: RMSNorm maps it to sign * w (+ b); LayerNorm would map it to b.
  const Tensor x = full({2, 4}, 3.0, DType::f64);
  const Tensor w = random_tensor({4}, 21), b = random_tensor({4}, 22);
  const Tensor expected =
      ops::add(ops::mul(ops::expand(ops::reshape(w, {1, 4}), {2, 4}), 3.0 / std::sqrt(9.0 + 1e-5)), b);
  EXPECT_TRUE(all_close(ops::rms_norm(x, w, b), expected, 1e-12, 1e-12));
  EXPECT_TRUE(all_close(ops::layer_norm(x, w, b), ops::expand(ops::reshape(b, {1, 4}), {2, 4}), 1e-12, 1e-12));
}

TEST(Norm, GroupNormGroupCountsAndEps) {
  const Tensor x = offset_input({2, 3, 4, 6}, 31), w = random_tensor({6}, 32), b = random_tensor({6}, 33);
  for (int64_t groups : {1, 2, 6})
    EXPECT_TRUE(all_close(ops::group_norm(x, groups, w, b, 0.5), ref_group_norm(x, groups, w, b, 0.5), 1e-12, 1e-12))
        << groups << " groups";
  // Equivalences that pin the grouping down: one group per channel of one sample, one group over a whole row.
  const Tensor single = random_tensor({1, 5, 4}, 34);
  EXPECT_TRUE(all_close(ops::group_norm(single, 4, Tensor(), Tensor()),
                        ops::batch_norm(single, Tensor(), Tensor(), Tensor(), Tensor(), true), 1e-12, 1e-12));
  const Tensor rows = random_tensor({3, 1, 8}, 35);
  EXPECT_TRUE(
      all_close(ops::group_norm(rows, 1, Tensor(), Tensor()), ops::layer_norm(rows, Tensor(), Tensor()), 1e-12, 1e-12));
}

TEST(Norm, GradientsMatchFiniteDifferences) {
  for (const NormCase& n : all_norms()) {
    SCOPED_TRACE(n.name);
    const Tensor x = offset_input({2, 2, 3, 6}, 41).set_requires_grad(true);
    const Tensor w = random_tensor({6}, 42).set_requires_grad(true);
    const Tensor b = random_tensor({6}, 43).set_requires_grad(true);
    auto f = [&](const std::vector<Tensor>& in) { return n.op(in[0], in[1], in[2]); };
    EXPECT_TRUE(gradcheck(f, {x, w, b}));
    EXPECT_TRUE(gradcheck(f, {x, Tensor(), Tensor()}));  // no affine
    // Subsets: only the parameters (x not saved for a bias-only gradient), only x.
    EXPECT_TRUE(gradcheck(f, {x.detach(), w, b}));
    EXPECT_TRUE(gradcheck(f, {x.detach(), w.detach(), b}));
    EXPECT_TRUE(gradcheck(f, {x, w.detach(), b.detach()}));
  }
}

TEST(Norm, NonContiguousInputsAndParameters) {
  for (const NormCase& n : all_norms()) {
    SCOPED_TRACE(n.name);
    // An NCHW tensor permuted to NHWC: same logical values, non-contiguous strides.
    const Tensor nchw = offset_input({2, 6, 3, 4}, 51);
    const Tensor x = nchw.permute({0, 2, 3, 1});
    ASSERT_FALSE(x.is_contiguous());
    const Tensor w = random_tensor({12}, 52).slice(0, 0, 12, 2), b = random_tensor({6}, 53);  // strided weight
    EXPECT_TRUE(all_close(n.op(x, w, b), n.op(x.contiguous(), w.contiguous(), b), 0, 0));
    EXPECT_TRUE(all_close(n.op(x, w, b), n.reference(x, w, b), 1e-12, 1e-12));
    // Backward through the permute (the saved x is the strided view).
    const Tensor leaf = nchw.clone().set_requires_grad(true), wc = w.contiguous().set_requires_grad(true);
    EXPECT_TRUE(gradcheck(
        [&](const std::vector<Tensor>& in) {
          return n.op(ops::permute(in[0], {0, 2, 3, 1}), in[1], b);
        },
        {leaf, wc}));
    // A broadcast (stride-0) input normalizes like its materialized copy.
    const Tensor expanded = random_tensor({1, 1, 3, 6}, 54).expand({2, 4, 3, 6});
    EXPECT_TRUE(all_close(n.op(expanded, w, b), n.op(expanded.contiguous(), w, b), 0, 0));
  }
}

TEST(Norm, LargeInputsUseManyBlocksAndAreThreadCountIndependent) {
  const int threads_before = omp_get_max_threads();
  for (const NormCase& n : all_norms()) {
    SCOPED_TRACE(n.name);
    const Tensor x = offset_input({2, 32, 32, 48}, 61), w = random_tensor({48}, 62), b = random_tensor({48}, 63);
    const Tensor dy = random_tensor(x.shape(), 64);
    auto run = [&](int threads, Tensor& y, std::vector<Tensor>& grads) {
      omp_set_num_threads(threads);
      const Tensor xl = x.clone().set_requires_grad(true), wl = w.clone().set_requires_grad(true),
                   bl = b.clone().set_requires_grad(true);
      y = n.op(xl, wl, bl);
      autograd::backward(y, dy);
      grads = {xl.grad(), wl.grad(), bl.grad()};
    };
    Tensor y1, y4;
    std::vector<Tensor> g1, g4;
    run(1, y1, g1);
    run(4, y4, g4);
    omp_set_num_threads(threads_before);
    EXPECT_TRUE(all_close(y1, n.reference(x, w, b), 1e-11, 1e-11));
    EXPECT_TRUE(all_close(y4, y1, 0, 0));
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(all_close(g4[i], g1[i], 0, 0)) << "gradient " << i;
    // grad_bias is the plain sum of dy over every position.
    EXPECT_TRUE(all_close(g1[2], ops::sum_to(dy, {48}), 1e-10, 1e-10));
  }
}

TEST(Norm, ReducedPrecisionMatchesF32) {
  for (const NormCase& n : all_norms()) {
    SCOPED_TRACE(n.name);
    for (DType low : {DType::bf16, DType::f16}) {
      SCOPED_TRACE(dtype_name(low));
      const Shape shape{2, 4, 5, 12};
      // Round the inputs first, so the comparison sees only the kernel's own precision.
      const Tensor x = offset_input(shape, 71, low), w = random_tensor({12}, 72, low), b = random_tensor({12}, 73, low);
      const Tensor dy = random_tensor(shape, 74, low);
      std::vector<Tensor> outs, grads;
      for (DType dtype : {low, DType::f32}) {
        const Tensor xl = x.to(dtype).clone().set_requires_grad(true), wl = w.to(dtype).clone().set_requires_grad(true),
                     bl = b.to(dtype).clone().set_requires_grad(true);
        const Tensor y = n.op(xl, wl, bl);
        EXPECT_EQ(y.dtype(), dtype);
        autograd::backward(y, dy.to(dtype));
        EXPECT_EQ(xl.grad().dtype(), dtype);
        outs.push_back(y);
        grads.insert(grads.end(), {xl.grad(), wl.grad(), bl.grad()});
      }
      const double tol = low == DType::bf16 ? 1.6e-2 : 2e-3;
      EXPECT_TRUE(all_close(outs[0], outs[1], tol, tol));
      EXPECT_TRUE(all_close(grads[0], grads[3], tol, tol)) << "grad x";
      EXPECT_TRUE(all_close(grads[1], grads[4], 4 * tol, tol)) << "grad weight";  // sums of ~40 terms
      EXPECT_TRUE(all_close(grads[2], grads[5], 4 * tol, tol)) << "grad bias";
    }
  }
}

TEST(Norm, HalfPrecisionStatisticsDoNotOverflow) {
  // x ~ 400: x^2 overflows f16 (max 65504), so statistics kept in f16 would give inf and a zero output.
  const Tensor x = ops::mul(random_tensor({3, 16}, 81), 400.0).to(DType::f16);
  const Tensor w = random_tensor({16}, 82, DType::f16), b = random_tensor({16}, 83, DType::f16);
  EXPECT_TRUE(all_close(ops::rms_norm(x, w, b), ref_row_norm(x, w, b, 1e-5, false), 1e-2, 1e-2));
  EXPECT_TRUE(all_close(ops::layer_norm(x, w, b), ref_row_norm(x, w, b, 1e-5, true), 1e-2, 1e-2));
}

TEST(BatchNorm, TrainingUpdatesRunningStatsWithUnbiasedVariance) {
  const Tensor x = offset_input({3, 4, 5, 6}, 91), w = random_tensor({6}, 92), b = random_tensor({6}, 93);
  const int64_t n = 3 * 4 * 5;
  for (double momentum : {0.1, 0.25}) {
    Tensor running_mean = random_tensor({6}, 94, DType::f32);
    Tensor running_var = random_uniform({6}, 95, 0.5, 2.0, DType::f32);
    const std::vector<double> mean0 = running_mean.to_vector<double>(), var0 = running_var.to_vector<double>();
    const Tensor y = ops::batch_norm(x, w, b, running_mean, running_var, true, momentum);
    EXPECT_TRUE(all_close(y, ref_batch_norm_train(x, w, b, 1e-5), 1e-12, 1e-12));
    std::vector<double> mean, var;
    ref_channel_stats(x, mean, var);
    std::vector<double> expected_mean(6), expected_var(6);
    for (int c = 0; c < 6; ++c) {
      expected_mean[c] = (1 - momentum) * mean0[c] + momentum * mean[c];
      expected_var[c] = (1 - momentum) * var0[c] + momentum * var[c] * n / (n - 1.0);
    }
    EXPECT_EQ(running_mean.dtype(), DType::f32);
    EXPECT_TRUE(all_close(running_mean, from_doubles(expected_mean, {6}, DType::f64), 1e-6, 1e-6));
    EXPECT_TRUE(all_close(running_var, from_doubles(expected_var, {6}, DType::f64), 1e-6, 1e-6));
  }
}

TEST(BatchNorm, EvalUsesRunningStatsAndLeavesThemUntouched) {
  const Tensor x = offset_input({2, 3, 4, 5}, 101), w = random_tensor({5}, 102), b = random_tensor({5}, 103);
  Tensor running_mean = random_tensor({5}, 104), running_var = random_uniform({5}, 105, 0.5, 2.0);
  const Tensor mean_before = running_mean.clone(), var_before = running_var.clone();
  const Tensor y = ops::batch_norm(x, w, b, running_mean, running_var, false, 0.1, 1e-3);
  EXPECT_TRUE(
      all_close(y, ref_channel_affine(x, running_mean.to_vector<double>(), running_var.to_vector<double>(), w, b, 1e-3),
                1e-12, 1e-12));
  EXPECT_TRUE(all_close(running_mean, mean_before, 0, 0));
  EXPECT_TRUE(all_close(running_var, var_before, 0, 0));
  // Eval gradients, with the running stats as constants.
  const Tensor xg = x.clone().set_requires_grad(true), wg = w.clone().set_requires_grad(true),
               bg = b.clone().set_requires_grad(true);
  auto eval = [&](const std::vector<Tensor>& in) {
    return ops::batch_norm(in[0], in[1], in[2], running_mean, running_var, false);
  };
  EXPECT_TRUE(gradcheck(eval, {xg, wg, bg}));
  EXPECT_TRUE(gradcheck(eval, {xg, wg.detach(), bg.detach()}));  // x not saved: grad_x = dy * w * rstd
  // The saved statistics are copies: editing the buffers between forward and backward changes nothing.
  const Tensor xl = x.clone().set_requires_grad(true);
  const Tensor out = ops::batch_norm(xl, w, b, running_mean, running_var, false);
  running_var.fill_(100.0);
  const Tensor dy = random_tensor(x.shape(), 106);
  autograd::backward(out, dy);
  std::vector<double> scale(5);
  for (int c = 0; c < 5; ++c) scale[c] = w.to_vector<double>()[c] / std::sqrt(var_before.to_vector<double>()[c] + 1e-5);
  EXPECT_TRUE(all_close(xl.grad(), ops::mul(dy, from_doubles(scale, {5}, DType::f64)), 1e-12, 1e-12));
}

TEST(BatchNorm, RunningStatsStayOutOfAutograd) {
  const Tensor x = offset_input({4, 3}, 111).set_requires_grad(true);
  Tensor running_mean = zeros({3}, DType::f64), running_var = ones({3}, DType::f64);
  const uint64_t version = running_mean.version();
  const Tensor y = ops::batch_norm(x, Tensor(), Tensor(), running_mean, running_var, true);
  EXPECT_NE(y.grad_fn(), nullptr);
  EXPECT_EQ(running_mean.grad_fn(), nullptr);
  EXPECT_FALSE(running_mean.requires_grad());
  EXPECT_GT(running_mean.version(), version);  // written in place
  // The update does not disturb the backward of the op that made it.
  autograd::backward(ops::sum(ops::mul(y, random_tensor({4, 3}, 112))));
  EXPECT_TRUE(x.grad().defined());
  // Nothing recorded when no input needs a gradient.
  EXPECT_EQ(ops::batch_norm(x.detach(), Tensor(), Tensor(), running_mean, running_var, true).grad_fn(), nullptr);
  EXPECT_EQ(ops::rms_norm(x.detach(), Tensor(), Tensor()).grad_fn(), nullptr);
}

TEST(Norm, ErrorsNameShapesAndDtypes) {
  const Tensor x = random_tensor({2, 3, 6}, 121, DType::f32), w = ones({6}), b = zeros({6});
  expect_error([&] { ops::rms_norm(x, ones({7}), b); }, {"rms_norm", "weight", "[6]", "[7]", "[2, 3, 6]"});
  expect_error([&] { ops::layer_norm(x, w, zeros({2, 3})); }, {"layer_norm", "bias", "[2, 3]"});
  expect_error([&] { ops::layer_norm(x, ones({6}, DType::f64), b); }, {"weight", "f64", "dtype"});
  expect_error([&] { ops::rms_norm(zeros({2, 3}, DType::i64), Tensor(), Tensor()); }, {"floating", "i64"});
  expect_error([&] { ops::layer_norm(zeros({2, 0}), Tensor(), Tensor()); }, {"empty channel", "[2, 0]"});
  expect_error([&] { ops::rms_norm(x, w, b, -1.0); }, {"eps"});
  expect_error([&] { ops::group_norm(x, 4, w, b); }, {"group_norm", "groups (4)", "6 channels", "[2, 3, 6]"});
  expect_error([&] { ops::group_norm(x, 0, w, b); }, {"groups (0)"});
  expect_error([&] { ops::group_norm(ones({6}), 2, w, b); }, {"[N, ..., C]", "[6]"});
  expect_error([&] { ops::group_norm(zeros({2, 0, 6}), 2, w, b); }, {"empty", "[2, 0, 6]"});
  Tensor rm = zeros({6}), rv = ones({6});
  expect_error([&] { ops::batch_norm(x, w, b, zeros({5}), rv, true); }, {"running_mean", "[6]", "[5]"});
  expect_error([&] { ops::batch_norm(x, w, b, rm, ones({6, 1}), false); }, {"running_var", "[6, 1]"});
  expect_error([&] { ops::batch_norm(x, w, b, rm, Tensor(), true); }, {"both", "undefined"});
  expect_error([&] { ops::batch_norm(x, w, b, Tensor(), Tensor(), false); }, {"eval", "running stats"});
  expect_error([&] { ops::batch_norm(ones({1, 6}), w, b, rm, rv, true); }, {"more than one value", "[1, 6]"});
  expect_error([&] { ops::batch_norm(x, w, b, zeros({6}).set_requires_grad(true), rv, true); }, {"buffers"});
  expect_error([&] { ops::batch_norm(x, w, b, rm, rv, true, 1.5); }, {"momentum"});
  // Failed calls left the buffers alone.
  EXPECT_TRUE(all_close(rm, zeros({6}), 0, 0));
  // Edge sizes that are valid: one channel, one row, eval over a single value per channel.
  EXPECT_TRUE(all_close(ops::layer_norm(random_tensor({3, 1}, 122), Tensor(), ones({1}, DType::f64)),
                        ones({3, 1}, DType::f64), 0, 0));
  EXPECT_TRUE(all_close(ops::rms_norm(x.narrow(0, 0, 1), w, b), ref_row_norm(x.narrow(0, 0, 1), w, b, 1e-5, false),
                        2e-6, 2e-6));
  EXPECT_NO_THROW(ops::batch_norm(ones({1, 6}), w, b, rm, rv, false));
}

}  // namespace
}  // namespace dcae
