#include "ops/cpu/conv2d.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "ops/cpu/cpu_util.h"
#include "ops/cpu/matmul.h"

namespace dcae::ops::cpu {

namespace {

std::atomic<int64_t> g_im2col_chunk_elements{int64_t{1} << 22};  // 16 MiB of f32
constexpr int64_t kMinParallelMacs = int64_t{1} << 17;          // below this a parallel region costs more than it saves

// Sizes of one convolution, with the per-group widths the kernels index by. An im2col row holds one output
// pixel's receptive field laid out [groups, kh, kw, Cin / groups], so each group's columns are one contiguous
// block of `patch_g()` and the weight reordered to [Cout, kh, kw, Cin / groups] multiplies it directly.
struct Geometry {
  int64_t n, h, w, cin, cout, kh, kw, stride, pad, groups, ho, wo;
  int64_t cin_g() const { return cin / groups; }
  int64_t cout_g() const { return cout / groups; }
  int64_t patch_g() const { return kh * kw * cin_g(); }
  int64_t patch() const { return kh * kw * cin; }
  int64_t out_rows() const { return n * ho; }  // one row = wo output pixels
  bool depthwise() const { return groups == cin && groups == cout; }
  bool pointwise() const { return kh == 1 && kw == 1 && stride == 1 && pad == 0; }  // im2col is x itself
};

Geometry make_geometry(const Shape& x, const Shape& weight, const Conv2dParams& p) {
  Geometry g{x[0], x[1], x[2], x[3], weight[0], weight[2], weight[3], p.stride, p.padding, p.groups, 0, 0};
  g.ho = conv2d_output_size(g.h, g.kh, g.stride, g.pad);
  g.wo = conv2d_output_size(g.w, g.kw, g.stride, g.pad);
  return g;
}

int64_t rows_per_chunk(const Geometry& g) {
  const int64_t row_elements = std::max<int64_t>(1, g.wo * g.patch());
  return std::clamp<int64_t>(g_im2col_chunk_elements.load() / row_elements, 1, std::max<int64_t>(g.out_rows(), 1));
}

// Rows of work that cost about `per_row` multiply-adds each, grouped so one parallel task does >= ~32k of them.
int64_t grain_for(int64_t per_row) { return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(per_row, 1)); }

// Runs fn(group) for every group's GEMM of `macs_per_group` multiply-adds: concurrently (each GEMM then
// single-threaded) when the groups alone fill the threads and the work pays for a parallel region, else one after
// another with Eigen threading each GEMM as it sees fit.
template <typename Fn>
void for_each_group(int64_t groups, int64_t macs_per_group, Fn&& fn) {
  if (groups > 1 && groups >= omp_get_max_threads() && groups * macs_per_group >= kMinParallelMacs) {
    parallel_for(groups, 1, [&](int64_t begin, int64_t end) {
      for (int64_t grp = begin; grp < end; ++grp) fn(grp);
    });
  } else {
    for (int64_t grp = 0; grp < groups; ++grp) fn(grp);
  }
}

// The im2col rows of the output pixels in output rows [row_begin, row_end); zero where the field leaves the image.
template <typename T>
void im2col(const Geometry& g, const T* x, int64_t row_begin, int64_t row_end, T* cols) {
  const int64_t cin_g = g.cin_g(), patch = g.patch();
  parallel_for((row_end - row_begin) * g.wo, grain_for(patch), [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t pixel = row_begin * g.wo + q;
      const int64_t ow = pixel % g.wo, row = pixel / g.wo, oh = row % g.ho, n = row / g.ho;
      T* dst = cols + q * patch;
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        for (int64_t i = 0; i < g.kh; ++i) {
          const int64_t h = oh * g.stride - g.pad + i;
          for (int64_t j = 0; j < g.kw; ++j, dst += cin_g) {
            const int64_t w = ow * g.stride - g.pad + j;
            if (h < 0 || h >= g.h || w < 0 || w >= g.w) {
              std::fill(dst, dst + cin_g, T(0));
            } else {
              std::memcpy(dst, x + ((n * g.h + h) * g.w + w) * g.cin + grp * cin_g, cin_g * sizeof(T));
            }
          }
        }
      }
    }
  });
}

