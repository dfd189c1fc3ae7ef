#include <gtest/gtest.h>

#include <string>

#include "core/autograd/engine.h"
#include "ops/conv2d.h"
#include "ops/cpu/conv2d.h"
#include "ops/view.h"
#include "tests/testing/check.h"

namespace dcae {
namespace {

using testing::expect_error;

using testing::all_close;
using testing::gradcheck;
using testing::random_tensor;

// Straight from the definition over NHWC: out[n, oh, ow, o] = bias[o] + sum over the group's input channels c and
// taps (i, j) of x[n, oh*s - p + i, ow*s - p + j, c] * w[o, c - group start, i, j], zero outside the image.
Tensor reference_conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, ops::Conv2dParams p) {
  const int64_t n_ = x.size(0), h_ = x.size(1), w_ = x.size(2), cin = x.size(3);
  const int64_t cout = w.size(0), cin_g = w.size(1), kh = w.size(2), kw = w.size(3), cout_g = cout / p.groups;
  const int64_t ho = (h_ + 2 * p.padding - kh) / p.stride + 1, wo = (w_ + 2 * p.padding - kw) / p.stride + 1;
  const std::vector<double> vx = x.to_vector<double>(), vw = w.to_vector<double>();
  const std::vector<double> vb = bias.defined() ? bias.to_vector<double>() : std::vector<double>(cout, 0.0);
  std::vector<double> out(n_ * ho * wo * cout);
  for (int64_t n = 0; n < n_; ++n)
    for (int64_t oh = 0; oh < ho; ++oh)
      for (int64_t ow = 0; ow < wo; ++ow)
        for (int64_t o = 0; o < cout; ++o) {
          double s = vb[o];
          const int64_t group = o / cout_g;
          for (int64_t c = 0; c < cin_g; ++c)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t h = oh * p.stride - p.padding + i, ww = ow * p.stride - p.padding + j;
                if (h < 0 || h >= h_ || ww < 0 || ww >= w_) continue;
                s += vx[((n * h_ + h) * w_ + ww) * cin + group * cin_g + c] * vw[((o * cin_g + c) * kh + i) * kw + j];
              }
          out[((n * ho + oh) * wo + ow) * cout + o] = s;
        }
  return from_doubles(out, {n_, ho, wo, cout}, DType::f64);
}

// Gradients of sum(out * g) from the same loop: dx and dw collect every product that fed an output.
std::pair<Tensor, Tensor> reference_conv2d_grads(const Tensor& x, const Tensor& w, const Tensor& g,
                                                 ops::Conv2dParams p) {
  const int64_t n_ = x.size(0), h_ = x.size(1), w_ = x.size(2), cin = x.size(3);
  const int64_t cout = w.size(0), cin_g = w.size(1), kh = w.size(2), kw = w.size(3), cout_g = cout / p.groups;
  const int64_t ho = g.size(1), wo = g.size(2);
  const std::vector<double> vx = x.to_vector<double>(), vw = w.to_vector<double>(), vg = g.to_vector<double>();
  std::vector<double> dx(vx.size(), 0.0), dw(vw.size(), 0.0);
  for (int64_t n = 0; n < n_; ++n)
    for (int64_t oh = 0; oh < ho; ++oh)
      for (int64_t ow = 0; ow < wo; ++ow)
        for (int64_t o = 0; o < cout; ++o) {
          const double go = vg[((n * ho + oh) * wo + ow) * cout + o];
          const int64_t group = o / cout_g;
          for (int64_t c = 0; c < cin_g; ++c)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t h = oh * p.stride - p.padding + i, ww = ow * p.stride - p.padding + j;
                if (h < 0 || h >= h_ || ww < 0 || ww >= w_) continue;
                const int64_t xi = ((n * h_ + h) * w_ + ww) * cin + group * cin_g + c;
                const int64_t wi = ((o * cin_g + c) * kh + i) * kw + j;
                dx[xi] += go * vw[wi];
                dw[wi] += go * vx[xi];
              }
        }
  return {from_doubles(dx, x.shape(), DType::f64), from_doubles(dw, w.shape(), DType::f64)};
}

