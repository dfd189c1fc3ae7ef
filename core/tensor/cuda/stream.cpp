#include "core/tensor/cuda/stream.h"

#include <cuda_runtime.h>

#include <optional>
#include <vector>

#include "core/tensor/cuda/capture_state.h"
#include "core/tensor/cuda/check.h"
#include "core/tensor/error.h"

namespace dcae::cuda {

void check(int status, const char* call) {
  if (status == cudaSuccess) return;
  const auto error = static_cast<cudaError_t>(status);
  DCAE_FAIL(call, " failed: ", cudaGetErrorString(error), " (", cudaGetErrorName(error), ")");
}

void check_launch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return;
  DCAE_FAIL("launch of CUDA kernel ", kernel, " failed: ", cudaGetErrorString(status), " (", cudaGetErrorName(status),
            ")");
}

int device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // no driver or no device: clear the error, report none
      return 0;
    }
    return n;
  }();
  return count;
}

int current_device() {
  int device = 0;
  DCAE_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

void set_device(int device) {
  check_device(device);
  DCAE_CUDA_CHECK(cudaSetDevice(device));
}

void check_device(int device) {
  const int count = device_count();
  DCAE_CHECK(device >= 0 && device < count, "CUDA device cuda:", device, " does not exist: ", count,
             " CUDA devices are visible");
}

DeviceGuard::DeviceGuard(int device) : previous_(current_device()), changed_(device != previous_) {
  if (changed_) set_device(device);
}

DeviceGuard::~DeviceGuard() {
  if (changed_) cudaSetDevice(previous_);  // a destructor must not throw
}

Stream Stream::default_stream(int device) {
  check_device(device);
  return Stream(device, nullptr, nullptr);
}

Stream Stream::create(int device, int priority) {
  DeviceGuard guard(device);
  cudaStream_t raw = nullptr;
  DCAE_CUDA_CHECK(cudaStreamCreateWithPriority(&raw, cudaStreamNonBlocking, priority));
  // Waiting before destroying keeps a recycled handle from inheriting unfinished work on cached memory.
  std::shared_ptr<CUstream_st> owner(raw, [device](cudaStream_t s) {
    int previous = 0;
    cudaGetDevice(&previous);
    cudaSetDevice(device);
    cudaStreamSynchronize(s);
    cudaStreamDestroy(s);
    cudaSetDevice(previous);
  });
  return Stream(device, raw, std::move(owner));
}

bool Stream::query() const {
  DeviceGuard guard(device_);
  const cudaError_t status = cudaStreamQuery(handle_);
  if (status == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  DCAE_CUDA_CHECK(status);
  return true;
}

void Stream::synchronize() const {
  check_not_capturing(device_, "Stream::synchronize (cudaStreamSynchronize waits on the host)");
  DeviceGuard guard(device_);
  DCAE_CUDA_CHECK(cudaStreamSynchronize(handle_));
}

void Stream::wait(const Event& event) const {
  if (!event.recorded()) return;
  DeviceGuard guard(device_);
  DCAE_CUDA_CHECK(cudaStreamWaitEvent(handle_, event.handle(), 0));
}

namespace {
// Devices on which this thread is capturing a CUDA graph (bit per device).
thread_local uint64_t capturing_devices = 0;
}  // namespace

bool capture_underway(int device) { return device >= 0 && device < 64 && ((capturing_devices >> device) & 1u) != 0; }

void check_not_capturing(int device, const char* what) {
  DCAE_CHECK(!capture_underway(device), what, " is not allowed while a CUDA graph is being captured on cuda:", device,
             ": nothing inside a capture may wait on the host or move data between host and GPU (copy inputs into ",
             "static device tensors before replay, read outputs after it)");
}

void detail::set_capture_underway(int device, bool underway) {
  DCAE_CHECK(device >= 0 && device < 64, "CUDA graph capture supports devices 0..63, not cuda:", device);
  if (underway) capturing_devices |= uint64_t{1} << device;
  else capturing_devices &= ~(uint64_t{1} << device);
}

namespace {
// This thread's current stream per device; empty means the default stream.
std::vector<std::optional<Stream>>& current_streams() {
  thread_local std::vector<std::optional<Stream>> streams;
  return streams;
}
}  // namespace

Stream current_stream(int device) {
  auto& streams = current_streams();
  if (device >= 0 && device < static_cast<int>(streams.size()) && streams[device]) return *streams[device];
  return Stream::default_stream(device);
}

void set_current_stream(const Stream& stream) {
  auto& streams = current_streams();
  if (static_cast<int>(streams.size()) <= stream.device()) streams.resize(stream.device() + 1);
  streams[stream.device()] = stream;
}

StreamGuard::StreamGuard(const Stream& stream)
    : previous_(current_stream(stream.device())), device_guard_(stream.device()) {
  set_current_stream(stream);
}

StreamGuard::~StreamGuard() { set_current_stream(previous_); }

Event::~Event() {
  if (handle_ != nullptr) cudaEventDestroy(handle_);
}

Event::Event(Event&& other) noexcept : timing_(other.timing_), device_(other.device_), handle_(other.handle_) {
  other.handle_ = nullptr;
}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (handle_ != nullptr) cudaEventDestroy(handle_);
    timing_ = other.timing_;
    device_ = other.device_;
    handle_ = other.handle_;
    other.handle_ = nullptr;
  }
  return *this;
}

void Event::record(const Stream& stream) {
  DeviceGuard guard(stream.device());
  if (handle_ == nullptr) {
    DCAE_CUDA_CHECK(cudaEventCreateWithFlags(&handle_, timing_ ? cudaEventDefault : cudaEventDisableTiming));
    device_ = stream.device();
  }
  DCAE_CHECK(device_ == stream.device(), "event created on cuda:", device_, " cannot be recorded on a stream of cuda:",
             stream.device());
  DCAE_CUDA_CHECK(cudaEventRecord(handle_, stream.handle()));
}

bool Event::query() const {
  if (handle_ == nullptr) return true;
  const cudaError_t status = cudaEventQuery(handle_);
  if (status == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  DCAE_CUDA_CHECK(status);
  return true;
}

void Event::synchronize() const {
  if (device_ >= 0) check_not_capturing(device_, "Event::synchronize (cudaEventSynchronize waits on the host)");
  if (handle_ != nullptr) DCAE_CUDA_CHECK(cudaEventSynchronize(handle_));
}

float Event::elapsed_ms(const Event& end) const {
  DCAE_CHECK(handle_ != nullptr && end.handle_ != nullptr, "elapsed_ms needs two recorded events");
  DCAE_CHECK(timing_ && end.timing_, "elapsed_ms needs events created with timing = true");
  float ms = 0.0f;
  DCAE_CUDA_CHECK(cudaEventElapsedTime(&ms, handle_, end.handle_));
  return ms;
}

}  // namespace dcae::cuda
