#include "ops/cpu/norm.h"

#include <algorithm>
#include <cmath>

#include "ops/cpu/cpu_util.h"

namespace dcae::ops::cpu {

namespace {

constexpr int64_t kTargetTasks = 64;           // enough tasks to balance any thread count
constexpr int64_t kMinTaskElements = 1 << 14;  // below this a task costs more to schedule than to run

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t row_grain(int64_t row_elements) {
  return std::max<int64_t>(1, kMinTaskElements / std::max<int64_t>(row_elements, 1));
}

// Per-channel scale or shift as doubles; `fill` where the parameter is absent.
std::vector<double> channel_values(const Tensor& t, int64_t channels, double fill) {
  return t.defined() ? t.to_vector<double>() : std::vector<double>(channels, fill);
}

Tensor channel_tensor(const std::vector<double>& values, int64_t offset, int64_t channels, DType dtype) {
  return from_doubles(std::vector<double>(values.begin() + offset, values.begin() + offset + channels), {channels},
                      dtype);
}

// Sums per-channel quantities over x viewed as [segments, rows, ...]. Each segment's rows are cut into a block
// count that depends only on the sizes (not on the thread count), so sums are bitwise reproducible.
// body(segment, row_begin, row_end, acc) adds one block into its own zeroed `width` accumulators; blocks are then
// summed in order. Returns [segments, width].
template <typename Body>
std::vector<double> blocked_sums(int64_t segments, int64_t rows, int64_t row_elements, int64_t width, Body&& body) {
  const int64_t segment_elements = rows * row_elements;
  const int64_t blocks = std::clamp<int64_t>(
      std::min(ceil_div(kTargetTasks, std::max<int64_t>(segments, 1)), segment_elements / kMinTaskElements), 1,
      std::max<int64_t>(rows, 1));
  const int64_t tasks = segments * blocks;
  std::vector<double> partial(tasks * width, 0.0);
  parallel_for(tasks, row_grain(ceil_div(segment_elements, blocks)), [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t block = task % blocks;
      body(task / blocks, rows * block / blocks, rows * (block + 1) / blocks, partial.data() + task * width);
    }
  });
  std::vector<double> total(segments * width, 0.0);
  for (int64_t task = 0; task < tasks; ++task) {
    double* out = total.data() + (task / blocks) * width;
    const double* in = partial.data() + task * width;
    for (int64_t i = 0; i < width; ++i) out[i] += in[i];
  }
  return total;
}

// Per (segment, channel) copies of per-(segment, group) values: lets inner loops index by channel alone.
std::vector<double> spread_groups(const std::vector<double>& per_group, int64_t segments, int64_t channels,
                                  int64_t groups) {
  const int64_t group_size = channels / groups;
  std::vector<double> out(segments * channels);
  for (int64_t s = 0; s < segments; ++s)
    for (int64_t c = 0; c < channels; ++c) out[s * channels + c] = per_group[s * groups + c / group_size];
  return out;
}

// Adds per-(segment, channel) sums into per-(segment, group) totals, each channel weighted by weight[c].
std::vector<double> gather_groups(const double* per_channel, int64_t stride, int64_t segments, int64_t channels,
                                  int64_t groups, const std::vector<double>& weight) {
  const int64_t group_size = channels / groups;
  std::vector<double> out(segments * groups, 0.0);
  for (int64_t s = 0; s < segments; ++s)
    for (int64_t c = 0; c < channels; ++c) out[s * groups + c / group_size] += weight[c] * per_channel[s * stride + c];
  return out;
}

struct GroupStats {
  std::vector<double> mean, var;  // [segments * groups]; var is biased
};

// Statistics of x viewed as [segments, rows, channels] per (segment, group of channels/groups channels), in two
// passes (mean, then squared deviations around it) so large means do not cancel the variance away.
template <typename T>
GroupStats group_stats(const T* x, int64_t segments, int64_t rows, int64_t channels, int64_t groups) {
  const double count = static_cast<double>(rows * (channels / groups));
  const std::vector<double> ones(channels, 1.0);
  const std::vector<double> sums =
      blocked_sums(segments, rows, channels, channels, [&](int64_t s, int64_t begin, int64_t end, double* acc) {
        for (int64_t r = begin; r < end; ++r) {
          const T* xr = x + (s * rows + r) * channels;
          for (int64_t c = 0; c < channels; ++c) acc[c] += xr[c];
        }
      });
  GroupStats stats;
  stats.mean = gather_groups(sums.data(), channels, segments, channels, groups, ones);
  for (double& m : stats.mean) m /= count;
  const std::vector<double> channel_mean = spread_groups(stats.mean, segments, channels, groups);
  const std::vector<double> squares =
      blocked_sums(segments, rows, channels, channels, [&](int64_t s, int64_t begin, int64_t end, double* acc) {
        const double* mu = channel_mean.data() + s * channels;
        for (int64_t r = begin; r < end; ++r) {
          const T* xr = x + (s * rows + r) * channels;
          for (int64_t c = 0; c < channels; ++c) {
            const double d = xr[c] - mu[c];
            acc[c] += d * d;
          }
        }
      });
  stats.var = gather_groups(squares.data(), channels, segments, channels, groups, ones);
  for (double& v : stats.var) v /= count;
  return stats;
}

// y = x * scale[s, c] + shift[s, c] over [segments, rows, channels], i.e. (x - mean) * rstd * w + b folded per channel.
template <typename T>
void apply_channel_affine(const T* x, T* y, int64_t segments, int64_t rows, int64_t channels,
                          const std::vector<double>& scale, const std::vector<double>& shift) {
  parallel_for(segments * rows, row_grain(channels), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const double* a = scale.data() + (r / rows) * channels;
      const double* b = shift.data() + (r / rows) * channels;
      const T* xr = x + r * channels;
      T* yr = y + r * channels;
      for (int64_t c = 0; c < channels; ++c) yr[c] = static_cast<T>(xr[c] * a[c] + b[c]);
    }
  });
}