struct ConvCase {
  const char* name;
  int64_t n, h, w, cin, cout, kh, kw, stride, padding, groups;
  bool bias;
  Shape x_shape() const { return {n, h, w, cin}; }
  Shape w_shape() const { return {cout, cin / groups, kh, kw}; }
  ops::Conv2dParams params() const { return {stride, padding, groups}; }
};

// Small shapes covering every kernel path (pointwise GEMM, depthwise loop, im2col) and the geometry corners.
const std::vector<ConvCase>& conv_cases() {
  static const std::vector<ConvCase> cases = {
      {"3x3 pad 1", 2, 5, 6, 4, 5, 3, 3, 1, 1, 1, true},
      {"3x3 stride 2 odd size", 2, 7, 6, 3, 4, 3, 3, 2, 1, 1, true},
      {"1x1 pointwise", 2, 4, 3, 6, 4, 1, 1, 1, 0, 1, true},
      {"1x1 pointwise groups 2", 1, 3, 5, 6, 4, 1, 1, 1, 0, 2, false},
      {"1x1 stride 2", 1, 5, 5, 3, 2, 1, 1, 2, 0, 1, true},
      {"depthwise 3x3", 2, 5, 4, 5, 5, 3, 3, 1, 1, 5, true},
      {"depthwise 5x5 pad 2", 1, 6, 5, 4, 4, 5, 5, 1, 2, 4, true},
      {"depthwise 3x3 stride 2", 1, 7, 6, 3, 3, 3, 3, 2, 1, 3, false},
      {"depthwise 1x1", 1, 3, 3, 4, 4, 1, 1, 1, 0, 4, true},
      {"single channel", 1, 5, 5, 1, 1, 3, 3, 1, 1, 1, true},
      {"channel multiplier 2", 1, 4, 4, 3, 6, 3, 3, 1, 1, 3, true},
      {"groups 2", 2, 4, 5, 4, 6, 3, 3, 1, 1, 2, true},
      {"groups 3 on 6 channels", 1, 5, 4, 6, 9, 3, 3, 1, 1, 3, true},
      {"even 2x2 no padding", 2, 6, 5, 3, 4, 2, 2, 1, 0, 1, true},
      {"even 4x4 stride 2 pad 1", 1, 8, 7, 2, 3, 4, 4, 2, 1, 1, false},
      {"1x3 kernel", 1, 4, 6, 3, 2, 1, 3, 1, 1, 1, true},
      {"3x3 pad 2", 1, 4, 4, 2, 3, 3, 3, 1, 2, 1, true},
      {"kernel fills the input", 2, 3, 3, 2, 3, 3, 3, 1, 0, 1, true},
  };
  return cases;
}

double tolerance(DType dtype) { return dtype == DType::f64 ? 1e-11 : 1e-4; }

// Restores the im2col chunk size when a test that shrinks it ends.
class ChunkElementsScope {
 public:
  explicit ChunkElementsScope(int64_t elements) : previous_(ops::cpu::set_im2col_chunk_elements(elements)) {}
  ~ChunkElementsScope() { ops::cpu::set_im2col_chunk_elements(previous_); }

 private:
  int64_t previous_;
};

TEST(Conv2d, ForwardMatchesReference) {
  uint64_t seed = 1000;
  for (DType dtype : {DType::f64, DType::f32})
    for (const ConvCase& c : conv_cases()) {
      const Tensor x = random_tensor(c.x_shape(), ++seed, dtype), w = random_tensor(c.w_shape(), ++seed, dtype);
      const Tensor bias = c.bias ? random_tensor({c.cout}, ++seed, dtype) : Tensor();
      const Tensor out = ops::conv2d(x, w, bias, c.params());
      EXPECT_EQ(out.dtype(), dtype);
      EXPECT_TRUE(all_close(out, reference_conv2d(x, w, bias, c.params()), tolerance(dtype), tolerance(dtype)))
          << c.name << " " << dtype;
    }
}

