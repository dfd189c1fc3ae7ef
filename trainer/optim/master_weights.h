// fp32 master weights for mixed precision: the optimizer updates a full-precision copy of every bf16/f16 parameter
// and writes the rounded result back, so small updates are not lost to bf16's 8-bit mantissa. f32 and f64
// parameters are their own master (no copy).
#pragma once
#include <vector>

#include "core/tensor/tensor.h"

namespace dcae::trainer {

class MasterWeights {
 public:
  MasterWeights() = default;
  explicit MasterWeights(const std::vector<Tensor>& params);

  size_t size() const { return params_.size(); }
  const Tensor& param(size_t i) const { return params_.at(i); }
  // The tensor the optimizer updates: the parameter itself (f32/f64) or its fp32 copy (bf16/f16).
  const Tensor& master(size_t i) const { return masters_.at(i); }
  bool has_copy(size_t i) const { return !masters_.at(i).is_same(params_.at(i)); }

  // param <- master, rounded to the parameter's dtype (no-op without a copy).
  void write_back(size_t i) const;
  // master <- param, for every copy (after the model's weights were replaced from outside, e.g. loaded).
  void refresh_from_params() const;
  // Replaces one master's values (checkpoint load); shape must match and the dtype converts.
  void load_master(size_t i, const Tensor& value) const;

 private:
  std::vector<Tensor> params_;
  std::vector<Tensor> masters_;
};

}  // namespace dcae::trainer
