// conv2d forward, input gradient and weight gradient on the GPU against the CPU kernels, through each path: the
// automatic choice (timed cuDNN engines, GEMMs for 1x1, direct kernels), cuDNN only, and the direct kernels only;
// then gradients through autograd, layouts the op packs first, and empty batches.
#include <gtest/gtest.h>

#include <string>

#include "ops/conv2d.h"
#include "ops/cpu/conv2d.h"
#include "ops/dispatch.h"
#include "tests/cuda/accumulation_check.h"
#include "tests/cuda/cuda_test_util.h"
#ifdef DCAE_WITH_CUDA
#include "ops/cuda/math_mode.h"
#endif

namespace dcae {
namespace {

using testing::gpu;
using testing::random_tensor;
using testing::sums_match;

class CudaConv2d : public testing::CudaTest {};

struct ConvCase {
  const char* name;
  Shape x, weight;
  ops::Conv2dParams params;
};

// The DC-AE layer kinds in miniature, plus odd sizes and the edges of each path.
const std::vector<ConvCase> kCases = {
    {"3x3 same", {2, 9, 7, 16}, {24, 16, 3, 3}, {1, 1, 1}},
    {"3x3 stride 2, odd sizes", {2, 9, 11, 8}, {16, 8, 3, 3}, {2, 1, 1}},
    {"3x3 valid", {1, 6, 5, 8}, {8, 8, 3, 3}, {1, 0, 1}},
    {"RGB input (3 channels)", {2, 12, 10, 3}, {16, 3, 3, 3}, {1, 1, 1}},
    {"1x1 (GEMM)", {2, 5, 6, 32}, {48, 32, 1, 1}, {1, 0, 1}},
    {"1x1 grouped (batched GEMM)", {2, 5, 6, 32}, {48, 8, 1, 1}, {1, 0, 4}},
    {"1x1 stride 2", {2, 6, 7, 8}, {12, 8, 1, 1}, {2, 0, 1}},
    {"depthwise 3x3", {2, 8, 8, 32}, {32, 1, 3, 3}, {1, 1, 32}},
    {"depthwise 5x5", {2, 9, 7, 24}, {24, 1, 5, 5}, {1, 2, 24}},
    {"depthwise 3x3 stride 2", {2, 9, 9, 16}, {16, 1, 3, 3}, {2, 1, 16}},
    {"depthwise 4x4 (generic kernels)", {1, 7, 7, 8}, {8, 1, 4, 4}, {1, 1, 8}},
    {"grouped 3x3", {2, 6, 6, 16}, {32, 4, 3, 3}, {1, 1, 4}},
    {"2x2 stride 2 (patchify)", {2, 8, 8, 8}, {16, 8, 2, 2}, {2, 0, 1}},
    {"1x3, kh != kw", {2, 5, 6, 4}, {8, 4, 1, 3}, {1, 0, 1}},
};

// What ran last on this thread ("cudnn engine <id>", "direct", "gemm"), for failure messages.
std::string last_algorithm() {
#ifdef DCAE_WITH_CUDA
  return ops::cuda::last_conv_algorithm();
#else
  return "";
#endif
}

// Forward (with bias), input gradient and weight gradient of one case in one dtype, GPU vs CPU; a failure names
// what ran on the GPU.
::testing::AssertionResult case_matches(const ConvCase& c, DType dtype, uint64_t seed) {
  const Shape y_shape = {c.x[0], ops::conv2d_output_size(c.x[1], c.weight[2], c.params.stride, c.params.padding),
                         ops::conv2d_output_size(c.x[2], c.weight[3], c.params.stride, c.params.padding), c.weight[0]};
  const Tensor x = random_tensor(c.x, seed, dtype), w = random_tensor(c.weight, seed + 1, dtype);
  const Tensor bias = random_tensor({c.weight[0]}, seed + 2, dtype), grad = random_tensor(y_shape, seed + 3, dtype);
  const Tensor gx = x.to(gpu()), gw = w.to(gpu()), gb = bias.to(gpu()), gg = grad.to(gpu());
  const auto check = [](const char* what, const Tensor& on_gpu, const Tensor& on_cpu) {
    const std::string ran = last_algorithm();  // before the comparison copies anything
    auto result = sums_match(on_gpu, on_cpu);
    if (!result) result << " (" << what << " by " << ran << ")";
    return result;
  };
  if (auto r = check("forward", DCAE_KERNEL(gpu(), conv2d_forward, gx, gw, gb, c.params),
                     ops::cpu::conv2d_forward(x, w, bias, c.params));
      !r)
    return r;
  if (auto r = check("forward without bias", DCAE_KERNEL(gpu(), conv2d_forward, gx, gw, Tensor(), c.params),
                     ops::cpu::conv2d_forward(x, w, Tensor(), c.params));
      !r)
    return r;
  if (auto r = check("input gradient", DCAE_KERNEL(gpu(), conv2d_backward_input, gg, gw, c.x, c.params),
                     ops::cpu::conv2d_backward_input(grad, w, c.x, c.params));
      !r)
    return r;
  return check("weight gradient", DCAE_KERNEL(gpu(), conv2d_backward_weight, gg, gx, c.weight, c.params),
               ops::cpu::conv2d_backward_weight(grad, x, c.weight, c.params));
}

#ifdef DCAE_WITH_CUDA
// Restricts the non-GEMM convolutions to one backend for a scope.
struct BackendScope {
  explicit BackendScope(ops::cuda::ConvBackend backend) : previous(ops::cuda::set_conv_backend(backend)) {}
  ~BackendScope() { ops::cuda::set_conv_backend(previous); }
  ops::cuda::ConvBackend previous;
};
#endif

TEST_F(CudaConv2d, AutomaticChoiceMatchesCpuForEveryCaseAndDtype) {
  uint64_t seed = 1000;
  for (const ConvCase& c : kCases)
    for (DType dtype : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
      seed += 10;
      EXPECT_TRUE(case_matches(c, dtype, seed)) << c.name << " " << dtype;
    }
}

TEST_F(CudaConv2d, DirectKernelsMatchCpu) {
#ifdef DCAE_WITH_CUDA
  BackendScope scope(ops::cuda::ConvBackend::direct_only);
  uint64_t seed = 2000;
  for (const ConvCase& c : kCases)
    for (DType dtype : {DType::f32, DType::bf16, DType::f64}) {
      seed += 10;
      EXPECT_TRUE(case_matches(c, dtype, seed)) << c.name << " " << dtype;
    }
#endif
}

TEST_F(CudaConv2d, CudnnEnginesMatchCpu) {
#ifdef DCAE_WITH_CUDA
  BackendScope scope(ops::cuda::ConvBackend::cudnn_only);
  uint64_t seed = 3000;
  // Layer kinds cuDNN must support in the reduced and the full precision (f64 NHWC may have no engine).
  for (const ConvCase& c : kCases)
    for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
      seed += 10;
      EXPECT_TRUE(case_matches(c, dtype, seed)) << c.name << " " << dtype;
    }
#endif
}

TEST_F(CudaConv2d, HeuristicChoiceWithoutTimingMatchesCpu) {
#ifdef DCAE_WITH_CUDA
  // Untimed, cuDNN's first plan runs - for a forward with bias the fused conv+bias engine wherever cuDNN has one,
  // which timing may otherwise never pick.
  ops::cuda::set_conv_autotune(false);
  uint64_t seed = 4000;
  for (const ConvCase& c : kCases)
    for (DType dtype : {DType::f32, DType::bf16}) {
      seed += 10;
      EXPECT_TRUE(case_matches(c, dtype, seed)) << c.name << " " << dtype;
    }
  ops::cuda::set_conv_autotune(true);
#endif
}

TEST_F(CudaConv2d, GradientsThroughAutograd) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (size_t i : {size_t{0}, size_t{4}, size_t{5}, size_t{7}, size_t{11}}) {
      const ConvCase& c = kCases[i];
      const Tensor x = random_tensor(c.x, 5000 + i, dtype), w = random_tensor(c.weight, 5100 + i, dtype);
      const Tensor bias = random_tensor({c.weight[0]}, 5200 + i, dtype);
      const ops::Conv2dParams params = c.params;
      EXPECT_TRUE(testing::gradient_sums_match(
          [params](const auto& in) { return ops::conv2d(in[0], in[1], in[2], params); }, {x, w, bias},
          {true, true, true}))
          << c.name << " " << dtype;
    }
  }
}

