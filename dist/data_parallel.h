// Data parallelism (DDP): every rank holds the whole model, runs its share of the global batch, and gradients are
// averaged over ranks before the optimizer step. Trainable parameters are packed into buckets of about
// bucket_mb; a bucket's all-reduce starts from the gradient-ready hooks as soon as backward has finished all of its
// parameters, so communication overlaps the rest of backward. The backward-end hook starts what is left (in bucket
// order: every rank issues the same collectives in the same order), waits, and writes the averaged gradients back.
//
//   dist::DataParallel ddp(model, dist::world(), {.bucket_mb = 25});   // broadcasts rank 0's weights
//   loop: optim.zero_grad();
//         for each micro-step: ddp.set_gradient_sync(last_micro_step); autograd::backward(loss / micro_steps);
//         optim.step();   // .grad() already holds the average over ranks
//
// The loss on each rank is the mean over its local batch; with equal local batches the averaged gradient is the
// gradient of the mean over the global batch, so training matches one process on the global batch.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/memory.h"
#include "nn/module.h"

namespace dcae::dist {

struct DataParallelOptions {
  double bucket_mb = 25.0;           // bucket size; a parameter larger than this gets a bucket of its own
  bool broadcast_parameters = true;  // copy rank 0's parameters and buffers to every rank at construction
};

class DataParallel {
 public:
  // Hooks every parameter of `model` that requires grad now (freeze before wrapping).
  DataParallel(nn::Module& model, std::shared_ptr<Communicator> comm, DataParallelOptions options = {});
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Off: backward only accumulates local gradients (micro-steps before the last of a gradient accumulation);
  // the next backward with sync on reduces the accumulated sum.
  void set_gradient_sync(bool enabled) { sync_ = enabled; }
  bool gradient_sync() const { return sync_; }
  // Finishes a pending reduction now (the backward-end hook calls it); does nothing when none is pending.
  void finish_gradient_sync();

  // Parameter names per bucket, in launch order.
  std::vector<std::vector<std::string>> bucket_layout() const;
  // Buckets whose all-reduce started from a gradient-ready hook, i.e. before backward ended (over all steps).
  int64_t buckets_started_during_backward() const { return started_early_; }
  int64_t buckets_started() const { return started_total_; }

  void set_optimizer_state_bytes(int64_t bytes) { optimizer_state_bytes_ = bytes; }
  MemoryStats memory() const;

 private:
  struct Slot {
    std::string name;
    Tensor param;
    int64_t offset = 0;  // element offset in the bucket buffer
    bool ready = false;
  };
  struct Bucket {
    std::vector<Slot> slots;
    Tensor buffer;  // flat, in the gradients' dtype
    int64_t ready_count = 0;
    WorkPtr work;
  };

  void on_grad_ready(size_t bucket, size_t slot);
  void launch_ready_buckets();
  void launch(size_t bucket);

  nn::Module& model_;
  std::shared_ptr<Communicator> comm_;
  DataParallelOptions options_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<Tensor, int>> hook_handles_;
  int end_hook_ = 0;
  bool sync_ = true;
  bool pending_ = false;    // a gradient-ready hook fired since the last finish
  size_t next_launch_ = 0;  // buckets launch strictly in index order
  int64_t started_early_ = 0;
  int64_t started_total_ = 0;
  int64_t optimizer_state_bytes_ = 0;
  int64_t communication_peak_ = 0;
};

// Copies rank `root`'s parameters and buffers to every rank (in state() order).
void broadcast_module(nn::Module& model, Communicator& comm, int root = 0);

}  // namespace dcae::dist
