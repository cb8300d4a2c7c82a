/* backend_cpu: the fp32 reference backend: memory, gemm and the forward ops.
 * Backward ops live in backend_cpu_grad.c; shared declarations in backend_cpu.h.
 *
 * Memory: 64-byte aligned blocks with a 64-byte header in front that records
 * the size, so free() can keep the in-use / peak counters exact.
 * gemm: packed panels + a 6x16 register-blocked micro-kernel (AVX2/FMA when the
 * CPU has it, portable vector code otherwise), threaded over output tiles. The
 * K loop order is fixed, so results do not depend on the thread count.
 * attention: one pass per (query, head), online softmax over key blocks; the
 * Tq x Tk score matrix never exists. token_logprobs: logits chunked over the
 * vocabulary (T x chunk floats at a time). */
#include "finetune/backend/cpu/backend_cpu.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CPU_X86 1
#endif

/* ------------------------------------------------------------------ checks */

void cpu_contract(const char *op, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "finetune: internal error: cpu backend %s: ", op);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

void cpu_need_f32(const char *op, const char *arg, const ft_tensor *t) {
    if (!t || !t->data) cpu_contract(op, "%s is NULL", arg);
    if (t->dtype != FT_F32)
        cpu_contract(op, "%s has dtype %s; the CPU backend computes in F32 only", arg, ft_dtype_name(t->dtype));
}

void cpu_need_i32(const char *op, const char *arg, const ft_tensor *t) {
    if (!t || !t->data) cpu_contract(op, "%s is NULL", arg);
    if (t->dtype != FT_I32) cpu_contract(op, "%s has dtype %s, expected I32", arg, ft_dtype_name(t->dtype));
}

void cpu_rows_cols(const ft_tensor *t, int64_t *rows, int64_t *cols) {
    if (t->ndim < 1) {
        *rows = 1;
        *cols = 1;
        return;
    }
    *cols = t->shape[t->ndim - 1];
    *rows = 1;
    for (int i = 0; i < t->ndim - 1; i++) *rows *= t->shape[i];
}

static void need_numel(const char *op, const char *arg, const ft_tensor *t, int64_t n) {
    if (ft_numel(t) != n) {
        char s[64];
        cpu_contract(op, "%s has shape %s (%lld elements), expected %lld elements", arg, ft_shape_str(t, s, sizeof s),
                     (long long)ft_numel(t), (long long)n);
    }
}

/* ------------------------------------------------------------------ memory */

#define HDR 64 /* header before each block: keeps the block 64-byte aligned */

typedef struct cpu_impl {
    size_t in_use, peak;
} cpu_impl;

void *cpu_scratch(size_t bytes) {
    size_t n = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, n ? n : 64);
}

void cpu_scratch_free(void *p) { free(p); }

static void *cpu_alloc(ft_backend *b, size_t bytes) {
    cpu_impl *im = b->impl;
    if (bytes > SIZE_MAX - 2 * HDR) return NULL;
    size_t n = HDR + ((bytes + 63) & ~(size_t)63);
    unsigned char *p = aligned_alloc(64, n);
    if (!p) return NULL;
    memcpy(p, &bytes, sizeof bytes);
    size_t in_use;
#pragma omp atomic capture
    in_use = im->in_use += bytes;
#pragma omp critical(ft_cpu_peak)
    if (in_use > im->peak) im->peak = in_use;
    return p + HDR;
}

static void cpu_free(ft_backend *b, void *p) {
    if (!p) return;
    cpu_impl *im = b->impl;
    unsigned char *base = (unsigned char *)p - HDR;
    size_t bytes;
    memcpy(&bytes, base, sizeof bytes);
#pragma omp atomic
    im->in_use -= bytes;
    free(base);
}

static void cpu_upload(ft_backend *b, void *dst, const void *src, size_t n) {
    if (n) memcpy(dst, src, n);
}
static void cpu_download(ft_backend *b, void *dst, const void *src, size_t n) {
    if (n) memcpy(dst, src, n);
}
static void cpu_copy(ft_backend *b, void *dst, const void *src, size_t n) {
    if (n && dst != src) memmove(dst, src, n);
}
static void cpu_zero(ft_backend *b, void *dst, size_t n) {
    if (n) memset(dst, 0, n);
}
static void cpu_sync(ft_backend *b) {}
static void cpu_destroy(ft_backend *b) {
    if (!b) return;
    free(b->impl);
    free(b);
}
static void cpu_memory(ft_backend *b, size_t *in_use, size_t *peak) {
    cpu_impl *im = b->impl;
    if (in_use) *in_use = im->in_use;
    if (peak) *peak = im->peak;
}

