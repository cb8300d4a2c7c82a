/* CPU backend forward ops against naive double-precision implementations
 * written here: gemm (all four transposes, alpha/beta), embedding, rmsnorm,
 * rope (direct rotate-half formula), attention (explicit full softmax with
 * causal, packed, sliding-window, GQA, excluded-range and cached-decoding masks), swiglu,
 * add, add_bias, token_logprobs (full softmax), memory accounting and
 * determinism across thread counts. */
#include "finetune/backend/backend.h"
#include "test.h"

#include <omp.h>
#include <stdint.h>

static ft_rng rng;

static float *rnd(int64_t n, float sd) {
    float *p = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = ft_rng_normal(&rng) * sd;
    return p;
}

static double max_rel_err(const float *a, const double *ref, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - ref[i]) / fmax(1.0, fabs(ref[i]));
        if (!(e <= m)) m = isnan(e) ? INFINITY : e;
    }
    return m;
}

static void test_memory(ft_backend *b) {
    size_t use, peak;
    b->memory(b, &use, &peak);
    CHECK(use == 0 && peak == 0);
    void *p = b->alloc(b, 1000), *q = b->alloc(b, 24);
    CHECK(p && q);
    CHECK(((uintptr_t)p & 63) == 0 && ((uintptr_t)q & 63) == 0);
    b->memory(b, &use, &peak);
    CHECK(use == 1024 && peak == 1024);
    b->zero(b, p, 1000);
    CHECK(((unsigned char *)p)[999] == 0);
    b->free(b, p);
    b->memory(b, &use, &peak);
    CHECK(use == 24 && peak == 1024);
    b->free(b, q);
    b->free(b, NULL);
    b->memory(b, &use, &peak);
    CHECK(use == 0 && peak == 1024);
    float src[3] = {1, 2, 3}, dst[3] = {0};
    float *d = b->alloc(b, sizeof src);
    b->upload(b, d, src, sizeof src);
    b->download(b, dst, d, sizeof src);
    CHECK(dst[0] == 1 && dst[2] == 3);
    b->free(b, d);
    ft_tensor t;
    ft_error e;
    int64_t shape[2] = {3, 5};
    CHECK(ft_backend_tensor(b, FT_F32, 2, shape, &t, &e) == FT_OK);
    b->memory(b, &use, &peak);
    CHECK(use == 60);
    b->free(b, t.data);
    CHECK(strcmp(b->name, "cpu") == 0 && b->device == FT_DEV_CPU);
}

static void one_gemm(ft_backend *b, int64_t M, int64_t N, int64_t K, int ta, int tb, float alpha, float beta) {
    float *A = rnd(M * K, 1), *B = rnd(K * N, 1), *C = rnd(M * N, 1);
    double *ref = malloc((size_t)(M * N) * sizeof(double));
    if (beta == 0.0f)
        for (int64_t i = 0; i < M * N; i++) C[i] = NAN; /* beta 0 must not read C */
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) {
                double a = ta ? A[k * M + i] : A[i * K + k];
                double bb = tb ? B[j * K + k] : B[k * N + j];
                s += a * bb;
            }
            ref[i * N + j] = alpha * s + (beta == 0.0f ? 0.0 : beta * (double)C[i * N + j]);
        }
    ft_tensor tA = ta ? ft_t2(A, FT_F32, FT_DEV_CPU, K, M) : ft_t2(A, FT_F32, FT_DEV_CPU, M, K);
    ft_tensor tB = tb ? ft_t2(B, FT_F32, FT_DEV_CPU, N, K) : ft_t2(B, FT_F32, FT_DEV_CPU, K, N);
    ft_tensor tC = ft_t2(C, FT_F32, FT_DEV_CPU, M, N);
    b->gemm(b, &tA, ta, &tB, tb, &tC, alpha, beta);
    /* error budget: fp32 accumulation over K terms of size ~1 */
    double err = max_rel_err(C, ref, M * N);
    CHECK_MSG(err < 1e-5 * sqrt((double)K) + 1e-6, "gemm M=%lld N=%lld K=%lld ta=%d tb=%d: max err %g",
              (long long)M, (long long)N, (long long)K, ta, tb, err);
    free(A);
    free(B);
    free(C);
    free(ref);
}

