// DCAE_KERNEL routing: marked kernels go to ops::cuda for CUDA tensors, unmarked ones throw "no CUDA kernel yet".
// No GPU needed: only Device values are dispatched.
#include <gtest/gtest.h>

#include <string>

#include "ops/dispatch.h"

namespace dcae::ops {
namespace cpu {
int probe_unported_kernel(int value) { return value; }
int probe_routed_kernel(int value) { return value; }
}  // namespace cpu
namespace cuda {
int probe_routed_kernel(int value) { return -value; }
}  // namespace cuda
}  // namespace dcae::ops

#define DCAE_CUDA_KERNEL_probe_routed_kernel ~,

namespace dcae {
namespace {

TEST(Dispatch, CpuTensorsAlwaysUseCpuKernels) {
  EXPECT_EQ(DCAE_KERNEL(Device::cpu(), probe_unported_kernel, 3), 3);
  EXPECT_EQ(DCAE_KERNEL(Device::cpu(), probe_routed_kernel, 3), 3);
}

TEST(Dispatch, UnportedKernelThrowsNamingIt) {
  try {
    DCAE_KERNEL(Device::cuda(0), probe_unported_kernel, 3);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("probe_unported_kernel"), std::string::npos) << message;
#ifdef DCAE_WITH_CUDA
    EXPECT_NE(message.find("has no CUDA kernel yet"), std::string::npos) << message;
#else
    EXPECT_NE(message.find("no CUDA backend"), std::string::npos) << message;
#endif
  }
}

#ifdef DCAE_WITH_CUDA
TEST(Dispatch, MarkedKernelRoutesToCuda) { EXPECT_EQ(DCAE_KERNEL(Device::cuda(0), probe_routed_kernel, 3), -3); }

TEST(Dispatch, EveryPortedFamilyIsMarked) {
  EXPECT_EQ(DCAE_DETAIL_HAS_CUDA_KERNEL(binary_forward), 1);
  EXPECT_EQ(DCAE_DETAIL_HAS_CUDA_KERNEL(where_forward), 1);
  EXPECT_EQ(DCAE_DETAIL_HAS_CUDA_KERNEL(unary_forward), 1);
  EXPECT_EQ(DCAE_DETAIL_HAS_CUDA_KERNEL(unary_backward), 1);
  EXPECT_EQ(DCAE_DETAIL_HAS_CUDA_KERNEL(sum_forward), 1);
  EXPECT_EQ(DCAE_DETAIL_HAS_CUDA_KERNEL(max_forward), 1);
  EXPECT_EQ(DCAE_DETAIL_HAS_CUDA_KERNEL(max_backward), 1);
  EXPECT_EQ(DCAE_DETAIL_HAS_CUDA_KERNEL(pixel_unshuffle_forward), 1);
  EXPECT_EQ(DCAE_DETAIL_HAS_CUDA_KERNEL(pixel_shuffle_forward), 1);
  EXPECT_EQ(DCAE_DETAIL_HAS_CUDA_KERNEL(channel_group_sum_forward), 1);
  EXPECT_EQ(DCAE_DETAIL_HAS_CUDA_KERNEL(channel_repeat_forward), 1);
  EXPECT_EQ(DCAE_DETAIL_HAS_CUDA_KERNEL(upsample_nearest_forward), 1);
  EXPECT_EQ(DCAE_DETAIL_HAS_CUDA_KERNEL(upsample_nearest_backward), 1);
  EXPECT_EQ(DCAE_DETAIL_HAS_CUDA_KERNEL(pad_forward), 1);
  EXPECT_EQ(DCAE_DETAIL_HAS_CUDA_KERNEL(probe_unported_kernel), 0);
}
#endif

}  // namespace
}  // namespace dcae
