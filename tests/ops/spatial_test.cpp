#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "core/autograd/engine.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/spatial.h"
#include "ops/view.h"
#include "tests/testing/check.h"

namespace dcae {
namespace {

using testing::expect_error;

using testing::all_close;
using testing::gradcheck;
using testing::random_tensor;

// Flat offset of [n, h, w, c] in a contiguous NHWC tensor of shape s.
int64_t at(const Shape& s, int64_t n, int64_t h, int64_t w, int64_t c) {
  return ((n * s[1] + h) * s[2] + w) * s[3] + c;
}

// Builds a tensor of `shape` in `dtype` whose element [n, h, w, c] is value(n, h, w, c).
Tensor nhwc_from(const Shape& shape, DType dtype, const std::function<double(int64_t, int64_t, int64_t, int64_t)>& value) {
  std::vector<double> out(shape_numel(shape));
  for (int64_t n = 0; n < shape[0]; ++n)
    for (int64_t h = 0; h < shape[1]; ++h)
      for (int64_t w = 0; w < shape[2]; ++w)
        for (int64_t c = 0; c < shape[3]; ++c) out[at(shape, n, h, w, c)] = value(n, h, w, c);
  return from_doubles(out, shape, dtype);
}

Tensor trainable(const Shape& shape, uint64_t seed) { return random_tensor(shape, seed).set_requires_grad(true); }

const DType kFullDtypes[] = {DType::f64, DType::f32};

// ---- pixel (un)shuffle -------------------------------------------------------------------------------------------

TEST(SpatialPixelShuffle, UnshuffleMatchesReferenceLoop) {
  for (DType dtype : kFullDtypes) {
    for (int64_t r : {2, 3}) {
      const Shape in{2, 6, 12, 3};
      const Tensor x = random_tensor(in, 100 + r, dtype);
      const std::vector<double> xv = x.to_vector<double>();
      const Shape out{2, 6 / r, 12 / r, 3 * r * r};
      // Invert out[n, h, w, c*r*r + i*r + j] = x[n, h*r + i, w*r + j, c].
      const Tensor expected = nhwc_from(out, dtype, [&](int64_t n, int64_t h, int64_t w, int64_t k) {
        const int64_t c = k / (r * r), i = (k % (r * r)) / r, j = k % r;
        return xv[at(in, n, h * r + i, w * r + j, c)];
      });
      EXPECT_TRUE(all_close(ops::pixel_unshuffle(x, r), expected, 0, 0)) << "r=" << r << " " << dtype;
    }
  }
}

TEST(SpatialPixelShuffle, ShuffleMatchesReferenceLoop) {
  for (DType dtype : kFullDtypes) {
    for (int64_t r : {2, 3}) {
      const Shape in{2, 3, 5, 2 * r * r};
      const Tensor x = random_tensor(in, 110 + r, dtype);
      const std::vector<double> xv = x.to_vector<double>();
      const Shape out{2, 3 * r, 5 * r, 2};
      const Tensor expected = nhwc_from(out, dtype, [&](int64_t n, int64_t ho, int64_t wo, int64_t c) {
        const int64_t h = ho / r, i = ho % r, w = wo / r, j = wo % r;
        return xv[at(in, n, h, w, c * r * r + i * r + j)];
      });
      EXPECT_TRUE(all_close(ops::pixel_shuffle(x, r), expected, 0, 0)) << "r=" << r << " " << dtype;
    }
  }
}

TEST(SpatialPixelShuffle, RoundTripsAndNonContiguousInput) {
  const Tensor x = random_tensor({2, 4, 6, 3}, 120);
  EXPECT_TRUE(all_close(ops::pixel_shuffle(ops::pixel_unshuffle(x, 2), 2), x, 0, 0));
  const Tensor y = random_tensor({1, 3, 2, 18}, 121);
  EXPECT_TRUE(all_close(ops::pixel_unshuffle(ops::pixel_shuffle(y, 3), 3), y, 0, 0));
  // An NCHW tensor permuted to NHWC (non-contiguous) gives the same result as its contiguous copy.
  const Tensor nchw = random_tensor({2, 3, 4, 6}, 122);
  const Tensor nhwc = nchw.permute({0, 2, 3, 1});
  ASSERT_FALSE(nhwc.is_contiguous());
  EXPECT_TRUE(all_close(ops::pixel_unshuffle(nhwc, 2), ops::pixel_unshuffle(nhwc.contiguous(), 2), 0, 0));
  EXPECT_TRUE(all_close(ops::pixel_shuffle(ops::permute(random_tensor({1, 8, 2, 3}, 123), {0, 2, 3, 1}), 2),
                        ops::pixel_shuffle(random_tensor({1, 8, 2, 3}, 123).permute({0, 2, 3, 1}).contiguous(), 2),
                        0, 0));
}

TEST(SpatialPixelShuffle, Gradcheck) {
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::pixel_unshuffle(in[0], 2); },
                        {trainable({2, 4, 6, 3}, 130)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::pixel_shuffle(in[0], 2); },
                        {trainable({1, 2, 3, 8}, 131)}));
}

