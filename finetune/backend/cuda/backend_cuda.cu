/* backend_cuda: the op table of backend.h on NVIDIA GPUs (sm_75 and newer).
 *
 * One stream and one cuBLAS/cuBLASLt handle per backend; every op is enqueued on
 * that stream (download and sync wait for it). GEMMs go to cuBLASLt (cublasGemmEx
 * when it declines one) with fp32 accumulation and TF32 off, so fp32 results match
 * the CPU backend to ~1e-5. Elementwise ops, norms, rope and attention are our
 * kernels, written once over the storage type (F32, BF16, F16 through CU_DISPATCH;
 * arithmetic stays fp32). The lm_head + log-softmax is chunked over the vocab:
 * only a [T, chunk] logits tile ever exists. No op uses atomics: every result is
 * the same on every run, which exact resume relies on. */
#include "finetune/backend/cuda/cuda_internal.cuh"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- errors */

void cu_report(ft_backend *b, const char *fmt, ...) {
    cu_state *c = cu_of(b);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->last_error, sizeof c->last_error, fmt, ap);
    va_end(ap);
    /* print the first few; a broken loop must not flood the log */
    if (c->nerrors++ < 20) fprintf(stderr, "finetune: cuda backend: %s\n", c->last_error);
}

int cu_check_launch(ft_backend *b, const char *op) {
    cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess) return 0;
    cu_report(b, "%s: kernel launch failed: %s (%s)", op, cudaGetErrorString(err), cudaGetErrorName(err));
    return 1;
}

static int cu_blas_ok(ft_backend *b, const char *op, cublasStatus_t st) {
    if (st == CUBLAS_STATUS_SUCCESS) return 1;
    cu_report(b, "%s: cuBLAS failed with status %d", op, (int)st);
    return 0;
}

int cu_arg(ft_backend *b, const char *op, const char *name, const ft_tensor *t, int want, int ndim_min,
           int ndim_max) {
    if (!t) {
        cu_report(b, "%s: tensor %s is NULL", op, name);
        return 0;
    }
    char s[64];
    if (t->device != FT_DEV_CUDA) {
        cu_report(b, "%s: tensor %s %s is not on the cuda device", op, name, ft_shape_str(t, s, sizeof s));
        return 0;
    }
    if (t->ndim < ndim_min || t->ndim > ndim_max) {
        cu_report(b, "%s: tensor %s has shape %s, expected %d to %d dims", op, name, ft_shape_str(t, s, sizeof s),
                  ndim_min, ndim_max);
        return 0;
    }
    int ok = want == CU_I32   ? t->dtype == FT_I32
             : want == CU_F32 ? t->dtype == FT_F32
                              : (t->dtype == FT_F32 || t->dtype == FT_BF16 || t->dtype == FT_F16);
    if (!ok) {
        cu_report(b, "%s: tensor %s %s has dtype %s, expected %s", op, name, ft_shape_str(t, s, sizeof s),
                  ft_dtype_name(t->dtype), want == CU_I32 ? "I32" : want == CU_F32 ? "F32" : "F32, BF16 or F16");
        return 0;
    }
    if (!t->data && ft_numel(t) > 0) {
        cu_report(b, "%s: tensor %s %s has no data", op, name, ft_shape_str(t, s, sizeof s));
        return 0;
    }
    return 1;
}

/* rows x cols view of a tensor: cols is the last dim */
static int64_t cu_cols(const ft_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }
static int64_t cu_rows(const ft_tensor *t) {
    int64_t c = cu_cols(t);
    return c ? ft_numel(t) / c : 0;
}

static int cu_same(ft_backend *b, const char *op, const char *na, const ft_tensor *a, const char *nb,
                   const ft_tensor *x) {
    if (ft_numel(a) == ft_numel(x) && cu_cols(a) == cu_cols(x) && a->dtype == x->dtype) return 1;
    char s1[64], s2[64];
    cu_report(b, "%s: %s %s %s and %s %s %s must have the same shape and dtype", op, na, ft_dtype_name(a->dtype),
              ft_shape_str(a, s1, sizeof s1), nb, ft_dtype_name(x->dtype), ft_shape_str(x, s2, sizeof s2));
    return 0;
}

static unsigned cu_blocks(int64_t n, int threads) {
    int64_t g = (n + threads - 1) / threads;
    return (unsigned)(g > 65535 * 16 ? 65535 * 16 : g); /* kernels below loop grid-stride */
}

/* ---------------------------------------------------------------- memory */

static void *cu_alloc_fn(ft_backend *b, size_t bytes) {
    cu_state *c = cu_of(b);
    void *p = NULL;
    if (bytes == 0) bytes = 1;
    /* our own cap (gpu_memory_limit): what we hold, the cuBLASLt workspace included, may not pass it */
    if (b->mem_limit && (bytes > b->mem_limit || c->in_use + c->lt_ws_bytes > b->mem_limit - bytes)) {
        if (c->limit_refusals++ < 3)
            fprintf(stderr,
                    "finetune: cuda backend: gpu_memory_limit %.2f GiB: refusing %.1f MiB (%.2f GiB held, cuBLASLt "
                    "workspace included)\n",
                    (double)b->mem_limit / (1u << 30), (double)bytes / (1u << 20),
                    (double)(c->in_use + c->lt_ws_bytes) / (1u << 30));
        return NULL;
    }
    cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) {
        cudaGetLastError(); /* OOM is not sticky: clear it so later launches are not blamed */
        return NULL;
    }
    if (c->nallocs == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->allocs = (cu_alloc *)ft_xrealloc(c->allocs, c->cap * sizeof *c->allocs);
    }
    c->allocs[c->nallocs].p = p;
    c->allocs[c->nallocs].n = bytes;
    c->nallocs++;
    c->in_use += bytes;
    if (c->in_use > c->peak) c->peak = c->in_use;
    return p;
}

static void cu_free_fn(ft_backend *b, void *p) {
    cu_state *c = cu_of(b);
    if (!p) return;
    for (size_t i = c->nallocs; i-- > 0;) {
        if (c->allocs[i].p == p) {
            c->in_use -= c->allocs[i].n;
            c->allocs[i] = c->allocs[--c->nallocs];
            /* cudaFree synchronizes the device, so pending kernels reading p finish first */
            cudaFree(p);
            return;
        }
    }
    cu_report(b, "free: pointer %p was not allocated by this backend", p);
}

static void cu_upload(ft_backend *b, void *dst, const void *src, size_t n) {
    cu_state *c = cu_of(b);
    if (!n) return;
    cudaError_t err = cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, c->stream);
    if (err == cudaSuccess) err = cudaStreamSynchronize(c->stream); /* the host buffer may be reused at once */
    if (err != cudaSuccess) cu_report(b, "upload of %zu bytes failed: %s", n, cudaGetErrorString(err));
}

static void cu_download(ft_backend *b, void *dst, const void *src, size_t n) {
    cu_state *c = cu_of(b);
    if (!n) return;
    cudaError_t err = cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, c->stream);
    if (err == cudaSuccess) err = cudaStreamSynchronize(c->stream);
    if (err != cudaSuccess) cu_report(b, "download of %zu bytes failed: %s", n, cudaGetErrorString(err));
}

static void cu_copy(ft_backend *b, void *dst, const void *src, size_t n) {
    if (!n) return;
    cudaError_t err = cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, cu_of(b)->stream);
    if (err != cudaSuccess) cu_report(b, "device copy of %zu bytes failed: %s", n, cudaGetErrorString(err));
}

static void cu_zero(ft_backend *b, void *dst, size_t n) {
    if (!n) return;
    cudaError_t err = cudaMemsetAsync(dst, 0, n, cu_of(b)->stream);
    if (err != cudaSuccess) cu_report(b, "zero of %zu bytes failed: %s", n, cudaGetErrorString(err));
}

