#include "trainer/cpu_float_mode.h"

#include <omp.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define DCAE_HAS_MXCSR 1
#endif

namespace dcae::trainer {

bool flush_denormals_on_all_threads() {
#ifdef DCAE_HAS_MXCSR
  constexpr unsigned kFlushToZero = 0x8000, kDenormalsAreZero = 0x0040;
  _mm_setcsr(_mm_getcsr() | kFlushToZero | kDenormalsAreZero);
  // The OpenMP pool outlives parallel regions, so setting each member's MXCSR once covers later kernels.
#pragma omp parallel
  { _mm_setcsr(_mm_getcsr() | kFlushToZero | kDenormalsAreZero); }
  return true;
#else
  return false;
#endif
}

}  // namespace dcae::trainer
