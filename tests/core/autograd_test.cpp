#include <gtest/gtest.h>

#include "core/autograd/engine.h"
#include "core/autograd/grad_mode.h"
#include "core/autograd/node.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "ops/view.h"
#include "tests/testing/check.h"

namespace dcae {
namespace {

using testing::all_close;
using testing::random_tensor;

TEST(Autograd, BackwardFromScalarAccumulatesAcrossCalls) {
  Tensor x = random_tensor({3, 4}, 1).set_requires_grad(true);
  Tensor y = ops::sum(ops::mul(x, x));
  autograd::backward(y);
  EXPECT_TRUE(all_close(x.grad(), ops::mul(x, 2.0), 1e-12, 0));
  autograd::backward(ops::sum(ops::mul(x, x)));
  EXPECT_TRUE(all_close(x.grad(), ops::mul(x, 4.0), 1e-12, 0));
}

TEST(Autograd, BackwardWithSuppliedGradientAndReusedInput) {
  Tensor x = random_tensor({5}, 2).set_requires_grad(true);
  Tensor y = ops::add(ops::mul(x, 3.0), ops::exp(x));  // x feeds two branches
  Tensor g = random_tensor({5}, 3);
  autograd::backward(y, g);
  Tensor expected = ops::mul(g, ops::add(ops::exp(x.detach()), 3.0));
  EXPECT_TRUE(all_close(x.grad(), expected, 1e-12, 1e-12));
  EXPECT_THROW(autograd::backward(ops::mul(x, 2.0)), Error);  // non-scalar without a gradient
}

TEST(Autograd, NoGradScopeRecordsNothing) {
  Tensor x = random_tensor({4}, 4).set_requires_grad(true);
  autograd::NoGradGuard guard;
  Tensor y = ops::silu(x);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
}

TEST(Autograd, FrozenInputsArePrunedAndKeepNoActivations) {
  // A chain over tensors that do not require grad records no node and holds no saved activation.
  const int64_t nodes_before = autograd::Node::live_count();
  Tensor frozen_w = random_tensor({64, 64}, 5);
  Tensor h = random_tensor({64, 64}, 6);
  const size_t bytes_before = CpuAllocator::instance().bytes_in_use();
  for (int i = 0; i < 10; ++i) h = ops::silu(ops::mul(h, frozen_w));
  EXPECT_EQ(autograd::Node::live_count(), nodes_before);
  EXPECT_EQ(h.grad_fn(), nullptr);
  // Only the final activation is alive: earlier ones were freed as the chain moved on.
  EXPECT_LE(CpuAllocator::instance().bytes_in_use(), bytes_before + h.nbytes());
  // Once a trainable tensor enters, nodes appear: one per op that touches it.
  Tensor w = random_tensor({64, 64}, 7).set_requires_grad(true);
  Tensor out = ops::silu(ops::mul(h, w));
  // Two op nodes plus the accumulator of w.
  EXPECT_EQ(autograd::Node::live_count(), nodes_before + 3);
  out = Tensor();
  EXPECT_EQ(autograd::Node::live_count(), nodes_before);
}

TEST(Autograd, SavedTensorsAreFreedAfterBackwardUnlessRetained) {
  Tensor x = random_tensor({8}, 8).set_requires_grad(true);
  Tensor y = ops::sum(ops::exp(x));
  autograd::backward(y, Tensor(), /*retain_graph=*/true);
  autograd::backward(y);  // allowed: graph retained
  EXPECT_TRUE(all_close(x.grad(), ops::mul(ops::exp(x.detach()), 2.0), 1e-12, 1e-12));
  try {
    autograd::backward(y);
    FAIL() << "third backward should fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("retain_graph"), std::string::npos) << e.what();
  }
}

TEST(Autograd, InPlaceEditOfSavedTensorIsRejected) {
  Tensor x = random_tensor({6}, 9).set_requires_grad(true);
  Tensor a = random_tensor({6}, 10);
  Tensor y = ops::sum(ops::mul(x, a));  // saves a
  a.fill_(1.0);
  try {
    autograd::backward(y);
    FAIL() << "expected a version error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("modified in place"), std::string::npos) << e.what();
  }
}

TEST(Autograd, GradReadyHooksFireOncePerLeafAfterItsLastContribution) {
  Tensor w = random_tensor({3}, 11).set_requires_grad(true);
  Tensor v = random_tensor({3}, 12).set_requires_grad(true);
  std::vector<std::string> fired;
  std::vector<Tensor> w_grads_seen;
  autograd::add_grad_ready_hook(w, [&](const Tensor& leaf) {
    fired.push_back("w");
    w_grads_seen.push_back(leaf.grad().clone());
  });
  const int handle = autograd::add_grad_ready_hook(v, [&](const Tensor&) { fired.push_back("v"); });
  int ends = 0;
  const int end_handle = autograd::add_backward_end_hook([&] { ++ends; });
  Tensor y = ops::sum(ops::add(ops::add(ops::mul(w, v), ops::mul(v, w)), w));
  autograd::backward(y);
  EXPECT_EQ(std::count(fired.begin(), fired.end(), "w"), 1);
  EXPECT_EQ(std::count(fired.begin(), fired.end(), "v"), 1);
  EXPECT_EQ(ends, 1);
  // All three uses of w were in when its hook fired.
  EXPECT_TRUE(all_close(w_grads_seen.at(0), ops::add(ops::mul(v.detach(), 2.0), 1.0), 1e-12, 0));
  autograd::remove_grad_ready_hook(v, handle);
  autograd::remove_backward_end_hook(end_handle);
  fired.clear();
  autograd::backward(ops::sum(ops::mul(w, v)));
  EXPECT_EQ(fired, (std::vector<std::string>{"w"}));
  EXPECT_EQ(ends, 1);
}

TEST(Autograd, ViewsRouteGradientsBack) {
  Tensor x = random_tensor({2, 3, 4}, 13).set_requires_grad(true);
  EXPECT_TRUE(testing::gradcheck(
      [](const std::vector<Tensor>& in) {
        Tensor t = ops::permute(in[0], {2, 0, 1});
        t = ops::narrow(t, 0, 1, 2);
        t = ops::reshape(t, {-1});
        t = ops::slice(t, 0, 1, 11, 3);
        return ops::mul(ops::expand(ops::unsqueeze(t, 0), {2, t.size(0)}), 2.0);
      },
      {x}));
}

TEST(Autograd, CastRoutesGradientInTheInputDtype) {
  Tensor x = random_tensor({4}, 14, DType::f32).set_requires_grad(true);
  Tensor y = ops::sum(ops::mul(ops::cast(x, DType::f64), 3.0));
  autograd::backward(y);
  EXPECT_EQ(x.grad().dtype(), DType::f32);
  EXPECT_TRUE(all_close(x.grad(), full({4}, 3.0), 0, 0));
}

TEST(Autograd, SetRequiresGradOnNonLeafFails) {
  Tensor x = random_tensor({2}, 15).set_requires_grad(true);
  Tensor y = ops::exp(x);
  EXPECT_THROW(y.set_requires_grad(false), Error);
  EXPECT_THROW(from_vector<int64_t>({1}, {1}).set_requires_grad(true), Error);
}

}  // namespace
}  // namespace dcae