/* ------------------------------------------------------------------ gemm */

enum { MR = 6, NR = 16, KC = 256, MC = 144, NC = 2048, JG = 4 };

typedef float v8f __attribute__((vector_size(32)));

/* Portable micro-kernel: c[MR][NR] = sum_k a[k][MR] (x) b[k][NR]. */
static void kern_generic(int64_t kc, const float *a, const float *b, float *c) {
    v8f c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
    v8f c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
    for (int64_t k = 0; k < kc; k++) {
        v8f b0, b1;
        memcpy(&b0, b + k * NR, sizeof b0);
        memcpy(&b1, b + k * NR + 8, sizeof b1);
        const float *ak = a + k * MR;
        c00 += b0 * ak[0];
        c01 += b1 * ak[0];
        c10 += b0 * ak[1];
        c11 += b1 * ak[1];
        c20 += b0 * ak[2];
        c21 += b1 * ak[2];
        c30 += b0 * ak[3];
        c31 += b1 * ak[3];
        c40 += b0 * ak[4];
        c41 += b1 * ak[4];
        c50 += b0 * ak[5];
        c51 += b1 * ak[5];
    }
    v8f out[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    memcpy(c, out, sizeof out);
}

#ifdef CPU_X86
__attribute__((target("avx2,fma"))) static void kern_avx2(int64_t kc, const float *a, const float *b, float *c) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(b + k * NR), b1 = _mm256_load_ps(b + k * NR + 8);
        const float *ak = a + k * MR;
        __m256 x = _mm256_broadcast_ss(ak + 0);
        c00 = _mm256_fmadd_ps(x, b0, c00);
        c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_broadcast_ss(ak + 1);
        c10 = _mm256_fmadd_ps(x, b0, c10);
        c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_broadcast_ss(ak + 2);
        c20 = _mm256_fmadd_ps(x, b0, c20);
        c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_broadcast_ss(ak + 3);
        c30 = _mm256_fmadd_ps(x, b0, c30);
        c31 = _mm256_fmadd_ps(x, b1, c31);
        x = _mm256_broadcast_ss(ak + 4);
        c40 = _mm256_fmadd_ps(x, b0, c40);
        c41 = _mm256_fmadd_ps(x, b1, c41);
        x = _mm256_broadcast_ss(ak + 5);
        c50 = _mm256_fmadd_ps(x, b0, c50);
        c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    _mm256_storeu_ps(c + 0, c00);
    _mm256_storeu_ps(c + 8, c01);
    _mm256_storeu_ps(c + 16, c10);
    _mm256_storeu_ps(c + 24, c11);
    _mm256_storeu_ps(c + 32, c20);
    _mm256_storeu_ps(c + 40, c21);
    _mm256_storeu_ps(c + 48, c30);
    _mm256_storeu_ps(c + 56, c31);
    _mm256_storeu_ps(c + 64, c40);
    _mm256_storeu_ps(c + 72, c41);
    _mm256_storeu_ps(c + 80, c50);
    _mm256_storeu_ps(c + 88, c51);
}
#endif

typedef void (*kern_fn)(int64_t, const float *, const float *, float *);

static kern_fn pick_kernel(void) {
#ifdef CPU_X86
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    if (have) return kern_avx2;
#endif
    return kern_generic;
}

/* Pack op(A)[i0:i0+mc, p0:p0+kc] into MR-row panels: ap[panel][k][MR], zero padded. */
static void pack_a(const float *A, int64_t lda, int ta, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float *ap) {
    for (int64_t ir = 0; ir < mc; ir += MR) {
        float *dst = ap + ir * kc;
        int64_t mr = mc - ir < MR ? mc - ir : MR;
        if (!ta) {
            for (int64_t r = 0; r < MR; r++) {
                if (r < mr) {
                    const float *src = A + (i0 + ir + r) * lda + p0;
                    for (int64_t k = 0; k < kc; k++) dst[k * MR + r] = src[k];
                } else {
                    for (int64_t k = 0; k < kc; k++) dst[k * MR + r] = 0.0f;
                }
            }
        } else {
            for (int64_t k = 0; k < kc; k++) {
                const float *src = A + (p0 + k) * lda + i0 + ir;
                int64_t r = 0;
                for (; r < mr; r++) dst[k * MR + r] = src[r];
                for (; r < MR; r++) dst[k * MR + r] = 0.0f;
            }
        }
    }
}

