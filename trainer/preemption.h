// Preemption: SIGUSR1 asks a training run to write a checkpoint at the end of its current step and stop, so that a
// requeued job (slurm/dcae_train.sbatch, Slurm's --signal=B:USR1@300 before the time limit or on preemption)
// continues from it with checkpoint.resume = "auto". The handler only sets a flag; the training loop polls it.
// Ranks receive the signal at different moments, so they agree on it with one tiny all-reduce per step and all stop
// after the same step.
#pragma once

namespace dcae::dist {
class Communicator;
}

namespace dcae::trainer {

// Installs the SIGUSR1 handler (idempotent). Open MPI and Slurm leave SIGUSR1 to the application.
void install_stop_signal_handler();
// True once this process received SIGUSR1 (since the last clear).
bool stop_signal_received();
void clear_stop_signal();
// Whether any rank received the stop signal: the local flag summed over `world` (an MPI communicator of CPU
// tensors), or the local flag alone when world is null. Every rank must call it at the same point of each step.
bool stop_signal_on_any_rank(dist::Communicator* world);

}  // namespace dcae::trainer
