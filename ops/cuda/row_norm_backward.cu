// RMSNorm / LayerNorm backward (ops/cuda/norm.h).
//
// Fast path: one warp per row computes grad_x with the row in registers and keeps per-lane partial sums of the
// parameter gradients across the rows its warp visits; each block adds its warps' partials in warp order and writes
// one partial per block, and a column reduction sums the blocks in order (deterministic). Other shapes take a scalar
// path for grad_x and a column reduction over the rows for the parameter gradients.
#include "core/tensor/cuda/kernel_util.cuh"
#include "ops/cuda/math.cuh"
#include "ops/cuda/norm.h"
#include "ops/cuda/row_norm_common.cuh"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;
using namespace norm_detail;

namespace {

// grad_x (when dx is non-null) and, with kParams, per-block partial parameter gradients partial[block] =
// [sum dy * xhat (C values), sum dy (C values)] over the rows the block visits. Needs 2 * C compute values of
// dynamic shared memory with kParams.
template <typename T, int kPacks, bool kParams>
__global__ void __launch_bounds__(kWarpBlockThreads)
    row_norm_backward_warp_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ weight,
                                  const ComputeT<T>* __restrict__ mean, const ComputeT<T>* __restrict__ rstd,
                                  T* __restrict__ dx, ComputeT<T>* __restrict__ partial, int64_t rows, int channels,
                                  bool center) {
  using C = ComputeT<T>;
  using V = Vec16<T>;
  constexpr int kVec = V::kCount;
  constexpr int kAccPacks = kParams ? kPacks : 1;
  const int lane = threadIdx.x;
  const int packs = channels / kVec;
  const C inv_count = C(1) / C(channels);
  C acc_w[kAccPacks][kVec], acc_b[kAccPacks][kVec];
#pragma unroll
  for (int p = 0; p < kAccPacks; ++p)
#pragma unroll
    for (int k = 0; k < kVec; ++k) acc_w[p][k] = acc_b[p][k] = C(0);

  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y; row < rows;
       row += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const C mu = center ? mean[row] : C(0), rs = rstd[row];
    const V* xr = reinterpret_cast<const V*>(x + row * channels);
    const V* gr = reinterpret_cast<const V*>(dy + row * channels);
    C xhat[kPacks][kVec], g[kPacks][kVec];
    C sum_g = 0, sum_gx = 0;  // of dy * w and dy * w * xhat
#pragma unroll
    for (int p = 0; p < kPacks; ++p) {
      const int i = p * kWarp + lane;
      if (i < packs) {
        const V vx = xr[i], vg = gr[i];
        C w[kVec];
        load_param_pack<T, kVec>(weight, i, C(1), w);
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          xhat[p][k] = (to_compute(vx.v[k]) - mu) * rs;
          g[p][k] = to_compute(vg.v[k]);
          const C gw = g[p][k] * w[k];
          sum_g += gw;
          sum_gx += gw * xhat[p][k];
        }
      } else {
#pragma unroll
        for (int k = 0; k < kVec; ++k) xhat[p][k] = g[p][k] = C(0);
      }
    }
    if (dx != nullptr) {
      // dx = rstd * (dy w - mean(dy w) - xhat * mean(dy w xhat)); RMSNorm drops the mean(dy w) term.
      const C mean_g = center ? warp_all_sum(sum_g) * inv_count : C(0);
      const C mean_gx = warp_all_sum(sum_gx) * inv_count;
      V* out_row = reinterpret_cast<V*>(dx + row * channels);
#pragma unroll
      for (int p = 0; p < kPacks; ++p) {
        const int i = p * kWarp + lane;
        if (i < packs) {
          C w[kVec];
          load_param_pack<T, kVec>(weight, i, C(1), w);
          V out;
#pragma unroll
          for (int k = 0; k < kVec; ++k)
            out.v[k] = from_compute<T>(rs * (g[p][k] * w[k] - mean_g - xhat[p][k] * mean_gx));
          out_row[i] = out;
        }
      }
    }
    if constexpr (kParams) {
#pragma unroll
      for (int p = 0; p < kPacks; ++p)
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          acc_w[p][k] += g[p][k] * xhat[p][k];  // zero beyond the row, so no bounds check
          acc_b[p][k] += g[p][k];
        }
    }
  }
  if constexpr (kParams) {
    extern __shared__ unsigned char shared_raw[];
    C* sums = reinterpret_cast<C*>(shared_raw);  // [2 * channels]
    const int tid = threadIdx.y * kWarp + lane;
    for (int i = tid; i < 2 * channels; i += kWarpBlockThreads) sums[i] = C(0);
    __syncthreads();
    for (int warp = 0; warp < kRowsPerBlock; ++warp) {  // warp order, so the block's sum is reproducible
      if (threadIdx.y == warp) {
#pragma unroll
        for (int p = 0; p < kPacks; ++p) {
          const int i = p * kWarp + lane;
          if (i < packs) {
#pragma unroll
            for (int k = 0; k < kVec; ++k) {
              sums[i * kVec + k] += acc_w[p][k];
              sums[channels + i * kVec + k] += acc_b[p][k];
            }
          }
        }
      }
      __syncthreads();
    }
    C* dst = partial + static_cast<int64_t>(blockIdx.x) * 2 * channels;
    for (int i = tid; i < 2 * channels; i += kWarpBlockThreads) dst[i] = sums[i];
  }
}

