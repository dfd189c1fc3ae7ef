#include "dist/mpi_communicator.h"

#ifdef DCAE_WITH_MPI
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dcae::dist {

namespace {

using Clock = std::chrono::steady_clock;

int comm_rank(MPI_Comm comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  return rank;
}

int comm_size(MPI_Comm comm) {
  int size = 0;
  MPI_Comm_size(comm, &size);
  return size;
}

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, static_cast<size_t>(length));
}

// Element type for moving raw bits of `dtype` (no arithmetic on them).
MPI_Datatype bits_type(DType dtype) {
  switch (dtype_size(dtype)) {
    case 1:
      return MPI_UINT8_T;
    case 2:
      return MPI_UINT16_T;
    case 4:
      return MPI_UINT32_T;
    default:
      return MPI_UINT64_T;
  }
}

// Element type for reducing `dtype` natively (bf16/f16 are staged as fp32 instead).
MPI_Datatype arithmetic_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f64:
      return MPI_DOUBLE;
    case DType::i64:
      return MPI_INT64_T;
    case DType::i32:
      return MPI_INT32_T;
    case DType::u8:
      return MPI_UINT8_T;
    default:
      return MPI_FLOAT;
  }
}

int checked_count(int64_t n, const std::string& what) {
  DCAE_CHECK(n <= INT_MAX, what, ": ", n, " elements per rank exceed MPI's int count limit");
  return static_cast<int>(n);
}

// fp32 copy of a bf16/f16 tensor's values, and the way back.
std::vector<float> to_floats(const Tensor& t) { return t.to_vector<float>(); }
void from_floats(const std::vector<float>& values, const Tensor& t) {
  Tensor staged = from_vector(values, {static_cast<int64_t>(values.size())});
  copy_strided(t.view({-1}), staged);
}

void scale_in_place(void* data, DType dtype, int64_t n, double factor) {
  if (dtype == DType::f32) {
    auto* p = static_cast<float*>(data);
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(p[i] * factor);
  } else if (dtype == DType::f64) {
    auto* p = static_cast<double*>(data);
    for (int64_t i = 0; i < n; ++i) p[i] *= factor;
  }
}
void scale_in_place(std::vector<float>& values, double factor) {
  scale_in_place(values.data(), DType::f32, static_cast<int64_t>(values.size()), factor);
}

// One collective: the worker runs `run` (which returns an MPI error code) and reports through `done`/`error`.
struct Task {
  std::string what;
  std::function<int()> run;  // its captures keep the tensors alive until the collective is done
  Clock::time_point issued = Clock::now();
  std::mutex mutex;
  std::condition_variable finished;
  bool done = false;
  std::string error;
};

}  // namespace

struct MpiCommunicator::State {
  MPI_Comm comm = MPI_COMM_NULL;
  std::string who;
  std::mutex mutex;
  std::condition_variable wake;     // new task or stop
  std::condition_variable drained;  // worker exited
  std::deque<std::shared_ptr<Task>> queue;
  bool stop = false;
  bool exited = false;
  std::string broken;  // the timeout that broke this communicator
  std::thread worker;

  void work_loop() {
    for (;;) {
      std::shared_ptr<Task> task;
      {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait(lock, [&] { return stop || !queue.empty(); });
        if (queue.empty()) break;
        task = queue.front();
        queue.pop_front();
      }
      std::string error;
      try {
        const int code = task->run();
        if (code != MPI_SUCCESS) error = who + ": " + task->what + " failed in MPI: " + mpi_error_text(code);
      } catch (const std::exception& e) {
        error = who + ": " + task->what + " failed: " + e.what();
      }
      {
        std::lock_guard<std::mutex> lock(task->mutex);
        task->done = true;
        task->error = error;
        task->run = nullptr;
      }
      task->finished.notify_all();
    }
    int finalized = 0;
    MPI_Finalized(&finalized);  // someone finalised MPI while holding this communicator: nothing left to free
    if (!finalized) MPI_Comm_free(&comm);
    std::lock_guard<std::mutex> lock(mutex);
    exited = true;
    drained.notify_all();
  }
};

