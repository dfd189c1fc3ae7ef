// Sharded checkpoints: every rank writes its rows of every tensor to its own safetensors file, rank 0 adds a JSON
// manifest (name, full shape, dtype, trainable, row range per rank) and a COMPLETE marker last. The folder is built
// as <dir>.partial and renamed into place, so <dir> either is complete or does not exist. Loading computes, for
// each tensor, which stored rows overlap the rows this rank wants, so a checkpoint written by N ranks loads on any
// number of ranks (2 -> 1 and 1 -> 2 are tested); consolidate reassembles full tensors (for export).
//
// Layout:  <dir>/manifest.json, <dir>/rank_00000.safetensors ... rank_<N-1>, <dir>/COMPLETE
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "nn/module.h"

namespace dcae::dist {

// This rank's rows [row_begin, row_end) of a tensor of shape full_shape (dim 0; a 0-d tensor has one row).
// `data` holds exactly those rows: shape [row_end - row_begin, full_shape[1:]...]. Loading writes into it.
struct ShardedTensor {
  std::string name;
  Shape full_shape;
  bool trainable = true;
  int64_t row_begin = 0;
  int64_t row_end = 0;
  Tensor data;
};

// A whole tensor held by every rank (replicated state such as buffers): rank 0's copy is the one stored.
ShardedTensor replicated(const std::string& name, const Tensor& t, int rank, bool trainable = false);

struct ShardedManifest {
  struct Entry {
    std::string name;
    Shape full_shape;
    DType dtype = DType::f32;
    bool trainable = true;
    std::vector<std::pair<int64_t, int64_t>> rows;  // per writing rank
  };
  int world_size = 1;
  std::vector<Entry> entries;
  nlohmann::json metadata;  // the caller's (step, recipe, ...)
};

// Collective over `comm` (every rank calls it with its own tensors, the same names in the same order). All ranks
// must see the same file system at `dir` (one node, or a shared one). Replaces an existing <dir>. Errors name the
// tensor and what differs between ranks; a rank that fails to write makes every rank throw.
void save_sharded_checkpoint(const std::string& dir, Communicator& comm, const std::vector<ShardedTensor>& tensors,
                             const nlohmann::json& metadata = nlohmann::json::object());

bool is_complete_sharded_checkpoint(const std::string& dir);
ShardedManifest read_sharded_manifest(const std::string& dir);  // throws when incomplete or malformed

// Fills every target's rows from the checkpoint, whatever number of ranks wrote it. Checks name, full shape, dtype
// and trainable flag; errors name the tensor. Not collective (each rank reads the files it needs).
void load_sharded_checkpoint(const std::string& dir, const std::vector<ShardedTensor>& targets);

// Every tensor reassembled to its full shape (CPU), in manifest order.
std::vector<nn::NamedTensor> consolidate_sharded_checkpoint(const std::string& dir);
// The same, written to one safetensors file (dcae-export).
void consolidate_to_safetensors(const std::string& dir, const std::string& path);

}  // namespace dcae::dist
