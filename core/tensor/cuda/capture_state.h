// Whether this thread is capturing a CUDA graph, and the check every host synchronisation and host<->GPU copy
// makes first (defined in stream.cpp; CudaGraph in cuda_graph.h sets the state).
#pragma once

namespace dcae::cuda {

// Whether this thread is capturing a CUDA graph on `device`.
bool capture_underway(int device);
// Throws naming `what` while this thread captures a CUDA graph on `device`: host synchronisations and copies
// between host and GPU cannot be recorded into a graph (the capture would break, or replay would use stale memory).
void check_not_capturing(int device, const char* what);

namespace detail {
void set_capture_underway(int device, bool underway);  // for CudaGraph only
}  // namespace detail

}  // namespace dcae::cuda