// Folds per-(segment, group) mean/rstd and per-channel weight/bias into per-(segment, channel) scale and shift.
void fold_affine(const std::vector<double>& mean, const std::vector<double>& rstd, int64_t segments, int64_t channels,
                 int64_t groups, const std::vector<double>& w, const std::vector<double>& b, std::vector<double>& scale,
                 std::vector<double>& shift) {
  const std::vector<double> mu = spread_groups(mean, segments, channels, groups);
  const std::vector<double> rs = spread_groups(rstd, segments, channels, groups);
  scale.resize(segments * channels);
  shift.resize(segments * channels);
  for (int64_t i = 0; i < segments * channels; ++i) {
    scale[i] = rs[i] * w[i % channels];
    shift[i] = b[i % channels] - mu[i] * scale[i];
  }
}

std::vector<double> inverse_std(const std::vector<double>& var, double eps) {
  std::vector<double> out(var.size());
  for (size_t i = 0; i < var.size(); ++i) out[i] = 1.0 / std::sqrt(var[i] + eps);
  return out;
}

// Backward of the grouped normalization over [segments, rows, channels] (stats per (segment, group)). Writes dx
// when it is non-null and returns per-channel [grad_weight..., grad_bias...] (empty unless need_params).
// stats_constant: mean/rstd did not come from x (eval BatchNorm), so dx is just dy * w * rstd.
template <typename T>
std::vector<double> grouped_backward(const T* dy, const T* x, T* dx, int64_t segments, int64_t rows, int64_t channels,
                                     int64_t groups, const std::vector<double>& w, const std::vector<double>& mean,
                                     const std::vector<double>& rstd, bool stats_constant, bool need_params) {
  const std::vector<double> mu = spread_groups(mean, segments, channels, groups);
  const std::vector<double> rs = spread_groups(rstd, segments, channels, groups);
  // Per (segment, channel): sum of dy and of dy * xhat; they give both the parameter gradients and dx's group terms.
  std::vector<double> sums;
  if (need_params || (dx != nullptr && !stats_constant)) {
    sums =
        blocked_sums(segments, rows, channels, 2 * channels, [&](int64_t s, int64_t begin, int64_t end, double* acc) {
          const double* m = mu.data() + s * channels;
          const double* r = rs.data() + s * channels;
          for (int64_t row = begin; row < end; ++row) {
            const T* gr = dy + (s * rows + row) * channels;
            const T* xr = x + (s * rows + row) * channels;
            for (int64_t c = 0; c < channels; ++c) {
              acc[c] += gr[c];
              acc[channels + c] += gr[c] * ((xr[c] - m[c]) * r[c]);
            }
          }
        });
  }
  if (dx != nullptr) {
    // dx = rstd * (w dy - mean(w dy) - xhat * mean(w dy xhat)), folded into dx = dy * alpha + x * beta + gamma.
    std::vector<double> alpha(segments * channels), beta(segments * channels, 0.0), gamma(segments * channels, 0.0);
    for (int64_t i = 0; i < segments * channels; ++i) alpha[i] = rs[i] * w[i % channels];
    if (!stats_constant) {
      const double count = static_cast<double>(rows * (channels / groups));
      const std::vector<double> sum_g = spread_groups(
          gather_groups(sums.data(), 2 * channels, segments, channels, groups, w), segments, channels, groups);
      const std::vector<double> sum_gx =
          spread_groups(gather_groups(sums.data() + channels, 2 * channels, segments, channels, groups, w), segments,
                        channels, groups);
      for (int64_t i = 0; i < segments * channels; ++i) {
        beta[i] = -rs[i] * rs[i] * sum_gx[i] / count;
        gamma[i] = -beta[i] * mu[i] - rs[i] * sum_g[i] / count;
      }
    }
    parallel_for(segments * rows, row_grain(channels), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t base = (r / rows) * channels;
        const T* gr = dy + r * channels;
        const T* xr = x + r * channels;
        T* out = dx + r * channels;
        if (stats_constant) {  // x is not read: the caller may pass a stand-in when grad_weight is not needed
          for (int64_t c = 0; c < channels; ++c) out[c] = static_cast<T>(gr[c] * alpha[base + c]);
        } else {
          for (int64_t c = 0; c < channels; ++c)
            out[c] = static_cast<T>(gr[c] * alpha[base + c] + xr[c] * beta[base + c] + gamma[base + c]);
        }
      }
    });
  }
  if (!need_params) return {};
  std::vector<double> params(2 * channels, 0.0);  // [grad_weight, grad_bias]
  for (int64_t s = 0; s < segments; ++s)
    for (int64_t c = 0; c < channels; ++c) {
      params[c] += sums[s * 2 * channels + channels + c];
      params[channels + c] += sums[s * 2 * channels + c];
    }
  return params;
}

