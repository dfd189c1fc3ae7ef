#include "dist/cuda/nccl_communicator.h"

#ifdef DCAE_WITH_NCCL
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>

namespace dcae::dist {

namespace {

using Clock = std::chrono::steady_clock;

void check_cuda(cudaError_t status, const char* call, const std::string& who) {
  DCAE_CHECK(status == cudaSuccess, who, ": ", call, " failed: ", cudaGetErrorString(status));
}

void check_nccl(ncclResult_t result, const char* call, const std::string& who) {
  DCAE_CHECK(result == ncclSuccess, who, ": ", call, " failed: ", ncclGetErrorString(result));
}

ncclDataType_t nccl_type(DType dtype, const std::string& who) {
  switch (dtype) {
    case DType::f32:
      return ncclFloat32;
    case DType::f64:
      return ncclFloat64;
    case DType::bf16:
      return ncclBfloat16;
    case DType::f16:
      return ncclFloat16;
    case DType::i64:
      return ncclInt64;
    case DType::i32:
      return ncclInt32;
    case DType::u8:
      return ncclUint8;
    default:
      DCAE_FAIL(who, ": NCCL cannot move ", dtype_name(dtype), " tensors");
  }
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::avg ? ncclAvg : ncclSum; }

}  // namespace

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  std::string who;
  std::mutex mutex;
  std::string broken;
};

namespace {

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<NcclCommunicator::State> state, std::string what, cudaEvent_t done,
           std::vector<Tensor> keep_alive, Duration timeout)
      : state_(std::move(state)),
        what_(std::move(what)),
        done_(done),
        keep_alive_(std::move(keep_alive)),
        deadline_(Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout)),
        timeout_(timeout) {}
  ~NcclWork() override { cudaEventDestroy(done_); }

  bool completed() override { return finished_ || cudaEventQuery(done_) == cudaSuccess; }

  void wait() override {
    while (!finished_) {
      const cudaError_t status = cudaEventQuery(done_);
      if (status == cudaSuccess) break;
      DCAE_CHECK(status == cudaErrorNotReady, state_->who, ": ", what_,
                 " failed on the GPU: ", cudaGetErrorString(status));
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(state_->comm, &async);
      DCAE_CHECK(async == ncclSuccess, state_->who, ": ", what_, " failed in NCCL: ", ncclGetErrorString(async));
      if (Clock::now() > deadline_) {
        char seconds[32];
        std::snprintf(seconds, sizeof(seconds), "%g", timeout_.count());
        const std::string message = state_->who + ": " + what_ + " did not complete within " + seconds +
                                    " s (collective timeout): another rank is dead, hung, or did not issue the same "
                                    "collective; the NCCL communicator was aborted";
        std::lock_guard<std::mutex> lock(state_->mutex);
        if (state_->broken.empty()) {
          state_->broken = message;
          ncclCommAbort(state_->comm);  // frees the GPU from the stuck kernel
        }
        throw Error(message);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    finished_ = true;
    keep_alive_.clear();
    // Later compute-stream work is ordered after the collective on the GPU as well.
    check_cuda(cudaStreamWaitEvent(nullptr, done_, 0), "cudaStreamWaitEvent", state_->who);
  }

 private:
  std::shared_ptr<NcclCommunicator::State> state_;
  std::string what_;
  cudaEvent_t done_;
  std::vector<Tensor> keep_alive_;
  Clock::time_point deadline_;
  Duration timeout_;
  bool finished_ = false;
};

}  // namespace

int bind_local_gpu(const DistContext& ctx) {
  int count = 0;
  check_cuda(cudaGetDeviceCount(&count), "cudaGetDeviceCount", "rank " + std::to_string(ctx.rank));
  DCAE_CHECK(ctx.local_rank < count, "rank ", ctx.rank, " has local rank ", ctx.local_rank, " but this node shows ",
             count, " GPUs (launch at most one process per GPU, or check CUDA_VISIBLE_DEVICES)");
  check_cuda(cudaSetDevice(ctx.local_rank), "cudaSetDevice", "rank " + std::to_string(ctx.rank));
  return ctx.local_rank;
}