static void cu_sync(ft_backend *b) {
    cudaError_t err = cudaStreamSynchronize(cu_of(b)->stream);
    if (err != cudaSuccess) cu_report(b, "sync: a queued kernel failed: %s (%s)", cudaGetErrorString(err),
                                      cudaGetErrorName(err));
}

static void cu_memory(ft_backend *b, size_t *in_use, size_t *peak) {
    cu_state *c = cu_of(b);
    if (in_use) *in_use = c->in_use;
    if (peak) *peak = c->peak;
}

void *cu_scratch(ft_backend *b, size_t bytes, const char *op) {
    cu_state *c = cu_of(b);
    if (bytes <= c->scratch_bytes) return c->scratch;
    if (c->scratch) {
        cudaStreamSynchronize(c->stream);
        cu_free_fn(b, c->scratch);
        c->scratch = NULL;
        c->scratch_bytes = 0;
    }
    size_t want = bytes + bytes / 4; /* headroom so a slowly growing need does not realloc each step */
    c->scratch = cu_alloc_fn(b, want);
    if (!c->scratch) c->scratch = cu_alloc_fn(b, want = bytes);
    if (!c->scratch) {
        cu_report(b, "%s: out of cuda memory allocating %zu bytes of workspace", op, bytes);
        return NULL;
    }
    c->scratch_bytes = want;
    return c->scratch;
}

static size_t cu_align(size_t n) { return (n + 255) & ~(size_t)255; }

static void cu_lt_plan_drop(cu_lt_plan *p);

static void cu_destroy(ft_backend *b) {
    if (!b) return;
    cu_state *c = cu_of(b);
    if (c) {
        cudaStreamSynchronize(c->stream);
        for (size_t i = 0; i < c->nallocs; i++) cudaFree(c->allocs[i].p);
        free(c->allocs);
        if (getenv("FT_CUDA_STATS"))
            fprintf(stderr, "finetune: cuda backend: cuBLASLt plans: %llu hits, %llu misses, %d GEMMs by cublasGemmEx\n",
                    (unsigned long long)c->lt_hits, (unsigned long long)c->lt_misses, c->lt_fallbacks);
        for (int i = 0; i < CU_LT_PLANS; i++)
            if (c->lt_plans[i].used) cu_lt_plan_drop(&c->lt_plans[i]);
        if (c->lt_ws) cudaFree(c->lt_ws);
        if (c->lt) cublasLtDestroy(c->lt);
        if (c->blas) cublasDestroy(c->blas);
        if (c->stream) cudaStreamDestroy(c->stream);
        free(c);
    }
    free(b);
}

/* ---------------------------------------------------------------- gemm */

static cudaDataType cu_dtype(ft_dtype t) {
    return t == FT_BF16 ? CUDA_R_16BF : t == FT_F16 ? CUDA_R_16F : CUDA_R_32F;
}

/* The largest power of two (up to 256) that p's address is a multiple of: what cuBLASLt may assume. */
static uint32_t cu_ptr_alignment(const void *p) {
    uint32_t al = 256;
    while (al > 1 && ((uintptr_t)p % al)) al >>= 1;
    return al;
}

static void cu_lt_plan_drop(cu_lt_plan *p) {
    if (p->ld) cublasLtMatrixLayoutDestroy(p->ld);
    if (p->ly) cublasLtMatrixLayoutDestroy(p->ly);
    if (p->lx) cublasLtMatrixLayoutDestroy(p->lx);
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    memset(p, 0, sizeof *p);
}

/* Build a plan: descriptors, layouts and the heuristic's best algorithm for key (its status says whether one was
 * found; the descriptors are kept either way, so a refusal is not asked again). */
static cublasStatus_t cu_lt_plan_build(cu_state *c, const cu_lt_key *k, cu_lt_plan *p) {
    cublasLtMatmulPreference_t pref = NULL;
    int32_t tx = k->opx, ty = k->opy;
    uint64_t ws = c->lt_ws_bytes;
    cublasLtMatmulHeuristicResult_t h;
    int found = 0;
    cublasOperation_t opx = (cublasOperation_t)k->opx, opy = (cublasOperation_t)k->opy;
    cublasStatus_t st = cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &tx, sizeof tx);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &ty, sizeof ty);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&p->lx, (cudaDataType)k->xt, opx == CUBLAS_OP_N ? k->m : k->k,
                                        opx == CUBLAS_OP_N ? k->k : k->m, k->ldx);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&p->ly, (cudaDataType)k->yt, opy == CUBLAS_OP_N ? k->k : k->n,
                                        opy == CUBLAS_OP_N ? k->n : k->k, k->ldy);
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatrixLayoutCreate(&p->ld, (cudaDataType)k->dt, k->m, k->n, k->ldd);
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceCreate(&pref);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4 && st == CUBLAS_STATUS_SUCCESS; i++)
        st = cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &k->al[i], sizeof k->al[i]);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->lx, p->ly, p->ld, p->ld, pref, 1, &h, &found);
    if (st == CUBLAS_STATUS_SUCCESS && (found < 1 || h.state != CUBLAS_STATUS_SUCCESS))
        st = CUBLAS_STATUS_NOT_SUPPORTED;
    if (st == CUBLAS_STATUS_SUCCESS) p->algo = h.algo;
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    return st;
}

/* Column-major D = alpha op(X) op(Y) + beta D through cuBLASLt: X is rows_x x cols_x as stored (ld ldx), op(X)
 * m x k, op(Y) k x n. fp32 accumulation and fp32 alpha/beta (CUBLAS_COMPUTE_32F: no TF32). The heuristic is
 * told the operands' real alignments. The plan (descriptors + algorithm) comes from the per-backend cache, built
 * on a miss; the least recently used plan makes room. Returns CUBLAS_STATUS_NOT_SUPPORTED when there is no
 * algorithm (remembered too). */
static cublasStatus_t cu_lt_matmul(cu_state *c, cublasOperation_t opx, cublasOperation_t opy, int m, int n, int k,
                                   float alpha, const void *X, cudaDataType xt, int ldx, const void *Y, cudaDataType yt,
                                   int ldy, float beta, void *D, cudaDataType dt, int ldd) {
    cu_lt_key key;
    memset(&key, 0, sizeof key);
    key.opx = opx, key.opy = opy, key.m = m, key.n = n, key.k = k, key.ldx = ldx, key.ldy = ldy, key.ldd = ldd;
    key.xt = xt, key.yt = yt, key.dt = dt;
    key.al[0] = cu_ptr_alignment(X), key.al[1] = cu_ptr_alignment(Y), key.al[2] = key.al[3] = cu_ptr_alignment(D);
    if (c->lt_nocache) { /* FT_CUDA_LT_CACHE=0: the old way, a plan built and dropped per GEMM (for A/B timing) */
        cu_lt_plan tmp;
        memset(&tmp, 0, sizeof tmp);
        c->lt_misses++;
        cublasStatus_t st = cu_lt_plan_build(c, &key, &tmp);
        if (st == CUBLAS_STATUS_SUCCESS)
            st = cublasLtMatmul(c->lt, tmp.desc, &alpha, X, tmp.lx, Y, tmp.ly, &beta, D, tmp.ld, D, tmp.ld, &tmp.algo,
                                c->lt_ws, c->lt_ws_bytes, c->stream);
        cu_lt_plan_drop(&tmp);
        return st;
    }
    cu_lt_plan *p = NULL, *victim = &c->lt_plans[0];
    for (int i = 0; i < CU_LT_PLANS; i++) {
        cu_lt_plan *q = &c->lt_plans[i];
        if (q->used && !memcmp(&q->key, &key, sizeof key)) {
            p = q;
            break;
        }
        if (q->used < victim->used) victim = q; /* an empty slot (0) or the least recently used */
    }
    if (p) {
        c->lt_hits++;
    } else {
        c->lt_misses++;
        p = victim;
        if (p->used) cu_lt_plan_drop(p);
        p->key = key;
        p->status = cu_lt_plan_build(c, &key, p);
        if (p->status != CUBLAS_STATUS_SUCCESS && !p->desc) { /* not even the descriptors: do not keep it */
            cublasStatus_t st = (cublasStatus_t)p->status;
            cu_lt_plan_drop(p);
            return st;
        }
    }
    p->used = ++c->lt_clock;
    if (p->status != CUBLAS_STATUS_SUCCESS) return (cublasStatus_t)p->status;
    return cublasLtMatmul(c->lt, p->desc, &alpha, X, p->lx, Y, p->ly, &beta, D, p->ld, D, p->ld, &p->algo, c->lt_ws,
                          c->lt_ws_bytes, c->stream);
}

