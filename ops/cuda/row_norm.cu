// RMSNorm / LayerNorm forward over the last dim (ops/cuda/norm.h).
//
// Fast path (16-byte aligned rows, C a multiple of the 16-byte vector): one warp per row, the row kept in
// registers, so x is read once and y written once. Other shapes take a scalar path (a warp or a block per row,
// re-reading the row). The backward is in row_norm_backward.cu.
#include "core/tensor/cuda/kernel_util.cuh"
#include "ops/cuda/math.cuh"
#include "ops/cuda/fused_residual.h"
#include "ops/cuda/norm.h"
#include "ops/cuda/row_norm_common.cuh"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;
using namespace norm_detail;

namespace {

// Block (32, kRowsPerBlock): warp threadIdx.y handles rows threadIdx.y, + kRowsPerBlock * gridDim.x, ...
template <typename T, int kPacks>
__global__ void __launch_bounds__(kWarpBlockThreads)
    row_norm_forward_warp_kernel(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                                 const T* __restrict__ residual, T* __restrict__ y, ComputeT<T>* __restrict__ mean_out,
                                 ComputeT<T>* __restrict__ rstd_out, int64_t rows, int channels, ComputeT<T> eps,
                                 bool center) {
  using C = ComputeT<T>;
  using V = Vec16<T>;
  constexpr int kVec = V::kCount;
  const int lane = threadIdx.x;
  const int packs = channels / kVec;
  const C inv_count = C(1) / C(channels);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y; row < rows;
       row += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const V* xr = reinterpret_cast<const V*>(x + row * channels);
    C vals[kPacks][kVec];
    C sum = 0;
#pragma unroll
    for (int p = 0; p < kPacks; ++p) {
      const int i = p * kWarp + lane;
      if (i < packs) {
        const V v = xr[i];
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          vals[p][k] = to_compute(v.v[k]);
          sum += vals[p][k];
        }
      } else {
#pragma unroll
        for (int k = 0; k < kVec; ++k) vals[p][k] = C(0);
      }
    }
    const C mu = center ? warp_all_sum(sum) * inv_count : C(0);
    C squares = 0;
#pragma unroll
    for (int p = 0; p < kPacks; ++p) {
      if (p * kWarp + lane < packs) {
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const C d = vals[p][k] - mu;
          squares += d * d;
        }
      }
    }
    squares = warp_all_sum(squares);
    const C rs = C(1) / math::sqrt(squares * inv_count + eps);
    V* yr = reinterpret_cast<V*>(y + row * channels);
#pragma unroll
    for (int p = 0; p < kPacks; ++p) {
      const int i = p * kWarp + lane;
      if (i < packs) {
        C w[kVec], b[kVec];
        load_param_pack<T, kVec>(weight, i, C(1), w);
        load_param_pack<T, kVec>(bias, i, C(0), b);
        C r[kVec];
        if (residual != nullptr) load_param_pack<T, kVec>(residual + row * channels, i, C(0), r);
        V out;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const C normed = (vals[p][k] - mu) * rs * w[k] + b[k];
          out.v[k] = from_compute<T>(residual != nullptr ? normed + r[k] : normed);
        }
        yr[i] = out;
      }
    }
    if (lane == 0) {
      rstd_out[row] = rs;
      if (center) mean_out[row] = mu;
    }
  }
}

// Scalar path: a row per warp (blockDim (32, kRowsPerBlock)) or per block (blockDim (256, 1)), re-reading the row.
template <typename T>
__global__ void row_norm_forward_generic_kernel(const T* __restrict__ x, const T* __restrict__ weight,
                                                const T* __restrict__ bias, const T* __restrict__ residual,
                                                T* __restrict__ y,
                                                ComputeT<T>* __restrict__ mean_out, ComputeT<T>* __restrict__ rstd_out,
                                                int64_t rows, int64_t channels, ComputeT<T> eps, bool center) {
  using C = ComputeT<T>;
  __shared__ C scratch[kWarp];
  const C inv_count = C(1) / C(channels);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const T* xr = x + row * channels;
    C mu = 0;
    if (center) {
      C sum = 0;
      for (int64_t c = threadIdx.x; c < channels; c += blockDim.x) sum += to_compute(xr[c]);
      mu = row_group_sum(sum, scratch) * inv_count;
    }
    C squares = 0;
    for (int64_t c = threadIdx.x; c < channels; c += blockDim.x) {
      const C d = to_compute(xr[c]) - mu;
      squares += d * d;
    }
    const C rs = C(1) / math::sqrt(row_group_sum(squares, scratch) * inv_count + eps);
    T* yr = y + row * channels;
    const T* rr = residual != nullptr ? residual + row * channels : nullptr;
    for (int64_t c = threadIdx.x; c < channels; c += blockDim.x) {
      const C normed = (to_compute(xr[c]) - mu) * rs * param_or(weight, c, C(1)) + param_or(bias, c, C(0));
      yr[c] = from_compute<T>(rr != nullptr ? normed + to_compute(rr[c]) : normed);
    }
    if (threadIdx.x == 0) {
      rstd_out[row] = rs;
      if (center) mean_out[row] = mu;
    }
  }
}

}  // namespace

