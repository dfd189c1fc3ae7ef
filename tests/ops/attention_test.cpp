#include "ops/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/autograd/engine.h"
#include "ops/elementwise.h"
#include "tests/testing/check.h"

namespace dcae {
namespace {

using testing::expect_error;

using testing::all_close;
using testing::random_tensor;

// ---------------------------------------------------------------------------------------------------------------
// Scaled dot-product attention

// Literal loops in double: scores, a max-shifted softmax over keys, weighted sum of values. The mask is read
// through broadcasting by index arithmetic on its own (size-1 dims repeat).
Tensor reference_sdpa(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, double scale) {
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), D = q.size(3), Lk = k.size(2), Dv = v.size(3);
  const std::vector<double> qv = q.to_vector<double>(), kv = k.to_vector<double>(), vv = v.to_vector<double>();
  Tensor mask4 = mask.defined() ? mask.to(DType::f64).expand({B, H, Lq, Lk}).contiguous() : Tensor();
  const std::vector<double> mv = mask4.defined() ? mask4.to_vector<double>() : std::vector<double>();
  std::vector<double> out(B * H * Lq * Dv, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Lq; ++i) {
        std::vector<double> s(Lk);
        for (int64_t j = 0; j < Lk; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < D; ++c)
            dot += qv[((b * H + h) * Lq + i) * D + c] * kv[((b * H + h) * Lk + j) * D + c];
          s[j] = scale * dot + (mv.empty() ? 0.0 : mv[((b * H + h) * Lq + i) * Lk + j]);
        }
        double row_max = -std::numeric_limits<double>::infinity();
        for (double x : s) row_max = std::max(row_max, x);
        if (row_max == -std::numeric_limits<double>::infinity()) continue;  // fully masked: zeros by contract
        double total = 0;
        for (double& x : s) total += x = std::exp(x - row_max);
        for (int64_t j = 0; j < Lk; ++j)
          for (int64_t c = 0; c < Dv; ++c)
            out[((b * H + h) * Lq + i) * Dv + c] += s[j] / total * vv[((b * H + h) * Lk + j) * Dv + c];
      }
  return from_doubles(out, {B, H, Lq, Dv}, DType::f64);
}

TEST(ScaledDotProductAttention, MatchesReferenceInF64AndF32) {
  // Lq != Lk and Dv != D, odd sizes.
  const Tensor q = random_tensor({2, 3, 5, 4}, 201), k = random_tensor({2, 3, 7, 4}, 202),
               v = random_tensor({2, 3, 7, 6}, 203);
  const Tensor expected = reference_sdpa(q, k, v, Tensor(), 0.5);
  EXPECT_TRUE(all_close(ops::scaled_dot_product_attention(q, k, v), expected, 1e-13, 1e-12));
  const Tensor out32 = ops::scaled_dot_product_attention(q.to(DType::f32), k.to(DType::f32), v.to(DType::f32));
  EXPECT_EQ(out32.dtype(), DType::f32);
  EXPECT_TRUE(all_close(out32, expected, 1e-5, 1e-5));
  // An explicit scale.
  EXPECT_TRUE(all_close(ops::scaled_dot_product_attention(q, k, v, Tensor(), 1.7),
                        reference_sdpa(q, k, v, Tensor(), 1.7), 1e-13, 1e-12));
}

