/* backend: the op table that the model, losses and optimizer are written against.
 *
 * One table per device. The CPU backend (backend_cpu*.c) is the fp32
 * reference: plain loops threaded with OpenMP. The CUDA backend
 * (backend_cuda.cu) is the fast one and is checked op by op against the CPU
 * twin. All tensor arguments live on the backend's device; ints are int32,
 * floats are fp32 unless an op says otherwise. "acc" arguments: 0 = overwrite
 * the output, 1 = add into it (gradients accumulate across micro-batches).
 *
 * Token layout: a batch is one flat run of T tokens. Sequences are packed
 * back to back (padding rows are simply samples whose tokens carry no loss);
 * attention is confined to a sample by doc_start: query token i may see key j
 * only when doc_start[i] <= j <= q_start + i, and, with a sliding window W > 0,
 * (q_start + i) - j < W (the window includes the token itself, as in HF). */
#ifndef FT_BACKEND_H
#define FT_BACKEND_H

#include "finetune/base/tensor.h"
#include "finetune/base/util.h"

typedef struct ft_attn_layout {
    int64_t q_start;          /* key index of query 0: 0 in training, cache length when generating */
    const int32_t *doc_start; /* [Tq] on device: first key index of each query's sample */
    int window;               /* sliding window in tokens, 0 = unlimited */
    float scale;              /* softmax scale, usually 1/sqrt(head_dim) */
    /* [Tq] on device, or both NULL: query i also does not see keys j with excl_start[i] <= j < excl_end[i]
     * (DPO's shared-prompt layout: a rejected token sees the prompt and itself, not the chosen reply). */
    const int32_t *excl_start, *excl_end;
} ft_attn_layout;

/* One AdamW step, PyTorch semantics (torch.optim.AdamW): the gradient is first multiplied by grad_scale
 * (global-norm clipping, loss-scale removal); then w *= 1 - lr*wd; m = lerp(m, g, 1-beta1);
 * v = beta2*v + (1-beta2)*g^2; w -= lr/(1-beta1^step) * m / (sqrt(v)/sqrt(1-beta2^step) + eps). */
typedef struct ft_adamw_args {
    float lr, beta1, beta2, eps, weight_decay, grad_scale;
    int step; /* 1-based */
} ft_adamw_args;

typedef struct ft_backend ft_backend;
struct ft_backend {
    const char *name;
    ft_device device;
    int arch;   /* CUDA compute capability as major*10+minor (75 = T4, 80 = A100, 90 = H100); 0 on the CPU */
    char desc[160]; /* what it runs on, for logs: "cpu (8 threads)", "cuda: NVIDIA H100 (sm_90, 79.1 GiB)" */
    void *impl;     /* backend private state */
    /* Device memory cap of our own, in bytes (0 = none): an allocation that would take what this backend holds
     * past it fails as out of memory does (alloc returns NULL). The CUDA backend counts its allocations and the
     * cuBLASLt workspace; it starts from FT_GPU_MEMORY_LIMIT (or 15 GiB in the T4 build, FT_CUDA_T4_PTX), and the
     * recipe key gpu_memory_limit sets it. The CPU backend ignores it. */
    size_t mem_limit;

    /* ---- memory ---- */
    void *(*alloc)(ft_backend *b, size_t bytes); /* NULL when out of memory */
    void (*free)(ft_backend *b, void *p);
    void (*upload)(ft_backend *b, void *dst_dev, const void *src_host, size_t bytes);
    void (*download)(ft_backend *b, void *dst_host, const void *src_dev, size_t bytes);
    void (*copy)(ft_backend *b, void *dst_dev, const void *src_dev, size_t bytes);
    void (*zero)(ft_backend *b, void *dst_dev, size_t bytes);
    void (*sync)(ft_backend *b);
    void (*destroy)(ft_backend *b);
    /* bytes in use now and at peak (device memory; for CPU, what this backend allocated) */
    void (*memory)(ft_backend *b, size_t *in_use, size_t *peak);
    /* Host staging memory for activation offload: pinned on CUDA (so copies overlap compute), plain
     * malloc on the CPU; NULL when out of memory. Not counted by memory(). */
    void *(*alloc_host)(ft_backend *b, size_t bytes);
    void (*free_host)(ft_backend *b, void *p);
    /* Copies between device memory and alloc_host memory, queued in order with the ops (they may return
     * before the copy is done; sync waits for it). Only for alloc_host memory. */
    void (*to_host_async)(ft_backend *b, void *dst_host, const void *src_dev, size_t bytes);
    void (*from_host_async)(ft_backend *b, void *dst_dev, const void *src_host, size_t bytes);

    /* ---- precision ---- */
    /* out = in converted elementwise between F32, BF16 and F16 (same element count; shapes may differ).
     * Rounds to nearest even like ft_f32_to_bf16 / ft_f32_to_f16 (overflow gives inf, NaN stays NaN);
     * the same dtype is a copy. The CPU backend casts too, though its other ops take F32 only. */
    void (*cast)(ft_backend *b, const ft_tensor *in, ft_tensor *out);