/* Row-major C[M,N] = alpha op(A) op(B) + beta C. cuBLAS is column-major, and a row-major X is the
 * column-major X^T, so we ask cuBLAS for C^T = op(B)^T op(A)^T: B first, then A, dims N, M. cuBLASLt does it;
 * a GEMM it declines goes to cublasGemmEx / cublasSgemm (same arithmetic: fp32 accumulation). */
static int cu_gemm_rm(ft_backend *b, const char *op, ft_dtype ab, ft_dtype ct, int ta, int tb, int64_t M,
                      int64_t N, int64_t K, float alpha, const void *A, int64_t lda, const void *B, int64_t ldb,
                      float beta, void *C, int64_t ldc) {
    if (M == 0 || N == 0) return 1;
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX || ldc > INT32_MAX) {
        cu_report(b, "%s: gemm dims M=%lld N=%lld K=%lld exceed cuBLAS's int range", op, (long long)M,
                  (long long)N, (long long)K);
        return 0;
    }
    cu_state *c = cu_of(b);
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t st = CUBLAS_STATUS_NOT_SUPPORTED;
    if (K > 0) /* K = 0 (C = beta C) is left to the classic API */
        st = cu_lt_matmul(c, opb, opa, (int)N, (int)M, (int)K, alpha, B, cu_dtype(ab), (int)ldb, A, cu_dtype(ab),
                          (int)lda, beta, C, cu_dtype(ct), (int)ldc);
    if (st == CUBLAS_STATUS_SUCCESS) return 1;
    /* any cuBLASLt refusal (no algorithm, or a status this code did not expect): the classic API, said once */
    if (c->lt_fallbacks++ == 0 && K > 0)
        fprintf(stderr, "finetune: cuda backend: cuBLASLt declined a %s GEMM (%lld x %lld x %lld, status %d); "
                        "using cublasGemmEx for such GEMMs\n", ft_dtype_name(ab), (long long)M, (long long)N,
                (long long)K, (int)st);
    if (ab == FT_F32 && ct == FT_F32)
        st = cublasSgemm(c->blas, opb, opa, (int)N, (int)M, (int)K, &alpha, (const float *)B, (int)ldb,
                         (const float *)A, (int)lda, &beta, (float *)C, (int)ldc);
    else
        st = cublasGemmEx(c->blas, opb, opa, (int)N, (int)M, (int)K, &alpha, B, cu_dtype(ab), (int)ldb, A,
                          cu_dtype(ab), (int)lda, &beta, C, cu_dtype(ct), (int)ldc, CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT);
    return cu_blas_ok(b, op, st);
}

static void cu_gemm(ft_backend *b, const ft_tensor *A, int ta, const ft_tensor *B, int tb, ft_tensor *C, float alpha,
                    float beta) {
    const char *op = "gemm";
    if (!cu_arg(b, op, "A", A, CU_ANYF, 1, 4) || !cu_arg(b, op, "B", B, CU_ANYF, 1, 4) ||
        !cu_arg(b, op, "C", C, CU_ANYF, 1, 4))
        return;
    int64_t ar = cu_rows(A), ac = cu_cols(A), br = cu_rows(B), bc = cu_cols(B);
    int64_t M = ta ? ac : ar, K = ta ? ar : ac, K2 = tb ? bc : br, N = tb ? br : bc;
    char s1[64], s2[64], s3[64];
    if (K != K2 || cu_rows(C) != M || cu_cols(C) != N) {
        cu_report(b, "gemm: shapes do not agree: A %s%s, B %s%s, C %s (want C [%lld, %lld])",
                  ft_shape_str(A, s1, sizeof s1), ta ? "^T" : "", ft_shape_str(B, s2, sizeof s2), tb ? "^T" : "",
                  ft_shape_str(C, s3, sizeof s3), (long long)M, (long long)N);
        return;
    }
    if (A->dtype != B->dtype || !(C->dtype == A->dtype || C->dtype == FT_F32)) {
        cu_report(b, "gemm: dtypes A %s, B %s, C %s: A and B must match, C must match them or be F32",
                  ft_dtype_name(A->dtype), ft_dtype_name(B->dtype), ft_dtype_name(C->dtype));
        return;
    }
    cu_gemm_rm(b, op, A->dtype, C->dtype, ta, tb, M, N, K, alpha, A->data, ac, B->data, bc, beta, C->data, N);
}

/* ---------------------------------------------------------------- embedding */

template <typename T>
__global__ void k_embedding(const int32_t *ids, const T *table, T *out, int64_t T_, int64_t D, int64_t V) {
    int64_t n = T_ * D;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = i / D, d = i % D;
        int32_t id = ids[t];
        /* an out-of-range id must not fault the context: it reads as zeros (the CPU twin reports it) */
        cu_st(out, i, (id >= 0 && id < V) ? cu_ld(table, (size_t)id * D + d) : 0.f);
    }
}

static void cu_embedding(ft_backend *b, const ft_tensor *ids, const ft_tensor *table, ft_tensor *out) {
    const char *op = "embedding";
    if (!cu_arg(b, op, "ids", ids, CU_I32, 1, 2) || !cu_arg(b, op, "table", table, CU_ANYF, 2, 2) ||
        !cu_arg(b, op, "out", out, CU_ANYF, 2, 2))
        return;
    int64_t T_ = ft_numel(ids), D = table->shape[1], V = table->shape[0];
    if (out->shape[0] != T_ || out->shape[1] != D || out->dtype != table->dtype) {
        char s[64];
        cu_report(b, "embedding: out %s must be [%lld, %lld] of dtype %s", ft_shape_str(out, s, sizeof s),
                  (long long)T_, (long long)D, ft_dtype_name(table->dtype));
        return;
    }
    if (!T_ || !D) return;
    CU_DISPATCH(b, op, table->dtype,
                CU_LAUNCH(cu_blocks(T_ * D, 256), 256, cu_of(b)->stream, k_embedding<T>)(
                    (const int32_t *)ids->data, (const T *)table->data, (T *)out->data, T_, D, V));
    cu_check_launch(b, op);
}

/* dtable[ids[t]] += dout[t], tokens in order: one thread per column walks every token, so a row that several
 * tokens share sums in token order, as on the CPU, and the result is the same on every run (no atomics:
 * exact resume needs deterministic gradients). Reads and writes are coalesced across the columns. */
__global__ void k_embedding_backward(const int32_t *ids, const float *dout, float *dtable, int64_t T_, int64_t D,
                                     int64_t V) {
    for (int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; d < D; d += (int64_t)gridDim.x * blockDim.x)
        for (int64_t t = 0; t < T_; t++) {
            int32_t id = ids[t];
            if (id >= 0 && id < V) dtable[(size_t)id * D + d] += dout[(size_t)t * D + d];
        }
}