static void test_gemm(ft_backend *b) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            one_gemm(b, 1, 1, 1, ta, tb, 1.0f, 0.0f);
            one_gemm(b, 7, 5, 3, ta, tb, 1.0f, 0.0f);
            one_gemm(b, 37, 53, 300, ta, tb, 0.7f, 0.3f);   /* crosses the K block */
            one_gemm(b, 150, 33, 17, ta, tb, -1.5f, 1.0f);  /* crosses the M block */
            one_gemm(b, 13, 2100, 40, ta, tb, 1.0f, 0.0f);  /* crosses the N block */
            one_gemm(b, 1, 300, 520, ta, tb, 1.0f, 0.5f);   /* decode-shaped */
        }
    one_gemm(b, 2, 700, 33, 0, 0, 1.0f, 0.0f);
    one_gemm(b, 2, 700, 33, 1, 1, 1.0f, 1.0f);
    /* deterministic: one thread and all threads give the same bits */
    {
        int64_t M = 200, N = 300, K = 600;
        float *A = rnd(M * K, 1), *B = rnd(N * K, 1), *C1 = malloc((size_t)(M * N) * 4), *C2 = malloc((size_t)(M * N) * 4);
        ft_tensor tA = ft_t2(A, FT_F32, FT_DEV_CPU, M, K), tB = ft_t2(B, FT_F32, FT_DEV_CPU, N, K),
                  t1 = ft_t2(C1, FT_F32, FT_DEV_CPU, M, N), t2 = ft_t2(C2, FT_F32, FT_DEV_CPU, M, N);
        b->gemm(b, &tA, 0, &tB, 1, &t1, 1.0f, 0.0f);
        int nt = omp_get_max_threads();
        omp_set_num_threads(1);
        b->gemm(b, &tA, 0, &tB, 1, &t2, 1.0f, 0.0f);
        omp_set_num_threads(nt);
        CHECK(memcmp(C1, C2, (size_t)(M * N) * 4) == 0);
        free(A);
        free(B);
        free(C1);
        free(C2);
    }
    /* K = 0: C = beta * C */
    float C[4] = {1, 2, 3, 4}, A[1], B[1];
    ft_tensor tA = ft_t2(A, FT_F32, FT_DEV_CPU, 2, 0), tB = ft_t2(B, FT_F32, FT_DEV_CPU, 0, 2),
              tC = ft_t2(C, FT_F32, FT_DEV_CPU, 2, 2);
    b->gemm(b, &tA, 0, &tB, 0, &tC, 1.0f, 2.0f);
    CHECK(C[0] == 2 && C[3] == 8);
}

static void test_embedding_rmsnorm(ft_backend *b) {
    int64_t V = 11, D = 70, T = 9;
    float *tab = rnd(V * D, 1), *out = rnd(T * D, 1), *w = rnd(D, 1);
    int32_t ids[9] = {0, 10, 3, 3, 7, 1, 0, 5, 10};
    ft_tensor tid = ft_t1(ids, FT_I32, FT_DEV_CPU, T), ttab = ft_t2(tab, FT_F32, FT_DEV_CPU, V, D),
              tout = ft_t2(out, FT_F32, FT_DEV_CPU, T, D);
    b->embedding(b, &tid, &ttab, &tout);
    int same = 1;
    for (int64_t t = 0; t < T; t++)
        for (int64_t d = 0; d < D; d++) same &= out[t * D + d] == tab[ids[t] * D + d];
    CHECK(same);

    float *x = rnd(T * D, 3), *y = malloc((size_t)(T * D) * sizeof(float)), rstd[9];
    double *ref = malloc((size_t)(T * D) * sizeof(double)), rref[9];
    float eps = 1e-5f;
    for (int64_t t = 0; t < T; t++) {
        double ss = 0;
        for (int64_t d = 0; d < D; d++) ss += (double)x[t * D + d] * x[t * D + d];
        rref[t] = 1.0 / sqrt(ss / D + eps);
        for (int64_t d = 0; d < D; d++) ref[t * D + d] = x[t * D + d] * rref[t] * w[d];
    }
    ft_tensor tx = ft_t2(x, FT_F32, FT_DEV_CPU, T, D), tw = ft_t1(w, FT_F32, FT_DEV_CPU, D),
              ty = ft_t2(y, FT_F32, FT_DEV_CPU, T, D), tr = ft_t1(rstd, FT_F32, FT_DEV_CPU, T);
    b->rmsnorm(b, &tx, &tw, eps, &ty, &tr);
    CHECK(max_rel_err(y, ref, T * D) < 1e-6);
    CHECK(max_rel_err(rstd, rref, T) < 1e-6);
    b->rmsnorm(b, &tx, &tw, eps, &ty, NULL); /* rstd optional */
    CHECK(max_rel_err(y, ref, T * D) < 1e-6);
    free(tab);
    free(out);
    free(w);
    free(x);
    free(y);
    free(ref);
}

