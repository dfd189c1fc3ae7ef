// Every CUDA runtime call is checked; a failure throws dcae::Error naming the call and the runtime's message.
#pragma once

namespace dcae::cuda {

// Throws when `status` (a cudaError_t) is not cudaSuccess, naming `call`.
void check(int status, const char* call);
// After a kernel launch: throws naming `kernel` when the launch failed (bad configuration, no device, ...).
void check_launch(const char* kernel);

}  // namespace dcae::cuda

#define DCAE_CUDA_CHECK(call) ::dcae::cuda::check(static_cast<int>(call), #call)