// Adds the im2col-shaped gradient of output rows [row_begin, row_end) into dx. Gathered per input row: each input
// row is written by one task only, so chunks of output rows whose fields overlap need no locking.
template <typename T>
void col2im_add(const Geometry& g, const T* cols, int64_t row_begin, int64_t row_end, T* dx) {
  std::vector<int64_t> input_rows;  // n * H + h for every input row the chunk's fields touch
  for (int64_t n = row_begin / g.ho; n <= (row_end - 1) / g.ho; ++n) {
    const int64_t oh_begin = std::max<int64_t>(row_begin - n * g.ho, 0);
    const int64_t oh_end = std::min<int64_t>(row_end - n * g.ho, g.ho);
    const int64_t h_begin = std::max<int64_t>(oh_begin * g.stride - g.pad, 0);
    const int64_t h_end = std::min<int64_t>((oh_end - 1) * g.stride - g.pad + g.kh, g.h);
    for (int64_t h = h_begin; h < h_end; ++h) input_rows.push_back(n * g.h + h);
  }
  const int64_t cin_g = g.cin_g(), patch = g.patch(), patch_g = g.patch_g();
  const int64_t count = static_cast<int64_t>(input_rows.size());
  parallel_for(count, grain_for(g.w * g.patch()), [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t n = input_rows[idx] / g.h, h = input_rows[idx] % g.h;
      for (int64_t i = 0; i < g.kh; ++i) {
        const int64_t t = h + g.pad - i;
        if (t < 0 || t % g.stride != 0 || t / g.stride >= g.ho) continue;
        const int64_t row = n * g.ho + t / g.stride;
        if (row < row_begin || row >= row_end) continue;
        for (int64_t w = 0; w < g.w; ++w) {
          T* dst = dx + ((n * g.h + h) * g.w + w) * g.cin;
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t u = w + g.pad - j;
            if (u < 0 || u % g.stride != 0 || u / g.stride >= g.wo) continue;
            const T* src = cols + ((row - row_begin) * g.wo + u / g.stride) * patch + (i * g.kw + j) * cin_g;
            for (int64_t grp = 0; grp < g.groups; ++grp)
              for (int64_t c = 0; c < cin_g; ++c) dst[grp * cin_g + c] += src[grp * patch_g + c];
          }
        }
      }
    }
  });
}

// Weight [Cout, Cin/g, kh, kw] -> [Cout, kh, kw, Cin/g] (im2col column order), in the compute dtype.
Tensor weight_patch_major(const Tensor& weight) { return compute_input(weight).permute({0, 2, 3, 1}).contiguous(); }
// Depthwise weight [C, 1, kh, kw] -> [kh, kw, C], so the channel loop is contiguous.
Tensor weight_channels_last(const Tensor& weight, const Geometry& g) {
  return compute_input(weight).reshape({g.cout, g.kh * g.kw}).transpose(0, 1).contiguous();
}

// ---- depthwise: out[n, oh, ow, c] = sum_ij x[n, oh*s-p+i, ow*s-p+j, c] * w[i, j, c], vectorised over c ----

template <typename T>
void depthwise_forward(const Geometry& g, const T* x, const T* wt, const T* bias, T* out) {
  const int64_t c = g.cin;
  parallel_for(g.out_rows(), grain_for(g.wo * g.kh * g.kw * c), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / g.ho, oh = row % g.ho;
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        T* o = out + (row * g.wo + ow) * c;
        if (bias != nullptr) std::copy(bias, bias + c, o);
        else std::fill(o, o + c, T(0));
        for (int64_t i = 0; i < g.kh; ++i) {
          const int64_t h = oh * g.stride - g.pad + i;
          if (h < 0 || h >= g.h) continue;
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t w = ow * g.stride - g.pad + j;
            if (w < 0 || w >= g.w) continue;
            const T* xp = x + ((n * g.h + h) * g.w + w) * c;
            const T* wp = wt + (i * g.kw + j) * c;
            for (int64_t ch = 0; ch < c; ++ch) o[ch] += xp[ch] * wp[ch];
          }
        }
      }
    }
  });
}

template <typename T>
void depthwise_backward_input(const Geometry& g, const T* grad, const T* wt, T* dx) {
  const int64_t c = g.cin;
  parallel_for(g.n * g.h, grain_for(g.w * g.kh * g.kw * c), [&](int64_t begin, int64_t end) {
    for (int64_t in_row = begin; in_row < end; ++in_row) {
      const int64_t n = in_row / g.h, h = in_row % g.h;
      for (int64_t w = 0; w < g.w; ++w) {
        T* d = dx + (in_row * g.w + w) * c;
        std::fill(d, d + c, T(0));
        for (int64_t i = 0; i < g.kh; ++i) {
          const int64_t t = h + g.pad - i;
          if (t < 0 || t % g.stride != 0 || t / g.stride >= g.ho) continue;
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t u = w + g.pad - j;
            if (u < 0 || u % g.stride != 0 || u / g.stride >= g.wo) continue;
            const T* gp = grad + ((n * g.ho + t / g.stride) * g.wo + u / g.stride) * c;
            const T* wp = wt + (i * g.kw + j) * c;
            for (int64_t ch = 0; ch < c; ++ch) d[ch] += gp[ch] * wp[ch];
          }
        }
      }
    }
  });
}

