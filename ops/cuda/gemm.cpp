#include "ops/cuda/gemm.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <unordered_map>
#include <vector>

#include "core/tensor/cuda/check.h"
#include "core/tensor/cuda/stream.h"
#include "ops/cuda/math_mode.h"
#include "ops/cuda/plan_key.h"

namespace dcae::ops::cuda {

namespace {

void check_cublas(cublasStatus_t status, const char* call) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  DCAE_FAIL(call, " failed: ", cublasGetStatusName(status), " (", cublasGetStatusString(status), ")");
}
#define DCAE_CUBLAS_CHECK(call) check_cublas((call), #call)

// Workspace offered to cuBLASLt (NVIDIA's recommendation for Hopper); blocks come from the caching allocator.
constexpr uint64_t kMaxWorkspaceBytes = uint64_t{32} << 20;

// Algorithms asked of cuBLASLt's heuristic per problem; large problems time them all once (see choose_timed).
constexpr int kHeuristicResults = 8;
// Problems of at least this many multiply-adds are worth timing: below it a GEMM is a few microseconds and the
// heuristic's first answer is as good as any measurable difference.
constexpr double kTimedMinMacs = double(1 << 30);

std::atomic<GemmBackend> g_backend{GemmBackend::automatic};

bool env_flag(const char* name, bool fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  return std::strcmp(value, "0") != 0 && std::strcmp(value, "false") != 0 && std::strcmp(value, "off") != 0;
}

std::atomic<bool>& autotune_flag() {
  static std::atomic<bool> flag{env_flag("DCAE_GEMM_AUTOTUNE", true)};
  return flag;
}

// Handles hold the stream set on them, so every thread has its own per device. They are never destroyed: at
// process exit the driver may be gone before thread-local destructors run.
template <typename Handle, typename Create>
Handle thread_handle(std::vector<Handle>& handles, int device, Create&& create) {
  if (static_cast<int>(handles.size()) <= device) handles.resize(device + 1, nullptr);
  if (handles[device] == nullptr) {
    ::dcae::cuda::DeviceGuard guard(device);
    create(&handles[device]);
  }
  return handles[device];
}

cublasLtHandle_t lt_handle(int device) {
  thread_local std::vector<cublasLtHandle_t> handles;
  return thread_handle(handles, device, [](cublasLtHandle_t* h) { DCAE_CUBLAS_CHECK(cublasLtCreate(h)); });
}

cublasHandle_t classic_handle(int device) {
  thread_local std::vector<cublasHandle_t> handles;
  return thread_handle(handles, device, [](cublasHandle_t* h) { DCAE_CUBLAS_CHECK(cublasCreate(h)); });
}

struct Types {
  cudaDataType_t data;
  cublasComputeType_t compute;
  bool double_scale;  // alpha/beta are double (f64) rather than float
};

Types types_for(DType dtype, bool tf32) {
  switch (dtype) {
    case DType::f32: return {CUDA_R_32F, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, false};
    case DType::f64: return {CUDA_R_64F, CUBLAS_COMPUTE_64F, true};
    case DType::bf16: return {CUDA_R_16BF, CUBLAS_COMPUTE_32F, false};
    case DType::f16: return {CUDA_R_16F, CUBLAS_COMPUTE_32F, false};
    default: break;
  }
  DCAE_FAIL("GEMM on CUDA supports f32, f64, bf16 and f16, got ", dtype);
}

// cuBLASLt picks kernels by operand alignment, up to 256 bytes.
int64_t alignment_of(const void* ptr) { return pointer_alignment(ptr, 256); }

// Everything the chosen algorithm depends on (row-major problem terms; see make_plan for cuBLAS's view).
using GemmKey = PlanKey<21>;

// A cuBLASLt matmul description and the algorithm its heuristic chose (found == false: use classic cuBLAS).
struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;  // cuBLAS's A (our b), B (our a), C = D
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
  bool found = false;
  std::vector<cublasLtMatmulHeuristicResult_t> candidates;  // the heuristic's usable answers, best first
  LtPlan() = default;
  LtPlan(const LtPlan&) = delete;
  LtPlan& operator=(const LtPlan&) = delete;
  ~LtPlan() {
    if (d != nullptr) cublasLtMatrixLayoutDestroy(d);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

struct Problem {
  DType dtype;
  int device;
  int64_t m, n, k, batch;
  GemmInput a, b;
  GemmOutput out;
  const void* bias;
  int64_t bias_batch_stride;
};

template <typename Value>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, const Value& value) {
  DCAE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)));
}

