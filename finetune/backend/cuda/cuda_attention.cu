/* cuda_attention: causal GQA attention, forward and backward, without a Tq x Tk matrix.
 *
 * Flash-attention style, fp32 arithmetic over any storage type: a block of
 * AT_WARPS warps holds one query (forward, dq) or one key (dk/dv) per warp and
 * streams tiles of 32 keys (or 32 queries) through shared memory; lane l owns
 * key (query) l of the tile for the dot products and dims l, l+32, l+64, l+96
 * of the accumulators, so head dims up to 128 (64, 80, 96, 120, 128, ...).
 * Forward keeps a running max and sum per query (online softmax) and writes
 * lse = max + log(sum). Backward is split so no atomics are needed and the
 * results are deterministic: D = rowsum(dout * out), then one kernel for dq
 * (loop over keys) and one for dk, dv (loop over queries and over the query
 * heads of each kv head). Visibility (backend.h): key j is seen by query i when
 * doc_start[i] <= j <= q_start + i and, with a window W > 0, q_start + i - j < W, and (with the
 * exclusion arrays) not excl_start[i] <= j < excl_end[i]..
 * These kernels serve F32 (the CPU-matching reference path) and whatever cuda_flash.cu does not cover; BF16
 * and F16 with head dims that are a multiple of 8 up to 128 run on tensor cores there (cu_flash_covers). */
#include "finetune/backend/cuda/cuda_internal.cuh"

#include <limits.h>
#include <math.h>

#define AT_WARPS 8
#define AT_TILE 32
#define AT_DMAX 128
#define AT_PAD (AT_DMAX + 1) /* odd row stride: lane l reading row l, column d hits distinct banks */

/* keys [lo, hi] visible to query i (hi < lo when none) */
static __device__ __forceinline__ void at_range(int i, const int32_t *doc_start, int q_start, int window, int Tk,
                                                int *lo, int *hi) {
    int qi = q_start + i;
    int l = doc_start ? doc_start[i] : 0;
    if (l < 0) l = 0;
    if (window > 0 && qi - window + 1 > l) l = qi - window + 1;
    *lo = l;
    *hi = qi < Tk - 1 ? qi : Tk - 1;
}

