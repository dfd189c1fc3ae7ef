// Training checkpoints. One folder per save, <dir>/step_00001000/, holding
//   <module>.safetensors      every parameter and buffer of each module ("model", "disc", ...)
//   ema.safetensors/.json     EMA shadows and their counters (when there is an EMA)
//   <optim>.safetensors/.json optimizer state tensors and scalars ("optim", "disc_optim")
//   trainer_state.json        step, RNG states, data position (opaque, from the loader), schedule, extras
//   COMPLETE                  written last
// The folder is written under a temporary name, every file fsync'ed, renamed into place, and only then marked
// COMPLETE, so a crash at any point leaves either the previous checkpoints or an unmarked folder that resume skips.
// Only one process (rank 0) writes; sharded checkpoints (dist.strategy = "fsdp") are written by every rank through
// dist/sharded_checkpoint.h into the same step_XXXXXXXX folders (trainer/dcae_job_fsdp.cpp), so the functions below
// (complete_checkpoints, prune, resolve_resume) cover both kinds.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor/philox.h"
#include "nn/module.h"
#include "trainer/ema.h"
#include "trainer/optim/optimizer.h"

namespace dcae::trainer {

struct RngState {
  uint64_t seed = 0;
  uint64_t offset = 0;
};
inline RngState capture_rng(const Generator& gen) { return {gen.seed(), gen.offset()}; }
inline void restore_rng(Generator& gen, const RngState& state) { gen.set_state(state.seed, state.offset); }

struct TrainerState {
  int64_t step = 0;                         // optimizer steps completed
  std::map<std::string, RngState> rng;      // named generators ("default", "data", "gan", ...)
  nlohmann::json data_position;             // opaque: whatever the data loader needs to continue where it stopped
  nlohmann::json schedule;                  // Schedule::to_json(), to notice a changed schedule on resume
  nlohmann::json extra = nlohmann::json::object();  // loss scale, non-finite counter, ...
};
nlohmann::json trainer_state_to_json(const TrainerState& state);
TrainerState trainer_state_from_json(const nlohmann::json& j);

// What a checkpoint holds. Pointers are borrowed; an absent EMA or optimizer is simply not saved/loaded.
struct CheckpointItems {
  std::vector<std::pair<std::string, nn::Module*>> modules;     // {"model", &model}, {"disc", &disc}
  Ema* ema = nullptr;
  std::vector<std::pair<std::string, Optimizer*>> optimizers;   // {"optim", optim.get()}
  std::map<std::string, std::string> text_files;                // saved as-is, e.g. {"recipe.toml", text}
};

// Called with a stage name ("model.safetensors", "renamed", ...) after each step of a save; tests throw from it to
// simulate a crash at that point.
using CheckpointStageHook = std::function<void(const std::string& stage)>;

std::string checkpoint_folder_name(int64_t step);  // "step_00001000"

// Writes the checkpoint for state.step into `dir` (created if needed) and returns the final folder. A complete
// checkpoint of the same step is replaced only once the new one is complete.
std::string save_checkpoint(const std::string& dir, const CheckpointItems& items, const TrainerState& state,
                            const CheckpointStageHook& hook = nullptr);

// Loads `folder` (must be complete) into the items, validating every name, shape and dtype against them: all files
// are read and the modules checked before anything changes, and each optimizer and the EMA check their state
// before they take it. Errors name the file and the mismatch. Returns the trainer state.
TrainerState load_checkpoint(const std::string& folder, const CheckpointItems& items);

bool is_complete_checkpoint(const std::string& folder);
// Complete checkpoints in `dir`, oldest first (by step).
std::vector<std::string> complete_checkpoints(const std::string& dir);
// The newest complete checkpoint in `dir`; incomplete folders (no COMPLETE marker) are ignored.
std::optional<std::string> latest_complete(const std::string& dir);
// Deletes all but the newest `keep_last` complete checkpoints (sharded ones too), plus incomplete folders older than
// the newest complete one and leftovers of interrupted saves (ours and sharded `.partial` folders). keep_last 0
// keeps everything. Returns the deleted folders.
std::vector<std::string> prune_checkpoints(const std::string& dir, int64_t keep_last);
// checkpoint.resume: "none" -> nothing; "auto" -> latest_complete(dir) (nothing when there is none); otherwise a
// folder that must be a complete checkpoint.
std::optional<std::string> resolve_resume(const std::string& resume, const std::string& dir);

}  // namespace dcae::trainer