// Packs a backward kernel's results as {grad_x, grad_weight, grad_bias} in the caller's dtypes.
std::vector<Tensor> pack_grads(Tensor gx, const std::vector<double>& params, int64_t channels, DType dtype,
                               NormGradMask needs) {
  return {needs[0] ? gx.to(dtype) : Tensor(), needs[1] ? channel_tensor(params, 0, channels, dtype) : Tensor(),
          needs[2] ? channel_tensor(params, channels, channels, dtype) : Tensor()};
}

}  // namespace

Tensor row_norm_forward(const Tensor& x_in, const Tensor& weight, const Tensor& bias, double eps, bool center,
                        Tensor& mean, Tensor& rstd) {
  const Tensor x = compute_input(x_in);
  const int64_t channels = x.shape().back();
  const int64_t rows = x.numel() / std::max<int64_t>(channels, 1);
  const std::vector<double> w = channel_values(weight, channels, 1.0), b = channel_values(bias, channels, 0.0);
  Tensor out = empty(x.shape(), x.dtype());
  rstd = empty({rows}, x.dtype());
  mean = center ? empty({rows}, x.dtype()) : Tensor();
  visit_float(x.dtype(), center ? "layer_norm" : "rms_norm", [&]<typename T>() {
    const T* px = x.data<T>();
    T* py = out.data<T>();
    T* prstd = rstd.data<T>();
    T* pmean = center ? mean.data<T>() : nullptr;
    parallel_for(rows, row_grain(channels), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* xr = px + r * channels;
        T* yr = py + r * channels;
        double mu = 0.0, squares = 0.0;
        if (center) {
          for (int64_t c = 0; c < channels; ++c) mu += xr[c];
          mu /= static_cast<double>(channels);
        }
        for (int64_t c = 0; c < channels; ++c) squares += (xr[c] - mu) * (xr[c] - mu);
        const double rs = 1.0 / std::sqrt(squares / static_cast<double>(channels) + eps);
        for (int64_t c = 0; c < channels; ++c) yr[c] = static_cast<T>((xr[c] - mu) * rs * w[c] + b[c]);
        prstd[r] = static_cast<T>(rs);
        if (center) pmean[r] = static_cast<T>(mu);
      }
    });
  });
  return out.to(x_in.dtype());
}

