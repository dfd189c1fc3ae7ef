// Tensor: a shape, strides and an offset over shared Storage, plus the data autograd attaches to it.
//
// Views made here (view, reshape, permute, narrow, slice, expand, ...) share storage and record no autograd
// history; the differentiable versions are in ops/ and call these. Image activations are NHWC (channels last):
// a tensor of logical shape [N, H, W, C]. Weights keep the ecosystem's layouts, e.g. conv [O, I/groups, kh, kw].
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "core/tensor/device.h"
#include "core/tensor/dtype.h"
#include "core/tensor/error.h"
#include "core/tensor/shape.h"
#include "core/tensor/storage.h"

namespace dcae {

namespace autograd {
class Node;  // defined by core/autograd; a tensor only holds a pointer to the node that produced it
}

class TensorImpl;

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t offset() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  bool is_contiguous() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const;
  std::string str() const;  // "Tensor[2, 3] f32 cpu" for messages

  // Pointer to the first element (offset applied). data<T>() checks that T matches the dtype.
  void* raw_data() const;
  template <typename T>
  T* data() const {
    DCAE_CHECK(dtype_of<std::remove_const_t<T>>::value == dtype(), "data<", dtype_name(dtype_of<std::remove_const_t<T>>::value),
               ">() called on ", str());
    return static_cast<T*>(raw_data());
  }
  // Any-layout readout to host values (converted to T).
  template <typename T>
  std::vector<T> to_vector() const;
  template <typename T>
  T item() const {
    DCAE_CHECK(numel() == 1, "item() needs exactly one element, got ", str());
    return to_vector<T>()[0];
  }

  // Raw views and copies (no autograd).
  Tensor view(const Shape& shape) const;     // needs contiguous-compatible strides; one dim may be -1
  Tensor reshape(const Shape& shape) const;  // view when possible, else a contiguous copy
  Tensor permute(const std::vector<int64_t>& order) const;
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;  // drops the dim
  Tensor expand(const Shape& shape) const;           // broadcast view with zero strides
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor contiguous() const;
  Tensor clone() const;  // always a fresh contiguous copy
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  Tensor detach() const;  // same storage and view, no autograd history

  // In-place writes (bump the storage version so saved tensors notice).
  Tensor& copy_(const Tensor& src);  // same shape (src may broadcast), converts dtype
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& add_(const Tensor& src, double alpha = 1.0);  // this += alpha * src, src broadcast to this shape

  // Autograd data (the autograd layer gives it meaning).
  bool requires_grad() const;  // a leaf flagged trainable, or a result with history
  Tensor& set_requires_grad(bool value);
  bool is_leaf() const;
  const Tensor& grad() const;
  void set_grad(const Tensor& grad) const;
  const std::shared_ptr<autograd::Node>& grad_fn() const;
  uint64_t version() const;
  void bump_version() const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  void check_defined(const char* what) const;
  std::shared_ptr<TensorImpl> impl_;
};

// Hook called with a leaf's accumulated gradient once backward has finished with that leaf.
using GradReadyHook = std::function<void(const Tensor& leaf)>;

// Autograd's per-tensor data. Plain data at this layer.
struct AutogradState {
  bool requires_grad = false;  // leaf flag
  Tensor grad;
  std::shared_ptr<autograd::Node> grad_fn;  // set on op results; null for leaves
  uint32_t output_nr = 0;                   // which output of grad_fn this tensor is
  std::weak_ptr<autograd::Node> grad_accumulator;
  std::vector<std::pair<int, GradReadyHook>> grad_ready_hooks;
};

class TensorImpl {
 public:
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;
  DType dtype = DType::f32;
  AutogradState autograd;
};

// Factories.
Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu());
Tensor empty_like(const Tensor& t);
Tensor zeros_like(const Tensor& t);
Tensor scalar_tensor(double value, DType dtype = DType::f32, Device device = Device::cpu());
Tensor arange(int64_t n, DType dtype = DType::f32, Device device = Device::cpu());
// Copies host values into a new CPU tensor of the dtype of T (or `dtype` when given).
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape);
Tensor from_doubles(const std::vector<double>& values, const Shape& shape, DType dtype = DType::f32,
                    Device device = Device::cpu());

std::ostream& operator<<(std::ostream& out, const Tensor& t);

// Strided element-wise copy with dtype conversion between CPU tensors of the same shape (src may be an
// expanded view). The CUDA backend adds its own path in core/tensor/cuda/.
void copy_strided(const Tensor& dst, const Tensor& src);

}  // namespace dcae