// A stored row-major matrix of `rows` x `cols` with row stride ld is, to column-major cuBLAS, a cols x rows
// matrix with leading dimension ld.
cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                                   int64_t batch_stride) {
  cublasLtMatrixLayout_t layout = nullptr;
  DCAE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(cols),
                                               static_cast<uint64_t>(rows), ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    DCAE_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                                       sizeof(count)));
    DCAE_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                       &batch_stride, sizeof(batch_stride)));
  }
  return layout;
}

// Row-major out = op(a) op(b) is column-major out^T = op(b)^T op(a)^T: cuBLAS's A is our b, its B our a, and
// its m, n are our n, m. A stored operand keeps its transpose flag (op(b)^T of a stored b^T is b^T itself).
std::unique_ptr<LtPlan> make_plan(const Problem& p, const Types& types) {
  auto plan = std::make_unique<LtPlan>();
  DCAE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, types.compute, types.double_scale ? CUDA_R_64F : CUDA_R_32F));
  const cublasOperation_t op_a = p.b.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = p.a.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, op_a);
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, op_b);
  if (p.bias != nullptr) {
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BIAS);
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, static_cast<int32_t>(types.data));
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, p.bias);  // the heuristic reads its alignment
    if (p.batch > 1) set_desc(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, p.bias_batch_stride);
  }
  // Stored shapes (row-major): b is k x n (n x k when transposed), a is m x k (k x m), out m x n.
  plan->a = make_layout(types.data, p.b.transposed ? p.n : p.k, p.b.transposed ? p.k : p.n, p.b.ld, p.batch,
                        p.b.batch_stride);
  plan->b = make_layout(types.data, p.a.transposed ? p.k : p.m, p.a.transposed ? p.m : p.k, p.a.ld, p.batch,
                        p.a.batch_stride);
  plan->d = make_layout(types.data, p.m, p.n, p.out.ld, p.batch, p.out.batch_stride);

  cublasLtMatmulPreference_t preference = nullptr;
  DCAE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
  const auto set_preference = [&](cublasLtMatmulPreferenceAttributes_t attribute, const auto& value) {
    DCAE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof(value)));
  };
  set_preference(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, kMaxWorkspaceBytes);
  set_preference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, static_cast<uint32_t>(alignment_of(p.b.data)));
  set_preference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, static_cast<uint32_t>(alignment_of(p.a.data)));
  set_preference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, static_cast<uint32_t>(alignment_of(p.out.data)));
  set_preference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, static_cast<uint32_t>(alignment_of(p.out.data)));
  std::vector<cublasLtMatmulHeuristicResult_t> results(kHeuristicResults);
  int found = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(lt_handle(p.device), plan->desc, plan->a, plan->b, plan->d, plan->d, preference,
                                     kHeuristicResults, results.data(), &found);
  cublasLtMatmulPreferenceDestroy(preference);
  // A failed query (NOT_SUPPORTED, or INVALID_VALUE for a combination cuBLASLt rejects, such as some epilogues)
  // means no cuBLASLt kernel for this problem: the caller falls back, and a real fault surfaces there.
  if (status == CUBLAS_STATUS_SUCCESS)
    for (int i = 0; i < found; ++i)
      if (results[i].state == CUBLAS_STATUS_SUCCESS) plan->candidates.push_back(results[i]);
  plan->found = !plan->candidates.empty();
  if (plan->found) {
    plan->algo = plan->candidates.front().algo;
    plan->workspace = plan->candidates.front().workspaceSize;
  }
  return plan;
}

