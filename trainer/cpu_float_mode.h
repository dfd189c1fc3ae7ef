// Subnormal floats on x86 CPUs cost ~100x per operation; a training run whose activations or gradients drift into
// that range (weights a few hundred steps into training) slows to a crawl. Training flushes them to zero
// (FTZ + DAZ), as torch.set_flush_denormal(True) does, on the calling thread and on every OpenMP worker.
#pragma once

namespace dcae::trainer {

// Returns false where the CPU has no such mode (non-x86 builds); deterministic either way.
bool flush_denormals_on_all_threads();

}  // namespace dcae::trainer
