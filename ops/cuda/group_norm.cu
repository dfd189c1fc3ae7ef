// GroupNorm and BatchNorm over channels-last tensors (ops/cuda/norm.h). x is seen as [segments, rows, C]: GroupNorm
// has one segment per sample, BatchNorm one segment with one channel per group.
//
// Forward: per-(segment, channel) sums of x and x^2 in f64 (channel_sums), group statistics from them (the f64
// E[x^2] - mean^2 keeps ~30 bits more than fp32 two-pass would), then one pass y = x * scale + shift with the
// affine folded per (segment, channel). Backward: per-(segment, channel) sums of dy * xhat and dy, then one pass
// dx = dy * alpha + x * beta + gamma, as the CPU kernel folds it. Coefficients are f64 for f32/f64 inputs and fp32
// for bf16/f16 ones.
#include "core/tensor/cuda/kernel_util.cuh"
#include "ops/cuda/math.cuh"
#include "ops/cuda/norm.h"
#include "ops/cuda/norm_common.cuh"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;
using namespace norm_detail;

namespace {

template <typename T>
using Coef = std::conditional_t<kIsReducedFloat<T>, float, double>;

struct Layout {
  int64_t segments, rows, channels, groups;
  __host__ __device__ int64_t group_size() const { return channels / groups; }
  __host__ __device__ double count() const { return static_cast<double>(rows * group_size()); }
};

template <typename T>
struct MomentsTerm {  // (x, x^2)
  const T* x;
  __device__ double2 operator()(int64_t, int64_t, int64_t, int64_t index) const {
    const double v = to_compute(x[index]);
    return make_double2(v, v * v);
  }
};

template <typename T>
struct GroupGradTerm {  // (dy * xhat, dy) with the statistics of (segment, group of c)
  const T* dy;
  const T* x;
  const double* mean;  // [segments, groups]
  const double* rstd;
  int64_t groups, group_size;
  __device__ double2 operator()(int64_t s, int64_t, int64_t c, int64_t index) const {
    const int64_t at = s * groups + c / group_size;
    const double g = to_compute(dy[index]);
    return make_double2(g * (static_cast<double>(to_compute(x[index])) - mean[at]) * rstd[at], g);
  }
};

// Group mean and biased variance from per-(segment, channel) sums of x and x^2 ([segments, 2, C]).
__global__ void group_moments_kernel(const double* sums, double* mean, double* var, Layout s) {
  for (int64_t i = global_thread<int64_t>(); i < s.segments * s.groups; i += grid_stride<int64_t>()) {
    const int64_t seg = i / s.groups, first = (i % s.groups) * s.group_size();
    const double* sx = sums + seg * 2 * s.channels;
    double total = 0.0, squares = 0.0;
    for (int64_t c = first; c < first + s.group_size(); ++c) {
      total += sx[c];
      squares += sx[s.channels + c];
    }
    const double m = total / s.count();
    mean[i] = m;
    var[i] = fmax(squares / s.count() - m * m, 0.0);
  }
}

// rstd from var; scale/shift per (segment, channel) fold (x - mean) * rstd * w + b; the saved statistics in S.
template <typename T, typename S>
__global__ void fold_forward_kernel(const double* mean, const double* var, double eps, const T* weight, const T* bias,
                                    Coef<T>* scale, Coef<T>* shift, S* mean_out, S* rstd_out, Layout s) {
  for (int64_t i = global_thread<int64_t>(); i < s.segments * s.channels; i += grid_stride<int64_t>()) {
    const int64_t seg = i / s.channels, c = i % s.channels;
    const int64_t at = seg * s.groups + c / s.group_size();
    const double rs = 1.0 / sqrt(var[at] + eps);
    const double w = weight == nullptr ? 1.0 : static_cast<double>(to_compute(weight[c]));
    const double b = bias == nullptr ? 0.0 : static_cast<double>(to_compute(bias[c]));
    scale[i] = static_cast<Coef<T>>(rs * w);
    shift[i] = static_cast<Coef<T>>(b - mean[at] * rs * w);
    if (c % s.group_size() == 0) {
      mean_out[at] = static_cast<S>(mean[at]);
      rstd_out[at] = static_cast<S>(rs);
    }
  }
}

// dx = dy * alpha + x * beta + gamma per (segment, channel); stats_constant leaves beta = gamma = 0.
template <typename T>
__global__ void fold_backward_kernel(const double* sums, const double* mean, const double* rstd, const T* weight,
                                     Coef<T>* alpha, Coef<T>* beta, Coef<T>* gamma, bool stats_constant, Layout s) {
  for (int64_t i = global_thread<int64_t>(); i < s.segments * s.channels; i += grid_stride<int64_t>()) {
    const int64_t seg = i / s.channels, c = i % s.channels;
    const int64_t at = seg * s.groups + c / s.group_size();
    const double rs = rstd[at];
    const double w = weight == nullptr ? 1.0 : static_cast<double>(to_compute(weight[c]));
    alpha[i] = static_cast<Coef<T>>(rs * w);
    if (stats_constant) continue;
    // Group sums of w * dy and w * dy * xhat: dx = rstd * (w dy - mean(w dy) - xhat * mean(w dy xhat)).
    const double* sx = sums + seg * 2 * s.channels;
    double sum_g = 0.0, sum_gx = 0.0;
    const int64_t first = (c / s.group_size()) * s.group_size();
    for (int64_t k = first; k < first + s.group_size(); ++k) {
      const double wk = weight == nullptr ? 1.0 : static_cast<double>(to_compute(weight[k]));
      sum_gx += wk * sx[k];
      sum_g += wk * sx[s.channels + k];
    }
    const double b = -rs * rs * sum_gx / s.count();
    beta[i] = static_cast<Coef<T>>(b);
    gamma[i] = static_cast<Coef<T>>(-b * mean[at] - rs * sum_g / s.count());
  }
}

// out = a * alpha[s, c] + (b ? b * beta[s, c] : 0) + (gamma ? gamma[s, c] : 0) over [segments, rows, channels].
// `vectors` 16-byte packs (0 when not aligned or C is not a multiple of the pack), then the scalar tail.
template <typename T>
__global__ void channel_affine_kernel(T* __restrict__ out, const T* __restrict__ a, const Coef<T>* __restrict__ alpha,
                                      const T* __restrict__ b, const Coef<T>* __restrict__ beta,
                                      const Coef<T>* __restrict__ gamma, int64_t n, int64_t segment_elements,
                                      int64_t channels, int64_t vectors) {
  using V = Vec16<T>;
  using K = Coef<T>;
  const auto element = [&](K va, K vb, int64_t i) {
    const int64_t at = (i / segment_elements) * channels + i % channels;
    K r = va * alpha[at];
    if (b != nullptr) r += vb * beta[at];
    if (gamma != nullptr) r += gamma[at];
    return from_compute<T>(static_cast<ComputeT<T>>(r));
  };
  for (int64_t v = global_thread<int64_t>(); v < vectors; v += grid_stride<int64_t>()) {
    const V pa = reinterpret_cast<const V*>(a)[v];
    V pb;
    if (b != nullptr) pb = reinterpret_cast<const V*>(b)[v];
    V po;
#pragma unroll
    for (int k = 0; k < V::kCount; ++k)
      po.v[k] = element(static_cast<K>(to_compute(pa.v[k])), b != nullptr ? static_cast<K>(to_compute(pb.v[k])) : K(0),
                        v * V::kCount + k);
    reinterpret_cast<V*>(out)[v] = po;
  }
  for (int64_t i = vectors * V::kCount + global_thread<int64_t>(); i < n; i += grid_stride<int64_t>())
    out[i] = element(static_cast<K>(to_compute(a[i])), b != nullptr ? static_cast<K>(to_compute(b[i])) : K(0), i);
}

template <typename T>
void launch_channel_affine(const Tensor& out, const Tensor& a, const Tensor& alpha, const Tensor& b, const Tensor& beta,
                           const Tensor& gamma, const Layout& s, cudaStream_t stream) {
  const int64_t n = out.numel();
  constexpr int kVec = Vec16<T>::kCount;
  const bool aligned = aligned16(out.raw_data()) && aligned16(a.raw_data()) && (!b.defined() || aligned16(b.raw_data()));
  const int64_t vectors = aligned && s.channels % kVec == 0 ? n / kVec : 0;
  const auto coef = [](const Tensor& t) { return t.defined() ? static_cast<const Coef<T>*>(t.raw_data()) : nullptr; };
  channel_affine_kernel<T><<<grid_for(vectors > 0 ? vectors : n), kBlockThreads, 0, stream>>>(
      static_cast<T*>(out.raw_data()), static_cast<const T*>(a.raw_data()), coef(alpha),
      b.defined() ? static_cast<const T*>(b.raw_data()) : nullptr, coef(beta), coef(gamma), n,
      s.rows * s.channels, s.channels, vectors);
  check_launch("channel_affine_kernel");
}

// running = (1 - momentum) * running + momentum * batch, with the unbiased variance.
__global__ void running_stats_kernel(double* running_mean, double* running_var, const double* batch_mean,
                                     const double* batch_var, double momentum, double unbias, int64_t channels) {
  for (int64_t c = global_thread<int64_t>(); c < channels; c += grid_stride<int64_t>()) {
    running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * batch_mean[c];
    running_var[c] = (1.0 - momentum) * running_var[c] + momentum * batch_var[c] * unbias;
  }
}

template <typename T>
const T* param_ptr(const Tensor& p) {
  return p.defined() ? static_cast<const T*>(p.raw_data()) : nullptr;
}

// Normalizes x (contiguous) with per-(segment, group) mean and var given as f64 device arrays; fills the saved
// statistics mean_out/rstd_out ([segments * groups] in the stat dtype).
Tensor normalize(const char* op, const Tensor& x, const Layout& s, const Tensor& group_mean, const Tensor& group_var,
                 double eps, const Tensor& weight_in, const Tensor& bias_in, const Tensor& mean_out,
                 const Tensor& rstd_out, cudaStream_t stream) {
  const Tensor weight = weight_in.defined() ? weight_in.contiguous() : Tensor();
  const Tensor bias = bias_in.defined() ? bias_in.contiguous() : Tensor();
  Tensor out = empty(x.shape(), x.dtype(), x.device());
  visit_device_float(x.dtype(), op, [&]<typename T>() {
    const DType coef_dtype = kIsReducedFloat<T> ? DType::f32 : DType::f64;
    Tensor scale = empty({s.segments, s.channels}, coef_dtype, x.device());
    Tensor shift = empty({s.segments, s.channels}, coef_dtype, x.device());
    const auto launch_fold = [&]<typename S>() {
      fold_forward_kernel<T, S><<<grid_for(s.segments * s.channels), kBlockThreads, 0, stream>>>(
          group_mean.data<double>(), group_var.data<double>(), eps, param_ptr<T>(weight), param_ptr<T>(bias),
          static_cast<Coef<T>*>(scale.raw_data()), static_cast<Coef<T>*>(shift.raw_data()), mean_out.data<S>(),
          rstd_out.data<S>(), s);
    };
    if (mean_out.dtype() == DType::f64) launch_fold.template operator()<double>();
    else launch_fold.template operator()<float>();
    check_launch("fold_forward_kernel");
    launch_channel_affine<T>(out, x, scale, Tensor(), Tensor(), shift, s, stream);
  });
  return out;
}

// Gradients of the grouped normalization from the saved statistics (any float dtype, converted to f64 here).
std::vector<Tensor> grouped_backward(const char* op, const Tensor& grad, const Tensor& x_in, const Layout& s,
                                     const Tensor& weight_in, const Tensor& mean_in, const Tensor& rstd_in,
                                     bool stats_constant, NormGradMask needs) {
  const Tensor x = x_in.contiguous();
  const Tensor dy = grad.to(x.dtype()).contiguous();
  const Tensor weight = weight_in.defined() ? weight_in.contiguous() : Tensor();
  const Tensor mean = mean_in.to(DType::f64).contiguous(), rstd = rstd_in.to(DType::f64).contiguous();
  const Device device = x.device();
  Tensor gx = needs[0] ? empty(x.shape(), x.dtype(), device) : Tensor();
  Tensor gw = needs[1] ? empty({s.channels}, x.dtype(), device) : Tensor();
  Tensor gb = needs[2] ? empty({s.channels}, x.dtype(), device) : Tensor();
  DeviceGuard guard(device.index);
  const cudaStream_t stream = stream_for(x);
  visit_device_float(x.dtype(), op, [&]<typename T>() {
    const T* px = static_cast<const T*>(x.raw_data());
    const T* pg = static_cast<const T*>(dy.raw_data());
    Tensor sums;  // [segments, 2, C]: (sum dy * xhat, sum dy)
    if (needs[1] || needs[2] || (needs[0] && !stats_constant))
      sums = channel_sums(GroupGradTerm<T>{pg, px, mean.data<double>(), rstd.data<double>(), s.groups, s.group_size()},
                          s.segments, s.rows, s.channels, device, stream);
    if (needs[0]) {
      const DType coef_dtype = kIsReducedFloat<T> ? DType::f32 : DType::f64;
      Tensor alpha = empty({s.segments, s.channels}, coef_dtype, device);
      Tensor beta = stats_constant ? Tensor() : empty({s.segments, s.channels}, coef_dtype, device);
      Tensor gamma = stats_constant ? Tensor() : empty({s.segments, s.channels}, coef_dtype, device);
      const auto coef = [](const Tensor& t) { return t.defined() ? static_cast<Coef<T>*>(t.raw_data()) : nullptr; };
      fold_backward_kernel<T><<<grid_for(s.segments * s.channels), kBlockThreads, 0, stream>>>(
          sums.defined() ? sums.data<double>() : nullptr, mean.data<double>(), rstd.data<double>(),
          param_ptr<T>(weight), coef(alpha), coef(beta), coef(gamma), stats_constant, s);
      check_launch("fold_backward_kernel");
      // With constant statistics x is not read (the caller may have passed a stand-in for it).
      launch_channel_affine<T>(gx, dy, alpha, stats_constant ? Tensor() : x, beta, gamma, s, stream);
    }
    for (int which : {0, 1}) {
      const Tensor& target = which == 0 ? gw : gb;
      if (!target.defined()) continue;
      parameter_grad_kernel<T><<<grid_for(s.channels), kBlockThreads, 0, stream>>>(
          sums.data<double>(), static_cast<T*>(target.raw_data()), s.segments, s.channels, which);
      check_launch("parameter_grad_kernel");
    }
  });
  return {gx, gw, gb};
}

// Per-(segment, group) f64 mean and biased variance of x (contiguous).
void group_moments(const char* op, const Tensor& x, const Layout& s, Tensor& mean, Tensor& var, cudaStream_t stream) {
  Tensor sums;
  visit_device_float(x.dtype(), op, [&]<typename T>() {
    sums = channel_sums(MomentsTerm<T>{static_cast<const T*>(x.raw_data())}, s.segments, s.rows, s.channels,
                        x.device(), stream);
  });
  mean = empty({s.segments * s.groups}, DType::f64, x.device());
  var = empty({s.segments * s.groups}, DType::f64, x.device());
  group_moments_kernel<<<grid_for(s.segments * s.groups), kBlockThreads, 0, stream>>>(
      sums.data<double>(), mean.data<double>(), var.data<double>(), s);
  check_launch("group_moments_kernel");
}

}  // namespace