GemmKey key_for(const Problem& p, bool tf32) {
  return GemmKey{{static_cast<int64_t>(p.dtype), p.device, tf32, p.m, p.n, p.k, p.batch, p.a.ld, p.a.batch_stride,
                  p.a.transposed, p.b.ld, p.b.batch_stride, p.b.transposed, p.out.ld, p.out.batch_stride,
                  p.bias != nullptr, p.bias_batch_stride, alignment_of(p.a.data), alignment_of(p.b.data),
                  alignment_of(p.out.data), p.bias != nullptr ? alignment_of(p.bias) : 0}};
}

void choose_timed(const Problem& p, LtPlan& plan, const Types& types, cudaStream_t stream);

const LtPlan& plan_for(const Problem& p, const Types& types, bool tf32, cudaStream_t stream) {
  thread_local std::unordered_map<GemmKey, std::unique_ptr<LtPlan>, PlanKeyHash<21>> cache;
  std::unique_ptr<LtPlan>& slot = cache[key_for(p, tf32)];
  if (!slot) {
    slot = make_plan(p, types);
    choose_timed(p, *slot, types, stream);
  }
  return *slot;
}

struct Scalars {
  float f[2] = {1.0f, 0.0f};
  double d[2] = {1.0, 0.0};
  const void* alpha(bool double_scale) const { return double_scale ? static_cast<const void*>(&d[0]) : &f[0]; }
  const void* beta(bool double_scale) const { return double_scale ? static_cast<const void*>(&d[1]) : &f[1]; }
};

bool run_lt(const Problem& p, const LtPlan& plan, const Types& types, cudaStream_t stream) {
  if (p.bias != nullptr) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, p.bias);
  Tensor workspace;
  if (plan.workspace > 0)
    workspace = empty({static_cast<int64_t>(plan.workspace)}, DType::u8, Device::cuda(p.device));
  const Scalars s;
  DCAE_CUBLAS_CHECK(cublasLtMatmul(lt_handle(p.device), plan.desc, s.alpha(types.double_scale), p.b.data, plan.a,
                                   p.a.data, plan.b, s.beta(types.double_scale), p.out.data, plan.d, p.out.data,
                                   plan.d, &plan.algo, workspace.defined() ? workspace.raw_data() : nullptr,
                                   plan.workspace, stream));
  return p.bias != nullptr;
}

// Times the heuristic's candidates on the problem's own buffers (the output is only written) and keeps the
// fastest: a warm-up, then the best of three runs each. Only for large problems, with autotuning on, and never
// while the stream is being captured into a CUDA graph (events cannot be waited on there): then the heuristic's
// first answer stays.
void choose_timed(const Problem& p, LtPlan& plan, const Types& types, cudaStream_t stream) {
  const double macs = static_cast<double>(p.m) * p.n * p.k * p.batch;
  if (plan.candidates.size() < 2 || macs < kTimedMinMacs || !autotune_flag().load()) return;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  DCAE_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return;
  const int device = p.device;
  double best = std::numeric_limits<double>::infinity();
  cublasLtMatmulHeuristicResult_t chosen = plan.candidates.front();
  for (const cublasLtMatmulHeuristicResult_t& candidate : plan.candidates) {
    plan.algo = candidate.algo;
    plan.workspace = candidate.workspaceSize;
    double ms = std::numeric_limits<double>::infinity();
    try {
      run_lt(p, plan, types, stream);
      for (int rep = 0; rep < 3; ++rep) {
        ::dcae::cuda::Event start(true), stop(true);
        start.record(::dcae::cuda::current_stream(device));
        run_lt(p, plan, types, stream);
        stop.record(::dcae::cuda::current_stream(device));
        stop.synchronize();
        ms = std::min<double>(ms, start.elapsed_ms(stop));
      }
    } catch (const Error&) {  // a candidate that cannot run after all is simply not chosen
    }
    if (ms < best) best = ms, chosen = candidate;
  }
  plan.algo = chosen.algo;
  plan.workspace = chosen.workspaceSize;
}