static void cu_embedding_backward(ft_backend *b, const ft_tensor *ids, const ft_tensor *dout, ft_tensor *dtable,
                                  int acc) {
    const char *op = "embedding_backward";
    if (!cu_arg(b, op, "ids", ids, CU_I32, 1, 2) || !cu_arg(b, op, "dout", dout, CU_F32, 2, 2) ||
        !cu_arg(b, op, "dtable", dtable, CU_F32, 2, 2))
        return;
    int64_t T_ = ft_numel(ids), D = dtable->shape[1], V = dtable->shape[0];
    if (dout->shape[0] != T_ || dout->shape[1] != D) {
        char s[64];
        cu_report(b, "embedding_backward: dout %s must be [%lld, %lld]", ft_shape_str(dout, s, sizeof s),
                  (long long)T_, (long long)D);
        return;
    }
    if (!acc) cu_zero(b, dtable->data, ft_nbytes(dtable));
    if (!T_ || !D) return;
    CU_LAUNCH(cu_blocks(D, 256), 256, cu_of(b)->stream, k_embedding_backward)(
        (const int32_t *)ids->data, (const float *)dout->data, (float *)dtable->data, T_, D, V);
    cu_check_launch(b, op);
}

/* ---------------------------------------------------------------- block reductions */

/* Sum over a block of up to 1024 threads (blockDim a multiple of 32); every thread gets the total. */
static __device__ float cu_block_sum(float v, float *sh /* [32] */) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = cu_warp_sum(v);
    __syncthreads(); /* sh may still be read from a previous call */
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.f;
    return cu_warp_sum(v);
}
static __device__ float cu_block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = cu_warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return cu_warp_max(v);
}

/* ---------------------------------------------------------------- rmsnorm */

/* O: out's storage, T's own, or 16 bits from fp32 x/w (the norm and its cast in one pass) */
template <typename T, typename O>
__global__ void k_rmsnorm(const T *x, const T *w, float eps, O *out, float *rstd, int64_t D) {
    __shared__ float sh[32];
    size_t row = (size_t)blockIdx.x * D;
    float ss = 0.f;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        float v = cu_ld(x, row + d);
        ss += v * v;
    }
    ss = cu_block_sum(ss, sh);
    float r = 1.0f / sqrtf(ss / (float)D + eps);
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) cu_st(out, row + d, cu_ld(x, row + d) * r * cu_ld(w, d));
    if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = r;
}

static void cu_rmsnorm(ft_backend *b, const ft_tensor *x, const ft_tensor *w, float eps, ft_tensor *out,
                       ft_tensor *rstd) {
    const char *op = "rmsnorm";
    if (!cu_arg(b, op, "x", x, CU_ANYF, 1, 4) || !cu_arg(b, op, "w", w, CU_ANYF, 1, 1) ||
        !cu_arg(b, op, "out", out, CU_ANYF, 1, 4) || (rstd && !cu_arg(b, op, "rstd", rstd, CU_F32, 1, 4)))
        return;
    int narrow = x->dtype == FT_F32 && out->dtype != FT_F32; /* fp32 norm into a 16-bit out */
    if (!narrow && !cu_same(b, op, "x", x, "out", out)) return;
    if (narrow && (ft_numel(x) != ft_numel(out) || cu_cols(x) != cu_cols(out))) {
        char s1[64], s2[64];
        cu_report(b, "rmsnorm: x %s and out %s must have the same shape", ft_shape_str(x, s1, sizeof s1),
                  ft_shape_str(out, s2, sizeof s2));
        return;
    }
    int64_t T_ = cu_rows(x), D = cu_cols(x);
    if (w->shape[0] != D || w->dtype != x->dtype || (rstd && ft_numel(rstd) != T_)) {
        cu_report(b, "rmsnorm: w must be [%lld] of dtype %s and rstd [%lld] F32", (long long)D,
                  ft_dtype_name(x->dtype), (long long)T_);
        return;
    }
    if (!T_ || !D) return;
    if (T_ > INT32_MAX) {
        cu_report(b, "rmsnorm: %lld rows is too many", (long long)T_);
        return;
    }
    float *rs = rstd ? (float *)rstd->data : (float *)NULL;
    if (narrow)
        CU_DISPATCH(b, op, out->dtype,
                    CU_LAUNCH((unsigned)T_, 256, cu_of(b)->stream, k_rmsnorm<float, T>)(
                        (const float *)x->data, (const float *)w->data, eps, (T *)out->data, rs, D));
    else
        CU_DISPATCH(b, op, x->dtype,
                    CU_LAUNCH((unsigned)T_, 256, cu_of(b)->stream, k_rmsnorm<T, T>)(
                        (const T *)x->data, (const T *)w->data, eps, (T *)out->data, rs, D));
    cu_check_launch(b, op);
}

/* rows of the backward: dx = r*w*g - x * r^3 * mean(g*w*x); also fills r when it was not given */
template <typename T>
__global__ void k_rmsnorm_bwd_dx(const T *g, const T *x, const T *w, const float *rstd, float eps, float *rbuf, T *dx,
                                 int acc, int64_t D) {
    __shared__ float sh[32];
    size_t row = (size_t)blockIdx.x * D;
    float r;
    if (rstd) {
        r = rstd[blockIdx.x];
    } else {
        float ss = 0.f;
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            float v = cu_ld(x, row + d);
            ss += v * v;
        }
        ss = cu_block_sum(ss, sh);
        r = 1.0f / sqrtf(ss / (float)D + eps);
    }
    float dot = 0.f;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) dot += cu_ld(g, row + d) * cu_ld(w, d) * cu_ld(x, row + d);
    dot = cu_block_sum(dot, sh);
    float c = r * r * r * dot / (float)D;
    if (dx)
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            float v = r * cu_ld(w, d) * cu_ld(g, row + d) - cu_ld(x, row + d) * c;
            cu_st(dx, row + d, acc ? cu_ld(dx, row + d) + v : v);
        }
    if (threadIdx.x == 0) rbuf[blockIdx.x] = r;
}

#define CU_RMS_ROWS 64 /* rows summed per partial of dw: fixed order, so dw is deterministic */
template <typename T>
__global__ void k_rmsnorm_bwd_dw_part(const T *g, const T *x, const float *r, float *part, int64_t T_, int64_t D) {
    int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (d >= D) return;
    int64_t t0 = (int64_t)blockIdx.y * CU_RMS_ROWS, t1 = t0 + CU_RMS_ROWS < T_ ? t0 + CU_RMS_ROWS : T_;
    float s = 0.f;
    for (int64_t t = t0; t < t1; t++) s += cu_ld(g, (size_t)t * D + d) * cu_ld(x, (size_t)t * D + d) * r[t];
    part[(size_t)blockIdx.y * D + d] = s;
}
template <typename T>
__global__ void k_rmsnorm_bwd_dw_sum(const float *part, int64_t nparts, T *dw, int64_t D) {
    int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (d >= D) return;
    float s = 0.f;
    for (int64_t p = 0; p < nparts; p++) s += part[(size_t)p * D + d];
    cu_st(dw, d, cu_ld(dw, d) + s);
}