TEST(ScaledDotProductAttention, BroadcastMasksAndMaskedPositions) {
  const Tensor q = random_tensor({2, 2, 3, 4}, 204), k = random_tensor({2, 2, 5, 4}, 205),
               v = random_tensor({2, 2, 5, 3}, 206);
  for (const Shape& mask_shape : std::vector<Shape>{{2, 2, 3, 5}, {3, 5}, {2, 1, 1, 5}, {1, 2, 3, 1}}) {
    const Tensor mask = random_tensor(mask_shape, 207);
    EXPECT_TRUE(
        all_close(ops::scaled_dot_product_attention(q, k, v, mask), reference_sdpa(q, k, v, mask, 0.5), 1e-13, 1e-12))
        << shape_str(mask_shape);
  }
  // -inf hides keys; a row with every key hidden gives zeros instead of NaN.
  std::vector<double> m(3 * 5, 0.0);
  m[0 * 5 + 1] = m[0 * 5 + 3] = -std::numeric_limits<double>::infinity();
  for (int j = 0; j < 5; ++j) m[2 * 5 + j] = -std::numeric_limits<double>::infinity();
  const Tensor mask = from_doubles(m, {3, 5}, DType::f64);
  const Tensor out = ops::scaled_dot_product_attention(q, k, v, mask);
  EXPECT_TRUE(all_close(out, reference_sdpa(q, k, v, mask, 0.5), 1e-13, 1e-12));
  const std::vector<double> values = out.to_vector<double>();
  for (int64_t bh = 0; bh < 4; ++bh)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(values[(bh * 3 + 2) * 3 + c], 0.0);
  // ... and passes no gradient (zero, not NaN), while the other rows still do.
  Tensor qg = q.clone().set_requires_grad(true);
  autograd::backward(ops::scaled_dot_product_attention(qg, k, v, mask), random_tensor({2, 2, 3, 3}, 208));
  const std::vector<double> dq = qg.grad().to_vector<double>();
  for (size_t i = 0; i < dq.size(); ++i) EXPECT_FALSE(std::isnan(dq[i])) << i;
  EXPECT_EQ(dq[2 * 4], 0.0);
  EXPECT_NE(dq[0], 0.0);
}

TEST(ScaledDotProductAttention, NonContiguousInputs) {
  // [B, L, H, D] transposed to [B, H, L, D], the layout a fused projection produces.
  const Tensor q = random_tensor({2, 5, 3, 4}, 209).transpose(1, 2);
  const Tensor k = random_tensor({2, 6, 3, 4}, 210).transpose(1, 2);
  const Tensor v = random_tensor({2, 6, 3, 4}, 211).transpose(1, 2);
  ASSERT_FALSE(q.is_contiguous());
  EXPECT_TRUE(
      all_close(ops::scaled_dot_product_attention(q, k, v), reference_sdpa(q, k, v, Tensor(), 0.5), 1e-13, 1e-12));
}

TEST(ScaledDotProductAttention, GradcheckQKVAndMask) {
  const Tensor q = random_tensor({1, 2, 3, 4}, 212).set_requires_grad(true);
  const Tensor k = random_tensor({1, 2, 5, 4}, 213).set_requires_grad(true);
  const Tensor v = random_tensor({1, 2, 5, 3}, 214).set_requires_grad(true);
  const Tensor mask = random_tensor({2, 1, 5}, 215).set_requires_grad(true);  // broadcast over batch and queries
  EXPECT_TRUE(testing::gradcheck(
      [](const std::vector<Tensor>& in) { return ops::scaled_dot_product_attention(in[0], in[1], in[2], in[3], 0.8); },
      {q, k, v, mask}));
  // Without a mask, default scale.
  EXPECT_TRUE(testing::gradcheck(
      [](const std::vector<Tensor>& in) { return ops::scaled_dot_product_attention(in[0], in[1], in[2]); }, {q, k, v}));
  // Only some inputs trainable: the others get nothing.
  Tensor vv = random_tensor({1, 2, 5, 3}, 216).set_requires_grad(true);
  autograd::backward(ops::scaled_dot_product_attention(q.detach(), k.detach(), vv, mask.detach()),
                     random_tensor({1, 2, 3, 3}, 217));
  EXPECT_TRUE(vv.grad().defined());
}

TEST(ScaledDotProductAttention, ReducedPrecisionMatchesF32) {
  const Tensor q = random_tensor({2, 2, 9, 8}, 218, DType::bf16), k = random_tensor({2, 2, 11, 8}, 219, DType::bf16),
               v = random_tensor({2, 2, 11, 8}, 220, DType::bf16);
  const auto f32 = [](const Tensor& t) { return t.to(DType::f32); };
  const Tensor out = ops::scaled_dot_product_attention(q, k, v);
  EXPECT_EQ(out.dtype(), DType::bf16);
  EXPECT_TRUE(all_close(out, ops::scaled_dot_product_attention(f32(q), f32(k), f32(v)), 1e-2, 1e-2));
  // Backward in bf16 vs f32.
  Tensor q16 = q.clone().set_requires_grad(true), q32 = f32(q).set_requires_grad(true);
  const Tensor g = random_tensor({2, 2, 9, 8}, 221, DType::bf16);
  autograd::backward(ops::scaled_dot_product_attention(q16, k, v), g);
  autograd::backward(ops::scaled_dot_product_attention(q32, f32(k), f32(v)), f32(g));
  EXPECT_EQ(q16.grad().dtype(), DType::bf16);
  EXPECT_TRUE(all_close(q16.grad(), q32.grad(), 3e-2, 3e-2));
}

