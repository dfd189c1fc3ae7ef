#include "trainer/optim/master_weights.h"

namespace dcae::trainer {

MasterWeights::MasterWeights(const std::vector<Tensor>& params) : params_(params) {
  masters_.reserve(params.size());
  for (const Tensor& p : params) {
    DCAE_CHECK(p.defined() && is_floating(p.dtype()), "MasterWeights: parameter ", p.defined() ? p.str() : "(undefined)",
               " is not a floating-point tensor");
    masters_.push_back(is_reduced_float(p.dtype()) ? p.detach().to(DType::f32).contiguous() : p);
  }
}

void MasterWeights::write_back(size_t i) const {
  if (has_copy(i)) Tensor(params_.at(i)).copy_(masters_[i]);
}

void MasterWeights::refresh_from_params() const {
  for (size_t i = 0; i < params_.size(); ++i)
    if (has_copy(i)) Tensor(masters_[i]).copy_(params_[i]);
}

void MasterWeights::load_master(size_t i, const Tensor& value) const {
  DCAE_CHECK(value.shape() == masters_.at(i).shape(), "master weight ", i, ": checkpoint has ", value.str(),
             ", parameter is ", params_[i].str());
  Tensor(masters_[i]).copy_(value);
}

}  // namespace dcae::trainer
