// GraphedRunner: encode and decode of a tiny DC-AE through CUDA graphs equal the eager calls on fresh inputs, the
// first call of a shape runs eagerly and the second captures, results survive later calls, and a new shape gets
// its own graph.
#include "nn/dcae/graphed_runner.h"

#include <gtest/gtest.h>

#include "core/autograd/grad_mode.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/testing/tiny_dcae.h"

namespace dcae {
namespace {

using nn::dcae_model::AutoencoderDC;
using nn::dcae_model::DcaeConfig;
using nn::dcae_model::GraphedRunner;
using testing::all_close;
using testing::gpu;
using testing::random_tensor;

class CudaGraphedRunner : public testing::CudaTest {};

// Every block kind in miniature: ResBlocks, EfficientViT blocks with a multi-scale branch, BatchNorm in the decoder.
DcaeConfig tiny_config() {
  return dcae::testing::tiny_dcae_config({{"ResBlock", 8, 0, "batch_norm", "relu"},
                                    {"EfficientViTBlock", 8, 1, "rms_norm", "silu"},
                                    {"EfficientViTBlock", 16, 1, "rms_norm", "silu", {5}}});
}

#ifdef DCAE_WITH_CUDA
TEST_F(CudaGraphedRunner, EncodeAndDecodeEqualEagerOnFreshInputs) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    Generator gen(5);
    AutoencoderDC model(tiny_config(), {&gen, DType::f32});
    model.to(gpu());
    model.to(dtype);
    model.eval();
    autograd::NoGradGuard no_grad;
    GraphedRunner encode(model, GraphedRunner::Direction::encode);
    GraphedRunner decode(model, GraphedRunner::Direction::decode);
    std::vector<Tensor> latents, eager_latents;
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      const Tensor images = random_tensor({2, 32, 32, 3}, seed, dtype).to(gpu());
      latents.push_back(encode(images));
      eager_latents.push_back(model.encode(images));
      EXPECT_TRUE(all_close(decode(eager_latents.back()).to(Device::cpu()),
                            model.decode(eager_latents.back()).to(Device::cpu()), 0, 0))
          << "decode, call " << seed;
    }
    EXPECT_EQ(encode.graphs(), 1);
    EXPECT_EQ(decode.graphs(), 1);
    for (size_t i = 0; i < latents.size(); ++i)  // earlier results are the caller's: later replays left them alone
      EXPECT_TRUE(all_close(latents[i].to(Device::cpu()), eager_latents[i].to(Device::cpu()), 0, 0)) << "call " << i;

    const Tensor other_shape = random_tensor({1, 16, 32, 3}, 9, dtype).to(gpu());
    for (int i = 0; i < 3; ++i)
      EXPECT_TRUE(all_close(encode(other_shape).to(Device::cpu()), model.encode(other_shape).to(Device::cpu()), 0, 0));
    EXPECT_EQ(encode.graphs(), 2);
  }
}
#endif

TEST(GraphedRunner, CpuInputsRunEagerly) {
  Generator gen(6);
  AutoencoderDC model(tiny_config(), {&gen, DType::f32});
  model.eval();
  GraphedRunner encode(model, GraphedRunner::Direction::encode);
  const Tensor images = random_tensor({1, 16, 16, 3}, 3, DType::f32);
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(all_close(encode(images), model.encode(images), 0, 0));
  EXPECT_EQ(encode.graphs(), 0);
}

}  // namespace
}  // namespace dcae
