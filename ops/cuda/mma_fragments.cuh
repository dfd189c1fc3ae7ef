// Warp-level tensor-core fragments for mma.sync.aligned.m16n8k16 (bf16/f16 in, fp32 accumulators) and ldmatrix
// loads from shared memory (.cu files only). Fragment layouts (PTX ISA), lane = 4 * g + t:
//   A (16x16): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B (16x8):  b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g)
//   C (16x8):  c0, c1 = (g, 2t..2t+1), c2, c3 = (g+8, 2t..2t+1)
// so the accumulators of two adjacent n-tiles are exactly an A operand (accumulators_to_a). Tiles in shared memory
// are row-major with a pitch in elements; every row start must be 16-byte aligned.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace dcae::ops::cuda::mma_detail {

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}

__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(shared_address(p)));
}

__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(shared_address(p)));
}

// 16-byte global-to-shared copy that bypasses the registers (cp.async.cg); `bytes` = 0 writes zeros and reads
// nothing, so rows and columns past the end of an operand become zero padding.
__device__ __forceinline__ void cp_async_16(void* shared, const void* global, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(shared)), "l"(global),
               "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `kPending` of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// c += a * b for one 16x8x8 tile (a: a0, a1 of the 16x16 layout; b: b0).
template <typename T>
__device__ __forceinline__ void mma_k8(float (&c)[4], const uint32_t (&a)[2], uint32_t b) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5}, {%6}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b));
  } else {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5}, {%6}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b));
  }
}

// c += a * b for one 16x8x16 tile.
template <typename T>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two floats rounded to T, `lo` in the low half (the lower column).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t bits;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    memcpy(&bits, &v, 4);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&bits, &v, 4);
  }
  return bits;
}

__device__ __forceinline__ int lane_id() { return threadIdx.x % 32; }

// A operand: rows [row0, row0 + 16) x k [k0, k0 + 16) of a row-major tile.
template <typename T>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const T* tile, int pitch, int row0, int k0) {
  const int lane = lane_id();
  ldmatrix_x4(a, tile + (row0 + (lane & 15)) * pitch + k0 + (lane >> 4) * 8);
}

// B operands of the n-tiles n0 and n0 + 8 (b[0..1] and b[2..3]) for k [k0, k0 + 16), from a tile stored [n][k].
template <typename T>
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const T* tile, int pitch, int n0, int k0) {
  const int lane = lane_id();
  ldmatrix_x4(b, tile + (n0 + (lane & 7) + ((lane >> 4) << 3)) * pitch + k0 + ((lane >> 3) & 1) * 8);
}

// The same from a tile stored [k][n] (transposed by ldmatrix).
template <typename T>
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const T* tile, int pitch, int k0, int n0) {
  const int lane = lane_id();
  ldmatrix_x4_trans(b, tile + (k0 + (lane & 7) + (((lane >> 3) & 1) << 3)) * pitch + n0 + ((lane >> 4) << 3));
}

// The k8 A operand: rows [row0, row0 + 16) x k [k0, k0 + 8) of a row-major tile (a head-size tail).
template <typename T>
__device__ __forceinline__ void load_a_k8(uint32_t (&a)[2], const T* tile, int pitch, int row0, int k0) {
  ldmatrix_x2(a, tile + (row0 + (lane_id() & 15)) * pitch + k0);
}

// k8 B operands of the four n-tiles n0, n0 + 8, n0 + 16, n0 + 24 (b[0..3]) for k [k0, k0 + 8), tile stored [n][k].
template <typename T>
__device__ __forceinline__ void load_b4_nk_k8(uint32_t (&b)[4], const T* tile, int pitch, int n0, int k0) {
  ldmatrix_x4(b, tile + (n0 + lane_id()) * pitch + k0);
}

// B operand (b[0..1]) of the single n-tile n0 for k [k0, k0 + 16), tile stored [k][n] (a head-size tail).
template <typename T>
__device__ __forceinline__ void load_b1_kn(uint32_t (&b)[2], const T* tile, int pitch, int k0, int n0) {
  ldmatrix_x2_trans(b, tile + (k0 + (lane_id() & 15)) * pitch + n0);
}

// A operand (16 rows x 16 k) from a tile stored transposed, [k][m] (ldmatrix .trans).
template <typename T>
__device__ __forceinline__ void load_a_km(uint32_t (&a)[4], const T* tile, int pitch, int row0, int k0) {
  const int lane = lane_id(), matrix = lane >> 3;
  ldmatrix_x4_trans(a, tile + (k0 + (matrix >> 1) * 8 + (lane & 7)) * pitch + row0 + (matrix & 1) * 8);
}

// The A operand (16 rows x 16 k) made of two accumulator n-tiles, rounded to T.
template <typename T>
__device__ __forceinline__ void accumulators_to_a(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack2<T>(lo[0], lo[1]);
  a[1] = pack2<T>(lo[2], lo[3]);
  a[2] = pack2<T>(hi[0], hi[1]);
  a[3] = pack2<T>(hi[2], hi[3]);
}

}  // namespace dcae::ops::cuda::mma_detail