NcclCommunicator::NcclCommunicator(Communicator& bootstrap, int device_index)
    : Communicator(bootstrap.rank(), bootstrap.size()), device_index_(device_index), state_(std::make_shared<State>()) {
  state_->who = who();
  DCAE_CHECK(bootstrap.supports(Device::cpu()), who(),
             ": the NCCL unique id is broadcast over a CPU communicator, not ", bootstrap.backend());
  check_cuda(cudaSetDevice(device_index_), "cudaSetDevice", who());
  ncclUniqueId id;
  if (rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId", who());
  Tensor bytes = zeros({static_cast<int64_t>(sizeof(id))}, DType::u8);
  if (rank() == 0) std::memcpy(bytes.raw_data(), &id, sizeof(id));
  bootstrap.broadcast(bytes, 0);
  std::memcpy(&id, bytes.raw_data(), sizeof(id));
  check_nccl(ncclCommInitRank(&state_->comm, size(), id, rank()), "ncclCommInitRank", who());
  int least = 0, greatest = 0;
  cudaDeviceGetStreamPriorityRange(&least, &greatest);
  check_cuda(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, greatest), "cudaStreamCreateWithPriority",
             who());
  barrier_buffer_ = empty({1}, DType::f32, Device::cuda(device_index_));
  check_cuda(cudaMemset(barrier_buffer_.raw_data(), 0, sizeof(float)), "cudaMemset", who());
}

NcclCommunicator::~NcclCommunicator() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  if (state_->broken.empty()) {
    cudaStreamSynchronize(stream_);
    ncclCommDestroy(state_->comm);
  }
  cudaStreamDestroy(stream_);
}

bool NcclCommunicator::broken() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return !state_->broken.empty();
}

template <typename Launch>
WorkPtr NcclCommunicator::launch(const Call& call, std::vector<Tensor> keep_alive, Launch&& op) {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    DCAE_CHECK(state_->broken.empty(), who(), ": cannot start ", call.what, ": an earlier collective timed out (",
               state_->broken, ")");
  }
  check_cuda(cudaSetDevice(device_index_), "cudaSetDevice", who());
  // The communication stream waits for what the compute stream has queued (the tensors' producers).
  cudaEvent_t ready = nullptr, done = nullptr;
  check_cuda(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreateWithFlags", who());
  check_cuda(cudaEventRecord(ready, nullptr), "cudaEventRecord", who());
  check_cuda(cudaStreamWaitEvent(stream_, ready, 0), "cudaStreamWaitEvent", who());
  cudaEventDestroy(ready);
  check_nccl(op(state_->comm, stream_), call.what.c_str(), who());
  check_cuda(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "cudaEventCreateWithFlags", who());
  check_cuda(cudaEventRecord(done, stream_), "cudaEventRecord", who());
  return std::make_shared<NcclWork>(state_, call.what, done, std::move(keep_alive), timeout());
}

WorkPtr NcclCommunicator::start_all_reduce(const Call& call, const Tensor& t, ReduceOp op) {
  const ncclDataType_t type = nccl_type(t.dtype(), who());
  return launch(call, {t}, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), type, nccl_op(op), comm, stream);
  });
}

WorkPtr NcclCommunicator::start_all_gather(const Call& call, const Tensor& out, const Tensor& in) {
  const ncclDataType_t type = nccl_type(in.dtype(), who());
  return launch(call, {out, in}, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllGather(in.raw_data(), out.raw_data(), static_cast<size_t>(in.numel()), type, comm, stream);
  });
}

WorkPtr NcclCommunicator::start_reduce_scatter(const Call& call, const Tensor& out, const Tensor& in, ReduceOp op) {
  const ncclDataType_t type = nccl_type(in.dtype(), who());
  return launch(call, {out, in}, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclReduceScatter(in.raw_data(), out.raw_data(), static_cast<size_t>(out.numel()), type, nccl_op(op), comm,
                             stream);
  });
}

WorkPtr NcclCommunicator::start_broadcast(const Call& call, const Tensor& t, int root) {
  const ncclDataType_t type = nccl_type(t.dtype(), who());
  return launch(call, {t}, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclBroadcast(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), type, root, comm, stream);
  });
}

WorkPtr NcclCommunicator::start_barrier(const Call& call) {
  // NCCL has no barrier: a one-element all-reduce that every rank must join.
  return launch(call, {barrier_buffer_}, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllReduce(barrier_buffer_.raw_data(), barrier_buffer_.raw_data(), 1, ncclFloat32, ncclSum, comm, stream);
  });
}

}  // namespace dcae::dist
#endif
