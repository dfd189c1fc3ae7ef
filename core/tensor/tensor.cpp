#include "core/tensor/tensor.h"

#include <algorithm>
#include <cstring>
#include <ostream>
#include <sstream>

#include "core/tensor/strided.h"
#ifdef DCAE_WITH_CUDA
#include "core/tensor/cuda/cuda_tensor.h"
#endif

namespace dcae {

namespace {

Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

// Resolves one -1 entry and checks the element count.
Shape infer_shape(const Shape& requested, int64_t numel, const Tensor& source) {
  Shape shape = requested;
  int64_t known = 1;
  int infer_at = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      DCAE_CHECK(infer_at < 0, "reshape to ", shape_str(requested), ": only one dim may be -1");
      infer_at = static_cast<int>(i);
    } else {
      DCAE_CHECK(shape[i] >= 0, "reshape to ", shape_str(requested), ": negative size");
      known *= shape[i];
    }
  }
  if (infer_at >= 0) {
    DCAE_CHECK(known != 0 && numel % known == 0, "cannot reshape ", source.str(), " to ", shape_str(requested));
    shape[infer_at] = numel / known;
  }
  DCAE_CHECK(shape_numel(shape) == numel, "cannot reshape ", source.str(), " (", numel, " elements) to ",
             shape_str(requested));
  return shape;
}

