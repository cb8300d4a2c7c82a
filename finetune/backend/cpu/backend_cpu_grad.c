/* backend_cpu_grad: backward ops of the CPU backend (see backend_cpu.h).
 *
 * Determinism: every gradient element is written by exactly one thread and
 * its sum runs in a fixed order. Parameter gradients that gather over tokens
 * (dtable, dw, dk, dv, dW) are parallelised over their own rows/columns, never
 * over tokens, so no atomics and no order that depends on scheduling. */
#include "finetune/backend/cpu/backend_cpu.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static void need_numel(const char *op, const char *arg, const ft_tensor *t, int64_t n) {
    if (ft_numel(t) != n) {
        char s[64];
        cpu_contract(op, "%s has shape %s (%lld elements), expected %lld elements", arg, ft_shape_str(t, s, sizeof s),
                     (long long)ft_numel(t), (long long)n);
    }
}

enum { COLS = 64 }; /* column block for column-parallel reductions */

void cpu_embedding_backward(ft_backend *b, const ft_tensor *ids, const ft_tensor *dout, ft_tensor *dtable, int acc) {
    const char *op = "embedding_backward";
    cpu_need_i32(op, "ids", ids);
    cpu_need_f32(op, "dout", dout);
    cpu_need_f32(op, "dtable", dtable);
    int64_t V, D, T = ft_numel(ids);
    cpu_rows_cols(dtable, &V, &D);
    need_numel(op, "dout", dout, T * D);
    const int32_t *id = ids->data;
    for (int64_t t = 0; t < T; t++)
        if (id[t] < 0 || id[t] >= V)
            cpu_contract(op, "ids[%lld] = %d is outside the table's %lld rows", (long long)t, id[t], (long long)V);
    float *dt = dtable->data;
    const float *dy = dout->data;
    if (!acc) memset(dt, 0, (size_t)(V * D) * sizeof(float));
    /* each thread owns a column block and walks the tokens in order */
    int64_t nb = (D + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (T * D > 16384)
    for (int64_t cb = 0; cb < nb; cb++) {
        int64_t c0 = cb * COLS, c1 = c0 + COLS < D ? c0 + COLS : D;
        for (int64_t t = 0; t < T; t++) {
            float *row = dt + (int64_t)id[t] * D;
            const float *g = dy + t * D;
            for (int64_t c = c0; c < c1; c++) row[c] += g[c];
        }
    }
}

void cpu_rmsnorm_backward(ft_backend *b, const ft_tensor *dout, const ft_tensor *x, const ft_tensor *w,
                          const ft_tensor *rstd, ft_tensor *dx, ft_tensor *dw, int acc) {
    const char *op = "rmsnorm_backward";
    cpu_need_f32(op, "dout", dout);
    cpu_need_f32(op, "x", x);
    cpu_need_f32(op, "w", w);
    cpu_need_f32(op, "dx", dx);
    int64_t T, D;
    cpu_rows_cols(x, &T, &D);
    need_numel(op, "dout", dout, T * D);
    need_numel(op, "w", w, D);
    need_numel(op, "dx", dx, T * D);
    /* the op has no eps argument, so rstd from the forward pass is required */
    cpu_need_f32(op, "rstd", rstd);
    need_numel(op, "rstd", rstd, T);
    if (dw) {
        cpu_need_f32(op, "dw", dw);
        need_numel(op, "dw", dw, D);
    }
    const float *dy = dout->data, *xp = x->data, *wp = w->data;
    float *dxp = dx->data;
    float *r = cpu_scratch((size_t)T * sizeof(float));
    if (!r) cpu_contract(op, "out of host memory");
#pragma omp parallel for schedule(static) if (T * D > 16384)
    for (int64_t t = 0; t < T; t++) {
        const float *xr = xp + t * D, *g = dy + t * D;
        float rt = ((const float *)rstd->data)[t];
        r[t] = rt;
        /* y = x r w ; dx = r (g w) - r^3 / D * x * sum(g w x) */
        double dot = 0;
        for (int64_t j = 0; j < D; j++) dot += (double)g[j] * wp[j] * xr[j];
        float c = (float)(dot * (double)rt * rt * rt / (double)D);
        float *o = dxp + t * D;
        if (acc)
            for (int64_t j = 0; j < D; j++) o[j] += rt * g[j] * wp[j] - c * xr[j];
        else
            for (int64_t j = 0; j < D; j++) o[j] = rt * g[j] * wp[j] - c * xr[j];
    }
    if (dw) {
        float *dwp = dw->data;
        int64_t nb = (D + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (T * D > 16384)
        for (int64_t cb = 0; cb < nb; cb++) {
            int64_t c0 = cb * COLS, c1 = c0 + COLS < D ? c0 + COLS : D;
            float s[COLS] = {0};
            for (int64_t t = 0; t < T; t++) {
                const float *xr = xp + t * D, *g = dy + t * D;
                for (int64_t c = c0; c < c1; c++) s[c - c0] += g[c] * (xr[c] * r[t]);
            }
            for (int64_t c = c0; c < c1; c++) dwp[c] += s[c - c0];
        }
    }
    cpu_scratch_free(r);
}

void cpu_swiglu_backward(ft_backend *b, const ft_tensor *gate, const ft_tensor *up, const ft_tensor *dout,
                         ft_tensor *dgate, ft_tensor *dup) {
    const char *op = "swiglu_backward";
    cpu_need_f32(op, "gate", gate);
    cpu_need_f32(op, "up", up);
    cpu_need_f32(op, "dout", dout);
    cpu_need_f32(op, "dgate", dgate);
    cpu_need_f32(op, "dup", dup);
    int64_t n = ft_numel(gate);
    need_numel(op, "up", up, n);
    need_numel(op, "dout", dout, n);
    need_numel(op, "dgate", dgate, n);
    need_numel(op, "dup", dup, n);
    const float *g = gate->data, *u = up->data, *dy = dout->data;
    float *dg = dgate->data, *du = dup->data;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        float gi = g[i], ui = u[i], d = dy[i]; /* read first: outputs may alias inputs */
        dg[i] = d * ui * s * (1.0f + gi * (1.0f - s));
        du[i] = d * gi * s;
    }
}

/* ------------------------------------------------------------------ attention backward */

void cpu_attention_backward(ft_backend *b, const ft_tensor *q, const ft_tensor *k, const ft_tensor *v,
                            const ft_tensor *out, const ft_tensor *lse, const ft_tensor *dout, ft_tensor *dq,
                            ft_tensor *dk, ft_tensor *dv, const ft_attn_layout *L) {
    const char *op = "attention_backward";
    cpu_need_f32(op, "q", q);
    cpu_need_f32(op, "k", k);
    cpu_need_f32(op, "v", v);
    cpu_need_f32(op, "out", out);
    cpu_need_f32(op, "lse", lse);
    cpu_need_f32(op, "dout", dout);
    cpu_need_f32(op, "dq", dq);
    cpu_need_f32(op, "dk", dk);
    cpu_need_f32(op, "dv", dv);
    if (!L) cpu_contract(op, "layout is NULL");
    if (!L->excl_start != !L->excl_end) cpu_contract(op, "excl_start and excl_end must both be given or both be NULL");
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3) cpu_contract(op, "q, k, v must be 3-D [T,H,Dh]");
    int64_t Tq = q->shape[0], Hq = q->shape[1], Dh = q->shape[2], Tk = k->shape[0], Hkv = k->shape[1];
    if (Hkv <= 0 || Hq % Hkv || k->shape[2] != Dh) cpu_contract(op, "q/k head layout mismatch");
    if (L->q_start < 0 || L->q_start + Tq > Tk) cpu_contract(op, "q_start + Tq exceeds Tk");
    need_numel(op, "v", v, Tk * Hkv * Dh);
    need_numel(op, "out", out, Tq * Hq * Dh);
    need_numel(op, "dout", dout, Tq * Hq * Dh);
    need_numel(op, "lse", lse, Tq * Hq);
    need_numel(op, "dq", dq, Tq * Hq * Dh);
    need_numel(op, "dk", dk, Tk * Hkv * Dh);
    need_numel(op, "dv", dv, Tk * Hkv * Dh);
    int64_t grp = Hq / Hkv;
    const float *qp = q->data, *kp = k->data, *vp = v->data, *op_ = out->data, *lp = lse->data, *dop = dout->data;
    float *dqp = dq->data, *dkp = dk->data, *dvp = dv->data;
    float scale = L->scale;

    /* Di = sum_d dout * out, per (query, head) */
    float *Dd = cpu_scratch((size_t)(Tq * Hq) * sizeof(float));
    if (!Dd) cpu_contract(op, "out of host memory");
#pragma omp parallel for schedule(static)
    for (int64_t ih = 0; ih < Tq * Hq; ih++) {
        double s = 0;
        for (int64_t d = 0; d < Dh; d++) s += (double)dop[ih * Dh + d] * op_[ih * Dh + d];
        Dd[ih] = (float)s;
    }

    /* dq: one (query, head) per iteration */
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t ih = 0; ih < Tq * Hq; ih++) {
        int64_t i = ih / Hq, h = ih % Hq, g = h / grp, lo, hi, es, ee;
        cpu_attn_range(L, i, Tk, &lo, &hi);
        cpu_attn_excl(L, i, &es, &ee);
        const float *qr = qp + ih * Dh, *dor = dop + ih * Dh;
        float *dqr = dqp + ih * Dh;
        for (int64_t d = 0; d < Dh; d++) dqr[d] = 0.0f;
        if (lo > hi) continue;
        float l = lp[ih], Di = Dd[ih];
        for (int64_t j = lo; j <= hi; j++) {
            if (j >= es && j < ee) continue;
            const float *kr = kp + (j * Hkv + g) * Dh, *vr = vp + (j * Hkv + g) * Dh;
            float s = cpu_dot(qr, kr, Dh), dp = cpu_dot(dor, vr, Dh);
            float p = expf(s * scale - l);
            float ds = p * (dp - Di) * scale;
            for (int64_t d = 0; d < Dh; d++) dqr[d] += ds * kr[d];
        }
    }

    /* dk, dv: one (key, kv head) per iteration, summing over the query heads of its group */
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t jg = 0; jg < Tk * Hkv; jg++) {
        int64_t j = jg / Hkv, g = jg % Hkv;
        const float *kr = kp + jg * Dh, *vr = vp + jg * Dh;
        float *dkr = dkp + jg * Dh, *dvr = dvp + jg * Dh;
        for (int64_t d = 0; d < Dh; d++) dkr[d] = dvr[d] = 0.0f;
        /* queries that can see key j: q_start + i >= j, and within the window */
        int64_t i0 = j - L->q_start, i1 = Tq - 1;
        if (i0 < 0) i0 = 0;
        if (L->window > 0 && j + L->window - 1 - L->q_start < i1) i1 = j + L->window - 1 - L->q_start;
        for (int64_t i = i0; i <= i1; i++) {
            int64_t lo, hi, es, ee;
            cpu_attn_range(L, i, Tk, &lo, &hi);
            cpu_attn_excl(L, i, &es, &ee);
            if (j < lo || j > hi || (j >= es && j < ee)) continue;
            for (int64_t h = g * grp; h < (g + 1) * grp; h++) {
                int64_t ih = i * Hq + h;
                const float *qr = qp + ih * Dh, *dor = dop + ih * Dh;
                float s = cpu_dot(qr, kr, Dh), dp = cpu_dot(dor, vr, Dh);
                float p = expf(s * scale - lp[ih]);
                float ds = p * (dp - Dd[ih]) * scale;
                for (int64_t d = 0; d < Dh; d++) {
                    dvr[d] += p * dor[d];
                    dkr[d] += ds * qr[d];
                }
            }
        }
    }
    cpu_scratch_free(Dd);
}