Tensor group_norm_forward(const Tensor& x_in, int64_t groups, const Tensor& weight, const Tensor& bias, double eps,
                          Tensor& mean, Tensor& rstd) {
  const Tensor x = x_in.contiguous();
  check_parameter("group_norm", weight, x);
  check_parameter("group_norm", bias, x);
  const int64_t samples = x.shape().front(), channels = x.shape().back();
  const Layout s{samples, x.numel() / std::max<int64_t>(samples * channels, 1), channels, groups};
  mean = empty({samples, groups}, stat_dtype(x.dtype()), x.device());
  rstd = empty({samples, groups}, stat_dtype(x.dtype()), x.device());
  if (x.numel() == 0) return empty(x.shape(), x.dtype(), x.device());
  DeviceGuard guard(x.device().index);
  const cudaStream_t stream = stream_for(x);
  Tensor group_mean, group_var;
  group_moments("group_norm", x, s, group_mean, group_var, stream);
  return normalize("group_norm", x, s, group_mean, group_var, eps, weight, bias, mean, rstd, stream);
}

std::vector<Tensor> group_norm_backward(const Tensor& grad, const Tensor& x, int64_t groups, const Tensor& weight,
                                        const Tensor& mean, const Tensor& rstd, NormGradMask needs) {
  check_parameter("group_norm backward", weight, x);
  const int64_t samples = x.shape().front(), channels = x.shape().back();
  const Layout s{samples, x.numel() / std::max<int64_t>(samples * channels, 1), channels, groups};
  if (x.numel() == 0) {
    Tensor gw = needs[1] ? zeros({channels}, x.dtype(), x.device()) : Tensor();
    Tensor gb = needs[2] ? zeros({channels}, x.dtype(), x.device()) : Tensor();
    return {needs[0] ? empty(x.shape(), x.dtype(), x.device()) : Tensor(), gw, gb};
  }
  return grouped_backward("group_norm backward", grad, x, s, weight, mean, rstd, /*stats_constant=*/false, needs);
}