TEST(SpatialPixelShuffle, ReducedPrecisionMatchesF32) {
  const Tensor x = random_tensor({2, 4, 6, 5}, 140, DType::f32);
  for (DType low : {DType::bf16, DType::f16}) {
    const Tensor y = ops::pixel_unshuffle(x.to(low), 2);
    EXPECT_EQ(y.dtype(), low);
    EXPECT_TRUE(all_close(y, ops::pixel_unshuffle(x, 2), 1e-2, 1e-2));
    EXPECT_TRUE(all_close(ops::pixel_shuffle(y, 2), x, 1e-2, 1e-2));
  }
}

TEST(SpatialPixelShuffle, RejectsBadShapes) {
  expect_error([] { ops::pixel_unshuffle(random_tensor({1, 5, 4, 2}, 150), 2); }, "[1, 5, 4, 2]");
  expect_error([] { ops::pixel_unshuffle(random_tensor({1, 4, 3, 2}, 151), 2); }, "[1, 4, 3, 2]");
  expect_error([] { ops::pixel_shuffle(random_tensor({1, 2, 2, 6}, 152), 2); }, "[1, 2, 2, 6]");
  expect_error([] { ops::pixel_shuffle(random_tensor({2, 2, 8}, 153), 2); }, "[2, 2, 8]");
  expect_error([] { ops::pixel_unshuffle(random_tensor({1, 2, 2, 1}, 154), 0); }, "factor");
}

// ---- channel averaging / repeating --------------------------------------------------------------------------------

TEST(SpatialChannel, AverageMatchesReferenceLoop) {
  for (DType dtype : kFullDtypes) {
    const Shape in{2, 3, 5, 12};
    const Tensor x = random_tensor(in, 200, dtype);
    const std::vector<double> xv = x.to_vector<double>();
    for (int64_t out_c : {1, 3, 4, 6, 12}) {
      const int64_t g = 12 / out_c;
      const Tensor expected = nhwc_from({2, 3, 5, out_c}, dtype, [&](int64_t n, int64_t h, int64_t w, int64_t o) {
        double sum = 0;
        for (int64_t k = o * g; k < (o + 1) * g; ++k) sum += xv[at(in, n, h, w, k)];
        return sum / static_cast<double>(g);
      });
      const double tol = dtype == DType::f64 ? 1e-14 : 1e-6;
      EXPECT_TRUE(all_close(ops::channel_average(x, out_c), expected, tol, tol)) << out_c << " " << dtype;
    }
  }
  // Any rank: the last dim holds the channels; non-contiguous input.
  const Tensor m = random_tensor({6, 5}, 201).transpose(0, 1);
  const Tensor manual = ops::mul(ops::add(m.narrow(1, 0, 1).contiguous(), m.narrow(1, 1, 1).contiguous()), 0.5);
  EXPECT_TRUE(all_close(ops::channel_average(m, 3).narrow(1, 0, 1), manual, 1e-14, 1e-14));
}

TEST(SpatialChannel, RepeatInterleaveMatchesReferenceLoop) {
  for (DType dtype : kFullDtypes) {
    const Shape in{2, 3, 5, 3};
    const Tensor x = random_tensor(in, 210, dtype);
    const std::vector<double> xv = x.to_vector<double>();
    for (int64_t out_c : {3, 6, 12}) {
      const int64_t repeats = out_c / 3;
      const Tensor expected = nhwc_from({2, 3, 5, out_c}, dtype, [&](int64_t n, int64_t h, int64_t w, int64_t m) {
        return xv[at(in, n, h, w, m / repeats)];
      });
      EXPECT_TRUE(all_close(ops::channel_repeat_interleave(x, out_c), expected, 0, 0)) << out_c << " " << dtype;
    }
  }
}