TEST_F(CudaConv2d, NonContiguousAndMisalignedInputs) {
  // An NCHW tensor viewed as NHWC and a weight stored as [kh, kw, Cin, Cout] viewed in PyTorch layout: packed.
  const Tensor nchw = random_tensor({2, 16, 9, 7}, 6000, DType::f32);
  const Tensor hwio = random_tensor({3, 3, 16, 24}, 6001, DType::f32);
  const ops::Conv2dParams params{1, 1, 1};
  EXPECT_TRUE(sums_match(DCAE_KERNEL(gpu(), conv2d_forward, nchw.to(gpu()).permute({0, 2, 3, 1}),
                                     hwio.to(gpu()).permute({3, 2, 0, 1}), Tensor(), params),
                         ops::cpu::conv2d_forward(nchw.permute({0, 2, 3, 1}), hwio.permute({3, 2, 0, 1}), Tensor(),
                                                  params)));
  // An input that starts one element into its storage: 2-byte aligned in bf16 (its own cached choice).
  const Shape x_shape = {2, 8, 8, 16};
  const Tensor flat = random_tensor({1 + 2 * 8 * 8 * 16}, 6002, DType::bf16);
  const Tensor w = random_tensor({16, 16, 3, 3}, 6003, DType::bf16);
  EXPECT_TRUE(sums_match(DCAE_KERNEL(gpu(), conv2d_forward, flat.to(gpu()).narrow(0, 1, flat.numel() - 1).view(x_shape),
                                     w.to(gpu()), Tensor(), params),
                         ops::cpu::conv2d_forward(flat.narrow(0, 1, flat.numel() - 1).view(x_shape), w, Tensor(),
                                                  params)));
}

