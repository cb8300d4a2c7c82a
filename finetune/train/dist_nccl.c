/* dist_nccl over libnccl and the CUDA runtime (built only with the CUDA backend and NCCL: FT_HAVE_NCCL). */
#include "finetune/train/dist_nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct dist_nccl {
    ncclComm_t comm;
    cudaStream_t stream; /* the communicator's own stream */
    void *stage;         /* device staging for host buffers */
    size_t stage_bytes;
    double timeout_s;
    int rank;
    int aborted;
};

int dist_nccl_available(void) { return 1; }

const char *dist_nccl_version(void) {
    static char v[32];
    int n = 0;
    if (ncclGetVersion(&n) != ncclSuccess) return "?";
    snprintf(v, sizeof v, "%d.%d.%d", n / 10000, n / 100 % 100, n % 100);
    return v;
}

static int nccl_fail(dist_nccl *c, ncclResult_t r, const char *what, ft_error *e) {
    const char *last = c && c->comm ? ncclGetLastError(c->comm) : ncclGetLastError(NULL);
    return ft_fail(e, FT_EIO, "%s: NCCL error: %s%s%s", what, ncclGetErrorString(r), last && *last ? ": " : "",
                   last ? last : "");
}

static int cuda_fail(cudaError_t err, const char *what, ft_error *e) {
    return ft_fail(e, FT_EIO, "%s: CUDA error: %s", what, cudaGetErrorString(err));
}

int dist_nccl_unique_id(unsigned char id[DIST_NCCL_ID_BYTES], ft_error *e) {
    ncclUniqueId u;
    ncclResult_t r = ncclGetUniqueId(&u);
    if (r != ncclSuccess) return nccl_fail(NULL, r, "ncclGetUniqueId", e);
    memcpy(id, u.internal, DIST_NCCL_ID_BYTES);
    return FT_OK;
}

/* Wait until the stream's work is done while NCCL reports no error, up to the deadline. */
static int nccl_wait(dist_nccl *c, const char *what, ft_error *e) {
    double deadline = ft_now() + c->timeout_s;
    for (long spins = 0;; spins++) {
        /* non-blocking communicator: the call may still be enqueueing (ncclInProgress) */
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError(c->comm, &async);
        if (async != ncclSuccess && async != ncclInProgress) {
            int rc = nccl_fail(c, async, what, e);
            ncclCommAbort(c->comm);
            c->comm = NULL, c->aborted = 1;
            return rc;
        }
        if (async == ncclSuccess) {
            cudaError_t q = cudaStreamQuery(c->stream);
            if (q == cudaSuccess) return FT_OK;
            if (q != cudaErrorNotReady) return cuda_fail(q, what, e);
        }
        if (ft_now() > deadline) {
            ncclCommAbort(c->comm);
            c->comm = NULL, c->aborted = 1;
            return ft_fail(e, FT_EIO,
                           "rank %d: %s did not complete within %.0f s: another rank died or hangs (the limit is "
                           "--dist-timeout / FT_DIST_TIMEOUT); NCCL communicator aborted",
                           c->rank, what, c->timeout_s);
        }
        if (spins > 1000) {
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
        }
    }
}