static void test_rope(ft_backend *b) {
    int64_t T = 5, H = 3, Dh = 8, half = 4;
    int32_t pos[5] = {0, 1, 7, 100, 4095};
    float inv[4];
    for (int i = 0; i < half; i++) inv[i] = (float)pow(10000.0, -2.0 * i / (double)Dh);
    float *x = rnd(T * H * Dh, 1), *x0 = malloc((size_t)(T * H * Dh) * sizeof(float));
    memcpy(x0, x, (size_t)(T * H * Dh) * sizeof(float));
    double *ref = malloc((size_t)(T * H * Dh) * sizeof(double));
    float mscale = 1.25f;
    /* direct HF formula: q*cos + rotate_half(q)*sin, cos/sin duplicated over halves */
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t d = 0; d < Dh; d++) {
                int64_t i = d % half;
                double ang = (double)(float)((float)pos[t] * inv[i]);
                double c = cos(ang) * mscale, s = sin(ang) * mscale;
                const float *r = x0 + (t * H + h) * Dh;
                double rot = d < half ? -(double)r[d + half] : (double)r[d - half];
                ref[(t * H + h) * Dh + d] = r[d] * c + rot * s;
            }
    ft_tensor tx = ft_t3(x, FT_F32, FT_DEV_CPU, T, H, Dh), tp = ft_t1(pos, FT_I32, FT_DEV_CPU, T),
              ti = ft_t1(inv, FT_F32, FT_DEV_CPU, half);
    b->rope(b, &tx, &tp, &ti, mscale, 0);
    CHECK(max_rel_err(x, ref, T * H * Dh) < 2e-6);
    /* inverse undoes the rotation (up to mscale^2) */
    b->rope(b, &tx, &tp, &ti, 1.0f / mscale, 1);
    for (int64_t i = 0; i < T * H * Dh; i++) ref[i] = x0[i];
    CHECK(max_rel_err(x, ref, T * H * Dh) < 1e-5);
    free(x);
    free(x0);
    free(ref);
}

