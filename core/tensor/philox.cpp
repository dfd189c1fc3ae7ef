#include "core/tensor/philox.h"

#include <cmath>

#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/random.h"  // GPU tensors draw the same numbers on the device
#endif

namespace dcae {

Generator& default_generator() {
  static Generator gen(0);
  return gen;
}

namespace {

// Fills a contiguous host buffer: value(i) = map(block(i/4), lane i%4, i).
template <typename Map>
void fill_host(Tensor& t, Generator& gen, Map&& map) {
  DCAE_CHECK(t.device().is_cpu(), "random fill of ", t.str(), ": no kernel for this device in this build");
  DCAE_CHECK(is_floating(t.dtype()) || t.dtype() == DType::u8, "random fill needs a float or u8 tensor, got ",
             t.str());
  const int64_t n = t.numel();
  const uint64_t base = gen.reserve(n);
  std::vector<double> values(n);
  for (int64_t block = 0; block < (n + 3) / 4; ++block) {
    const PhiloxBlock bits = philox4x32_10(gen.seed(), base + block);
    for (int lane = 0; lane < 4 && block * 4 + lane < n; ++lane) values[block * 4 + lane] = map(bits, lane);
  }
  Tensor filled = from_doubles(values, t.shape(), t.dtype());
  t.copy_(filled);
}

// Box-Muller on lane pairs (0,1) and (2,3): even lanes take the cosine, odd lanes the sine.
double normal_lane(const PhiloxBlock& bits, int lane) {
  const int pair = lane / 2;
  const double u1 = philox_uniform(bits.v[2 * pair]);
  const double u2 = philox_uniform(bits.v[2 * pair + 1]);
  const double radius = std::sqrt(-2.0 * std::log(u1));
  const double angle = 2.0 * M_PI * u2;
  return lane % 2 == 0 ? radius * std::cos(angle) : radius * std::sin(angle);
}

// Inverse error function: Giles' single-precision polynomial refined by two Newton steps in double.
double erfinv(double y) {
  const double w0 = -std::log((1.0 - y) * (1.0 + y));
  double x;
  if (w0 < 5.0) {
    const double w = w0 - 2.5;
    double p = 2.81022636e-08;
    for (double c : {3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503, -0.00417768164,
                     0.246640727, 1.50140941})
      p = c + p * w;
    x = p * y;
  } else {
    const double w = std::sqrt(w0) - 3.0;
    double p = -0.000200214257;
    for (double c : {0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613, 0.00943887047,
                     1.00167406, 2.83297682})
      p = c + p * w;
    x = p * y;
  }
  for (int i = 0; i < 2; ++i) {
    const double err = std::erf(x) - y;
    x -= err / (2.0 / std::sqrt(M_PI) * std::exp(-x * x));
  }
  return x;
}

}  // namespace

void uniform_(Tensor& t, double low, double high, Generator& gen) {
#ifdef DCAE_WITH_CUDA
  if (t.device().is_cuda()) return cuda::uniform_(t, low, high, gen);
#endif
  fill_host(t, gen, [&](const PhiloxBlock& b, int lane) { return low + (high - low) * philox_uniform(b.v[lane]); });
}

void normal_(Tensor& t, double mean, double std, Generator& gen) {
#ifdef DCAE_WITH_CUDA
  if (t.device().is_cuda()) return cuda::normal_(t, mean, std, gen);
#endif
  fill_host(t, gen, [&](const PhiloxBlock& b, int lane) { return mean + std * normal_lane(b, lane); });
}

void trunc_normal_(Tensor& t, double mean, double std, double low, double high, Generator& gen) {
#ifdef DCAE_WITH_CUDA
  if (t.device().is_cuda()) return cuda::trunc_normal_(t, mean, std, low, high, gen);
#endif
  DCAE_CHECK(low < high && std > 0, "trunc_normal_ needs low < high and std > 0, got [", low, ", ", high, "], std ",
             std);
  const auto cdf = [](double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); };
  const double a = cdf((low - mean) / std), b = cdf((high - mean) / std);
  fill_host(t, gen, [&](const PhiloxBlock& bits, int lane) {
    const double u = a + (b - a) * philox_uniform(bits.v[lane]);
    const double x = mean + std * std::sqrt(2.0) * erfinv(2.0 * u - 1.0);
    return std::clamp(x, low, high);
  });
}

void bernoulli_(Tensor& t, double keep, Generator& gen) {
#ifdef DCAE_WITH_CUDA
  if (t.device().is_cuda()) return cuda::bernoulli_(t, keep, gen);
#endif
  fill_host(t, gen, [&](const PhiloxBlock& b, int lane) { return philox_uniform(b.v[lane]) < keep ? 1.0 : 0.0; });
}

Tensor rand(const Shape& shape, Generator& gen, DType dtype) {
  Tensor t = empty(shape, dtype);
  uniform_(t, 0.0, 1.0, gen);
  return t;
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype) {
  Tensor t = empty(shape, dtype);
  normal_(t, 0.0, 1.0, gen);
  return t;
}

}  // namespace dcae