TEST_F(CudaConv2d, EmptyBatch) {
  for (size_t i : {size_t{0}, size_t{4}, size_t{7}}) {
    ConvCase c = kCases[i];
    c.x[0] = 0;
    const Tensor x = random_tensor(c.x, 7000, DType::f32), w = random_tensor(c.weight, 7001, DType::f32);
    const Tensor y = DCAE_KERNEL(gpu(), conv2d_forward, x.to(gpu()), w.to(gpu()), Tensor(), c.params);
    EXPECT_EQ(y.numel(), 0) << c.name;
    const Tensor grad = empty(y.shape(), DType::f32);
    // No pixels: the weight gradient is zeros (written over the poisoned allocation).
    EXPECT_TRUE(sums_match(DCAE_KERNEL(gpu(), conv2d_backward_weight, grad.to(gpu()), x.to(gpu()), c.weight, c.params),
                           ops::cpu::conv2d_backward_weight(grad, x, c.weight, c.params)))
        << c.name;
  }
}

TEST_F(CudaConv2d, ErrorsNameTheOperands) {
  const Tensor x = random_tensor({1, 5, 5, 4}, 1, DType::f32).to(gpu());
  testing::expect_error([&] { ops::conv2d(x, random_tensor({8, 4, 3, 3}, 2, DType::f32)); },
                        {"conv2d", "differ in dtype or device", "[1, 5, 5, 4]", "[8, 4, 3, 3]"});
  testing::expect_error([&] { ops::conv2d(x, random_tensor({8, 3, 3, 3}, 3, DType::f32).to(gpu())); },
                        {"conv2d", "[8, 3, 3, 3]", "[1, 5, 5, 4]"});
}

}  // namespace
}  // namespace dcae
