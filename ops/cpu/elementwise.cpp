#include "ops/cpu/elementwise.h"

#include <algorithm>
#include <type_traits>

#include "core/tensor/strided.h"
#include "ops/cpu/cpu_util.h"

namespace dcae::ops::cpu {

namespace {

// Arithmetic type for element type T: bf16/f16 compute in float.
template <typename T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double,
                               std::conditional_t<std::is_integral_v<T>, T, float>>;

template <typename T, typename F>
void binary_loop(const Tensor& out, const Tensor& a, const Tensor& b, F f) {
  T* o = static_cast<T*>(out.raw_data());
  const T* pa = static_cast<const T*>(a.raw_data());
  const T* pb = static_cast<const T*>(b.raw_data());
  if (a.is_contiguous() && b.is_contiguous()) {  // same shape as out after expand only if strides are dense
    parallel_for(out.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) o[i] = T(f(static_cast<Acc<T>>(pa[i]), static_cast<Acc<T>>(pb[i])));
    });
    return;
  }
  const std::array<Shape, 3> strides{out.strides(), a.strides(), b.strides()};
  for_each_row<3>(out.shape(), strides, [&](const std::array<int64_t, 3>& base, int64_t n, const std::array<int64_t, 3>& step) {
    for (int64_t i = 0; i < n; ++i)
      o[base[0] + i * step[0]] = T(f(static_cast<Acc<T>>(pa[base[1] + i * step[1]]),
                                     static_cast<Acc<T>>(pb[base[2] + i * step[2]])));
  });
}

}  // namespace

Tensor binary_forward(BinaryOp op, const Tensor& a_in, const Tensor& b_in) {
  const Shape shape = broadcast_shapes(a_in.shape(), b_in.shape());
  Tensor out = empty(shape, a_in.dtype());
  // Expanded views have zero strides; a dense input of the full shape keeps the contiguous fast path.
  const Tensor a = a_in.expand(shape), b = b_in.expand(shape);
  visit_dtype(a.dtype(), [&]<typename T>() {
    if constexpr (std::is_same_v<T, bool>) {
      DCAE_FAIL("arithmetic on bool tensors is not supported (", a.str(), ")");
    } else {
      using A = Acc<T>;
      switch (op) {
        case BinaryOp::add: binary_loop<T>(out, a, b, [](A x, A y) { return x + y; }); break;
        case BinaryOp::sub: binary_loop<T>(out, a, b, [](A x, A y) { return x - y; }); break;
        case BinaryOp::mul: binary_loop<T>(out, a, b, [](A x, A y) { return x * y; }); break;
        case BinaryOp::div: binary_loop<T>(out, a, b, [](A x, A y) { return x / y; }); break;
        case BinaryOp::maximum: binary_loop<T>(out, a, b, [](A x, A y) { return x >= y ? x : y; }); break;
        case BinaryOp::minimum: binary_loop<T>(out, a, b, [](A x, A y) { return x <= y ? x : y; }); break;
        case BinaryOp::ge: binary_loop<T>(out, a, b, [](A x, A y) { return A(x >= y ? 1 : 0); }); break;
        case BinaryOp::gt: binary_loop<T>(out, a, b, [](A x, A y) { return A(x > y ? 1 : 0); }); break;
        case BinaryOp::le: binary_loop<T>(out, a, b, [](A x, A y) { return A(x <= y ? 1 : 0); }); break;
        case BinaryOp::lt: binary_loop<T>(out, a, b, [](A x, A y) { return A(x < y ? 1 : 0); }); break;
        case BinaryOp::eq: binary_loop<T>(out, a, b, [](A x, A y) { return A(x == y ? 1 : 0); }); break;
      }
    }
  });
  return out;
}

Tensor where_forward(const Tensor& cond_in, const Tensor& a_in, const Tensor& b_in) {
  const Shape shape = broadcast_shapes(broadcast_shapes(cond_in.shape(), a_in.shape()), b_in.shape());
  Tensor out = empty(shape, a_in.dtype());
  const Tensor cond = cond_in.to(DType::u8).expand(shape), a = a_in.expand(shape), b = b_in.expand(shape);
  const std::array<Shape, 4> strides{out.strides(), cond.strides(), a.strides(), b.strides()};
  visit_dtype(a.dtype(), [&]<typename T>() {
    T* o = static_cast<T*>(out.raw_data());
    const uint8_t* c = static_cast<const uint8_t*>(cond.raw_data());
    const T* pa = static_cast<const T*>(a.raw_data());
    const T* pb = static_cast<const T*>(b.raw_data());
    for_each_row<4>(shape, strides, [&](const std::array<int64_t, 4>& base, int64_t n, const std::array<int64_t, 4>& step) {
      for (int64_t i = 0; i < n; ++i)
        o[base[0] + i * step[0]] = c[base[1] + i * step[1]] ? pa[base[2] + i * step[2]] : pb[base[3] + i * step[3]];
    });
  });
  return out;
}

}  // namespace dcae::ops::cpu
