/* cuda_internal: state and helpers shared by the CUDA backend's .cu files.
 *
 * Not a public header: the rest of the project sees only backend.h. Ops in the
 * table return void, so a CUDA op that meets a bad argument or a failed launch
 * records the message in the state (cu_report), prints it once to stderr, and
 * does nothing else; it never aborts. Values are loaded and stored through
 * cu_ld/cu_st so every kernel is written once for F32, BF16 and F16 storage
 * with fp32 arithmetic (dtype dispatch with CU_DISPATCH). */
#ifndef FT_CUDA_INTERNAL_CUH
#define FT_CUDA_INTERNAL_CUH

extern "C" {
#include "finetune/backend/backend.h"
}
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cu_alloc {
    void *p;
    size_t n;
} cu_alloc;

/* A cuBLASLt GEMM plan: the descriptors and the heuristic's algorithm for one problem, kept so that a GEMM of a
 * shape seen before costs one cublasLtMatmul call, not four creates, a heuristic query and four destroys. The key
 * is every field the heuristic was told: transposes, dims, leading dims, types and operand alignments. */
typedef struct cu_lt_key {
    int32_t opx, opy, m, n, k, ldx, ldy, ldd, xt, yt, dt;
    uint32_t al[4];
} cu_lt_key;
typedef struct cu_lt_plan {
    cu_lt_key key;
    uint64_t used; /* LRU stamp; 0 = empty slot */
    int status;    /* the heuristic's answer: CUBLAS_STATUS_SUCCESS, or the refusal (then the classic API runs) */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t lx, ly, ld;
    cublasLtMatmulAlgo_t algo;
} cu_lt_plan;
#define CU_LT_PLANS 96 /* a step's distinct GEMMs: ~10 per layer kind forward and backward, more with LoRA */

typedef struct cu_state {
    int device, sm; /* sm = major * 10 + minor */
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    void *lt_ws; /* cuBLASLt workspace (cudaMalloc'd outside our accounting, like cuBLAS' own) */
    size_t lt_ws_bytes;
    int lt_fallbacks; /* GEMMs cuBLASLt found no algorithm for, done by cublasGemmEx instead */
    cu_lt_plan lt_plans[CU_LT_PLANS];
    uint64_t lt_clock;              /* LRU counter */
    uint64_t lt_hits, lt_misses;    /* plan cache statistics (FT_CUDA_STATS=1 prints them at destroy) */
    int lt_nocache;                 /* FT_CUDA_LT_CACHE=0: build and drop a plan per GEMM (A/B timing only) */
    cu_alloc *allocs; /* live allocations (few: the model draws from arenas) */
    size_t nallocs, cap;
    size_t in_use, peak;
    int limit_refusals; /* allocations refused by the backend's mem_limit (the first few are said on stderr) */
    void *scratch; /* per-op workspace, grown on demand, never shrunk */
    size_t scratch_bytes;
    int nerrors;
    char last_error[1024];
} cu_state;

static inline cu_state *cu_of(ft_backend *b) { return (cu_state *)b->impl; }

