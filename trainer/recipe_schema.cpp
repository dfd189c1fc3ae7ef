#include "trainer/recipe_schema.h"

#include <set>
#include <sstream>

#include "core/tensor/error.h"
#include "trainer/recipe.h"

namespace dcae::trainer {

using nlohmann::json;

const char* value_type_name(ValueType type) {
  switch (type) {
    case ValueType::boolean: return "a boolean";
    case ValueType::integer: return "an integer";
    case ValueType::number: return "a number";
    case ValueType::string: return "a string";
    case ValueType::string_list: return "an array of strings";
    case ValueType::number_list: return "an array of numbers";
    case ValueType::integer_list: return "an array of integers";
    case ValueType::table: return "a table";
    case ValueType::table_list: return "an array of tables";
  }
  return "?";
}

void RecipeSchema::add(KeySpec spec) {
  DCAE_CHECK(!spec.path.empty(), "recipe schema: empty key path");
  DCAE_CHECK(find(spec.path) == nullptr, "recipe schema: key '", spec.path, "' declared twice");
  DCAE_CHECK(!(spec.required && !spec.default_value.is_null()), "recipe schema: key '", spec.path,
             "' cannot be both required and defaulted");
  keys_.push_back(std::move(spec));
}

void RecipeSchema::add_rule(std::function<void(const Recipe&)> rule) { rules_.push_back(std::move(rule)); }

const KeySpec* RecipeSchema::find(const std::string& path) const {
  for (const KeySpec& spec : keys_)
    if (spec.path == path) return &spec;
  return nullptr;
}

bool RecipeSchema::is_section(const std::string& path) const {
  const std::string prefix = path + ".";
  for (const KeySpec& spec : keys_)
    if (spec.path.compare(0, prefix.size(), prefix) == 0) return true;
  return false;
}

std::vector<std::string> RecipeSchema::children(const std::string& section) const {
  const std::string prefix = section.empty() ? "" : section + ".";
  std::set<std::string> out;
  for (const KeySpec& spec : keys_) {
    if (spec.path.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = spec.path.substr(prefix.size());
    const std::string child = rest.substr(0, rest.find('.'));
    out.insert(child.size() > 2 && child.ends_with("[]") ? child.substr(0, child.size() - 2) : child);
  }
  return {out.begin(), out.end()};
}

std::string RecipeSchema::describe() const {
  std::ostringstream out;
  for (const KeySpec& spec : keys_) {
    out << spec.path << " (" << value_type_name(spec.type) << ", ";
    if (spec.required) out << "required";
    else if (spec.default_value.is_null()) out << "optional";
    else out << "default " << spec.default_value.dump();
    out << "): " << spec.doc;
    if (!spec.choices.empty()) {
      out << " [";
      for (size_t i = 0; i < spec.choices.size(); ++i) out << (i ? "|" : "") << spec.choices[i];
      out << "]";
    }
    out << "\n";
  }
  return out.str();
}

namespace {

// Small constructors keep the table below one line per key.
KeySpec key(std::string path, ValueType type, json default_value, std::string doc) {
  KeySpec spec;
  spec.path = std::move(path);
  spec.type = type;
  spec.default_value = std::move(default_value);
  spec.doc = std::move(doc);
  return spec;
}
KeySpec required(std::string path, ValueType type, std::string doc) {
  KeySpec spec = key(std::move(path), type, nullptr, std::move(doc));
  spec.required = true;
  return spec;
}
KeySpec bounded(KeySpec spec, std::optional<double> min, std::optional<double> max = std::nullopt) {
  spec.min = min;
  spec.max = max;
  return spec;
}
KeySpec one_of(KeySpec spec, std::vector<std::string> choices) {
  spec.choices = std::move(choices);
  return spec;
}

using VT = ValueType;

}  // namespace

void add_optimizer_section(RecipeSchema& s, const std::string& section, const std::string& what) {
  s.add(key(section + ".name", VT::string, "adamw", "registered optimizer for " + what + " (adamw, sgd, plugins)"));
  s.add(bounded(key(section + ".lr", VT::number, 6.4e-5, "peak learning rate"), 0.0));
  KeySpec betas = bounded(key(section + ".betas", VT::number_list, {0.9, 0.999}, "Adam (beta1, beta2)"), 0.0, 1.0);
  betas.length = 2;
  s.add(std::move(betas));
  s.add(bounded(key(section + ".eps", VT::number, 1e-8, "Adam denominator epsilon"), 0.0));
  s.add(bounded(key(section + ".weight_decay", VT::number, 0.0, "decoupled weight decay (AdamW) / L2 (SGD)"), 0.0));
  s.add(bounded(key(section + ".momentum", VT::number, 0.9, "SGD momentum (0 = plain SGD)"), 0.0, 1.0));
  s.add(key(section + ".nesterov", VT::boolean, false, "SGD Nesterov momentum"));
  s.add(key(section + ".no_decay", VT::string_list, {"*.bias", "*norm*.weight"},
            "parameter-name globs that get no weight decay (norms and biases)"));
  s.add(key(section + ".groups", VT::table_list, json::array(),
            "param groups: [[" + section + ".groups]] params = [globs], optional lr / weight_decay"));
  s.add(required(section + ".groups[].params", VT::string_list, "parameter-name globs of this group"));
  s.add(bounded(key(section + ".groups[].lr", VT::number, nullptr, "this group's peak learning rate"), 0.0));
  s.add(bounded(key(section + ".groups[].weight_decay", VT::number, nullptr, "this group's weight decay"), 0.0));
}

void add_schedule_section(RecipeSchema& s, const std::string& section, const std::string& what) {
  s.add(key(section + ".name", VT::string, "constant", "registered LR schedule for " + what + " (constant, cosine)"));
  s.add(bounded(key(section + ".warmup_steps", VT::integer, 0, "linear warmup length in steps"), 0.0));
  s.add(bounded(key(section + ".warmup_init_ratio", VT::number, 0.0, "warmup starts at this fraction of lr"), 0.0, 1.0));
  s.add(bounded(key(section + ".min_lr_ratio", VT::number, 0.0, "cosine ends at this fraction of lr"), 0.0, 1.0));
  s.add(bounded(key(section + ".decay_steps", VT::integer, 0, "cosine horizon in steps (0 = train.steps)"), 0.0));
}

std::string recipe_job_kind(const nlohmann::json& values) {
  if (!values.is_object() || !values.contains("job")) return "dcae";
  const nlohmann::json& job = values.at("job");
  DCAE_CHECK(job.is_string(), "recipe key 'job' must be a string (\"dcae\" or \"diffusion\"), got ", job.dump());
  const std::string kind = job.get<std::string>();
  DCAE_CHECK(kind == "dcae" || kind == "diffusion", "recipe key 'job' = \"", kind,
             "\": expected \"dcae\" (autoencoder training) or \"diffusion\" (latent diffusion training)");
  return kind;
}

void check_cuda_graph_recipe(const Recipe& r) {
  if (!r.get<bool>("train.cuda_graph")) return;
  // Everything a captured step cannot do: each refusal names the key and why the graph cannot take it.
  const std::string where = "recipe " + r.describe_origin() + ": train.cuda_graph = true (" + r.origin("train.cuda_graph") + ")";
  DCAE_CHECK(r.get<std::string>("train.device") != "cpu", where, " needs a GPU, but train.device = \"cpu\"");
  DCAE_CHECK(r.get<double>("loss.gan") == 0.0, where, " cannot take loss.gan = ", r.get<double>("loss.gan"),
             ": the GAN alternates discriminator steps decided on the host; train it without the graph");
  DCAE_CHECK(r.get<std::string>("train.precision") != "fp16", where,
             " cannot take train.precision = \"fp16\": dynamic loss scaling decides on the host every step "
             "(use bf16 or fp32)");
  DCAE_CHECK(r.get<std::string>("dist.strategy") != "fsdp", where,
             " cannot take dist.strategy = \"fsdp\": unit gathers and reduce-scatters run from host hooks");
  DCAE_CHECK(r.get<std::string>("optim.name") == "adamw", where, " needs optim.name = \"adamw\" (its capturable ",
             "mode keeps step counts and lr on the GPU), got \"", r.get<std::string>("optim.name"), "\"");
}

RecipeSchema dcae_recipe_schema() {
  RecipeSchema s;
  s.add(one_of(key("job", VT::string, "dcae", "what this recipe trains: dcae (autoencoder) or diffusion"),
               {"dcae", "diffusion"}));
  s.add(key("plugins", VT::string_list, json::array(),
            "shared libraries to load first; each exports dcae_plugin_register_v3 (paths relative to the working dir)"));

  s.add(required("model.name", VT::string, "registered model: a published config (dc-ae-f32c32-in-1.0, ...) or a custom one"));
  s.add(key("model.config", VT::table, json::object(), "overrides of the named config's fields (widths, depths, ...)"));
  s.add(key("model.init_from", VT::string, "", "weights to start from (safetensors, diffusers folder or checkpoint); empty = random"));

  s.add(key("data.source", VT::string, "auto",
            "registered image source: shards, synthetic, folder, plugins; auto = synthetic if data.synthetic, "
            "folder if data.folder, else shards"));
  s.add(key("data.shards", VT::string, "",
            "training shards: a file, a glob or a dcae-shard folder; required for the shards source"));
  s.add(key("data.eval_shards", VT::string, "", "held-out shards for evaluation (empty: the last of data.shards is held out)"));
  s.add(key("data.folder", VT::string, "", "folder of PNG/JPEG training images (the folder source)"));
  s.add(key("data.eval_folder", VT::string, "", "held-out images for the folder source (empty: its last eval.images files)"));
  s.add(bounded(key("data.resolution", VT::integer, 256, "training image side in pixels"), 8.0));
  s.add(bounded(key("data.batch_size", VT::integer, 8, "images per micro-step on each rank"), 1.0));
  s.add(bounded(key("data.workers", VT::integer, 2, "data loader threads"), 0.0));
  s.add(key("data.synthetic", VT::boolean, false, "train on generated images instead of shards"));
  s.add(bounded(key("data.synthetic_images", VT::integer, 256, "size of the generated dataset"), 1.0));
  s.add(key("data.shuffle", VT::boolean, true, "reshuffle the training images every epoch"));

  s.add(bounded(key("loss.l1", VT::number, 1.0, "weight of the L1 pixel loss"), 0.0));
  s.add(bounded(key("loss.mse", VT::number, 0.0, "weight of the MSE pixel loss"), 0.0));
  s.add(bounded(key("loss.lpips", VT::number, 0.0, "weight of the LPIPS perceptual loss"), 0.0));
  s.add(key("loss.lpips_weights", VT::string, "", "safetensors file with the LPIPS VGG16 features and linear heads"));
  s.add(bounded(key("loss.gan", VT::number, 0.0, "weight of the generator's GAN loss"), 0.0));
  s.add(bounded(key("loss.gan_start_step", VT::integer, 0, "step at which the GAN loss and discriminator start"), 0.0));
  s.add(one_of(key("loss.gan_loss", VT::string, "hinge", "GAN objective"), {"hinge", "non_saturating"}));
  s.add(key("loss.adaptive_gan_weight", VT::boolean, false, "scale the GAN loss by |grad rec| / |grad gan| (VQGAN)"));
  s.add(bounded(key("loss.adaptive_gan_max", VT::number, 1e4, "upper clamp of the adaptive GAN weight"), 0.0));
  s.add(bounded(key("loss.disc_layers", VT::integer, 3, "PatchGAN discriminator depth (strided conv layers)"), 1.0));
  s.add(bounded(key("loss.disc_channels", VT::integer, 64, "PatchGAN discriminator base width"), 1.0));
  s.add(one_of(key("loss.disc_norm", VT::string, "batch", "PatchGAN discriminator normalisation"), {"batch", "none"}));
  s.add(key("loss.terms", VT::table, json::object(), "extra registered loss terms by name with their weights"));

  add_optimizer_section(s, "optim", "the autoencoder");
  add_optimizer_section(s, "disc_optim", "the discriminator");
  add_schedule_section(s, "schedule", "the autoencoder");
  add_schedule_section(s, "disc_schedule", "the discriminator");

  s.add(bounded(required("train.steps", VT::integer, "optimizer steps to train"), 1.0));
  s.add(bounded(key("train.grad_accum", VT::integer, 1, "micro-batches accumulated per optimizer step"), 1.0));
  s.add(bounded(key("train.clip_grad_norm", VT::number, 0.0, "clip gradients to this global L2 norm (0 = off)"), 0.0));
  s.add(one_of(key("train.precision", VT::string, "fp32", "compute precision (fp32 master weights always)"),
               {"fp32", "bf16", "fp16"}));
  s.add(key("train.trainable", VT::string_list, {"*"}, "parameter-name globs that train; everything else is frozen"));
  s.add(key("train.seed", VT::integer, 0, "seed of every random stream (init, data order, GAN)"));
  s.add(bounded(key("train.ema_decay", VT::number, 0.0, "EMA decay of the weights (0 = no EMA)"), 0.0, 1.0));
  s.add(key("train.ema_warmup", VT::boolean, true, "EMA decay ramps as min(decay, (1+s)/(10+s))"));
  s.add(bounded(key("train.max_nonfinite_steps", VT::integer, 10, "stop after this many non-finite steps in a row"), 1.0));
  s.add(bounded(key("train.loss_scale_init", VT::number, 65536.0, "fp16: initial dynamic loss scale"), 1.0));
  s.add(bounded(key("train.loss_scale_growth_interval", VT::integer, 2000, "fp16: finite steps before the scale doubles"), 1.0));
  s.add(key("train.device", VT::string, "auto", "cpu, cuda, cuda:N or auto (cuda when available)"));
  s.add(key("train.cuda_graph", VT::boolean, false,
            "capture the whole step (forward, losses, backward, clip, AdamW, EMA) in a CUDA graph after one eager "
            "step and replay it; losses stay on the GPU until a log step (one GPU, adamw, no GAN, no fp16)"));

  s.add(bounded(key("eval.every", VT::integer, 1000, "evaluate every N steps (0 = never)"), 0.0));
  s.add(bounded(key("eval.images", VT::integer, 16, "held-out images per evaluation"), 1.0));
  s.add(bounded(key("eval.batch_size", VT::integer, 0, "evaluation batch (0 = data.batch_size)"), 0.0));
  s.add(key("eval.grid", VT::boolean, true, "write reconstruction grids as PNG"));
  s.add(key("eval.use_ema", VT::boolean, true, "evaluate the EMA weights when EMA is on"));

  s.add(key("checkpoint.dir", VT::string, "", "checkpoint folder (empty: <log.dir>/checkpoints)"));
  s.add(bounded(key("checkpoint.every", VT::integer, 1000, "save every N steps (0 = only at the end)"), 0.0));
  s.add(bounded(key("checkpoint.keep_last", VT::integer, 3, "keep the newest K complete checkpoints (0 = all)"), 0.0));
  s.add(key("checkpoint.resume", VT::string, "auto", "auto (newest complete), none, or a checkpoint folder"));

  s.add(bounded(key("log.every", VT::integer, 10, "progress line and metrics row every N steps"), 1.0));
  s.add(key("log.dir", VT::string, "runs/dcae", "run folder: metrics.jsonl, grids, checkpoints"));
  s.add(key("log.all_ranks", VT::boolean, false, "every rank logs (default: rank 0 only)"));

  s.add(one_of(key("dist.strategy", VT::string, "ddp",
                   "ddp: replicated model, gradients all-reduced; fsdp: parameters, gradients and optimizer state "
                   "sharded over ranks (also on one rank)"),
               {"ddp", "fsdp"}));
  s.add(key("dist.fsdp.units", VT::string_list, {"encoder.down_blocks.*", "decoder.up_blocks.*"},
            "module-name globs of the FSDP units (gathered one at a time; the rest is gathered for the whole step)"));
  s.add(key("dist.fsdp.reshard_after_forward", VT::boolean, true,
            "free a unit's gathered parameters after its forward and gather them again for backward"));
  s.add(key("dist.fsdp.prefetch", VT::boolean, true, "start the next unit's all-gather while the current one computes"));
  s.add(one_of(key("dist.fsdp.reduce_dtype", VT::string, "fp32",
                   "dtype gradients are averaged in (bf16 halves the reduce-scatter staging and traffic)"),
               {"fp32", "bf16"}));

  s.add_rule([](const Recipe& r) {
    const std::string source = r.get<std::string>("data.source");
    const bool shards = source == "shards" ||
                        (source == "auto" && !r.get<bool>("data.synthetic") && r.get<std::string>("data.folder").empty());
    DCAE_CHECK(!shards || !r.get<std::string>("data.shards").empty(), "recipe ", r.describe_origin(),
               ": data.shards is required unless data.synthetic = true or data.folder is set");
  });
  s.add_rule([](const Recipe& r) {
    DCAE_CHECK(r.get<std::string>("dist.strategy") != "fsdp" || r.get<double>("loss.gan") == 0.0, "recipe ",
               r.describe_origin(), ": loss.gan = ", r.get<double>("loss.gan"), " (", r.origin("loss.gan"),
               ") trains a discriminator, which dist.strategy = \"fsdp\" does not shard; use dist.strategy = \"ddp\"");
  });
  s.add_rule([](const Recipe& r) {
    DCAE_CHECK(r.get<double>("loss.lpips") == 0.0 || !r.get<std::string>("loss.lpips_weights").empty(),
               "recipe ", r.describe_origin(), ": loss.lpips = ", r.get<double>("loss.lpips"), " (", r.origin("loss.lpips"),
               ") needs loss.lpips_weights");
  });
  s.add_rule(check_cuda_graph_recipe);
  return s;
}

}  // namespace dcae::trainer
