#include "trainer/optim/update_math.h"

#include <cmath>

#include "ops/cpu/cpu_util.h"
#ifdef DCAE_WITH_CUDA
#include "trainer/cuda/multi_tensor_adamw.h"
#endif

namespace dcae::trainer {

namespace {

void check_operands(const char* op, const Tensor& param, const Tensor& grad, std::initializer_list<Tensor> state,
                    bool allow_gpu = false) {
  if (allow_gpu && param.device().is_cuda()) {
    DCAE_CHECK(grad.device() == param.device(), op, ": gradient ", grad.str(), " is not on the device of ", param.str());
    for (const Tensor& s : state)
      DCAE_CHECK(s.device() == param.device(), op, ": state ", s.str(), " is not on the device of ", param.str());
  } else {
    DCAE_CHECK(param.device().is_cpu() && grad.device().is_cpu(), op, ": CPU tensors expected, got ", param.str(),
               " and gradient ", grad.str());
    for (const Tensor& s : state)
      DCAE_CHECK(s.device().is_cpu(), op, ": CPU tensors expected, got state ", s.str(), " for ", param.str());
  }
  DCAE_CHECK(param.dtype() == DType::f32 || param.dtype() == DType::f64, op, ": parameter (master) must be f32 or f64, got ",
             param.str());
  DCAE_CHECK(param.is_contiguous() && grad.is_contiguous(), op, ": contiguous operands expected");
  DCAE_CHECK(grad.shape() == param.shape() && is_floating(grad.dtype()), op, ": gradient ", grad.str(),
             " does not match parameter ", param.str());
  for (const Tensor& s : state)
    DCAE_CHECK(s.shape() == param.shape() && s.dtype() == param.dtype() && s.is_contiguous(), op, ": state ", s.str(),
               " does not match parameter ", param.str());
}

constexpr int64_t kGrain = 1 << 14;

}  // namespace

void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                  const AdamWHyper& h) {
  check_operands("adamw_update", param, grad, {exp_avg, exp_avg_sq}, /*allow_gpu=*/true);
  if (param.device().is_cuda()) return adamw_update_many({{param, grad, exp_avg, exp_avg_sq, Tensor(), h}});
  const double bias_correction1 = 1.0 - std::pow(h.beta1, static_cast<double>(h.step));
  const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(h.beta2, static_cast<double>(h.step)));
  ops::cpu::visit_float(param.dtype(), "adamw_update", [&]<typename T>() {
    visit_dtype(grad.dtype(), [&]<typename G>() {
      if constexpr (std::is_floating_point_v<G> || std::is_same_v<G, bf16> || std::is_same_v<G, f16>) {
        T* p = param.data<T>();
        T* m = exp_avg.data<T>();
        T* v = exp_avg_sq.data<T>();
        const G* g = grad.data<const G>();
        const T decay = static_cast<T>(1.0 - h.lr * h.weight_decay);
        const T one_minus_beta1 = static_cast<T>(1.0 - h.beta1), beta2 = static_cast<T>(h.beta2);
        const T one_minus_beta2 = static_cast<T>(1.0 - h.beta2);
        const T step_size = static_cast<T>(h.lr / bias_correction1);
        const T bc2_sqrt = static_cast<T>(bias_correction2_sqrt), eps = static_cast<T>(h.eps);
        ops::cpu::parallel_for(param.numel(), kGrain, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            const T gi = static_cast<T>(to_double(g[i]));
            p[i] *= decay;
            m[i] += one_minus_beta1 * (gi - m[i]);
            v[i] = v[i] * beta2 + one_minus_beta2 * gi * gi;
            const T denom = std::sqrt(v[i]) / bc2_sqrt + eps;
            p[i] -= step_size * (m[i] / denom);
          }
        });
      } else {
        DCAE_FAIL("adamw_update: gradient dtype ", grad.dtype(), " is not floating");
      }
    });
  });
}

void adamw_update_many(const std::vector<AdamWTensors>& tensors) {
  if (tensors.empty()) return;
  const Device device = tensors.front().master.device();
  for (const AdamWTensors& t : tensors) {
    check_operands("adamw_update_many", t.master, t.grad, {t.exp_avg, t.exp_avg_sq}, /*allow_gpu=*/true);
    DCAE_CHECK(t.master.device() == device, "adamw_update_many: every tensor must be on ", device, ", got ",
               t.master.str());
    if (t.param.defined())
      DCAE_CHECK(t.param.shape() == t.master.shape() && t.param.device() == device && t.param.is_contiguous() &&
                     is_floating(t.param.dtype()),
                 "adamw_update_many: param ", t.param.str(), " does not match master ", t.master.str());
  }
  if (device.is_cuda()) {
#ifdef DCAE_WITH_CUDA
    return cuda::multi_tensor_adamw(tensors);
#else
    DCAE_FAIL("adamw_update_many: ", device, " tensors, but this build has no CUDA backend");
#endif
  }
  for (const AdamWTensors& t : tensors) {
    adamw_update(t.master, t.grad, t.exp_avg, t.exp_avg_sq, t.hyper);
    if (t.param.defined() && !t.param.is_same(t.master)) Tensor(t.param).copy_(t.master);
  }
}

void sgd_update(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, const SgdHyper& h) {
  const bool use_momentum = h.momentum != 0.0;
  if (use_momentum) check_operands("sgd_update", param, grad, {momentum_buffer});
  else check_operands("sgd_update", param, grad, {});
  ops::cpu::visit_float(param.dtype(), "sgd_update", [&]<typename T>() {
    visit_dtype(grad.dtype(), [&]<typename G>() {
      if constexpr (std::is_floating_point_v<G> || std::is_same_v<G, bf16> || std::is_same_v<G, f16>) {
        T* p = param.data<T>();
        T* buf = use_momentum ? momentum_buffer.data<T>() : nullptr;
        const G* g = grad.data<const G>();
        const T lr = static_cast<T>(h.lr), wd = static_cast<T>(h.weight_decay), mu = static_cast<T>(h.momentum);
        ops::cpu::parallel_for(param.numel(), kGrain, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            T d = static_cast<T>(to_double(g[i]));
            if (h.weight_decay != 0.0) d += wd * p[i];
            if (use_momentum) {
              buf[i] = h.first_step ? d : mu * buf[i] + d;
              d = h.nesterov ? d + mu * buf[i] : buf[i];
            }
            p[i] -= lr * d;
          }
        });
      } else {
        DCAE_FAIL("sgd_update: gradient dtype ", grad.dtype(), " is not floating");
      }
    });
  });
}

}  // namespace dcae::trainer
