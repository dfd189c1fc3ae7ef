// Collectives between the ranks of a job, behind one interface with several backends: MPI for CPU tensors
// (dist/mpi_communicator.h), NCCL for CUDA tensors (dist/cuda/nccl_communicator.h) and a single-process one.
//
// Every collective is asynchronous: it returns a Work at once and the caller waits on it. Tensors must be contiguous
// and stay untouched until wait() returns (the Work keeps them alive). A collective that does not finish within the
// communicator's timeout makes wait() throw a dcae::Error naming this rank, the collective and its sequence number:
// a dead, hung or diverging rank ends the job with a message instead of a silent hang. After a timeout the
// communicator is broken and every later collective on it throws at once.
//
// All ranks must issue the same collectives in the same order (sequence numbers count them).
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor/tensor.h"

namespace dcae::dist {

enum class ReduceOp { sum, avg };
const char* reduce_op_name(ReduceOp op);

// A collective in flight.
class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the collective is done; throws dcae::Error on timeout or failure.
  virtual void wait() = 0;
  virtual bool completed() = 0;
};
using WorkPtr = std::shared_ptr<Work>;

// A Work that finished when it was made (world size 1, empty tensors).
WorkPtr completed_work();

using Duration = std::chrono::duration<double>;  // seconds

class Communicator {
 public:
  Communicator(int rank, int size);
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  virtual std::string backend() const = 0;  // "mpi", "nccl", "local"
  virtual bool supports(Device device) const = 0;

  // Time a collective may take before wait() gives up (from DCAE_DIST_TIMEOUT_S, default 600 s).
  Duration timeout() const { return timeout_; }
  void set_timeout(Duration timeout);

  // In place: every rank ends with the elementwise sum (or mean) over ranks. f32, f64, bf16 and f16 (the last two
  // reduced through fp32 staging on the CPU); integer dtypes for sum.
  WorkPtr all_reduce_async(const Tensor& t, ReduceOp op = ReduceOp::sum);
  // out (numel = size * in.numel()) receives every rank's `in`, rank r's at element offset r * in.numel().
  WorkPtr all_gather_async(const Tensor& out, const Tensor& in);
  // in (numel = size * out.numel()) is reduced over ranks and rank r keeps the block at r * out.numel().
  WorkPtr reduce_scatter_async(const Tensor& out, const Tensor& in, ReduceOp op = ReduceOp::sum);
  // In place: every rank ends with root's values.
  WorkPtr broadcast_async(const Tensor& t, int root);
  WorkPtr barrier_async();

  // Blocking forms.
  void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::sum) { all_reduce_async(t, op)->wait(); }
  void all_gather(const Tensor& out, const Tensor& in) { all_gather_async(out, in)->wait(); }
  void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op = ReduceOp::sum) {
    reduce_scatter_async(out, in, op)->wait();
  }
  void broadcast(const Tensor& t, int root) { broadcast_async(t, root)->wait(); }
  void barrier() { barrier_async()->wait(); }

  // Collectives issued so far on this communicator (the next one gets this number).
  int64_t sequence() const { return sequence_; }

 protected:
  // What the backend sees after the arguments were checked; `what` describes the call for error messages
  // ("all_reduce #3 (sum, Tensor[10] f32 cpu)").
  struct Call {
    std::string what;
    int64_t sequence = 0;
  };
  virtual WorkPtr start_all_reduce(const Call& call, const Tensor& t, ReduceOp op) = 0;
  virtual WorkPtr start_all_gather(const Call& call, const Tensor& out, const Tensor& in) = 0;
  virtual WorkPtr start_reduce_scatter(const Call& call, const Tensor& out, const Tensor& in, ReduceOp op) = 0;
  virtual WorkPtr start_broadcast(const Call& call, const Tensor& t, int root) = 0;
  virtual WorkPtr start_barrier(const Call& call) = 0;

  // "rank 1 of 2 (mpi)": the prefix of every error message.
  std::string who() const;

 private:
  Call next_call(const char* name, const std::string& detail);
  void check_tensor(const char* op, const Tensor& t, const char* role) const;

  int rank_;
  int size_;
  Duration timeout_;
  int64_t sequence_ = 0;
};

// The world of one process: every collective is a copy or nothing.
class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator() : Communicator(0, 1) {}
  std::string backend() const override { return "local"; }
  bool supports(Device) const override { return true; }

 protected:
  WorkPtr start_all_reduce(const Call&, const Tensor&, ReduceOp) override { return completed_work(); }
  WorkPtr start_all_gather(const Call& call, const Tensor& out, const Tensor& in) override;
  WorkPtr start_reduce_scatter(const Call& call, const Tensor& out, const Tensor& in, ReduceOp op) override;
  WorkPtr start_broadcast(const Call&, const Tensor&, int) override { return completed_work(); }
  WorkPtr start_barrier(const Call&) override { return completed_work(); }
};

// The default collective timeout: DCAE_DIST_TIMEOUT_S when set (seconds, > 0), else 600 s.
Duration default_timeout();

}  // namespace dcae::dist