// dw[i, j, c] = sum over output pixels of grad * x; each task sums into its own buffer, then merges under a lock.
template <typename T>
void depthwise_backward_weight(const Geometry& g, const T* grad, const T* x, T* dwt) {
  const int64_t c = g.cin, taps = g.kh * g.kw;
  std::fill(dwt, dwt + taps * c, T(0));
  std::mutex merge;
  parallel_for(g.out_rows(), grain_for(g.wo * taps * c), [&](int64_t begin, int64_t end) {
    std::vector<T> local(taps * c, T(0));
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / g.ho, oh = row % g.ho;
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        const T* gp = grad + (row * g.wo + ow) * c;
        for (int64_t i = 0; i < g.kh; ++i) {
          const int64_t h = oh * g.stride - g.pad + i;
          if (h < 0 || h >= g.h) continue;
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t w = ow * g.stride - g.pad + j;
            if (w < 0 || w >= g.w) continue;
            const T* xp = x + ((n * g.h + h) * g.w + w) * c;
            T* lp = local.data() + (i * g.kw + j) * c;
            for (int64_t ch = 0; ch < c; ++ch) lp[ch] += gp[ch] * xp[ch];
          }
        }
      }
    }
    std::lock_guard<std::mutex> lock(merge);
    for (int64_t k = 0; k < taps * c; ++k) dwt[k] += local[k];
  });
}

// Uninitialised scratch for im2col chunks.
template <typename T>
std::unique_ptr<T[]> scratch(int64_t elements) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(elements, 1))]);
}

}  // namespace

int64_t set_im2col_chunk_elements(int64_t elements) {
  return g_im2col_chunk_elements.exchange(std::max<int64_t>(elements, 1));
}

Tensor conv2d_forward(const Tensor& x_in, const Tensor& weight, const Tensor& bias_in, const Conv2dParams& params) {
  const Geometry g = make_geometry(x_in.shape(), weight.shape(), params);
  const Tensor x = compute_input(x_in);
  const Tensor bias = bias_in.defined() ? compute_input(bias_in) : Tensor();
  Tensor out = empty({g.n, g.ho, g.wo, g.cout}, x.dtype());
  visit_float(x.dtype(), "conv2d", [&]<typename T>() {
    const T* px = x.data<T>();
    const T* pbias = bias.defined() ? bias.data<T>() : nullptr;
    T* po = out.data<T>();
    if (g.depthwise()) {
      depthwise_forward(g, px, weight_channels_last(weight, g).data<T>(), pbias, po);
      return;
    }
    // The GEMMs accumulate onto the bias broadcast over the output pixels.
    const int64_t pixels = g.out_rows() * g.wo;
    if (pbias != nullptr) {
      parallel_for(pixels, grain_for(g.cout), [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) std::copy(pbias, pbias + g.cout, po + p * g.cout);
      });
    }
    const Tensor wpm = weight_patch_major(weight);
    const T* pw = wpm.data<T>();
    const int64_t patch = g.patch(), patch_g = g.patch_g(), cout_g = g.cout_g();
    auto multiply = [&](int64_t row_begin, int64_t row_end, const T* cols) {
      T* o = po + row_begin * g.wo * g.cout;
      for_each_group(g.groups, (row_end - row_begin) * g.wo * cout_g * patch_g, [&](int64_t grp) {
        gemm(false, true, (row_end - row_begin) * g.wo, cout_g, patch_g, cols + grp * patch_g, patch,
             pw + grp * cout_g * patch_g, patch_g, o + grp * cout_g, g.cout, pbias != nullptr);
      });
    };
    if (g.pointwise()) {
      multiply(0, g.out_rows(), px);
      return;
    }
    const int64_t chunk = rows_per_chunk(g);
    auto cols = scratch<T>(chunk * g.wo * patch);
    for (int64_t r = 0; r < g.out_rows(); r += chunk) {
      const int64_t r_end = std::min(r + chunk, g.out_rows());
      im2col(g, px, r, r_end, cols.get());
      multiply(r, r_end, cols.get());
    }
  });
  return out.to(x_in.dtype());
}

