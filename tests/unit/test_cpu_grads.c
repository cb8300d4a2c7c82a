/* CPU backend backward ops against central finite differences.
 *
 * For each op the test has its own naive forward pass in double; the scalar
 * loss is L = sum(out * R) with random R (for token_logprobs L = sum dlogp *
 * logp). Each input element is perturbed by +-eps in double and the numeric
 * gradient is compared with what the backend's backward op returns for
 * dout = R. Covers rmsnorm (dx, dw, acc), embedding (repeated ids, acc),
 * rope (inverse), swiglu, attention (causal, packed, window, GQA, q_start > 0, excluded ranges)
 * and token_logprobs (targets -1, several vocab chunks, dW accumulation). */
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
static float *zeros(int64_t n) { return calloc((size_t)n, sizeof(float)); }

/* numeric gradient of loss() with respect to x[0..n) (x is a double copy the loss reads) */
typedef double (*loss_fn)(void *ctx);
static void fd_check(const char *name, const float *grad, double *x, int64_t n, loss_fn f, void *ctx, double tol) {
    const double eps = 1e-5;
    double worst = 0;
    int64_t wi = -1;
    double wnum = 0;
    for (int64_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + eps;
        double lp = f(ctx);
        x[i] = x0 - eps;
        double lm = f(ctx);
        x[i] = x0;
        double num = (lp - lm) / (2 * eps);
        double err = fabs(grad[i] - num) / fmax(1.0, fabs(num));
        if (!(err <= worst)) {
            worst = isnan(err) ? INFINITY : err;
            wi = i;
            wnum = num;
        }
    }
    CHECK_MSG(worst < tol, "%s: worst gradient error %g at element %lld (backend %g, numeric %g)", name, worst,
              (long long)wi, wi >= 0 ? grad[wi] : 0.0, wnum);
}

static double *to_d(const float *p, int64_t n) {
    double *d = malloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) d[i] = p[i];
    return d;
}

/* ------------------------------------------------------------------ rmsnorm */

typedef struct {
    double *x, *w, *R;
    int64_t T, D;
    double eps;
} rms_ctx;

static double rms_loss(void *p) {
    rms_ctx *c = p;
    double L = 0;
    for (int64_t t = 0; t < c->T; t++) {
        double ss = 0;
        for (int64_t d = 0; d < c->D; d++) ss += c->x[t * c->D + d] * c->x[t * c->D + d];
        double r = 1.0 / sqrt(ss / c->D + c->eps);
        for (int64_t d = 0; d < c->D; d++) L += c->x[t * c->D + d] * r * c->w[d] * c->R[t * c->D + d];
    }
    return L;
}