/* Pack op(B)[p0:p0+kc, j0:j0+nc] into NR-column panels: bp[panel][k][NR], zero padded. */
static void pack_b_panel(const float *B, int64_t ldb, int tb, int64_t j0, int64_t nr, int64_t p0, int64_t kc,
                         float *dst) {
    if (!tb) {
        for (int64_t k = 0; k < kc; k++) {
            const float *src = B + (p0 + k) * ldb + j0;
            int64_t j = 0;
            for (; j < nr; j++) dst[k * NR + j] = src[j];
            for (; j < NR; j++) dst[k * NR + j] = 0.0f;
        }
    } else {
        for (int64_t j = 0; j < NR; j++) {
            if (j < nr) {
                const float *src = B + (j0 + j) * ldb + p0;
                for (int64_t k = 0; k < kc; k++) dst[k * NR + j] = src[k];
            } else {
                for (int64_t k = 0; k < kc; k++) dst[k * NR + j] = 0.0f;
            }
        }
    }
}

static void scale_c(int64_t M, int64_t N, float *C, int64_t ldc, float beta) {
#pragma omp parallel for schedule(static) if (M * N > 65536)
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

/* Few rows (decoding): packing B would cost more than the math, so stream B once.
 * tb: dot products over contiguous K; otherwise axpy over contiguous rows of B. */
static void gemm_small_m(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, int ta, const float *B,
                         int64_t ldb, int tb, float *C, int64_t ldc, float alpha, float beta) {
    float *a = cpu_scratch((size_t)(M * K) * sizeof(float));
    if (!a) cpu_contract("gemm", "out of host memory");
    for (int64_t i = 0; i < M; i++)
        for (int64_t k = 0; k < K; k++) a[i * K + k] = ta ? A[k * lda + i] : A[i * lda + k];
    enum { JB = 256 };
    int64_t nb = (N + JB - 1) / JB;
#pragma omp parallel for schedule(static) if (N * K > 32768)
    for (int64_t jb = 0; jb < nb; jb++) {
        int64_t j0 = jb * JB, j1 = j0 + JB < N ? j0 + JB : N;
        float acc[JB];
        for (int64_t i = 0; i < M; i++) {
            const float *ar = a + i * K;
            if (tb) {
                for (int64_t j = j0; j < j1; j++) acc[j - j0] = cpu_dot(ar, B + j * ldb, K);
            } else {
                for (int64_t j = j0; j < j1; j++) acc[j - j0] = 0.0f;
                for (int64_t k = 0; k < K; k++) {
                    const float *br = B + k * ldb;
                    float av = ar[k];
                    for (int64_t j = j0; j < j1; j++) acc[j - j0] += av * br[j];
                }
            }
            float *cr = C + i * ldc;
            for (int64_t j = j0; j < j1; j++)
                cr[j] = beta == 0.0f ? alpha * acc[j - j0] : alpha * acc[j - j0] + beta * cr[j];
        }
    }
    cpu_scratch_free(a);
}

void cpu_gemm_raw(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, int ta, const float *B, int64_t ldb,
                  int tb, float *C, int64_t ldc, float alpha, float beta) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(M, N, C, ldc, beta);
        return;
    }
    if (M <= 2) {
        gemm_small_m(M, N, K, A, lda, ta, B, ldb, tb, C, ldc, alpha, beta);
        return;
    }
    kern_fn kern = pick_kernel();
    int nth = omp_get_max_threads();
    int64_t ncmax = N < NC ? N : NC;
    int64_t nrp = (ncmax + NR - 1) / NR;
    int64_t kcmax = K < KC ? K : KC;
    float *bp = cpu_scratch((size_t)(nrp * NR * kcmax) * sizeof(float));
    float *apall = cpu_scratch((size_t)nth * MC * kcmax * sizeof(float));
    if (!bp || !apall) cpu_contract("gemm", "out of host memory for packing buffers (M=%lld N=%lld K=%lld)",
                                    (long long)M, (long long)N, (long long)K);
    for (int64_t j0 = 0; j0 < N; j0 += NC) {
        int64_t nc = N - j0 < NC ? N - j0 : NC;
        int64_t npan = (nc + NR - 1) / NR;
        for (int64_t p0 = 0; p0 < K; p0 += KC) {
            int64_t kc = K - p0 < KC ? K - p0 : KC;
            int first = p0 == 0;
#pragma omp parallel for schedule(static) if (npan > 1 && nc * kc > 16384)
            for (int64_t pj = 0; pj < npan; pj++) {
                int64_t jj = pj * NR, nr = nc - jj < NR ? nc - jj : NR;
                pack_b_panel(B, ldb, tb, j0 + jj, nr, p0, kc, bp + pj * NR * kc);
            }
            int64_t nic = (M + MC - 1) / MC, njg = (npan + JG - 1) / JG, ntiles = nic * njg;
#pragma omp parallel if (ntiles > 1 && M * nc * kc > 32768)
            {
                float *ap = apall + (size_t)omp_get_thread_num() * MC * kcmax;
                int64_t packed = -1;
                float tile[MR * NR];
#pragma omp for schedule(static)
                for (int64_t t = 0; t < ntiles; t++) {
                    int64_t ic = t / njg, jg = t % njg;
                    int64_t i0 = ic * MC, mc = M - i0 < MC ? M - i0 : MC;
                    if (packed != ic) {
                        pack_a(A, lda, ta, i0, mc, p0, kc, ap);
                        packed = ic;
                    }
                    int64_t pe = (jg + 1) * JG < npan ? (jg + 1) * JG : npan;
                    for (int64_t pj = jg * JG; pj < pe; pj++) {
                        int64_t jj = pj * NR, nr = nc - jj < NR ? nc - jj : NR;
                        for (int64_t ir = 0; ir < mc; ir += MR) {
                            int64_t mr = mc - ir < MR ? mc - ir : MR;
                            kern(kc, ap + ir * kc, bp + pj * NR * kc, tile);
                            for (int64_t r = 0; r < mr; r++) {
                                float *crow = C + (i0 + ir + r) * ldc + j0 + jj;
                                const float *trow = tile + r * NR;
                                if (!first)
                                    for (int64_t j = 0; j < nr; j++) crow[j] += alpha * trow[j];
                                else if (beta == 0.0f)
                                    for (int64_t j = 0; j < nr; j++) crow[j] = alpha * trow[j];
                                else
                                    for (int64_t j = 0; j < nr; j++) crow[j] = alpha * trow[j] + beta * crow[j];
                            }
                        }
                    }
                }
            }
        }
    }
    cpu_scratch_free(bp);
    cpu_scratch_free(apall);
}

