// CUDA side of layer 0 for tensors: copies that involve a GPU, fill_/add_ on GPU tensors, stream bookkeeping.
// Streams, events and the caching allocator are in stream.h and caching_allocator.h.
#pragma once
#include "core/tensor/cuda/caching_allocator.h"
#include "core/tensor/cuda/check.h"
#include "core/tensor/cuda/stream.h"
#include "core/tensor/tensor.h"

namespace dcae::cuda {

// Copy between same-shaped tensors where at least one is on a GPU, converting dtypes (src may be an expanded
// view). GPU-to-GPU copies run on the device; host<->device copies move one packed buffer across the bus (the
// un-expanded part of src) and repack on the side that needs it. Queued on the current stream of the GPU; a copy
// to the host has finished when it returns.
void copy_strided(const Tensor& dst, const Tensor& src);
// Tensor::fill_ and Tensor::add_ (dst += alpha * src, src broadcast to dst) for GPU tensors.
void fill_(const Tensor& t, double value);
void add_(const Tensor& dst, const Tensor& src, double alpha);
// Tells t's allocator that its memory is also used on `stream` (see CachingAllocator::record_stream).
void record_stream(const Tensor& t, const Stream& stream);

// Page-locked host memory (cudaHostAlloc). Copies to a GPU from such a tensor are asynchronous: the call returns
// at once and the copy runs on the stream before the kernels queued after it; the host buffer is kept alive until
// the copy has finished, so the caller may drop the tensor right away. The loader allocates its batches here when
// training on a GPU.
Allocator& page_locked_allocator();
Tensor empty_page_locked(const Shape& shape, DType dtype);

}  // namespace dcae::cuda