namespace {

class MpiWork final : public Work {
 public:
  MpiWork(std::shared_ptr<Task> task, std::shared_ptr<MpiCommunicator::State> state, Duration timeout)
      : task_(std::move(task)), state_(std::move(state)), timeout_(timeout) {}

  void wait() override {
    std::unique_lock<std::mutex> lock(task_->mutex);
    const auto deadline = task_->issued + std::chrono::duration_cast<Clock::duration>(timeout_);
    if (!task_->finished.wait_until(lock, deadline, [&] { return task_->done; })) {
      char seconds[32];
      std::snprintf(seconds, sizeof(seconds), "%g", timeout_.count());
      const std::string message = state_->who + ": " + task_->what + " did not complete within " + seconds +
                                  " s (collective timeout): another rank is dead, hung, or did not issue the same "
                                  "collective; this communicator is unusable now";
      std::lock_guard<std::mutex> state_lock(state_->mutex);
      if (state_->broken.empty()) state_->broken = message;
      throw Error(message);
    }
    if (!task_->error.empty()) throw Error(task_->error);
  }

  bool completed() override {
    std::lock_guard<std::mutex> lock(task_->mutex);
    return task_->done;
  }

 private:
  std::shared_ptr<Task> task_;
  std::shared_ptr<MpiCommunicator::State> state_;
  Duration timeout_;
};

WorkPtr enqueue(const std::shared_ptr<MpiCommunicator::State>& state, Duration timeout, const std::string& what,
                std::function<int()> run) {
  auto task = std::make_shared<Task>();
  task->what = what;
  task->run = std::move(run);
  {
    std::lock_guard<std::mutex> lock(state->mutex);
    DCAE_CHECK(state->broken.empty(), state->who, ": cannot start ", what, ": an earlier collective timed out (",
               state->broken, ")");
    state->queue.push_back(task);
  }
  state->wake.notify_one();
  return std::make_shared<MpiWork>(task, state, timeout);
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm parent)
    : Communicator(comm_rank(parent), comm_size(parent)), state_(std::make_shared<State>()) {
  int provided = 0;
  MPI_Query_thread(&provided);
  DCAE_CHECK(provided == MPI_THREAD_MULTIPLE, who(), ": MPI was initialised without MPI_THREAD_MULTIPLE (level ",
             provided, "); start it through dist::init");
  const int code = MPI_Comm_dup(parent, &state_->comm);
  DCAE_CHECK(code == MPI_SUCCESS, who(), ": MPI_Comm_dup failed: ", mpi_error_text(code));
  MPI_Comm_set_errhandler(state_->comm, MPI_ERRORS_RETURN);
  state_->who = who();
  state_->worker = std::thread([state = state_.get()] { state->work_loop(); });
}

MpiCommunicator::~MpiCommunicator() {
  std::unique_lock<std::mutex> lock(state_->mutex);
  state_->stop = true;
  state_->wake.notify_one();
  const auto grace = std::chrono::duration_cast<Clock::duration>(timeout());
  if (!state_->drained.wait_for(lock, grace, [&] { return state_->exited; })) {
    std::fprintf(stderr,
                 "dcae dist: %s: shutting down with a collective still stuck after %g s (%s); aborting the job\n",
                 state_->who.c_str(), timeout().count(),
                 state_->broken.empty() ? "no timeout was reported" : state_->broken.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  lock.unlock();
  state_->worker.join();
}

bool MpiCommunicator::broken() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return !state_->broken.empty();
}

WorkPtr MpiCommunicator::start_all_reduce(const Call& call, const Tensor& t, ReduceOp op) {
  const int world = size();
  State* s = state_.get();
  return enqueue(state_, timeout(), call.what, [s, t, op, world]() -> int {
    const int64_t n = t.numel();
    const double factor = op == ReduceOp::avg ? 1.0 / world : 1.0;
    constexpr int64_t kChunk = int64_t{1} << 30;  // MPI counts are int
    auto reduce = [&](void* data, MPI_Datatype type, size_t element, int64_t count) {
      for (int64_t done = 0; done < count; done += kChunk) {
        const int part = static_cast<int>(std::min(kChunk, count - done));
        const int code =
            MPI_Allreduce(MPI_IN_PLACE, static_cast<char*>(data) + done * element, part, type, MPI_SUM, s->comm);
        if (code != MPI_SUCCESS) return code;
      }
      return MPI_SUCCESS;
    };
    if (is_reduced_float(t.dtype())) {
      std::vector<float> staged = to_floats(t);
      const int code = reduce(staged.data(), MPI_FLOAT, sizeof(float), n);
      if (code != MPI_SUCCESS) return code;
      if (factor != 1.0) scale_in_place(staged, factor);
      from_floats(staged, t);
      return MPI_SUCCESS;
    }
    const int code = reduce(t.raw_data(), arithmetic_type(t.dtype()), dtype_size(t.dtype()), n);
    if (code == MPI_SUCCESS && factor != 1.0) scale_in_place(t.raw_data(), t.dtype(), n, factor);
    return code;
  });
}

WorkPtr MpiCommunicator::start_all_gather(const Call& call, const Tensor& out, const Tensor& in) {
  const int count = checked_count(in.numel(), who() + ": " + call.what);
  State* s = state_.get();
  return enqueue(state_, timeout(), call.what, [s, out, in, count]() -> int {
    const MPI_Datatype type = bits_type(in.dtype());
    return MPI_Allgather(in.raw_data(), count, type, out.raw_data(), count, type, s->comm);
  });
}

WorkPtr MpiCommunicator::start_reduce_scatter(const Call& call, const Tensor& out, const Tensor& in, ReduceOp op) {
  const int count = checked_count(out.numel(), who() + ": " + call.what);
  const int world = size();
  State* s = state_.get();
  return enqueue(state_, timeout(), call.what, [s, out, in, op, count, world]() -> int {
    const double factor = op == ReduceOp::avg ? 1.0 / world : 1.0;
    if (is_reduced_float(in.dtype())) {
      std::vector<float> staged_in = to_floats(in);
      std::vector<float> staged_out(static_cast<size_t>(count));
      const int code =
          MPI_Reduce_scatter_block(staged_in.data(), staged_out.data(), count, MPI_FLOAT, MPI_SUM, s->comm);
      if (code != MPI_SUCCESS) return code;
      if (factor != 1.0) scale_in_place(staged_out, factor);
      from_floats(staged_out, out);
      return MPI_SUCCESS;
    }
    const MPI_Datatype type = arithmetic_type(in.dtype());
    const int code = MPI_Reduce_scatter_block(in.raw_data(), out.raw_data(), count, type, MPI_SUM, s->comm);
    if (code == MPI_SUCCESS && factor != 1.0) scale_in_place(out.raw_data(), out.dtype(), count, factor);
    return code;
  });
}

WorkPtr MpiCommunicator::start_broadcast(const Call& call, const Tensor& t, int root) {
  State* s = state_.get();
  return enqueue(state_, timeout(), call.what, [s, t, root]() -> int {
    constexpr int64_t kChunk = int64_t{1} << 30;
    const size_t element = dtype_size(t.dtype());
    for (int64_t done = 0; done < t.numel(); done += kChunk) {
      const int part = static_cast<int>(std::min(kChunk, t.numel() - done));
      const int code =
          MPI_Bcast(static_cast<char*>(t.raw_data()) + done * element, part, bits_type(t.dtype()), root, s->comm);
      if (code != MPI_SUCCESS) return code;
    }
    return MPI_SUCCESS;
  });
}

WorkPtr MpiCommunicator::start_barrier(const Call& call) {
  State* s = state_.get();
  return enqueue(state_, timeout(), call.what, [s]() -> int { return MPI_Barrier(s->comm); });
}

}  // namespace dcae::dist
#endif
