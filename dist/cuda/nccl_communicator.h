// Collectives over NCCL for CUDA tensors, one GPU per rank (CUDA builds with NCCL only). The communicator is set up
// from an MPI communicator: rank 0 creates the ncclUniqueId and broadcasts it over MPI. Every collective runs on the
// communicator's own stream: it first waits (on the GPU, through an event) for the work already queued on the
// compute stream, and records a completion event that Work::wait() polls against the timeout, so communication
// overlaps compute and a dead rank ends in an error naming the collective (the NCCL communicator is aborted).
//
// The compute stream is CUDA's default stream until the CUDA backend's stream API lands. Tensors are kept alive by
// the Work; with the plain cudaMalloc storage of today freeing memory synchronises the device, so a Work dropped
// without wait() cannot free a buffer under a running collective.
#pragma once
#ifdef DCAE_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>

#include "dist/bootstrap.h"
#include "dist/communicator.h"

namespace dcae::dist {

// Makes the GPU of this process's local rank current (local rank from the launcher, never rank % GPUs).
int bind_local_gpu(const DistContext& ctx);

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap` (a CPU communicator, normally dist::world()). Uses GPU `device_index`.
  NcclCommunicator(Communicator& bootstrap, int device_index);
  ~NcclCommunicator() override;

  std::string backend() const override { return "nccl"; }
  bool supports(Device device) const override { return device.is_cuda() && device.index == device_index_; }
  cudaStream_t stream() const { return stream_; }
  bool broken() const;

  struct State;  // shared with the Work handles: the NCCL communicator and whether a timeout aborted it

 protected:
  WorkPtr start_all_reduce(const Call& call, const Tensor& t, ReduceOp op) override;
  WorkPtr start_all_gather(const Call& call, const Tensor& out, const Tensor& in) override;
  WorkPtr start_reduce_scatter(const Call& call, const Tensor& out, const Tensor& in, ReduceOp op) override;
  WorkPtr start_broadcast(const Call& call, const Tensor& t, int root) override;
  WorkPtr start_barrier(const Call& call) override;

 private:
  template <typename Launch>
  WorkPtr launch(const Call& call, std::vector<Tensor> keep_alive, Launch&& op);

  int device_index_;
  cudaStream_t stream_ = nullptr;
  std::shared_ptr<State> state_;
  Tensor barrier_buffer_;
};

}  // namespace dcae::dist
#endif
