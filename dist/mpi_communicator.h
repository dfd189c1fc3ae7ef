// Collectives over MPI for CPU tensors. Each communicator owns a duplicate of its MPI communicator and one worker
// thread that runs the collectives in issue order, so they overlap with the caller's compute (this needs
// MPI_THREAD_MULTIPLE, which dist::init asks for). bf16/f16 reductions go through fp32 staging buffers; moves
// (gather, broadcast) send the raw bits.
#pragma once
#ifdef DCAE_WITH_MPI
#include <mpi.h>

#include <memory>

#include "dist/communicator.h"

namespace dcae::dist {

class MpiCommunicator final : public Communicator {
 public:
  // Collective over the ranks of `parent`: duplicates it, so traffic never mixes with other users of `parent`.
  explicit MpiCommunicator(MPI_Comm parent);
  // Lets queued collectives finish; when one is still stuck a timeout after the request to stop, the job is
  // aborted with a message naming it (MPI cannot be shut down cleanly around a collective that never completes).
  ~MpiCommunicator() override;

  std::string backend() const override { return "mpi"; }
  bool supports(Device device) const override { return device.is_cpu(); }
  // Set after a timeout: every later collective throws.
  bool broken() const;

  struct State;  // shared with the worker thread and the Work handles

 protected:
  WorkPtr start_all_reduce(const Call& call, const Tensor& t, ReduceOp op) override;
  WorkPtr start_all_gather(const Call& call, const Tensor& out, const Tensor& in) override;
  WorkPtr start_reduce_scatter(const Call& call, const Tensor& out, const Tensor& in, ReduceOp op) override;
  WorkPtr start_broadcast(const Call& call, const Tensor& t, int root) override;
  WorkPtr start_barrier(const Call& call) override;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace dcae::dist
#endif