TEST(SpatialChannel, Gradcheck) {
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::channel_average(in[0], 2); },
                        {trainable({2, 2, 3, 6}, 220)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::channel_repeat_interleave(in[0], 9); },
                        {trainable({2, 2, 3, 3}, 221)}));
}

TEST(SpatialChannel, Bf16MatchesF32) {
  const Tensor x = random_tensor({2, 4, 4, 16}, 230, DType::f32);
  for (DType low : {DType::bf16, DType::f16}) {
    const Tensor avg = ops::channel_average(x.to(low), 4);
    EXPECT_EQ(avg.dtype(), low);
    EXPECT_TRUE(all_close(avg, ops::channel_average(x, 4), 1e-2, 1e-2));
    EXPECT_TRUE(all_close(ops::channel_repeat_interleave(x.to(low), 32), ops::channel_repeat_interleave(x, 32),
                          1e-2, 1e-2));
  }
  // The backward runs in bf16 too and agrees with f32.
  const Tensor w = random_tensor({2, 4, 4, 4}, 231, DType::f32);
  Tensor grads[2];
  for (int k = 0; k < 2; ++k) {
    Tensor leaf = (k == 0 ? x : x.to(DType::bf16)).clone().set_requires_grad(true);
    autograd::backward(ops::sum(ops::mul(ops::channel_average(leaf, 4), w.to(leaf.dtype()))));
    grads[k] = leaf.grad();
  }
  EXPECT_EQ(grads[1].dtype(), DType::bf16);
  EXPECT_TRUE(all_close(grads[1], grads[0], 1e-2, 1e-2));
}

TEST(SpatialChannel, RejectsBadChannelCounts) {
  expect_error([] { ops::channel_average(random_tensor({1, 2, 2, 6}, 240), 4); }, "[1, 2, 2, 6]");
  expect_error([] { ops::channel_repeat_interleave(random_tensor({1, 2, 2, 4}, 241), 6); }, "[1, 2, 2, 4]");
  expect_error([] { ops::channel_average(random_tensor({1, 2, 2, 4}, 242), 0); }, "out_channels");
  expect_error([] { ops::channel_average(full({2, 4}, 1.0, DType::i64), 2); }, "floating");
}

// ---- DC-AE shortcuts (spec section 3) ----------------------------------------------------------------------------

TEST(SpatialShortcut, DownCTo2CIsHorizontalAverageThenVerticalSpaceToChannel) {
  for (DType dtype : kFullDtypes) {
    const int64_t N = 2, H = 4, W = 6, C = 3;
    const Tensor x = random_tensor({N, H, W, C}, 300, dtype);
    const std::vector<double> xv = x.to_vector<double>();
    // 1x2 horizontal average pool: [N, H, W/2, C].
    const Shape pooled_shape{N, H, W / 2, C};
    const Tensor pooled = nhwc_from(pooled_shape, DType::f64, [&](int64_t n, int64_t h, int64_t w, int64_t c) {
      return 0.5 * (xv[at({N, H, W, C}, n, h, 2 * w, c)] + xv[at({N, H, W, C}, n, h, 2 * w + 1, c)]);
    });
    const std::vector<double> pv = pooled.to_vector<double>();
    // 2x1 vertical space-to-channel: out[n, h, w, 2c + i] = pooled[n, 2h + i, w, c].
    const Tensor expected = nhwc_from({N, H / 2, W / 2, 2 * C}, dtype, [&](int64_t n, int64_t h, int64_t w, int64_t k) {
      return pv[at(pooled_shape, n, 2 * h + k % 2, w, k / 2)];
    });
    const double tol = dtype == DType::f64 ? 1e-14 : 1e-6;
    EXPECT_TRUE(all_close(ops::downsample_shortcut(x, 2 * C, 2), expected, tol, tol)) << dtype;
  }
}