static void cpu_gemm(ft_backend *b, const ft_tensor *A, int ta, const ft_tensor *B, int tb, ft_tensor *C, float alpha,
                     float beta) {
    cpu_need_f32("gemm", "A", A);
    cpu_need_f32("gemm", "B", B);
    cpu_need_f32("gemm", "C", C);
    int64_t ar, ac, br, bc, M, N;
    cpu_rows_cols(A, &ar, &ac);
    cpu_rows_cols(B, &br, &bc);
    cpu_rows_cols(C, &M, &N);
    int64_t am = ta ? ac : ar, ak = ta ? ar : ac, bk = tb ? bc : br, bn = tb ? br : bc;
    if (am != M || bn != N || ak != bk) {
        char s1[64], s2[64], s3[64];
        cpu_contract("gemm", "shapes do not match: A %s%s, B %s%s, C %s", ft_shape_str(A, s1, sizeof s1),
                     ta ? "^T" : "", ft_shape_str(B, s2, sizeof s2), tb ? "^T" : "", ft_shape_str(C, s3, sizeof s3));
    }
    cpu_gemm_raw(M, N, ak, A->data, ac, ta, B->data, bc, tb, C->data, N, alpha, beta);
}

/* ------------------------------------------------------------------ elementwise and row ops */

static void cpu_embedding(ft_backend *b, const ft_tensor *ids, const ft_tensor *table, ft_tensor *out) {
    cpu_need_i32("embedding", "ids", ids);
    cpu_need_f32("embedding", "table", table);
    cpu_need_f32("embedding", "out", out);
    int64_t V, D, T = ft_numel(ids);
    cpu_rows_cols(table, &V, &D);
    need_numel("embedding", "out", out, T * D);
    const int32_t *id = ids->data;
    const float *tab = table->data;
    float *o = out->data;
    for (int64_t t = 0; t < T; t++)
        if (id[t] < 0 || id[t] >= V)
            cpu_contract("embedding", "ids[%lld] = %d is outside the table's %lld rows", (long long)t, id[t],
                         (long long)V);
#pragma omp parallel for schedule(static) if (T * D > 65536)
    for (int64_t t = 0; t < T; t++) memcpy(o + t * D, tab + (int64_t)id[t] * D, (size_t)D * sizeof(float));
}