namespace {

// row_norm_forward, plus `residual` (same shape as x, or undefined) added to the normalised rows in the same pass.
Tensor row_norm_forward_impl(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in, double eps,
                             bool center, const Tensor& residual_in, Tensor& mean, Tensor& rstd) {
  const char* op = center ? "layer_norm" : "rms_norm";
  const Tensor x = x_in.contiguous();
  const Tensor residual = residual_in.defined() ? residual_in.contiguous() : Tensor();
  check_parameter(op, weight_in, x);
  check_parameter(op, bias_in, x);
  const Tensor weight = weight_in.defined() ? weight_in.contiguous() : Tensor();
  const Tensor bias = bias_in.defined() ? bias_in.contiguous() : Tensor();
  const int64_t channels = x.shape().back();
  const int64_t rows = x.numel() / std::max<int64_t>(channels, 1);
  const Device device = x.device();
  Tensor out = empty(x.shape(), x.dtype(), device);
  rstd = empty({rows}, stat_dtype(x.dtype()), device);
  mean = center ? empty({rows}, stat_dtype(x.dtype()), device) : Tensor();
  if (rows == 0 || channels == 0) return out;
  DeviceGuard guard(device.index);
  const cudaStream_t stream = stream_for(x);
  visit_device_float(x.dtype(), op, [&]<typename T>() {
    using C = ComputeT<T>;
    const T* px = static_cast<const T*>(x.raw_data());
    const T* pw = weight.defined() ? static_cast<const T*>(weight.raw_data()) : nullptr;
    const T* pb = bias.defined() ? static_cast<const T*>(bias.raw_data()) : nullptr;
    const T* pr = residual.defined() ? static_cast<const T*>(residual.raw_data()) : nullptr;
    T* py = static_cast<T*>(out.raw_data());
    C* pmean = center ? static_cast<C*>(mean.raw_data()) : nullptr;
    C* prstd = static_cast<C*>(rstd.raw_data());
    constexpr int kVec = Vec16<T>::kCount;
    const int64_t lane_packs = (channels / kVec + kWarp - 1) / kWarp;
    if (channels % kVec == 0 && lane_packs <= kMaxPacks && all_aligned({&x, &weight, &bias, &residual, &out})) {
      visit_packs(lane_packs, [&]<int kPacks>() {
        row_norm_forward_warp_kernel<T, kPacks><<<grid_for(rows, kRowsPerBlock), dim3(kWarp, kRowsPerBlock), 0,
                                                  stream>>>(px, pw, pb, pr, py, pmean, prstd, rows,
                                                            static_cast<int>(channels), static_cast<C>(eps), center);
      });
      check_launch("row_norm_forward_warp_kernel");
    } else {
      row_norm_forward_generic_kernel<T><<<generic_grid(rows, channels), generic_block(channels), 0, stream>>>(
          px, pw, pb, pr, py, pmean, prstd, rows, channels, static_cast<C>(eps), center);
      check_launch("row_norm_forward_generic_kernel");
    }
  });
  return out;
}

}  // namespace

Tensor row_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, bool center,
                        Tensor& mean, Tensor& rstd) {
  return row_norm_forward_impl(x, weight, bias, eps, center, Tensor(), mean, rstd);
}

Tensor add_rms_norm_forward(const Tensor& residual, const Tensor& x, const Tensor& weight, const Tensor& bias,
                            double eps) {
  DCAE_CHECK(residual.shape() == x.shape() && residual.dtype() == x.dtype() && residual.device() == x.device(),
             "add_rms_norm: residual ", residual.str(), " must match x ", x.str());
  Tensor mean, rstd;
  return row_norm_forward_impl(x, weight, bias, eps, /*center=*/false, residual, mean, rstd);
}

}  // namespace dcae::ops::cuda