static void test_rmsnorm(ft_backend *b) {
    int64_t T = 4, D = 70;
    float eps = 1e-5f;
    float *x = rnd(T * D, 1), *w = rnd(D, 1), *R = rnd(T * D, 1), *y = zeros(T * D), *rstd = zeros(T);
    float *dx = rnd(T * D, 1), *dw0 = rnd(D, 1), *dw = malloc((size_t)D * sizeof(float));
    memcpy(dw, dw0, (size_t)D * sizeof(float));
    ft_tensor tx = ft_t2(x, FT_F32, FT_DEV_CPU, T, D), tw = ft_t1(w, FT_F32, FT_DEV_CPU, D),
              ty = ft_t2(y, FT_F32, FT_DEV_CPU, T, D), tr = ft_t1(rstd, FT_F32, FT_DEV_CPU, T),
              tR = ft_t2(R, FT_F32, FT_DEV_CPU, T, D), tdx = ft_t2(dx, FT_F32, FT_DEV_CPU, T, D),
              tdw = ft_t1(dw, FT_F32, FT_DEV_CPU, D);
    b->rmsnorm(b, &tx, &tw, eps, &ty, &tr);
    b->rmsnorm_backward(b, &tR, &tx, &tw, &tr, &tdx, &tdw, 0);
    rms_ctx c = {to_d(x, T * D), to_d(w, D), to_d(R, T * D), T, D, eps};
    fd_check("rmsnorm dx", dx, c.x, T * D, rms_loss, &c, 1e-4);
    for (int64_t d = 0; d < D; d++) dw[d] -= dw0[d]; /* dw accumulates */
    fd_check("rmsnorm dw", dw, c.w, D, rms_loss, &c, 1e-4);
    /* acc = 1 adds into dx */
    float *dx2 = malloc((size_t)(T * D) * sizeof(float));
    memcpy(dx2, dx, (size_t)(T * D) * sizeof(float));
    ft_tensor tdx2 = ft_t2(dx2, FT_F32, FT_DEV_CPU, T, D);
    b->rmsnorm_backward(b, &tR, &tx, &tw, &tr, &tdx2, NULL, 1);
    int ok = 1;
    for (int64_t i = 0; i < T * D; i++) ok &= fabsf(dx2[i] - 2 * dx[i]) <= 1e-6f * fmaxf(1.0f, fabsf(dx[i]));
    CHECK(ok);
    free(x);
    free(w);
    free(R);
    free(y);
    free(rstd);
    free(dx);
    free(dx2);
    free(dw0);
    free(dw);
    free(c.x);
    free(c.w);
    free(c.R);
}

/* ------------------------------------------------------------------ embedding */

static void test_embedding(ft_backend *b) {
    int64_t V = 6, D = 5, T = 7;
    int32_t ids[7] = {1, 4, 1, 0, 5, 1, 4};
    float *dy = rnd(T * D, 1), *dt = rnd(V * D, 1);
    double *ref = calloc((size_t)(V * D), sizeof(double));
    for (int64_t t = 0; t < T; t++)
        for (int64_t d = 0; d < D; d++) ref[ids[t] * D + d] += dy[t * D + d];
    ft_tensor ti = ft_t1(ids, FT_I32, FT_DEV_CPU, T), tdy = ft_t2(dy, FT_F32, FT_DEV_CPU, T, D),
              tdt = ft_t2(dt, FT_F32, FT_DEV_CPU, V, D);
    b->embedding_backward(b, &ti, &tdy, &tdt, 0);
    int ok = 1;
    for (int64_t i = 0; i < V * D; i++) ok &= fabs(dt[i] - ref[i]) < 1e-6;
    CHECK(ok);
    b->embedding_backward(b, &ti, &tdy, &tdt, 1);
    ok = 1;
    for (int64_t i = 0; i < V * D; i++) ok &= fabs(dt[i] - 2 * ref[i]) < 1e-5;
    CHECK(ok);
    free(dy);
    free(dt);
    free(ref);
}

/* ------------------------------------------------------------------ rope */

typedef struct {
    double *x, *R, *inv;
    const int32_t *pos;
    int64_t T, H, Dh;
} rope_ctx;

static double rope_loss(void *p) {
    rope_ctx *c = p;
    int64_t half = c->Dh / 2;
    double L = 0;
    for (int64_t t = 0; t < c->T; t++)
        for (int64_t h = 0; h < c->H; h++)
            for (int64_t i = 0; i < half; i++) {
                double a = c->pos[t] * c->inv[i], cs = cos(a), sn = sin(a);
                const double *r = c->x + (t * c->H + h) * c->Dh;
                const double *g = c->R + (t * c->H + h) * c->Dh;
                L += (r[i] * cs - r[i + half] * sn) * g[i] + (r[i + half] * cs + r[i] * sn) * g[i + half];
            }
    return L;
}

