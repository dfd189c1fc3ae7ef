// DcaeJob over several ranks: the communicator, DDP wrapping, the gradient-sync point, global losses, replicated
// buffers and a parameter digest for checking that the replicas agree.
#include <glog/logging.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <sstream>

#include "core/autograd/grad_mode.h"
#include "dist/bootstrap.h"
#include "dist/data_parallel.h"
#include "dist/fsdp.h"
#include "trainer/dcae_job.h"
#include "trainer/job_common.h"
#ifdef DCAE_WITH_NCCL
#include "dist/cuda/nccl_communicator.h"
#endif

namespace dcae::trainer {

namespace fs = std::filesystem;

void DcaeJob::setup_data_parallel() {
  const std::string strategy = recipe_.get<std::string>("dist.strategy");
  // A critic (the GAN discriminator) has its own parameters and optimizer, updated outside the model's backward.
  // Under DDP each term keeps its own replicas identical (LossTerm::distribute, gan_loss.h) or refuses; FSDP does
  // not shard a critic (the recipe schema refuses loss.gan with fsdp; this catches plugin terms).
  if (use_fsdp_)
    for (const Term& t : terms_)
      DCAE_CHECK(!t.term->adversarial(), "loss '", t.name, "' trains a critic of its own, which dcae-trainer does not ",
                 "shard (dist.strategy = \"fsdp\"); run it with dist.strategy = \"ddp\" (world size is ",
                 options_.world_size, ")");
  if (use_fsdp_) {
    setup_fsdp();
    return;
  }
  if (options_.world_size <= 1) return;
  DCAE_CHECK(strategy == "ddp", "dist.strategy = \"", strategy, "\": expected \"ddp\" or \"fsdp\"");
  comm_ = make_world_communicator();
  ddp_ = std::make_unique<dist::DataParallel>(*model_.module, comm_);  // frozen parameters are left out
  for (Term& t : terms_) {
    try {
      t.term->distribute(comm_);
    } catch (const Error& e) {
      DCAE_FAIL("loss '", t.name, "' on ", options_.world_size, " ranks: ", e.what());
    }
  }
  LOG(INFO) << "data parallel over " << options_.world_size << " ranks (" << comm_->backend() << "): "
            << ddp_->bucket_layout().size() << " gradient buckets; global batch "
            << batch_size_ * grad_accum_ * options_.world_size;
}

std::shared_ptr<dist::Communicator> DcaeJob::make_world_communicator() {
  DCAE_CHECK(dist::initialized(), "JobOptions world_size = ", options_.world_size,
             " but the distributed runtime is not started (dist::init)");
  DCAE_CHECK(dist::context().world_size == options_.world_size && dist::context().rank == options_.rank,
             "JobOptions rank ", options_.rank, " of ", options_.world_size, " disagree with the launcher's rank ",
             dist::context().rank, " of ", dist::context().world_size);
  std::shared_ptr<dist::Communicator> comm = dist::world();
#ifdef DCAE_WITH_NCCL
  if (device_.is_cuda()) comm = std::make_shared<dist::NcclCommunicator>(*dist::world(), device_.index);
#endif
  DCAE_CHECK(comm->supports(device_), "dist: the ", comm->backend(), " communicator cannot reduce tensors on ",
             device_.str(), " (a CUDA job needs a build with NCCL)");
  return comm;
}

void DcaeJob::sync_gradients() {
  // DDP started the buckets' all-reduces from the gradient-ready hooks of the last micro-batch and finished them
  // at its backward end; this finishes anything still pending, so clipping sees the gradients averaged over ranks.
  if (ddp_) ddp_->finish_gradient_sync();
}

void DcaeJob::average_losses_over_ranks(LossTerms& losses) {
  average_loss_terms(comm_, device_, losses);
}

void DcaeJob::broadcast_buffers() {
  if (!comm_) return;
  autograd::NoGradGuard no_grad;
  std::vector<std::pair<Tensor, Tensor>> staged;  // (buffer, contiguous copy it travels through)
  std::vector<dist::WorkPtr> works;
  for (const auto& [name, buffer] : model_.module->named_buffers()) {
    Tensor contiguous = buffer.is_contiguous() ? buffer : buffer.contiguous();
    staged.emplace_back(buffer, contiguous);
    works.push_back(comm_->broadcast_async(contiguous, 0));
  }
  for (auto& work : works) work->wait();
  for (auto& [buffer, contiguous] : staged)
    if (!contiguous.is_same(buffer)) Tensor(buffer).copy_(contiguous);
}

void DcaeJob::write_parameter_digest() {
  const char* flag = std::getenv("DCAE_PARAM_DIGEST");
  if (flag == nullptr || std::strcmp(flag, "1") != 0) return;
  // FNV-1a over the bytes of every parameter and buffer in state() order: equal digests mean identical replicas.
  // One line for the model, then one per network a loss term trains ("disc <hex>" with the GAN). Under fsdp the
  // model's tensors are empty between steps: the gathered parameters stand in (collective).
  std::map<std::string, Tensor> gathered;
  if (fsdp_)
    for (auto& [name, full] : fsdp_->gather_full_parameters()) gathered[name] = full;
  std::ostringstream lines;
  for (const auto& [module_name, module] : checkpoint_items().modules) {
    uint64_t hash = 1469598103934665603ull;
    for (const auto& [name, t] : module->state()) {
      auto it = module_name == "model" ? gathered.find(name) : gathered.end();
      const Tensor host = (it != gathered.end() ? it->second : t).to(Device::cpu()).contiguous();
      const auto* bytes = static_cast<const unsigned char*>(host.raw_data());
      for (size_t i = 0; i < host.nbytes(); ++i) hash = (hash ^ bytes[i]) * 1099511628211ull;
    }
    std::ostringstream hex;
    hex << std::hex << std::setw(16) << std::setfill('0') << hash;
    lines << (module_name == "model" ? "" : module_name + " ") << hex.str() << "\n";
    LOG(INFO) << "rank " << options_.rank << " parameter digest of " << module_name << " " << hex.str() << " at step "
              << step_;
  }
  fs::create_directories(run_dir_);
  std::ofstream(fs::path(run_dir_) / ("param_digest.rank" + std::to_string(options_.rank))) << lines.str();
}

}  // namespace dcae::trainer