TEST(ScaledDotProductAttention, Errors) {
  const Tensor q = random_tensor({2, 3, 5, 4}, 222), k = random_tensor({2, 3, 7, 4}, 223),
               v = random_tensor({2, 3, 7, 6}, 224);
  expect_error(
      [&] {
        ops::scaled_dot_product_attention(q, random_tensor({2, 3, 7, 5}, 1), v);
      },
      {"Tensor[2, 3, 5, 4]", "Tensor[2, 3, 7, 5]"});
  expect_error([&] { ops::scaled_dot_product_attention(q, k, random_tensor({2, 3, 6, 6}, 1)); }, {"[2, 3, 6, 6]"});
  expect_error([&] { ops::scaled_dot_product_attention(random_tensor({3, 5, 4}, 1), k, v); }, {"[3, 5, 4]"});
  expect_error([&] { ops::scaled_dot_product_attention(q, k.to(DType::f32), v); }, {"f32", "f64"});
  expect_error(
      [&] {
        ops::scaled_dot_product_attention(q, k, v, random_tensor({5, 6}, 1));
      },
      {"[5, 6]", "[2, 3, 5, 7]"});
  expect_error([&] { ops::scaled_dot_product_attention(q, k, v, zeros({5, 7}, DType::u8)); }, {"u8"});
}

// ---------------------------------------------------------------------------------------------------------------
// ReLU linear attention (DC-AE LiteMLA core)

// The spec's per-head math written out literally in double: q, k <- ReLU; v' = [v; 1] ((d+1) x N);
// M = v' k^T ((d+1) x d); o = M q ((d+1) x N); out = o[0:d] / (o[d] + eps). Channels of head h: q at h*3d + j,
// k at h*3d + d + j, v at h*3d + 2d + j; output channel h*d + j.
Tensor reference_linear_attention(const Tensor& qkv, int64_t d, double eps) {
  const int64_t N = qkv.size(0), H = qkv.size(1), W = qkv.size(2), C3 = qkv.size(3), C = C3 / 3, heads = C / d;
  const int64_t tokens = H * W;
  const std::vector<double> x = qkv.contiguous().to_vector<double>();
  std::vector<double> out(N * tokens * C);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < heads; ++h) {
      auto q = [&](int64_t c, int64_t t) { return std::max(0.0, x[(n * tokens + t) * C3 + h * 3 * d + c]); };
      auto k = [&](int64_t c, int64_t t) { return std::max(0.0, x[(n * tokens + t) * C3 + h * 3 * d + d + c]); };
      auto v_ext = [&](int64_t c, int64_t t) {
        return c == d ? 1.0 : x[(n * tokens + t) * C3 + h * 3 * d + 2 * d + c];
      };
      std::vector<std::vector<double>> M(d + 1, std::vector<double>(d, 0.0));
      for (int64_t i = 0; i <= d; ++i)
        for (int64_t j = 0; j < d; ++j)
          for (int64_t t = 0; t < tokens; ++t) M[i][j] += v_ext(i, t) * k(j, t);
      for (int64_t t = 0; t < tokens; ++t) {
        std::vector<double> o(d + 1, 0.0);
        for (int64_t i = 0; i <= d; ++i)
          for (int64_t j = 0; j < d; ++j) o[i] += M[i][j] * q(j, t);
        for (int64_t i = 0; i < d; ++i) out[(n * tokens + t) * C + h * d + i] = o[i] / (o[d] + eps);
      }
    }
  return from_doubles(out, {N, H, W, C}, DType::f64);
}

using ops::LinearAttentionForm;

Tensor lin_attn(const Tensor& qkv, int64_t d, LinearAttentionForm form, double eps = 1e-15) {
  return ops::relu_linear_attention(qkv, d, eps, form);
}

