#include "dist/communicator.h"

#include <cstdlib>
#include <sstream>

namespace dcae::dist {

namespace {

class CompletedWork final : public Work {
 public:
  void wait() override {}
  bool completed() override { return true; }
};

}  // namespace

const char* reduce_op_name(ReduceOp op) { return op == ReduceOp::sum ? "sum" : "avg"; }

WorkPtr completed_work() { return std::make_shared<CompletedWork>(); }

Duration default_timeout() {
  if (const char* text = std::getenv("DCAE_DIST_TIMEOUT_S")) {
    char* end = nullptr;
    const double seconds = std::strtod(text, &end);
    DCAE_CHECK(end != text && *end == '\0' && seconds > 0, "DCAE_DIST_TIMEOUT_S='", text,
               "' must be a positive number of seconds");
    return Duration(seconds);
  }
  return Duration(600.0);
}

Communicator::Communicator(int rank, int size) : rank_(rank), size_(size), timeout_(default_timeout()) {
  DCAE_CHECK(size >= 1 && rank >= 0 && rank < size, "communicator: rank ", rank, " outside a world of ", size);
}

void Communicator::set_timeout(Duration timeout) {
  DCAE_CHECK(timeout.count() > 0, who(), ": collective timeout must be positive, got ", timeout.count(), " s");
  timeout_ = timeout;
}

std::string Communicator::who() const {
  std::ostringstream out;
  out << "rank " << rank_ << " of " << size_ << " (" << backend() << ")";
  return out.str();
}

Communicator::Call Communicator::next_call(const char* name, const std::string& detail) {
  Call call;
  call.sequence = sequence_++;
  call.what = std::string(name) + " #" + std::to_string(call.sequence) + (detail.empty() ? "" : " (" + detail + ")");
  return call;
}

void Communicator::check_tensor(const char* op, const Tensor& t, const char* role) const {
  DCAE_CHECK(t.defined(), who(), ": ", op, " got an undefined ", role, " tensor");
  DCAE_CHECK(t.is_contiguous(), who(), ": ", op, " needs a contiguous ", role, " tensor, got ", t.str(),
             " with strides ", shape_str(t.strides()));
  DCAE_CHECK(supports(t.device()), who(), ": ", op, " cannot move ", role, " tensor ", t.str(), " on ", t.device(),
             " (the ", backend(), " backend handles ", backend() == "nccl" ? "CUDA" : "CPU", " tensors)");
}

WorkPtr Communicator::all_reduce_async(const Tensor& t, ReduceOp op) {
  check_tensor("all_reduce", t, "");
  DCAE_CHECK(is_floating(t.dtype()) || (op == ReduceOp::sum && t.dtype() != DType::boolean), who(), ": all_reduce(",
             reduce_op_name(op), ") does not support ", t.str());
  return start_all_reduce(next_call("all_reduce", std::string(reduce_op_name(op)) + ", " + t.str()), t, op);
}

WorkPtr Communicator::all_gather_async(const Tensor& out, const Tensor& in) {
  check_tensor("all_gather", out, "output");
  check_tensor("all_gather", in, "input");
  DCAE_CHECK(out.dtype() == in.dtype() && out.device() == in.device(), who(), ": all_gather output ", out.str(),
             " and input ", in.str(), " differ in dtype or device");
  DCAE_CHECK(out.numel() == in.numel() * size_, who(), ": all_gather output ", out.str(), " must hold ", size_,
             " x the input ", in.str(), " = ", in.numel() * size_, " elements");
  return start_all_gather(next_call("all_gather", in.str() + " -> " + out.str()), out, in);
}

WorkPtr Communicator::reduce_scatter_async(const Tensor& out, const Tensor& in, ReduceOp op) {
  check_tensor("reduce_scatter", out, "output");
  check_tensor("reduce_scatter", in, "input");
  DCAE_CHECK(out.dtype() == in.dtype() && out.device() == in.device(), who(), ": reduce_scatter output ", out.str(),
             " and input ", in.str(), " differ in dtype or device");
  DCAE_CHECK(is_floating(in.dtype()) || (op == ReduceOp::sum && in.dtype() != DType::boolean), who(),
             ": reduce_scatter(", reduce_op_name(op), ") does not support ", in.str());
  DCAE_CHECK(in.numel() == out.numel() * size_, who(), ": reduce_scatter input ", in.str(), " must hold ", size_,
             " x the output ", out.str(), " = ", out.numel() * size_, " elements");
  return start_reduce_scatter(
      next_call("reduce_scatter", std::string(reduce_op_name(op)) + ", " + in.str() + " -> " + out.str()), out, in, op);
}

WorkPtr Communicator::broadcast_async(const Tensor& t, int root) {
  check_tensor("broadcast", t, "");
  DCAE_CHECK(root >= 0 && root < size_, who(), ": broadcast root ", root, " is not a rank of a world of ", size_);
  return start_broadcast(next_call("broadcast", "root " + std::to_string(root) + ", " + t.str()), t, root);
}

WorkPtr Communicator::barrier_async() { return start_barrier(next_call("barrier", "")); }

WorkPtr LocalCommunicator::start_all_gather(const Call&, const Tensor& out, const Tensor& in) {
  copy_strided(out.view({-1}), in.view({-1}));
  return completed_work();
}

WorkPtr LocalCommunicator::start_reduce_scatter(const Call&, const Tensor& out, const Tensor& in, ReduceOp) {
  copy_strided(out.view({-1}), in.view({-1}));
  return completed_work();
}

}  // namespace dcae::dist