static void test_rope(ft_backend *b) {
    int64_t T = 3, H = 2, Dh = 6;
    int32_t pos[3] = {0, 5, 33};
    float inv[3] = {1.0f, 0.1f, 0.01f};
    float *x = rnd(T * H * Dh, 1), *R = rnd(T * H * Dh, 1);
    rope_ctx c = {to_d(x, T * H * Dh), to_d(R, T * H * Dh), to_d(inv, 3), pos, T, H, Dh};
    /* gradient of the rotation = inverse rotation of dout */
    ft_tensor tR = ft_t3(R, FT_F32, FT_DEV_CPU, T, H, Dh), tp = ft_t1(pos, FT_I32, FT_DEV_CPU, T),
              ti = ft_t1(inv, FT_F32, FT_DEV_CPU, 3);
    b->rope(b, &tR, &tp, &ti, 1.0f, 1);
    fd_check("rope backward", R, c.x, T * H * Dh, rope_loss, &c, 1e-4);
    free(x);
    free(R);
    free(c.x);
    free(c.R);
    free(c.inv);
}

/* ------------------------------------------------------------------ swiglu */

typedef struct {
    double *g, *u, *R;
    int64_t n;
} swi_ctx;

static double swi_loss(void *p) {
    swi_ctx *c = p;
    double L = 0;
    for (int64_t i = 0; i < c->n; i++) L += c->g[i] / (1 + exp(-c->g[i])) * c->u[i] * c->R[i];
    return L;
}

static void test_swiglu(ft_backend *b) {
    int64_t T = 5, F = 9, n = T * F;
    float *g = rnd(n, 2), *u = rnd(n, 1), *R = rnd(n, 1), *dg = zeros(n), *du = zeros(n);
    ft_tensor tg = ft_t2(g, FT_F32, FT_DEV_CPU, T, F), tu = ft_t2(u, FT_F32, FT_DEV_CPU, T, F),
              tR = ft_t2(R, FT_F32, FT_DEV_CPU, T, F), tdg = ft_t2(dg, FT_F32, FT_DEV_CPU, T, F),
              tdu = ft_t2(du, FT_F32, FT_DEV_CPU, T, F);
    b->swiglu_backward(b, &tg, &tu, &tR, &tdg, &tdu);
    swi_ctx c = {to_d(g, n), to_d(u, n), to_d(R, n), n};
    fd_check("swiglu dgate", dg, c.g, n, swi_loss, &c, 1e-4);
    fd_check("swiglu dup", du, c.u, n, swi_loss, &c, 1e-4);
    free(g);
    free(u);
    free(R);
    free(dg);
    free(du);
    free(c.g);
    free(c.u);
    free(c.R);
}

/* ------------------------------------------------------------------ attention */

typedef struct {
    double *q, *k, *v, *R;
    int64_t Tq, Tk, Hq, Hkv, Dh;
    const ft_attn_layout *L;
} att_ctx;

static double att_loss(void *p) {
    att_ctx *c = p;
    const ft_attn_layout *L = c->L;
    double *s = malloc((size_t)c->Tk * sizeof(double)), loss = 0;
    for (int64_t i = 0; i < c->Tq; i++)
        for (int64_t h = 0; h < c->Hq; h++) {
            int64_t g = h / (c->Hq / c->Hkv), qpos = L->q_start + i;
            double m = -INFINITY;
            for (int64_t j = 0; j < c->Tk; j++) {
                int ok = j <= qpos && (!L->doc_start || j >= L->doc_start[i]) && (L->window <= 0 || qpos - j < L->window) &&
                         !(L->excl_start && j >= L->excl_start[i] && j < L->excl_end[i]);
                s[j] = -INFINITY;
                if (!ok) continue;
                double dot = 0;
                for (int64_t d = 0; d < c->Dh; d++) dot += c->q[(i * c->Hq + h) * c->Dh + d] * c->k[(j * c->Hkv + g) * c->Dh + d];
                s[j] = dot * L->scale;
                if (s[j] > m) m = s[j];
            }
            double z = 0;
            for (int64_t j = 0; j < c->Tk; j++) z += s[j] == -INFINITY ? 0 : exp(s[j] - m);
            for (int64_t j = 0; j < c->Tk; j++) {
                if (s[j] == -INFINITY) continue;
                double pr = exp(s[j] - m) / z;
                for (int64_t d = 0; d < c->Dh; d++)
                    loss += pr * c->v[(j * c->Hkv + g) * c->Dh + d] * c->R[(i * c->Hq + h) * c->Dh + d];
            }
        }
    free(s);
    return loss;
}

