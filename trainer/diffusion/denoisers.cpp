#include "trainer/diffusion/denoisers.h"

#include <cmath>
#include <set>

#include "core/tensor/init.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/unary.h"
#include "ops/view.h"

namespace dcae::trainer::diffusion {

Tensor timestep_embedding(const Tensor& t, int64_t dim, DType dtype) {
  DCAE_CHECK(t.dim() == 1 && dim >= 2 && dim % 2 == 0, "timestep_embedding: t must be [N] and dim even, got ",
             t.str(), " and ", dim);
  const std::vector<double> times = t.to(Device::cpu()).to(DType::f64).to_vector<double>();
  const int64_t n = t.size(0), half = dim / 2;
  std::vector<double> out(static_cast<size_t>(n * dim));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < half; ++k) {
      const double arg = times[i] * std::exp(-std::log(10000.0) * static_cast<double>(k) / static_cast<double>(half));
      out[i * dim + k] = std::cos(arg);
      out[i * dim + half + k] = std::sin(arg);
    }
  return from_doubles(out, {n, dim}, dtype, t.device());
}

namespace {

// A lookup table with one parameter, "weight" [rows, width] (PyTorch's nn.Embedding).
class EmbeddingTable : public nn::Module {
 public:
  EmbeddingTable(int64_t rows, int64_t width, const nn::InitOptions& init) {
    Tensor table = empty({rows, width}, init.dtype);
    if (init.random_init) normal_(table, 0.0, 0.02, *init.generator);
    weight = register_parameter("weight", table);
  }
  Tensor weight;
};

class TinyConvDenoiser : public nn::diffusion::Denoiser {
 public:
  TinyConvDenoiser(const nn::diffusion::DenoiserShape& shape, int64_t width, int64_t blocks, bool learn_sigma,
                   const nn::InitOptions& init)
      : shape_(shape), width_(width), out_channels_(learn_sigma ? 2 * shape.in_channels : shape.in_channels) {
    conv_in_ = register_module("conv_in", std::make_shared<nn::Conv2d>(shape.in_channels, width, 3, 1, -1, 1, true, init));
    time_in_ = register_module("time_mlp.linear_1", std::make_shared<nn::Linear>(width, width, true, init));
    time_out_ = register_module("time_mlp.linear_2", std::make_shared<nn::Linear>(width, width, true, init));
    // One row per class plus the "no class" row used for classifier-free guidance.
    class_embedding_ = register_module("class_embedding", std::make_shared<EmbeddingTable>(shape.num_classes + 1, width, init));
    // A learned embedding per latent position, as the transformers have: class patterns are spatial.
    position_embedding_ = register_module("position_embedding",
                                          std::make_shared<EmbeddingTable>(shape.input_size * shape.input_size, width, init));
    for (int64_t b = 0; b < blocks; ++b) {
      const std::string prefix = "blocks." + std::to_string(b);
      conv1_.push_back(register_module(prefix + ".conv1", std::make_shared<nn::Conv2d>(width, width, 3, 1, -1, 1, true, init)));
      conv2_.push_back(register_module(prefix + ".conv2", std::make_shared<nn::Conv2d>(width, width, 3, 1, -1, 1, true, init)));
    }
    conv_out_ = register_module("conv_out", std::make_shared<nn::Conv2d>(width, out_channels_, 3, 1, -1, 1, true, init));
    // Zero output layer (as DiT's final layer): the untrained network predicts no noise and the middle variance,
    // so sampling before training is well defined.
    if (init.random_init) {
      conv_out_->weight.zero_();
      conv_out_->bias.zero_();
    }
  }

  Tensor forward(const Tensor& x, const Tensor& t, const Tensor& labels) override {
    DCAE_CHECK(x.dim() == 4 && x.size(3) == shape_.in_channels, "tiny-conv-denoiser: x must be NHWC with ",
               shape_.in_channels, " channels, got ", x.str());
    DCAE_CHECK(t.dim() == 1 && t.size(0) == x.size(0) && labels.dim() == 1 && labels.size(0) == x.size(0),
               "tiny-conv-denoiser: t ", t.str(), " and labels ", labels.str(), " must be [", x.size(0), "]");
    const DType dtype = conv_in_->weight.dtype();
    const Tensor input = x.dtype() == dtype ? x : ops::cast(x, dtype);
    Tensor emb = (*time_out_)(ops::silu((*time_in_)(timestep_embedding(t, width_, dtype))));
    emb = ops::add(emb, ops::embedding(class_embedding_->weight, labels));
    const Tensor bias = ops::reshape(emb, {x.size(0), 1, 1, width_});
    DCAE_CHECK(x.size(1) == shape_.input_size && x.size(2) == shape_.input_size, "tiny-conv-denoiser: built for ",
               shape_.input_size, "x", shape_.input_size, " latents, got ", x.str());
    const Tensor position = ops::reshape(position_embedding_->weight, {1, shape_.input_size, shape_.input_size, width_});
    Tensor h = ops::add(ops::add((*conv_in_)(input), bias), position);
    for (size_t b = 0; b < conv1_.size(); ++b)
      h = ops::add(h, (*conv2_[b])(ops::silu(ops::add((*conv1_[b])(ops::silu(h)), bias))));
    return (*conv_out_)(ops::silu(h));
  }

  int64_t in_channels() const override { return shape_.in_channels; }
  int64_t out_channels() const override { return out_channels_; }
  int64_t num_classes() const override { return shape_.num_classes; }
  int64_t input_size() const override { return shape_.input_size; }

 private:
  nn::diffusion::DenoiserShape shape_;
  int64_t width_, out_channels_;
  std::shared_ptr<nn::Conv2d> conv_in_, conv_out_;
  std::shared_ptr<nn::Linear> time_in_, time_out_;
  std::vector<std::shared_ptr<nn::Conv2d>> conv1_, conv2_;
  std::shared_ptr<EmbeddingTable> class_embedding_, position_embedding_;
};

}  // namespace

std::shared_ptr<nn::diffusion::Denoiser> make_tiny_conv_denoiser(const DenoiserSpec& spec) {
  static const std::set<std::string> known = {"width", "blocks", "learn_sigma"};
  for (const auto& [key, value] : spec.config.items())
    DCAE_CHECK(known.count(key), "model.config.", key, ": not a tiny-conv-denoiser field (width, blocks, learn_sigma)");
  const int64_t width = spec.config.value("width", int64_t{32});
  const int64_t blocks = spec.config.value("blocks", int64_t{2});
  DCAE_CHECK(width >= 2 && width % 2 == 0, "model.config.width must be an even number >= 2, got ", width);
  DCAE_CHECK(blocks >= 0, "model.config.blocks must be >= 0, got ", blocks);
  DCAE_CHECK(spec.shape.num_classes >= 1, "tiny-conv-denoiser needs at least one class, got ", spec.shape.num_classes);
  return std::make_shared<TinyConvDenoiser>(spec.shape, width, blocks, spec.config.value("learn_sigma", false), spec.init);
}

}  // namespace dcae::trainer::diffusion