static void cu_rmsnorm_backward(ft_backend *b, const ft_tensor *dout, const ft_tensor *x, const ft_tensor *w,
                                const ft_tensor *rstd, ft_tensor *dx, ft_tensor *dw, int acc) {
    const char *op = "rmsnorm_backward";
    if (!cu_arg(b, op, "dout", dout, CU_ANYF, 1, 4) || !cu_arg(b, op, "x", x, CU_ANYF, 1, 4) ||
        !cu_arg(b, op, "w", w, CU_ANYF, 1, 1) || !cu_same(b, op, "dout", dout, "x", x) ||
        (rstd && !cu_arg(b, op, "rstd", rstd, CU_F32, 1, 4)) ||
        (dx && (!cu_arg(b, op, "dx", dx, CU_ANYF, 1, 4) || !cu_same(b, op, "dx", dx, "x", x))) ||
        (dw && !cu_arg(b, op, "dw", dw, CU_ANYF, 1, 1)))
        return;
    if (!rstd) { /* the forward's eps is not known here, so rstd cannot be recomputed */
        cu_report(b, "rmsnorm_backward: rstd from the forward pass is required");
        return;
    }
    int64_t T_ = cu_rows(x), D = cu_cols(x);
    if (w->shape[0] != D || w->dtype != x->dtype || (rstd && ft_numel(rstd) != T_) ||
        (dw && (dw->shape[0] != D || dw->dtype != w->dtype))) {
        cu_report(b, "rmsnorm_backward: w and dw must be [%lld] of dtype %s and rstd [%lld] F32", (long long)D,
                  ft_dtype_name(x->dtype), (long long)T_);
        return;
    }
    if (!T_ || !D) return;
    if (T_ > INT32_MAX) {
        cu_report(b, "rmsnorm_backward: %lld rows is too many", (long long)T_);
        return;
    }
    int64_t nparts = (T_ + CU_RMS_ROWS - 1) / CU_RMS_ROWS;
    size_t r_bytes = cu_align((size_t)T_ * 4);
    char *ws = (char *)cu_scratch(b, r_bytes + (dw ? (size_t)nparts * D * 4 : 0), op);
    if (!ws) return;
    float *rbuf = (float *)ws, *part = (float *)(ws + r_bytes);
    cudaStream_t s = cu_of(b)->stream;
    const float *rs = rstd ? (const float *)rstd->data : NULL;
    CU_DISPATCH(b, op, x->dtype, {
        CU_LAUNCH((unsigned)T_, 256, s, k_rmsnorm_bwd_dx<T>)((const T *)dout->data, (const T *)x->data,
                                                             (const T *)w->data, rs, 1e-5f, rbuf,
                                                             dx ? (T *)dx->data : (T *)NULL, acc, D);
        if (dw && nparts <= 65535) {
            dim3 grid((unsigned)((D + 255) / 256), (unsigned)nparts);
            CU_LAUNCH(grid, 256, s, k_rmsnorm_bwd_dw_part<T>)((const T *)dout->data, (const T *)x->data, rbuf, part,
                                                              T_, D);
            CU_LAUNCH((unsigned)((D + 255) / 256), 256, s, k_rmsnorm_bwd_dw_sum<T>)(part, nparts, (T *)dw->data, D);
        } else if (dw) {
            cu_report(b, "rmsnorm_backward: %lld rows is too many for the dw reduction", (long long)T_);
        }
    });
    cu_check_launch(b, op);
}

/* ---------------------------------------------------------------- rope */

template <typename T>
__global__ void k_rope(T *x, const int32_t *pos, const float *inv_freq, float mscale, int inverse, int64_t T_,
                       int64_t H, int64_t Dh) {
    int64_t half = Dh / 2, n = T_ * H * half;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t f = i % half, th = i / half, t = th / H;
        float a = (float)pos[t] * inv_freq[f];
        float c = cosf(a) * mscale, s = sinf(a) * mscale;
        if (inverse) s = -s;
        size_t base = (size_t)th * Dh;
        float x1 = cu_ld(x, base + f), x2 = cu_ld(x, base + f + half);
        cu_st(x, base + f, x1 * c - x2 * s);
        cu_st(x, base + f + half, x2 * c + x1 * s);
    }
}

static void cu_rope(ft_backend *b, ft_tensor *x, const ft_tensor *pos, const ft_tensor *inv_freq, float mscale,
                    int inverse) {
    const char *op = "rope";
    if (!cu_arg(b, op, "x", x, CU_ANYF, 3, 3) || !cu_arg(b, op, "pos", pos, CU_I32, 1, 1) ||
        !cu_arg(b, op, "inv_freq", inv_freq, CU_F32, 1, 1))
        return;
    int64_t T_ = x->shape[0], H = x->shape[1], Dh = x->shape[2];
    if (Dh % 2 || pos->shape[0] != T_ || inv_freq->shape[0] != Dh / 2) {
        char s1[64], s2[64], s3[64];
        cu_report(b, "rope: x %s needs an even head dim, pos [%lld] and inv_freq [%lld]; got pos %s, inv_freq %s",
                  ft_shape_str(x, s1, sizeof s1), (long long)T_, (long long)(Dh / 2), ft_shape_str(pos, s2, sizeof s2),
                  ft_shape_str(inv_freq, s3, sizeof s3));
        return;
    }
    if (!T_ || !H || !Dh) return;
    CU_DISPATCH(b, op, x->dtype,
                CU_LAUNCH(cu_blocks(T_ * H * (Dh / 2), 256), 256, cu_of(b)->stream, k_rope<T>)(
                    (T *)x->data, (const int32_t *)pos->data, (const float *)inv_freq->data, mscale, inverse, T_, H,
                    Dh));
    cu_check_launch(b, op);
}

/* ---------------------------------------------------------------- elementwise */

template <typename T> __global__ void k_swiglu(const T *g, const T *u, T *out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float a = cu_ld(g, i);
        cu_st(out, i, a / (1.f + expf(-a)) * cu_ld(u, i));
    }
}

template <typename T>
__global__ void k_swiglu_bwd(const T *g, const T *u, const T *dout, T *dg, T *du, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float a = cu_ld(g, i), sg = 1.f / (1.f + expf(-a)), d = cu_ld(dout, i), up = cu_ld(u, i);
        cu_st(dg, i, d * up * sg * (1.f + a * (1.f - sg)));
        cu_st(du, i, d * a * sg);
    }
}

template <typename T, typename U> __global__ void k_add(const T *a, const U *x, T *out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        cu_st(out, i, cu_ld(a, i) + cu_ld(x, i));
}

template <typename T> __global__ void k_add_bias(T *x, const T *bias, int64_t n, int64_t N) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        cu_st(x, i, cu_ld(x, i) + cu_ld(bias, i % N));
}

static void cu_swiglu(ft_backend *b, const ft_tensor *gate, const ft_tensor *up, ft_tensor *out) {
    const char *op = "swiglu";
    if (!cu_arg(b, op, "gate", gate, CU_ANYF, 1, 4) || !cu_arg(b, op, "up", up, CU_ANYF, 1, 4) ||
        !cu_arg(b, op, "out", out, CU_ANYF, 1, 4) || !cu_same(b, op, "gate", gate, "up", up) ||
        !cu_same(b, op, "gate", gate, "out", out))
        return;
    int64_t n = ft_numel(gate);
    if (!n) return;
    CU_DISPATCH(b, op, gate->dtype,
                CU_LAUNCH(cu_blocks(n, 256), 256, cu_of(b)->stream, k_swiglu<T>)(
                    (const T *)gate->data, (const T *)up->data, (T *)out->data, n));
    cu_check_launch(b, op);
}

static void cu_swiglu_backward(ft_backend *b, const ft_tensor *gate, const ft_tensor *up, const ft_tensor *dout,
                               ft_tensor *dgate, ft_tensor *dup) {
    const char *op = "swiglu_backward";
    if (!cu_arg(b, op, "gate", gate, CU_ANYF, 1, 4) || !cu_arg(b, op, "up", up, CU_ANYF, 1, 4) ||
        !cu_arg(b, op, "dout", dout, CU_ANYF, 1, 4) || !cu_arg(b, op, "dgate", dgate, CU_ANYF, 1, 4) ||
        !cu_arg(b, op, "dup", dup, CU_ANYF, 1, 4) || !cu_same(b, op, "gate", gate, "up", up) ||
        !cu_same(b, op, "gate", gate, "dout", dout) || !cu_same(b, op, "gate", gate, "dgate", dgate) ||
        !cu_same(b, op, "gate", gate, "dup", dup))
        return;
    int64_t n = ft_numel(gate);
    if (!n) return;
    CU_DISPATCH(b, op, gate->dtype,
                CU_LAUNCH(cu_blocks(n, 256), 256, cu_of(b)->stream, k_swiglu_bwd<T>)(
                    (const T *)gate->data, (const T *)up->data, (const T *)dout->data, (T *)dgate->data,
                    (T *)dup->data, n));
    cu_check_launch(b, op);
}

