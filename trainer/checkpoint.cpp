#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "nn/io/safetensors.h"

namespace dcae::trainer {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr const char* kCompleteMarker = "COMPLETE";
constexpr const char* kStatePrefix = "step_";
constexpr const char* kTempPrefix = ".tmp-step_";
constexpr const char* kOldPrefix = ".old-step_";

// Flushes a file's or folder's data and metadata to the device.
void fsync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  DCAE_CHECK(fd >= 0, "checkpoint: cannot open '", path.string(), "' to fsync it");
  const int rc = ::fsync(fd);
  ::close(fd);
  DCAE_CHECK(rc == 0, "checkpoint: fsync of '", path.string(), "' failed");
}

void write_text(const fs::path& path, const std::string& text) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    DCAE_CHECK(out.good(), "checkpoint: cannot write '", path.string(), "'");
    out << text;
    out.flush();
    DCAE_CHECK(out.good(), "checkpoint: writing '", path.string(), "' failed (disk full?)");
  }
  fsync_path(path);
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  DCAE_CHECK(in.good(), "checkpoint: cannot read '", path.string(), "'");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    DCAE_FAIL("checkpoint: '", path.string(), "' is not valid JSON: ", e.what());
  }
}

std::map<std::string, Tensor> read_tensors(const fs::path& path) {
  nn::SafetensorsFile file(path.string());
  std::map<std::string, Tensor> out;
  for (const std::string& name : file.names()) out[name] = file.load(name);
  return out;
}

// step_00001000 -> 1000; -1 for any other name.
int64_t step_of(const std::string& name, const std::string& prefix = kStatePrefix) {
  if (name.compare(0, prefix.size(), prefix) != 0 || name.size() == prefix.size()) return -1;
  const std::string digits = name.substr(prefix.size());
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) return -1;
  return std::stoll(digits);
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < 8; ++i) out += (i ? ", " : "") + names[i];
  return names.size() > 8 ? out + ", ... (" + std::to_string(names.size()) + " in all)" : out;
}

// Checks a module's state against a safetensors file without loading anything; returns the tensors to copy. One
// error lists every missing, unexpected and mismatched name.
std::vector<std::pair<Tensor, std::string>> check_module(const nn::Module& module, const nn::SafetensorsFile& file) {
  std::vector<std::pair<Tensor, std::string>> plan;
  std::set<std::string> expected;
  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& [name, t] : module.state()) {
    expected.insert(name);
    if (!file.contains(name)) {
      missing.push_back("'" + name + "' (" + t.str() + ")");
      continue;
    }
    const nn::SafetensorsEntry& e = file.entry(name);
    if (e.shape != t.shape() || e.dtype != t.dtype())
      mismatched.push_back("'" + name + "' is " + shape_str(e.shape) + " " + dtype_name(e.dtype) + ", the model has " +
                           t.str());
    plan.emplace_back(t, name);
  }
  for (const std::string& name : file.names())
    if (!expected.count(name)) unexpected.push_back("'" + name + "'");
  if (missing.empty() && unexpected.empty() && mismatched.empty()) return plan;
  std::string problems;
  if (!mismatched.empty()) problems += "; mismatched: " + join_names(mismatched);
  if (!missing.empty()) problems += "; missing from the checkpoint: " + join_names(missing);
  if (!unexpected.empty()) problems += "; in the checkpoint but not the model: " + join_names(unexpected);
  DCAE_FAIL("checkpoint '", file.path(), "' does not match the model", problems);
}

}  // namespace

json trainer_state_to_json(const TrainerState& state) {
  json rng = json::object();
  for (const auto& [name, r] : state.rng) rng[name] = {{"seed", r.seed}, {"offset", r.offset}};
  return {{"step", state.step}, {"rng", rng}, {"data_position", state.data_position},
          {"schedule", state.schedule}, {"extra", state.extra}};
}