/* ------------------------------------------------------------------ fused lm_head + log-softmax backward */

void cpu_token_logprobs_backward(ft_backend *b, const ft_tensor *h, const ft_tensor *W, const ft_tensor *targets,
                                 const ft_tensor *lse, const ft_tensor *dlogp, ft_tensor *dh, ft_tensor *dW) {
    const char *op = "token_logprobs_backward";
    cpu_need_f32(op, "h", h);
    cpu_need_f32(op, "W", W);
    cpu_need_i32(op, "targets", targets);
    cpu_need_f32(op, "dlogp", dlogp);
    cpu_need_f32(op, "dh", dh);
    int64_t T, D, V, D2;
    cpu_rows_cols(h, &T, &D);
    cpu_rows_cols(W, &V, &D2);
    if (D != D2) cpu_contract(op, "h has %lld columns but W has %lld", (long long)D, (long long)D2);
    need_numel(op, "targets", targets, T);
    need_numel(op, "dlogp", dlogp, T);
    need_numel(op, "dh", dh, T * D);
    if (lse) {
        cpu_need_f32(op, "lse", lse);
        need_numel(op, "lse", lse, T);
    }
    if (dW) {
        cpu_need_f32(op, "dW", dW);
        need_numel(op, "dW", dW, V * D);
    }
    const int32_t *tg = targets->data;
    for (int64_t t = 0; t < T; t++)
        if (tg[t] >= V)
            cpu_contract(op, "targets[%lld] = %d is outside the vocabulary of %lld", (long long)t, tg[t],
                         (long long)V);
    const float *hp = h->data, *Wp = W->data, *dl = dlogp->data;
    float *dhp = dh->data;
    float *lsev = NULL;
    const float *ls;
    if (lse) {
        ls = lse->data;
    } else {
        lsev = cpu_scratch((size_t)T * sizeof(float));
        if (!lsev) cpu_contract(op, "out of host memory");
        cpu_token_lse(hp, Wp, T, D, V, lsev);
        ls = lsev;
    }
    int64_t VC = cpu_vocab_chunk(T, V);
    float *z = cpu_scratch((size_t)(T * VC) * sizeof(float));
    if (!z) cpu_contract(op, "out of host memory (T=%lld)", (long long)T);
    if (V == 0) memset(dhp, 0, (size_t)(T * D) * sizeof(float));
    for (int64_t v0 = 0; v0 < V; v0 += VC) {
        int64_t vc = V - v0 < VC ? V - v0 : VC;
        cpu_gemm_raw(T, vc, D, hp, D, 0, Wp + v0 * D, D, 1, z, vc, 1.0f, 0.0f);
        /* dz = dlogp * (onehot(target) - softmax); rows with no target carry nothing */
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < T; t++) {
            float *zr = z + t * vc;
            if (tg[t] < 0) {
                for (int64_t j = 0; j < vc; j++) zr[j] = 0.0f;
                continue;
            }
            float g = dl[t], l = ls[t];
            for (int64_t j = 0; j < vc; j++) zr[j] = -g * expf(zr[j] - l);
            if (tg[t] >= v0 && tg[t] < v0 + vc) zr[tg[t] - v0] += g;
        }
        cpu_gemm_raw(T, D, vc, z, vc, 0, Wp + v0 * D, D, 0, dhp, D, 1.0f, v0 == 0 ? 0.0f : 1.0f);
        if (dW) cpu_gemm_raw(vc, D, T, z, vc, 1, hp, D, 0, (float *)dW->data + v0 * D, D, 1.0f, 1.0f);
    }
    cpu_scratch_free(z);
    cpu_scratch_free(lsev);
}