/* out may be BF16/F16 (the contract's norm-and-cast in one pass): each fp32 value rounded as cast rounds it */
static int cpu_half_out(const char *op, const ft_tensor *out) {
    if (out->dtype == FT_BF16 || out->dtype == FT_F16) return 1;
    cpu_need_f32(op, "out", out);
    return 0;
}
static inline void cpu_st_half(const ft_tensor *out, int64_t i, float v) {
    ((uint16_t *)out->data)[i] = out->dtype == FT_BF16 ? ft_f32_to_bf16(v) : ft_f32_to_f16(v);
}

static void cpu_rmsnorm(ft_backend *b, const ft_tensor *x, const ft_tensor *w, float eps, ft_tensor *out,
                        ft_tensor *rstd) {
    cpu_need_f32("rmsnorm", "x", x);
    cpu_need_f32("rmsnorm", "w", w);
    int half = cpu_half_out("rmsnorm", out);
    int64_t T, D;
    cpu_rows_cols(x, &T, &D);
    need_numel("rmsnorm", "w", w, D);
    need_numel("rmsnorm", "out", out, T * D);
    if (rstd) {
        cpu_need_f32("rmsnorm", "rstd", rstd);
        need_numel("rmsnorm", "rstd", rstd, T);
    }
    const float *xp = x->data, *wp = w->data;
    float *op = out->data, *rp = rstd ? rstd->data : NULL;
#pragma omp parallel for schedule(static) if (T * D > 16384)
    for (int64_t t = 0; t < T; t++) {
        const float *xr = xp + t * D;
        double ss = 0;
        for (int64_t j = 0; j < D; j++) ss += (double)xr[j] * xr[j];
        float r = (float)(1.0 / sqrt(ss / (double)D + (double)eps));
        if (half) {
            for (int64_t j = 0; j < D; j++) cpu_st_half(out, t * D + j, wp[j] * (xr[j] * r));
        } else {
            float *orow = op + t * D;
            for (int64_t j = 0; j < D; j++) orow[j] = wp[j] * (xr[j] * r);
        }
        if (rp) rp[t] = r;
    }
}

static void cpu_rope(ft_backend *b, ft_tensor *x, const ft_tensor *pos, const ft_tensor *inv_freq, float mscale,
                     int inverse) {
    cpu_need_f32("rope", "x", x);
    cpu_need_i32("rope", "pos", pos);
    cpu_need_f32("rope", "inv_freq", inv_freq);
    if (x->ndim != 3) cpu_contract("rope", "x must be [T,H,Dh], got %d dims", x->ndim);
    int64_t T = x->shape[0], H = x->shape[1], Dh = x->shape[2], half = Dh / 2;
    if (Dh % 2) cpu_contract("rope", "head dim %lld is odd", (long long)Dh);
    need_numel("rope", "pos", pos, T);
    need_numel("rope", "inv_freq", inv_freq, half);
    const int32_t *pp = pos->data;
    const float *fr = inv_freq->data;
    float *xp = x->data;
#pragma omp parallel if (T * H * Dh > 16384)
    {
        float *cs = malloc((size_t)Dh * sizeof(float));
        if (!cs) cpu_contract("rope", "out of host memory");
        float *sn = cs + half;
#pragma omp for schedule(static)
        for (int64_t t = 0; t < T; t++) {
            for (int64_t i = 0; i < half; i++) {
                /* HF computes the angle as an fp32 product, then cos/sin of it */
                float ang = (float)pp[t] * fr[i];
                cs[i] = (float)cos((double)ang) * mscale;
                sn[i] = (float)sin((double)ang) * mscale;
                if (inverse) sn[i] = -sn[i];
            }
            for (int64_t h = 0; h < H; h++) {
                float *r = xp + (t * H + h) * Dh;
                for (int64_t i = 0; i < half; i++) {
                    float x1 = r[i], x2 = r[i + half];
                    r[i] = x1 * cs[i] - x2 * sn[i];
                    r[i + half] = x2 * cs[i] + x1 * sn[i];
                }
            }
        }
        free(cs);
    }
}

