/* cuda_flash: attention on tensor cores (WMMA 16x16x16, fp32 accumulation), forward and backward.
 *
 * Which kernel runs (cu_flash_covers): this one for F16 storage on sm_75+ and BF16 on sm_80+, head dims up
 * to 128 that are a multiple of 8 (64, 80, 96, 120, 128, ...; padded with zeros to D = 64, 80, 96 or 128 in
 * shared memory), q/k/v/out/dout 16-byte aligned. Everything else (F32, the CPU-matching reference path; BF16
 * on sm_75; odd head dims) runs the scalar kernels of cuda_attention.cu, as does every case when the
 * environment says FT_CUDA_ATTN=scalar (for benchmarks and tests that compare the two).
 *
 * Flash-attention style: no Tq x Tk matrix, the log-sum-exp saved by the forward pass, P recomputed tile by
 * tile in the backward pass. A block holds FL_ROWS = 64 rows (queries for the forward and dq kernels, keys
 * for dk/dv), 16 per warp, as 16-bit WMMA fragments in registers; tiles of FL_TILE = 32 keys (queries) are
 * staged in shared memory. Per tile a warp computes S = Q K^T into fp32 fragments, stores them to its own
 * shared scratch, applies the scale and the masks elementwise in fp32 (two lanes per row), rounds P (or
 * dS) to the storage type into the same scratch and multiplies it by the next operand from there. The
 * element-to-lane mapping of WMMA fragments is unspecified, so every rowwise step goes through the scratch.
 *  - forward: two passes over the key tiles, the rows' max first, then P = exp(s - max) with no rescaling
 *    (so P's rounding does not depend on the tiling); lane pair 2r, 2r+1 keeps row r's max, sum and its half
 *    of the output row in registers; out = O / sum, lse = max + log(sum) (no key seen: out 0, lse +inf).
 *  - backward: D = rowsum(dout * out) (cuda_attention.cu), then dq per query block (loop over key tiles),
 *    and dk, dv per key block (loop over query tiles and over the query heads of the kv head, GQA without
 *    expanding K/V): no atomics, deterministic.
 * Visibility (backend.h): key j is seen by query i when doc_start[i] <= j <= q_start + i, with a window
 * W > 0 also q_start + i - j < W, and with exclusions not excl_start[i] <= j < excl_end[i]. Tiles outside a
 * warp's (block's) visible range are skipped. BF16 fragments exist only on sm_80+, so the BF16 kernels
 * compile to an empty body for sm_75, never launched there nor where only compute_75 code was built. */
#include "finetune/backend/cuda/cuda_internal.cuh"

#include <limits.h>
#include <math.h>
#include <mma.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

using namespace nvcuda;

#define FL_WARPS 4
#define FL_ROWS (FL_WARPS * 16) /* queries (forward, dq) or keys (dk/dv) per block */
#define FL_TILE 32              /* keys (forward, dq) or queries (dk/dv) per step */
#define FL_SLD (FL_TILE + 4)    /* fp32 scratch row stride (a multiple of 4 floats, as WMMA wants) */
#define FL_PLD (2 * FL_SLD)     /* the same rows read as 16-bit values */

/* the bf16 kernels only where bf16 WMMA exists */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define FL_SKIP(T) std::is_same<T, __nv_bfloat16>::value
#else
#define FL_SKIP(T) false
#endif

/* 16 bytes from src to dst (both 16-byte aligned), or zeros when src is NULL: one 128-bit access on the GPU */
static __device__ __forceinline__ void fl_copy16(void *dst, const void *src) {
#ifdef FT_CUEMU
    if (src)
        memcpy(dst, src, 16);
    else
        memset(dst, 0, 16);
#else
    *(uint4 *)dst = src ? *(const uint4 *)src : make_uint4(0u, 0u, 0u, 0u);
#endif
}

