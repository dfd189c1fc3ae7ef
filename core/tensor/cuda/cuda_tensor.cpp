#include "core/tensor/cuda/cuda_tensor.h"

#include <cuda_runtime.h>

#include <memory>
#include <mutex>
#include <vector>

#include "core/tensor/cuda/capture_state.h"
#include "core/tensor/cuda/copy_kernels.h"

namespace dcae::cuda {

namespace {

// The part of `t` that holds distinct data: every broadcast (stride-0) dim narrowed to size 1.
Tensor compact(const Tensor& t) {
  Tensor out = t;
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.strides()[d] == 0 && t.size(d) > 1) out = out.narrow(d, 0, 1);
  return out;
}

class PageLockedAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    void* ptr = nullptr;
    DCAE_CUDA_CHECK(cudaHostAlloc(&ptr, nbytes, cudaHostAllocDefault));
    return ptr;
  }
  void deallocate(void* ptr, size_t) override {
    if (ptr != nullptr) cudaFreeHost(ptr);
  }
  Device device() const override { return Device::cpu(); }
  bool page_locked() const override { return true; }
};

// Host buffers of asynchronous copies still in flight, each released once its event has completed.
class InFlightHostBuffers {
 public:
  void keep(std::shared_ptr<Storage> storage, const Stream& stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    release_finished();
    pending_.push_back({std::move(storage), Event()});
    pending_.back().done.record(stream);
  }

 private:
  struct Pending {
    std::shared_ptr<Storage> storage;
    Event done;
  };
  void release_finished() {
    std::erase_if(pending_, [](const Pending& p) { return p.done.query(); });
  }
  std::mutex mutex_;
  std::vector<Pending> pending_;
};

InFlightHostBuffers& in_flight() {
  static InFlightHostBuffers buffers;
  return buffers;
}

void copy_host_to_device(const Tensor& dst, const Tensor& src) {
  const int device = dst.device().index;
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(device).handle();
  if (src.storage()->page_locked() && src.is_contiguous() && dst.is_contiguous() && dst.dtype() == src.dtype() &&
      src.shape() == dst.shape()) {
    DCAE_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), src.nbytes(), cudaMemcpyHostToDevice, stream));
    in_flight().keep(src.storage(), current_stream(device));
    return;
  }
  // Host buffers are pageable: cudaMemcpyAsync has staged them when it returns, so temporaries may go.
  const Tensor host = compact(src).contiguous();
  if (host.shape() == dst.shape() && dst.is_contiguous() && dst.dtype() == src.dtype()) {
    DCAE_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), host.raw_data(), host.nbytes(), cudaMemcpyHostToDevice, stream));
    return;
  }
  const Tensor staged = empty(host.shape(), host.dtype(), dst.device());
  DCAE_CUDA_CHECK(cudaMemcpyAsync(staged.raw_data(), host.raw_data(), host.nbytes(), cudaMemcpyHostToDevice, stream));
  copy_on_device(dst, staged.expand(dst.shape()));
}

}  // namespace

Allocator& page_locked_allocator() {
  static PageLockedAllocator allocator;
  return allocator;
}

Tensor empty_page_locked(const Shape& shape, DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype),
                                            page_locked_allocator());
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

namespace {

void copy_device_to_host(const Tensor& dst, const Tensor& src) {
  const int device = src.device().index;
  DeviceGuard guard(device);
  const Stream stream = current_stream(device);
  // Pack and convert on the device, so one dense buffer in dst's dtype crosses the bus.
  Tensor packed = compact(src);
  if (!packed.is_contiguous() || packed.dtype() != dst.dtype()) {
    Tensor dense = empty(packed.shape(), dst.dtype(), src.device());
    copy_on_device(dense, packed);
    packed = dense;
  }
  if (packed.shape() == dst.shape() && dst.is_contiguous()) {
    DCAE_CUDA_CHECK(
        cudaMemcpyAsync(dst.raw_data(), packed.raw_data(), packed.nbytes(), cudaMemcpyDeviceToHost, stream.handle()));
    stream.synchronize();
    return;
  }
  const Tensor host = empty(packed.shape(), packed.dtype());
  DCAE_CUDA_CHECK(
      cudaMemcpyAsync(host.raw_data(), packed.raw_data(), packed.nbytes(), cudaMemcpyDeviceToHost, stream.handle()));
  stream.synchronize();
  dcae::copy_strided(dst, host.expand(dst.shape()));
}

void copy_between_devices(const Tensor& dst, const Tensor& src) {
  const int from = src.device().index, to = dst.device().index;
  Tensor packed = src;
  {
    DeviceGuard guard(from);
    if (!src.is_contiguous() || src.dtype() != dst.dtype()) {
      packed = empty(src.shape(), dst.dtype(), src.device());
      copy_on_device(packed, src);
    }
  }
  // The copy runs on the destination's stream, after the work queued on the source's stream.
  Event ready;
  ready.record(current_stream(from));
  const Stream stream = current_stream(to);
  stream.wait(ready);
  DeviceGuard guard(to);
  Tensor target = dst.is_contiguous() ? dst : empty(dst.shape(), dst.dtype(), dst.device());
  DCAE_CUDA_CHECK(
      cudaMemcpyPeerAsync(target.raw_data(), to, packed.raw_data(), from, packed.nbytes(), stream.handle()));
  if (!target.is_same(dst)) copy_on_device(dst, target);
  // `packed` belongs to the source GPU's cache, which cannot see this stream: finish before it is freed.
  stream.synchronize();
}

}  // namespace

void copy_strided(const Tensor& dst, const Tensor& src) {
  DCAE_CHECK(dst.shape() == src.shape(), "copy from ", src.str(), " into ", dst.str(), ": shapes differ");
  if (dst.numel() == 0) return;
  const Device to = dst.device(), from = src.device();
  if (to.is_cuda() && from.is_cuda()) {
    if (to == from) {
      copy_on_device(dst, src);
    } else {
      check_not_capturing(from.index, "a copy between GPUs (it waits on the host)");
      copy_between_devices(dst, src);
    }
  } else if (to.is_cuda()) {
    // A captured copy would read the host buffer again at every replay, long after it was freed or changed.
    check_not_capturing(to.index, "a copy from host memory to the GPU");
    copy_host_to_device(dst, src);
  } else {
    check_not_capturing(from.index, "a copy from the GPU to host memory (.item(), .to(cpu), to_vector)");
    copy_device_to_host(dst, src);
  }
}

void fill_(const Tensor& t, double value) { fill_on_device(t, value); }

void add_(const Tensor& dst, const Tensor& src, double alpha) {
  DCAE_CHECK(dst.device() == src.device(), "add_ on ", dst.str(), " and ", src.str(),
             ": the tensors are on different devices");
  add_on_device(dst, src.expand(dst.shape()), alpha);
}

void record_stream(const Tensor& t, const Stream& stream) {
  DCAE_CHECK(t.device().is_cuda() && t.device().index == stream.device(), "record_stream: ", t.str(),
             " and a stream of cuda:", stream.device(), " are on different devices");
  if (t.storage()->data() == nullptr) return;
  caching_allocator(stream.device()).record_stream(t.storage()->data(), stream.handle());
}

}  // namespace dcae::cuda
