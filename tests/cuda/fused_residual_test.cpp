// The fused residual ops (ops/fused.h): on the GPU without autograd they run as one kernel and match the CPU
// composition (fp32 to 1e-5, bf16 to a rounding step); with autograd they are the composition, gradients included.
// Both the 16-byte path (C a multiple of 8) and the scalar path (odd C) are covered.
#include <gtest/gtest.h>

#include "core/autograd/grad_mode.h"
#include "ops/elementwise.h"
#include "ops/fused.h"
#include "ops/norm.h"
#include "tests/cuda/cuda_test_util.h"

namespace dcae {
namespace {

using testing::all_close;
using testing::gpu;
using testing::random_tensor;
using testing::random_uniform;

class CudaFusedResidual : public testing::CudaTest {};

struct Inputs {
  Tensor residual, x, weight, bias, mean, var;
};

Inputs make_inputs(const Shape& shape, DType dtype, uint64_t seed) {
  const int64_t c = shape.back();
  return {random_tensor(shape, seed, dtype), random_tensor(shape, seed + 1, dtype, 3.0),
          random_tensor({c}, seed + 2, dtype), random_tensor({c}, seed + 3, dtype),
          random_tensor({c}, seed + 4, dtype), random_uniform({c}, seed + 5, 0.5, 2.0, dtype)};
}

Inputs on_gpu(const Inputs& in) {
  return {in.residual.to(gpu()), in.x.to(gpu()), in.weight.to(gpu()), in.bias.to(gpu()), in.mean.to(gpu()),
          in.var.to(gpu())};
}

TEST_F(CudaFusedResidual, OnePassMatchesTheComposition) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const Shape& shape : {Shape{2, 5, 7, 64}, Shape{3, 4, 20}, Shape{2, 3, 3, 2048}}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " " + shape_str(shape));
      const Inputs cpu = make_inputs(shape, dtype, 17);
      const Inputs dev = on_gpu(cpu);
      const testing::Tolerance tol = testing::tolerance_for(dtype);
      autograd::NoGradGuard no_grad;
      const Tensor rms_ref = ops::add(cpu.residual, ops::rms_norm(cpu.x, cpu.weight, cpu.bias, 1e-5));
      EXPECT_TRUE(all_close(ops::add_rms_norm(dev.residual, dev.x, dev.weight, dev.bias, 1e-5).to(Device::cpu()),
                            rms_ref, tol.atol * 4, tol.rtol));
      EXPECT_TRUE(all_close(ops::add_rms_norm(dev.residual, dev.x, Tensor(), Tensor(), 1e-5).to(Device::cpu()),
                            ops::add(cpu.residual, ops::rms_norm(cpu.x, Tensor(), Tensor(), 1e-5)), tol.atol * 4,
                            tol.rtol));
      const Tensor bn_ref = ops::add(cpu.residual, ops::batch_norm(cpu.x, cpu.weight, cpu.bias, cpu.mean, cpu.var,
                                                                   false, 0.1, 1e-5));
      EXPECT_TRUE(all_close(ops::add_batch_norm_eval(dev.residual, dev.x, dev.weight, dev.bias, dev.mean, dev.var,
                                                     1e-5)
                                .to(Device::cpu()),
                            bn_ref, tol.atol * 4, tol.rtol));
    }
  }
}

TEST_F(CudaFusedResidual, WithAutogradTheyAreTheDifferentiableComposition) {
  const Inputs cpu = make_inputs({2, 3, 4, 16}, DType::f32, 29);
  const Inputs dev = on_gpu(cpu);
  const Tensor x = dev.x.clone().set_requires_grad(true);
  const Tensor out = ops::add_rms_norm(dev.residual, x, dev.weight, dev.bias, 1e-5);
  ASSERT_TRUE(out.requires_grad());
  autograd::backward(ops::sum(out));
  EXPECT_TRUE(x.grad().defined());
  const Tensor y = dev.x.clone().set_requires_grad(true);
  EXPECT_TRUE(ops::add_batch_norm_eval(dev.residual, y, dev.weight, dev.bias, dev.mean, dev.var).requires_grad());
}

TEST_F(CudaFusedResidual, MismatchedArgumentsAreNamed) {
  const Inputs dev = on_gpu(make_inputs({2, 3, 8}, DType::f32, 3));
  autograd::NoGradGuard no_grad;
  testing::expect_error([&] { ops::add_rms_norm(dev.residual.narrow(0, 0, 1), dev.x, dev.weight, dev.bias); },
                        {"add_rms_norm", "residual"});
  testing::expect_error([&] { ops::add_rms_norm(dev.residual, dev.x, dev.weight.narrow(0, 0, 4), dev.bias); },
                        {"add_rms_norm", "weight", "must be [C]"});
}

}  // namespace
}  // namespace dcae