static void cpu_swiglu(ft_backend *b, const ft_tensor *gate, const ft_tensor *up, ft_tensor *out) {
    cpu_need_f32("swiglu", "gate", gate);
    cpu_need_f32("swiglu", "up", up);
    cpu_need_f32("swiglu", "out", out);
    int64_t n = ft_numel(gate);
    need_numel("swiglu", "up", up, n);
    need_numel("swiglu", "out", out, n);
    const float *g = gate->data, *u = up->data;
    float *o = out->data;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void cpu_add(ft_backend *b, const ft_tensor *a, const ft_tensor *x, ft_tensor *out) {
    cpu_need_f32("add", "a", a);
    int half = x->dtype == FT_BF16 || x->dtype == FT_F16; /* a 16-bit b, widened exactly */
    if (!half) cpu_need_f32("add", "b", x);
    cpu_need_f32("add", "out", out);
    int64_t n = ft_numel(a);
    need_numel("add", "b", x, n);
    need_numel("add", "out", out, n);
    const float *ap = a->data, *xp = x->data;
    const uint16_t *hp = x->data;
    float *o = out->data;
    int bf = x->dtype == FT_BF16;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        o[i] = ap[i] + (!half ? xp[i] : bf ? ft_bf16_to_f32(hp[i]) : ft_f16_to_f32(hp[i]));
}

static void cpu_add_bias(ft_backend *b, ft_tensor *x, const ft_tensor *bias) {
    cpu_need_f32("add_bias", "x", x);
    cpu_need_f32("add_bias", "bias", bias);
    int64_t T, N;
    cpu_rows_cols(x, &T, &N);
    need_numel("add_bias", "bias", bias, N);
    float *xp = x->data;
    const float *bp = bias->data;
#pragma omp parallel for schedule(static) if (T * N > 65536)
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < N; j++) xp[t * N + j] += bp[j];
}

/* ------------------------------------------------------------------ attention */

void cpu_attn_range(const ft_attn_layout *L, int64_t i, int64_t Tk, int64_t *lo, int64_t *hi) {
    int64_t qpos = L->q_start + i;
    int64_t l = L->doc_start ? L->doc_start[i] : 0;
    if (L->window > 0 && qpos - L->window + 1 > l) l = qpos - L->window + 1;
    if (l < 0) l = 0;
    int64_t h = qpos < Tk - 1 ? qpos : Tk - 1;
    *lo = l;
    *hi = h;
}

void cpu_attn_excl(const ft_attn_layout *L, int64_t i, int64_t *es, int64_t *ee) {
    *es = L->excl_start ? L->excl_start[i] : 0;
    *ee = L->excl_end ? L->excl_end[i] : 0;
}

static void attn_check(const char *op, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v,
                       const ft_attn_layout *L) {
    cpu_need_f32(op, "q", q);
    cpu_need_f32(op, "k", k);
    cpu_need_f32(op, "v", v);
    if (!L) cpu_contract(op, "layout is NULL");
    if (!L->excl_start != !L->excl_end) cpu_contract(op, "excl_start and excl_end must both be given or both be NULL");
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3) cpu_contract(op, "q, k, v must be 3-D [T,H,Dh]");
    if (k->shape[0] != v->shape[0] || k->shape[1] != v->shape[1] || k->shape[2] != v->shape[2])
        cpu_contract(op, "k and v shapes differ");
    if (q->shape[2] != k->shape[2]) cpu_contract(op, "q and k head dims differ");
    if (k->shape[1] <= 0 || q->shape[1] % k->shape[1])
        cpu_contract(op, "query heads %lld are not a multiple of kv heads %lld", (long long)q->shape[1],
                     (long long)k->shape[1]);
    if (L->q_start < 0 || L->q_start + q->shape[0] > k->shape[0])
        cpu_contract(op, "q_start %lld + Tq %lld exceeds Tk %lld", (long long)L->q_start, (long long)q->shape[0],
                     (long long)k->shape[0]);
}

enum { KB = 64 }; /* keys per online-softmax block */