static void cu_add(ft_backend *b, const ft_tensor *a, const ft_tensor *x, ft_tensor *out) {
    const char *op = "add";
    if (!cu_arg(b, op, "a", a, CU_ANYF, 1, 4) || !cu_arg(b, op, "b", x, CU_ANYF, 1, 4) ||
        !cu_arg(b, op, "out", out, CU_ANYF, 1, 4) || !cu_same(b, op, "a", a, "out", out))
        return;
    int widen = a->dtype == FT_F32 && x->dtype != FT_F32; /* a 16-bit b added to fp32 a */
    if (!widen && !cu_same(b, op, "a", a, "b", x)) return;
    if (widen && (ft_numel(a) != ft_numel(x) || cu_cols(a) != cu_cols(x))) {
        char s1[64], s2[64];
        cu_report(b, "add: a %s and b %s must have the same shape", ft_shape_str(a, s1, sizeof s1),
                  ft_shape_str(x, s2, sizeof s2));
        return;
    }
    int64_t n = ft_numel(a);
    if (!n) return;
    if (widen)
        CU_DISPATCH(b, op, x->dtype,
                    CU_LAUNCH(cu_blocks(n, 256), 256, cu_of(b)->stream, k_add<float, T>)(
                        (const float *)a->data, (const T *)x->data, (float *)out->data, n));
    else
        CU_DISPATCH(b, op, a->dtype,
                    CU_LAUNCH(cu_blocks(n, 256), 256, cu_of(b)->stream, k_add<T, T>)(
                        (const T *)a->data, (const T *)x->data, (T *)out->data, n));
    cu_check_launch(b, op);
}

static void cu_add_bias(ft_backend *b, ft_tensor *x, const ft_tensor *bias) {
    const char *op = "add_bias";
    if (!cu_arg(b, op, "x", x, CU_ANYF, 1, 4) || !cu_arg(b, op, "bias", bias, CU_ANYF, 1, 1)) return;
    int64_t N = cu_cols(x), n = ft_numel(x);
    if (bias->shape[0] != N || bias->dtype != x->dtype) {
        char s1[64], s2[64];
        cu_report(b, "add_bias: bias %s %s must be [%lld] %s to match x %s", ft_dtype_name(bias->dtype),
                  ft_shape_str(bias, s1, sizeof s1), (long long)N, ft_dtype_name(x->dtype),
                  ft_shape_str(x, s2, sizeof s2));
        return;
    }
    if (!n) return;
    CU_DISPATCH(b, op, x->dtype,
                CU_LAUNCH(cu_blocks(n, 256), 256, cu_of(b)->stream, k_add_bias<T>)((T *)x->data, (const T *)bias->data,
                                                                               n, N));
    cu_check_launch(b, op);
}

/* ---------------------------------------------------------------- token log-probs */

/* One block per row: merge this chunk's max and sum of exp into the running (m, s); pick the target. */
__global__ void k_lp_chunk(const float *logits, int64_t C, int64_t c0, const int32_t *targets, float *m, float *s,
                           float *tl) {
    __shared__ float sh[32];
    const float *row = logits + (size_t)blockIdx.x * C;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) mx = fmaxf(mx, row[j]);
    mx = cu_block_max(mx, sh);
    float sum = 0.f;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) sum += expf(row[j] - mx);
    sum = cu_block_sum(sum, sh);
    if (threadIdx.x == 0) {
        float mo = m[blockIdx.x], mn = fmaxf(mo, mx);
        s[blockIdx.x] = s[blockIdx.x] * expf(mo - mn) + sum * expf(mx - mn);
        m[blockIdx.x] = mn;
        int32_t tg = targets[blockIdx.x];
        if (tg >= c0 && tg < c0 + C) tl[blockIdx.x] = row[tg - c0];
    }
}

__global__ void k_lp_init(float *m, float *s, float *tl, int64_t T_) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < T_) {
        m[i] = -INFINITY;
        s[i] = 0.f;
        tl[i] = -INFINITY; /* a target >= V never gets picked: logp -inf, not a fault */
    }
}

__global__ void k_lp_final(const float *m, const float *s, const float *tl, const int32_t *targets, float *logp,
                           float *lse, int64_t T_) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= T_) return;
    float l = m[i] + logf(s[i]);
    if (lse) lse[i] = l;
    if (logp) logp[i] = targets[i] < 0 ? 0.f : tl[i] - l;
}

/* Vocab chunk so that the [T, chunk] fp32 tile stays near 64 MiB. */
static int64_t cu_lp_chunk(int64_t T_, int64_t V) { return ft_logprob_chunk(T_, V); }

/* h and W: F32, or one 16-bit dtype (mixed precision: the GEMMs read 16 bits, logits and sums are fp32) */
static int cu_lp_args(ft_backend *b, const char *op, const ft_tensor *h, const ft_tensor *W, const ft_tensor *targets) {
    if (!cu_arg(b, op, "h", h, CU_ANYF, 2, 2) || !cu_arg(b, op, "W", W, CU_ANYF, 2, 2) ||
        !cu_arg(b, op, "targets", targets, CU_I32, 1, 1))
        return 0;
    if (W->dtype != h->dtype) {
        cu_report(b, "%s: h is %s but W is %s: they must match", op, ft_dtype_name(h->dtype), ft_dtype_name(W->dtype));
        return 0;
    }
    if (W->shape[1] != h->shape[1] || targets->shape[0] != h->shape[0]) {
        char s1[64], s2[64], s3[64];
        cu_report(b, "%s: h %s, W %s and targets %s do not agree (want h [T,D], W [V,D], targets [T])", op,
                  ft_shape_str(h, s1, sizeof s1), ft_shape_str(W, s2, sizeof s2), ft_shape_str(targets, s3, sizeof s3));
        return 0;
    }
    if (h->shape[0] > INT32_MAX) {
        cu_report(b, "%s: %lld tokens is too many", op, (long long)h->shape[0]);
        return 0;
    }
    return 1;
}

/* Forward pass into logp/lse (either may be NULL); ws holds the tile and 3 x T running values. */
static int cu_lp_forward(ft_backend *b, const char *op, const ft_tensor *h, const ft_tensor *W,
                         const ft_tensor *targets, float *logp, float *lse, float **tile_out, int64_t *chunk_out) {
    int64_t T_ = h->shape[0], D = h->shape[1], V = W->shape[0], C = cu_lp_chunk(T_, V);
    size_t tile = cu_align((size_t)T_ * C * 4), vec = cu_align((size_t)T_ * 4);
    char *ws = (char *)cu_scratch(b, tile + 3 * vec, op);
    if (!ws) return 0;
    float *logits = (float *)ws, *m = (float *)(ws + tile), *s = (float *)(ws + tile + vec),
          *tl = (float *)(ws + tile + 2 * vec);
    cudaStream_t st = cu_of(b)->stream;
    const int32_t *tg = (const int32_t *)targets->data;
    CU_LAUNCH((unsigned)((T_ + 255) / 256), 256, st, k_lp_init)(m, s, tl, T_);
    for (int64_t c0 = 0; c0 < V; c0 += C) {
        int64_t n = V - c0 < C ? V - c0 : C;
        if (!cu_gemm_rm(b, op, h->dtype, FT_F32, 0, 1, T_, n, D, 1.f, h->data, D,
                        (const char *)W->data + (size_t)(c0 * D) * ft_dtype_size(W->dtype), D, 0.f, logits, n))
            return 0;
        CU_LAUNCH((unsigned)T_, 256, st, k_lp_chunk)(logits, n, c0, tg, m, s, tl);
    }
    CU_LAUNCH((unsigned)((T_ + 255) / 256), 256, st, k_lp_final)(m, s, tl, tg, logp, lse, T_);
    if (tile_out) *tile_out = logits;
    if (chunk_out) *chunk_out = C;
    return !cu_check_launch(b, op);
}