template <typename T>
__global__ void __launch_bounds__(AT_WARPS * 32)
    k_attn_fwd(const T *q, const T *k, const T *v, T *out, float *lse, const int32_t *doc_start, int Tq, int Tk,
               int Hq, int Hkv, int Dh, int q_start, int window, float scale, const int32_t *excl_start,
               const int32_t *excl_end) {
    __shared__ float sK[AT_TILE][AT_PAD];
    __shared__ float sV[AT_TILE][AT_PAD];
    __shared__ float sQ[AT_WARPS][AT_DMAX];
    __shared__ int wlo[AT_WARPS], whi[AT_WARPS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int h = blockIdx.y, hk = h / (Hq / Hkv);
    int i = blockIdx.x * AT_WARPS + warp;
    bool active = i < Tq;
    int lo = 0, hi = -1, es = 0, ee = 0;
    if (active) at_range(i, doc_start, q_start, window, Tk, &lo, &hi);
    if (active && excl_start) es = excl_start[i], ee = excl_end[i];
    if (lane == 0) {
        wlo[warp] = lo <= hi ? lo : INT_MAX;
        whi[warp] = lo <= hi ? hi : -1;
    }
    for (int d = lane; d < AT_DMAX; d += 32) sQ[warp][d] = active && d < Dh ? cu_ld(q, ((size_t)i * Hq + h) * Dh + d) : 0.f;
    __syncthreads();
    int blo = INT_MAX, bhi = -1;
    for (int w = 0; w < AT_WARPS; w++) {
        blo = min(blo, wlo[w]);
        bhi = max(bhi, whi[w]);
    }
    float m = -INFINITY, l = 0.f, acc[AT_DMAX / 32] = {0.f, 0.f, 0.f, 0.f};
    for (int j0 = blo; j0 <= bhi; j0 += AT_TILE) {
        __syncthreads(); /* the previous tile is consumed */
        for (int idx = threadIdx.x; idx < AT_TILE * Dh; idx += blockDim.x) {
            int jj = idx / Dh, d = idx % Dh, j = j0 + jj;
            float kv = 0.f, vv = 0.f;
            if (j <= bhi) {
                size_t off = ((size_t)j * Hkv + hk) * Dh + d;
                kv = cu_ld(k, off);
                vv = cu_ld(v, off);
            }
            sK[jj][d] = kv;
            sV[jj][d] = vv;
        }
        __syncthreads();
        if (!active) continue;
        int j = j0 + lane;
        bool ok = j >= lo && j <= hi && (j < es || j >= ee);
        float s = -INFINITY;
        if (ok) {
            float dot = 0.f;
            for (int d = 0; d < Dh; d++) dot += sQ[warp][d] * sK[lane][d];
            s = dot * scale;
        }
        float mt = cu_warp_max(s);
        if (mt == -INFINITY) continue; /* warp-uniform: nothing visible in this tile */
        float mn = fmaxf(m, mt), corr = expf(m - mn), p = ok ? expf(s - mn) : 0.f;
        l = l * corr + cu_warp_sum(p);
#pragma unroll
        for (int r = 0; r < AT_DMAX / 32; r++) acc[r] *= corr;
        for (int jj = 0; jj < AT_TILE; jj++) {
            float pj = __shfl_sync(CU_FULL, p, jj);
#pragma unroll
            for (int r = 0; r < AT_DMAX / 32; r++) {
                int d = lane + 32 * r;
                if (d < Dh) acc[r] += pj * sV[jj][d];
            }
        }
        m = mn;
    }
    if (!active) return;
    float inv = l > 0.f ? 1.f / l : 0.f; /* a query that sees no key gets out 0 and lse +inf, as on the CPU */
#pragma unroll
    for (int r = 0; r < AT_DMAX / 32; r++) {
        int d = lane + 32 * r;
        if (d < Dh) cu_st(out, ((size_t)i * Hq + h) * Dh + d, acc[r] * inv);
    }
    if (lse && lane == 0) lse[(size_t)i * Hq + h] = l > 0.f ? m + logf(l) : INFINITY;
}

/* Dsum[i, h] = sum_d dout * out (one warp per row) */
template <typename T>
__global__ void k_attn_dsum(const T *out, const T *dout, float *Dsum, int rows, int Dh) {
    int row = blockIdx.x * AT_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    float s = 0.f;
    for (int d = lane; d < Dh; d += 32) s += cu_ld(out, (size_t)row * Dh + d) * cu_ld(dout, (size_t)row * Dh + d);
    s = cu_warp_sum(s);
    if (lane == 0) Dsum[row] = s;
}

/* dq_i = scale * sum_j P_ij (dout_i . v_j - D_i) k_j, one warp per query */
template <typename T>
__global__ void __launch_bounds__(AT_WARPS * 32)
    k_attn_dq(const T *q, const T *k, const T *v, const float *lse, const T *dout, const float *Dsum, T *dq,
              const int32_t *doc_start, int Tq, int Tk, int Hq, int Hkv, int Dh, int q_start, int window, float scale,
              const int32_t *excl_start, const int32_t *excl_end) {
    __shared__ float sK[AT_TILE][AT_PAD];
    __shared__ float sV[AT_TILE][AT_PAD];
    __shared__ float sQ[AT_WARPS][AT_DMAX];
    __shared__ float sO[AT_WARPS][AT_DMAX];
    __shared__ int wlo[AT_WARPS], whi[AT_WARPS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int h = blockIdx.y, hk = h / (Hq / Hkv);
    int i = blockIdx.x * AT_WARPS + warp;
    bool active = i < Tq;
    int lo = 0, hi = -1, es = 0, ee = 0;
    if (active) at_range(i, doc_start, q_start, window, Tk, &lo, &hi);
    if (active && excl_start) es = excl_start[i], ee = excl_end[i];
    if (lane == 0) {
        wlo[warp] = lo <= hi ? lo : INT_MAX;
        whi[warp] = lo <= hi ? hi : -1;
    }
    size_t qoff = ((size_t)i * Hq + h) * Dh;
    for (int d = lane; d < AT_DMAX; d += 32) {
        sQ[warp][d] = active && d < Dh ? cu_ld(q, qoff + d) : 0.f;
        sO[warp][d] = active && d < Dh ? cu_ld(dout, qoff + d) : 0.f;
    }
    float Li = active ? lse[(size_t)i * Hq + h] : 0.f, Di = active ? Dsum[(size_t)i * Hq + h] : 0.f;
    __syncthreads();
    int blo = INT_MAX, bhi = -1;
    for (int w = 0; w < AT_WARPS; w++) {
        blo = min(blo, wlo[w]);
        bhi = max(bhi, whi[w]);
    }
    float acc[AT_DMAX / 32] = {0.f, 0.f, 0.f, 0.f};
    for (int j0 = blo; j0 <= bhi; j0 += AT_TILE) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < AT_TILE * Dh; idx += blockDim.x) {
            int jj = idx / Dh, d = idx % Dh, j = j0 + jj;
            float kv = 0.f, vv = 0.f;
            if (j <= bhi) {
                size_t off = ((size_t)j * Hkv + hk) * Dh + d;
                kv = cu_ld(k, off);
                vv = cu_ld(v, off);
            }
            sK[jj][d] = kv;
            sV[jj][d] = vv;
        }
        __syncthreads();
        if (!active) continue;
        int j = j0 + lane;
        bool ok = j >= lo && j <= hi && (j < es || j >= ee);
        if (!__any_sync(CU_FULL, ok)) continue;
        float ds = 0.f;
        if (ok) {
            float sdot = 0.f, pdot = 0.f;
            for (int d = 0; d < Dh; d++) {
                sdot += sQ[warp][d] * sK[lane][d];
                pdot += sO[warp][d] * sV[lane][d];
            }
            float p = expf(sdot * scale - Li);
            ds = p * (pdot - Di);
        }
        for (int jj = 0; jj < AT_TILE; jj++) {
            float dj = __shfl_sync(CU_FULL, ds, jj);
#pragma unroll
            for (int r = 0; r < AT_DMAX / 32; r++) {
                int d = lane + 32 * r;
                if (d < Dh) acc[r] += dj * sK[jj][d];
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int r = 0; r < AT_DMAX / 32; r++) {
        int d = lane + 32 * r;
        if (d < Dh) cu_st(dq, qoff + d, acc[r] * scale);
    }
}

/* dv_j = sum_{h in group, i} P_ij dout_i ; dk_j = scale * sum P_ij (dout_i . v_j - D_i) q_i ; one warp per key */
template <typename T>
__global__ void __launch_bounds__(AT_WARPS * 32)
    k_attn_dkdv(const T *q, const T *k, const T *v, const float *lse, const T *dout, const float *Dsum, T *dk, T *dv,
                const int32_t *doc_start, int Tq, int Tk, int Hq, int Hkv, int Dh, int q_start, int window,
                float scale, const int32_t *excl_start, const int32_t *excl_end) {
    __shared__ float sQ[AT_TILE][AT_PAD];
    __shared__ float sO[AT_TILE][AT_PAD];
    __shared__ float sK[AT_WARPS][AT_DMAX];
    __shared__ float sV[AT_WARPS][AT_DMAX];
    __shared__ float sL[AT_TILE], sD[AT_TILE];
    __shared__ int sDoc[AT_TILE], sEs[AT_TILE], sEe[AT_TILE];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int hk = blockIdx.y, group = Hq / Hkv;
    int jb0 = blockIdx.x * AT_WARPS, jb1 = min(jb0 + AT_WARPS, Tk) - 1; /* keys of this block */
    int j = jb0 + warp;
    bool active = j < Tk;
    size_t koff = ((size_t)j * Hkv + hk) * Dh;
    for (int d = lane; d < AT_DMAX; d += 32) {
        sK[warp][d] = active && d < Dh ? cu_ld(k, koff + d) : 0.f;
        sV[warp][d] = active && d < Dh ? cu_ld(v, koff + d) : 0.f;
    }
    /* queries that may see a key of this block: q_start + i >= jb0, and within the window of jb1 */
    int ilo = max(0, jb0 - q_start), ihi = Tq - 1;
    if (window > 0) ihi = min(ihi, jb1 - q_start + window - 1);
    float ak[AT_DMAX / 32] = {0.f, 0.f, 0.f, 0.f}, av[AT_DMAX / 32] = {0.f, 0.f, 0.f, 0.f};
    for (int i0 = ilo; i0 <= ihi; i0 += AT_TILE) {
        /* skip a query tile none of whose queries sees any key of the block (other documents) */
        int flag = 0;
        if (threadIdx.x < AT_TILE) {
            int i = i0 + threadIdx.x;
            if (i <= ihi) {
                int lo, hi;
                at_range(i, doc_start, q_start, window, Tk, &lo, &hi);
                flag = max(lo, jb0) <= min(hi, jb1);
            }
        }
        if (!__syncthreads_or(flag)) continue;
        for (int g = 0; g < group; g++) {
            int h = hk * group + g;
            __syncthreads(); /* the previous tile is consumed */
            for (int idx = threadIdx.x; idx < AT_TILE * Dh; idx += blockDim.x) {
                int ii = idx / Dh, d = idx % Dh, i = i0 + ii;
                float qv = 0.f, ov = 0.f;
                if (i <= ihi) {
                    size_t off = ((size_t)i * Hq + h) * Dh + d;
                    qv = cu_ld(q, off);
                    ov = cu_ld(dout, off);
                }
                sQ[ii][d] = qv;
                sO[ii][d] = ov;
            }
            if (threadIdx.x < AT_TILE) {
                int i = i0 + threadIdx.x;
                sL[threadIdx.x] = i <= ihi ? lse[(size_t)i * Hq + h] : 0.f;
                sD[threadIdx.x] = i <= ihi ? Dsum[(size_t)i * Hq + h] : 0.f;
                sDoc[threadIdx.x] = i <= ihi ? (doc_start ? doc_start[i] : 0) : INT_MAX;
                sEs[threadIdx.x] = i <= ihi && excl_start ? excl_start[i] : 0;
                sEe[threadIdx.x] = i <= ihi && excl_start ? excl_end[i] : 0;
            }
            __syncthreads();
            if (!active) continue;
            int i = i0 + lane, qi = q_start + i;
            bool ok = i <= ihi && sDoc[lane] <= j && j <= qi && (window <= 0 || qi - j < window) &&
                      (j < sEs[lane] || j >= sEe[lane]);
            if (!__any_sync(CU_FULL, ok)) continue;
            float p = 0.f, ds = 0.f;
            if (ok) {
                float sdot = 0.f, pdot = 0.f;
                for (int d = 0; d < Dh; d++) {
                    sdot += sQ[lane][d] * sK[warp][d];
                    pdot += sO[lane][d] * sV[warp][d];
                }
                p = expf(sdot * scale - sL[lane]);
                ds = p * (pdot - sD[lane]);
            }
            for (int ii = 0; ii < AT_TILE; ii++) {
                float pi = __shfl_sync(CU_FULL, p, ii), di = __shfl_sync(CU_FULL, ds, ii);
#pragma unroll
                for (int r = 0; r < AT_DMAX / 32; r++) {
                    int d = lane + 32 * r;
                    if (d < Dh) {
                        av[r] += pi * sO[ii][d];
                        ak[r] += di * sQ[ii][d];
                    }
                }
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int r = 0; r < AT_DMAX / 32; r++) {
        int d = lane + 32 * r;
        if (d < Dh) {
            cu_st(dk, koff + d, ak[r] * scale);
            cu_st(dv, koff + d, av[r]);
        }
    }
}

/* ---------------------------------------------------------------- host side */

typedef struct at_dims {
    int Tq, Tk, Hq, Hkv, Dh, q_start;
} at_dims;

static int at_check(ft_backend *b, const char *op, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v,
                    const ft_attn_layout *L, at_dims *o) {
    if (!cu_arg(b, op, "q", q, CU_ANYF, 3, 3) || !cu_arg(b, op, "k", k, CU_ANYF, 3, 3) ||
        !cu_arg(b, op, "v", v, CU_ANYF, 3, 3))
        return 0;
    char s1[64], s2[64], s3[64];
    int64_t Tq = q->shape[0], Hq = q->shape[1], Dh = q->shape[2], Tk = k->shape[0], Hkv = k->shape[1];
    if (!L) {
        cu_report(b, "%s: no attention layout given", op);
        return 0;
    }
    if (k->shape[2] != Dh || v->shape[0] != Tk || v->shape[1] != Hkv || v->shape[2] != Dh || Hkv == 0 ||
        Hq % Hkv != 0 || k->dtype != q->dtype || v->dtype != q->dtype) {
        cu_report(b, "%s: q %s, k %s, v %s: want q [Tq,Hq,Dh], k and v [Tk,Hkv,Dh] of one dtype, Hq a multiple of Hkv",
                  op, ft_shape_str(q, s1, sizeof s1), ft_shape_str(k, s2, sizeof s2), ft_shape_str(v, s3, sizeof s3));
        return 0;
    }
    if (!L->excl_start != !L->excl_end) {
        cu_report(b, "%s: excl_start and excl_end must both be given or both be NULL", op);
        return 0;
    }
    if (Dh > AT_DMAX) {
        cu_report(b, "%s: head dim %lld is above the %d the cuda attention kernels support", op, (long long)Dh,
                  AT_DMAX);
        return 0;
    }
    if (L->q_start < 0 || L->q_start + Tq > INT_MAX || Tk > INT_MAX || Tq * Hq > INT_MAX || Hq > 65535 ||
        Tk / AT_WARPS + 1 > INT_MAX) {
        cu_report(b, "%s: sizes too large (Tq %lld, Tk %lld, Hq %lld, q_start %lld)", op, (long long)Tq,
                  (long long)Tk, (long long)Hq, (long long)L->q_start);
        return 0;
    }
    o->Tq = (int)Tq;
    o->Tk = (int)Tk;
    o->Hq = (int)Hq;
    o->Hkv = (int)Hkv;
    o->Dh = (int)Dh;
    o->q_start = (int)L->q_start;
    return 1;
}

static int at_like(ft_backend *b, const char *op, const char *name, const ft_tensor *t, const ft_tensor *like) {
    if (!cu_arg(b, op, name, t, CU_ANYF, 3, 3)) return 0;
    if (t->dtype == like->dtype && t->shape[0] == like->shape[0] && t->shape[1] == like->shape[1] &&
        t->shape[2] == like->shape[2])
        return 1;
    char s1[64], s2[64];
    cu_report(b, "%s: %s %s %s must match %s %s", op, name, ft_dtype_name(t->dtype), ft_shape_str(t, s1, sizeof s1),
              ft_dtype_name(like->dtype), ft_shape_str(like, s2, sizeof s2));
    return 0;
}

static int at_lse(ft_backend *b, const char *op, const ft_tensor *lse, const at_dims *d) {
    if (!cu_arg(b, op, "lse", lse, CU_F32, 1, 2)) return 0;
    if (ft_numel(lse) == (int64_t)d->Tq * d->Hq) return 1;
    char s[64];
    cu_report(b, "%s: lse %s must be [%d, %d]", op, ft_shape_str(lse, s, sizeof s), d->Tq, d->Hq);
    return 0;
}

void cu_attention(ft_backend *b, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v, ft_tensor *out,
                  ft_tensor *lse, const ft_attn_layout *L) {
    const char *op = "attention";
    at_dims d;
    if (!at_check(b, op, q, k, v, L, &d) || !at_like(b, op, "out", out, q) || (lse && !at_lse(b, op, lse, &d))) return;
    if (!d.Tq || !d.Hq) return;
    if (cu_flash_covers(b, q, k, v, out, NULL)) { /* 16-bit on tensor cores (cuda_flash.cu) */
        cu_flash_attention(b, q, k, v, out, lse, L, d.Tq, d.Tk, d.Hq, d.Hkv, d.Dh);
        cu_check_launch(b, op);
        return;
    }
    dim3 grid((unsigned)((d.Tq + AT_WARPS - 1) / AT_WARPS), (unsigned)d.Hq);
    cudaStream_t s = cu_of(b)->stream;
    CU_DISPATCH(b, op, q->dtype,
                CU_LAUNCH(grid, AT_WARPS * 32, s, k_attn_fwd<T>)(
                    (const T *)q->data, (const T *)k->data, (const T *)v->data, (T *)out->data,
                    lse ? (float *)lse->data : (float *)NULL, L->doc_start, d.Tq, d.Tk, d.Hq, d.Hkv, d.Dh, d.q_start,
                    L->window, L->scale, L->excl_start, L->excl_end));
    cu_check_launch(b, op);
}

void cu_attention_backward(ft_backend *b, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v,
                           const ft_tensor *out, const ft_tensor *lse, const ft_tensor *dout, ft_tensor *dq,
                           ft_tensor *dk, ft_tensor *dv, const ft_attn_layout *L) {
    const char *op = "attention_backward";
    at_dims d;
    if (!at_check(b, op, q, k, v, L, &d) || !at_like(b, op, "out", out, q) || !at_like(b, op, "dout", dout, q) ||
        !at_like(b, op, "dq", dq, q) || !at_like(b, op, "dk", dk, k) || !at_like(b, op, "dv", dv, v))
        return;
    if (!lse) {
        cu_report(b, "%s: lse from the forward pass is required", op);
        return;
    }
    if (!at_lse(b, op, lse, &d)) return;
    if (!d.Tk) return;
    if (!d.Tq) { /* no query sees any key */
        cudaMemsetAsync(dk->data, 0, ft_nbytes(dk), cu_of(b)->stream);
        cudaMemsetAsync(dv->data, 0, ft_nbytes(dv), cu_of(b)->stream);
        return;
    }
    int rows = d.Tq * d.Hq;
    float *Dsum = (float *)cu_scratch(b, (size_t)rows * sizeof(float), op);
    if (!Dsum) return;
    cudaStream_t s = cu_of(b)->stream;
    dim3 gq((unsigned)((d.Tq + AT_WARPS - 1) / AT_WARPS), (unsigned)d.Hq);
    dim3 gk((unsigned)((d.Tk + AT_WARPS - 1) / AT_WARPS), (unsigned)d.Hkv);
    const float *ls = (const float *)lse->data;
    CU_DISPATCH(b, op, q->dtype,
                CU_LAUNCH((unsigned)((rows + AT_WARPS - 1) / AT_WARPS), AT_WARPS * 32, s, k_attn_dsum<T>)(
                    (const T *)out->data, (const T *)dout->data, Dsum, rows, d.Dh));
    if (cu_flash_covers(b, q, k, v, out, dout)) { /* 16-bit on tensor cores (cuda_flash.cu) */
        cu_flash_attention_backward(b, q, k, v, lse, dout, Dsum, dq, dk, dv, L, d.Tq, d.Tk, d.Hq, d.Hkv, d.Dh);
        cu_check_launch(b, op);
        return;
    }
    CU_DISPATCH(b, op, q->dtype, {
        CU_LAUNCH(gq, AT_WARPS * 32, s, k_attn_dq<T>)((const T *)q->data, (const T *)k->data, (const T *)v->data, ls,
                                                  (const T *)dout->data, Dsum, (T *)dq->data, L->doc_start, d.Tq,
                                                  d.Tk, d.Hq, d.Hkv, d.Dh, d.q_start, L->window, L->scale,
                                                  L->excl_start, L->excl_end);
        CU_LAUNCH(gk, AT_WARPS * 32, s, k_attn_dkdv<T>)((const T *)q->data, (const T *)k->data, (const T *)v->data, ls,
                                                    (const T *)dout->data, Dsum, (T *)dk->data, (T *)dv->data,
                                                    L->doc_start, d.Tq, d.Tk, d.Hq, d.Hkv, d.Dh, d.q_start,
                                                    L->window, L->scale, L->excl_start, L->excl_end);
    });
    cu_check_launch(b, op);
}
