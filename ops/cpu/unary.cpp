#include "ops/cpu/unary.h"

#include <cmath>

#include "ops/cpu/cpu_util.h"

namespace dcae::ops::cpu {

namespace {

constexpr double kGeluC = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kGeluA = 0.044715;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327;  // 1 / sqrt(2 pi)

// Runs out[i] = f(x[i]) (or f(x[i], g[i])) over contiguous compute-dtype buffers.
template <typename T, typename F>
void map1(const T* x, T* out, int64_t n, F f) {
  parallel_for(n, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = f(x[i]);
  });
}
template <typename T, typename F>
void map2(const T* x, const T* g, T* out, int64_t n, F f) {
  parallel_for(n, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = f(x[i], g[i]);
  });
}

template <typename T>
T sigmoid_of(T x) { return T(1) / (T(1) + std::exp(-x)); }

}  // namespace

Tensor unary_forward(UnaryOp op, const Tensor& x_in, double p0, double p1) {
  const Tensor x = compute_input(x_in);
  Tensor out = empty(x.shape(), x.dtype());
  visit_float(x.dtype(), unary_name(op), [&]<typename T>() {
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const int64_t n = x.numel();
    const T a = static_cast<T>(p0), b = static_cast<T>(p1);
    switch (op) {
      case UnaryOp::relu: map1(px, po, n, [](T v) { return v > T(0) ? v : T(0); }); break;
      case UnaryOp::silu: map1(px, po, n, [](T v) { return v * sigmoid_of(v); }); break;
      case UnaryOp::gelu_tanh:
        map1(px, po, n, [](T v) {
          return T(0.5) * v * (T(1) + std::tanh(T(kGeluC) * (v + T(kGeluA) * v * v * v)));
        });
        break;
      case UnaryOp::gelu_erf:
        map1(px, po, n, [](T v) { return T(0.5) * v * (T(1) + std::erf(v * T(kInvSqrt2))); });
        break;
      case UnaryOp::sigmoid: map1(px, po, n, [](T v) { return sigmoid_of(v); }); break;
      case UnaryOp::tanh: map1(px, po, n, [](T v) { return std::tanh(v); }); break;
      case UnaryOp::exp: map1(px, po, n, [](T v) { return std::exp(v); }); break;
      case UnaryOp::log: map1(px, po, n, [](T v) { return std::log(v); }); break;
      case UnaryOp::sqrt: map1(px, po, n, [](T v) { return std::sqrt(v); }); break;
      case UnaryOp::rsqrt: map1(px, po, n, [](T v) { return T(1) / std::sqrt(v); }); break;
      case UnaryOp::abs: map1(px, po, n, [](T v) { return std::abs(v); }); break;
      case UnaryOp::square: map1(px, po, n, [](T v) { return v * v; }); break;
      case UnaryOp::neg: map1(px, po, n, [](T v) { return -v; }); break;
      case UnaryOp::pow: map1(px, po, n, [a](T v) { return std::pow(v, a); }); break;
      case UnaryOp::add_scalar: map1(px, po, n, [a](T v) { return v + a; }); break;
      case UnaryOp::mul_scalar: map1(px, po, n, [a](T v) { return v * a; }); break;
      case UnaryOp::rsub_scalar: map1(px, po, n, [a](T v) { return a - v; }); break;
      case UnaryOp::clamp: map1(px, po, n, [a, b](T v) { return v < a ? a : (v > b ? b : v); }); break;
      case UnaryOp::leaky_relu: map1(px, po, n, [a](T v) { return v > T(0) ? v : a * v; }); break;
      case UnaryOp::sin: map1(px, po, n, [](T v) { return std::sin(v); }); break;
      case UnaryOp::cos: map1(px, po, n, [](T v) { return std::cos(v); }); break;
    }
  });
  return out.to(x_in.dtype());
}