TEST(SpatialShortcut, DownCToCIs2x2AveragePool) {
  const Shape in{2, 4, 6, 5};
  const Tensor x = random_tensor(in, 310);
  const std::vector<double> xv = x.to_vector<double>();
  const Tensor expected = nhwc_from({2, 2, 3, 5}, DType::f64, [&](int64_t n, int64_t h, int64_t w, int64_t c) {
    return 0.25 * (xv[at(in, n, 2 * h, 2 * w, c)] + xv[at(in, n, 2 * h, 2 * w + 1, c)] +
                   xv[at(in, n, 2 * h + 1, 2 * w, c)] + xv[at(in, n, 2 * h + 1, 2 * w + 1, c)]);
  });
  EXPECT_TRUE(all_close(ops::downsample_shortcut(x, 5, 2), expected, 1e-14, 1e-14));
  // C -> 4C keeps every pixel (group 1): plain space-to-channel. Factor 1 is the latent channel-group mean.
  EXPECT_TRUE(all_close(ops::downsample_shortcut(x, 20, 2), ops::pixel_unshuffle(x, 2), 0, 0));
  EXPECT_TRUE(all_close(ops::downsample_shortcut(random_tensor({1, 2, 2, 8}, 311), 2, 1),
                        ops::channel_average(random_tensor({1, 2, 2, 8}, 311), 2), 0, 0));
}

TEST(SpatialShortcut, UpCToCIsNearest2x) {
  const Shape in{2, 3, 4, 5};
  const Tensor x = random_tensor(in, 320, DType::f32);
  const std::vector<double> xv = x.to_vector<double>();
  const Tensor expected = nhwc_from({2, 6, 8, 5}, DType::f32, [&](int64_t n, int64_t h, int64_t w, int64_t c) {
    return xv[at(in, n, h / 2, w / 2, c)];
  });
  EXPECT_TRUE(all_close(ops::upsample_shortcut(x, 5, 2), expected, 0, 0));
  EXPECT_TRUE(all_close(ops::upsample_nearest2x(x), expected, 0, 0));
}

TEST(SpatialShortcut, Up2CToCMatchesSpecFormula) {
  for (DType dtype : kFullDtypes) {
    const Shape in{2, 3, 4, 6};  // 2C = 6 -> C = 3
    const Tensor x = random_tensor(in, 330, dtype);
    const std::vector<double> xv = x.to_vector<double>();
    // out[o, 2h + i, 2w + j] = in[2o + i, h, w].
    const Tensor expected = nhwc_from({2, 6, 8, 3}, dtype, [&](int64_t n, int64_t ho, int64_t wo, int64_t o) {
      return xv[at(in, n, ho / 2, wo / 2, 2 * o + ho % 2)];
    });
    EXPECT_TRUE(all_close(ops::upsample_shortcut(x, 3, 2), expected, 0, 0)) << dtype;
  }
  // Factor 1 (decoder project_in): feature channel k = latent channel k / (C / L).
  const Tensor z = random_tensor({1, 2, 3, 4}, 331);
  const std::vector<double> zv = z.to_vector<double>();
  const Tensor expected = nhwc_from({1, 2, 3, 12}, DType::f64, [&](int64_t n, int64_t h, int64_t w, int64_t k) {
    return zv[at({1, 2, 3, 4}, n, h, w, k / 3)];
  });
  EXPECT_TRUE(all_close(ops::upsample_shortcut(z, 12, 1), expected, 0, 0));
}

TEST(SpatialShortcut, GradcheckAndBf16) {
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::downsample_shortcut(in[0], 4, 2); },
                        {trainable({1, 4, 6, 2}, 340)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::upsample_shortcut(in[0], 2, 2); },
                        {trainable({1, 2, 3, 4}, 341)}));
  const Tensor x = random_tensor({2, 8, 8, 6}, 342, DType::f32);
  EXPECT_TRUE(all_close(ops::downsample_shortcut(x.to(DType::bf16), 12, 2), ops::downsample_shortcut(x, 12, 2),
                        1e-2, 1e-2));
  EXPECT_TRUE(all_close(ops::upsample_shortcut(x.to(DType::bf16), 3, 2), ops::upsample_shortcut(x, 3, 2), 1e-2, 1e-2));
}