static void cpu_attention(ft_backend *b, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v, ft_tensor *out,
                          ft_tensor *lse, const ft_attn_layout *L) {
    attn_check("attention", q, k, v, L);
    cpu_need_f32("attention", "out", out);
    int64_t Tq = q->shape[0], Hq = q->shape[1], Dh = q->shape[2], Tk = k->shape[0], Hkv = k->shape[1];
    need_numel("attention", "out", out, Tq * Hq * Dh);
    if (lse) {
        cpu_need_f32("attention", "lse", lse);
        need_numel("attention", "lse", lse, Tq * Hq);
    }
    int64_t grp = Hq / Hkv;
    const float *qp = q->data, *kp = k->data, *vp = v->data;
    float *op = out->data, *lp = lse ? lse->data : NULL;
    float scale = L->scale;
#pragma omp parallel
    {
        float *acc = malloc((size_t)(Dh + KB) * sizeof(float));
        if (!acc) cpu_contract("attention", "out of host memory");
        float *s = acc + Dh;
#pragma omp for schedule(dynamic, 4)
        for (int64_t ih = 0; ih < Tq * Hq; ih++) {
            int64_t i = ih / Hq, h = ih % Hq, g = h / grp;
            int64_t lo, hi, es, ee;
            cpu_attn_range(L, i, Tk, &lo, &hi);
            cpu_attn_excl(L, i, &es, &ee);
            const float *qr = qp + ih * Dh;
            float *orow = op + ih * Dh;
            float m = -INFINITY;
            double l = 0.0;
            for (int64_t d = 0; d < Dh; d++) acc[d] = 0.0f;
            for (int64_t j0 = lo, nb; j0 <= hi; j0 += nb) {
                if (j0 >= es && j0 < ee) { /* skip the excluded keys */
                    nb = ee - j0;
                    continue;
                }
                int64_t end = j0 < es && es <= hi ? es : hi + 1; /* a block stops before an exclusion */
                nb = end - j0 < KB ? end - j0 : KB;
                float bm = -INFINITY;
                for (int64_t jj = 0; jj < nb; jj++) {
                    const float *kr = kp + ((j0 + jj) * Hkv + g) * Dh;
                    s[jj] = cpu_dot(qr, kr, Dh) * scale;
                    if (s[jj] > bm) bm = s[jj];
                }
                if (bm > m) { /* rescale what was accumulated under the old max */
                    float c = expf(m - bm);
                    l *= c;
                    for (int64_t d = 0; d < Dh; d++) acc[d] *= c;
                    m = bm;
                }
                for (int64_t jj = 0; jj < nb; jj++) {
                    float p = expf(s[jj] - m);
                    l += p;
                    const float *vr = vp + ((j0 + jj) * Hkv + g) * Dh;
                    for (int64_t d = 0; d < Dh; d++) acc[d] += p * vr[d];
                }
            }
            if (l > 0) {
                float inv = (float)(1.0 / l);
                for (int64_t d = 0; d < Dh; d++) orow[d] = acc[d] * inv;
                if (lp) lp[ih] = m + (float)log(l);
            } else { /* no visible key: cannot happen with a valid doc_start; keep it finite */
                for (int64_t d = 0; d < Dh; d++) orow[d] = 0.0f;
                if (lp) lp[ih] = INFINITY;
            }
        }
        free(acc);
    }
}

/* ------------------------------------------------------------------ fused lm_head + log-softmax */

int64_t cpu_vocab_chunk(int64_t T, int64_t V) {
    /* ~16 MB of logits at a time, and chunks wide enough to keep the gemm efficient */
    int64_t c = T > 0 ? ((int64_t)1 << 22) / T : 4096;
    if (c < 256) c = 256;
    if (c > 4096) c = 4096;
    return c < V ? c : V;
}

/* Shared by forward and the lse recompute: lse[t] over the full vocab; when
 * targets/logp are given also picks the target logit. */
static void token_pass(const float *h, const float *W, const int32_t *tg, int64_t T, int64_t D, int64_t V, float *lse,
                       float *logp) {
    int64_t VC = cpu_vocab_chunk(T, V);
    float *z = cpu_scratch((size_t)(T * VC) * sizeof(float));
    float *mx = cpu_scratch((size_t)T * sizeof(float));
    double *sum = cpu_scratch((size_t)T * sizeof(double));
    float *zt = cpu_scratch((size_t)T * sizeof(float));
    if (!z || !mx || !sum || !zt) cpu_contract("token_logprobs", "out of host memory (T=%lld)", (long long)T);
    for (int64_t t = 0; t < T; t++) {
        mx[t] = -INFINITY;
        sum[t] = 0.0;
        zt[t] = 0.0f;
    }
    for (int64_t v0 = 0; v0 < V; v0 += VC) {
        int64_t vc = V - v0 < VC ? V - v0 : VC;
        cpu_gemm_raw(T, vc, D, h, D, 0, W + v0 * D, D, 1, z, vc, 1.0f, 0.0f);
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < T; t++) {
            const float *zr = z + t * vc;
            float m = mx[t];
            for (int64_t j = 0; j < vc; j++)
                if (zr[j] > m) m = zr[j];
            double s = sum[t] * exp((double)mx[t] - (double)m);
            if (mx[t] == -INFINITY) s = 0.0;
            for (int64_t j = 0; j < vc; j++) s += (double)expf(zr[j] - m);
            mx[t] = m;
            sum[t] = s;
            if (tg && tg[t] >= v0 && tg[t] < v0 + vc) zt[t] = zr[tg[t] - v0];
        }
    }
    for (int64_t t = 0; t < T; t++) {
        float l = (float)((double)mx[t] + log(sum[t]));
        if (lse) lse[t] = l;
        if (logp) logp[t] = (tg && tg[t] >= 0) ? zt[t] - l : 0.0f;
    }
    cpu_scratch_free(z);
    cpu_scratch_free(mx);
    cpu_scratch_free(sum);
    cpu_scratch_free(zt);
}