/* es/ee: the layout's excluded key ranges per query (both NULL: none) */
static void one_attention_x(ft_backend *b, const char *name, int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv,
                            int64_t Dh, int64_t q_start, const int32_t *doc, int window, const int32_t *es,
                            const int32_t *ee) {
    int64_t nq = Tq * Hq * Dh, nk = Tk * Hkv * Dh;
    float *q = rnd(nq, 1), *k = rnd(nk, 1), *v = rnd(nk, 1), *R = rnd(nq, 1);
    float *out = zeros(nq), *lse = zeros(Tq * Hq), *dq = rnd(nq, 1), *dk = rnd(nk, 1), *dv = rnd(nk, 1);
    ft_attn_layout L = {.q_start = q_start, .doc_start = doc, .window = window, .scale = 1.0f / sqrtf((float)Dh),
                        .excl_start = es, .excl_end = ee};
    ft_tensor tq = ft_t3(q, FT_F32, FT_DEV_CPU, Tq, Hq, Dh), tk = ft_t3(k, FT_F32, FT_DEV_CPU, Tk, Hkv, Dh),
              tv = ft_t3(v, FT_F32, FT_DEV_CPU, Tk, Hkv, Dh), to = ft_t3(out, FT_F32, FT_DEV_CPU, Tq, Hq, Dh),
              tl = ft_t2(lse, FT_F32, FT_DEV_CPU, Tq, Hq), tR = ft_t3(R, FT_F32, FT_DEV_CPU, Tq, Hq, Dh),
              tdq = ft_t3(dq, FT_F32, FT_DEV_CPU, Tq, Hq, Dh), tdk = ft_t3(dk, FT_F32, FT_DEV_CPU, Tk, Hkv, Dh),
              tdv = ft_t3(dv, FT_F32, FT_DEV_CPU, Tk, Hkv, Dh);
    b->attention(b, &tq, &tk, &tv, &to, &tl, &L);
    b->attention_backward(b, &tq, &tk, &tv, &to, &tl, &tR, &tdq, &tdk, &tdv, &L);
    att_ctx c = {to_d(q, nq), to_d(k, nk), to_d(v, nk), to_d(R, nq), Tq, Tk, Hq, Hkv, Dh, &L};
    char nm[128];
    snprintf(nm, sizeof nm, "attention %s dq", name);
    fd_check(nm, dq, c.q, nq, att_loss, &c, 1e-4);
    snprintf(nm, sizeof nm, "attention %s dk", name);
    fd_check(nm, dk, c.k, nk, att_loss, &c, 1e-4);
    snprintf(nm, sizeof nm, "attention %s dv", name);
    fd_check(nm, dv, c.v, nk, att_loss, &c, 1e-4);
    /* deterministic: one thread gives the same bits */
    float *dq1 = zeros(nq), *dk1 = zeros(nk), *dv1 = zeros(nk);
    ft_tensor tdq1 = ft_t3(dq1, FT_F32, FT_DEV_CPU, Tq, Hq, Dh), tdk1 = ft_t3(dk1, FT_F32, FT_DEV_CPU, Tk, Hkv, Dh),
              tdv1 = ft_t3(dv1, FT_F32, FT_DEV_CPU, Tk, Hkv, Dh);
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    b->attention_backward(b, &tq, &tk, &tv, &to, &tl, &tR, &tdq1, &tdk1, &tdv1, &L);
    omp_set_num_threads(nt);
    CHECK_MSG(!memcmp(dq, dq1, (size_t)nq * 4) && !memcmp(dk, dk1, (size_t)nk * 4) && !memcmp(dv, dv1, (size_t)nk * 4),
              "attention backward %s not deterministic", name);
    free(q);
    free(k);
    free(v);
    free(R);
    free(out);
    free(lse);
    free(dq);
    free(dk);
    free(dv);
    free(dq1);
    free(dk1);
    free(dv1);
    free(c.q);
    free(c.k);
    free(c.v);
    free(c.R);
}

