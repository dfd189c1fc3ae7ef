// Test helpers: random inputs, closeness with NaN never passing, and the one gradcheck utility (central
// differences in float64 against autograd).
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "core/tensor/philox.h"
#include "core/tensor/tensor.h"

namespace dcae::testing {

// Standard-normal tensor from its own seed (never zeros), in `dtype`.
Tensor random_tensor(const Shape& shape, uint64_t seed, DType dtype = DType::f64, double scale = 1.0);
// Uniform in [low, high).
Tensor random_uniform(const Shape& shape, uint64_t seed, double low, double high, DType dtype = DType::f64);

// Runs `fn` expecting a dcae::Error whose message contains every one of `parts` (records a failure otherwise).
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts);
inline void expect_error(const std::function<void()>& fn, const char* part) { expect_error(fn, std::vector<std::string>{part}); }
// The message of the dcae::Error `fn` throws, or "<no error thrown>".
std::string error_of(const std::function<void()>& fn);

// |actual - expected| <= atol + rtol * |expected| everywhere, shapes equal, and no NaN in either.
::testing::AssertionResult all_close(const Tensor& actual, const Tensor& expected, double atol, double rtol);

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-5;
};

// f maps inputs to any tensor. The check projects f's output onto a fixed random direction, so every output
// element is exercised in one backward, then compares each input's gradient with central differences. Inputs
// must be f64 and have requires_grad set where a gradient is wanted.
::testing::AssertionResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                     const std::vector<Tensor>& inputs, GradcheckOptions options = {});

// For models too big for element-wise finite differences: compares the analytic directional derivative
// <grad f, v> with (f(x + eps v) - f(x - eps v)) / 2 eps along one random direction v over all inputs at once.
::testing::AssertionResult directional_gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                                 const std::vector<Tensor>& inputs, double eps = 1e-6,
                                                 double rtol = 1e-5);

}  // namespace dcae::testing