    /* ---- forward ops ---- */
    /* C = alpha * op(A) op(B) + beta * C, 2-D row-major; op(X) = X or X^T per ta/tb.
     * A is [M,K] (or [K,M] when ta), B is [K,N] (or [N,K] when tb), C is [M,N]. */
    void (*gemm)(ft_backend *b, const ft_tensor *A, int ta, const ft_tensor *B, int tb, ft_tensor *C,
                 float alpha, float beta);
    /* out[t,:] = table[ids[t],:] ; ids [T] int32, table [V,D], out [T,D] */
    void (*embedding)(ft_backend *b, const ft_tensor *ids, const ft_tensor *table, ft_tensor *out);
    /* out = x * rstd * w, rstd[t] = 1/sqrt(mean(x[t]^2) + eps); x,out [T,D], w [D]; rstd [T] may be NULL.
     * x, w and out share a dtype, or x and w are F32 and out BF16/F16: the fp32 result rounded once (to nearest
     * even, as cast would), the norm and the cast into the 16-bit compute dtype in one pass. */
    void (*rmsnorm)(ft_backend *b, const ft_tensor *x, const ft_tensor *w, float eps, ft_tensor *out,
                    ft_tensor *rstd);
    /* In-place rotary embedding, HF rotate-half layout, on x [T,H,Dh]:
     * angle = pos[t] * inv_freq[i] for i < Dh/2; pairs (i, i + Dh/2). inverse=1 rotates by -angle
     * (the backward pass). cos/sin are multiplied by mscale (1 unless the scaling type says so). */
    void (*rope)(ft_backend *b, ft_tensor *x, const ft_tensor *pos, const ft_tensor *inv_freq, float mscale,
                 int inverse);
    /* Causal attention with GQA (Hq a multiple of Hkv): q,out [Tq,Hq,Dh], k,v [Tk,Hkv,Dh].
     * lse [Tq,Hq] (may be NULL) receives log-sum-exp of the scaled scores, kept for backward. */
    void (*attention)(ft_backend *b, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v, ft_tensor *out,
                      ft_tensor *lse, const ft_attn_layout *L);
    /* out = silu(gate) * up, all [T,F] */
    void (*swiglu)(ft_backend *b, const ft_tensor *gate, const ft_tensor *up, ft_tensor *out);
    /* out = a + b (out may alias a or b); all of one dtype, or a and out F32 and b BF16/F16 (b widened exactly:
     * a 16-bit layer output added to the fp32 residual stream in one pass) */
    void (*add)(ft_backend *b, const ft_tensor *a, const ft_tensor *x, ft_tensor *out);
    /* out[t] += bias[j] broadcast over rows: x [T,N], bias [N] (Qwen2 q/k/v biases) */
    void (*add_bias)(ft_backend *b, ft_tensor *x, const ft_tensor *bias);
    /* Fused, chunked lm_head + log-softmax: logp[t] = log softmax(h[t] . W^T)[targets[t]], the full
     * [T,V] logits never exist. targets < 0 give logp 0. h [T,D], W [V,D], logp and lse [T] (lse may be NULL). */
    void (*token_logprobs)(ft_backend *b, const ft_tensor *h, const ft_tensor *W, const ft_tensor *targets,
                           ft_tensor *logp, ft_tensor *lse);

    /* ---- backward ops (gradients of the forward ops above) ---- */
    void (*embedding_backward)(ft_backend *b, const ft_tensor *ids, const ft_tensor *dout, ft_tensor *dtable,
                               int acc);
    /* dx (overwrite, or add when acc) and dw (always accumulated; may be NULL for a frozen weight) */
    void (*rmsnorm_backward)(ft_backend *b, const ft_tensor *dout, const ft_tensor *x, const ft_tensor *w,
                             const ft_tensor *rstd, ft_tensor *dx, ft_tensor *dw, int acc);
    /* dq [Tq,Hq,Dh], dk, dv [Tk,Hkv,Dh] overwritten; out and lse from the forward pass */
    void (*attention_backward)(ft_backend *b, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v,
                               const ft_tensor *out, const ft_tensor *lse, const ft_tensor *dout, ft_tensor *dq,
                               ft_tensor *dk, ft_tensor *dv, const ft_attn_layout *L);
    void (*swiglu_backward)(ft_backend *b, const ft_tensor *gate, const ft_tensor *up, const ft_tensor *dout,
                            ft_tensor *dgate, ft_tensor *dup);
    /* Gradient of sum_t dlogp[t] * logp[t]: dh [T,D] overwritten, dW [V,D] accumulated (may be NULL). */
    void (*token_logprobs_backward)(ft_backend *b, const ft_tensor *h, const ft_tensor *W, const ft_tensor *targets,
                                    const ft_tensor *lse, const ft_tensor *dlogp, ft_tensor *dh, ft_tensor *dW);

