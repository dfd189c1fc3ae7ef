#include "ops/cuda/unary.h"

#include "core/tensor/cuda/kernel_util.cuh"
#include "ops/cuda/math.cuh"

namespace dcae::ops::cuda {

using namespace ::dcae::cuda;

namespace {

constexpr double kGeluC = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kGeluA = 0.044715;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327;  // 1 / sqrt(2 pi)

template <typename C>
__device__ __forceinline__ C sigmoid_of(C x) {
  return C(1) / (C(1) + math::exp(-x));
}

// The CPU's formulas (ops/cpu/unary.cpp) in the compute type C; a and b are the op's scalar parameters.
template <UnaryOp op, typename C>
__device__ __forceinline__ C unary_value(C v, C a, C b) {
  if constexpr (op == UnaryOp::relu) return v > C(0) ? v : C(0);
  else if constexpr (op == UnaryOp::silu) return v * sigmoid_of(v);
  else if constexpr (op == UnaryOp::gelu_tanh)
    return C(0.5) * v * (C(1) + math::tanh(C(kGeluC) * (v + C(kGeluA) * v * v * v)));
  else if constexpr (op == UnaryOp::gelu_erf) return C(0.5) * v * (C(1) + math::erf(v * C(kInvSqrt2)));
  else if constexpr (op == UnaryOp::sigmoid) return sigmoid_of(v);
  else if constexpr (op == UnaryOp::tanh) return math::tanh(v);
  else if constexpr (op == UnaryOp::exp) return math::exp(v);
  else if constexpr (op == UnaryOp::log) return math::log(v);
  else if constexpr (op == UnaryOp::sqrt) return math::sqrt(v);
  else if constexpr (op == UnaryOp::rsqrt) return C(1) / math::sqrt(v);
  else if constexpr (op == UnaryOp::abs) return math::abs(v);
  else if constexpr (op == UnaryOp::square) return v * v;
  else if constexpr (op == UnaryOp::neg) return -v;
  else if constexpr (op == UnaryOp::pow) return math::pow(v, a);
  else if constexpr (op == UnaryOp::add_scalar) return v + a;
  else if constexpr (op == UnaryOp::mul_scalar) return v * a;
  else if constexpr (op == UnaryOp::rsub_scalar) return a - v;
  else if constexpr (op == UnaryOp::leaky_relu) return v > C(0) ? v : a * v;
  else if constexpr (op == UnaryOp::sin) return math::sin(v);
  else if constexpr (op == UnaryOp::cos) return math::cos(v);
  else return v < a ? a : (v > b ? b : v);  // clamp
}

// d * f'(v).
template <UnaryOp op, typename C>
__device__ __forceinline__ C unary_grad(C v, C d, C a, C b) {
  if constexpr (op == UnaryOp::relu) return v > C(0) ? d : C(0);
  else if constexpr (op == UnaryOp::silu) {
    const C s = sigmoid_of(v);
    return d * s * (C(1) + v * (C(1) - s));
  } else if constexpr (op == UnaryOp::gelu_tanh) {
    const C t = math::tanh(C(kGeluC) * (v + C(kGeluA) * v * v * v));
    const C du = C(kGeluC) * (C(1) + C(3 * kGeluA) * v * v);
    return d * (C(0.5) * (C(1) + t) + C(0.5) * v * (C(1) - t * t) * du);
  } else if constexpr (op == UnaryOp::gelu_erf) {
    return d * (C(0.5) * (C(1) + math::erf(v * C(kInvSqrt2))) + v * C(kInvSqrt2Pi) * math::exp(C(-0.5) * v * v));
  } else if constexpr (op == UnaryOp::sigmoid) {
    const C s = sigmoid_of(v);
    return d * s * (C(1) - s);
  } else if constexpr (op == UnaryOp::tanh) {
    const C t = math::tanh(v);
    return d * (C(1) - t * t);
  } else if constexpr (op == UnaryOp::exp) return d * math::exp(v);
  else if constexpr (op == UnaryOp::log) return d / v;
  else if constexpr (op == UnaryOp::sqrt) return d * C(0.5) / math::sqrt(v);
  else if constexpr (op == UnaryOp::rsqrt) return d * C(-0.5) / (v * math::sqrt(v));
  else if constexpr (op == UnaryOp::abs) return v > C(0) ? d : (v < C(0) ? -d : C(0));
  else if constexpr (op == UnaryOp::square) return C(2) * v * d;
  else if constexpr (op == UnaryOp::neg) return -d;
  else if constexpr (op == UnaryOp::pow) return d * a * math::pow(v, a - C(1));
  else if constexpr (op == UnaryOp::add_scalar) return d;
  else if constexpr (op == UnaryOp::mul_scalar) return d * a;
  else if constexpr (op == UnaryOp::rsub_scalar) return -d;
  else if constexpr (op == UnaryOp::leaky_relu) return v > C(0) ? d : a * d;
  else if constexpr (op == UnaryOp::sin) return d * math::cos(v);
  else if constexpr (op == UnaryOp::cos) return -d * math::sin(v);
  else return v >= a && v <= b ? d : C(0);  // clamp
}

// Contiguous data: `vectors` 16-byte chunks (0 when a pointer is misaligned), then the tail.
template <UnaryOp op, typename T>
__global__ void unary_forward_kernel(T* out, const T* x, int64_t n, int64_t vectors, ComputeT<T> a, ComputeT<T> b) {
  using V = Vec16<T>;
  for (int64_t i = global_thread<int64_t>(); i < vectors; i += grid_stride<int64_t>()) {
    const V vx = reinterpret_cast<const V*>(x)[i];
    V vo;
#pragma unroll
    for (int k = 0; k < V::kCount; ++k) vo.v[k] = from_compute<T>(unary_value<op>(to_compute(vx.v[k]), a, b));
    reinterpret_cast<V*>(out)[i] = vo;
  }
  for (int64_t i = vectors * V::kCount + global_thread<int64_t>(); i < n; i += grid_stride<int64_t>())
    out[i] = from_compute<T>(unary_value<op>(to_compute(x[i]), a, b));
}

template <UnaryOp op, typename T>
__global__ void unary_backward_kernel(T* out, const T* grad, const T* x, int64_t n, int64_t vectors, ComputeT<T> a,
                                      ComputeT<T> b) {
  using V = Vec16<T>;
  for (int64_t i = global_thread<int64_t>(); i < vectors; i += grid_stride<int64_t>()) {
    const V vx = reinterpret_cast<const V*>(x)[i];
    const V vg = reinterpret_cast<const V*>(grad)[i];
    V vo;
#pragma unroll
    for (int k = 0; k < V::kCount; ++k)
      vo.v[k] = from_compute<T>(unary_grad<op>(to_compute(vx.v[k]), to_compute(vg.v[k]), a, b));
    reinterpret_cast<V*>(out)[i] = vo;
  }
  for (int64_t i = vectors * V::kCount + global_thread<int64_t>(); i < n; i += grid_stride<int64_t>())
    out[i] = from_compute<T>(unary_grad<op>(to_compute(x[i]), to_compute(grad[i]), a, b));
}

// Calls fn.template operator()<op>() with the op as a compile-time constant.
template <typename Fn>
void visit_unary(UnaryOp op, Fn&& fn) {
  switch (op) {
    case UnaryOp::relu: return fn.template operator()<UnaryOp::relu>();
    case UnaryOp::silu: return fn.template operator()<UnaryOp::silu>();
    case UnaryOp::gelu_tanh: return fn.template operator()<UnaryOp::gelu_tanh>();
    case UnaryOp::gelu_erf: return fn.template operator()<UnaryOp::gelu_erf>();
    case UnaryOp::sigmoid: return fn.template operator()<UnaryOp::sigmoid>();
    case UnaryOp::tanh: return fn.template operator()<UnaryOp::tanh>();
    case UnaryOp::exp: return fn.template operator()<UnaryOp::exp>();
    case UnaryOp::log: return fn.template operator()<UnaryOp::log>();
    case UnaryOp::sqrt: return fn.template operator()<UnaryOp::sqrt>();
    case UnaryOp::rsqrt: return fn.template operator()<UnaryOp::rsqrt>();
    case UnaryOp::abs: return fn.template operator()<UnaryOp::abs>();
    case UnaryOp::square: return fn.template operator()<UnaryOp::square>();
    case UnaryOp::neg: return fn.template operator()<UnaryOp::neg>();
    case UnaryOp::pow: return fn.template operator()<UnaryOp::pow>();
    case UnaryOp::add_scalar: return fn.template operator()<UnaryOp::add_scalar>();
    case UnaryOp::mul_scalar: return fn.template operator()<UnaryOp::mul_scalar>();
    case UnaryOp::rsub_scalar: return fn.template operator()<UnaryOp::rsub_scalar>();
    case UnaryOp::clamp: return fn.template operator()<UnaryOp::clamp>();
    case UnaryOp::leaky_relu: return fn.template operator()<UnaryOp::leaky_relu>();
    case UnaryOp::sin: return fn.template operator()<UnaryOp::sin>();
    case UnaryOp::cos: return fn.template operator()<UnaryOp::cos>();
  }
}

template <typename T>
int64_t vector_count(int64_t n, std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (!aligned16(p)) return 0;
  return n / Vec16<T>::kCount;
}

}  // namespace

Tensor unary_forward(UnaryOp op, const Tensor& x_in, double p0, double p1) {
  const Tensor x = x_in.contiguous();
  Tensor out = empty(x.shape(), x.dtype(), x.device());
  const int64_t n = x.numel();
  if (n == 0) return out;
  DeviceGuard guard(x.device().index);
  const cudaStream_t stream = stream_for(x);
  visit_device_float(x.dtype(), unary_name(op), [&]<typename T>() {
    using C = ComputeT<T>;
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    const int64_t vectors = vector_count<T>(n, {px, po});
    visit_unary(op, [&]<UnaryOp kOp>() {
      unary_forward_kernel<kOp, T><<<grid_for(vectors > 0 ? vectors : n), kBlockThreads, 0, stream>>>(
          po, px, n, vectors, static_cast<C>(p0), static_cast<C>(p1));
    });
  });
  check_launch("unary_forward_kernel");
  return out;
}

Tensor unary_backward(UnaryOp op, const Tensor& grad_in, const Tensor& x_in, double p0, double p1) {
  // Mixed dtypes compute in x's compute dtype, as on the CPU; the result has grad's dtype.
  const bool same = grad_in.dtype() == x_in.dtype();
  const DType compute = x_in.dtype() == DType::f64 ? DType::f64 : DType::f32;
  const Tensor x = (same ? x_in : x_in.to(compute)).contiguous();
  const Tensor grad = (same ? grad_in : grad_in.to(compute)).contiguous();
  Tensor out = empty(x.shape(), x.dtype(), x.device());
  const int64_t n = x.numel();
  if (n > 0) {
    DeviceGuard guard(x.device().index);
    const cudaStream_t stream = stream_for(x);
    visit_device_float(x.dtype(), unary_name(op), [&]<typename T>() {
      using C = ComputeT<T>;
      const T* px = static_cast<const T*>(x.raw_data());
      const T* pg = static_cast<const T*>(grad.raw_data());
      T* po = static_cast<T*>(out.raw_data());
      const int64_t vectors = vector_count<T>(n, {px, pg, po});
      visit_unary(op, [&]<UnaryOp kOp>() {
        unary_backward_kernel<kOp, T><<<grid_for(vectors > 0 ? vectors : n), kBlockThreads, 0, stream>>>(
            po, pg, px, n, vectors, static_cast<C>(p0), static_cast<C>(p1));
      });
    });
    check_launch("unary_backward_kernel");
  }
  return same ? out : out.to(grad_in.dtype());
}

}  // namespace dcae::ops::cuda