/* naive attention: full score matrix in double with an explicit mask */
static void naive_attention(const float *q, const float *k, const float *v, int64_t Tq, int64_t Tk, int64_t Hq,
                            int64_t Hkv, int64_t Dh, const ft_attn_layout *L, double *out, double *lse) {
    double *s = malloc((size_t)Tk * sizeof(double));
    for (int64_t i = 0; i < Tq; i++)
        for (int64_t h = 0; h < Hq; h++) {
            int64_t g = h / (Hq / Hkv), qpos = L->q_start + i;
            double m = -INFINITY;
            for (int64_t j = 0; j < Tk; j++) {
                int ok = j <= qpos && (!L->doc_start || j >= L->doc_start[i]) && (L->window <= 0 || qpos - j < L->window) &&
                         !(L->excl_start && j >= L->excl_start[i] && j < L->excl_end[i]);
                if (!ok) {
                    s[j] = -INFINITY;
                    continue;
                }
                double dot = 0;
                for (int64_t d = 0; d < Dh; d++) dot += (double)q[(i * Hq + h) * Dh + d] * k[(j * Hkv + g) * Dh + d];
                s[j] = dot * L->scale;
                if (s[j] > m) m = s[j];
            }
            double z = 0;
            for (int64_t j = 0; j < Tk; j++) z += s[j] == -INFINITY ? 0 : exp(s[j] - m);
            for (int64_t d = 0; d < Dh; d++) {
                double o = 0;
                for (int64_t j = 0; j < Tk; j++)
                    if (s[j] != -INFINITY) o += exp(s[j] - m) / z * v[(j * Hkv + g) * Dh + d];
                out[(i * Hq + h) * Dh + d] = o;
            }
            lse[i * Hq + h] = m + log(z);
        }
    free(s);
}

/* es/ee: the layout's excluded key ranges per query (both NULL: none) */
static void one_attention_x(ft_backend *b, const char *name, int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv,
                            int64_t Dh, int64_t q_start, const int32_t *doc, int window, const int32_t *es,
                            const int32_t *ee) {
    float *q = rnd(Tq * Hq * Dh, 1), *k = rnd(Tk * Hkv * Dh, 1), *v = rnd(Tk * Hkv * Dh, 1);
    float *out = malloc((size_t)(Tq * Hq * Dh) * sizeof(float)), *lse = malloc((size_t)(Tq * Hq) * sizeof(float));
    double *ro = malloc((size_t)(Tq * Hq * Dh) * sizeof(double)), *rl = malloc((size_t)(Tq * Hq) * sizeof(double));
    ft_attn_layout L = {.q_start = q_start, .doc_start = doc, .window = window, .scale = 1.0f / sqrtf((float)Dh),
                        .excl_start = es, .excl_end = ee};
    naive_attention(q, k, v, Tq, Tk, Hq, Hkv, Dh, &L, ro, rl);
    ft_tensor tq = ft_t3(q, FT_F32, FT_DEV_CPU, Tq, Hq, Dh), tk = ft_t3(k, FT_F32, FT_DEV_CPU, Tk, Hkv, Dh),
              tv = ft_t3(v, FT_F32, FT_DEV_CPU, Tk, Hkv, Dh), to = ft_t3(out, FT_F32, FT_DEV_CPU, Tq, Hq, Dh),
              tl = ft_t2(lse, FT_F32, FT_DEV_CPU, Tq, Hq);
    b->attention(b, &tq, &tk, &tv, &to, &tl, &L);
    double eo = max_rel_err(out, ro, Tq * Hq * Dh), el = max_rel_err(lse, rl, Tq * Hq);
    CHECK_MSG(eo < 2e-5 && el < 2e-5, "attention %s: out err %g lse err %g", name, eo, el);
    /* determinism: one thread and all threads give the same bits */
    float *out1 = malloc((size_t)(Tq * Hq * Dh) * sizeof(float));
    ft_tensor to1 = ft_t3(out1, FT_F32, FT_DEV_CPU, Tq, Hq, Dh);
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    b->attention(b, &tq, &tk, &tv, &to1, NULL, &L);
    omp_set_num_threads(nt);
    CHECK_MSG(memcmp(out, out1, (size_t)(Tq * Hq * Dh) * sizeof(float)) == 0, "attention %s not deterministic", name);
    free(q);
    free(k);
    free(v);
    free(out);
    free(out1);
    free(lse);
    free(ro);
    free(rl);
}

static void one_attention(ft_backend *b, const char *name, int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv,
                          int64_t Dh, int64_t q_start, const int32_t *doc, int window) {
    one_attention_x(b, name, Tq, Tk, Hq, Hkv, Dh, q_start, doc, window, NULL, NULL);
}

/* Exclusions (excl_start/excl_end) against the explicit mask: DPO's shared-prompt layout and ranges that
 * straddle the online-softmax key blocks, the sample start, a window and cached decoding. */
