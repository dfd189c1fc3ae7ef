#include "ops/loss.h"

#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/unary.h"

namespace dcae::ops {

namespace {

void check_logits(const char* op, const char* what, const Tensor& t) {
  DCAE_CHECK(t.defined(), op, ": undefined ", what);
  DCAE_CHECK(is_floating(t.dtype()), op, " needs floating ", what, ", got ", t.str());
  DCAE_CHECK(t.numel() > 0, op, ": ", what, " ", t.str(), " is empty");
}

void check_pair(const char* op, const Tensor& pred, const Tensor& target) {
  check_logits(op, "pred", pred);
  check_logits(op, "target", target);
  DCAE_CHECK(pred.shape() == target.shape() && pred.dtype() == target.dtype() && pred.device() == target.device(), op,
             " needs pred and target of one shape, dtype and device, got pred ", pred.str(), " and target ",
             target.str());
}

}  // namespace

Tensor l1_loss(const Tensor& pred, const Tensor& target) {
  check_pair("l1_loss", pred, target);
  return mean(abs(sub(pred, target)));
}

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
  check_pair("mse_loss", pred, target);
  return mean(square(sub(pred, target)));
}

Tensor hinge_d_loss(const Tensor& logits_real, const Tensor& logits_fake) {
  check_logits("hinge_d_loss", "logits_real", logits_real);
  check_logits("hinge_d_loss", "logits_fake", logits_fake);
  DCAE_CHECK(logits_real.dtype() == logits_fake.dtype() && logits_real.device() == logits_fake.device(),
             "hinge_d_loss needs logits of one dtype and device, got real ", logits_real.str(), " and fake ",
             logits_fake.str());
  const Tensor loss_real = mean(relu(rsub(1.0, logits_real)));
  const Tensor loss_fake = mean(relu(add(logits_fake, 1.0)));
  return mul(add(loss_real, loss_fake), 0.5);
}

Tensor hinge_g_loss(const Tensor& logits_fake) {
  check_logits("hinge_g_loss", "logits_fake", logits_fake);
  return neg(mean(logits_fake));
}

}  // namespace dcae::ops