Tensor unary_backward(UnaryOp op, const Tensor& grad_in, const Tensor& x_in, double p0, double p1) {
  const Tensor x = compute_input(x_in);
  const Tensor g = grad_in.to(x.dtype()).contiguous();
  Tensor out = empty(x.shape(), x.dtype());
  visit_float(x.dtype(), unary_name(op), [&]<typename T>() {
    const T* px = x.data<T>();
    const T* pg = g.data<T>();
    T* po = out.data<T>();
    const int64_t n = x.numel();
    const T a = static_cast<T>(p0), b = static_cast<T>(p1);
    switch (op) {
      case UnaryOp::relu: map2(px, pg, po, n, [](T v, T d) { return v > T(0) ? d : T(0); }); break;
      case UnaryOp::silu:
        map2(px, pg, po, n, [](T v, T d) {
          const T s = sigmoid_of(v);
          return d * s * (T(1) + v * (T(1) - s));
        });
        break;
      case UnaryOp::gelu_tanh:
        map2(px, pg, po, n, [](T v, T d) {
          const T t = std::tanh(T(kGeluC) * (v + T(kGeluA) * v * v * v));
          const T du = T(kGeluC) * (T(1) + T(3 * kGeluA) * v * v);
          return d * (T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * du);
        });
        break;
      case UnaryOp::gelu_erf:  // Phi(x) + x phi(x)
        map2(px, pg, po, n, [](T v, T d) {
          return d * (T(0.5) * (T(1) + std::erf(v * T(kInvSqrt2))) + v * T(kInvSqrt2Pi) * std::exp(T(-0.5) * v * v));
        });
        break;
      case UnaryOp::sigmoid:
        map2(px, pg, po, n, [](T v, T d) {
          const T s = sigmoid_of(v);
          return d * s * (T(1) - s);
        });
        break;
      case UnaryOp::tanh:
        map2(px, pg, po, n, [](T v, T d) {
          const T t = std::tanh(v);
          return d * (T(1) - t * t);
        });
        break;
      case UnaryOp::exp: map2(px, pg, po, n, [](T v, T d) { return d * std::exp(v); }); break;
      case UnaryOp::log: map2(px, pg, po, n, [](T v, T d) { return d / v; }); break;
      case UnaryOp::sqrt: map2(px, pg, po, n, [](T v, T d) { return d * T(0.5) / std::sqrt(v); }); break;
      case UnaryOp::rsqrt:
        map2(px, pg, po, n, [](T v, T d) { return d * T(-0.5) / (v * std::sqrt(v)); });
        break;
      case UnaryOp::abs:
        map2(px, pg, po, n, [](T v, T d) { return v > T(0) ? d : (v < T(0) ? -d : T(0)); });
        break;
      case UnaryOp::square: map2(px, pg, po, n, [](T v, T d) { return T(2) * v * d; }); break;
      case UnaryOp::neg: map2(px, pg, po, n, [](T, T d) { return -d; }); break;
      case UnaryOp::pow: map2(px, pg, po, n, [a](T v, T d) { return d * a * std::pow(v, a - T(1)); }); break;
      case UnaryOp::add_scalar: map2(px, pg, po, n, [](T, T d) { return d; }); break;
      case UnaryOp::mul_scalar: map2(px, pg, po, n, [a](T, T d) { return d * a; }); break;
      case UnaryOp::rsub_scalar: map2(px, pg, po, n, [](T, T d) { return -d; }); break;
      case UnaryOp::clamp: map2(px, pg, po, n, [a, b](T v, T d) { return v >= a && v <= b ? d : T(0); }); break;
      case UnaryOp::leaky_relu: map2(px, pg, po, n, [a](T v, T d) { return v > T(0) ? d : a * d; }); break;
      case UnaryOp::sin: map2(px, pg, po, n, [](T v, T d) { return d * std::cos(v); }); break;
      case UnaryOp::cos: map2(px, pg, po, n, [](T v, T d) { return -d * std::sin(v); }); break;
    }
  });
  return out.to(grad_in.dtype());
}

}  // namespace dcae::ops::cpu