// Scalar path for grad_x: a row per warp or per block, re-reading the row.
template <typename T>
__global__ void row_norm_backward_generic_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                                 const T* __restrict__ weight, const ComputeT<T>* __restrict__ mean,
                                                 const ComputeT<T>* __restrict__ rstd, T* __restrict__ dx,
                                                 int64_t rows, int64_t channels, bool center) {
  using C = ComputeT<T>;
  __shared__ C scratch[kWarp];
  const C inv_count = C(1) / C(channels);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const C mu = center ? mean[row] : C(0), rs = rstd[row];
    const T* xr = x + row * channels;
    const T* gr = dy + row * channels;
    C sum_g = 0, sum_gx = 0;
    for (int64_t c = threadIdx.x; c < channels; c += blockDim.x) {
      const C gw = to_compute(gr[c]) * param_or(weight, c, C(1));
      sum_g += gw;
      sum_gx += gw * (to_compute(xr[c]) - mu) * rs;
    }
    const C mean_g = center ? row_group_sum(sum_g, scratch) * inv_count : C(0);
    const C mean_gx = row_group_sum(sum_gx, scratch) * inv_count;
    T* out = dx + row * channels;
    for (int64_t c = threadIdx.x; c < channels; c += blockDim.x) {
      const C xhat = (to_compute(xr[c]) - mu) * rs;
      out[c] = from_compute<T>(rs * (to_compute(gr[c]) * param_or(weight, c, C(1)) - mean_g - xhat * mean_gx));
    }
  }
}

// Terms of the parameter gradients for channel_sums: (dy * xhat, dy) per element.
template <typename T>
struct RowParamTerm {
  const T* dy;
  const T* x;
  const ComputeT<T>* mean;  // null for RMSNorm
  const ComputeT<T>* rstd;
  __device__ double2 operator()(int64_t, int64_t row, int64_t, int64_t index) const {
    const double g = to_compute(dy[index]);
    const double mu = mean == nullptr ? 0.0 : static_cast<double>(mean[row]);
    return make_double2(g * (static_cast<double>(to_compute(x[index])) - mu) * static_cast<double>(rstd[row]), g);
  }
};

// The warp kernel's per-block partials [blocks, 2, C] read as rows for channel_sums.
template <typename A>
struct BlockPartialTerm {
  const A* partial;
  int64_t channels;
  __device__ double2 operator()(int64_t, int64_t block, int64_t c, int64_t) const {
    const A* p = partial + block * 2 * channels;
    return make_double2(static_cast<double>(p[c]), static_cast<double>(p[channels + c]));
  }
};

}  // namespace