static void test_attention_excl(ft_backend *b) {
    /* two pairs [prompt 6, chosen 5, last prompt token again, rejected 4], then [prompt 3, chosen 2, dup, rejected 3] */
    int32_t doc[30], es[30], ee[30];
    for (int t = 0; t < 30; t++) {
        doc[t] = t < 16 ? 0 : 16;
        es[t] = ee[t] = 0;
        if (t >= 11 && t < 16) es[t] = 5, ee[t] = 11;  /* dup + rejected: not the prompt's last token, not chosen */
        if (t >= 21) es[t] = 18, ee[t] = 21;
    }
    one_attention_x(b, "excl shared-prompt pairs", 30, 30, 2, 2, 8, 0, doc, 0, es, ee);
    one_attention_x(b, "excl shared-prompt pairs gqa 6/2", 30, 30, 6, 2, 4, 0, doc, 0, es, ee);
    one_attention_x(b, "excl shared-prompt pairs window", 30, 30, 2, 1, 8, 0, doc, 4, es, ee);
    int32_t les[200], lee[200];
    for (int t = 0; t < 200; t++) { /* ranges across the 64-key blocks, before lo, empty, reaching the query */
        les[t] = t < 100 ? 0 : t < 150 ? 30 : t < 180 ? 0 : 60;
        lee[t] = t < 100 ? 0 : t < 150 ? 95 : t < 180 ? 64 : t;
    }
    one_attention_x(b, "excl long (several key blocks)", 200, 200, 2, 1, 16, 0, NULL, 0, les, lee);
    int32_t ldoc[200];
    for (int t = 0; t < 200; t++) ldoc[t] = t < 40 ? 0 : 40; /* exclusions starting before the sample */
    one_attention_x(b, "excl long packed+window", 200, 200, 2, 2, 8, 0, ldoc, 90, les, lee);
    int32_t dz[3] = {0, 0, 0}, des[3] = {4, 4, 0}, dee[3] = {9, 17, 0};
    one_attention_x(b, "excl cached decode q_start=17", 3, 20, 4, 2, 8, 17, dz, 0, des, dee);
}

static void test_attention(ft_backend *b) {
    one_attention(b, "causal", 9, 9, 2, 2, 8, 0, NULL, 0);
    one_attention(b, "long causal (several key blocks)", 150, 150, 2, 1, 16, 0, NULL, 0);
    int32_t doc[16];
    for (int i = 0; i < 16; i++) doc[i] = i < 5 ? 0 : i < 12 ? 5 : 12; /* packed docs 5, 7, 4 */
    one_attention(b, "packed", 16, 16, 2, 2, 8, 0, doc, 0);
    one_attention(b, "packed+window", 16, 16, 2, 2, 8, 0, doc, 3);
    one_attention(b, "window", 100, 100, 1, 1, 8, 0, NULL, 70);
    one_attention(b, "gqa 4/2", 12, 12, 4, 2, 8, 0, NULL, 0);
    one_attention(b, "gqa 6/1 packed", 16, 16, 6, 1, 4, 0, doc, 0);
    int32_t dz[3] = {0, 0, 0};
    one_attention(b, "cached decode q_start=17", 3, 20, 4, 2, 8, 17, dz, 0);
    int32_t dw[3] = {2, 2, 2};
    one_attention(b, "cached decode window+doc", 3, 20, 4, 2, 8, 17, dw, 5);
}