// Strides for viewing `t` as `shape` without a copy, or empty when the layout does not allow it.
bool view_strides(const Tensor& t, const Shape& shape, Shape& out) {
  if (t.is_contiguous()) {
    out = contiguous_strides(shape);
    return true;
  }
  // Walk chunks of old dims that are mutually contiguous and match them with new dims (as in numpy).
  const Shape& old_shape = t.shape();
  const Shape& old_strides = t.strides();
  out.assign(shape.size(), 0);
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_base_stride = old_strides.empty() ? 1 : old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(old_shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= old_shape[d];
    if (d == 0 || (old_shape[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        out[view_d] = view_numel * chunk_base_stride;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk_base_stride = old_strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

}  // namespace

void Tensor::check_defined(const char* what) const {
  DCAE_CHECK(impl_ != nullptr, what, "() called on an undefined tensor");
}

const Shape& Tensor::shape() const { check_defined("shape"); return impl_->shape; }
const Shape& Tensor::strides() const { check_defined("strides"); return impl_->strides; }
int64_t Tensor::offset() const { check_defined("offset"); return impl_->offset; }
int64_t Tensor::size(int64_t d) const { return shape()[normalize_dim(d, dim())]; }
int64_t Tensor::numel() const { return shape_numel(shape()); }
DType Tensor::dtype() const { check_defined("dtype"); return impl_->dtype; }
Device Tensor::device() const { check_defined("device"); return impl_->storage->device(); }
const std::shared_ptr<Storage>& Tensor::storage() const { check_defined("storage"); return impl_->storage; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t d = dim() - 1; d >= 0; --d) {
    if (shape()[d] == 1) continue;
    if (strides()[d] != expected) return false;
    expected *= shape()[d];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream out;
  out << "Tensor" << shape_str(shape()) << " " << dtype() << " " << device();
  return out.str();
}

void* Tensor::raw_data() const {
  check_defined("raw_data");
  auto* base = static_cast<char*>(impl_->storage->data());
  return base + impl_->offset * static_cast<int64_t>(dtype_size(impl_->dtype));
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  check_defined("to_vector");
  Tensor host = device().is_cpu() ? *this : to(Device::cpu());
  Tensor converted = empty(shape(), dtype_of<T>::value);
  copy_strided(converted, host);
  const T* p = converted.data<T>();
  return std::vector<T>(p, p + numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;
template std::vector<bf16> Tensor::to_vector<bf16>() const;
template std::vector<f16> Tensor::to_vector<f16>() const;

Tensor Tensor::view(const Shape& requested) const {
  const Shape shape = infer_shape(requested, numel(), *this);
  Shape strides;
  DCAE_CHECK(view_strides(*this, shape, strides), "cannot view ", str(), " with strides ", shape_str(this->strides()),
             " as ", shape_str(shape), " without a copy (use reshape)");
  return make_view(*this, shape, strides, offset());
}

Tensor Tensor::reshape(const Shape& requested) const {
  const Shape shape = infer_shape(requested, numel(), *this);
  Shape strides;
  if (view_strides(*this, shape, strides)) return make_view(*this, shape, strides, offset());
  return contiguous().view(shape);
}

Tensor Tensor::permute(const std::vector<int64_t>& order) const {
  DCAE_CHECK(static_cast<int64_t>(order.size()) == dim(), "permute of ", str(), " needs ", dim(), " dims, got ",
             shape_str(order));
  Shape shape(order.size()), strides(order.size());
  std::vector<bool> seen(order.size(), false);
  for (size_t i = 0; i < order.size(); ++i) {
    const int64_t d = normalize_dim(order[i], dim());
    DCAE_CHECK(!seen[d], "permute order ", shape_str(order), " repeats dim ", d);
    seen[d] = true;
    shape[i] = this->shape()[d];
    strides[i] = this->strides()[d];
  }
  return make_view(*this, shape, strides, offset());
}

Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
  std::vector<int64_t> order(dim());
  for (int64_t i = 0; i < dim(); ++i) order[i] = i;
  std::swap(order[normalize_dim(dim0, dim())], order[normalize_dim(dim1, dim())]);
  return permute(order);
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = normalize_dim(d, dim());
  DCAE_CHECK(start >= 0 && length >= 0 && start + length <= shape()[d], "narrow(dim ", d, ", start ", start,
             ", length ", length, ") is outside ", str());
  Shape shape = this->shape();
  shape[d] = length;
  return make_view(*this, shape, strides(), offset() + start * strides()[d]);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = normalize_dim(d, dim());
  const int64_t n = shape()[d];
  DCAE_CHECK(step > 0, "slice step must be positive, got ", step);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape shape = this->shape(), strides = this->strides();
  shape[d] = (end - start + step - 1) / step;
  strides[d] *= step;
  return make_view(*this, shape, strides, offset() + start * this->strides()[d]);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = normalize_dim(d, dim());
  DCAE_CHECK(index >= -shape()[d] && index < shape()[d], "select index ", index, " is outside dim ", d, " of ", str());
  if (index < 0) index += shape()[d];
  Shape shape = this->shape(), strides = this->strides();
  const int64_t new_offset = offset() + index * strides[d];
  shape.erase(shape.begin() + d);
  strides.erase(strides.begin() + d);
  return make_view(*this, shape, strides, new_offset);
}

Tensor Tensor::expand(const Shape& target) const {
  DCAE_CHECK(static_cast<int64_t>(target.size()) >= dim(), "cannot expand ", str(), " to fewer dims ",
             shape_str(target));
  const size_t lead = target.size() - shape().size();
  Shape strides(target.size(), 0);
  Shape shape = target;
  for (size_t i = 0; i < target.size(); ++i) {
    if (i < lead) {
      DCAE_CHECK(target[i] >= 0, "cannot expand ", str(), " to ", shape_str(target));
      continue;
    }
    const int64_t own = this->shape()[i - lead];
    if (target[i] == -1 || target[i] == own) {
      shape[i] = own;
      strides[i] = this->strides()[i - lead];
    } else {
      DCAE_CHECK(own == 1, "cannot expand ", str(), " to ", shape_str(target), " (dim ", i, " has size ", own,
                 ", not 1)");
    }
  }
  return make_view(*this, shape, strides, offset());
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = normalize_dim(d, dim() + 1);
  Shape shape = this->shape(), strides = this->strides();
  const int64_t stride = d < dim() ? strides[d] * shape[d] : 1;
  shape.insert(shape.begin() + d, 1);
  strides.insert(strides.begin() + d, stride);
  return make_view(*this, shape, strides, offset());
}

Tensor Tensor::squeeze(int64_t d) const {
  d = normalize_dim(d, dim());
  DCAE_CHECK(shape()[d] == 1, "squeeze(", d, ") on ", str(), ": that dim is not 1");
  Shape shape = this->shape(), strides = this->strides();
  shape.erase(shape.begin() + d);
  strides.erase(strides.begin() + d);
  return make_view(*this, shape, strides, offset());
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  copy_strided(out, *this);
  return out;
}

Tensor Tensor::to(DType target) const {
  if (target == dtype()) return *this;
  Tensor out = empty(shape(), target, device());
  copy_strided(out, *this);
  return out;
}

Tensor Tensor::to(Device target) const {
  if (target == device()) return *this;
  Tensor out = empty(shape(), dtype(), target);
  copy_strided(out, *this);
  return out;
}

Tensor Tensor::detach() const {
  check_defined("detach");
  return make_view(*this, shape(), strides(), offset());
}

Tensor& Tensor::copy_(const Tensor& src) {
  copy_strided(*this, src.expand(shape()));
  bump_version();
  return *this;
}

Tensor& Tensor::fill_(double value) {
#ifdef DCAE_WITH_CUDA
  if (device().is_cuda()) {
    cuda::fill_(*this, value);
    bump_version();
    return *this;
  }
#endif
  copy_strided(*this, scalar_tensor(value, DType::f64, device()).expand(shape()));
  bump_version();
  return *this;
}

Tensor& Tensor::add_(const Tensor& src_in, double alpha) {
#ifdef DCAE_WITH_CUDA
  if (device().is_cuda() || src_in.device().is_cuda()) {
    cuda::add_(*this, src_in, alpha);
    bump_version();
    return *this;
  }
#endif
  DCAE_CHECK(device().is_cpu() && src_in.device().is_cpu(), "add_ on ", str(), " and ", src_in.str(),
             ": only CPU tensors here; device tensors accumulate through their backend");
  Tensor src = src_in.expand(shape());
  const std::array<Shape, 2> strides{this->strides(), src.strides()};
  visit_dtype(dtype(), [&]<typename D>() {
    visit_dtype(src.dtype(), [&]<typename S>() {
      D* dst = static_cast<D*>(raw_data());
      const S* s = static_cast<const S*>(src.raw_data());
      for_each_row<2>(shape(), strides, [&](const std::array<int64_t, 2>& base, int64_t n, const std::array<int64_t, 2>& step) {
        for (int64_t i = 0; i < n; ++i) {
          D& d = dst[base[0] + i * step[0]];
          d = from_double<D>(to_double(d) + alpha * to_double(s[base[1] + i * step[1]]));
        }
      });
    });
  });
  bump_version();
  return *this;
}

bool Tensor::requires_grad() const {
  check_defined("requires_grad");
  return impl_->autograd.requires_grad || impl_->autograd.grad_fn != nullptr;
}

Tensor& Tensor::set_requires_grad(bool value) {
  check_defined("set_requires_grad");
  DCAE_CHECK(impl_->autograd.grad_fn == nullptr, "set_requires_grad on ", str(),
             ", which is the result of an op; only leaves can be marked (detach() first)");
  DCAE_CHECK(!value || is_floating(dtype()), "only floating tensors can require grad, got ", str());
  impl_->autograd.requires_grad = value;
  return *this;
}

bool Tensor::is_leaf() const { check_defined("is_leaf"); return impl_->autograd.grad_fn == nullptr; }
const Tensor& Tensor::grad() const { check_defined("grad"); return impl_->autograd.grad; }
void Tensor::set_grad(const Tensor& g) const {
  check_defined("set_grad");
  DCAE_CHECK(!g.defined() || g.shape() == shape(), "gradient ", g.str(), " does not match ", str());
  impl_->autograd.grad = g;
}
const std::shared_ptr<autograd::Node>& Tensor::grad_fn() const { check_defined("grad_fn"); return impl_->autograd.grad_fn; }
uint64_t Tensor::version() const { return storage()->version(); }
void Tensor::bump_version() const { storage()->bump_version(); }

Tensor empty(const Shape& shape, DType dtype, Device device) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}
Tensor zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.dtype(), t.device()); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }

Tensor scalar_tensor(double value, DType dtype, Device device) {
  Tensor host = empty({}, DType::f64);
  *host.data<double>() = value;
  return host.to(dtype).to(device);
}

Tensor arange(int64_t n, DType dtype, Device device) {
  std::vector<double> values(n);
  for (int64_t i = 0; i < n; ++i) values[i] = static_cast<double>(i);
  return from_doubles(values, {n}, dtype, device);
}

template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape) {
  DCAE_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
             " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>::value);
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(T));
  return t;
}
template Tensor from_vector<float>(const std::vector<float>&, const Shape&);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&);
template Tensor from_vector<int64_t>(const std::vector<int64_t>&, const Shape&);
template Tensor from_vector<int32_t>(const std::vector<int32_t>&, const Shape&);
template Tensor from_vector<uint8_t>(const std::vector<uint8_t>&, const Shape&);
template Tensor from_vector<bf16>(const std::vector<bf16>&, const Shape&);
template Tensor from_vector<f16>(const std::vector<f16>&, const Shape&);

