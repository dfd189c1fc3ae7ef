#include "nn/module.h"

#include <gtest/gtest.h>

#include "tests/testing/check.h"

namespace dcae::nn {
namespace {

class Leaf : public Module {
 public:
  Leaf() {
    weight = register_parameter("weight", testing::random_tensor({4, 3}, 1, DType::f32));
    bias = register_parameter("bias", zeros({4}));
    count = register_buffer("num_batches_tracked", zeros({}, DType::i64));
  }
  Tensor weight, bias, count;
};

class Tree : public Module {
 public:
  Tree() {
    encoder = register_module("encoder", std::make_shared<Leaf>());
    decoder = register_module("decoder", std::make_shared<Leaf>());
  }
  std::shared_ptr<Leaf> encoder, decoder;
};

TEST(GlobMatch, StarsAndQuestionMarks) {
  EXPECT_TRUE(glob_match("decoder.*", "decoder.up_blocks.0.conv.weight"));
  EXPECT_TRUE(glob_match("*.bias", "encoder.conv_in.bias"));
  EXPECT_TRUE(glob_match("encoder.down_blocks.?.*", "encoder.down_blocks.5.1.attn.to_q.weight"));
  EXPECT_FALSE(glob_match("encoder.*", "decoder.conv_in.weight"));
  EXPECT_FALSE(glob_match("encoder.conv_in", "encoder.conv_in.weight"));
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("a*b*c", "a_x_b_y_c"));
  EXPECT_FALSE(glob_match("a*b*c", "a_x_b_y_d"));
}

TEST(Module, HierarchicalNamesInRegistrationOrder) {
  Tree tree;
  std::vector<std::string> names;
  for (const auto& [name, t] : tree.named_parameters()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"}));
  EXPECT_EQ(tree.named_buffers().at(1).first, "decoder.num_batches_tracked");
  EXPECT_EQ(tree.num_parameters(), 2 * (12 + 4));
  EXPECT_TRUE(tree.parameter("decoder.bias").is_same(tree.decoder->bias));
  EXPECT_THROW(tree.parameter("decoder.gamma"), Error);
  EXPECT_EQ(tree.named_modules().size(), 3u);
}

TEST(Module, TrainOnlyFreezesEverythingElseAndRejectsTypos) {
  Tree tree;
  tree.train_only({"decoder.*"});
  EXPECT_FALSE(tree.encoder->weight.requires_grad());
  EXPECT_TRUE(tree.decoder->weight.requires_grad());
  EXPECT_EQ(tree.num_parameters(/*trainable_only=*/true), 16);
  EXPECT_THROW(tree.train_only({"decodr.*"}), Error);
  EXPECT_EQ(tree.set_trainable({"*.bias"}, true), 1);
}

TEST(Module, CastInPlaceKeepsHandlesAndCounters) {
  Tree tree;
  Tensor held = tree.encoder->weight;
  const auto before = held.to_vector<double>();
  tree.to(DType::f64);
  EXPECT_EQ(held.dtype(), DType::f64);
  EXPECT_EQ(held.to_vector<double>(), before);
  EXPECT_EQ(tree.encoder->count.dtype(), DType::i64);
  EXPECT_TRUE(held.requires_grad());
  tree.eval();
  EXPECT_FALSE(tree.decoder->is_training());
}

}  // namespace
}  // namespace dcae::nn