TrainerState trainer_state_from_json(const json& j) {
  TrainerState state;
  state.step = j.at("step").get<int64_t>();
  for (const auto& [name, r] : j.at("rng").items())
    state.rng[name] = RngState{r.at("seed").get<uint64_t>(), r.at("offset").get<uint64_t>()};
  state.data_position = j.value("data_position", json());
  state.schedule = j.value("schedule", json());
  state.extra = j.value("extra", json::object());
  return state;
}

std::string checkpoint_folder_name(int64_t step) {
  DCAE_CHECK(step >= 0, "checkpoint step must be >= 0, got ", step);
  char name[32];
  std::snprintf(name, sizeof(name), "%s%08lld", kStatePrefix, static_cast<long long>(step));
  return name;
}

std::string save_checkpoint(const std::string& dir, const CheckpointItems& items, const TrainerState& state,
                            const CheckpointStageHook& hook) {
  auto stage = [&](const std::string& name) {
    if (hook) hook(name);
  };
  fs::create_directories(dir);
  const std::string name = checkpoint_folder_name(state.step);
  const fs::path final_path = fs::path(dir) / name, temp = fs::path(dir) / (kTempPrefix + name.substr(5));
  fs::remove_all(temp);  // a leftover of an interrupted save of this step
  fs::create_directory(temp);

  std::set<std::string> files;
  auto claim = [&](const std::string& file) {
    DCAE_CHECK(files.insert(file).second, "checkpoint: two items would both write '", file, "'");
    return temp / file;
  };
  for (const auto& [module_name, module] : items.modules) {
    const fs::path path = claim(module_name + ".safetensors");
    nn::write_safetensors(path.string(), module->state());
    fsync_path(path);
    stage(path.filename().string());
  }
  if (items.ema != nullptr) {
    nn::write_safetensors(claim("ema.safetensors").string(), items.ema->state_tensors());
    fsync_path(temp / "ema.safetensors");
    write_text(claim("ema.json"), items.ema->state_json().dump(2));
    stage("ema");
  }
  for (const auto& [optim_name, optim] : items.optimizers) {
    const fs::path tensors = claim(optim_name + ".safetensors");
    nn::write_safetensors(tensors.string(), optim->state_tensors());
    fsync_path(tensors);
    write_text(claim(optim_name + ".json"), optim->state_json().dump(2));
    stage(optim_name);
  }
  for (const auto& [file, text] : items.text_files) write_text(claim(file), text);
  write_text(claim("trainer_state.json"), trainer_state_to_json(state).dump(2));
  fsync_path(temp);
  stage("written");

  // A previous save of this step is set aside (not deleted) until the new one is complete.
  const fs::path old = fs::path(dir) / (kOldPrefix + name.substr(5));
  fs::remove_all(old);
  if (fs::exists(final_path)) fs::rename(final_path, old);
  fs::rename(temp, final_path);
  fsync_path(dir);
  stage("renamed");
  write_text(final_path / kCompleteMarker, "step " + std::to_string(state.step) + "\n");
  fsync_path(final_path);
  fs::remove_all(old);
  stage("complete");
  return final_path.string();
}

