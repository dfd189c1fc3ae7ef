#include "trainer/cuda/multi_tensor_adamw.h"

#include <cmath>
#include <cstring>
#include <memory>

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

// One element of the update, in the CPU kernel's operation order (trainer/optim/update_math.cpp).
template <typename T>
struct ElementScalars {
  T decay, one_minus_beta1, beta2, one_minus_beta2, step_size, bc2_sqrt, eps;
};

template <typename T>
__device__ __forceinline__ void update_element(T* master, T* exp_avg, T* exp_avg_sq, void* param, int32_t param_dtype,
                                               int64_t i, T g, const ElementScalars<T>& s) {
  const T p = mul(master[i], s.decay);
  const T m = add(exp_avg[i], mul(s.one_minus_beta1, sub(g, exp_avg[i])));
  const T v = add(mul(exp_avg_sq[i], s.beta2), mul(mul(s.one_minus_beta2, g), g));
  const T denom = add(div(root(v), s.bc2_sqrt), s.eps);
  const T updated = sub(p, mul(s.step_size, div(m, denom)));
  master[i] = updated;
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
  if (param != nullptr) store_param(param, param_dtype, i, updated);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) adamw_kernel(const TensorArgs<T>* tensors, const Chunk* chunks) {
  const Chunk chunk = chunks[blockIdx.x];
  const TensorArgs<T> a = tensors[chunk.tensor];  // a register copy: the stores below cannot alias it
  const ElementScalars<T> s{a.decay, a.one_minus_beta1, a.beta2, a.one_minus_beta2, a.step_size, a.bc2_sqrt, a.eps};
  const int64_t end = min(chunk.begin + kChunkElements, a.numel);
  for (int64_t i = chunk.begin + threadIdx.x; i < end; i += kThreads)
    update_element(a.master, a.exp_avg, a.exp_avg_sq, a.param, a.param_dtype, i,
                   load_grad<T>(a.grad, a.grad_dtype, i), s);
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

// ---- The capturable form: tables as kernel parameters, per-step scalars from device memory. ----

constexpr int kBatchTensors = 256;  // tensors per launch: about 21 KB of kernel parameters (CUDA 12.1+ allows 32 KB)

template <typename T>
struct CapturableArgs {
  T* master;
  const void* grad;
  T* exp_avg;
  T* exp_avg_sq;
  void* param;
  int64_t* step;
  int64_t numel;
  double weight_decay;
  int32_t grad_dtype, param_dtype, group;
};

template <typename T>
struct CapturableBatch {
  CapturableArgs<T> tensors[kBatchTensors];
  int32_t first_chunk[kBatchTensors + 1];  // block b works on the last tensor k with first_chunk[k] <= b
  int32_t count;
  CapturableAdamWScalars scalars;
};

struct StepCounters {
  int64_t* step[kBatchTensors];
  int32_t count;
  const float* grad_norm;
};

__device__ __forceinline__ bool step_skipped(const float* grad_norm) {
  return grad_norm != nullptr && !isfinite(*grad_norm);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) capturable_adamw_kernel(const __grid_constant__ CapturableBatch<T> batch) {
  __shared__ ElementScalars<T> shared_scalars;
  __shared__ T grad_scale;
  __shared__ bool skip, scale_grads;
  int lo = 0, hi = batch.count - 1;  // binary search for this block's tensor
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (batch.first_chunk[mid] <= static_cast<int32_t>(blockIdx.x)) lo = mid;
    else hi = mid - 1;
  }
  const CapturableArgs<T>& a = batch.tensors[lo];
  if (threadIdx.x == 0) {
    // The host's formulas of multi_tensor_adamw, in double, with the step count and lr read from the device.
    const CapturableAdamWScalars& c = batch.scalars;
    skip = step_skipped(c.grad_norm);
    const double lr = c.group_lrs[a.group];
    const double t = static_cast<double>(*a.step + 1);
    const double bias_correction1 = __dsub_rn(1.0, pow(c.beta1, t));
    const double bias_correction2_sqrt = __dsqrt_rn(__dsub_rn(1.0, pow(c.beta2, t)));
    shared_scalars = {static_cast<T>(__dsub_rn(1.0, __dmul_rn(lr, a.weight_decay))),
                      static_cast<T>(__dsub_rn(1.0, c.beta1)),
                      static_cast<T>(c.beta2),
                      static_cast<T>(__dsub_rn(1.0, c.beta2)),
                      static_cast<T>(__ddiv_rn(lr, bias_correction1)),
                      static_cast<T>(bias_correction2_sqrt),
                      static_cast<T>(c.eps)};
    const double norm = c.grad_norm != nullptr ? static_cast<double>(*c.grad_norm) : 0.0;
    scale_grads = !skip && c.max_norm > 0.0 && norm > c.max_norm;
    grad_scale = scale_grads ? static_cast<T>(__ddiv_rn(c.max_norm, __dadd_rn(norm, 1e-6))) : T(1);
  }
  __syncthreads();
  if (skip) return;
  const ElementScalars<T> s = shared_scalars;
  const int64_t begin = static_cast<int64_t>(blockIdx.x - batch.first_chunk[lo]) * kChunkElements;
  const int64_t end = min(begin + kChunkElements, a.numel);
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    T g = load_grad<T>(a.grad, a.grad_dtype, i);
    if (scale_grads) g = mul(g, grad_scale);
    update_element(a.master, a.exp_avg, a.exp_avg_sq, a.param, a.param_dtype, i, g, s);
  }
}