static void test_elementwise(ft_backend *b) {
    int64_t T = 7, F = 13, n = T * F;
    float *g = rnd(n, 2), *u = rnd(n, 1), *o = malloc((size_t)n * sizeof(float)), *bias = rnd(F, 1);
    double *ref = malloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) ref[i] = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
    ft_tensor tg = ft_t2(g, FT_F32, FT_DEV_CPU, T, F), tu = ft_t2(u, FT_F32, FT_DEV_CPU, T, F),
              to = ft_t2(o, FT_F32, FT_DEV_CPU, T, F), tb = ft_t1(bias, FT_F32, FT_DEV_CPU, F);
    b->swiglu(b, &tg, &tu, &to);
    CHECK(max_rel_err(o, ref, n) < 1e-6);
    for (int64_t i = 0; i < n; i++) ref[i] = (double)g[i] + u[i];
    b->add(b, &tg, &tu, &tg); /* out aliases a */
    CHECK(max_rel_err(g, ref, n) < 1e-7);
    for (int64_t i = 0; i < n; i++) ref[i] = (double)g[i] + bias[i % F];
    b->add_bias(b, &tg, &tb);
    CHECK(max_rel_err(g, ref, n) < 1e-7);
    free(g);
    free(u);
    free(o);
    free(bias);
    free(ref);
}

static void one_logprobs(ft_backend *b, int64_t T, int64_t V, int64_t D) {
    float *h = rnd(T * D, 1), *W = rnd(V * D, 0.3f), *lp = malloc((size_t)T * sizeof(float)),
          *ls = malloc((size_t)T * sizeof(float));
    int32_t *tg = malloc((size_t)T * sizeof(int32_t));
    double *rlp = malloc((size_t)T * sizeof(double)), *rls = malloc((size_t)T * sizeof(double));
    double *z = malloc((size_t)V * sizeof(double));
    for (int64_t t = 0; t < T; t++) tg[t] = t % 3 == 1 ? -1 : (int32_t)(ft_rng_next(&rng) % (uint64_t)V);
    if (T > 2) tg[T - 1] = (int32_t)V - 1;
    for (int64_t t = 0; t < T; t++) {
        double m = -INFINITY, s = 0;
        for (int64_t v = 0; v < V; v++) {
            double a = 0;
            for (int64_t d = 0; d < D; d++) a += (double)h[t * D + d] * W[v * D + d];
            z[v] = a;
            if (a > m) m = a;
        }
        for (int64_t v = 0; v < V; v++) s += exp(z[v] - m);
        rls[t] = m + log(s);
        rlp[t] = tg[t] < 0 ? 0.0 : z[tg[t]] - rls[t];
    }
    ft_tensor th = ft_t2(h, FT_F32, FT_DEV_CPU, T, D), tW = ft_t2(W, FT_F32, FT_DEV_CPU, V, D),
              tt = ft_t1(tg, FT_I32, FT_DEV_CPU, T), tl = ft_t1(lp, FT_F32, FT_DEV_CPU, T),
              tls = ft_t1(ls, FT_F32, FT_DEV_CPU, T);
    b->token_logprobs(b, &th, &tW, &tt, &tl, &tls);
    double e1 = max_rel_err(lp, rlp, T), e2 = max_rel_err(ls, rls, T);
    CHECK_MSG(e1 < 2e-5 && e2 < 2e-5, "token_logprobs T=%lld V=%lld: logp err %g lse err %g", (long long)T,
              (long long)V, e1, e2);
    int zero = 1;
    for (int64_t t = 0; t < T; t++)
        if (tg[t] < 0) zero &= lp[t] == 0.0f;
    CHECK(zero);
    b->token_logprobs(b, &th, &tW, &tt, &tl, NULL); /* lse optional */
    CHECK(max_rel_err(lp, rlp, T) < 2e-5);
    free(h);
    free(W);
    free(lp);
    free(ls);
    free(tg);
    free(rlp);
    free(rls);
    free(z);
}

static void test_logprobs(ft_backend *b) {
    one_logprobs(b, 6, 50, 16);
    one_logprobs(b, 5, 5000, 24); /* several vocab chunks */
}

int main(void) {
    ft_rng_seed(&rng, 1234);
    ft_backend *b = ft_backend_cpu_create();
    CHECK(b != NULL);
    if (!b) TEST_DONE();
    test_memory(b);
    test_gemm(b);
    test_embedding_rmsnorm(b);
    test_rope(b);
    test_attention(b);
    test_attention_excl(b);
    test_elementwise(b);
    test_logprobs(b);
    b->destroy(b);
    TEST_DONE();
}
