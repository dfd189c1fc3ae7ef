// Training losses, each reduced to a scalar (0-dim tensor) by the mean. Composed from differentiable ops, so every
// input (targets included) gets a gradient when it requires one.
#pragma once
#include "core/tensor/tensor.h"

namespace dcae::ops {

// mean(|pred - target|); pred and target must have the same shape and dtype (no broadcasting).
Tensor l1_loss(const Tensor& pred, const Tensor& target);
// mean((pred - target)^2); same shape and dtype rules as l1_loss.
Tensor mse_loss(const Tensor& pred, const Tensor& target);

// Hinge GAN discriminator loss in the VQGAN/taming convention:
// 0.5 * (mean(relu(1 - logits_real)) + mean(relu(1 + logits_fake))). The two may differ in shape, not in dtype.
Tensor hinge_d_loss(const Tensor& logits_real, const Tensor& logits_fake);
// Hinge GAN generator loss: -mean(logits_fake).
Tensor hinge_g_loss(const Tensor& logits_fake);

}  // namespace dcae::ops
