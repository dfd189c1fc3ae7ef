// CUDA devices, streams and events as first-class objects.
//
// Every thread has a current stream per device (the device's default stream until set); kernels, copies and the
// caching allocator all work on the current stream of the tensor's device. StreamGuard sets it for a scope.
// The header needs no CUDA include: handles are the runtime's opaque pointer types.
#pragma once
#include <cstdint>
#include <memory>

struct CUstream_st;
struct CUevent_st;

namespace dcae::cuda {

using StreamHandle = CUstream_st*;  // == cudaStream_t
using EventHandle = CUevent_st*;    // == cudaEvent_t

// Number of visible GPUs; 0 when there is no driver or no device (never throws).
int device_count();
int current_device();
void set_device(int device);
// Throws naming `device` unless 0 <= device < device_count().
void check_device(int device);

// Makes `device` current for a scope and restores the previous device.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_;
  bool changed_;
};

class Event;

// A stream on one device. Copies share the stream; a stream made by create() is destroyed with its last copy,
// after the work queued on it has finished (so memory cached for it is safe for whoever comes next).
class Stream {
 public:
  // The device's default (legacy) stream.
  static Stream default_stream(int device);
  // A new stream that does not synchronise with the default stream. Lower priority numbers run first.
  static Stream create(int device, int priority = 0);

  StreamHandle handle() const { return handle_; }
  int device() const { return device_; }
  bool is_default() const { return handle_ == nullptr; }
  bool query() const;        // true when all queued work has finished
  void synchronize() const;  // blocks the host until queued work has finished
  void wait(const Event& event) const;  // work queued after this call waits for `event`

  bool operator==(const Stream& other) const { return handle_ == other.handle_ && device_ == other.device_; }
  bool operator!=(const Stream& other) const { return !(*this == other); }

 private:
  Stream(int device, StreamHandle handle, std::shared_ptr<CUstream_st> owner)
      : device_(device), handle_(handle), owner_(std::move(owner)) {}
  int device_ = 0;
  StreamHandle handle_ = nullptr;
  std::shared_ptr<CUstream_st> owner_;  // null for the default stream
};

// This thread's current stream on `device` (the default stream unless set).
Stream current_stream(int device);
void set_current_stream(const Stream& stream);

// Makes `stream` the current stream of its device, and its device the current device, for a scope.
class StreamGuard {
 public:
  explicit StreamGuard(const Stream& stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream previous_;
  DeviceGuard device_guard_;
};

// A CUDA event (move-only). Created on the device of the first stream it is recorded on.
class Event {
 public:
  explicit Event(bool timing = false) : timing_(timing) {}
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  void record(const Stream& stream);
  bool recorded() const { return handle_ != nullptr; }
  bool query() const;  // true when the recorded work has finished (or nothing was recorded)
  void synchronize() const;
  // Milliseconds between this event and `end` (both recorded, both created with timing = true).
  float elapsed_ms(const Event& end) const;
  EventHandle handle() const { return handle_; }

 private:
  bool timing_;
  int device_ = -1;
  EventHandle handle_ = nullptr;
};

// Queues a kernel that keeps `stream` busy for about `microseconds` (for tests of cross-stream ordering).
void busy_wait(const Stream& stream, int64_t microseconds);

}  // namespace dcae::cuda