/* the keys query i sees: lo <= j <= hi and not es <= j < ee (lo > hi when none, also for i >= Tq) */
struct fl_row {
    int lo, hi, es, ee;
};
static __device__ __forceinline__ fl_row fl_row_of(int i, int Tq, int Tk, int q_start, int window,
                                                   const int32_t *doc_start, const int32_t *es, const int32_t *ee) {
    fl_row r = {INT_MAX, -1, 0, 0};
    if (i < 0 || i >= Tq) return r;
    int qi = q_start + i, l = doc_start ? doc_start[i] : 0;
    if (l < 0) l = 0;
    if (window > 0 && qi - window + 1 > l) l = qi - window + 1;
    r.lo = l;
    r.hi = qi < Tk - 1 ? qi : Tk - 1;
    if (es) {
        r.es = es[i];
        r.ee = ee[i];
    }
    return r;
}
static __device__ __forceinline__ bool fl_sees(const fl_row &r, int j) {
    return j >= r.lo && j <= r.hi && !(j >= r.es && j < r.ee);
}

/* rows row0 .. row0 + nrows - 1 of a [rows, H, Dh] tensor (head at column offset coff) into dst, 8 values at a
 * time; rows >= rend and columns >= Dh are zeros (so masked keys hold no NaN garbage) */
template <typename T, int D>
static __device__ __forceinline__ void fl_stage(T (*dst)[D + 8], int nrows, const T *src, int row0, int rend,
                                                size_t rstride, size_t coff, int Dh) {
    const int C = D / 8;
    for (int idx = threadIdx.x; idx < nrows * C; idx += blockDim.x) {
        int r = idx / C, d = (idx % C) * 8, g = row0 + r;
        fl_copy16(&dst[r][d], g < rend && d < Dh ? src + (size_t)g * rstride + coff + d : NULL);
    }
}

static __device__ __forceinline__ int fl_warp_min(int v) {
    for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(CU_FULL, v, o));
    return v;
}
static __device__ __forceinline__ int fl_warp_max(int v) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(CU_FULL, v, o));
    return v;
}

typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> fl_acc;

/* Write the warp's 16 x D fp32 accumulators times mul to rows row0 + r (r < 16, rows < nrows) of a
 * [rows, H, Dh] tensor, through the warp's scratch S (two fragments at a time). */
template <typename T, int D>
static __device__ __forceinline__ void fl_write(fl_acc (&acc)[D / 16], float (*S)[FL_SLD], T *dst, int row0,
                                                int nrows, size_t rstride, size_t coff, int Dh, float mul) {
    int lane = threadIdx.x & 31, r = lane >> 1, half = lane & 1, row = row0 + r;
#pragma unroll
    for (int c0 = 0; c0 < D; c0 += 32) {
        const int nf = D - c0 >= 32 ? 2 : 1, cw = nf * 8;
#pragma unroll
        for (int n = 0; n < nf; n++) wmma::store_matrix_sync(&S[0][n * 16], acc[c0 / 16 + n], FL_SLD, wmma::mem_row_major);
        __syncwarp();
        if (row < nrows)
            for (int t = 0; t < cw; t++) {
                int c = c0 + half * cw + t;
                if (c < Dh) cu_st(dst, (size_t)row * rstride + coff + c, S[r][half * cw + t] * mul);
            }
        __syncwarp();
    }
}

/* ---------------------------------------------------------------- forward */

