// Copies that involve a GPU (device-side strided copy kernel, host<->device packing), fill_ and add_ on the GPU.
#include <gtest/gtest.h>

#include "core/autograd/engine.h"
#include "ops/view.h"
#include "tests/cuda/cuda_test_util.h"
#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/cuda_tensor.h"
#endif

namespace dcae {
namespace {

using testing::all_close;
using testing::gpu;
using testing::gpu_equals_cpu;
using testing::random_values;

class CudaCopy : public testing::CudaTest {};

constexpr DType kAllDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16,
                                DType::i64, DType::i32, DType::u8,   DType::boolean};

TEST_F(CudaCopy, RoundTripKeepsEveryDtypeExactly) {
  for (DType dtype : kAllDtypes) {
    const Tensor host = random_values({3, 5, 7}, 1, dtype);
    const Tensor device = host.to(gpu());
    EXPECT_EQ(device.device(), gpu());
    EXPECT_TRUE(all_close(device.to(Device::cpu()), host, 0, 0)) << dtype;
  }
}

// Values of `from` that convert to `to` without leaving its range (out-of-range conversions are undefined in C++):
// fractions and negatives where `to` can take them, to exercise rounding and truncation toward zero.
Tensor convertible_values(DType from, DType to) {
  const bool unsigned_target = to == DType::u8;
  if (from == DType::boolean || from == DType::u8) return random_values({257}, 2, from);
  const Tensor values = unsigned_target ? testing::random_uniform({257}, 2, 0.0, 250.0)
                                        : testing::random_tensor({257}, 2, DType::f64, 100.0);
  if (is_floating(from)) return values.to(from);
  std::vector<double> whole = values.to_vector<double>();
  for (double& v : whole) v = static_cast<double>(static_cast<int64_t>(v));
  return from_doubles(whole, {257}, from);
}

TEST_F(CudaCopy, EveryDtypePairConvertsLikeTheCpu) {
  for (DType from : kAllDtypes) {
    for (DType to : kAllDtypes) {
      const Tensor host = convertible_values(from, to);
      const Tensor device = host.to(gpu());
      // Contiguous, and through a strided view (every other element).
      EXPECT_TRUE(gpu_equals_cpu(device.to(to), host.to(to))) << from << " -> " << to;
      EXPECT_TRUE(gpu_equals_cpu(device.slice(0, 1, 257, 2).to(to), host.slice(0, 1, 257, 2).to(to)))
          << from << " -> " << to << " strided";
    }
  }
}

TEST_F(CudaCopy, ContiguousOfPermutedSlicedAndExpandedViews) {
  for (DType dtype : {DType::f32, DType::bf16, DType::f64, DType::i64, DType::u8}) {
    const Tensor host = random_values({4, 6, 5, 3}, 3, dtype);
    const Tensor device = host.to(gpu());
    const auto check = [&](const std::function<Tensor(const Tensor&)>& view, const char* what) {
      const Tensor dv = view(device), hv = view(host);
      EXPECT_FALSE(dv.is_contiguous()) << what;
      EXPECT_TRUE(gpu_equals_cpu(dv.contiguous(), hv.contiguous())) << what << " " << dtype;
      EXPECT_TRUE(gpu_equals_cpu(dv.clone(), hv.contiguous())) << what << " " << dtype;
    };
    check([](const Tensor& t) { return t.permute({3, 1, 0, 2}); }, "permute");
    check([](const Tensor& t) { return t.slice(1, 1, 6, 2).narrow(2, 1, 3); }, "slice+narrow");
    check([](const Tensor& t) { return t.select(3, 1).unsqueeze(1).expand({4, 9, 6, 5}); }, "expand");
    check([](const Tensor& t) { return t.transpose(0, 3).slice(3, 0, 4, 3); }, "transpose+step");
  }
  // Rank 8 with nothing mergeable is fine; the kernel handles up to 8 dims.
  const Tensor eight = random_values({2, 1, 2, 3, 2, 2, 3, 2}, 4, DType::f32);
  const std::vector<int64_t> order = {7, 3, 0, 5, 2, 6, 4, 1};
  EXPECT_TRUE(gpu_equals_cpu(eight.to(gpu()).permute(order).contiguous(), eight.permute(order).contiguous()));
}

// Copies that collapse to a batched transpose take the tiled kernel (copy_kernels.cu): filters between KCRS and
// KRSC, NCHW <-> NHWC, plain 2-D transposes, into transposed destinations, with a batch stride that is not dense;
// sizes around the tile shapes, every element width, and results equal to the CPU's exactly.
TEST_F(CudaCopy, BatchedTransposesEqualTheCpu) {
  for (DType dtype : {DType::u8, DType::bf16, DType::f32, DType::f64}) {
    const auto check = [&](const Tensor& host, const std::function<Tensor(const Tensor&)>& view, const char* what) {
      const Tensor device = host.to(gpu());
      EXPECT_TRUE(gpu_equals_cpu(view(device).contiguous(), view(host).contiguous())) << what << " " << dtype;
    };
    const Tensor kcrs = random_values({37, 65, 3, 3}, 11, dtype);
    check(kcrs, [](const Tensor& t) { return t.permute({0, 2, 3, 1}); }, "KCRS -> KRSC");
    const Tensor krsc = random_values({33, 3, 3, 70}, 12, dtype);
    check(krsc, [](const Tensor& t) { return t.permute({0, 3, 1, 2}); }, "KRSC -> KCRS");
    const Tensor nchw = random_values({2, 3, 31, 33}, 13, dtype);
    check(nchw, [](const Tensor& t) { return t.permute({0, 2, 3, 1}); }, "NCHW -> NHWC (3 channels)");
    check(random_values({64, 1}, 14, dtype).expand({64, 32}), [](const Tensor& t) { return t.transpose(0, 1); },
          "expanded source: not a dense plane, generic copy");
    check(random_values({129, 95}, 15, dtype), [](const Tensor& t) { return t.transpose(0, 1); }, "2-D");
    // A short side (at most 16) handled whole, with several blocks along the long one.
    check(random_values({2, 1000, 3, 3}, 19, dtype), [](const Tensor& t) { return t.permute({0, 2, 3, 1}); },
          "long rows of 9");
    check(random_values({2, 3, 3, 1000}, 20, dtype), [](const Tensor& t) { return t.permute({0, 3, 1, 2}); },
          "9 long rows");
    check(random_values({3000, 2}, 21, dtype), [](const Tensor& t) { return t.transpose(0, 1); }, "pairs");
    check(random_values({20, 300}, 22, dtype), [](const Tensor& t) { return t.transpose(0, 1); },
          "20 rows: tiles with a partial edge");
    check(random_values({6, 40, 50}, 16, dtype), [](const Tensor& t) { return t.slice(0, 0, 6, 2).transpose(1, 2); },
          "every other plane");
    // Into a transposed destination: dst's fast dim is src's slow one.
    const Tensor src_host = random_values({45, 77}, 17, dtype);
    Tensor dst_host = random_values({77, 45}, 18, dtype);
    Tensor dst_device = dst_host.to(gpu());
    dst_device.transpose(0, 1).copy_(src_host.to(gpu()));
    dst_host.transpose(0, 1).copy_(src_host);
    EXPECT_TRUE(gpu_equals_cpu(dst_device, dst_host)) << "transposed destination " << dtype;
  }
}

TEST_F(CudaCopy, CopyIntoStridedDestinationsWithBroadcast) {
  const Tensor src_host = random_values({5, 1, 4}, 5, DType::f32);
  for (bool src_on_gpu : {true, false}) {
    Tensor dst_host = random_values({5, 3, 8}, 6, DType::bf16);
    Tensor dst_device = dst_host.to(gpu());
    const Tensor src = src_on_gpu ? src_host.to(gpu()) : src_host;
    // Every other column of dst gets src broadcast over dim 1 (host->device or device->device).
    dst_device.slice(2, 0, 8, 2).copy_(src);
    dst_host.slice(2, 0, 8, 2).copy_(src_host);
    EXPECT_TRUE(gpu_equals_cpu(dst_device, dst_host)) << (src_on_gpu ? "device source" : "host source");
  }
  // Device -> host into a non-contiguous host destination.
  Tensor host_dst = random_values({8, 5}, 7, DType::f64);
  const Tensor device_src = random_values({5, 8}, 8, DType::f32).to(gpu());
  host_dst.transpose(0, 1).copy_(device_src);
  EXPECT_TRUE(all_close(host_dst.transpose(0, 1), device_src.to(Device::cpu()).to(DType::f64), 0, 0));
  // Host -> device from a non-contiguous host source into a non-contiguous device destination.
  const Tensor host_src = random_values({6, 4}, 9, DType::f16);
  Tensor device_dst = zeros({4, 6}, DType::f32, gpu());
  device_dst.transpose(0, 1).copy_(host_src.slice(0, 0, 6));
  EXPECT_TRUE(gpu_equals_cpu(device_dst, host_src.transpose(0, 1).to(DType::f32)));
}

TEST_F(CudaCopy, LargeOffsetsUseTheWideIndexPath) {
  // 2^31 + 4 MiB bytes: offsets beyond 2^31 need 64-bit index arithmetic even for a small strided view.
  const int64_t n = (int64_t{1} << 31) + (int64_t{1} << 22);
  Tensor big = empty({n}, DType::u8, gpu());
  bernoulli_(big, 0.5);
  const Tensor view = big.slice(0, 3, n, int64_t{1} << 20);  // ~2052 elements, the last past 2^31
  const Tensor expected = big.narrow(0, 0, n).to(Device::cpu()).slice(0, 3, n, int64_t{1} << 20);
  EXPECT_TRUE(gpu_equals_cpu(view.contiguous(), expected.contiguous()));
  EXPECT_TRUE(gpu_equals_cpu(view.to(DType::f32), expected.to(DType::f32)));
  EXPECT_TRUE(gpu_equals_cpu(ops::add(view, view), ops::add(expected, expected)));
}

TEST_F(CudaCopy, FillEveryDtypeAndLayout) {
  for (DType dtype : kAllDtypes) {
    for (double value : {0.0, 1.0, -3.25, 7.5}) {
      if (value < 0 && dtype == DType::u8) continue;  // out of range: undefined
      Tensor device = random_values({3, 8, 5}, 10, dtype).to(gpu());
      Tensor host = device.to(Device::cpu());
      device.fill_(value);
      host.fill_(value);
      EXPECT_TRUE(gpu_equals_cpu(device, host)) << dtype << " " << value;
      // A strided window only: the rest keeps its values.
      device.fill_(2.0);
      host.fill_(2.0);
      device.slice(1, 1, 8, 3).transpose(0, 2).fill_(value);
      host.slice(1, 1, 8, 3).transpose(0, 2).fill_(value);
      EXPECT_TRUE(gpu_equals_cpu(device, host)) << dtype << " " << value << " strided";
    }
  }
  // Odd sizes and an offset exercise the vector store's head and tail.
  Tensor odd = zeros({1 << 12 | 3}, DType::f32, gpu());
  odd.narrow(0, 1, 4097).fill_(1.5);
  const auto values = odd.to_vector<float>();
  EXPECT_EQ(values[0], 0.0f);
  for (int64_t i = 1; i < 4098; ++i) ASSERT_EQ(values[i], 1.5f) << i;
  EXPECT_EQ(values[4098], 0.0f);
  EXPECT_TRUE(gpu_equals_cpu(full({3, 3}, -0.5, DType::bf16, gpu()), full({3, 3}, -0.5, DType::bf16)));
}

TEST_F(CudaCopy, AddMatchesTheCpuRounding) {
  const std::vector<std::pair<DType, DType>> pairs = {
      {DType::f32, DType::f32}, {DType::f64, DType::f64}, {DType::bf16, DType::bf16}, {DType::f16, DType::f16},
      {DType::f32, DType::bf16}, {DType::bf16, DType::f32}, {DType::f64, DType::f32}, {DType::i64, DType::i64},
      {DType::i32, DType::i32}};
  for (const auto& [dst_dtype, src_dtype] : pairs) {
    for (double alpha : {1.0, -0.37}) {
      const Tensor dst0 = random_values({4, 33}, 11, dst_dtype);
      const Tensor src = random_values({4, 33}, 12, src_dtype);
      Tensor device = dst0.to(gpu()), host = dst0.clone();
      device.add_(src.to(gpu()), alpha);
      host.add_(src, alpha);
      // f64 may differ in the last bit of the operands (O(1) here): the host compiler and nvcc contract
      // d + alpha * s into FMAs differently, and a cancelling sum turns that into a larger relative error.
      const double atol = dst_dtype == DType::f64 ? 1e-15 : 0.0;
      EXPECT_TRUE(testing::all_close(device.to(Device::cpu()), host, atol, 0)) << dst_dtype << " += " << src_dtype << " * " << alpha;
    }
  }
  // Broadcast source, strided destination.
  const Tensor row = random_values({33}, 13, DType::f32);
  Tensor device = random_values({33, 4}, 14, DType::f32).to(gpu());
  Tensor host = device.to(Device::cpu());
  device.transpose(0, 1).add_(row.to(gpu()), 2.0);
  host.transpose(0, 1).add_(row, 2.0);
  EXPECT_TRUE(gpu_equals_cpu(device, host));
  EXPECT_THROW(device.add_(row), Error);  // mixed devices
  EXPECT_THROW(zeros({2}, DType::boolean, gpu()).add_(ones({2}, DType::boolean, gpu())), Error);
}

TEST_F(CudaCopy, AutogradAccumulatesGradientsOnTheGpu) {
  // x feeds two branches, so the engine sums gradients with add_, and the leaf accumulates across calls.
  const Tensor x_host = testing::random_tensor({6, 5}, 15, DType::f32);
  const auto grad_of = [](Tensor x) {
    x = x.clone().set_requires_grad(true);
    for (int call = 0; call < 2; ++call)
      autograd::backward(ops::sum(ops::add(ops::mul(x, x), ops::mul(x, 3.0))));
    return x.grad();
  };
  EXPECT_TRUE(testing::gpu_matches_cpu(grad_of(x_host.to(gpu())), grad_of(x_host)));
}

#ifdef DCAE_WITH_CUDA  // page-locked memory exists only in CUDA builds
TEST_F(CudaCopy, PageLockedBatchesCopyAsynchronouslyAndMayBeDroppedAtOnce) {
  const Tensor reference = random_values({8, 64, 64, 3}, 21, DType::f32);
  std::vector<Tensor> on_device;
  for (int i = 0; i < 4; ++i) {
    Tensor pinned = cuda::empty_page_locked(reference.shape(), DType::f32);
    EXPECT_TRUE(pinned.storage()->page_locked());
    EXPECT_TRUE(pinned.device().is_cpu());
    pinned.copy_(reference);
    on_device.push_back(pinned.to(gpu()));  // queued; the host buffer is kept alive until the copy has run
    pinned = Tensor();                      // dropped at once, as the loader's batches are
  }
  for (const Tensor& t : on_device) EXPECT_TRUE(gpu_equals_cpu(t, reference));
}
#endif

TEST_F(CudaCopy, ErrorsNameShapesAndDevices) {
  Tensor device = zeros({2, 3}, DType::f32, gpu());
  try {
    device.copy_(zeros({4}, DType::f32, gpu()));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
  }
  try {
    ops::add(device, zeros({2, 3}));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("different devices"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dcae