int dist_nccl_init(const unsigned char id[DIST_NCCL_ID_BYTES], int rank, int world, double timeout_s,
                   dist_nccl **out, ft_error *e) {
    dist_nccl *c = calloc(1, sizeof *c);
    if (!c) return ft_fail(e, FT_ENOMEM, "out of host memory");
    c->timeout_s = timeout_s, c->rank = rank;
    cudaError_t err = cudaSetDevice(0); /* dist narrowed CUDA_VISIBLE_DEVICES to this rank's GPU */
    if (!err) err = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (err) {
        free(c);
        return cuda_fail(err, "NCCL set-up", e);
    }
    ncclUniqueId u;
    memcpy(u.internal, id, DIST_NCCL_ID_BYTES);
    /* non-blocking init, so that a rank that never joins ends in a timeout instead of a hang */
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&c->comm, world, u, rank, &cfg);
    double deadline = ft_now() + timeout_s;
    while (r == ncclInProgress || r == ncclSuccess) {
        ncclResult_t state = ncclInProgress;
        ncclCommGetAsyncError(c->comm, &state);
        if (state == ncclSuccess) break;
        if (state != ncclInProgress) {
            r = state;
            break;
        }
        if (ft_now() > deadline) {
            ncclCommAbort(c->comm);
            cudaStreamDestroy(c->stream);
            free(c);
            return ft_fail(e, FT_EIO, "rank %d: joining the NCCL communicator of %d ranks did not complete within %.0f s",
                           rank, world, timeout_s);
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    if (r != ncclSuccess && r != ncclInProgress) {
        int rc = nccl_fail(c, r, "ncclCommInitRank", e);
        if (c->comm) ncclCommAbort(c->comm);
        cudaStreamDestroy(c->stream);
        free(c);
        return rc;
    }
    *out = c;
    return FT_OK;
}

static int stage(dist_nccl *c, size_t bytes, ft_error *e) {
    if (bytes <= c->stage_bytes) return FT_OK;
    if (c->stage) cudaFree(c->stage);
    c->stage = NULL, c->stage_bytes = 0;
    cudaError_t err = cudaMalloc(&c->stage, bytes);
    if (err) return cuda_fail(err, "NCCL staging buffer", e);
    c->stage_bytes = bytes;
    return FT_OK;
}

/* The device's pending work (the backend's stream) comes first. */
static int before(dist_nccl *c, const char *what, ft_error *e) {
    if (c->aborted || !c->comm) return ft_fail(e, FT_EIO, "%s: the NCCL communicator was aborted earlier", what);
    cudaError_t err = cudaDeviceSynchronize();
    return err ? cuda_fail(err, what, e) : FT_OK;
}

/* A host buffer goes through the device staging buffer: copied in before the collective, out after it. */
static int stage_in(dist_nccl *c, const void *buf, size_t bytes, void **p, const char *what, ft_error *e) {
    int rc = stage(c, bytes, e);
    if (rc) return rc;
    cudaError_t err = cudaMemcpy(c->stage, buf, bytes, cudaMemcpyHostToDevice);
    if (err) return cuda_fail(err, what, e);
    *p = c->stage;
    return FT_OK;
}

static int stage_out(dist_nccl *c, void *buf, size_t bytes, const char *what, ft_error *e) {
    cudaError_t err = cudaMemcpy(buf, c->stage, bytes, cudaMemcpyDeviceToHost);
    return err ? cuda_fail(err, what, e) : FT_OK;
}

int dist_nccl_allreduce(dist_nccl *c, void *buf, size_t n, int dtype, int on_host, const char *what, ft_error *e) {
    size_t bytes = n * (dtype ? 8 : 4);
    int rc = before(c, what, e);
    void *p = buf;
    if (!rc && on_host) rc = stage_in(c, buf, bytes, &p, what, e);
    if (rc) return rc;
    ncclResult_t r = ncclAllReduce(p, p, n, dtype ? ncclDouble : ncclFloat, ncclSum, c->comm, c->stream);
    if (r != ncclSuccess && r != ncclInProgress) return nccl_fail(c, r, what, e);
    rc = nccl_wait(c, what, e);
    if (!rc && on_host) rc = stage_out(c, buf, bytes, what, e);
    return rc;
}

int dist_nccl_allreduce_many(dist_nccl *c, float *const *bufs, const size_t *ns, int k, const char *what, ft_error *e) {
    int rc = before(c, what, e);
    if (rc) return rc;
    ncclResult_t r = ncclGroupStart();
    for (int i = 0; i < k && (r == ncclSuccess || r == ncclInProgress); i++)
        if (ns[i]) r = ncclAllReduce(bufs[i], bufs[i], ns[i], ncclFloat, ncclSum, c->comm, c->stream);
    ncclResult_t g = ncclGroupEnd();
    if (r == ncclSuccess || r == ncclInProgress) r = g;
    if (r != ncclSuccess && r != ncclInProgress) return nccl_fail(c, r, what, e);
    return nccl_wait(c, what, e);
}

int dist_nccl_broadcast(dist_nccl *c, void *buf, size_t bytes, int root, int on_host, const char *what, ft_error *e) {
    int rc = before(c, what, e);
    void *p = buf;
    if (!rc && on_host) rc = stage_in(c, buf, bytes, &p, what, e);
    if (rc) return rc;
    ncclResult_t r = ncclBroadcast(p, p, bytes, ncclUint8, root, c->comm, c->stream);
    if (r != ncclSuccess && r != ncclInProgress) return nccl_fail(c, r, what, e);
    rc = nccl_wait(c, what, e);
    if (!rc && on_host) rc = stage_out(c, buf, bytes, what, e);
    return rc;
}

void dist_nccl_free(dist_nccl *c) {
    if (!c) return;
    if (c->comm) {
        ncclResult_t r = ncclCommFinalize(c->comm), state = r;
        double deadline = ft_now() + c->timeout_s;
        while (state == ncclInProgress && ft_now() < deadline) ncclCommGetAsyncError(c->comm, &state);
        if (state == ncclSuccess)
            ncclCommDestroy(c->comm);
        else
            ncclCommAbort(c->comm);
    }
    if (c->stage) cudaFree(c->stage);
    cudaStreamDestroy(c->stream);
    free(c);
}