std::vector<Tensor> row_norm_backward(const Tensor& grad, const Tensor& x_in, const Tensor& weight,
                                      const Tensor& mean_in, const Tensor& rstd_in, bool center, NormGradMask needs) {
  const Tensor x = compute_input(x_in);
  const Tensor dy = grad.to(x.dtype()).contiguous();
  const Tensor rstd = rstd_in.to(x.dtype()).contiguous();
  const Tensor mean = center ? mean_in.to(x.dtype()).contiguous() : Tensor();
  const int64_t channels = x.shape().back();
  const int64_t rows = x.numel() / std::max<int64_t>(channels, 1);
  const std::vector<double> w = channel_values(weight, channels, 1.0);
  const bool need_params = needs[1] || needs[2];
  Tensor gx = needs[0] ? empty(x.shape(), x.dtype()) : Tensor();
  std::vector<double> params;  // [grad_weight, grad_bias]
  visit_float(x.dtype(), center ? "layer_norm backward" : "rms_norm backward", [&]<typename T>() {
    const T* px = x.data<T>();
    const T* pg = dy.data<T>();
    const T* prstd = rstd.data<T>();
    const T* pmean = center ? mean.data<T>() : nullptr;
    T* pgx = needs[0] ? gx.data<T>() : nullptr;
    // One pass per row block: dx for its rows, plus the block's share of the parameter gradients.
    params = blocked_sums(1, rows, channels, need_params ? 2 * channels : 0,
                          [&](int64_t, int64_t begin, int64_t end, double* acc) {
                            for (int64_t r = begin; r < end; ++r) {
                              const T* xr = px + r * channels;
                              const T* gr = pg + r * channels;
                              const double mu = center ? static_cast<double>(pmean[r]) : 0.0, rs = prstd[r];
                              if (pgx != nullptr) {
                                // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w; RMSNorm drops the
                                // mean(g) term.
                                double sum_g = 0.0, sum_gx = 0.0;
                                for (int64_t c = 0; c < channels; ++c) {
                                  const double g = gr[c] * w[c];
                                  sum_g += g;
                                  sum_gx += g * (xr[c] - mu) * rs;
                                }
                                const double mean_g = center ? sum_g / static_cast<double>(channels) : 0.0;
                                const double mean_gx = sum_gx / static_cast<double>(channels);
                                T* out = pgx + r * channels;
                                for (int64_t c = 0; c < channels; ++c)
                                  out[c] = static_cast<T>(rs * (gr[c] * w[c] - mean_g - (xr[c] - mu) * rs * mean_gx));
                              }
                              if (need_params)
                                for (int64_t c = 0; c < channels; ++c) {
                                  acc[c] += gr[c] * (xr[c] - mu) * rs;
                                  acc[channels + c] += gr[c];
                                }
                            }
                          });
  });
  return pack_grads(gx, params, channels, x_in.dtype(), needs);
}

Tensor group_norm_forward(const Tensor& x_in, int64_t groups, const Tensor& weight, const Tensor& bias, double eps,
                          Tensor& mean, Tensor& rstd) {
  const Tensor x = compute_input(x_in);
  const int64_t samples = x.shape().front(), channels = x.shape().back();
  const int64_t positions = x.numel() / std::max<int64_t>(samples * channels, 1);
  Tensor out = empty(x.shape(), x.dtype());
  GroupStats stats;
  visit_float(x.dtype(), "group_norm", [&]<typename T>() {
    stats = group_stats(x.data<T>(), samples, positions, channels, groups);
    std::vector<double> scale, shift;
    fold_affine(stats.mean, inverse_std(stats.var, eps), samples, channels, groups,
                channel_values(weight, channels, 1.0), channel_values(bias, channels, 0.0), scale, shift);
    apply_channel_affine(x.data<T>(), out.data<T>(), samples, positions, channels, scale, shift);
  });
  mean = from_doubles(stats.mean, {samples, groups}, x.dtype());
  rstd = from_doubles(inverse_std(stats.var, eps), {samples, groups}, x.dtype());
  return out.to(x_in.dtype());
}

