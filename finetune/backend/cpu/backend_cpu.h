/* backend_cpu: private declarations shared by backend_cpu.c (memory, gemm,
 * forward ops) and backend_cpu_grad.c (backward ops).
 *
 * The CPU backend is the fp32 reference. Every float tensor must be FT_F32,
 * every index tensor (ids, pos, targets, doc_start) FT_I32. A shape or dtype
 * that breaks an op's contract in backend.h is a bug in the calling code (the
 * loaders and batcher validate user data first), so it is reported on stderr
 * naming the op and argument, and the process stops (cpu_contract).
 * Results are deterministic: every reduction has a fixed order that does not
 * depend on the number of threads or their scheduling. */
#ifndef FT_BACKEND_CPU_H
#define FT_BACKEND_CPU_H

#include "finetune/backend/backend.h"

#include <stdint.h>

/* Dot product with 8 independent partial sums (vectorizes without -ffast-math; fixed order). */
static inline float cpu_dot(const float *a, const float *b, int64_t n) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    for (; i < n; i++) s[i & 7] += a[i] * b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

/* Report a broken op contract (a caller bug) and stop. */
void cpu_contract(const char *op, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* Checks used by every op. */
void cpu_need_f32(const char *op, const char *arg, const ft_tensor *t);
void cpu_need_i32(const char *op, const char *arg, const ft_tensor *t);
/* rows = product of all dims but the last, cols = last dim */
void cpu_rows_cols(const ft_tensor *t, int64_t *rows, int64_t *cols);

/* 64-byte aligned scratch memory (not counted by the backend's memory()); NULL on failure. */
void *cpu_scratch(size_t bytes);
void cpu_scratch_free(void *p);

/* C[M,N] = alpha * op(A) op(B) + beta * C on raw row-major pointers with leading dims.
 * op(A)[i,k] = ta ? A[k*lda + i] : A[i*lda + k]; op(B)[k,j] = tb ? B[j*ldb + k] : B[k*ldb + j].
 * beta == 0 never reads C. Threaded; bit-identical for any thread count. */
void cpu_gemm_raw(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, int ta, const float *B, int64_t ldb,
                  int tb, float *C, int64_t ldc, float alpha, float beta);

/* Keys visible to query i (absolute key index qpos = q_start + i): [*lo, *hi], empty when lo > hi. */
void cpu_attn_range(const ft_attn_layout *L, int64_t i, int64_t Tk, int64_t *lo, int64_t *hi);
/* Keys query i must not see inside that range (L->excl_start/excl_end): [*es, *ee), empty (0, 0) without them. */
void cpu_attn_excl(const ft_attn_layout *L, int64_t i, int64_t *es, int64_t *ee);

/* logits chunk width used by the fused lm_head ops for T tokens and vocab V */
int64_t cpu_vocab_chunk(int64_t T, int64_t V);

/* Forward-op helper reused by the backward pass: per-token log-sum-exp of h . W^T into lse [T]. */
void cpu_token_lse(const float *h, const float *W, int64_t T, int64_t D, int64_t V, float *lse);

/* backward ops (backend_cpu_grad.c) */
void cpu_embedding_backward(ft_backend *b, const ft_tensor *ids, const ft_tensor *dout, ft_tensor *dtable, int acc);
void cpu_rmsnorm_backward(ft_backend *b, const ft_tensor *dout, const ft_tensor *x, const ft_tensor *w,
                          const ft_tensor *rstd, ft_tensor *dx, ft_tensor *dw, int acc);
void cpu_attention_backward(ft_backend *b, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v,
                            const ft_tensor *out, const ft_tensor *lse, const ft_tensor *dout, ft_tensor *dq,
                            ft_tensor *dk, ft_tensor *dv, const ft_attn_layout *L);
void cpu_swiglu_backward(ft_backend *b, const ft_tensor *gate, const ft_tensor *up, const ft_tensor *dout,
                         ft_tensor *dgate, ft_tensor *dup);
void cpu_token_logprobs_backward(ft_backend *b, const ft_tensor *h, const ft_tensor *W, const ft_tensor *targets,
                                 const ft_tensor *lse, const ft_tensor *dlogp, ft_tensor *dh, ft_tensor *dW);
/* optimizer ops (backend_cpu_optim.c) */
void cpu_adamw(ft_backend *b, ft_tensor *w, const ft_tensor *g, ft_tensor *m, ft_tensor *v, const ft_adamw_args *a);
double cpu_sumsq(ft_backend *b, const ft_tensor *x);
double cpu_sumsq_many(ft_backend *b, int n, const ft_tensor *const *x);
void cpu_scale(ft_backend *b, ft_tensor *x, float alpha);
/* precision and host staging (backend_cpu_cast.c) */
void cpu_cast(ft_backend *b, const ft_tensor *in, ft_tensor *out);
void *cpu_alloc_host(ft_backend *b, size_t bytes);
void cpu_free_host(ft_backend *b, void *p);
void cpu_to_host_async(ft_backend *b, void *dst_host, const void *src_dev, size_t bytes);
void cpu_from_host_async(ft_backend *b, void *dst_dev, const void *src_host, size_t bytes);
/* quantized weights (backend_cpu_nf4.c) */
void cpu_nf4_dequant(ft_backend *b, const ft_tensor *packed, const ft_tensor *absmax, int blocksize, ft_tensor *out);
/* LoRA dropout (backend_cpu_dropout.c) */
void cpu_dropout(ft_backend *b, const ft_tensor *x, ft_tensor *out, float p, uint64_t seed);
/* DoRA (backend_cpu_dora.c) */
void cpu_row_norm(ft_backend *b, const ft_tensor *x, ft_tensor *out);
void cpu_col_scale(ft_backend *b, const ft_tensor *x, const ft_tensor *num, const ft_tensor *den, ft_tensor *out);
void cpu_col_dot(ft_backend *b, const ft_tensor *a, const ft_tensor *x, const ft_tensor *den, ft_tensor *out);

#endif