TEST(Conv2d, GradientsMatchFiniteDifferences) {
  uint64_t seed = 2000;
  for (const ConvCase& c : conv_cases()) {
    Tensor x = random_tensor(c.x_shape(), ++seed).set_requires_grad(true);
    Tensor w = random_tensor(c.w_shape(), ++seed).set_requires_grad(true);
    Tensor bias = c.bias ? random_tensor({c.cout}, ++seed).set_requires_grad(true) : Tensor();
    const ops::Conv2dParams params = c.params();
    EXPECT_TRUE(gradcheck(
        [&](const std::vector<Tensor>& in) { return ops::conv2d(in[0], in[1], in[2], params); }, {x, w, bias}))
        << c.name;
  }
}

TEST(Conv2d, GradientOfOneInputOnly) {
  const ConvCase& c = conv_cases()[0];
  // Weight frozen: the input is not saved for a weight gradient, the input gradient is still right.
  Tensor x = random_tensor(c.x_shape(), 3000).set_requires_grad(true);
  const Tensor w = random_tensor(c.w_shape(), 3001);
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return ops::conv2d(in[0], w, Tensor(), c.params()); },
                        {x}));
  EXPECT_FALSE(w.grad().defined());
  // Input frozen (the usual first layer): only weight and bias.
  const Tensor x2 = random_tensor(c.x_shape(), 3002);
  Tensor w2 = random_tensor(c.w_shape(), 3003).set_requires_grad(true);
  Tensor b2 = random_tensor({c.cout}, 3004).set_requires_grad(true);
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return ops::conv2d(x2, in[0], in[1], c.params()); },
                        {w2, b2}));
  EXPECT_EQ(ops::conv2d(x2, w, Tensor(), c.params()).grad_fn(), nullptr);  // nothing trainable: no history
}

TEST(Conv2d, LargerShapesMatchReferenceOnThreadedPaths) {
  // Big enough that im2col/col2im, the depthwise loops and per-group GEMMs run across threads.
  const std::vector<ConvCase> cases = {
      {"3x3", 2, 12, 11, 24, 16, 3, 3, 1, 1, 1, true},
      {"3x3 stride 2", 2, 13, 12, 16, 24, 3, 3, 2, 1, 1, false},
      {"groups 2", 2, 12, 12, 32, 32, 3, 3, 1, 1, 2, true},
      {"pointwise groups 4", 2, 12, 12, 64, 64, 1, 1, 1, 0, 4, false},
      {"pointwise", 2, 12, 12, 48, 40, 1, 1, 1, 0, 1, true},
      {"depthwise 3x3", 2, 16, 15, 64, 64, 3, 3, 1, 1, 64, true},
      {"depthwise 5x5 stride 2", 2, 16, 16, 32, 32, 5, 5, 2, 2, 32, false},
  };
  uint64_t seed = 7000;
  for (DType dtype : {DType::f64, DType::f32})
    for (const ConvCase& c : cases) {
      Tensor x = random_tensor(c.x_shape(), ++seed, dtype).set_requires_grad(true);
      Tensor w = random_tensor(c.w_shape(), ++seed, dtype).set_requires_grad(true);
      const Tensor bias = c.bias ? random_tensor({c.cout}, ++seed, dtype) : Tensor();
      const Tensor out = ops::conv2d(x, w, bias, c.params());
      const double tol = tolerance(dtype) * 10;
      EXPECT_TRUE(all_close(out, reference_conv2d(x.detach(), w.detach(), bias, c.params()), tol, tol))
          << c.name << " " << dtype;
      const Tensor g = random_tensor(out.shape(), ++seed, dtype);
      autograd::backward(out, g);
      const auto [dx, dw] = reference_conv2d_grads(x.detach(), w.detach(), g, c.params());
      EXPECT_TRUE(all_close(x.grad(), dx, tol, tol)) << c.name << " " << dtype;
      EXPECT_TRUE(all_close(w.grad(), dw, tol * 10, tol)) << c.name << " " << dtype;  // sums over all pixels
    }
}

