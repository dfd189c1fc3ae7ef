// FullyShardedModel's bookkeeping, shared by fsdp.cpp (set-up, state, accounting) and fsdp_schedule.cpp (gather,
// reshard, backward hooks, reduce-scatter).
#pragma once
#include "dist/fsdp.h"

namespace dcae::dist {

struct FullyShardedModel::Param {
  std::string name;
  Tensor param;  // the model's tensor: the unsharded parameter (compute dtype), memory only while gathered
  ShardLayout layout;
  Tensor shard;  // padded shard: fp32 (f64) master leaf when trainable, compute dtype when frozen
  bool trainable = false;
  size_t unit = 0;
  int64_t gather_offset = 0;  // element offset of this shard in its unit's all-gather block
  int64_t grad_offset = 0;    // element offset in its unit's reduce-scatter block (trainable only)
  bool grad_ready = false;    // this backward has finished its gradient
  int hook = 0;               // gradient-ready hook handle
};

struct FullyShardedModel::Unit {
  enum class State { sharded, gathering, gathered };
  std::string name;
  nn::Module* module = nullptr;  // null for the root unit
  std::vector<size_t> params;
  int64_t trainable_params = 0;
  bool all_trainable = false;
  bool wrapped = false;                // wrap() made a ShardedLayer for it
  nn::Layer* hooked_layer = nullptr;  // the module's forward interceptor is ours (removed in the destructor)
  bool intercepted = false;           // its interceptor has run: later forwards leave it to run_unit
  int64_t gather_numel = 0;  // per rank
  int64_t grad_numel = 0;    // per rank, trainable shards only
  State state = State::sharded;
  WorkPtr gather_work;
  Tensor gather_in, gather_out;
  // This step's backward progress.
  bool used = false;                // gathered by this step's forward
  bool backward_pending = false;    // its backward may still read the gathered parameters
  bool input_grad_pending = false;  // the gradient of its input has not been produced yet
  int64_t grads_ready = 0;
  bool reduced = false;
  UnitInfo info;  // counters
};

struct FullyShardedModel::PendingReduce {
  size_t unit = 0;
  WorkPtr work;
  Tensor in, out;
};

}  // namespace dcae::dist
