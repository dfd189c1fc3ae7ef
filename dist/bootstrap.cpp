#include "dist/bootstrap.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>

#ifdef DCAE_WITH_MPI
#include "dist/mpi_communicator.h"
#endif

namespace dcae::dist {

namespace {

std::mutex g_mutex;
bool g_initialized = false;
bool g_we_started_mpi = false;
DistContext g_context;
std::shared_ptr<Communicator> g_world;

const char* env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : nullptr;
}

int env_int(const char* name, int fallback) {
  const char* text = env(name);
  if (text == nullptr) return fallback;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  DCAE_CHECK(end != text && *end == '\0' && value >= 0, "environment variable ", name, "='", text,
             "' is not a non-negative integer");
  return static_cast<int>(value);
}

}  // namespace

DistContext detect_launch() {
  DistContext ctx;
  if (env("OMPI_COMM_WORLD_SIZE") != nullptr) {
    ctx.launcher = "mpirun";
    ctx.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    ctx.world_size = env_int("OMPI_COMM_WORLD_SIZE", 1);
    ctx.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
    ctx.local_world_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1);
  } else if (env("SLURM_STEP_NUM_TASKS") != nullptr && env("SLURM_PROCID") != nullptr) {
    // srun sets the step variables; a batch script's own SLURM_NTASKS describes the allocation, not this process.
    ctx.launcher = "srun";
    ctx.rank = env_int("SLURM_PROCID", 0);
    ctx.world_size = env_int("SLURM_STEP_NUM_TASKS", 1);
    ctx.local_rank = env_int("SLURM_LOCALID", 0);
    ctx.local_world_size = 1;  // SLURM_STEP_TASKS_PER_NODE is a list ("2(x3)"); MPI tells us exactly in init()
    DCAE_CHECK(ctx.world_size == 1 || env("PMIX_RANK") != nullptr, "srun started ", ctx.world_size,
               " tasks without PMIx (no PMIX_RANK in the environment): Open MPI needs it; run srun --mpi=pmix, set "
               "SLURM_MPI_TYPE=pmix, or MpiDefault=pmix in slurm.conf");
    if (ctx.world_size == 1) ctx.launcher = "none";  // a lone task needs no MPI
  } else if (env("PMIX_RANK") != nullptr) {
    ctx.launcher = "pmix";
    ctx.rank = env_int("PMIX_RANK", 0);
    ctx.world_size = env_int("PMIX_SIZE", 0);  // not always exported; MPI tells us in init()
  }
  ctx.mpi = ctx.launcher != "none";
  return ctx;
}

const DistContext& init(int* argc, char*** argv) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_initialized) return g_context;
  DistContext ctx = detect_launch();
#ifdef DCAE_WITH_MPI
  int already = 0;
  MPI_Initialized(&already);
  if (ctx.mpi || already) {
    if (!already) {
      int provided = 0;
      const int code = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
      DCAE_CHECK(code == MPI_SUCCESS, "MPI_Init_thread failed (launcher ", ctx.launcher, ")");
      g_we_started_mpi = true;
      DCAE_CHECK(provided == MPI_THREAD_MULTIPLE, "this MPI provides thread level ", provided,
                 ", but dcae's asynchronous collectives need MPI_THREAD_MULTIPLE");
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &ctx.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ctx.world_size);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, ctx.rank, MPI_INFO_NULL, &node);
    int node_rank = 0;
    MPI_Comm_rank(node, &node_rank);
    MPI_Comm_size(node, &ctx.local_world_size);
    MPI_Comm_free(&node);
    // The launcher's variable wins (it is what the launcher bound GPUs and cores by); MPI's node rank otherwise.
    if (env("SLURM_LOCALID") == nullptr && env("OMPI_COMM_WORLD_LOCAL_RANK") == nullptr) ctx.local_rank = node_rank;
    if (ctx.launcher == "none") ctx.launcher = "mpi";
    ctx.mpi = true;
    g_world = std::make_shared<MpiCommunicator>(MPI_COMM_WORLD);
  }
#else
  DCAE_CHECK(!ctx.mpi || ctx.world_size <= 1, "launched as rank ", ctx.rank, " of ", ctx.world_size, " by ",
             ctx.launcher, ", but this build of dcae has no MPI support (configure with MPI installed)");
  ctx = DistContext{};
#endif
  if (!g_world) {
    ctx = DistContext{};
    g_world = std::make_shared<LocalCommunicator>();
  }
  g_context = ctx;
  g_initialized = true;
  return g_context;
}

bool initialized() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_initialized;
}

const DistContext& context() {
  std::lock_guard<std::mutex> lock(g_mutex);
  DCAE_CHECK(g_initialized, "dist::context() called before dist::init()");
  return g_context;
}

std::shared_ptr<Communicator> world() {
  std::lock_guard<std::mutex> lock(g_mutex);
  DCAE_CHECK(g_initialized, "dist::world() called before dist::init()");
  return g_world;
}

void finalize() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_initialized) return;
  g_world.reset();
#ifdef DCAE_WITH_MPI
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (g_we_started_mpi && !finalized) MPI_Finalize();
#endif
  g_we_started_mpi = false;
  g_initialized = false;
  g_context = DistContext{};
}

void abort_job(const std::string& message, int exit_code) {
  std::fprintf(stderr, "dcae dist: rank %d of %d: %s\n", g_context.rank, g_context.world_size, message.c_str());
  std::fflush(stderr);
#ifdef DCAE_WITH_MPI
  int started = 0, finalized = 0;
  MPI_Initialized(&started);
  MPI_Finalized(&finalized);
  if (started && !finalized) MPI_Abort(MPI_COMM_WORLD, exit_code);
#endif
  std::_Exit(exit_code);
}

}  // namespace dcae::dist
