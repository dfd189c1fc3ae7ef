// Starting the distributed runtime: MPI under a launcher (mpirun, or srun --mpi=pmix under Slurm), a single process
// otherwise. One call per process at start-up, one at the end (or a Session guard):
//
//   dist::Session session(&argc, &argv);            // MPI_Init_thread(MULTIPLE) when launched by MPI
//   const dist::DistContext& ctx = dist::context();  // rank, world size, local rank (-> GPU index)
//   std::shared_ptr<dist::Communicator> world = dist::world();
//
// The local rank comes from the launcher (SLURM_LOCALID, OMPI_COMM_WORLD_LOCAL_RANK), never rank % GPUs per node;
// without either it is the rank among the processes that share this node (MPI_COMM_TYPE_SHARED).
#pragma once
#include <memory>
#include <string>

#include "dist/communicator.h"

namespace dcae::dist {

struct DistContext {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;             // index of this process on its node: pick the GPU with it
  int local_world_size = 1;       // processes on this node
  std::string launcher = "none";  // "mpirun", "srun", "pmix" (another PMIx launcher) or "none"
  bool mpi = false;               // true when the processes talk through MPI
};

// What the launcher's environment says, without MPI calls: launcher, rank, world size and local rank (world size
// 1 and launcher "none" when no launcher is found). Throws when srun started several tasks without PMIx (Open MPI
// cannot start then; the message says to use srun --mpi=pmix).
DistContext detect_launch();

// Starts MPI (thread level MULTIPLE) when a launcher started this process, else sets up a single process.
// Idempotent; uses an MPI that the caller already initialised. argc/argv may be null.
const DistContext& init(int* argc = nullptr, char*** argv = nullptr);
bool initialized();
const DistContext& context();  // throws before init()
// The communicator over all ranks (MPI on CPU tensors; LocalCommunicator for a single process).
std::shared_ptr<Communicator> world();
// Destroys the world communicator and finalises MPI when init() started it. Destroy your other communicators
// first. Safe to call twice.
void finalize();

// Prints "dcae dist: rank R of W: <message>" to stderr and ends every rank of the job (MPI_Abort) with exit_code:
// the way out after a collective timeout, since MPI cannot finalise around a collective that never finishes.
[[noreturn]] void abort_job(const std::string& message, int exit_code = 1);

// init() in the constructor, finalize() in the destructor.
class Session {
 public:
  explicit Session(int* argc = nullptr, char*** argv = nullptr) { init(argc, argv); }
  ~Session() { finalize(); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
};

}  // namespace dcae::dist