Tensor from_doubles(const std::vector<double>& values, const Shape& shape, DType dtype, Device device) {
  return from_vector(values, shape).to(dtype).to(device);
}

std::ostream& operator<<(std::ostream& out, const Tensor& t) {
  out << t.str();
  if (t.defined() && t.numel() <= 16) {
    out << " {";
    const auto values = t.to_vector<double>();
    for (size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i];
    out << "}";
  }
  return out;
}

void copy_strided(const Tensor& dst, const Tensor& src) {
  DCAE_CHECK(dst.shape() == src.shape(), "copy from ", src.str(), " into ", dst.str(), ": shapes differ");
  if (dst.numel() == 0) return;
  if (!dst.device().is_cpu() || !src.device().is_cpu()) {
#ifdef DCAE_WITH_CUDA
    cuda::copy_strided(dst, src);
    return;
#else
    DCAE_FAIL("copy from ", src.str(), " into ", dst.str(), ": this build has no CUDA support");
#endif
  }
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    std::memmove(dst.raw_data(), src.raw_data(), dst.nbytes());
    return;
  }
  const std::array<Shape, 2> strides{dst.strides(), src.strides()};
  visit_dtype(dst.dtype(), [&]<typename D>() {
    visit_dtype(src.dtype(), [&]<typename S>() {
      D* d = static_cast<D*>(dst.raw_data());
      const S* s = static_cast<const S*>(src.raw_data());
      for_each_row<2>(dst.shape(), strides, [&](const std::array<int64_t, 2>& base, int64_t n, const std::array<int64_t, 2>& step) {
        for (int64_t i = 0; i < n; ++i) {
          d[base[0] + i * step[0]] = convert_value<D>(s[base[1] + i * step[1]]);
        }
      });
    });
  });
}

}  // namespace dcae
