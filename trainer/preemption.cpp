#include "trainer/preemption.h"

#include <atomic>
#include <csignal>

#include "core/tensor/tensor.h"
#include "dist/communicator.h"

namespace dcae::trainer {

namespace {

// Lock-free, so the handler may touch it (std::sig_atomic_t would do for one thread; loader threads may take it).
std::atomic<bool> g_stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_stop_signal(int) { g_stop_requested.store(true, std::memory_order_relaxed); }

}  // namespace

void install_stop_signal_handler() {
  struct sigaction action = {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // a read or write the signal interrupts carries on
  DCAE_CHECK(sigaction(SIGUSR1, &action, nullptr) == 0, "preemption: installing the SIGUSR1 handler failed");
}

bool stop_signal_received() { return g_stop_requested.load(std::memory_order_relaxed); }

void clear_stop_signal() { g_stop_requested.store(false, std::memory_order_relaxed); }

bool stop_signal_on_any_rank(dist::Communicator* world) {
  const bool local = stop_signal_received();
  if (world == nullptr || world->size() <= 1) return local;
  Tensor flag = from_vector(std::vector<float>{local ? 1.0f : 0.0f}, {1});
  world->all_reduce(flag, dist::ReduceOp::sum);
  return flag.to_vector<float>()[0] > 0.0f;
}

}  // namespace dcae::trainer