void run_classic(const Problem& p, const Types& types, cudaStream_t stream) {
  const cublasHandle_t handle = classic_handle(p.device);
  DCAE_CUBLAS_CHECK(cublasSetStream(handle, stream));
  // Without TF32 the classic path asks for strict fp32 so no math-mode default can bring TF32 back.
  const cublasComputeType_t compute =
      types.compute == CUBLAS_COMPUTE_32F && p.dtype == DType::f32 ? CUBLAS_COMPUTE_32F_PEDANTIC : types.compute;
  const Scalars s;
  DCAE_CUBLAS_CHECK(cublasGemmStridedBatchedEx_64(
      handle, p.b.transposed ? CUBLAS_OP_T : CUBLAS_OP_N, p.a.transposed ? CUBLAS_OP_T : CUBLAS_OP_N, p.n, p.m, p.k,
      s.alpha(types.double_scale), p.b.data, types.data, p.b.ld, p.b.batch_stride, p.a.data, types.data, p.a.ld,
      p.a.batch_stride, s.beta(types.double_scale), p.out.data, types.data, p.out.ld, p.out.batch_stride, p.batch,
      compute, CUBLAS_GEMM_DEFAULT));
}

void fill_zeros(const Problem& p, cudaStream_t stream) {
  const size_t element = dtype_size(p.dtype);
  for (int64_t i = 0; i < p.batch; ++i) {
    char* base = static_cast<char*>(p.out.data) + i * p.out.batch_stride * element;
    DCAE_CUDA_CHECK(cudaMemset2DAsync(base, p.out.ld * element, 0, p.n * element, p.m, stream));
  }
}

}  // namespace

GemmBackend set_gemm_backend(GemmBackend backend) { return g_backend.exchange(backend); }

bool set_gemm_autotune(bool autotune) { return autotune_flag().exchange(autotune); }

bool gemm(DType dtype, int device, int64_t m, int64_t n, int64_t k, int64_t batch, const GemmInput& a,
          const GemmInput& b, const GemmOutput& out, const void* bias, int64_t bias_batch_stride) {
  DCAE_CHECK(m >= 0 && n >= 0 && k >= 0 && batch >= 0, "gemm: negative size m ", m, ", n ", n, ", k ", k,
             ", batch ", batch);
  DCAE_CHECK(batch <= std::numeric_limits<int32_t>::max(), "gemm: batch of ", batch, " matrices is too many");
  if (m == 0 || n == 0 || batch == 0) return bias != nullptr;
  ::dcae::cuda::DeviceGuard guard(device);
  const cudaStream_t stream = ::dcae::cuda::current_stream(device).handle();
  const Problem p{dtype, device, m, n, k, batch, a, b, out, bias, bias_batch_stride};
  if (k == 0) {
    fill_zeros(p, stream);
    return false;
  }
  const bool tf32 = allow_tf32();
  const Types types = types_for(dtype, tf32);
  if (g_backend.load() == GemmBackend::automatic) {
    const LtPlan& plan = plan_for(p, types, tf32, stream);
    if (plan.found) return run_lt(p, plan, types, stream);
    if (bias != nullptr) {  // perhaps only the epilogue is unsupported: the plain product may still have a kernel
      Problem plain = p;
      plain.bias = nullptr;
      const LtPlan& plain_plan = plan_for(plain, types, tf32, stream);
      if (plain_plan.found) return run_lt(plain, plain_plan, types, stream);
    }
  }
  run_classic(p, types, stream);
  return false;
}

}  // namespace dcae::ops::cuda
