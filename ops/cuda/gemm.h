// Batched row-major GEMMs on raw device buffers through cuBLASLt, for the matmul and conv2d kernels.
//
// Operands are described by strides, so transposed views, sub-matrices, broadcast (stride-0) batches and the
// per-group slices of a grouped 1x1 convolution all run without copies. bf16/f16 multiply on tensor cores with
// fp32 accumulation; f32 accumulates in fp32 without TF32 unless allow_tf32() (ops/cuda/math_mode.h); f64 in
// fp64. The algorithm is chosen once per problem (shape, strides, alignment) and kept in a per-thread cache:
// cuBLASLt's heuristic proposes up to 8, and for large problems (>= 2^30 multiply-adds) all are timed on the first
// call's own buffers and the fastest kept (so warm up a shape before capturing it in a CUDA graph; inside a
// capture the heuristic's first answer is kept); the workspace comes from the caching allocator. Problems cuBLASLt has no algorithm for go to
// cublasGemmStridedBatchedEx.
#pragma once
#include <cstdint>

#include "core/tensor/tensor.h"

namespace dcae::ops::cuda {

// Matrix i of a batch starts at data + i * batch_stride elements; rows of the stored matrix are `ld` elements
// apart (row-major). When `transposed`, the stored matrix is the transpose of the GEMM operand.
struct GemmInput {
  const void* data = nullptr;
  int64_t ld = 0;
  int64_t batch_stride = 0;
  bool transposed = false;
};

struct GemmOutput {
  void* data = nullptr;
  int64_t ld = 0;
  int64_t batch_stride = 0;
};

// out[i] (m x n) = op(a[i]) (m x k) @ op(b[i]) (k x n) for i in [0, batch), every buffer in `dtype` on the GPU
// `device`, queued on that device's current stream. When `bias` is given (n elements, matrix i reading
// bias + i * bias_batch_stride), it is added to every row in the GEMM's epilogue where cuBLASLt can; returns
// whether it was, so the caller adds it otherwise. k == 0 writes zeros (plus the bias).
bool gemm(DType dtype, int device, int64_t m, int64_t n, int64_t k, int64_t batch, const GemmInput& a,
          const GemmInput& b, const GemmOutput& out, const void* bias = nullptr, int64_t bias_batch_stride = 0);

// Which library runs the GEMMs: cuBLASLt with the classic cuBLAS as its fallback (the default), or always the
// classic path (for tests of the fallback). Returns the previous setting.
enum class GemmBackend { automatic, cublas_only };
GemmBackend set_gemm_backend(GemmBackend backend);

// Whether large GEMMs time cuBLASLt's candidate algorithms on first use (the default; DCAE_GEMM_AUTOTUNE=0 turns
// it off at start-up) or take the heuristic's first. Plans already chosen stay. Returns the previous setting.
bool set_gemm_autotune(bool autotune);

}  // namespace dcae::ops::cuda
