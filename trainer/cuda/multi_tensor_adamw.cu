#include "trainer/cuda/multi_tensor_adamw.h"

#include <cmath>
#include <cstring>

#include "core/tensor/cuda/kernel_util.cuh"

namespace dcae::trainer::cuda {

using namespace ::dcae::cuda;

namespace {

constexpr int64_t kChunkElements = 1 << 16;  // elements per block
constexpr int kThreads = 256;

// One tensor of the launch. Scalars are in the master's precision, computed on the host as the CPU kernel does.
template <typename T>
struct TensorArgs {
  T* master;
  const void* grad;
  T* exp_avg;
  T* exp_avg_sq;
  void* param;  // null: no low-precision copy to refresh
  int64_t numel;
  int32_t grad_dtype, param_dtype;  // DType values
  T decay, one_minus_beta1, beta2, one_minus_beta2, step_size, bc2_sqrt, eps;
};

struct Chunk {
  int64_t tensor, begin;
};

template <typename T>
__device__ __forceinline__ T load_grad(const void* g, int32_t dtype, int64_t i) {
  switch (static_cast<DType>(dtype)) {
    case DType::f64: return static_cast<T>(static_cast<const double*>(g)[i]);
    case DType::bf16: return static_cast<T>(__bfloat162float(static_cast<const __nv_bfloat16*>(g)[i]));
    case DType::f16: return static_cast<T>(__half2float(static_cast<const __half*>(g)[i]));
    default: return static_cast<T>(static_cast<const float*>(g)[i]);
  }
}

template <typename T>
__device__ __forceinline__ void store_param(void* p, int32_t dtype, int64_t i, T v) {
  switch (static_cast<DType>(dtype)) {
    case DType::f64: static_cast<double*>(p)[i] = static_cast<double>(v); break;
    case DType::bf16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(v)); break;
    case DType::f16: static_cast<__half*>(p)[i] = __float2half_rn(static_cast<float>(v)); break;
    default: static_cast<float*>(p)[i] = static_cast<float>(v); break;
  }
}

// IEEE round-to-nearest arithmetic without contraction, in T.
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ float root(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double div(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ double root(double a) { return __dsqrt_rn(a); }

template <typename T>
__global__ void __launch_bounds__(kThreads) adamw_kernel(const TensorArgs<T>* tensors, const Chunk* chunks) {
  const Chunk chunk = chunks[blockIdx.x];
  const TensorArgs<T> a = tensors[chunk.tensor];  // a register copy: the stores below cannot alias it
  const int64_t end = min(chunk.begin + kChunkElements, a.numel);
  for (int64_t i = chunk.begin + threadIdx.x; i < end; i += kThreads) {
    const T g = load_grad<T>(a.grad, a.grad_dtype, i);
    const T p = mul(a.master[i], a.decay);
    const T m = add(a.exp_avg[i], mul(a.one_minus_beta1, sub(g, a.exp_avg[i])));
    const T v = add(mul(a.exp_avg_sq[i], a.beta2), mul(mul(a.one_minus_beta2, g), g));
    const T denom = add(div(root(v), a.bc2_sqrt), a.eps);
    const T updated = sub(p, mul(a.step_size, div(m, denom)));
    a.master[i] = updated;
    a.exp_avg[i] = m;
    a.exp_avg_sq[i] = v;
    if (a.param != nullptr) store_param(a.param, a.param_dtype, i, updated);
  }
}

// Copies `bytes` of host data into a fresh device buffer (kept alive by the returned tensor; the caching allocator
// orders its reuse after the kernels queued on this stream).
Tensor to_device(const std::vector<unsigned char>& bytes, const Device& device) {
  Tensor host = empty({static_cast<int64_t>(bytes.size())}, DType::u8);
  std::memcpy(host.raw_data(), bytes.data(), bytes.size());
  return host.to(device);
}

template <typename T>
void launch(const std::vector<const AdamWTensors*>& list, const Device& device) {
  std::vector<TensorArgs<T>> args;
  std::vector<Chunk> chunks;
  for (const AdamWTensors* t : list) {
    const AdamWHyper& h = t->hyper;
    const int64_t n = t->master.numel();
    if (n == 0) continue;
    TensorArgs<T> a{};
    a.master = static_cast<T*>(t->master.raw_data());
    a.grad = t->grad.raw_data();
    a.exp_avg = static_cast<T*>(t->exp_avg.raw_data());
    a.exp_avg_sq = static_cast<T*>(t->exp_avg_sq.raw_data());
    a.param = t->param.defined() ? t->param.raw_data() : nullptr;
    a.numel = n;
    a.grad_dtype = static_cast<int32_t>(t->grad.dtype());
    a.param_dtype = t->param.defined() ? static_cast<int32_t>(t->param.dtype()) : 0;
    // The CPU kernel's scalars (trainer/optim/update_math.cpp), computed the same way.
    const double bias_correction1 = 1.0 - std::pow(h.beta1, static_cast<double>(h.step));
    const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(h.beta2, static_cast<double>(h.step)));
    a.decay = static_cast<T>(1.0 - h.lr * h.weight_decay);
    a.one_minus_beta1 = static_cast<T>(1.0 - h.beta1);
    a.beta2 = static_cast<T>(h.beta2);
    a.one_minus_beta2 = static_cast<T>(1.0 - h.beta2);
    a.step_size = static_cast<T>(h.lr / bias_correction1);
    a.bc2_sqrt = static_cast<T>(bias_correction2_sqrt);
    a.eps = static_cast<T>(h.eps);
    for (int64_t begin = 0; begin < n; begin += kChunkElements)
      chunks.push_back({static_cast<int64_t>(args.size()), begin});
    args.push_back(a);
  }
  if (chunks.empty()) return;
  std::vector<unsigned char> table(args.size() * sizeof(TensorArgs<T>) + chunks.size() * sizeof(Chunk));
  std::memcpy(table.data(), args.data(), args.size() * sizeof(TensorArgs<T>));
  std::memcpy(table.data() + args.size() * sizeof(TensorArgs<T>), chunks.data(), chunks.size() * sizeof(Chunk));
  const Tensor on_device = to_device(table, device);
  const auto* base = static_cast<const unsigned char*>(on_device.raw_data());
  DCAE_CHECK(chunks.size() < (size_t{1} << 31), "multi_tensor_adamw: ", chunks.size(), " chunks are too many for one launch");
  adamw_kernel<T><<<static_cast<unsigned>(chunks.size()), kThreads, 0, current_stream(device.index).handle()>>>(
      reinterpret_cast<const TensorArgs<T>*>(base),
      reinterpret_cast<const Chunk*>(base + args.size() * sizeof(TensorArgs<T>)));
  check_launch("adamw_kernel");
}

}  // namespace

void multi_tensor_adamw(const std::vector<AdamWTensors>& tensors) {
  if (tensors.empty()) return;
  const Device device = tensors.front().master.device();
  DeviceGuard guard(device.index);
  std::vector<const AdamWTensors*> f32, f64;
  for (const AdamWTensors& t : tensors) (t.master.dtype() == DType::f64 ? f64 : f32).push_back(&t);
  if (!f32.empty()) launch<float>(f32, device);
  if (!f64.empty()) launch<double>(f64, device);
}

}  // namespace dcae::trainer::cuda