Tensor batch_norm_forward(const Tensor& x_in, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                          Tensor running_var, bool training, double momentum, double eps, Tensor& mean, Tensor& rstd) {
  const Tensor x = x_in.contiguous();
  check_parameter("batch_norm", weight, x);
  check_parameter("batch_norm", bias, x);
  const int64_t channels = x.shape().back();
  const Layout s{1, x.numel() / std::max<int64_t>(channels, 1), channels, channels};
  mean = empty({channels}, stat_dtype(x.dtype()), x.device());
  rstd = empty({channels}, stat_dtype(x.dtype()), x.device());
  DeviceGuard guard(x.device().index);
  const cudaStream_t stream = stream_for(x);
  Tensor batch_mean, batch_var;
  if (training) {
    DCAE_CHECK(s.rows > 1, "batch_norm (training) needs more than one value per channel, got ", x_in.str());
    group_moments("batch_norm", x, s, batch_mean, batch_var, stream);
  } else {
    batch_mean = running_mean.to(DType::f64).contiguous();
    batch_var = running_var.to(DType::f64).contiguous();
  }
  Tensor out = normalize("batch_norm", x, s, batch_mean, batch_var, eps, weight, bias, mean, rstd, stream);
  if (training && running_mean.defined()) {
    Tensor new_mean = running_mean.to(DType::f64).contiguous().clone();
    Tensor new_var = running_var.to(DType::f64).contiguous().clone();
    const double unbias = static_cast<double>(s.rows) / static_cast<double>(s.rows - 1);
    running_stats_kernel<<<grid_for(channels), kBlockThreads, 0, stream>>>(
        new_mean.data<double>(), new_var.data<double>(), batch_mean.data<double>(), batch_var.data<double>(),
        momentum, unbias, channels);
    check_launch("running_stats_kernel");
    running_mean.copy_(new_mean);
    running_var.copy_(new_var);
  }
  return out;
}

std::vector<Tensor> batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                        const Tensor& rstd, bool training, NormGradMask needs) {
  check_parameter("batch_norm backward", weight, x);
  const int64_t channels = x.shape().back();
  const Layout s{1, x.numel() / std::max<int64_t>(channels, 1), channels, channels};
  if (x.numel() == 0) {
    Tensor gw = needs[1] ? zeros({channels}, x.dtype(), x.device()) : Tensor();
    Tensor gb = needs[2] ? zeros({channels}, x.dtype(), x.device()) : Tensor();
    return {needs[0] ? empty(x.shape(), x.dtype(), x.device()) : Tensor(), gw, gb};
  }
  return grouped_backward("batch_norm backward", grad, x, s, weight, mean, rstd, /*stats_constant=*/!training, needs);
}

}  // namespace dcae::ops::cuda