TEST(Conv2d, ChunkedIm2colMatchesUnchunked) {
  // Tiny chunks: one output row, and two rows whose receptive fields overlap across image boundaries.
  for (const char* name : {"3x3 pad 1", "3x3 stride 2 odd size", "groups 3 on 6 channels", "even 4x4 stride 2 pad 1",
                           "3x3 pad 2"}) {
    const ConvCase* c = nullptr;
    for (const ConvCase& candidate : conv_cases())
      if (std::string(candidate.name) == name) c = &candidate;
    ASSERT_NE(c, nullptr) << name;
    const Tensor x = random_tensor(c->x_shape(), 4000), w = random_tensor(c->w_shape(), 4001);
    const Tensor bias = random_tensor({c->cout}, 4002);
    const Tensor g = random_tensor(reference_conv2d(x, w, bias, c->params()).shape(), 4003);
    auto run = [&] {
      Tensor xr = x.clone().set_requires_grad(true), wr = w.clone().set_requires_grad(true);
      const Tensor out = ops::conv2d(xr, wr, bias, c->params());
      autograd::backward(out, g);
      return std::vector<Tensor>{out, xr.grad(), wr.grad()};
    };
    const std::vector<Tensor> whole = run();
    EXPECT_TRUE(all_close(whole[0], reference_conv2d(x, w, bias, c->params()), 1e-11, 1e-11)) << name;
    const int64_t row_elements = c->kh * c->kw * c->cin * ((c->w + 2 * c->padding - c->kw) / c->stride + 1);
    for (int64_t rows : {1, 2}) {
      ChunkElementsScope scope(rows * row_elements);
      const std::vector<Tensor> chunked = run();
      for (size_t k = 0; k < chunked.size(); ++k)
        EXPECT_TRUE(all_close(chunked[k], whole[k], 1e-12, 1e-12)) << name << " rows " << rows << " result " << k;
    }
    ChunkElementsScope scope(row_elements);
    Tensor xg = x.clone().set_requires_grad(true), wg = w.clone().set_requires_grad(true);
    EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return ops::conv2d(in[0], in[1], bias, c->params()); },
                          {xg, wg}))
        << name;
  }
}

TEST(Conv2d, NonContiguousInput) {
  // An NCHW tensor viewed as NHWC: same result as its contiguous copy, and the gradient routes back through the view.
  const ConvCase& c = conv_cases()[1];
  const Tensor nchw = random_tensor({c.n, c.cin, c.h, c.w}, 5000);
  const Tensor x = nchw.permute({0, 2, 3, 1});
  ASSERT_FALSE(x.is_contiguous());
  const Tensor w = random_tensor(c.w_shape(), 5001), bias = random_tensor({c.cout}, 5002);
  EXPECT_TRUE(all_close(ops::conv2d(x, w, bias, c.params()), reference_conv2d(x, w, bias, c.params()), 1e-11, 1e-11));
  Tensor leaf = nchw.clone().set_requires_grad(true);
  auto conv_of_nchw = [&](const std::vector<Tensor>& in) {
    return ops::conv2d(ops::permute(in[0], {0, 2, 3, 1}), w, bias, c.params());
  };
  EXPECT_TRUE(gradcheck(conv_of_nchw, {leaf}));
}