TrainerState load_checkpoint(const std::string& folder, const CheckpointItems& items) {
  DCAE_CHECK(fs::is_directory(folder), "checkpoint folder '", folder, "' not found");
  DCAE_CHECK(is_complete_checkpoint(folder), "checkpoint '", folder, "' is incomplete (no ", kCompleteMarker,
             " marker): it was interrupted while being written");
  const fs::path root(folder);
  auto need = [&](const std::string& file) {
    DCAE_CHECK(fs::is_regular_file(root / file), "checkpoint '", folder, "' has no ", file);
    return root / file;
  };
  // Validate everything first so that a mismatch leaves the model, EMA and optimizers untouched.
  std::vector<std::unique_ptr<nn::SafetensorsFile>> module_files;
  std::vector<std::vector<std::pair<Tensor, std::string>>> plans;
  for (const auto& [name, module] : items.modules) {
    module_files.push_back(std::make_unique<nn::SafetensorsFile>(need(name + ".safetensors").string()));
    plans.push_back(check_module(*module, *module_files.back()));
  }
  std::map<std::string, Tensor> ema_tensors;
  json ema_json;
  if (items.ema != nullptr) {
    ema_tensors = read_tensors(need("ema.safetensors"));
    ema_json = read_json(need("ema.json"));
  }
  std::vector<std::pair<std::map<std::string, Tensor>, json>> optim_states;
  for (const auto& [name, optim] : items.optimizers) {
    std::map<std::string, Tensor> tensors = read_tensors(need(name + ".safetensors"));
    optim_states.emplace_back(std::move(tensors), read_json(need(name + ".json")));
  }
  const TrainerState state = trainer_state_from_json(read_json(need("trainer_state.json")));

  // Optimizer and EMA loads validate before they modify; modules were validated above.
  for (size_t i = 0; i < items.optimizers.size(); ++i) {
    try {
      items.optimizers[i].second->load_state(optim_states[i].first, optim_states[i].second);
    } catch (const Error& e) {
      DCAE_FAIL("checkpoint '", folder, "', ", items.optimizers[i].first, ": ", e.what());
    }
  }
  if (items.ema != nullptr) {
    try {
      items.ema->load_state(ema_tensors, ema_json);
    } catch (const Error& e) {
      DCAE_FAIL("checkpoint '", folder, "', ema: ", e.what());
    }
  }
  for (size_t m = 0; m < plans.size(); ++m)
    for (const auto& [target, name] : plans[m]) Tensor(target).copy_(module_files[m]->load(name));
  return state;
}

bool is_complete_checkpoint(const std::string& folder) {
  std::error_code ec;
  return fs::is_regular_file(fs::path(folder) / kCompleteMarker, ec);
}

std::vector<std::string> complete_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  for (const auto& entry : fs::directory_iterator(dir)) {
    const int64_t step = step_of(entry.path().filename().string());
    if (step >= 0 && entry.is_directory() && is_complete_checkpoint(entry.path().string()))
      found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

std::optional<std::string> latest_complete(const std::string& dir) {
  const std::vector<std::string> all = complete_checkpoints(dir);
  if (all.empty()) return std::nullopt;
  return all.back();
}

std::vector<std::string> prune_checkpoints(const std::string& dir, int64_t keep_last) {
  std::vector<std::string> deleted;
  const std::vector<std::string> complete = complete_checkpoints(dir);
  if (complete.empty()) return deleted;
  const int64_t newest = step_of(fs::path(complete.back()).filename().string());
  auto remove = [&](const fs::path& path) {
    fs::remove_all(path);
    deleted.push_back(path.string());
  };
  if (keep_last > 0)
    for (size_t i = 0; i + static_cast<size_t>(keep_last) < complete.size(); ++i) remove(complete[i]);
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const int64_t step = step_of(name);
    const bool stale_incomplete = step >= 0 && step < newest && !is_complete_checkpoint(entry.path().string());
    // Leftovers of interrupted saves: ours, and a sharded save's step_XXXXXXXX.partial (dist/sharded_checkpoint).
    const bool partial = name.ends_with(".partial") && step_of(name.substr(0, name.size() - 8)) >= 0;
    const bool leftover = step_of(name, kTempPrefix) >= 0 || step_of(name, kOldPrefix) >= 0 || partial;
    if (entry.is_directory() && (stale_incomplete || leftover)) remove(entry.path());
  }
  return deleted;
}

std::optional<std::string> resolve_resume(const std::string& resume, const std::string& dir) {
  if (resume == "none" || resume.empty()) return std::nullopt;
  if (resume == "auto") return latest_complete(dir);
  DCAE_CHECK(is_complete_checkpoint(resume), "checkpoint.resume = '", resume,
             "' is not a complete checkpoint folder (expected a folder with a ", kCompleteMarker, " marker)");
  return resume;
}

}  // namespace dcae::trainer