static void one_attention(ft_backend *b, const char *name, int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv,
                          int64_t Dh, int64_t q_start, const int32_t *doc, int window) {
    one_attention_x(b, name, Tq, Tk, Hq, Hkv, Dh, q_start, doc, window, NULL, NULL);
}

/* excluded key ranges (DPO's shared-prompt layout): [prompt 3, chosen 3, dup, rejected 3] then a second pair */
static void test_attention_excl(ft_backend *b) {
    int32_t doc[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 10, 10, 10, 10, 10};
    int32_t es[16] = {0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 12, 12, 12};
    int32_t ee[16] = {0, 0, 0, 0, 0, 0, 6, 6, 6, 6, 0, 0, 0, 14, 14, 14};
    one_attention_x(b, "excl shared-prompt gqa", 16, 16, 4, 2, 4, 0, doc, 0, es, ee);
    one_attention_x(b, "excl shared-prompt window", 16, 16, 2, 1, 4, 0, doc, 4, es, ee);
    int32_t les[80], lee[80];
    for (int t = 0; t < 80; t++) les[t] = t < 70 ? 0 : 10, lee[t] = t < 70 ? 0 : 69; /* across the 64-key block */
    one_attention_x(b, "excl many keys", 80, 80, 2, 1, 4, 0, NULL, 0, les, lee);
    int32_t dz[3] = {1, 1, 1}, des[3] = {2, 0, 3}, dee[3] = {5, 0, 7};
    one_attention_x(b, "excl q_start=5", 3, 8, 2, 1, 4, 5, dz, 0, des, dee);
}

static void test_attention(ft_backend *b) {
    one_attention(b, "causal", 6, 6, 2, 2, 4, 0, NULL, 0);
    int32_t doc[10] = {0, 0, 0, 0, 4, 4, 4, 4, 4, 9}; /* packed docs 4, 5, 1 */
    one_attention(b, "packed gqa", 10, 10, 4, 2, 4, 0, doc, 0);
    one_attention(b, "packed window gqa", 10, 10, 4, 1, 4, 0, doc, 3);
    one_attention(b, "window", 12, 12, 2, 2, 4, 0, NULL, 4);
    int32_t dz[3] = {1, 1, 1};
    one_attention(b, "q_start=5", 3, 8, 2, 1, 4, 5, dz, 0);
    one_attention(b, "q_start=5 window", 3, 8, 2, 1, 4, 5, dz, 3);
    one_attention(b, "many keys", 80, 80, 2, 1, 4, 0, NULL, 0); /* more than one online-softmax block */
}

/* ------------------------------------------------------------------ token_logprobs */

typedef struct {
    double *h, *W, *dl;
    const int32_t *tg;
    int64_t T, V, D;
} tlp_ctx;

static double tlp_loss(void *p) {
    tlp_ctx *c = p;
    double *z = malloc((size_t)c->V * sizeof(double)), L = 0;
    for (int64_t t = 0; t < c->T; t++) {
        if (c->tg[t] < 0) continue;
        double m = -INFINITY, s = 0;
        for (int64_t v = 0; v < c->V; v++) {
            double a = 0;
            for (int64_t d = 0; d < c->D; d++) a += c->h[t * c->D + d] * c->W[v * c->D + d];
            z[v] = a;
            if (a > m) m = a;
        }
        for (int64_t v = 0; v < c->V; v++) s += exp(z[v] - m);
        L += c->dl[t] * (z[c->tg[t]] - m - log(s));
    }
    free(z);
    return L;
}

