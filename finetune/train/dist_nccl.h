/* dist_nccl: the NCCL half of finetune/train/dist (C over libnccl and the CUDA runtime; dist_nccl.c when the
 * build has NCCL and the CUDA backend, else dist_nccl_stub.c whose dist_nccl_available() is 0).
 *
 * One communicator per process on CUDA device 0 (dist narrows CUDA_VISIBLE_DEVICES to the local GPU), with a
 * stream of its own. Each collective first waits for the device's pending work (the backend's stream), runs on
 * the communicator's stream and is waited for while polling NCCL's asynchronous error state, until the deadline;
 * on an NCCL error the message is NCCL's own text (ncclGetErrorString, ncclGetLastError); past the deadline
 * the communicator is aborted (ncclCommAbort) and the call fails. `on_host`: buf is host memory, staged
 * through a device buffer of the communicator's. */
#ifndef FT_DIST_NCCL_H
#define FT_DIST_NCCL_H

#include <stddef.h>

#include "finetune/base/util.h"

#define DIST_NCCL_ID_BYTES 128

typedef struct dist_nccl dist_nccl;

int dist_nccl_available(void);
/* NCCL's version as "2.28.9", or a reason it is absent. */
const char *dist_nccl_version(void);
int dist_nccl_unique_id(unsigned char id[DIST_NCCL_ID_BYTES], ft_error *e);
int dist_nccl_init(const unsigned char id[DIST_NCCL_ID_BYTES], int rank, int world, double timeout_s,
                   dist_nccl **out, ft_error *e);
/* dtype: 0 = float, 1 = double; in-place sum. */
int dist_nccl_allreduce(dist_nccl *c, void *buf, size_t n, int dtype, int on_host, const char *what, ft_error *e);
/* k in-place float sums in one NCCL group (one launch, one wait): a step's gradients as one bucket. */
int dist_nccl_allreduce_many(dist_nccl *c, float *const *bufs, const size_t *ns, int k, const char *what, ft_error *e);
int dist_nccl_broadcast(dist_nccl *c, void *buf, size_t bytes, int root, int on_host, const char *what, ft_error *e);
void dist_nccl_free(dist_nccl *c);

#endif
