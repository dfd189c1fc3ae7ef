// dcae-trainer: trains a DC-AE from a TOML recipe (phase 1/2/3 or a tiny CPU recipe). See trainer/dcae_job.h.
// One process, or one per rank under `mpirun -np N` / `srun --mpi=pmix` (data parallel: dist.strategy = "ddp").
#include <glog/logging.h>

#include <iostream>
#include <set>
#include <sstream>

#include "dist/bootstrap.h"
#include "trainer/dcae_job.h"
#include "trainer/diffusion/diffusion_job.h"
#include "trainer/preemption.h"
#include "trainer/registries.h"
#include "tools/common/cli.h"

namespace {

using namespace dcae;
using namespace dcae::trainer;
namespace po = boost::program_options;

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

int run(const po::variables_map& vm) {
  const std::string recipe_path = vm.count("recipe") ? vm["recipe"].as<std::string>() : "";
  const auto overrides = vm.count("set") ? vm["set"].as<std::vector<std::string>>() : std::vector<std::string>{};
  if (vm.count("list")) {
    if (!recipe_path.empty()) load_job_recipe(recipe_path, overrides);  // its plugins add names and keys
    const Registries& r = registries();
    std::cout << "models: " << joined(r.models.names()) << "\nlosses: " << joined(r.losses.names())
              << "\ndatasets: " << joined(r.datasets.names()) << "\noptimizers: " << joined(r.optimizers.names())
              << "\nlr schedules: " << joined(r.schedules.names()) << "\ndenoisers: " << joined(r.denoisers.names())
              << "\ndiffusion objectives: " << joined(r.diffusion_objectives.names())
              << "\ndiffusion samplers: " << joined(r.diffusion_samplers.names())
              << "\nlatent datasets: " << joined(r.latent_datasets.names()) << "\n\nrecipe keys (job = \"dcae\"):\n"
              << job_schema().describe() << "\nrecipe keys (job = \"diffusion\"):\n" << diffusion_job_schema().describe();
    return 0;
  }
  DCAE_CHECK(!recipe_path.empty(), "give a recipe: dcae-trainer RECIPE.toml [--set key=value]... (see --help)");
  const Recipe recipe = load_job_recipe(recipe_path, overrides);
  const dist::DistContext& ctx = dist::context();
  // Rank 0 reports; the others only warn, unless the recipe asks every rank to log.
  if (ctx.rank != 0 && !recipe.get<bool>("log.all_ranks")) FLAGS_minloglevel = google::GLOG_WARNING;
  JobOptions options;
  options.out_dir = vm["out"].as<std::string>();
  options.stop_at = vm["stop-at"].as<int64_t>();
  options.rank = ctx.rank;
  options.world_size = ctx.world_size;
  options.local_rank = ctx.local_rank;
  if (ctx.world_size > 1)
    LOG(INFO) << "dcae-trainer: rank " << ctx.rank << " of " << ctx.world_size << " (" << ctx.launcher
              << "), local rank " << ctx.local_rank;
  JobSummary summary;
  std::string run_dir;
  const bool diffusion = recipe.get<std::string>("job") == "diffusion";
  try {
    if (diffusion) {
      diffusion::DiffusionJob job(recipe, options);
      run_dir = job.run_dir();
      LOG(INFO) << "dcae-trainer (diffusion): " << recipe.describe_origin() << " -> " << job.run_dir() << ", steps "
                << job.step() << ".." << recipe.get<int64_t>("train.steps");
      summary = job.run();
    } else {
      DcaeJob job(recipe, options);
      run_dir = job.run_dir();
      LOG(INFO) << "dcae-trainer: " << recipe.describe_origin() << " -> " << job.run_dir() << ", steps "
                << job.step() << ".." << recipe.get<int64_t>("train.steps");
      summary = job.run();
    }
  } catch (const Error& e) {
    // The other ranks may be waiting in a collective this rank will never join: end the whole job.
    if (ctx.world_size > 1) dist::abort_job(e.what());
    throw;
  }
  std::ostringstream done;
  done << "dcae-trainer: " << (summary.preempted ? "preempted" : summary.interrupted ? "stopped" : "finished") << " at step " << summary.steps_done
       << " in " << format_duration(summary.seconds) << "; loss " << summary.first_loss << " -> " << summary.last_loss;
  if (summary.evals.size() >= 2)
    done << "; PSNR " << summary.evals.front().psnr << " -> " << summary.evals.back().psnr << " dB, SSIM "
         << summary.evals.front().ssim << " -> " << summary.evals.back().ssim;
  LOG(INFO) << done.str() << "; run folder " << run_dir;
  return 0;
}

// The first argument that is neither an option nor the value of one, rewritten as --recipe=ARG.
std::vector<std::string> positional_recipe_as_option(int argc, char** argv) {
  static const std::set<std::string> with_value = {"--recipe", "--set", "--out", "--stop-at", "--log-dir"};
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    if (with_value.count(args[i])) {
      ++i;  // skip the option's value
    } else if (!args[i].empty() && args[i][0] != '-') {
      args[i] = "--recipe=" + args[i];
      break;
    }
  }
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description options("dcae-trainer options");
  options.add_options()
      ("recipe", po::value<std::string>(), "the recipe (TOML); also the first positional argument")
      ("set", po::value<std::vector<std::string>>()->composing(), "override a recipe key: --set optim.lr=1e-4")
      ("out", po::value<std::string>()->default_value(""), "run folder (replaces log.dir)")
      ("stop-at", po::value<int64_t>()->default_value(-1),
       "stop once this many steps are done, as if interrupted (no final checkpoint; for resume tests)")
      ("list", "print the registered models, losses, datasets, optimizers, schedules and every recipe key");
  // A preemption signal during start-up (MPI, loading, building the model) stops the run after its first step
  // instead of killing it (SIGUSR1's default action); DcaeJob::run() polls it.
  dcae::trainer::install_stop_signal_handler();
  // run_tool parses named options only: the bare RECIPE.toml becomes --recipe=RECIPE.toml.
  // MPI under a launcher (it may take its own arguments out of argv), one process otherwise; finalised at exit.
  dcae::dist::Session session(&argc, &argv);
  std::vector<std::string> args = positional_recipe_as_option(argc, argv);
  std::vector<char*> pointers;
  for (std::string& a : args) pointers.push_back(a.data());
  return dcae::tools::run_tool(static_cast<int>(pointers.size()), pointers.data(),
                               "dcae-trainer: train a DC-AE autoencoder, or a diffusion model on its latents (job = \"diffusion\"), from a recipe.\n"
                               "  dcae-trainer RECIPE.toml [--set key=value]... [--out DIR]",
                               options, run);
}