/* Record and print an op failure (printf-style). */
void cu_report(ft_backend *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* After a launch: report a launch error for op; returns 0 when fine. */
int cu_check_launch(ft_backend *b, const char *op);
/* Workspace of at least bytes (256-byte aligned), NULL (reported) on OOM. */
void *cu_scratch(ft_backend *b, size_t bytes, const char *op);
/* Shape/dtype/device check of one tensor argument; reports and returns 0 when wrong.
 * want: CU_ANYF (F32, BF16 or F16), CU_F32, CU_I32. */
enum { CU_ANYF = 1, CU_F32 = 2, CU_I32 = 3 };
int cu_arg(ft_backend *b, const char *op, const char *name, const ft_tensor *t, int want_float, int ndim_min,
           int ndim_max);

/* attention (cuda_attention.cu) */
void cu_attention(ft_backend *b, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v, ft_tensor *out,
                  ft_tensor *lse, const ft_attn_layout *L);
void cu_attention_backward(ft_backend *b, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v,
                           const ft_tensor *out, const ft_tensor *lse, const ft_tensor *dout, ft_tensor *dq,
                           ft_tensor *dk, ft_tensor *dv, const ft_attn_layout *L);

/* attention on tensor cores (cuda_flash.cu), called by the two above: covers says whether it serves the case
 * (dout NULL for the forward pass); the launches assume cuda_attention.cu's argument checks passed. */
int cu_flash_covers(ft_backend *b, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v, const ft_tensor *o,
                    const ft_tensor *dout);
void cu_flash_attention(ft_backend *b, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v, ft_tensor *out,
                        ft_tensor *lse, const ft_attn_layout *L, int Tq, int Tk, int Hq, int Hkv, int Dh);
void cu_flash_attention_backward(ft_backend *b, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v,
                                 const ft_tensor *lse, const ft_tensor *dout, const float *Dsum, ft_tensor *dq,
                                 ft_tensor *dk, ft_tensor *dv, const ft_attn_layout *L, int Tq, int Tk, int Hq,
                                 int Hkv, int Dh);

/* optimizer (cuda_optim.cu) */
extern "C" void cu_adamw(ft_backend *b, ft_tensor *w, const ft_tensor *g, ft_tensor *m, ft_tensor *v,
                         const ft_adamw_args *a);
extern "C" double cu_sumsq(ft_backend *b, const ft_tensor *x);
extern "C" double cu_sumsq_many(ft_backend *b, int n, const ft_tensor *const *x);
extern "C" void cu_scale(ft_backend *b, ft_tensor *x, float alpha);

/* precision and host staging (cuda_cast.cu) */
extern "C" void cu_cast(ft_backend *b, const ft_tensor *in, ft_tensor *out);
extern "C" void *cu_alloc_host(ft_backend *b, size_t bytes);
extern "C" void cu_free_host(ft_backend *b, void *p);
extern "C" void cu_to_host_async(ft_backend *b, void *dst_host, const void *src_dev, size_t bytes);
extern "C" void cu_from_host_async(ft_backend *b, void *dst_dev, const void *src_host, size_t bytes);

/* quantized weights (cuda_nf4.cu) */
extern "C" void cu_nf4_dequant(ft_backend *b, const ft_tensor *packed, const ft_tensor *absmax, int blocksize,
                               ft_tensor *out);

/* LoRA dropout (cuda_dropout.cu) */
extern "C" void cu_dropout(ft_backend *b, const ft_tensor *x, ft_tensor *out, float p, uint64_t seed);

/* DoRA (cuda_dora.cu) */
extern "C" void cu_row_norm(ft_backend *b, const ft_tensor *x, ft_tensor *out);
extern "C" void cu_col_scale(ft_backend *b, const ft_tensor *x, const ft_tensor *num, const ft_tensor *den,
                             ft_tensor *out);
extern "C" void cu_col_dot(ft_backend *b, const ft_tensor *a, const ft_tensor *x, const ft_tensor *den,
                           ft_tensor *out);

/* ---- device helpers ---- */
static __device__ __forceinline__ float cu_ld(const float *p, size_t i) { return p[i]; }
static __device__ __forceinline__ float cu_ld(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }
static __device__ __forceinline__ float cu_ld(const __half *p, size_t i) { return __half2float(p[i]); }
static __device__ __forceinline__ void cu_st(float *p, size_t i, float v) { p[i] = v; }
static __device__ __forceinline__ void cu_st(__nv_bfloat16 *p, size_t i, float v) { p[i] = __float2bfloat16(v); }
static __device__ __forceinline__ void cu_st(__half *p, size_t i, float v) { p[i] = __float2half(v); }

#define CU_FULL 0xffffffffu
static __device__ __forceinline__ float cu_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(CU_FULL, v, o);
    return v;
}
static __device__ __forceinline__ float cu_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(CU_FULL, v, o));
    return v;
}

/* Launch a kernel on a stream: CU_LAUNCH(grid, block, stream, kernel)(args...) is
 * kernel<<<grid, block, 0, stream>>>(args...). Under the CPU emulator the tests build these files with
 * (tests/cuemu, which defines FT_CUEMU) it queues the kernel on the emulated stream instead. */
#ifdef FT_CUEMU
#define CU_LAUNCH(grid, block, stream, ...)                                                                   \
    (cuemu_launcher{#__VA_ARGS__, dim3(grid), dim3(block), stream} % __VA_ARGS__)
#else
#define CU_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<grid, block, 0, stream>>>
#endif

/* Run the statement list with T bound to the storage type of dtype dt (F32, BF16, F16). */
#define CU_DISPATCH(b, op, dt, ...)                                                       \
    do {                                                                                  \
        switch (dt) {                                                                     \
        case FT_F32: {                                                                    \
            typedef float T;                                                              \
            __VA_ARGS__;                                                                  \
        } break;                                                                          \
        case FT_BF16: {                                                                   \
            typedef __nv_bfloat16 T;                                                      \
            __VA_ARGS__;                                                                  \
        } break;                                                                          \
        case FT_F16: {                                                                    \
            typedef __half T;                                                             \
            __VA_ARGS__;                                                                  \
        } break;                                                                          \
        default: cu_report(b, "%s: dtype %s is not supported on cuda", op, ft_dtype_name(dt)); \
        }                                                                                 \
    } while (0)

#endif
