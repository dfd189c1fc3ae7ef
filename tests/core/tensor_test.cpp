#include <gtest/gtest.h>

#include <cmath>

#include "core/tensor/init.h"
#include "core/tensor/philox.h"
#include "core/tensor/tensor.h"
#include "tests/testing/check.h"

namespace dcae {
namespace {

TEST(DType, Bf16RoundsToNearestEvenAndKeepsNaN) {
  EXPECT_EQ(static_cast<float>(bf16(1.0f)), 1.0f);
  // 1 + 2^-8 is exactly halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
  EXPECT_EQ(static_cast<float>(bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(static_cast<float>(bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_TRUE(std::isnan(static_cast<float>(bf16(NAN))));
  EXPECT_TRUE(std::isinf(static_cast<float>(bf16(INFINITY))));
}

TEST(DType, F16CoversNormalsSubnormalsAndOverflow) {
  EXPECT_EQ(static_cast<float>(f16(1.5f)), 1.5f);
  EXPECT_EQ(static_cast<float>(f16(65504.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(static_cast<float>(f16(70000.0f))));
  EXPECT_EQ(static_cast<float>(f16(5.9604644775390625e-8f)), 5.9604644775390625e-8f);  // smallest subnormal
  EXPECT_EQ(static_cast<float>(f16(1e-9f)), 0.0f);
  EXPECT_EQ(static_cast<float>(f16(-2.0f)), -2.0f);
  EXPECT_TRUE(std::isnan(static_cast<float>(f16(NAN))));
  // Every half value round-trips through float.
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    f16 h;
    h.bits = static_cast<uint16_t>(bits);
    const float f = h;
    if (std::isnan(f)) continue;
    ASSERT_EQ(f16(f).bits, h.bits) << "bits " << bits;
  }
}

TEST(Tensor, ViewsShareStorageAndSeeWrites) {
  Tensor t = arange(24).view({2, 3, 4});
  Tensor p = t.permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_FALSE(p.is_contiguous());
  EXPECT_EQ(p.storage(), t.storage());
  Tensor s = t.narrow(2, 1, 2);
  s.fill_(-1.0);
  const auto v = t.to_vector<float>();
  EXPECT_EQ(v[0], 0.0f);
  EXPECT_EQ(v[1], -1.0f);
  EXPECT_EQ(v[2], -1.0f);
  EXPECT_EQ(v[3], 3.0f);
  EXPECT_EQ(t.slice(1, 0, 3, 2).shape(), (Shape{2, 2, 4}));
  EXPECT_EQ(t.select(0, 1).to_vector<float>()[0], 12.0f);
}

TEST(Tensor, ContiguousCopiesPermutedLayoutInLogicalOrder) {
  Tensor t = arange(6).view({2, 3});
  Tensor c = t.transpose(0, 1).contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_NE(c.storage(), t.storage());
}

TEST(Tensor, ReshapeViewsWhenPossibleAndCopiesOtherwise) {
  Tensor t = arange(12).view({3, 4});
  EXPECT_EQ(t.reshape({2, -1}).storage(), t.storage());
  EXPECT_EQ(t.reshape({2, -1}).shape(), (Shape{2, 6}));
  Tensor tt = t.transpose(0, 1);
  EXPECT_THROW(tt.view({12}), Error);
  EXPECT_EQ(tt.reshape({12}).to_vector<float>()[1], 4.0f);
  // A narrowed view can still be reshaped along the dims it kept contiguous.
  Tensor n = arange(24).view({2, 3, 4}).narrow(0, 1, 1);
  EXPECT_EQ(n.view({3, 4}).to_vector<float>()[0], 12.0f);
}

TEST(Tensor, ExpandBroadcastsWithZeroStrides) {
  Tensor b = from_vector<float>({1, 2, 3}, {3});
  Tensor e = b.expand({2, 3});
  EXPECT_EQ(e.strides(), (Shape{0, 1}));
  EXPECT_EQ(e.contiguous().to_vector<float>(), (std::vector<float>{1, 2, 3, 1, 2, 3}));
  EXPECT_THROW(b.expand({2, 4}), Error);
}

TEST(Tensor, DTypeConversionRoundTrips) {
  Tensor x = testing::random_tensor({5, 7}, 3, DType::f32);
  EXPECT_TRUE(testing::all_close(x.to(DType::bf16).to(DType::f32), x, 0, 1.0 / 128));
  EXPECT_TRUE(testing::all_close(x.to(DType::f16).to(DType::f32), x, 1e-4, 1.0 / 1024));
  EXPECT_TRUE(testing::all_close(x.to(DType::f64).to(DType::f32), x, 0, 0));
  Tensor i = from_vector<float>({1.7f, -2.2f, 0.0f}, {3}).to(DType::i64);
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{1, -2, 0}));
  EXPECT_EQ(from_vector<float>({0.0f, 3.0f}, {2}).to(DType::boolean).to_vector<uint8_t>(),
            (std::vector<uint8_t>{0, 1}));
}

TEST(Tensor, MisuseNamesShapesAndDtypes) {
  Tensor t = zeros({2, 3});
  try {
    t.view({4, 2});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(t.data<double>(), Error);
  EXPECT_THROW(t.permute({0, 0}), Error);
  EXPECT_THROW(t.narrow(1, 2, 2), Error);
  EXPECT_THROW(t.size(2), Error);
  EXPECT_THROW(Tensor().shape(), Error);
  EXPECT_THROW(empty({1}, DType::f32, Device::parse("cuda:99")), Error);
  EXPECT_THROW(Device::parse("gpu"), Error);
}

TEST(Philox, MatchesTheKnownAnswerVectors) {
  // Random123's published known-answer test for philox4x32-10: key 0, counter 0.
  const PhiloxBlock zero = philox4x32_10(0, 0);
  EXPECT_EQ(zero.v[0], 0x6627e8d5u);
  EXPECT_EQ(zero.v[1], 0xe169c58du);
  EXPECT_EQ(zero.v[2], 0xbc57ac4cu);
  EXPECT_EQ(zero.v[3], 0x9b00dbd8u);
}

// Every one of the 2^24 values lies strictly inside (0, 1), and trunc_normal_ (erfinv of 2u - 1) is finite at both
// ends; the top value used to round to exactly 1.0 and give NaN weights.
TEST(Philox, UniformIsStrictlyInsideTheUnitIntervalForEveryBitPattern) {
  float lowest = 1.0f, highest = 0.0f;
  for (uint32_t k = 0; k < (1u << 24); ++k) {
    const float u = philox_uniform(k << 8);
    lowest = std::min(lowest, u), highest = std::max(highest, u);
  }
  EXPECT_GT(lowest, 0.0f);
  EXPECT_LT(highest, 1.0f);
  EXPECT_EQ(philox_uniform(0xFFFFFFFFu), highest);
  // A stream long enough to draw the extreme values: every weight finite and inside the bounds.
  Generator gen(0);
  Tensor t = empty({int64_t{1} << 23}, DType::f32);
  for (int round = 0; round < 4; ++round) {
    trunc_normal_(t, 0.0, 0.02, -2.0, 2.0, gen);
    const std::vector<float> v = t.to_vector<float>();
    for (float x : v) ASSERT_TRUE(std::isfinite(x) && x >= -2.0f && x <= 2.0f) << x << " in round " << round;
  }
}

TEST(Philox, SameSeedSameNumbersAndOffsetsAdvance) {
  Generator a(42), b(42);
  Tensor x = randn({1000}, a), y = randn({1000}, b);
  EXPECT_EQ(x.to_vector<float>(), y.to_vector<float>());
  Tensor z = randn({1000}, a);
  EXPECT_NE(x.to_vector<float>(), z.to_vector<float>());
  EXPECT_EQ(a.offset(), 500u);
  // Moments of 100k normals.
  Generator g(7);
  const auto v = randn({100000}, g, DType::f64).to_vector<double>();
  double mean = 0, sq = 0;
  for (double e : v) mean += e;
  mean /= v.size();
  for (double e : v) sq += (e - mean) * (e - mean);
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(std::sqrt(sq / v.size()), 1.0, 0.02);
}

TEST(Init, TruncNormalStaysInBoundsAndKaimingHasTheRightScale) {
  Generator g(1);
  Tensor t = empty({20000}, DType::f64);
  trunc_normal_(t, 0.0, 1.0, -2.0, 2.0, g);
  double sq = 0;
  for (double e : t.to_vector<double>()) {
    ASSERT_GE(e, -2.0);
    ASSERT_LE(e, 2.0);
    sq += e * e;
  }
  // Variance of a standard normal truncated to [-2, 2] is 0.7737.
  EXPECT_NEAR(sq / 20000, 0.7737, 0.03);
  Tensor w = empty({256, 64, 3, 3}, DType::f64);
  init::kaiming_normal_(w, std::sqrt(2.0), g);
  double wsq = 0;
  for (double e : w.to_vector<double>()) wsq += e * e;
  EXPECT_NEAR(wsq / w.numel(), 2.0 / (64 * 9), 0.05 * 2.0 / (64 * 9));
}

}  // namespace
}  // namespace dcae