static void cu_token_logprobs(ft_backend *b, const ft_tensor *h, const ft_tensor *W, const ft_tensor *targets,
                              ft_tensor *logp, ft_tensor *lse) {
    const char *op = "token_logprobs";
    if (!cu_lp_args(b, op, h, W, targets) || !cu_arg(b, op, "logp", logp, CU_F32, 1, 1) ||
        (lse && !cu_arg(b, op, "lse", lse, CU_F32, 1, 1)))
        return;
    int64_t T_ = h->shape[0];
    if (logp->shape[0] != T_ || (lse && lse->shape[0] != T_)) {
        cu_report(b, "token_logprobs: logp and lse must be [%lld]", (long long)T_);
        return;
    }
    if (!T_) return;
    if (W->shape[0] == 0) {
        cu_report(b, "token_logprobs: W has an empty vocabulary");
        return;
    }
    cu_lp_forward(b, op, h, W, targets, (float *)logp->data, lse ? (float *)lse->data : NULL, NULL, NULL);
}

/* logits tile -> dlogits = dlogp * (onehot(target) - softmax), rows with target < 0 give 0, computed in fp32 and
 * stored as G's type: in place (fp32), or with 16-bit h/W straight into the 16-bit tile the two gradient GEMMs
 * read (one pass: the same rounding a separate cast would do, without writing and re-reading an fp32 tile). */
template <typename G>
__global__ void k_lp_grad(const float *tile, G *out, int64_t n, int64_t c0, const int32_t *targets, const float *lse,
                          const float *dlogp) {
    size_t row = (size_t)blockIdx.x * n;
    int32_t tg = targets[blockIdx.x];
    float l = lse[blockIdx.x], g = dlogp[blockIdx.x];
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
        float v = 0.f;
        if (tg >= 0) v = g * ((c0 + j == tg ? 1.f : 0.f) - expf(tile[row + j] - l));
        cu_st(out, row + j, v);
    }
}

static void cu_token_logprobs_backward(ft_backend *b, const ft_tensor *h, const ft_tensor *W,
                                       const ft_tensor *targets, const ft_tensor *lse, const ft_tensor *dlogp,
                                       ft_tensor *dh, ft_tensor *dW) {
    const char *op = "token_logprobs_backward";
    if (!cu_lp_args(b, op, h, W, targets) || (lse && !cu_arg(b, op, "lse", lse, CU_F32, 1, 1)) ||
        !cu_arg(b, op, "dlogp", dlogp, CU_F32, 1, 1) || !cu_arg(b, op, "dh", dh, CU_ANYF, 2, 2) ||
        (dW && !cu_arg(b, op, "dW", dW, CU_ANYF, 2, 2)))
        return;
    /* 16-bit h/W: dh and dW may be F32 (mixed precision: the fp32 norm backward and master gradients) */
    if ((dh->dtype != FT_F32 && dh->dtype != h->dtype) || (dW && dW->dtype != FT_F32 && dW->dtype != h->dtype)) {
        cu_report(b, "%s: dh %s and dW %s must be F32 or h's dtype %s", op, ft_dtype_name(dh->dtype),
                  dW ? ft_dtype_name(dW->dtype) : "-", ft_dtype_name(h->dtype));
        return;
    }
    int64_t T_ = h->shape[0], D = h->shape[1], V = W->shape[0];
    if ((lse && lse->shape[0] != T_) || dlogp->shape[0] != T_ || dh->shape[0] != T_ || dh->shape[1] != D ||
        (dW && (dW->shape[0] != V || dW->shape[1] != D))) {
        cu_report(b, "token_logprobs_backward: want lse, dlogp [%lld], dh [%lld, %lld], dW [%lld, %lld]",
                  (long long)T_, (long long)T_, (long long)D, (long long)V, (long long)D);
        return;
    }
    if (!T_) return;
    if (V == 0) {
        cu_zero(b, dh->data, ft_nbytes(dh));
        return;
    }
    int64_t C = cu_lp_chunk(T_, V);
    size_t tile = cu_align((size_t)T_ * C * 4), vec = cu_align((size_t)T_ * 4);
    size_t esz = ft_dtype_size(h->dtype), tile16 = esz < 4 ? cu_align((size_t)T_ * C * esz) : 0;
    /* one workspace: the tile, 3 running vectors of the forward, our own lse when none was given, and with
     * 16-bit h/W the tile's 16-bit copy that the two gradient GEMMs read */
    char *ws = (char *)cu_scratch(b, tile + 4 * vec + tile16, op);
    if (!ws) return;
    const float *l = lse ? (const float *)lse->data : NULL;
    if (!l) {
        float *own = (float *)(ws + tile + 3 * vec);
        if (!cu_lp_forward(b, op, h, W, targets, NULL, own, NULL, NULL)) return;
        l = own;
    }
    float *logits = (float *)ws;
    cudaStream_t st = cu_of(b)->stream;
    for (int64_t c0 = 0; c0 < V; c0 += C) {
        int64_t n = V - c0 < C ? V - c0 : C;
        const char *Wc = (const char *)W->data + (size_t)(c0 * D) * esz;
        if (!cu_gemm_rm(b, op, h->dtype, FT_F32, 0, 1, T_, n, D, 1.f, h->data, D, Wc, D, 0.f, logits, n)) return;
        /* the GEMMs take one input dtype: with 16-bit h/W, G is rounded to it (relative error 2^-8 bf16, 2^-11
         * fp16) as the gradient kernel stores it */
        const void *G = tile16 ? (const void *)(ws + tile + 4 * vec) : (const void *)logits;
        CU_DISPATCH(b, op, h->dtype,
                    CU_LAUNCH((unsigned)T_, 256, st, k_lp_grad<T>)(logits, (T *)G, n, c0,
                                                                  (const int32_t *)targets->data, l,
                                                                  (const float *)dlogp->data));
        /* dh (=/+=) G[T,n] Wc[n,D];  dW[c0:c0+n] += G^T h */
        if (!cu_gemm_rm(b, op, h->dtype, dh->dtype, 0, 0, T_, D, n, 1.f, G, n, Wc, D, c0 ? 1.f : 0.f, dh->data, D))
            return;
        if (dW && !cu_gemm_rm(b, op, h->dtype, dW->dtype, 1, 0, n, D, T_, 1.f, G, n, h->data, D, 1.f,
                              (char *)dW->data + (size_t)(c0 * D) * ft_dtype_size(dW->dtype), D))
            return;
    }
    cu_check_launch(b, op);
}

/* ---------------------------------------------------------------- create */

__global__ void k_probe(int *x) { *x = 1; }

extern "C" int ft_backend_cuda_available(void) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        cudaGetLastError(); /* no driver / no device: not an error for the caller */
        return 0;
    }
    if (n <= 0) return 0;
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return major * 10 + minor >= 75; /* "auto" must not pick a GPU that create would refuse */
}

