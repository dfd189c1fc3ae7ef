// The recipe schema of the diffusion job (job = "diffusion"): model (a registered denoiser), diffusion (objective,
// sampler, guidance, scaling factor), data (latent shards or synthetic latents), decoder (a frozen DC-AE for sample
// grids), and the optimizer, schedule, train, eval, checkpoint, log and dist sections the DC-AE job also has.
#include "core/tensor/error.h"
#include "trainer/recipe.h"
#include "trainer/recipe_schema.h"

namespace dcae::trainer {

namespace {

using nlohmann::json;
using VT = ValueType;

KeySpec key(std::string path, VT type, json default_value, std::string doc, std::optional<double> min = std::nullopt,
            std::optional<double> max = std::nullopt) {
  KeySpec spec;
  spec.path = std::move(path);
  spec.type = type;
  spec.default_value = std::move(default_value);
  spec.doc = std::move(doc);
  spec.min = min;
  spec.max = max;
  return spec;
}
KeySpec required(std::string path, VT type, std::string doc, std::optional<double> min = std::nullopt) {
  KeySpec spec = key(std::move(path), type, nullptr, std::move(doc), min);
  spec.required = true;
  return spec;
}
KeySpec choice(std::string path, json default_value, std::string doc, std::vector<std::string> choices) {
  KeySpec spec = key(std::move(path), VT::string, std::move(default_value), std::move(doc));
  spec.choices = std::move(choices);
  return spec;
}

}  // namespace

RecipeSchema diffusion_recipe_schema() {
  RecipeSchema s;
  s.add(choice("job", nullptr, "diffusion: this recipe trains a diffusion model on latents", {"diffusion"}));
  s.add(key("plugins", VT::string_list, json::array(),
            "shared libraries to load first; each exports dcae_plugin_register_v3 (paths relative to the working dir)"));

  s.add(required("model.name", VT::string, "registered denoiser (dit-xl, uvit-h, usit-h, tiny-conv-denoiser, plugins)"));
  s.add(key("model.config", VT::table, json::object(), "overrides of the denoiser's configuration fields"));
  s.add(key("model.init_from", VT::string, "", "weights to start from: efficientvit safetensors (bare, uvit./dit. or diffusion_model. keys) or our checkpoint folder; empty = random"));
  s.add(key("model.num_classes", VT::integer, 1000, "class labels; the id num_classes is the \"no class\" of guidance", 1.0));

  s.add(choice("diffusion.objective", "ddpm",
               "ddpm (DiT: noise prediction, hybrid VLB loss with a predicted variance), uvit-ddpm (U-ViT), "
               "flow-matching (SiT/USiT: linear path, velocity), plugins",
               {}));
  s.add(key("diffusion.train_steps", VT::integer, 1000, "diffusion steps T of the discrete objectives", 2.0));
  s.add(key("diffusion.sampler", VT::string, "",
            "ddpm, dpm-solver++, dpm-solver++-2m, euler, heun, dopri5 (plugins too); empty: the objective's (ddpm -> ddpm, uvit-ddpm -> "
            "dpm-solver++, flow-matching -> heun)"));
  s.add(key("diffusion.sample_steps", VT::integer, 0, "sampler steps (0: 250 for ddpm, 30 for dpm-solver++, 50 for the ODEs)", 0.0));
  s.add(key("diffusion.cfg_scale", VT::number, 1.0, "classifier-free guidance scale of evaluation samples (1 = none)", 0.0));
  s.add(key("diffusion.label_dropout", VT::number, 0.1, "fraction of training labels replaced by the null class", 0.0, 1.0));
  s.add(key("diffusion.scaling_factor", VT::number, 0.0,
            "latent scaling factor (diffusion runs on z * sf, decodes z / sf); 0: the decoder's published factor, "
            "else the shards' stored one, else 1", 0.0));

  s.add(choice("data.source", "auto",
               "latent_shards, synthetic, plugins; auto = synthetic if data.synthetic, else latent_shards", {}));
  s.add(key("data.latent_shards", VT::string, "", "dcae-encode latent shards: a file, a glob or a folder"));
  s.add(key("data.batch_size", VT::integer, 32, "latents per micro-step on each rank", 1.0));
  s.add(key("data.shuffle", VT::boolean, true, "reshuffle every epoch"));
  s.add(key("data.synthetic", VT::boolean, false, "train on generated class-conditional latents"));
  s.add(key("data.synthetic_latents", VT::integer, 512, "size of the generated dataset", 1.0));
  s.add(key("data.latent_channels", VT::integer, 4, "channels of generated latents", 1.0));
  s.add(key("data.latent_size", VT::integer, 8, "side of generated latents", 1.0));

  s.add(key("decoder.name", VT::string, "", "registered DC-AE that decodes samples to images (empty: samples saved as latents)"));
  s.add(key("decoder.config", VT::table, json::object(), "overrides of the decoder's configuration fields"));
  s.add(key("decoder.init_from", VT::string, "", "decoder weights (safetensors, diffusers folder, checkpoint); empty = random"));

  add_optimizer_section(s, "optim", "the denoiser");
  add_schedule_section(s, "schedule", "the denoiser");

  s.add(required("train.steps", VT::integer, "optimizer steps to train", 1.0));
  s.add(key("train.grad_accum", VT::integer, 1, "micro-batches accumulated per optimizer step", 1.0));
  s.add(key("train.clip_grad_norm", VT::number, 0.0, "clip gradients to this global L2 norm (0 = off)", 0.0));
  s.add(choice("train.precision", "fp32", "compute precision (fp32 master weights always)", {"fp32", "bf16", "fp16"}));
  s.add(key("train.seed", VT::integer, 0, "seed of every random stream (init, data order, noise, timesteps)"));
  s.add(key("train.ema_decay", VT::number, 0.0, "EMA decay of the weights (0 = no EMA)", 0.0, 1.0));
  s.add(key("train.ema_warmup", VT::boolean, true, "EMA decay ramps as min(decay, (1+s)/(10+s))"));
  s.add(key("train.max_nonfinite_steps", VT::integer, 10, "stop after this many non-finite steps in a row", 1.0));
  s.add(key("train.loss_scale_init", VT::number, 65536.0, "fp16: initial dynamic loss scale", 1.0));
  s.add(key("train.loss_scale_growth_interval", VT::integer, 2000, "fp16: finite steps before the scale doubles", 1.0));
  s.add(key("train.device", VT::string, "auto", "cpu, cuda, cuda:N or auto (cuda when available)"));

  s.add(key("eval.every", VT::integer, 1000, "sample every N steps (0 = never)", 0.0));
  s.add(key("eval.samples", VT::integer, 8, "samples per evaluation", 1.0));
  s.add(key("eval.classes", VT::integer_list, json::array(), "their classes (cycled); empty: 0, 1, 2, ..."));
  s.add(key("eval.batch_size", VT::integer, 0, "sampling batch (0 = eval.samples)", 0.0));
  s.add(key("eval.use_ema", VT::boolean, true, "sample with the EMA weights when EMA is on"));

  s.add(key("checkpoint.dir", VT::string, "", "checkpoint folder (empty: <log.dir>/checkpoints)"));
  s.add(key("checkpoint.every", VT::integer, 1000, "save every N steps (0 = only at the end)", 0.0));
  s.add(key("checkpoint.keep_last", VT::integer, 3, "keep the newest K complete checkpoints (0 = all)", 0.0));
  s.add(key("checkpoint.resume", VT::string, "auto", "auto (newest complete), none, or a checkpoint folder"));

  s.add(key("log.every", VT::integer, 10, "progress line and metrics row every N steps", 1.0));
  s.add(key("log.dir", VT::string, "runs/diffusion", "run folder: metrics.jsonl, samples, checkpoints"));
  s.add(key("log.all_ranks", VT::boolean, false, "every rank logs (default: rank 0 only)"));

  s.add(choice("dist.strategy", "ddp", "ddp: replicated denoiser, gradients all-reduced (fsdp is not built for diffusion)",
               {"ddp"}));

  s.add_rule([](const Recipe& r) {
    const std::string source = r.get<std::string>("data.source");
    const bool shards = source == "latent_shards" || (source == "auto" && !r.get<bool>("data.synthetic"));
    DCAE_CHECK(!shards || !r.get<std::string>("data.latent_shards").empty(), "recipe ", r.describe_origin(),
               ": data.latent_shards is required unless data.synthetic = true");
  });
  s.add_rule([](const Recipe& r) {
    DCAE_CHECK(r.get<std::string>("decoder.name").empty() || !r.get<std::string>("decoder.init_from").empty() ||
                   r.get<std::string>("decoder.name") == "dc-ae-custom",
               "recipe ", r.describe_origin(), ": decoder.name = \"", r.get<std::string>("decoder.name"), "\" (",
               r.origin("decoder.name"), ") needs decoder.init_from (the frozen autoencoder's weights; only dc-ae-custom may stay random, for tests)");
  });
  return s;
}

}  // namespace dcae::trainer