    /* ---- optimizer ---- */
    /* w, g, m, v: fp32 tensors of one shape */
    void (*adamw)(ft_backend *b, ft_tensor *w, const ft_tensor *g, ft_tensor *m, ft_tensor *v,
                  const ft_adamw_args *a);
    /* Sum of squares of an fp32 tensor, accumulated in double in a fixed order; returned to the host. */
    double (*sumsq)(ft_backend *b, const ft_tensor *x);
    /* The sum of squares of n fp32 tensors, exactly the double that sumsq gives for each, added in order i = 0..n-1
     * (total = 0; total += sumsq(x[i])), with one wait for the device instead of one per tensor: what the
     * optimizer's global gradient norm needs once a step. NaN when an argument is bad. */
    double (*sumsq_many)(ft_backend *b, int n, const ft_tensor *const *x);
    /* x *= alpha (fp32) */
    void (*scale)(ft_backend *b, ft_tensor *x, float alpha);

    /* ---- regularization ---- */
    /* Inverted dropout: out[i] = keep(i) ? x[i] * (1 / (1 - p)) : 0, the factor rounded to fp32 once and the
     * product in fp32 (rounded to out's dtype). The mask is a counter-based hash of (seed, i), so every backend
     * and every call with the same seed drops the same elements: h = splitmix64 finalizer of
     * (ft_dropout_key(seed) + i * 0x9E3779B97F4A7C15); keep(i) = (h >> 40) >= (uint64_t)(p * 2^24) (p in [0, 1)).
     * x and out have the same dtype and element count (F32 on the CPU, F32/BF16/F16 on CUDA); out may alias x. */
    void (*dropout)(ft_backend *b, const ft_tensor *x, ft_tensor *out, float p, uint64_t seed);

    /* ---- DoRA (weight-decomposed LoRA) ---- */
    /* out[i] = sqrt(sum_j x[i,j]^2) (accumulated in double): x [R,C] F32, out [R] F32. */
    void (*row_norm)(ft_backend *b, const ft_tensor *x, ft_tensor *out);
    /* out[t,j] = x[t,j] * (num[j] / den[j]), the factor in fp32: x, out [T,N] of one dtype (out may alias x;
     * F32 on the CPU, F32/BF16/F16 on CUDA), num, den [N] F32. */
    void (*col_scale)(ft_backend *b, const ft_tensor *x, const ft_tensor *num, const ft_tensor *den, ft_tensor *out);
    /* out[j] += (sum_t a[t,j] * x[t,j]) / den[j] (accumulated in double): a, x [T,N] of one dtype, den, out [N]
     * F32. */
    void (*col_dot)(ft_backend *b, const ft_tensor *a, const ft_tensor *x, const ft_tensor *den, ft_tensor *out);

    /* ---- quantized weights (QLoRA) ---- */
    /* NF4 dequantization as bitsandbytes: out[i] = NF4[q_i] * absmax[i / blocksize] where q_{2j} is the HIGH
     * nibble of packed[j] and q_{2j+1} the low one. packed U8 [(n+1)/2], absmax F32 [ceil(n/blocksize)],
     * out [n] (any shape; F32 on the CPU, F32/BF16/F16 on CUDA). */
    void (*nf4_dequant)(ft_backend *b, const ft_tensor *packed, const ft_tensor *absmax, int blocksize,
                        ft_tensor *out);
};

/* Create a backend by name: "cpu", "cuda", or "auto" (CUDA when a GPU is usable, else CPU). */
int ft_backend_create(const char *name, ft_backend **out, ft_error *e);
ft_backend *ft_backend_cpu_create(void);
/* Defined in backend_cuda.cu when built with CUDA, else a stub that reports FT_EDEVICE. */
int ft_backend_cuda_create(ft_backend **out, ft_error *e);
int ft_backend_cuda_available(void);

/* The per-seed key of the dropout hash (splitmix64 of seed), computed on the host by both backends. */
static inline uint64_t ft_dropout_key(uint64_t seed) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* The CUDA backend's token_logprobs tiling: vocabulary columns per chunk for T tokens (about 16M logits a
 * tile, at least 256, a multiple of 128, at most V); memplan sizes the workspace with it. */
static inline int64_t ft_logprob_chunk(int64_t T, int64_t V) {
    int64_t c = ((int64_t)16 << 20) / (T ? T : 1);
    if (c < 256) c = 256;
    c = (c + 127) / 128 * 128;
    return c < V ? c : V;
}

/* Host-side convenience: allocate a tensor on the backend (FT_ENOMEM on failure). */
int ft_backend_tensor(ft_backend *b, ft_dtype dt, int ndim, const int64_t *shape, ft_tensor *out, ft_error *e);

#endif