// Inputs whose denominators stay well away from zero: q and k with a positive mean (most survive the ReLU).
Tensor positive_qkv(const Shape& shape, uint64_t seed, DType dtype = DType::f64) {
  return ops::add(random_tensor(shape, seed, dtype), 0.6);
}

TEST(ReluLinearAttention, MatchesLiteralSpecLoopsInF64AndF32) {
  // 2 images, 3x5 map (15 tokens > d = 4: the automatic form is linear), 2 heads; zero-mean inputs so many q/k
  // entries are clipped by the ReLU.
  const Tensor qkv = random_tensor({2, 3, 5, 2 * 3 * 4}, 301);
  const Tensor expected = reference_linear_attention(qkv, 4, 1e-15);
  for (auto form : {LinearAttentionForm::automatic, LinearAttentionForm::linear, LinearAttentionForm::quadratic}) {
    EXPECT_TRUE(all_close(lin_attn(qkv, 4, form), expected, 1e-12, 1e-10)) << static_cast<int>(form);
    const Tensor out32 = lin_attn(qkv.to(DType::f32), 4, form);
    EXPECT_EQ(out32.dtype(), DType::f32);
    EXPECT_TRUE(all_close(out32, expected, 1e-4, 1e-4)) << static_cast<int>(form);
  }
  // The DC-AE shape: head_dim 32, 2 heads, a 6x7 map.
  const Tensor wide = random_tensor({1, 6, 7, 2 * 96}, 302);
  EXPECT_TRUE(all_close(ops::relu_linear_attention(wide), reference_linear_attention(wide, 32, 1e-15), 1e-12, 1e-10));
}

TEST(ReluLinearAttention, EpsSitsInTheDenominator) {
  // A large eps makes its placement visible: out = o[0:d] / (o[d] + eps).
  const Tensor qkv = positive_qkv({1, 2, 3, 6}, 303);
  for (auto form : {LinearAttentionForm::linear, LinearAttentionForm::quadratic})
    EXPECT_TRUE(all_close(lin_attn(qkv, 2, form, 0.75), reference_linear_attention(qkv, 2, 0.75), 1e-13, 1e-12));
}

TEST(ReluLinearAttention, LinearAndQuadraticFormsAgree) {
  // Small map (the automatic choice is quadratic) and larger map (linear), both forms forced.
  for (const Shape& shape : std::vector<Shape>{{2, 2, 2, 3 * 3 * 8}, {1, 7, 9, 2 * 3 * 8}}) {
    const Tensor qkv = random_tensor(shape, 304);
    const Tensor linear = lin_attn(qkv, 8, LinearAttentionForm::linear);
    const Tensor quadratic = lin_attn(qkv, 8, LinearAttentionForm::quadratic);
    EXPECT_TRUE(all_close(linear, quadratic, 1e-13, 1e-11)) << shape_str(shape);
    EXPECT_TRUE(all_close(lin_attn(qkv, 8, LinearAttentionForm::automatic), linear, 1e-13, 1e-11));
    // Their gradients agree as well.
    Tensor a = qkv.clone().set_requires_grad(true), b = qkv.clone().set_requires_grad(true);
    const Tensor g = random_tensor(linear.shape(), 305);
    autograd::backward(lin_attn(a, 8, LinearAttentionForm::linear), g);
    autograd::backward(lin_attn(b, 8, LinearAttentionForm::quadratic), g);
    EXPECT_TRUE(all_close(a.grad(), b.grad(), 1e-11, 1e-9)) << shape_str(shape);
  }
}

TEST(ReluLinearAttention, GradcheckBothForms) {
  // 2 images, 2x3 map, 2 heads of d = 3: q, k, v and the ReLU clipping all exercised.
  const Tensor qkv = positive_qkv({2, 2, 3, 2 * 3 * 3}, 306).set_requires_grad(true);
  for (auto form : {LinearAttentionForm::linear, LinearAttentionForm::quadratic})
    EXPECT_TRUE(testing::gradcheck([&](const std::vector<Tensor>& in) { return lin_attn(in[0], 3, form); }, {qkv},
                                   {1e-6, 1e-7, 1e-5}))
        << static_cast<int>(form);
  // The clipped entries really are there, so the ReLU masks are tested.
  int clipped = 0;
  for (double x : qkv.to_vector<double>()) clipped += x <= 0;
  EXPECT_GT(clipped, 3);
}