void cpu_token_lse(const float *h, const float *W, int64_t T, int64_t D, int64_t V, float *lse) {
    token_pass(h, W, NULL, T, D, V, lse, NULL);
}

static void check_targets(const char *op, const int32_t *tg, int64_t T, int64_t V) {
    for (int64_t t = 0; t < T; t++)
        if (tg[t] >= V)
            cpu_contract(op, "targets[%lld] = %d is outside the vocabulary of %lld", (long long)t, tg[t],
                         (long long)V);
}

static void cpu_token_logprobs(ft_backend *b, const ft_tensor *h, const ft_tensor *W, const ft_tensor *targets,
                               ft_tensor *logp, ft_tensor *lse) {
    cpu_need_f32("token_logprobs", "h", h);
    cpu_need_f32("token_logprobs", "W", W);
    cpu_need_i32("token_logprobs", "targets", targets);
    cpu_need_f32("token_logprobs", "logp", logp);
    int64_t T, D, V, D2;
    cpu_rows_cols(h, &T, &D);
    cpu_rows_cols(W, &V, &D2);
    if (D != D2) cpu_contract("token_logprobs", "h has %lld columns but W has %lld", (long long)D, (long long)D2);
    need_numel("token_logprobs", "targets", targets, T);
    need_numel("token_logprobs", "logp", logp, T);
    if (lse) {
        cpu_need_f32("token_logprobs", "lse", lse);
        need_numel("token_logprobs", "lse", lse, T);
    }
    check_targets("token_logprobs", targets->data, T, V);
    token_pass(h->data, W->data, targets->data, T, D, V, lse ? lse->data : NULL, logp->data);
}

/* ------------------------------------------------------------------ create */

ft_backend *ft_backend_cpu_create(void) {
    ft_backend *b = calloc(1, sizeof *b);
    cpu_impl *im = calloc(1, sizeof *im);
    if (!b || !im) {
        free(b);
        free(im);
        return NULL;
    }
    b->name = "cpu";
    snprintf(b->desc, sizeof b->desc, "cpu (%d threads)", omp_get_max_threads());
    b->device = FT_DEV_CPU;
    b->impl = im;
    b->alloc = cpu_alloc;
    b->free = cpu_free;
    b->upload = cpu_upload;
    b->download = cpu_download;
    b->copy = cpu_copy;
    b->zero = cpu_zero;
    b->sync = cpu_sync;
    b->destroy = cpu_destroy;
    b->memory = cpu_memory;
    b->alloc_host = cpu_alloc_host;
    b->free_host = cpu_free_host;
    b->to_host_async = cpu_to_host_async;
    b->from_host_async = cpu_from_host_async;
    b->cast = cpu_cast;
    b->gemm = cpu_gemm;
    b->embedding = cpu_embedding;
    b->rmsnorm = cpu_rmsnorm;
    b->rope = cpu_rope;
    b->attention = cpu_attention;
    b->swiglu = cpu_swiglu;
    b->add = cpu_add;
    b->add_bias = cpu_add_bias;
    b->token_logprobs = cpu_token_logprobs;
    b->embedding_backward = cpu_embedding_backward;
    b->rmsnorm_backward = cpu_rmsnorm_backward;
    b->attention_backward = cpu_attention_backward;
    b->swiglu_backward = cpu_swiglu_backward;
    b->token_logprobs_backward = cpu_token_logprobs_backward;
    b->adamw = cpu_adamw;
    b->sumsq = cpu_sumsq;
    b->sumsq_many = cpu_sumsq_many;
    b->scale = cpu_scale;
    b->nf4_dequant = cpu_nf4_dequant;
    b->dropout = cpu_dropout;
    b->row_norm = cpu_row_norm;
    b->col_scale = cpu_col_scale;
    b->col_dot = cpu_col_dot;
    return b;
}