TEST(SpatialShortcut, RejectsBadConfigurations) {
  expect_error([] { ops::downsample_shortcut(random_tensor({1, 4, 4, 3}, 350), 5, 2); }, "[1, 4, 4, 3]");
  expect_error([] { ops::downsample_shortcut(random_tensor({1, 3, 4, 2}, 351), 4, 2); }, "[1, 3, 4, 2]");
  expect_error([] { ops::upsample_shortcut(random_tensor({1, 2, 2, 3}, 352), 1, 1); }, "[1, 2, 2, 3]");
  expect_error([] { ops::upsample_shortcut(random_tensor({2, 2, 8}, 353), 2, 2); }, "[2, 2, 8]");
}

// ---- nearest upsampling ------------------------------------------------------------------------------------------

TEST(SpatialUpsample, MatchesReferenceLoop) {
  for (DType dtype : kFullDtypes) {
    const Shape in{2, 3, 5, 3};
    const Tensor x = random_tensor(in, 400, dtype);
    const std::vector<double> xv = x.to_vector<double>();
    for (int64_t s : {2, 3}) {
      const Tensor expected = nhwc_from({2, 3 * s, 5 * s, 3}, dtype, [&](int64_t n, int64_t h, int64_t w, int64_t c) {
        return xv[at(in, n, h / s, w / s, c)];
      });
      EXPECT_TRUE(all_close(ops::upsample_nearest(x, s), expected, 0, 0)) << s << " " << dtype;
    }
  }
  const Tensor strided = random_tensor({2, 5, 6, 3}, 401).slice(2, 0, 6, 2);  // W stride 2
  EXPECT_TRUE(all_close(ops::upsample_nearest2x(strided), ops::upsample_nearest2x(strided.contiguous()), 0, 0));
}

TEST(SpatialUpsample, BackwardIsBlockSum) {
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::upsample_nearest2x(in[0]); },
                        {trainable({2, 2, 3, 2}, 410)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return ops::upsample_nearest(in[0], 3); },
                        {trainable({1, 2, 2, 3}, 411)}));
  // Explicit: the gradient of sum(up(x) * g) is the 2x2 block sum of g; in f32 and bf16.
  const Shape gs{2, 6, 4, 3};
  const Tensor g = random_tensor(gs, 412, DType::f32);
  const std::vector<double> gv = g.to_vector<double>();
  const Tensor expected = nhwc_from({2, 3, 2, 3}, DType::f32, [&](int64_t n, int64_t h, int64_t w, int64_t c) {
    return gv[at(gs, n, 2 * h, 2 * w, c)] + gv[at(gs, n, 2 * h, 2 * w + 1, c)] + gv[at(gs, n, 2 * h + 1, 2 * w, c)] +
           gv[at(gs, n, 2 * h + 1, 2 * w + 1, c)];
  });
  for (DType dtype : {DType::f32, DType::bf16}) {
    Tensor x = random_tensor({2, 3, 2, 3}, 413, dtype).set_requires_grad(true);
    autograd::backward(ops::upsample_nearest2x(x), g.to(dtype));
    const double tol = dtype == DType::f32 ? 1e-6 : 1e-2;
    EXPECT_TRUE(all_close(x.grad(), expected, tol, tol)) << dtype;
  }
}

TEST(SpatialUpsample, RejectsBadInput) {
  expect_error([] { ops::upsample_nearest2x(random_tensor({3, 4, 5}, 420)); }, "[3, 4, 5]");
  expect_error([] { ops::upsample_nearest(random_tensor({1, 2, 2, 1}, 421), 0); }, "factor");
}

// ---- larger inputs: the kernels split rows across threads ---------------------------------------------------------