std::vector<Tensor> row_norm_backward(const Tensor& grad, const Tensor& x_in, const Tensor& weight_in,
                                      const Tensor& mean_in, const Tensor& rstd_in, bool center, NormGradMask needs) {
  const char* op = center ? "layer_norm backward" : "rms_norm backward";
  const Tensor x = x_in.contiguous();
  check_parameter(op, weight_in, x);
  const Tensor weight = weight_in.defined() ? weight_in.contiguous() : Tensor();
  const Tensor dy = grad.to(x.dtype()).contiguous();
  const DType sd = stat_dtype(x.dtype());
  const Tensor rstd = rstd_in.to(sd).contiguous();
  const Tensor mean = center ? mean_in.to(sd).contiguous() : Tensor();
  const int64_t channels = x.shape().back();
  const int64_t rows = x.numel() / std::max<int64_t>(channels, 1);
  const Device device = x.device();
  const bool need_params = needs[1] || needs[2];
  Tensor gx = needs[0] ? empty(x.shape(), x.dtype(), device) : Tensor();
  Tensor gw = needs[1] ? empty({channels}, x.dtype(), device) : Tensor();
  Tensor gb = needs[2] ? empty({channels}, x.dtype(), device) : Tensor();
  if (rows == 0 || channels == 0) {
    if (gw.defined()) gw.zero_();
    if (gb.defined()) gb.zero_();
    return {gx, gw, gb};
  }
  DeviceGuard guard(device.index);
  const cudaStream_t stream = stream_for(x);
  visit_device_float(x.dtype(), op, [&]<typename T>() {
    using C = ComputeT<T>;
    const T* px = static_cast<const T*>(x.raw_data());
    const T* pg = static_cast<const T*>(dy.raw_data());
    const T* pw = weight.defined() ? static_cast<const T*>(weight.raw_data()) : nullptr;
    const C* pmean = center ? static_cast<const C*>(mean.raw_data()) : nullptr;
    const C* prstd = static_cast<const C*>(rstd.raw_data());
    T* pgx = needs[0] ? static_cast<T*>(gx.raw_data()) : nullptr;
    Tensor sums;  // [1, 2, C] f64: (sum dy * xhat, sum dy) per channel
    constexpr int kVec = Vec16<T>::kCount;
    const int64_t lane_packs = (channels / kVec + kWarp - 1) / kWarp;
    if (channels % kVec == 0 && lane_packs <= kMaxBackwardPacks && all_aligned({&x, &dy, &weight, &gx})) {
      visit_packs(lane_packs, [&]<int kPacks>() {
        if constexpr (kPacks <= kMaxBackwardPacks) {
          const dim3 block(kWarp, kRowsPerBlock);
          if (!need_params) {
            row_norm_backward_warp_kernel<T, kPacks, false><<<grid_for(rows, kRowsPerBlock), block, 0, stream>>>(
                pg, px, pw, pmean, prstd, pgx, nullptr, rows, static_cast<int>(channels), center);
            check_launch("row_norm_backward_warp_kernel");
            return;
          }
          // Enough blocks to fill the device; each writes one partial row of 2C values.
          const int64_t blocks = std::min<int64_t>((rows + kRowsPerBlock - 1) / kRowsPerBlock,
                                                   4 * multiprocessor_count(device.index));
          Tensor partial = empty({blocks, 2, channels}, sd, device);
          row_norm_backward_warp_kernel<T, kPacks, true>
              <<<static_cast<unsigned>(blocks), block, 2 * channels * sizeof(C), stream>>>(
                  pg, px, pw, pmean, prstd, pgx, static_cast<C*>(partial.raw_data()), rows,
                  static_cast<int>(channels), center);
          check_launch("row_norm_backward_warp_kernel");
          sums = channel_sums(BlockPartialTerm<C>{static_cast<const C*>(partial.raw_data()), channels}, 1, blocks,
                              channels, device, stream);
        }
      });
    } else {
      if (pgx != nullptr) {
        row_norm_backward_generic_kernel<T><<<generic_grid(rows, channels), generic_block(channels), 0, stream>>>(
            pg, px, pw, pmean, prstd, pgx, rows, channels, center);
        check_launch("row_norm_backward_generic_kernel");
      }
      if (need_params) sums = channel_sums(RowParamTerm<T>{pg, px, pmean, prstd}, 1, rows, channels, device, stream);
    }
    const unsigned grid = grid_for(channels);
    if (needs[1]) {
      parameter_grad_kernel<T><<<grid, kBlockThreads, 0, stream>>>(sums.data<double>(), static_cast<T*>(gw.raw_data()),
                                                                   1, channels, 0);
      check_launch("parameter_grad_kernel");
    }
    if (needs[2]) {
      parameter_grad_kernel<T><<<grid, kBlockThreads, 0, stream>>>(sums.data<double>(), static_cast<T*>(gb.raw_data()),
                                                                   1, channels, 1);
      check_launch("parameter_grad_kernel");
    }
  });
  return {gx, gw, gb};
}

}  // namespace dcae::ops::cuda