extern "C" int ft_backend_cuda_create(ft_backend **out, ft_error *e) {
    *out = NULL;
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n <= 0) {
        cudaGetLastError();
        return ft_fail(e, FT_EDEVICE, "device=cuda but no CUDA GPU is visible: %s (%s)%s",
                       err != cudaSuccess ? cudaGetErrorString(err) : "cudaGetDeviceCount found 0 devices",
                       err != cudaSuccess ? cudaGetErrorName(err) : "no device",
                       err == cudaErrorInsufficientDriver
                           ? "; no NVIDIA driver is loaded, or it is older than this build's CUDA runtime"
                           : "; use device=cpu, or check nvidia-smi and CUDA_VISIBLE_DEVICES");
    }
    cudaDeviceProp prop;
    if ((err = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess)
        return ft_fail(e, FT_EDEVICE, "device=cuda: cannot query GPU 0: %s", cudaGetErrorString(err));
    int sm = prop.major * 10 + prop.minor;
    if (sm < 75)
        return ft_fail(e, FT_EDEVICE,
                       "device=cuda: GPU 0 (%s) has compute capability %d.%d; finetune needs 7.5 or newer (T4, A100, "
                       "L4, H100, ...)",
                       prop.name, prop.major, prop.minor);
    if ((err = cudaSetDevice(0)) != cudaSuccess)
        return ft_fail(e, FT_EDEVICE, "device=cuda: cannot use GPU 0 (%s): %s", prop.name, cudaGetErrorString(err));

    cu_state *c = (cu_state *)ft_xcalloc(1, sizeof *c);
    ft_backend *b = (ft_backend *)ft_xcalloc(1, sizeof *b);
    b->impl = c;
    c->device = 0;
    c->sm = sm;
    int rc = FT_OK;
    if ((err = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        rc = ft_fail(e, FT_EDEVICE, "device=cuda: cannot create a stream on %s: %s", prop.name,
                     cudaGetErrorString(err));
    } else if (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS ? (c->blas = NULL, 1)
               : cublasSetStream(c->blas, c->stream) != CUBLAS_STATUS_SUCCESS ||
                     cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH) != CUBLAS_STATUS_SUCCESS) {
        /* CUBLAS_DEFAULT_MATH: no TF32, so fp32 GEMMs match the CPU backend */
        rc = ft_fail(e, FT_EDEVICE, "device=cuda: cannot initialise cuBLAS on %s", prop.name);
    } else if (cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS ? (c->lt = NULL, 1) : 0) {
        rc = ft_fail(e, FT_EDEVICE, "device=cuda: cannot initialise cuBLASLt on %s", prop.name);
    } else {
        const char *lc = getenv("FT_CUDA_LT_CACHE");
        c->lt_nocache = lc && strcmp(lc, "0") == 0;
        /* cuBLASLt's workspace: 32 MiB, what NVIDIA recommends for Hopper (less is fine: 0 when it fails) */
        c->lt_ws_bytes = (size_t)32 << 20;
        if (cudaMalloc(&c->lt_ws, c->lt_ws_bytes) != cudaSuccess) {
            cudaGetLastError();
            c->lt_ws = NULL;
            c->lt_ws_bytes = 0;
        }
        /* a build without code for this GPU fails here, not at the first op */
        int *probe = NULL, one = 0;
        err = cudaMalloc(&probe, sizeof(int));
        if (err == cudaSuccess) {
            CU_LAUNCH(1, 1, c->stream, k_probe)(probe);
            err = cudaGetLastError();
            if (err == cudaSuccess) err = cudaMemcpyAsync(&one, probe, sizeof one, cudaMemcpyDeviceToHost, c->stream);
            if (err == cudaSuccess) err = cudaStreamSynchronize(c->stream);
            cudaFree(probe);
        }
        if (err != cudaSuccess || one != 1)
            rc = ft_fail(e, FT_EDEVICE,
                         "device=cuda: a test kernel failed on %s (sm_%d): %s; this build may lack code for this GPU "
                         "(rebuild with CMAKE_CUDA_ARCHITECTURES=%d)",
                         prop.name, sm, cudaGetErrorString(err), sm);
    }
    if (rc) {
        cudaGetLastError();
        cu_destroy(b);
        return rc;
    }

    b->name = "cuda";
    b->device = FT_DEV_CUDA;
    b->arch = sm;
#ifdef FT_CUDA_TARGET_SM
    /* the T4 build (FT_CUDA_T4_PTX): compute_75 PTX only, JIT-compiled for this GPU. It must run the sm_75 paths
     * (fp16 by default, no bf16, the kernels chosen for a T4): a newer GPU is treated as a T4, and gets a T4's
     * 15 GiB unless FT_GPU_MEMORY_LIMIT says otherwise */
    if (b->arch > FT_CUDA_TARGET_SM) b->arch = c->sm = FT_CUDA_TARGET_SM;
    b->mem_limit = (size_t)15 << 30;
#endif
    const char *lim = getenv("FT_GPU_MEMORY_LIMIT");
    if (lim && *lim && ft_parse_bytes(lim, &b->mem_limit)) {
        cu_destroy(b);
        return ft_fail(e, FT_EINPUT, "FT_GPU_MEMORY_LIMIT='%s': expected a size such as 15GiB, 512MiB or a byte count "
                                     "(0: no limit)", lim);
    }
    char lims[48] = "";
    if (b->mem_limit) snprintf(lims, sizeof lims, ", limit %.2f GiB", (double)b->mem_limit / (1u << 30));
    char desc[640]; /* room for any value (gcc's -Wformat-truncation checks it), then cut to b->desc */
    if (b->arch != sm)
        snprintf(desc, sizeof desc, "cuda: %.80s (sm_%d running the sm_%d build, %.1f GiB%s)", prop.name, sm, b->arch,
                 (double)prop.totalGlobalMem / (1u << 30), lims);
    else
        snprintf(desc, sizeof desc, "cuda: %.100s (sm_%d, %.1f GiB%s)", prop.name, sm,
                 (double)prop.totalGlobalMem / (1u << 30), lims);
    size_t dn = strlen(desc) < sizeof b->desc ? strlen(desc) : sizeof b->desc - 1;
    memcpy(b->desc, desc, dn);
    b->desc[dn] = 0;
    b->alloc = cu_alloc_fn;
    b->free = cu_free_fn;
    b->upload = cu_upload;
    b->download = cu_download;
    b->copy = cu_copy;
    b->zero = cu_zero;
    b->sync = cu_sync;
    b->destroy = cu_destroy;
    b->memory = cu_memory;
    b->alloc_host = cu_alloc_host;
    b->free_host = cu_free_host;
    b->to_host_async = cu_to_host_async;
    b->from_host_async = cu_from_host_async;
    b->cast = cu_cast;
    b->gemm = cu_gemm;
    b->embedding = cu_embedding;
    b->rmsnorm = cu_rmsnorm;
    b->rope = cu_rope;
    b->attention = cu_attention;
    b->swiglu = cu_swiglu;
    b->add = cu_add;
    b->add_bias = cu_add_bias;
    b->token_logprobs = cu_token_logprobs;
    b->embedding_backward = cu_embedding_backward;
    b->rmsnorm_backward = cu_rmsnorm_backward;
    b->attention_backward = cu_attention_backward;
    b->swiglu_backward = cu_swiglu_backward;
    b->token_logprobs_backward = cu_token_logprobs_backward;
    b->adamw = cu_adamw;
    b->sumsq = cu_sumsq;
    b->sumsq_many = cu_sumsq_many;
    b->nf4_dequant = cu_nf4_dequant;
    b->scale = cu_scale;
    b->dropout = cu_dropout;
    b->row_norm = cu_row_norm;
    b->col_scale = cu_col_scale;
    b->col_dot = cu_col_dot;
    *out = b;
    return FT_OK;
}
