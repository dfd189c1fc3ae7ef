#include "core/tensor/cuda/random.h"

#include <cmath>

#include "core/tensor/cuda/kernel_util.cuh"

namespace dcae::cuda {

namespace {

enum class Distribution { uniform, normal, trunc_normal, bernoulli };

// uniform: a = low, b = high - low. normal: a = mean, b = std. bernoulli: a = keep.
// trunc_normal: a, b = the normal CDF at low and high (standardised), c = mean, d = std, lo/hi = clamp range.
struct DrawParams {
  double a = 0, b = 0, c = 0, d = 0, lo = 0, hi = 0;
};

// The CPU's erfinv (Giles' polynomial, two Newton steps), with every rounding explicit so no FMA creeps in.
__device__ double erfinv_device(double y) {
  const double w0 = -log(__dmul_rn(__dsub_rn(1.0, y), __dadd_rn(1.0, y)));
  double x;
  if (w0 < 5.0) {
    const double w = __dsub_rn(w0, 2.5);
    const double c[] = {3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
                        -0.00417768164, 0.246640727, 1.50140941};
    double p = 2.81022636e-08;
    for (double k : c) p = __dadd_rn(k, __dmul_rn(p, w));
    x = __dmul_rn(p, y);
  } else {
    const double w = __dsub_rn(sqrt(w0), 3.0);
    const double c[] = {0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613, 0.00943887047,
                        1.00167406, 2.83297682};
    double p = -0.000200214257;
    for (double k : c) p = __dadd_rn(k, __dmul_rn(p, w));
    x = __dmul_rn(p, y);
  }
  const double two_over_sqrt_pi = 2.0 / sqrt(M_PI);
  for (int i = 0; i < 2; ++i) {
    const double err = __dsub_rn(erf(x), y);
    x = __dsub_rn(x, __ddiv_rn(err, __dmul_rn(two_over_sqrt_pi, exp(-__dmul_rn(x, x)))));
  }
  return x;
}

template <Distribution kind>
__device__ double draw(const PhiloxBlock& bits, int lane, const DrawParams& p) {
  if constexpr (kind == Distribution::uniform) {
    return __dadd_rn(p.a, __dmul_rn(p.b, static_cast<double>(philox_uniform(bits.v[lane]))));
  } else if constexpr (kind == Distribution::normal) {
    // Box-Muller on lane pairs (0,1) and (2,3): even lanes take the cosine, odd lanes the sine.
    const int pair = lane / 2;
    const double u1 = philox_uniform(bits.v[2 * pair]);
    const double u2 = philox_uniform(bits.v[2 * pair + 1]);
    const double radius = sqrt(__dmul_rn(-2.0, log(u1)));
    const double angle = __dmul_rn(2.0 * M_PI, u2);
    const double z = __dmul_rn(radius, lane % 2 == 0 ? cos(angle) : sin(angle));
    return __dadd_rn(p.a, __dmul_rn(p.b, z));
  } else if constexpr (kind == Distribution::trunc_normal) {
    const double u = __dadd_rn(p.a, __dmul_rn(__dsub_rn(p.b, p.a), static_cast<double>(philox_uniform(bits.v[lane]))));
    const double x = __dadd_rn(p.c, __dmul_rn(__dmul_rn(p.d, sqrt(2.0)), erfinv_device(__dsub_rn(__dmul_rn(2.0, u), 1.0))));
    return fmin(fmax(x, p.lo), p.hi);
  } else {
    return philox_uniform(bits.v[lane]) < p.a ? 1.0 : 0.0;
  }
}

template <typename D, Distribution kind>
__global__ void philox_kernel(D* out, int64_t n, uint64_t seed, uint64_t first_counter, DrawParams params) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t block = global_thread<int64_t>(); block < blocks; block += grid_stride<int64_t>()) {
    const PhiloxBlock bits = philox4x32_10(seed, first_counter + static_cast<uint64_t>(block));
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = block * 4 + lane;
      if (i < n) out[i] = device_from_double<D>(draw<kind>(bits, lane, params));
    }
  }
}

template <Distribution kind>
void fill_random(Tensor& t, Generator& gen, const DrawParams& params) {
  DCAE_CHECK(t.device().is_cuda(), "CUDA random fill of ", t.str());
  DCAE_CHECK(is_floating(t.dtype()) || t.dtype() == DType::u8, "random fill needs a float or u8 tensor, got ",
             t.str());
  const int64_t n = t.numel();
  const uint64_t first_counter = gen.reserve(n);  // advances exactly as on the CPU
  if (n == 0) return;
  DeviceGuard guard(t.device().index);
  const cudaStream_t stream = stream_for(t);
  Tensor target = t.is_contiguous() ? t : empty(t.shape(), t.dtype(), t.device());
  const auto launch = [&]<typename D>() {
    philox_kernel<D, kind><<<grid_for((n + 3) / 4), kBlockThreads, 0, stream>>>(
        static_cast<D*>(target.raw_data()), n, gen.seed(), first_counter, params);
    check_launch("philox_kernel");
  };
  if (t.dtype() == DType::u8) launch.template operator()<uint8_t>();
  else visit_device_float(t.dtype(), "random fill", launch);
  if (!target.is_same(t)) t.copy_(target);
  else t.bump_version();
}

}  // namespace

void uniform_(Tensor& t, double low, double high, Generator& gen) {
  fill_random<Distribution::uniform>(t, gen, DrawParams{low, high - low});
}

void normal_(Tensor& t, double mean, double std, Generator& gen) {
  fill_random<Distribution::normal>(t, gen, DrawParams{mean, std});
}

void trunc_normal_(Tensor& t, double mean, double std, double low, double high, Generator& gen) {
  DCAE_CHECK(low < high && std > 0, "trunc_normal_ needs low < high and std > 0, got [", low, ", ", high, "], std ",
             std);
  const auto cdf = [](double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); };
  fill_random<Distribution::trunc_normal>(
      t, gen, DrawParams{cdf((low - mean) / std), cdf((high - mean) / std), mean, std, low, high});
}

void bernoulli_(Tensor& t, double keep, Generator& gen) {
  fill_random<Distribution::bernoulli>(t, gen, DrawParams{keep});
}

}  // namespace dcae::cuda
