#include <gtest/gtest.h>

#include "ops/pool.h"
#include "tests/testing/check.h"

namespace dcae {
namespace {

TEST(MaxPool2d, ForwardMatchesReferenceAndGradchecks) {
  for (auto [kernel, stride] : {std::pair<int64_t, int64_t>{2, 2}, {3, 2}, {2, 1}}) {
    const Tensor x = testing::random_tensor({2, 5, 6, 3}, 31 + kernel + stride);
    const auto v = x.to_vector<double>();
    const int64_t ho = (5 - kernel) / stride + 1, wo = (6 - kernel) / stride + 1;
    std::vector<double> expected;
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t oy = 0; oy < ho; ++oy)
        for (int64_t ox = 0; ox < wo; ++ox)
          for (int64_t c = 0; c < 3; ++c) {
            double best = -1e300;
            for (int64_t ky = 0; ky < kernel; ++ky)
              for (int64_t kx = 0; kx < kernel; ++kx)
                best = std::max(best, v[((b * 5 + oy * stride + ky) * 6 + ox * stride + kx) * 3 + c]);
            expected.push_back(best);
          }
    EXPECT_TRUE(testing::all_close(ops::max_pool2d(x, kernel, stride),
                                   from_doubles(expected, {2, ho, wo, 3}, DType::f64), 0, 0));
    Tensor xg = x.clone().set_requires_grad(true);
    EXPECT_TRUE(testing::gradcheck([&](const std::vector<Tensor>& in) { return ops::max_pool2d(in[0], kernel, stride); },
                                   {xg}));
    const Tensor x32 = x.to(DType::f32);
    EXPECT_TRUE(testing::all_close(ops::max_pool2d(x32.to(DType::bf16), kernel, stride).to(DType::f32),
                                   ops::max_pool2d(x32, kernel, stride), 1e-2, 1e-2));
  }
  EXPECT_THROW(ops::max_pool2d(zeros({1, 1, 4, 2}), 2, 2), Error);
  EXPECT_THROW(ops::max_pool2d(zeros({4, 4}), 2, 2), Error);
}

}  // namespace
}  // namespace dcae