template <typename T, int D>
static __device__ __forceinline__ void fl_fwd(const T *q, const T *k, const T *v, T *out, float *lse,
                                              const int32_t *doc_start, const int32_t *es, const int32_t *ee, int Tq,
                                              int Tk, int Hq, int Hkv, int Dh, int q_start, int window, float scale) {
    typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
    typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fbc;
    typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fbr;
    __shared__ __align__(32) T sKV[2 * FL_TILE][D + 8]; /* Q of the block first, then K rows 0-31, V 32-63 */
    __shared__ __align__(32) float sS[FL_WARPS][16][FL_SLD];
    __shared__ int sLo[FL_WARPS], sHi[FL_WARPS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, r = lane >> 1, half = lane & 1;
    int h = blockIdx.y, hk = h / (Hq / Hkv), i0 = blockIdx.x * FL_ROWS, i = i0 + warp * 16 + r;
    fl_row R = fl_row_of(i, Tq, Tk, q_start, window, doc_start, es, ee);
    int wlo = fl_warp_min(R.lo <= R.hi ? R.lo : INT_MAX), whi = fl_warp_max(R.lo <= R.hi ? R.hi : -1);
    if (lane == 0) {
        sLo[warp] = wlo;
        sHi[warp] = whi;
    }
    fl_stage<T, D>(sKV, FL_ROWS, q, i0, Tq, (size_t)Hq * Dh, (size_t)h * Dh, Dh);
    __syncthreads();
    fa qf[D / 16];
#pragma unroll
    for (int f = 0; f < D / 16; f++) wmma::load_matrix_sync(qf[f], &sKV[warp * 16][f * 16], D + 8);
    __syncthreads(); /* Q read: sKV is free for K and V */
    int blo = INT_MAX, bhi = -1;
    for (int w = 0; w < FL_WARPS; w++) {
        blo = min(blo, sLo[w]);
        bhi = max(bhi, sHi[w]);
    }
    float (*S)[FL_SLD] = sS[warp];
    T *P = (T *)&sS[warp][0][0];
    float m = -INFINITY, l = 0.f, o[D / 2];
#pragma unroll
    for (int c = 0; c < D / 2; c++) o[c] = 0.f;
    /* Two passes over the keys: the first finds each row's max m, the second sums P = exp(s - m) with that m
     * fixed, so P (and its rounding to 16 bits) depends on s alone, not on the tiling: a sample alone or packed
     * at any offset gives the same bits (up to fp32 summation order, as the scalar kernels), and the largest
     * P is exactly 1. It costs one more S = Q K^T (the forward does 1.5 times the FLOPs of one pass). */
    for (int pass = 0; pass < 2; pass++)
        for (int j0 = blo; j0 <= bhi; j0 += FL_TILE) {
            fl_stage<T, D>(sKV, FL_TILE, k, j0, bhi + 1, (size_t)Hkv * Dh, (size_t)hk * Dh, Dh);
            if (pass) fl_stage<T, D>(sKV + FL_TILE, FL_TILE, v, j0, bhi + 1, (size_t)Hkv * Dh, (size_t)hk * Dh, Dh);
            __syncthreads();
            float sP[16]; /* this lane's scaled, masked scores of the tile */
#pragma unroll
            for (int t = 0; t < 16; t++) sP[t] = -INFINITY;
            if (j0 <= whi && j0 + FL_TILE - 1 >= wlo) { /* warp-uniform */
                fl_acc sf;
#pragma unroll
                for (int n = 0; n < 2; n++) {
                    wmma::fill_fragment(sf, 0.f);
#pragma unroll
                    for (int f = 0; f < D / 16; f++) {
                        fbc kf;
                        wmma::load_matrix_sync(kf, &sKV[n * 16][f * 16], D + 8);
                        wmma::mma_sync(sf, qf[f], kf, sf);
                    }
                    wmma::store_matrix_sync(&S[0][n * 16], sf, FL_SLD, wmma::mem_row_major);
                }
                __syncwarp();
#pragma unroll
                for (int t = 0; t < 16; t++) {
                    int c = half * 16 + t;
                    sP[t] = fl_sees(R, j0 + c) ? S[r][c] * scale : -INFINITY;
                    if (!pass) m = fmaxf(m, sP[t]);
                }
                __syncwarp(); /* the row is read: P may overwrite it */
            }
            if (pass && j0 <= whi && j0 + FL_TILE - 1 >= wlo) {
                float sum = 0.f;
#pragma unroll
                for (int t = 0; t < 16; t++) {
                    float p = sP[t] == -INFINITY ? 0.f : expf(sP[t] - m);
                    int at = r * FL_PLD + half * 16 + t;
                    cu_st(P, at, p);
                    sum += p;
                }
                l += sum;
                __syncwarp();
                fa pf[2];
                wmma::load_matrix_sync(pf[0], P, FL_PLD);
                wmma::load_matrix_sync(pf[1], P + 16, FL_PLD);
#pragma unroll
                for (int c0 = 0; c0 < D; c0 += 32) {
                    const int nf = D - c0 >= 32 ? 2 : 1, cw = nf * 8;
#pragma unroll
                    for (int n = 0; n < nf; n++) {
                        fl_acc of;
                        wmma::fill_fragment(of, 0.f);
#pragma unroll
                        for (int ks = 0; ks < 2; ks++) {
                            fbr vf;
                            wmma::load_matrix_sync(vf, &sKV[FL_TILE + ks * 16][c0 + n * 16], D + 8);
                            wmma::mma_sync(of, pf[ks], vf, of);
                        }
                        wmma::store_matrix_sync(&S[0][n * 16], of, FL_SLD, wmma::mem_row_major);
                    }
                    __syncwarp();
#pragma unroll
                    for (int t = 0; t < cw; t++) o[c0 / 2 + t] += S[r][half * cw + t];
                    __syncwarp();
                }
            }
            __syncthreads(); /* the tile is consumed */
            if (j0 + FL_TILE > bhi && !pass) m = fmaxf(m, __shfl_xor_sync(CU_FULL, m, 1)); /* the row's max */
        }
    l += __shfl_xor_sync(CU_FULL, l, 1); /* the row's sum (both lanes of the pair) */
    if (i >= Tq) return;
    float inv = l > 0.f ? 1.f / l : 0.f;
    size_t off = ((size_t)i * Hq + h) * Dh;
#pragma unroll
    for (int c0 = 0; c0 < D; c0 += 32) {
        const int cw = D - c0 >= 32 ? 16 : 8;
#pragma unroll
        for (int t = 0; t < cw; t++) {
            int c = c0 + half * cw + t;
            if (c < Dh) cu_st(out, off + c, o[c0 / 2 + t] * inv);
        }
    }
    if (lse && !half) lse[(size_t)i * Hq + h] = l > 0.f ? m + logf(l) : INFINITY;
}

template <typename T, int D>
__global__ void __launch_bounds__(FL_WARPS * 32)
    k_flash_fwd(const T *q, const T *k, const T *v, T *out, float *lse, const int32_t *doc_start, const int32_t *es,
                const int32_t *ee, int Tq, int Tk, int Hq, int Hkv, int Dh, int q_start, int window, float scale) {
    if constexpr (!FL_SKIP(T))
        fl_fwd<T, D>(q, k, v, out, lse, doc_start, es, ee, Tq, Tk, Hq, Hkv, Dh, q_start, window, scale);
}

/* ---------------------------------------------------------------- backward: dq */

/* dq_i = scale * sum_j P_ij (dout_i . v_j - D_i) k_j for the block's 64 queries */
template <typename T, int D>
static __device__ __forceinline__ void fl_dq(const T *q, const T *k, const T *v, const float *lse, const T *dout,
                                             const float *Dsum, T *dq, const int32_t *doc_start, const int32_t *es,
                                             const int32_t *ee, int Tq, int Tk, int Hq, int Hkv, int Dh, int q_start,
                                             int window, float scale) {
    typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
    typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fbc;
    typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fbr;
    __shared__ __align__(32) T sKV[2 * FL_TILE][D + 8];
    __shared__ __align__(32) float sS[FL_WARPS][2][16][FL_SLD]; /* S, then dS; dP */
    __shared__ int sLo[FL_WARPS], sHi[FL_WARPS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, r = lane >> 1, half = lane & 1;
    int h = blockIdx.y, hk = h / (Hq / Hkv), i0 = blockIdx.x * FL_ROWS, i = i0 + warp * 16 + r;
    fl_row R = fl_row_of(i, Tq, Tk, q_start, window, doc_start, es, ee);
    int wlo = fl_warp_min(R.lo <= R.hi ? R.lo : INT_MAX), whi = fl_warp_max(R.lo <= R.hi ? R.hi : -1);
    if (lane == 0) {
        sLo[warp] = wlo;
        sHi[warp] = whi;
    }
    float Li = i < Tq ? lse[(size_t)i * Hq + h] : 0.f, Di = i < Tq ? Dsum[(size_t)i * Hq + h] : 0.f;
    fa qf[D / 16], of[D / 16];
    fl_stage<T, D>(sKV, FL_ROWS, q, i0, Tq, (size_t)Hq * Dh, (size_t)h * Dh, Dh);
    __syncthreads();
#pragma unroll
    for (int f = 0; f < D / 16; f++) wmma::load_matrix_sync(qf[f], &sKV[warp * 16][f * 16], D + 8);
    __syncthreads();
    fl_stage<T, D>(sKV, FL_ROWS, dout, i0, Tq, (size_t)Hq * Dh, (size_t)h * Dh, Dh);
    __syncthreads();
#pragma unroll
    for (int f = 0; f < D / 16; f++) wmma::load_matrix_sync(of[f], &sKV[warp * 16][f * 16], D + 8);
    __syncthreads();
    int blo = INT_MAX, bhi = -1;
    for (int w = 0; w < FL_WARPS; w++) {
        blo = min(blo, sLo[w]);
        bhi = max(bhi, sHi[w]);
    }
    float (*S)[FL_SLD] = sS[warp][0], (*dP)[FL_SLD] = sS[warp][1];
    T *dS = (T *)&sS[warp][0][0][0];
    fl_acc acc[D / 16];
#pragma unroll
    for (int f = 0; f < D / 16; f++) wmma::fill_fragment(acc[f], 0.f);
    for (int j0 = blo; j0 <= bhi; j0 += FL_TILE) {
        fl_stage<T, D>(sKV, FL_TILE, k, j0, bhi + 1, (size_t)Hkv * Dh, (size_t)hk * Dh, Dh);
        fl_stage<T, D>(sKV + FL_TILE, FL_TILE, v, j0, bhi + 1, (size_t)Hkv * Dh, (size_t)hk * Dh, Dh);
        __syncthreads();
        if (j0 <= whi && j0 + FL_TILE - 1 >= wlo) {
#pragma unroll
            for (int n = 0; n < 2; n++) {
                fl_acc sf, pf;
                wmma::fill_fragment(sf, 0.f);
                wmma::fill_fragment(pf, 0.f);
#pragma unroll
                for (int f = 0; f < D / 16; f++) {
                    fbc bf;
                    wmma::load_matrix_sync(bf, &sKV[n * 16][f * 16], D + 8);
                    wmma::mma_sync(sf, qf[f], bf, sf);
                    wmma::load_matrix_sync(bf, &sKV[FL_TILE + n * 16][f * 16], D + 8);
                    wmma::mma_sync(pf, of[f], bf, pf);
                }
                wmma::store_matrix_sync(&S[0][n * 16], sf, FL_SLD, wmma::mem_row_major);
                wmma::store_matrix_sync(&dP[0][n * 16], pf, FL_SLD, wmma::mem_row_major);
            }
            __syncwarp();
            float ds[16];
#pragma unroll
            for (int t = 0; t < 16; t++) {
                int c = half * 16 + t;
                float p = fl_sees(R, j0 + c) ? expf(S[r][c] * scale - Li) : 0.f;
                ds[t] = p * (dP[r][c] - Di);
            }
            __syncwarp();
#pragma unroll
            for (int t = 0; t < 16; t++) cu_st(dS, r * FL_PLD + half * 16 + t, ds[t]);
            __syncwarp();
            fa df[2];
            wmma::load_matrix_sync(df[0], dS, FL_PLD);
            wmma::load_matrix_sync(df[1], dS + 16, FL_PLD);
#pragma unroll
            for (int f = 0; f < D / 16; f++)
#pragma unroll
                for (int ks = 0; ks < 2; ks++) {
                    fbr kf;
                    wmma::load_matrix_sync(kf, &sKV[ks * 16][f * 16], D + 8);
                    wmma::mma_sync(acc[f], df[ks], kf, acc[f]);
                }
        }
        __syncthreads();
    }
    fl_write<T, D>(acc, S, dq, i0 + warp * 16, Tq, (size_t)Hq * Dh, (size_t)h * Dh, Dh, scale);
}

template <typename T, int D>
__global__ void __launch_bounds__(FL_WARPS * 32)
    k_flash_dq(const T *q, const T *k, const T *v, const float *lse, const T *dout, const float *Dsum, T *dq,
               const int32_t *doc_start, const int32_t *es, const int32_t *ee, int Tq, int Tk, int Hq, int Hkv, int Dh,
               int q_start, int window, float scale) {
    if constexpr (!FL_SKIP(T))
        fl_dq<T, D>(q, k, v, lse, dout, Dsum, dq, doc_start, es, ee, Tq, Tk, Hq, Hkv, Dh, q_start, window, scale);
}

/* ---------------------------------------------------------------- backward: dk, dv */

/* for the block's 64 keys j: dv_j = sum_{h in group, i} P_ij dout_i; dk_j = scale * sum P_ij (dout_i . v_j - D_i) q_i */
template <typename T, int D>
static __device__ __forceinline__ void fl_dkdv(const T *q, const T *k, const T *v, const float *lse, const T *dout,
                                               const float *Dsum, T *dk, T *dv, const int32_t *doc_start,
                                               const int32_t *es, const int32_t *ee, int Tq, int Tk, int Hq, int Hkv,
                                               int Dh, int q_start, int window, float scale) {
    typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
    typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fbc;
    typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fbr;
    __shared__ __align__(32) T sQO[2 * FL_TILE][D + 8]; /* K, V of the block first; then Q rows 0-31, dout 32-63 */
    __shared__ __align__(32) float sS[FL_WARPS][2][16][FL_SLD]; /* S^T, then P^T; dP^T, then dS^T */
    __shared__ float sL[FL_TILE], sD[FL_TILE];
    __shared__ fl_row sR[FL_TILE];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, r = lane >> 1, half = lane & 1;
    int hk = blockIdx.y, group = Hq / Hkv, jb0 = blockIdx.x * FL_ROWS, jb1 = min(jb0 + FL_ROWS, Tk) - 1;
    int jw0 = jb0 + warp * 16, jw1 = min(jw0 + 15, Tk - 1), j = jw0 + r; /* jw1 < jw0: a warp past the end */
    fa kf[D / 16], vf[D / 16];
    fl_stage<T, D>(sQO, FL_ROWS, k, jb0, Tk, (size_t)Hkv * Dh, (size_t)hk * Dh, Dh);
    __syncthreads();
#pragma unroll
    for (int f = 0; f < D / 16; f++) wmma::load_matrix_sync(kf[f], &sQO[warp * 16][f * 16], D + 8);
    __syncthreads();
    fl_stage<T, D>(sQO, FL_ROWS, v, jb0, Tk, (size_t)Hkv * Dh, (size_t)hk * Dh, Dh);
    __syncthreads();
#pragma unroll
    for (int f = 0; f < D / 16; f++) wmma::load_matrix_sync(vf[f], &sQO[warp * 16][f * 16], D + 8);
    fl_acc ak[D / 16], av[D / 16];
#pragma unroll
    for (int f = 0; f < D / 16; f++) {
        wmma::fill_fragment(ak[f], 0.f);
        wmma::fill_fragment(av[f], 0.f);
    }
    float (*S)[FL_SLD] = sS[warp][0], (*dP)[FL_SLD] = sS[warp][1];
    T *Pt = (T *)&sS[warp][0][0][0], *dSt = (T *)&sS[warp][1][0][0];
    /* queries that may see a key of this block: q_start + i >= jb0, and within the window of jb1 */
    int ilo = max(0, jb0 - q_start), ihi = Tq - 1;
    if (window > 0) ihi = min(ihi, jb1 - q_start + window - 1);
    for (int i0 = ilo; i0 <= ihi; i0 += FL_TILE) {
        __syncthreads(); /* the previous tile (and sR) is consumed */
        int flag = 0;
        if (threadIdx.x < FL_TILE) {
            fl_row R = fl_row_of(i0 + (int)threadIdx.x, ihi + 1, Tk, q_start, window, doc_start, es, ee);
            sR[threadIdx.x] = R;
            flag = max(R.lo, jb0) <= min(R.hi, jb1);
        }
        if (!__syncthreads_or(flag)) continue;
        /* does any (query of the tile, key of this warp) pair see each other? warp-uniform */
        int vis = 0;
        for (int t = 0; t < 16; t++) vis |= j <= jw1 && fl_sees(sR[half * 16 + t], j);
        vis = __any_sync(CU_FULL, vis);
        for (int g = 0; g < group; g++) {
            int h = hk * group + g;
            if (g) __syncthreads(); /* the previous head's tile is consumed */
            fl_stage<T, D>(sQO, FL_TILE, q, i0, ihi + 1, (size_t)Hq * Dh, (size_t)h * Dh, Dh);
            fl_stage<T, D>(sQO + FL_TILE, FL_TILE, dout, i0, ihi + 1, (size_t)Hq * Dh, (size_t)h * Dh, Dh);
            if (threadIdx.x < FL_TILE) {
                int i = i0 + (int)threadIdx.x;
                sL[threadIdx.x] = i <= ihi ? lse[(size_t)i * Hq + h] : 0.f;
                sD[threadIdx.x] = i <= ihi ? Dsum[(size_t)i * Hq + h] : 0.f;
            }
            __syncthreads();
            if (!vis) continue;
#pragma unroll
            for (int n = 0; n < 2; n++) {
                fl_acc sf, pf;
                wmma::fill_fragment(sf, 0.f);
                wmma::fill_fragment(pf, 0.f);
#pragma unroll
                for (int f = 0; f < D / 16; f++) {
                    fbc bf;
                    wmma::load_matrix_sync(bf, &sQO[n * 16][f * 16], D + 8);
                    wmma::mma_sync(sf, kf[f], bf, sf);
                    wmma::load_matrix_sync(bf, &sQO[FL_TILE + n * 16][f * 16], D + 8);
                    wmma::mma_sync(pf, vf[f], bf, pf);
                }
                wmma::store_matrix_sync(&S[0][n * 16], sf, FL_SLD, wmma::mem_row_major);
                wmma::store_matrix_sync(&dP[0][n * 16], pf, FL_SLD, wmma::mem_row_major);
            }
            __syncwarp();
            float p[16], ds[16];
#pragma unroll
            for (int t = 0; t < 16; t++) {
                int c = half * 16 + t;
                p[t] = j <= jw1 && fl_sees(sR[c], j) ? expf(S[r][c] * scale - sL[c]) : 0.f;
                ds[t] = p[t] * (dP[r][c] - sD[c]);
            }
            __syncwarp();
#pragma unroll
            for (int t = 0; t < 16; t++) {
                cu_st(Pt, r * FL_PLD + half * 16 + t, p[t]);
                cu_st(dSt, r * FL_PLD + half * 16 + t, ds[t]);
            }
            __syncwarp();
            fa pa[2], da[2];
            wmma::load_matrix_sync(pa[0], Pt, FL_PLD);
            wmma::load_matrix_sync(pa[1], Pt + 16, FL_PLD);
            wmma::load_matrix_sync(da[0], dSt, FL_PLD);
            wmma::load_matrix_sync(da[1], dSt + 16, FL_PLD);
#pragma unroll
            for (int f = 0; f < D / 16; f++)
#pragma unroll
                for (int ks = 0; ks < 2; ks++) {
                    fbr bf;
                    wmma::load_matrix_sync(bf, &sQO[FL_TILE + ks * 16][f * 16], D + 8);
                    wmma::mma_sync(av[f], pa[ks], bf, av[f]);
                    wmma::load_matrix_sync(bf, &sQO[ks * 16][f * 16], D + 8);
                    wmma::mma_sync(ak[f], da[ks], bf, ak[f]);
                }
        }
    }
    __syncwarp();
    fl_write<T, D>(ak, S, dk, jw0, Tk, (size_t)Hkv * Dh, (size_t)hk * Dh, Dh, scale);
    fl_write<T, D>(av, S, dv, jw0, Tk, (size_t)Hkv * Dh, (size_t)hk * Dh, Dh, 1.f);
}

template <typename T, int D>
__global__ void __launch_bounds__(FL_WARPS * 32)
    k_flash_dkdv(const T *q, const T *k, const T *v, const float *lse, const T *dout, const float *Dsum, T *dk, T *dv,
                 const int32_t *doc_start, const int32_t *es, const int32_t *ee, int Tq, int Tk, int Hq, int Hkv,
                 int Dh, int q_start, int window, float scale) {
    if constexpr (!FL_SKIP(T))
        fl_dkdv<T, D>(q, k, v, lse, dout, Dsum, dk, dv, doc_start, es, ee, Tq, Tk, Hq, Hkv, Dh, q_start, window,
                      scale);
}

/* ---------------------------------------------------------------- host side */

static int fl_aligned(const ft_tensor *t) { return ((uintptr_t)t->data & 15) == 0; }

/* Were the BF16 kernels built for sm_80+? A build for compute_75 only (JIT-compiled on a newer GPU) has them
 * empty, and must leave BF16 to the scalar kernels. */
static int fl_bf16_built(void) {
#ifdef FT_CUEMU
    return 1;
#else
    static int ok = -1;
    if (ok < 0) {
        cudaFuncAttributes a;
        ok = cudaFuncGetAttributes(&a, k_flash_fwd<__nv_bfloat16, 128>) == cudaSuccess && a.ptxVersion >= 80;
        cudaGetLastError();
    }
    return ok;
#endif
}

int cu_flash_covers(ft_backend *b, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v, const ft_tensor *o,
                    const ft_tensor *dout) {
    const char *env = getenv("FT_CUDA_ATTN");
    if (env && !strcmp(env, "scalar")) return 0;
    int sm = cu_of(b)->sm;
    int64_t Dh = q->shape[2];
    if (!((q->dtype == FT_F16 && sm >= 75) || (q->dtype == FT_BF16 && sm >= 80 && fl_bf16_built()))) return 0;
    if (Dh % 8 || Dh > 128) return 0;
    return fl_aligned(q) && fl_aligned(k) && fl_aligned(v) && fl_aligned(o) && (!dout || fl_aligned(dout));
}

/* the padded head dim D as a template argument: statement list with D bound */
#define FL_DIMS(Dh, ...)                                                                                      \
    do {                                                                                                      \
        if ((Dh) <= 64) {                                                                                     \
            const int D = 64;                                                                                 \
            __VA_ARGS__;                                                                                      \
        } else if ((Dh) <= 80) {                                                                              \
            const int D = 80;                                                                                 \
            __VA_ARGS__;                                                                                      \
        } else if ((Dh) <= 96) {                                                                              \
            const int D = 96;                                                                                 \
            __VA_ARGS__;                                                                                      \
        } else {                                                                                              \
            const int D = 128;                                                                                \
            __VA_ARGS__;                                                                                      \
        }                                                                                                     \
    } while (0)

#define FL_TYPES(dt, ...)                                                                                     \
    do {                                                                                                      \
        if ((dt) == FT_BF16) {                                                                                \
            typedef __nv_bfloat16 T;                                                                          \
            __VA_ARGS__;                                                                                      \
        } else {                                                                                              \
            typedef __half T;                                                                                 \
            __VA_ARGS__;                                                                                      \
        }                                                                                                     \
    } while (0)

void cu_flash_attention(ft_backend *b, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v, ft_tensor *out,
                        ft_tensor *lse, const ft_attn_layout *L, int Tq, int Tk, int Hq, int Hkv, int Dh) {
    dim3 grid((unsigned)((Tq + FL_ROWS - 1) / FL_ROWS), (unsigned)Hq);
    cudaStream_t s = cu_of(b)->stream;
    FL_TYPES(q->dtype, FL_DIMS(Dh, CU_LAUNCH(grid, FL_WARPS * 32, s, k_flash_fwd<T, D>)(
                                       (const T *)q->data, (const T *)k->data, (const T *)v->data, (T *)out->data,
                                       lse ? (float *)lse->data : (float *)NULL, L->doc_start, L->excl_start,
                                       L->excl_end, Tq, Tk, Hq, Hkv, Dh, (int)L->q_start, L->window, L->scale)));
}

void cu_flash_attention_backward(ft_backend *b, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v,
                                 const ft_tensor *lse, const ft_tensor *dout, const float *Dsum, ft_tensor *dq,
                                 ft_tensor *dk, ft_tensor *dv, const ft_attn_layout *L, int Tq, int Tk, int Hq,
                                 int Hkv, int Dh) {
    cudaStream_t s = cu_of(b)->stream;
    dim3 gq((unsigned)((Tq + FL_ROWS - 1) / FL_ROWS), (unsigned)Hq);
    dim3 gk((unsigned)((Tk + FL_ROWS - 1) / FL_ROWS), (unsigned)Hkv);
    const float *ls = (const float *)lse->data;
    int q0 = (int)L->q_start;
    FL_TYPES(q->dtype, FL_DIMS(Dh, {
                 CU_LAUNCH(gq, FL_WARPS * 32, s, k_flash_dq<T, D>)(
                     (const T *)q->data, (const T *)k->data, (const T *)v->data, ls, (const T *)dout->data, Dsum,
                     (T *)dq->data, L->doc_start, L->excl_start, L->excl_end, Tq, Tk, Hq, Hkv, Dh, q0, L->window,
                     L->scale);
                 CU_LAUNCH(gk, FL_WARPS * 32, s, k_flash_dkdv<T, D>)(
                     (const T *)q->data, (const T *)k->data, (const T *)v->data, ls, (const T *)dout->data, Dsum,
                     (T *)dk->data, (T *)dv->data, L->doc_start, L->excl_start, L->excl_end, Tq, Tk, Hq, Hkv, Dh, q0,
                     L->window, L->scale);
             }));
}
