#include "tests/testing/check.h"

#include <cmath>
#include <sstream>

#include "core/autograd/engine.h"
#include "core/autograd/grad_mode.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"

namespace dcae::testing {

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected dcae::Error";
  } catch (const Error& e) {
    for (const std::string& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << "'" << part << "' not in: " << e.what();
  }
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error thrown>";
}

Tensor random_tensor(const Shape& shape, uint64_t seed, DType dtype, double scale) {
  Generator gen(seed);
  Tensor t = empty(shape, DType::f64);
  normal_(t, 0.0, scale, gen);
  return t.to(dtype);
}

Tensor random_uniform(const Shape& shape, uint64_t seed, double low, double high, DType dtype) {
  Generator gen(seed);
  Tensor t = empty(shape, DType::f64);
  uniform_(t, low, high, gen);
  return t.to(dtype);
}

::testing::AssertionResult all_close(const Tensor& actual, const Tensor& expected, double atol, double rtol) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(actual.shape()) << " != expected "
                                         << shape_str(expected.shape());
  const std::vector<double> a = actual.to_vector<double>(), e = expected.to_vector<double>();
  double worst = 0.0;
  int64_t worst_at = -1;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(e[i]))
      return ::testing::AssertionFailure() << "NaN at flat index " << i << " (actual " << a[i] << ", expected " << e[i]
                                           << ")";
    const double excess = std::abs(a[i] - e[i]) - (atol + rtol * std::abs(e[i]));
    if (excess > worst) {
      worst = excess;
      worst_at = static_cast<int64_t>(i);
    }
  }
  if (worst_at >= 0)
    return ::testing::AssertionFailure() << "mismatch at flat index " << worst_at << ": actual " << a[worst_at]
                                         << ", expected " << e[worst_at] << " (atol " << atol << ", rtol " << rtol
                                         << ", " << a.size() << " elements)";
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                     const std::vector<Tensor>& inputs, GradcheckOptions options) {
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad() && t.dtype() != DType::f64)
      return ::testing::AssertionFailure() << "gradcheck inputs must be f64, got " << t.str();

  const Tensor probe_out = [&] {
    autograd::NoGradGuard no_grad;
    return f(inputs);
  }();
  const Tensor direction = random_tensor(probe_out.shape(), 977, DType::f64);
  auto objective = [&](const std::vector<Tensor>& xs) { return ops::sum(ops::mul(f(xs), direction)); };

  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) t.set_grad(Tensor());
  autograd::backward(objective(inputs));

  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    if (!x.grad().defined()) return ::testing::AssertionFailure() << "input " << k << " received no gradient";
    const std::vector<double> analytic = x.grad().to_vector<double>();
    Tensor flat = x.detach();  // writes go through to x's storage
    if (!flat.is_contiguous()) return ::testing::AssertionFailure() << "gradcheck inputs must be contiguous";
    double* data = flat.data<double>();
    autograd::NoGradGuard no_grad;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double saved = data[i];
      data[i] = saved + options.eps;
      const double plus = objective(inputs).item<double>();
      data[i] = saved - options.eps;
      const double minus = objective(inputs).item<double>();
      data[i] = saved;
      const double numeric = (plus - minus) / (2 * options.eps);
      if (std::isnan(analytic[i]) || std::abs(analytic[i] - numeric) > options.atol + options.rtol * std::abs(numeric))
        return ::testing::AssertionFailure() << "input " << k << " (" << x.str() << ") element " << i
                                             << ": analytic gradient " << analytic[i] << ", numeric " << numeric;
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult directional_gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                                 const std::vector<Tensor>& inputs, double eps, double rtol) {
  const Tensor probe_out = [&] {
    autograd::NoGradGuard no_grad;
    return f(inputs);
  }();
  const Tensor out_direction = random_tensor(probe_out.shape(), 991, DType::f64);
  auto objective = [&] { return ops::sum(ops::mul(f(inputs), out_direction)); };
  std::vector<Tensor> directions;
  for (size_t k = 0; k < inputs.size(); ++k) {
    if (inputs[k].dtype() != DType::f64 || !inputs[k].is_contiguous())
      return ::testing::AssertionFailure() << "directional_gradcheck inputs must be contiguous f64";
    inputs[k].set_grad(Tensor());
    directions.push_back(random_tensor(inputs[k].shape(), 1000 + k, DType::f64));
  }
  autograd::backward(objective());
  double analytic = 0;
  for (size_t k = 0; k < inputs.size(); ++k) {
    if (!inputs[k].grad().defined()) return ::testing::AssertionFailure() << "input " << k << " received no gradient";
    analytic += ops::sum(ops::mul(inputs[k].grad(), directions[k])).item<double>();
  }
  autograd::NoGradGuard no_grad;
  auto shifted = [&](double step) {
    for (size_t k = 0; k < inputs.size(); ++k) Tensor(inputs[k]).add_(directions[k], step);
    const double value = objective().item<double>();
    for (size_t k = 0; k < inputs.size(); ++k) Tensor(inputs[k]).add_(directions[k], -step);
    return value;
  };
  const double numeric = (shifted(eps) - shifted(-eps)) / (2 * eps);
  if (std::isnan(analytic) || std::abs(analytic - numeric) > rtol * std::max(1.0, std::abs(numeric)))
    return ::testing::AssertionFailure() << "directional derivative: analytic " << analytic << ", numeric " << numeric;
  return ::testing::AssertionSuccess();
}

}  // namespace dcae::testing