static void one_logprobs(ft_backend *b, int64_t T, int64_t V, int64_t D, int pass_lse, int check_w) {
    float *h = rnd(T * D, 1), *W = rnd(V * D, 0.5f), *dl = rnd(T, 1), *lp = zeros(T), *ls = zeros(T);
    float *dh = rnd(T * D, 1), *dW0 = rnd(V * D, 1), *dW = malloc((size_t)(V * D) * sizeof(float));
    memcpy(dW, dW0, (size_t)(V * D) * sizeof(float));
    int32_t *tg = malloc((size_t)T * sizeof(int32_t));
    for (int64_t t = 0; t < T; t++) tg[t] = t % 3 == 2 ? -1 : (int32_t)(ft_rng_next(&rng) % (uint64_t)V);
    ft_tensor th = ft_t2(h, FT_F32, FT_DEV_CPU, T, D), tW = ft_t2(W, FT_F32, FT_DEV_CPU, V, D),
              tt = ft_t1(tg, FT_I32, FT_DEV_CPU, T), tl = ft_t1(lp, FT_F32, FT_DEV_CPU, T),
              tls = ft_t1(ls, FT_F32, FT_DEV_CPU, T), tdl = ft_t1(dl, FT_F32, FT_DEV_CPU, T),
              tdh = ft_t2(dh, FT_F32, FT_DEV_CPU, T, D), tdW = ft_t2(dW, FT_F32, FT_DEV_CPU, V, D);
    b->token_logprobs(b, &th, &tW, &tt, &tl, &tls);
    b->token_logprobs_backward(b, &th, &tW, &tt, pass_lse ? &tls : NULL, &tdl, &tdh, &tdW);
    for (int64_t i = 0; i < V * D; i++) dW[i] -= dW0[i]; /* dW accumulates */
    tlp_ctx c = {to_d(h, T * D), to_d(W, V * D), to_d(dl, T), tg, T, V, D};
    char nm[96];
    snprintf(nm, sizeof nm, "token_logprobs T=%lld V=%lld dh", (long long)T, (long long)V);
    fd_check(nm, dh, c.h, T * D, tlp_loss, &c, 2e-4);
    if (check_w) {
        snprintf(nm, sizeof nm, "token_logprobs T=%lld V=%lld dW", (long long)T, (long long)V);
        fd_check(nm, dW, c.W, V * D, tlp_loss, &c, 2e-4);
    }
    /* dW may be NULL (frozen lm_head); dh unchanged */
    float *dh2 = zeros(T * D);
    ft_tensor tdh2 = ft_t2(dh2, FT_F32, FT_DEV_CPU, T, D);
    b->token_logprobs_backward(b, &th, &tW, &tt, &tls, &tdl, &tdh2, NULL);
    CHECK(!memcmp(dh, dh2, (size_t)(T * D) * 4));
    free(h);
    free(W);
    free(dl);
    free(lp);
    free(ls);
    free(dh);
    free(dh2);
    free(dW0);
    free(dW);
    free(tg);
    free(c.h);
    free(c.W);
    free(c.dl);
}

static void test_logprobs(ft_backend *b) {
    one_logprobs(b, 6, 17, 8, 1, 1);
    one_logprobs(b, 5, 11, 6, 0, 1);    /* lse recomputed */
    one_logprobs(b, 3, 4500, 4, 1, 0);  /* two vocab chunks; dh only (dW would need 18k loss evals) */
}

int main(void) {
    ft_rng_seed(&rng, 99);
    ft_backend *b = ft_backend_cpu_create();
    CHECK(b != NULL);
    if (!b) TEST_DONE();
    test_rmsnorm(b);
    test_embedding(b);
    test_rope(b);
    test_swiglu(b);
    test_attention(b);
    test_attention_excl(b);
    test_logprobs(b);
    b->destroy(b);
    TEST_DONE();
}