Tensor conv2d_backward_input(const Tensor& grad_in, const Tensor& weight, const Shape& x_shape,
                             const Conv2dParams& params) {
  const Geometry g = make_geometry(x_shape, weight.shape(), params);
  const Tensor grad = compute_input(grad_in);
  // col2im adds into dx; the other paths overwrite every element.
  const bool via_col2im = !g.depthwise() && !g.pointwise();
  Tensor dx = via_col2im ? zeros(x_shape, grad.dtype()) : empty(x_shape, grad.dtype());
  visit_float(grad.dtype(), "conv2d backward", [&]<typename T>() {
    const T* pg = grad.data<T>();
    T* pdx = dx.data<T>();
    if (g.depthwise()) {
      depthwise_backward_input(g, pg, weight_channels_last(weight, g).data<T>(), pdx);
      return;
    }
    const Tensor wpm = weight_patch_major(weight);
    const T* pw = wpm.data<T>();
    const int64_t patch = g.patch(), patch_g = g.patch_g(), cout_g = g.cout_g();
    // d(im2col rows) = grad_out [pixels, Cout/g] @ weight [Cout/g, patch/g], per group.
    auto multiply = [&](int64_t row_begin, int64_t row_end, T* dcols) {
      const T* go = pg + row_begin * g.wo * g.cout;
      for_each_group(g.groups, (row_end - row_begin) * g.wo * cout_g * patch_g, [&](int64_t grp) {
        gemm(false, false, (row_end - row_begin) * g.wo, patch_g, cout_g, go + grp * cout_g, g.cout,
             pw + grp * cout_g * patch_g, patch_g, dcols + grp * patch_g, patch, false);
      });
    };
    if (g.pointwise()) {
      multiply(0, g.out_rows(), pdx);
      return;
    }
    const int64_t chunk = rows_per_chunk(g);
    auto dcols = scratch<T>(chunk * g.wo * patch);
    for (int64_t r = 0; r < g.out_rows(); r += chunk) {
      const int64_t r_end = std::min(r + chunk, g.out_rows());
      multiply(r, r_end, dcols.get());
      col2im_add(g, dcols.get(), r, r_end, pdx);
    }
  });
  return dx.to(grad_in.dtype());
}

Tensor conv2d_backward_weight(const Tensor& grad_in, const Tensor& x_in, const Shape& weight_shape,
                              const Conv2dParams& params) {
  const Geometry g = make_geometry(x_in.shape(), weight_shape, params);
  const Tensor grad = compute_input(grad_in);
  const Tensor x = compute_input(x_in);
  Tensor dw;
  visit_float(grad.dtype(), "conv2d backward", [&]<typename T>() {
    const T* pg = grad.data<T>();
    const T* px = x.data<T>();
    if (g.depthwise()) {
      Tensor dwt = empty({g.kh * g.kw, g.cout}, grad.dtype());
      depthwise_backward_weight(g, pg, px, dwt.data<T>());
      dw = dwt.transpose(0, 1).contiguous().reshape(weight_shape);
      return;
    }
    // Reordered layout [Cout, kh, kw, Cin/g]; zero-filled so every chunk (and an empty batch) just accumulates.
    Tensor dwpm = zeros({g.cout, g.kh, g.kw, g.cin_g()}, grad.dtype());
    T* pdw = dwpm.data<T>();
    const int64_t patch = g.patch(), patch_g = g.patch_g(), cout_g = g.cout_g();
    // dW [Cout/g, patch/g] += grad_out^T [Cout/g, pixels] @ im2col rows [pixels, patch/g], per group.
    auto multiply = [&](int64_t row_begin, int64_t row_end, const T* cols) {
      const T* go = pg + row_begin * g.wo * g.cout;
      for_each_group(g.groups, (row_end - row_begin) * g.wo * cout_g * patch_g, [&](int64_t grp) {
        gemm(true, false, cout_g, patch_g, (row_end - row_begin) * g.wo, go + grp * cout_g, g.cout,
             cols + grp * patch_g, patch, pdw + grp * cout_g * patch_g, patch_g, true);
      });
    };
    if (g.pointwise()) {
      multiply(0, g.out_rows(), px);
    } else {
      const int64_t chunk = rows_per_chunk(g);
      auto cols = scratch<T>(chunk * g.wo * patch);
      for (int64_t r = 0; r < g.out_rows(); r += chunk) {
        const int64_t r_end = std::min(r + chunk, g.out_rows());
        im2col(g, px, r, r_end, cols.get());
        multiply(r, r_end, cols.get());
      }
    }
    dw = dwpm.permute({0, 3, 1, 2}).contiguous();
  });
  return dw.to(grad_in.dtype());
}

}  // namespace dcae::ops::cpu