TEST(ReluLinearAttention, AllKeysClippedGivesZerosNotNan) {
  // Every k negative: M = 0 and o[d] = 0, so out = 0 / eps = 0; the gradient stays finite.
  std::vector<double> values = random_tensor({1, 2, 2, 6}, 307).to_vector<double>();
  for (int t = 0; t < 4; ++t) values[t * 6 + 2] = -std::abs(values[t * 6 + 2]) - 0.1;  // d = 2: k at 2, 3
  for (int t = 0; t < 4; ++t) values[t * 6 + 3] = -std::abs(values[t * 6 + 3]) - 0.1;
  Tensor qkv = from_doubles(values, {1, 2, 2, 6}, DType::f64).set_requires_grad(true);
  for (auto form : {LinearAttentionForm::linear, LinearAttentionForm::quadratic}) {
    const Tensor out = lin_attn(qkv, 2, form);
    EXPECT_TRUE(all_close(out, zeros({1, 2, 2, 2}, DType::f64), 0, 0));
    qkv.set_grad(Tensor());
    autograd::backward(out, random_tensor({1, 2, 2, 2}, 308));
    for (double g : qkv.grad().to_vector<double>()) ASSERT_TRUE(std::isfinite(g));
    // Clipped keys pass no gradient to k.
    const std::vector<double> grad = qkv.grad().to_vector<double>();
    for (int t = 0; t < 4; ++t) EXPECT_EQ(grad[t * 6 + 2], 0.0);
  }
}

TEST(ReluLinearAttention, NonContiguousInput) {
  // An NCHW tensor viewed as NHWC.
  const Tensor nchw = random_tensor({2, 12, 3, 4}, 309);
  const Tensor nhwc = nchw.permute({0, 2, 3, 1});
  ASSERT_FALSE(nhwc.is_contiguous());
  EXPECT_TRUE(all_close(ops::relu_linear_attention(nhwc, 2), reference_linear_attention(nhwc, 2, 1e-15), 1e-12, 1e-10));
}

TEST(ReluLinearAttention, ReducedPrecisionMatchesF32) {
  const Tensor qkv = positive_qkv({2, 4, 5, 2 * 96}, 310, DType::f32).to(DType::bf16);
  const Tensor qkv32 = qkv.to(DType::f32);
  for (auto form : {LinearAttentionForm::linear, LinearAttentionForm::quadratic}) {
    const Tensor out = lin_attn(qkv, 32, form);
    EXPECT_EQ(out.dtype(), DType::bf16);
    EXPECT_TRUE(all_close(out, lin_attn(qkv32, 32, form), 1e-2, 1e-2));
    Tensor a = qkv.clone().set_requires_grad(true), b = qkv32.clone().set_requires_grad(true);
    const Tensor g = random_tensor(out.shape(), 311, DType::bf16);
    autograd::backward(lin_attn(a, 32, form), g);
    autograd::backward(lin_attn(b, 32, form), g.to(DType::f32));
    EXPECT_EQ(a.grad().dtype(), DType::bf16);
    EXPECT_TRUE(all_close(a.grad(), b.grad(), 1e-2, 2e-2));
  }
  // f16 too (the reference upcasts fp16 to fp32).
  const Tensor half = qkv32.to(DType::f16);
  EXPECT_TRUE(all_close(ops::relu_linear_attention(half), ops::relu_linear_attention(half.to(DType::f32)), 2e-3, 2e-3));
}

TEST(ReluLinearAttention, Errors) {
  expect_error([] { ops::relu_linear_attention(random_tensor({1, 2, 2, 100}, 1)); }, {"[1, 2, 2, 100]", "32"});
  expect_error([] { ops::relu_linear_attention(random_tensor({2, 96}, 1)); }, {"[2, 96]"});
  expect_error([] { ops::relu_linear_attention(zeros({1, 2, 2, 96}, DType::i64)); }, {"i64"});
  expect_error([] { ops::relu_linear_attention(random_tensor({1, 2, 2, 6}, 1), 0); }, {"head_dim"});
  expect_error([] { ops::relu_linear_attention(random_tensor({1, 2, 2, 6}, 1), 2, -1.0); }, {"eps"});
}

}  // namespace
}  // namespace dcae