std::vector<Tensor> group_norm_backward(const Tensor& grad, const Tensor& x_in, int64_t groups, const Tensor& weight,
                                        const Tensor& mean, const Tensor& rstd, NormGradMask needs) {
  const Tensor x = compute_input(x_in);
  const Tensor dy = grad.to(x.dtype()).contiguous();
  const int64_t samples = x.shape().front(), channels = x.shape().back();
  const int64_t positions = x.numel() / std::max<int64_t>(samples * channels, 1);
  Tensor gx = needs[0] ? empty(x.shape(), x.dtype()) : Tensor();
  std::vector<double> params;
  visit_float(x.dtype(), "group_norm backward", [&]<typename T>() {
    params = grouped_backward(dy.data<T>(), x.data<T>(), needs[0] ? gx.data<T>() : nullptr, samples, positions,
                              channels, groups, channel_values(weight, channels, 1.0), mean.to_vector<double>(),
                              rstd.to_vector<double>(), /*stats_constant=*/false, needs[1] || needs[2]);
  });
  return pack_grads(gx, params, channels, x_in.dtype(), needs);
}

Tensor batch_norm_forward(const Tensor& x_in, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                          Tensor running_var, bool training, double momentum, double eps, Tensor& mean, Tensor& rstd) {
  const Tensor x = compute_input(x_in);
  const int64_t channels = x.shape().back();
  const int64_t rows = x.numel() / std::max<int64_t>(channels, 1);
  Tensor out = empty(x.shape(), x.dtype());
  std::vector<double> batch_mean, batch_var;
  visit_float(x.dtype(), "batch_norm", [&]<typename T>() {
    if (training) {
      // BatchNorm's statistics are GroupNorm's with one segment and one channel per group.
      GroupStats stats = group_stats(x.data<T>(), 1, rows, channels, channels);
      batch_mean = std::move(stats.mean);
      batch_var = std::move(stats.var);
    } else {
      batch_mean = running_mean.to_vector<double>();
      batch_var = running_var.to_vector<double>();
    }
    std::vector<double> scale, shift;
    fold_affine(batch_mean, inverse_std(batch_var, eps), 1, channels, channels, channel_values(weight, channels, 1.0),
                channel_values(bias, channels, 0.0), scale, shift);
    apply_channel_affine(x.data<T>(), out.data<T>(), 1, rows, channels, scale, shift);
  });
  if (training && running_mean.defined()) {
    const std::vector<double> old_mean = running_mean.to_vector<double>(), old_var = running_var.to_vector<double>();
    const double unbias = static_cast<double>(rows) / static_cast<double>(rows - 1);
    std::vector<double> new_mean(channels), new_var(channels);
    for (int64_t c = 0; c < channels; ++c) {
      new_mean[c] = (1.0 - momentum) * old_mean[c] + momentum * batch_mean[c];
      new_var[c] = (1.0 - momentum) * old_var[c] + momentum * batch_var[c] * unbias;
    }
    running_mean.copy_(from_doubles(new_mean, {channels}, DType::f64));
    running_var.copy_(from_doubles(new_var, {channels}, DType::f64));
  }
  mean = from_doubles(batch_mean, {channels}, x.dtype());
  rstd = from_doubles(inverse_std(batch_var, eps), {channels}, x.dtype());
  return out.to(x_in.dtype());
}

std::vector<Tensor> batch_norm_backward(const Tensor& grad, const Tensor& x_in, const Tensor& weight,
                                        const Tensor& mean, const Tensor& rstd, bool training, NormGradMask needs) {
  const Tensor x = compute_input(x_in);
  const Tensor dy = grad.to(x.dtype()).contiguous();
  const int64_t channels = x.shape().back();
  const int64_t rows = x.numel() / std::max<int64_t>(channels, 1);
  Tensor gx = needs[0] ? empty(x.shape(), x.dtype()) : Tensor();
  std::vector<double> params;
  visit_float(x.dtype(), "batch_norm backward", [&]<typename T>() {
    params = grouped_backward(dy.data<T>(), x.data<T>(), needs[0] ? gx.data<T>() : nullptr, 1, rows, channels, channels,
                              channel_values(weight, channels, 1.0), mean.to_vector<double>(), rstd.to_vector<double>(),
                              /*stats_constant=*/!training, needs[1] || needs[2]);
  });
  return pack_grads(gx, params, channels, x_in.dtype(), needs);
}

}  // namespace dcae::ops::cpu
