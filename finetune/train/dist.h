/* dist: the communicator of data-parallel training (ranks, collectives, bootstrap, timeouts).
 *
 * dist_init reads the launcher's environment, first found of: OpenMPI's mpirun/mpiexec (OMPI_COMM_WORLD_RANK/
 * SIZE/LOCAL_RANK), torchrun's names (RANK/WORLD_SIZE/LOCAL_RANK, what `--nproc N` sets for its workers on GPUs),
 * Slurm's srun (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID, with SLURM_STEP_ID). None of them: one process (rank 0 of 1), and every call below is a
 * no-op, so single-process training runs exactly as without this module. Under a launcher, the local GPU is
 * the local rank: CUDA_VISIBLE_DEVICES is narrowed to that one device before any CUDA call.
 *
 * dist_bind ties the communicator to the backend once it exists. The CPU backend's collectives run over MPI
 * (host buffers; FT_HAVE_MPI). The CUDA backend's run over NCCL (device buffers, on a stream of their own;
 * FT_HAVE_NCCL); NCCL's unique id travels from rank 0 through MPI when the build has MPI, else over TCP
 * (MASTER_ADDR/MASTER_PORT, --master-addr/--master-port) or through a file on a shared path (FT_DIST_FILE).
 *
 * Every collective and the bootstrap have a deadline (dist_opts.timeout_s, default 300 s, env FT_DIST_TIMEOUT):
 * a rank that died or hangs ends every other rank with an error naming the operation, never a silent hang.
 * On a timeout the process cannot unwind a collective in flight, so it prints the error and aborts the job
 * (MPI_Abort / ncclCommAbort, then exit 3). Errors of MPI and NCCL are printed with their own text.
 *
 * Sums are over ranks. "Device buffers" are memory of the bound backend (host memory on the CPU backend). */
#ifndef FT_DIST_H
#define FT_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "finetune/backend/backend.h"

typedef struct dist_comm dist_comm;

typedef struct dist_opts {
    const char *master_addr; /* NULL: MASTER_ADDR from the environment */
    int master_port;         /* 0: MASTER_PORT from the environment */
    double timeout_s;        /* 0: FT_DIST_TIMEOUT from the environment, else 300 */
} dist_opts;

/* 1 when this build can run data-parallel on the CPU backend (MPI) / on GPUs (NCCL). */
int dist_have_mpi(void);
int dist_have_nccl(void);
/* The launcher named by the environment ("mpirun", "srun", "torchrun-env") or NULL for a single process. */
const char *dist_launcher(void);

/* Join the job the environment describes (see above). Always returns a communicator (world 1 without one). */
int dist_init(const dist_opts *o, dist_comm **out, ft_error *e);
/* Tie the collectives to backend b (creates the NCCL communicator on the CUDA backend). */
int dist_bind(dist_comm *c, ft_backend *b, ft_error *e);
void dist_free(dist_comm *c);

int dist_rank(const dist_comm *c);       /* 0 when c is NULL */
int dist_world(const dist_comm *c);      /* 1 when c is NULL */
int dist_local_rank(const dist_comm *c);
/* 1 when collectives run (a launcher started this process, even with one rank: `--nproc 1`). */
int dist_active(const dist_comm *c);
const char *dist_desc(const dist_comm *c); /* "mpi, rank 0 of 2 (local 0)", for logs */
double dist_timeout(const dist_comm *c);

/* In-place sums over ranks. `what` names the operation in timeout and error messages. */
int dist_allreduce_f32(dist_comm *c, float *dev, size_t n, const char *what, ft_error *e);
/* The same over k device buffers at once (NCCL: one group; MPI: one after the other). */
int dist_allreduce_f32_many(dist_comm *c, float *const *bufs, const size_t *ns, int k, const char *what, ft_error *e);
int dist_allreduce_f64_host(dist_comm *c, double *host, size_t n, const char *what, ft_error *e);
/* Rank root's bytes to every rank. */
int dist_broadcast(dist_comm *c, void *dev, size_t bytes, int root, const char *what, ft_error *e);
int dist_broadcast_host(dist_comm *c, void *host, size_t bytes, int root, const char *what, ft_error *e);
int dist_barrier(dist_comm *c, const char *what, ft_error *e);

/* Every rank learns whether all ranks are ok; a rank that is not passes ok=0. Returns 1 when all are. */
int dist_all_ok(dist_comm *c, int ok, ft_error *e);

/* All ranks must hold the same `what` (e.g. "recipe"): rank 0's text is sent to all, each compares it with
 * its own, and when any differs every rank fails (FT_EINPUT) with one message naming the first rank that
 * differs and the difference: the first JSON key path whose values differ (texts that are JSON objects), else
 * the first differing "; "-separated item. */
int dist_agree(dist_comm *c, const char *what, const char *text, ft_error *e);

#endif