TEST(Conv2d, ReducedPrecisionCloseToF32) {
  const std::vector<ConvCase> cases = {
      {"3x3", 2, 8, 8, 16, 12, 3, 3, 1, 1, 1, true},
      {"depthwise 3x3", 2, 8, 8, 16, 16, 3, 3, 1, 1, 16, true},
      {"pointwise", 2, 8, 8, 16, 12, 1, 1, 1, 0, 1, true},
      {"grouped stride 2", 2, 8, 8, 16, 12, 3, 3, 2, 1, 4, false},
  };
  uint64_t seed = 6000;
  for (DType dtype : {DType::bf16, DType::f16})
    for (const ConvCase& c : cases) {
      Tensor x = random_tensor(c.x_shape(), ++seed, dtype).set_requires_grad(true);
      Tensor w = random_tensor(c.w_shape(), ++seed, dtype, 0.2).set_requires_grad(true);
      Tensor bias = c.bias ? random_tensor({c.cout}, ++seed, dtype).set_requires_grad(true) : Tensor();
      // f32 copies of the same (representable) values: only result rounding differs.
      Tensor x32 = x.detach().to(DType::f32).set_requires_grad(true);
      Tensor w32 = w.detach().to(DType::f32).set_requires_grad(true);
      Tensor b32 = c.bias ? bias.detach().to(DType::f32).set_requires_grad(true) : Tensor();
      const Tensor out = ops::conv2d(x, w, bias, c.params()), out32 = ops::conv2d(x32, w32, b32, c.params());
      EXPECT_EQ(out.dtype(), dtype);
      EXPECT_TRUE(all_close(out, out32, 1e-2, 1e-2)) << c.name << " " << dtype;
      const Tensor g = random_tensor(out.shape(), ++seed, dtype);
      autograd::backward(out, g);
      autograd::backward(out32, g.to(DType::f32));
      EXPECT_EQ(x.grad().dtype(), dtype);
      EXPECT_TRUE(all_close(x.grad(), x32.grad(), 1e-2, 1e-2)) << c.name << " " << dtype;
      EXPECT_TRUE(all_close(w.grad(), w32.grad(), 5e-2, 1e-2)) << c.name << " " << dtype;  // sums of ~128 terms
      if (c.bias) {
        EXPECT_TRUE(all_close(bias.grad(), b32.grad(), 5e-2, 1e-2)) << c.name << " " << dtype;
      }
    }
}

TEST(Conv2d, ErrorsNameTheShapes) {
  const Tensor x = random_tensor({2, 5, 5, 4}, 1);
  expect_error([&] { ops::conv2d(x, random_tensor({3, 3, 3, 3}, 2)); }, {"[2, 5, 5, 4]", "[3, 3, 3, 3]"});
  expect_error([&] { ops::conv2d(x, random_tensor({6, 1, 3, 3}, 2), Tensor(), {1, 1, 3}); },
                      {"groups 3", "[2, 5, 5, 4]", "[6, 1, 3, 3]"});
  expect_error([&] { ops::conv2d(x, random_tensor({5, 2, 3, 3}, 2), Tensor(), {1, 1, 2}); },
                      {"groups 2", "[5, 2, 3, 3]"});  // output channels not divisible
  expect_error([&] { ops::conv2d(random_tensor({5, 5, 4}, 3), random_tensor({3, 4, 3, 3}, 2)); },
                      {"NHWC", "[5, 5, 4]"});
  expect_error([&] { ops::conv2d(x, random_tensor({3, 36}, 2)); }, {"weight", "[3, 36]"});
  expect_error([&] { ops::conv2d(x, random_tensor({3, 4, 3, 3}, 2), random_tensor({4}, 3)); },
                      {"bias", "[4]", "[3, 4, 3, 3]"});
  expect_error([&] { ops::conv2d(x, random_tensor({3, 4, 3, 3}, 2, DType::f32)); }, {"f64", "f32"});
  expect_error([&] { ops::conv2d(x, random_tensor({3, 4, 7, 7}, 2)); }, {"larger", "[2, 5, 5, 4]"});
  expect_error([&] { ops::conv2d(x, random_tensor({3, 4, 3, 3}, 2), Tensor(), {0, 1, 1}); }, {"stride 0"});
}

}  // namespace
}  // namespace dcae