TEST(SpatialThreaded, LargeInputsMatchReferenceLoops) {
  const Shape in{2, 32, 48, 16};
  const Tensor x = random_tensor(in, 600, DType::f32);
  const std::vector<double> xv = x.to_vector<double>();
  const Tensor unshuffled = nhwc_from({2, 16, 24, 64}, DType::f32, [&](int64_t n, int64_t h, int64_t w, int64_t k) {
    return xv[at(in, n, 2 * h + (k % 4) / 2, 2 * w + k % 2, k / 4)];
  });
  EXPECT_TRUE(all_close(ops::pixel_unshuffle(x, 2), unshuffled, 0, 0));
  EXPECT_TRUE(all_close(ops::pixel_shuffle(unshuffled, 2), x, 0, 0));
  const Tensor pooled = nhwc_from({2, 16, 24, 16}, DType::f32, [&](int64_t n, int64_t h, int64_t w, int64_t c) {
    return 0.25 * (xv[at(in, n, 2 * h, 2 * w, c)] + xv[at(in, n, 2 * h, 2 * w + 1, c)] +
                   xv[at(in, n, 2 * h + 1, 2 * w, c)] + xv[at(in, n, 2 * h + 1, 2 * w + 1, c)]);
  });
  EXPECT_TRUE(all_close(ops::downsample_shortcut(x, 16, 2), pooled, 1e-6, 1e-6));
  const Tensor up = nhwc_from({2, 64, 96, 16}, DType::f32, [&](int64_t n, int64_t h, int64_t w, int64_t c) {
    return xv[at(in, n, h / 2, w / 2, c)];
  });
  EXPECT_TRUE(all_close(ops::upsample_nearest2x(x), up, 0, 0));
  const Tensor padded = nhwc_from({2, 35, 47, 16}, DType::f32, [&](int64_t n, int64_t h, int64_t w, int64_t c) {
    const int64_t hi = h - 2, wi = w + 1;
    return hi >= 0 && hi < 32 && wi < 48 ? xv[at(in, n, hi, wi, c)] : 2.0;
  });
  EXPECT_TRUE(all_close(ops::pad(x, {2, 1, -1, 0}, 2.0), padded, 0, 0));
}

// ---- padding -----------------------------------------------------------------------------------------------------

TEST(SpatialPad, MatchesReferenceLoop) {
  const Shape in{2, 4, 5, 3};
  const ops::Padding2d cases[] = {{1, 2, 3, 0}, {0, 0, 0, 0}, {-1, 2, 1, -2}, {2, -3, -4, 1}, {0, 0, 2, 2}};
  for (DType dtype : kFullDtypes) {
    const Tensor x = random_tensor(in, 500, dtype);
    const std::vector<double> xv = x.to_vector<double>();
    for (const ops::Padding2d& p : cases) {
      const Shape out{2, 4 + p.top + p.bottom, 5 + p.left + p.right, 3};
      const Tensor expected = nhwc_from(out, dtype, [&](int64_t n, int64_t h, int64_t w, int64_t c) {
        const int64_t hi = h - p.top, wi = w - p.left;
        return hi >= 0 && hi < 4 && wi >= 0 && wi < 5 ? xv[at(in, n, hi, wi, c)] : 0.75;
      });
      EXPECT_TRUE(all_close(ops::pad(x, p, 0.75), expected, 0, 0))
          << p.top << " " << p.bottom << " " << p.left << " " << p.right << " " << dtype;
    }
  }
  const Tensor nchw = random_tensor({1, 3, 2, 4}, 501);
  EXPECT_TRUE(all_close(ops::pad(nchw.permute({0, 2, 3, 1}), {1, 1, 1, 1}),
                        ops::pad(nchw.permute({0, 2, 3, 1}).contiguous(), {1, 1, 1, 1}), 0, 0));
}

TEST(SpatialPad, GradcheckIncludingCrop) {
  for (ops::Padding2d p : {ops::Padding2d{1, 2, 0, 1}, ops::Padding2d{-1, 1, 2, -2}}) {
    EXPECT_TRUE(gradcheck([p](const std::vector<Tensor>& in) { return ops::pad(in[0], p, 0.5); },
                          {trainable({2, 3, 4, 2}, 510)}));
  }
}

TEST(SpatialPad, Bf16MatchesF32) {
  const Tensor x = random_tensor({2, 3, 4, 5}, 520, DType::f32);
  const Tensor low = ops::pad(x.to(DType::bf16), {2, 1, -1, 3}, -1.5);
  EXPECT_EQ(low.dtype(), DType::bf16);
  EXPECT_TRUE(all_close(low, ops::pad(x, {2, 1, -1, 3}, -1.5), 1e-2, 1e-2));
}

TEST(SpatialPad, RejectsBadInput) {
  expect_error([] { ops::pad(random_tensor({1, 3, 4, 2}, 530), {-2, -2, 0, 0}); }, "[1, 3, 4, 2]");
  expect_error([] { ops::pad(random_tensor({1, 3, 4, 2}, 531), {0, 0, 1, -5}); }, "[1, 3, 4, 2]");
  expect_error([] { ops::pad(random_tensor({3, 4, 2}, 532), {1, 1, 1, 1}); }, "[3, 4, 2]");
}

}  // namespace
}  // namespace dcae