// Runs after the update kernel of the same tensors: the step counts advance once per tensor and step.
__global__ void advance_steps_kernel(const __grid_constant__ StepCounters counters) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k < counters.count && !step_skipped(counters.grad_norm)) *counters.step[k] += 1;
}

template <typename T>
void launch_capturable(const std::vector<const CapturableAdamWTensor*>& list, const CapturableAdamWScalars& scalars,
                       cudaStream_t stream) {
  auto batch = std::make_unique<CapturableBatch<T>>();
  auto counters = std::make_unique<StepCounters>();
  for (size_t start = 0; start < list.size(); start += kBatchTensors) {
    const size_t count = std::min<size_t>(kBatchTensors, list.size() - start);
    int64_t chunks = 0;
    for (size_t k = 0; k < count; ++k) {
      const CapturableAdamWTensor& t = *list[start + k];
      CapturableArgs<T>& a = batch->tensors[k];
      a.master = static_cast<T*>(t.master.raw_data());
      a.grad = t.grad.raw_data();
      a.exp_avg = static_cast<T*>(t.exp_avg.raw_data());
      a.exp_avg_sq = static_cast<T*>(t.exp_avg_sq.raw_data());
      a.param = t.param.defined() ? t.param.raw_data() : nullptr;
      a.step = static_cast<int64_t*>(t.step.raw_data());
      a.numel = t.master.numel();
      a.weight_decay = t.weight_decay;
      a.grad_dtype = static_cast<int32_t>(t.grad.dtype());
      a.param_dtype = t.param.defined() ? static_cast<int32_t>(t.param.dtype()) : 0;
      a.group = t.group;
      batch->first_chunk[k] = static_cast<int32_t>(chunks);
      chunks += (a.numel + kChunkElements - 1) / kChunkElements;
      counters->step[k] = a.step;
    }
    DCAE_CHECK(chunks < (int64_t{1} << 31), "multi_tensor_adamw_capturable: ", chunks, " chunks are too many for one launch");
    batch->first_chunk[count] = static_cast<int32_t>(chunks);
    batch->count = counters->count = static_cast<int32_t>(count);
    batch->scalars = scalars;
    counters->grad_norm = scalars.grad_norm;
    if (chunks > 0) {
      capturable_adamw_kernel<T><<<static_cast<unsigned>(chunks), kThreads, 0, stream>>>(*batch);
      check_launch("capturable_adamw_kernel");
    }
    advance_steps_kernel<<<(static_cast<unsigned>(count) + 127) / 128, 128, 0, stream>>>(*counters);
    check_launch("advance_steps_kernel");
  }
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

void multi_tensor_adamw_capturable(const std::vector<CapturableAdamWTensor>& tensors,
                                   const CapturableAdamWScalars& scalars) {
  if (tensors.empty()) return;
  const Device device = tensors.front().master.device();
  DCAE_CHECK(device.is_cuda(), "multi_tensor_adamw_capturable: tensors on ", device, ", expected a GPU");
  DCAE_CHECK(scalars.group_lrs != nullptr, "multi_tensor_adamw_capturable: no device buffer of group learning rates");
  for (const CapturableAdamWTensor& t : tensors) {
    DCAE_CHECK(t.master.device() == device && t.grad.device() == device && t.exp_avg.device() == device &&
                   t.exp_avg_sq.device() == device && (!t.param.defined() || t.param.device() == device),
               "multi_tensor_adamw_capturable: every tensor must be on ", device, ", got master ", t.master.str());
    DCAE_CHECK(t.step.defined() && t.step.device() == device && t.step.dtype() == DType::i64 && t.step.numel() == 1,
               "multi_tensor_adamw_capturable: the step count of ", t.master.str(),
               " must be one int64 on ", device, ", got ", t.step.defined() ? t.step.str() : "(undefined)");
    DCAE_CHECK(t.group >= 0, "multi_tensor_adamw_capturable: negative group index ", t.group);
  }
  DeviceGuard guard(device.index);
  const cudaStream_t stream = current_stream(device.index).handle();
  std::vector<const CapturableAdamWTensor*> f32, f64;
  for (const CapturableAdamWTensor& t : tensors) (t.master.dtype() == DType::f64 ? f64 : f32).push_back(&t);
  if (!f32.empty()) launch_capturable<float>(f32, scalars, stream);
  if (!f64.empty()) launch_capturable<double>(f64, scalars, stream);
}

}  // namespace dcae::trainer::cuda
