/* dist_nccl without NCCL (no CUDA backend or no libnccl in this build): data parallelism on GPUs is absent. */
#include "finetune/train/dist_nccl.h"

int dist_nccl_available(void) { return 0; }

const char *dist_nccl_version(void) { return "absent (this build has no NCCL: it needs the CUDA backend and libnccl)"; }

static int absent(ft_error *e) {
    return ft_fail(e, FT_EINPUT,
                   "data parallelism on GPUs needs NCCL, and this build has none (install NCCL, e.g. libnccl-dev, and "
                   "rebuild with the CUDA backend)");
}

int dist_nccl_unique_id(unsigned char id[DIST_NCCL_ID_BYTES], ft_error *e) { return absent(e); }

int dist_nccl_init(const unsigned char id[DIST_NCCL_ID_BYTES], int rank, int world, double timeout_s,
                   dist_nccl **out, ft_error *e) {
    return absent(e);
}

int dist_nccl_allreduce(dist_nccl *c, void *buf, size_t n, int dtype, int on_host, const char *what, ft_error *e) {
    return absent(e);
}

int dist_nccl_allreduce_many(dist_nccl *c, float *const *bufs, const size_t *ns, int k, const char *what, ft_error *e) {
    return absent(e);
}

int dist_nccl_broadcast(dist_nccl *c, void *buf, size_t bytes, int root, int on_host, const char *what, ft_error *e) {
    return absent(e);
}

void dist_nccl_free(dist_nccl *c) {}
