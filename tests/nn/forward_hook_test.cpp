// The forward hook point: Layer::operator() runs a layer's interceptor around its forward (nn::Sequential and the
// DC-AE Encoder/Decoder call their children that way), forward() itself never does, one interceptor per layer.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "nn/dcae/model.h"
#include "ops/elementwise.h"
#include "tests/testing/check.h"

namespace dcae::nn {
namespace {

// Records "<name>:before" / "<name>:after" around the layer's own forward.
void trace(Layer& layer, const std::string& name, std::vector<std::string>& log) {
  layer.set_forward_interceptor([&log, name](const Tensor& x, const std::function<Tensor(const Tensor&)>& forward) {
    log.push_back(name + ":before");
    Tensor y = forward(x);
    log.push_back(name + ":after");
    return y;
  });
}

TEST(ForwardHook, SequentialCallsItsChildrenThroughTheirInterceptors) {
  Generator gen(1);
  auto first = std::make_shared<Linear>(3, 4, true, InitOptions{&gen});
  auto second = std::make_shared<Linear>(4, 2, true, InitOptions{&gen});
  Sequential net;
  net.append(first);
  net.append(second);
  const Tensor x = testing::random_tensor({5, 3}, 2, DType::f32);
  const Tensor plain = net.forward(x);

  std::vector<std::string> log;
  trace(*first, "0", log);
  trace(*second, "1", log);
  EXPECT_TRUE(testing::all_close(net(x), plain, 0, 0));  // the interceptor runs the same forward
  EXPECT_EQ(log, (std::vector<std::string>{"0:before", "0:after", "1:before", "1:after"}));
  log.clear();
  first->forward(x);  // forward() bypasses the hook
  EXPECT_TRUE(log.empty());

  // An interceptor may replace the computation (FSDP substitutes gathered weights; here: doubles the output).
  second->set_forward_interceptor(nullptr);
  second->set_forward_interceptor(
      [](const Tensor& x, const std::function<Tensor(const Tensor&)>& forward) { return ops::mul(forward(x), 2.0); });
  EXPECT_TRUE(testing::all_close(net(x), ops::mul(plain, 2.0), 1e-6, 1e-6));

  try {
    trace(*second, "again", log);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already has a forward interceptor"), std::string::npos) << e.what();
  }
  second->set_forward_interceptor(nullptr);
  EXPECT_FALSE(second->has_forward_interceptor());
}

TEST(ForwardHook, DcaeEncoderAndDecoderRunTheirStagesThroughTheHookPoint) {
  using dcae_model::AutoencoderDC;
  dcae_model::DcaeConfig c = dcae_model::published_config("dc-ae-f32c32-in-1.0");
  c.latent_channels = 4;
  c.attention_head_dim = 4;
  c.encoder_block_out_channels = c.decoder_block_out_channels = {8, 8};
  c.encoder_block_types = c.decoder_block_types = {"ResBlock", "ResBlock"};
  c.encoder_layers_per_block = c.decoder_layers_per_block = {1, 1};
  c.encoder_qkv_multiscales = c.decoder_qkv_multiscales = {{}, {}};
  c.decoder_norm_types = {"rms_norm", "rms_norm"};
  c.decoder_act_fns = {"silu", "silu"};
  Generator gen(3);
  AutoencoderDC model(c, InitOptions{&gen});
  std::vector<std::string> log;
  for (const auto& [name, module] : model.named_modules())
    if (name == "encoder" || name == "encoder.down_blocks.0" || name == "encoder.down_blocks.1" ||
        name == "decoder.up_blocks.0" || name == "decoder.up_blocks.1" || name == "decoder.conv_out")
      trace(dynamic_cast<Layer&>(*module), name, log);
  model.forward(testing::random_tensor({1, 4, 4, 3}, 4, DType::f32));
  // The decoder runs its stages from the last to the first.
  EXPECT_EQ(log, (std::vector<std::string>{"encoder:before", "encoder.down_blocks.0:before",
                                           "encoder.down_blocks.0:after", "encoder.down_blocks.1:before",
                                           "encoder.down_blocks.1:after", "encoder:after",
                                           "decoder.up_blocks.1:before", "decoder.up_blocks.1:after",
                                           "decoder.up_blocks.0:before", "decoder.up_blocks.0:after",
                                           "decoder.conv_out:before", "decoder.conv_out:after"}));
}

}  // namespace
}  // namespace dcae::nn
