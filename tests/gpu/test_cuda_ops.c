/* test_cuda_ops: every op of the CUDA backend against its CPU twin.
 *
 * Fresh random inputs per op, identical on both backends; the GPU's outputs are
 * poisoned with NaN first, so an element the kernel forgot to write fails.
 * Without a usable GPU the test checks that create fails cleanly and exits 77
 * (skipped). Tolerance: |gpu - cpu| <= tol * (|cpu| + rms(cpu)), 1e-5 for fp32
 * outputs (attention backward: 1e-5 * sqrt(Tk / 256) beyond 256 keys, since both
 * sides sum Tk terms in different orders; 1.2e-5 measured at Tk = 1024 on an H100).
 * BF16/F16 storage (gemm, rmsnorm, swiglu, attention) is checked against the CPU on
 * the same rounded inputs, within the 16-bit rounding of the output: 1e-2 for bf16,
 * 2e-3 for fp16. */
#include "finetune/backend/backend.h"
#include "test.h"

#include <stdint.h>

static ft_backend *G, *C;
static ft_rng rng;

typedef struct pair {
    ft_tensor g, c;
} pair;

static pair mk(ft_dtype dt, int ndim, const int64_t *shape) {
    pair p;
    ft_error e;
    if (ft_backend_tensor(G, dt, ndim, shape, &p.g, &e) || ft_backend_tensor(C, dt, ndim, shape, &p.c, &e)) {
        fprintf(stderr, "alloc failed: %s\n", e.msg);
        exit(1);
    }
    return p;
}

/* a GPU-only 1-D tensor of n elements */
static ft_tensor gpu_1d(ft_dtype dt, int64_t n) {
    ft_tensor t;
    ft_error e;
    if (ft_backend_tensor(G, dt, 1, &n, &t, &e)) {
        fprintf(stderr, "alloc failed: %s\n", e.msg);
        exit(1);
    }
    return t;
}

static void put(pair *p, const void *host) {
    G->upload(G, p->g.data, host, ft_nbytes(&p->g));
    C->upload(C, p->c.data, host, ft_nbytes(&p->c));
}

/* random normal * scale on both */
static pair frand(int ndim, int64_t d0, int64_t d1, int64_t d2, float scale) {
    int64_t sh[3] = {d0, d1, d2};
    pair p = mk(FT_F32, ndim, sh);
    int64_t n = ft_numel(&p.g);
    float *h = malloc((size_t)n * sizeof(float) + 4);
    for (int64_t i = 0; i < n; i++) h[i] = ft_rng_normal(&rng) * scale;
    put(&p, h);
    free(h);
    return p;
}

/* output: NaN on the GPU, zeros on the CPU */
static pair fout(int ndim, int64_t d0, int64_t d1, int64_t d2) {
    int64_t sh[3] = {d0, d1, d2};
    pair p = mk(FT_F32, ndim, sh);
    int64_t n = ft_numel(&p.g);
    float *h = malloc((size_t)n * sizeof(float) + 4);
    for (int64_t i = 0; i < n; i++) h[i] = NAN;
    G->upload(G, p.g.data, h, (size_t)n * 4);
    memset(h, 0, (size_t)n * 4);
    C->upload(C, p.c.data, h, (size_t)n * 4);
    free(h);
    return p;
}

static pair ints(int64_t n, const int32_t *v) {
    pair p = mk(FT_I32, 1, &n);
    put(&p, v);
    return p;
}

static pair irand(int64_t n, int32_t lo, int32_t hi) { /* uniform in [lo, hi) */
    int32_t *v = malloc((size_t)n * 4 + 4);
    for (int64_t i = 0; i < n; i++) v[i] = lo + (int32_t)(ft_rng_next(&rng) % (uint64_t)(hi - lo));
    pair p = ints(n, v);
    free(v);
    return p;
}

static void drop(pair *p) {
    G->free(G, p->g.data);
    C->free(C, p->c.data);
}

/* Compare all elements of the GPU and CPU tensors: |gpu - cpu| <= tol (|cpu| + rms(cpu)) + atol; report the
 * first few mismatches. atol is for results that are zero in exact arithmetic, where both sides hold only
 * rounding noise of different summation orders. */
static int cmp_silent;
static void cmp_atol(const char *what, const pair *p, double tol, double atol) {
    int64_t n = ft_numel(&p->g);
    float *a = malloc((size_t)n * 4 + 4), *b = malloc((size_t)n * 4 + 4);
    G->download(G, a, p->g.data, (size_t)n * 4);
    C->download(C, b, p->c.data, (size_t)n * 4);
    double ss = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(b[i])) ss += (double)b[i] * b[i];
    double rms = n ? sqrt(ss / (double)n) : 0, worst = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        int ok = (isinf(b[i]) && a[i] == b[i]) || d <= tol * (fabs(b[i]) + rms) + atol;
        if (isnan(a[i])) ok = 0;
        if (!ok) {
            if (bad < 5) fprintf(stderr, "  %s[%lld]: cuda %.9g, cpu %.9g\n", what, (long long)i, a[i], b[i]);
            bad++;
        }
        if (isfinite(d) && d / (fabs(b[i]) + rms + 1e-30) > worst) worst = d / (fabs(b[i]) + rms + 1e-30);
    }
    CHECK_MSG(bad == 0, "%s: %lld of %lld elements differ (tol %g, worst rel %.3g)", what, (long long)bad,
              (long long)n, tol, worst);
    if (!bad && !cmp_silent) fprintf(stderr, "ok %-40s n=%-8lld worst rel %.3g\n", what, (long long)n, worst);
    free(a);
    free(b);
}
static void cmp(const char *what, const pair *p, double tol) { cmp_atol(what, p, tol, 0); }
static void cmp_quiet(const pair *p, double tol) { /* checked, but no "ok" line (loops of many small cases) */
    cmp_silent = 1;
    cmp_atol("(quiet case)", p, tol, 0);
    cmp_silent = 0;
}

/* ------------------------------------------------------------------ forward ops */

static void t_gemm(int64_t M, int64_t N, int64_t K, int ta, int tb, float alpha, float beta) {
    pair A = ta ? frand(2, K, M, 0, 1) : frand(2, M, K, 0, 1);
    pair B = tb ? frand(2, N, K, 0, 1) : frand(2, K, N, 0, 1);
    pair Cm = beta != 0 ? frand(2, M, N, 0, 1) : fout(2, M, N, 0);
    G->gemm(G, &A.g, ta, &B.g, tb, &Cm.g, alpha, beta);
    C->gemm(C, &A.c, ta, &B.c, tb, &Cm.c, alpha, beta);
    char w[96];
    snprintf(w, sizeof w, "gemm M%lld N%lld K%lld ta%d tb%d b%g", (long long)M, (long long)N, (long long)K, ta, tb,
             beta);
    cmp(w, &Cm, 1e-5);
    drop(&A), drop(&B), drop(&Cm);
}

/* The cuBLASLt plan cache: a shape seen before reuses its plan (on the emulator, which counts heuristic queries: at
 * most one for five identical GEMMs); an operand at another alignment gets a plan of its own (the emulator aborts
 * when an algorithm runs on an operand less aligned than it was chosen for); more shapes than the cache holds evict
 * and rebuild plans, every result still the CPU's. */
__attribute__((weak)) long cuemu_lt_heuristic_calls(void);
static void t_gemm_plans(void) {
    int64_t M = 29, N = 61, K = 43;
    pair A = frand(1, M * K + 1, 0, 0, 1), B = frand(2, K, N, 0, 1), Cm = fout(2, M, N, 0);
    long h0 = cuemu_lt_heuristic_calls ? cuemu_lt_heuristic_calls() : 0;
    char w[96];
    for (int off = 0; off < 2; off++) { /* off 1: A starts 4 bytes into its allocation */
        ft_tensor ag = ft_t2((char *)A.g.data + 4 * off, FT_F32, FT_DEV_CUDA, M, K),
                  ac = ft_t2((char *)A.c.data + 4 * off, FT_F32, FT_DEV_CPU, M, K);
        for (int rep = 0; rep < 5; rep++) {
            G->gemm(G, &ag, 0, &B.g, 0, &Cm.g, 1.0f, 0.0f);
            C->gemm(C, &ac, 0, &B.c, 0, &Cm.c, 1.0f, 0.0f);
            snprintf(w, sizeof w, "gemm plan reuse, A offset %d bytes, rep %d", 4 * off, rep);
            cmp(w, &Cm, 1e-5);
        }
        if (cuemu_lt_heuristic_calls) {
            long h = cuemu_lt_heuristic_calls() - h0;
            CHECK_MSG(h == off + 1, "cuBLASLt heuristic queried %ld times for %d shape/alignment(s) run 5 times each", h,
                      off + 1);
        }
    }
    drop(&A), drop(&B), drop(&Cm);
    for (int round = 0; round < 2; round++) /* 110 shapes: more than the cache holds, twice */
        for (int64_t m = 1; m <= 110; m++) {
            pair a = frand(2, m, 3, 0, 1), b = frand(2, 3, 5, 0, 1), c = fout(2, m, 5, 0);
            G->gemm(G, &a.g, 0, &b.g, 0, &c.g, 1.0f, 0.0f);
            C->gemm(C, &a.c, 0, &b.c, 0, &c.c, 1.0f, 0.0f);
            if (m % 37 == 1 || m == 110) {
                snprintf(w, sizeof w, "gemm plan eviction round %d M%lld", round, (long long)m);
                cmp(w, &c, 1e-5);
            } else {
                cmp_quiet(&c, 1e-5);
            }
            drop(&a), drop(&b), drop(&c);
        }
}

static void t_embedding(void) {
    int64_t V = 50, D = 33, T = 40;
    pair tab = frand(2, V, D, 0, 1), ids = irand(T, 0, (int32_t)V), out = fout(2, T, D, 0);
    G->embedding(G, &ids.g, &tab.g, &out.g);
    C->embedding(C, &ids.c, &tab.c, &out.c);
    cmp("embedding", &out, 0);
    /* backward: overwrite (poisoned) and accumulate */
    pair dout = frand(2, T, D, 0, 1), dt = fout(2, V, D, 0);
    G->embedding_backward(G, &ids.g, &dout.g, &dt.g, 0);
    C->embedding_backward(C, &ids.c, &dout.c, &dt.c, 0);
    cmp("embedding_backward acc=0", &dt, 1e-5);
    pair dt2 = frand(2, V, D, 0, 1);
    G->embedding_backward(G, &ids.g, &dout.g, &dt2.g, 1);
    C->embedding_backward(C, &ids.c, &dout.c, &dt2.c, 1);
    cmp("embedding_backward acc=1", &dt2, 1e-5);
    drop(&tab), drop(&ids), drop(&out), drop(&dout), drop(&dt), drop(&dt2);
}

static void t_rmsnorm(int64_t T, int64_t D) {
    pair x = frand(2, T, D, 0, 2), w = frand(1, D, 0, 0, 1), out = fout(2, T, D, 0), r = fout(1, T, 0, 0);
    G->rmsnorm(G, &x.g, &w.g, 1e-5f, &out.g, &r.g);
    C->rmsnorm(C, &x.c, &w.c, 1e-5f, &out.c, &r.c);
    char wh[64];
    snprintf(wh, sizeof wh, "rmsnorm %lldx%lld", (long long)T, (long long)D);
    cmp(wh, &out, 1e-5);
    cmp("rmsnorm rstd", &r, 1e-5);
    /* backward, dx overwritten (poisoned) then accumulated; dw accumulates, and may be NULL */
    pair g = frand(2, T, D, 0, 1), dx = fout(2, T, D, 0), dw = frand(1, D, 0, 0, 1);
    G->rmsnorm_backward(G, &g.g, &x.g, &w.g, &r.g, &dx.g, &dw.g, 0);
    C->rmsnorm_backward(C, &g.c, &x.c, &w.c, &r.c, &dx.c, &dw.c, 0);
    snprintf(wh, sizeof wh, "rmsnorm_backward dx %lldx%lld", (long long)T, (long long)D);
    cmp(wh, &dx, 1e-5);
    cmp("rmsnorm_backward dw", &dw, 1e-5);
    G->rmsnorm_backward(G, &g.g, &x.g, &w.g, &r.g, &dx.g, NULL, 1);
    C->rmsnorm_backward(C, &g.c, &x.c, &w.c, &r.c, &dx.c, NULL, 1);
    cmp("rmsnorm_backward dx acc=1, dw NULL", &dx, 1e-5);
    drop(&x), drop(&w), drop(&out), drop(&r), drop(&g), drop(&dx), drop(&dw);
}

static void t_rope(int64_t T, int64_t H, int64_t Dh, float mscale, int inverse) {
    pair x = frand(3, T, H, Dh, 1), pos = irand(T, 0, 5000);
    float *f = malloc((size_t)Dh * 4);
    for (int64_t i = 0; i < Dh / 2; i++) f[i] = powf(10000.f, -2.f * (float)i / (float)Dh);
    int64_t half = Dh / 2;
    pair inv = mk(FT_F32, 1, &half);
    put(&inv, f);
    free(f);
    G->rope(G, &x.g, &pos.g, &inv.g, mscale, inverse);
    C->rope(C, &x.c, &pos.c, &inv.c, mscale, inverse);
    char w[64];
    snprintf(w, sizeof w, "rope Dh%lld mscale%g inv%d", (long long)Dh, mscale, inverse);
    cmp(w, &x, 1e-5);
    drop(&x), drop(&pos), drop(&inv);
}

static void t_elementwise(void) {
    int64_t T = 37, F = 129;
    pair g = frand(2, T, F, 0, 3), u = frand(2, T, F, 0, 1), o = fout(2, T, F, 0);
    G->swiglu(G, &g.g, &u.g, &o.g);
    C->swiglu(C, &g.c, &u.c, &o.c);
    cmp("swiglu", &o, 1e-5);
    pair d = frand(2, T, F, 0, 1), dg = fout(2, T, F, 0), du = fout(2, T, F, 0);
    G->swiglu_backward(G, &g.g, &u.g, &d.g, &dg.g, &du.g);
    C->swiglu_backward(C, &g.c, &u.c, &d.c, &dg.c, &du.c);
    cmp("swiglu_backward dgate", &dg, 1e-5);
    cmp("swiglu_backward dup", &du, 1e-5);
    pair s = fout(2, T, F, 0);
    G->add(G, &g.g, &u.g, &s.g);
    C->add(C, &g.c, &u.c, &s.c);
    cmp("add", &s, 1e-6);
    G->add(G, &s.g, &u.g, &s.g); /* out aliases a */
    C->add(C, &s.c, &u.c, &s.c);
    cmp("add (aliased)", &s, 1e-6);
    pair bias = frand(1, F, 0, 0, 1);
    G->add_bias(G, &s.g, &bias.g);
    C->add_bias(C, &s.c, &bias.c);
    cmp("add_bias", &s, 1e-6);
    drop(&g), drop(&u), drop(&o), drop(&d), drop(&dg), drop(&du), drop(&s), drop(&bias);
}

/* ------------------------------------------------------------------ optimizer */

static void t_optim(void) {
    int64_t R = 33, K = 517;
    pair w = frand(2, R, K, 0, 0.2f), g = frand(2, R, K, 0, 1), m = frand(2, R, K, 0, 0.1f),
         v = frand(2, R, K, 0, 0.1f);
    /* v must be non-negative: square it on both sides via a second-moment step with beta2 = 0 first */
    ft_adamw_args a0 = {.lr = 0, .beta1 = 0.9f, .beta2 = 0.0f, .eps = 1e-8f, .weight_decay = 0, .grad_scale = 1, .step = 1};
    G->adamw(G, &w.g, &v.g, &m.g, &v.g, &a0);
    C->adamw(C, &w.c, &v.c, &m.c, &v.c, &a0);
    for (int step = 1; step <= 3; step++) {
        ft_adamw_args a = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f,
                           .grad_scale = 0.37f, .step = step};
        G->adamw(G, &w.g, &g.g, &m.g, &v.g, &a);
        C->adamw(C, &w.c, &g.c, &m.c, &v.c, &a);
    }
    cmp("adamw w", &w, 1e-5);
    cmp("adamw m", &m, 1e-5);
    cmp("adamw v", &v, 1e-5);
    double sg = G->sumsq(G, &g.g), sc = C->sumsq(C, &g.c);
    CHECK_MSG(fabs(sg - sc) <= 1e-9 * sc, "sumsq: cuda %.12g, cpu %.12g", sg, sc);
    /* sumsq_many: each backend's result is bit for bit its own per-tensor sum (what the optimizer summed before),
     * over tensors of different sizes (one above 1024 x 256 elements, one empty); the two backends agree to 1e-9 */
    {
        pair big = frand(1, 300000, 0, 0, 1), tiny = frand(1, 7, 0, 0, 3);
        int64_t zero_n = 0;
        pair empty = mk(FT_F32, 1, &zero_n);
        const ft_tensor *lg[5] = {&g.g, &big.g, &empty.g, &tiny.g, &m.g}, *lc[5] = {&g.c, &big.c, &empty.c, &tiny.c, &m.c};
        double eg = 0, ec = 0;
        for (int i = 0; i < 5; i++) eg += G->sumsq(G, lg[i]), ec += C->sumsq(C, lc[i]);
        double mg = G->sumsq_many(G, 5, lg), mc = C->sumsq_many(C, 5, lc);
        CHECK_MSG(memcmp(&mg, &eg, sizeof mg) == 0, "sumsq_many on cuda: %.17g, per tensor %.17g", mg, eg);
        CHECK_MSG(memcmp(&mc, &ec, sizeof mc) == 0, "sumsq_many on cpu: %.17g, per tensor %.17g", mc, ec);
        CHECK_MSG(fabs(mg - mc) <= 1e-9 * mc, "sumsq_many: cuda %.12g, cpu %.12g", mg, mc);
        CHECK_MSG(G->sumsq_many(G, 0, lg) == 0 && C->sumsq_many(C, 0, lc) == 0, "sumsq_many of no tensors is not 0");
        if (memcmp(&mg, &eg, sizeof mg) == 0 && memcmp(&mc, &ec, sizeof mc) == 0)
            fprintf(stderr, "ok sumsq_many (5 tensors)                   bit-identical to per-tensor sums\n");
        drop(&big), drop(&tiny), drop(&empty);
    }
    G->scale(G, &g.g, -1.5f);
    C->scale(C, &g.c, -1.5f);
    cmp("scale", &g, 1e-7);
    drop(&w), drop(&g), drop(&m), drop(&v);
}

/* ------------------------------------------------------------------ log-probs */

static void t_logprobs(int64_t T, int64_t D, int64_t V, int with_lse) {
    pair h = frand(2, T, D, 0, 1), W = frand(2, V, D, 0, 0.3f);
    int32_t *tg = malloc((size_t)T * 4);
    for (int64_t t = 0; t < T; t++) tg[t] = (t % 7 == 3) ? -100 : (int32_t)(ft_rng_next(&rng) % (uint64_t)V);
    tg[0] = 0;
    tg[T - 1] = (int32_t)V - 1; /* the edges of the vocab */
    pair tgt = ints(T, tg);
    free(tg);
    pair logp = fout(1, T, 0, 0), lse = fout(1, T, 0, 0);
    G->token_logprobs(G, &h.g, &W.g, &tgt.g, &logp.g, &lse.g);
    C->token_logprobs(C, &h.c, &W.c, &tgt.c, &logp.c, &lse.c);
    char w[96];
    snprintf(w, sizeof w, "token_logprobs T%lld D%lld V%lld", (long long)T, (long long)D, (long long)V);
    cmp(w, &logp, 1e-5);
    cmp("token_logprobs lse", &lse, 1e-5);
    pair dl = frand(1, T, 0, 0, 1), dh = fout(2, T, D, 0), dW = frand(2, V, D, 0, 0.1f);
    G->token_logprobs_backward(G, &h.g, &W.g, &tgt.g, with_lse ? &lse.g : NULL, &dl.g, &dh.g, &dW.g);
    C->token_logprobs_backward(C, &h.c, &W.c, &tgt.c, with_lse ? &lse.c : NULL, &dl.c, &dh.c, &dW.c);
    snprintf(w, sizeof w, "token_logprobs_backward dh (lse %s)", with_lse ? "given" : "NULL");
    cmp(w, &dh, 1e-5);
    cmp("token_logprobs_backward dW", &dW, 1e-5);
    G->token_logprobs_backward(G, &h.g, &W.g, &tgt.g, &lse.g, &dl.g, &dh.g, NULL);
    C->token_logprobs_backward(C, &h.c, &W.c, &tgt.c, &lse.c, &dl.c, &dh.c, NULL);
    cmp("token_logprobs_backward dh (dW NULL)", &dh, 1e-5);
    drop(&h), drop(&W), drop(&tgt), drop(&logp), drop(&lse), drop(&dl), drop(&dh), drop(&dW);
}

/* ------------------------------------------------------------------ attention */

/* docs: lengths of packed samples over the Tk keys (summing to Tk); window; q_start = Tk - Tq; es/ee: [Tq]
 * excluded key ranges per query (both NULL: none) */
static void t_attention_x(int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv, int64_t Dh, int window, const int *docs,
                          int ndocs, const int32_t *es, const int32_t *ee) {
    int64_t q0 = Tk - Tq;
    int32_t *ds = malloc((size_t)Tq * 4);
    {
        int32_t start = 0, k = 0;
        for (int d = 0; d < ndocs; d++) {
            for (int j = 0; j < docs[d]; j++, k++)
                if (k >= q0) ds[k - q0] = start;
            start += docs[d];
        }
        for (; k < Tk; k++)
            if (k >= q0) ds[k - q0] = start; /* docs shorter than Tk: the rest is one more sample */
    }
    pair dsp = ints(Tq, ds);
    pair q = frand(3, Tq, Hq, Dh, 1), k = frand(3, Tk, Hkv, Dh, 1), v = frand(3, Tk, Hkv, Dh, 1);
    pair out = fout(3, Tq, Hq, Dh), lse = fout(2, Tq, Hq, 0);
    ft_attn_layout Lg = {.q_start = q0, .doc_start = dsp.g.data, .window = window, .scale = 1.0f / sqrtf((float)Dh)},
                   Lc = Lg;
    Lc.doc_start = dsp.c.data;
    pair esp = ints(Tq, es ? es : ds), eep = ints(Tq, ee ? ee : ds); /* (ds: placeholders, unused without es) */
    if (es) {
        Lg.excl_start = esp.g.data, Lg.excl_end = eep.g.data;
        Lc.excl_start = esp.c.data, Lc.excl_end = eep.c.data;
    }
    G->attention(G, &q.g, &k.g, &v.g, &out.g, &lse.g, &Lg);
    C->attention(C, &q.c, &k.c, &v.c, &out.c, &lse.c, &Lc);
    char w[128];
    snprintf(w, sizeof w, "attention Tq%lld Tk%lld H%lld/%lld Dh%lld W%d docs%d%s", (long long)Tq, (long long)Tk,
             (long long)Hq, (long long)Hkv, (long long)Dh, window, ndocs, es ? " excl" : "");
    cmp(w, &out, 1e-5);
    cmp("  lse", &lse, 1e-5);
    pair dout = frand(3, Tq, Hq, Dh, 1), dq = fout(3, Tq, Hq, Dh), dk = fout(3, Tk, Hkv, Dh), dv = fout(3, Tk, Hkv, Dh);
    G->attention_backward(G, &q.g, &k.g, &v.g, &out.g, &lse.g, &dout.g, &dq.g, &dk.g, &dv.g, &Lg);
    C->attention_backward(C, &q.c, &k.c, &v.c, &out.c, &lse.c, &dout.c, &dq.c, &dk.c, &dv.c, &Lc);
    /* with one-token samples (every query sees only itself) dq and dk are exactly zero: allow rounding noise of
     * the O(1) products, 1e-6 */
    double tol = Tk > 256 ? 1e-5 * sqrt((double)Tk / 256) : 1e-5;
    cmp_atol("  backward dq", &dq, tol, 1e-6);
    cmp_atol("  backward dk", &dk, tol, 1e-6);
    cmp("  backward dv", &dv, tol);
    drop(&dsp), drop(&q), drop(&k), drop(&v), drop(&out), drop(&lse), drop(&dout), drop(&dq), drop(&dk), drop(&dv);
    drop(&esp), drop(&eep);
    free(ds);
}

static void t_attention(int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv, int64_t Dh, int window, const int *docs,
                        int ndocs) {
    t_attention_x(Tq, Tk, Hq, Hkv, Dh, window, docs, ndocs, NULL, NULL);
}

/* DPO's shared-prompt layout: per pair [prompt P, chosen C, the prompt's last token again, rejected R] as one
 * sample, the last three fields of pr (P, C, R per pair); the copy and the rejected tokens exclude the
 * prompt's last token and the chosen reply. */
static void t_attention_shared(int64_t Hq, int64_t Hkv, int64_t Dh, int window, const int *pr, int npairs) {
    int docs[16], T = 0;
    for (int p = 0; p < npairs; p++) T += docs[p] = pr[3 * p] + pr[3 * p + 1] + 1 + pr[3 * p + 2];
    int32_t *es = calloc((size_t)T, 4), *ee = calloc((size_t)T, 4);
    for (int p = 0, start = 0; p < npairs; start += docs[p], p++) {
        int P = pr[3 * p], C = pr[3 * p + 1];
        for (int t = start + P + C; t < start + docs[p]; t++) es[t] = start + P - 1, ee[t] = start + P + C;
    }
    t_attention_x(T, T, Hq, Hkv, Dh, window, docs, npairs, es, ee);
    free(es);
    free(ee);
}


/* ------------------------------------------------------------------ half-precision storage */

/* GPU tensor of dtype dt (BF16/F16) and CPU F32 tensor with the same values (rounded to dt). */
static uint16_t to16(ft_dtype dt, float v) { return dt == FT_BF16 ? ft_f32_to_bf16(v) : ft_f32_to_f16(v); }
static float from16(ft_dtype dt, uint16_t h) { return dt == FT_BF16 ? ft_bf16_to_f32(h) : ft_f16_to_f32(h); }

static pair hrand(ft_dtype dt, int ndim, int64_t d0, int64_t d1, int64_t d2, float scale, int poison) {
    int64_t sh[3] = {d0, d1, d2};
    pair p;
    ft_error e;
    if (ft_backend_tensor(G, dt, ndim, sh, &p.g, &e) || ft_backend_tensor(C, FT_F32, ndim, sh, &p.c, &e)) {
        fprintf(stderr, "alloc failed: %s\n", e.msg);
        exit(1);
    }
    int64_t n = ft_numel(&p.g);
    uint16_t *h = malloc((size_t)n * 2 + 4);
    float *f = malloc((size_t)n * 4 + 4);
    for (int64_t i = 0; i < n; i++) {
        h[i] = poison ? to16(dt, NAN) : to16(dt, ft_rng_normal(&rng) * scale);
        f[i] = poison ? 0.f : from16(dt, h[i]);
    }
    G->upload(G, p.g.data, h, (size_t)n * 2);
    C->upload(C, p.c.data, f, (size_t)n * 4);
    free(h);
    free(f);
    return p;
}

/* compare a 16-bit GPU result with the CPU's fp32 one (tolerance covers the final rounding) */
static void cmp16(const char *what, const pair *p, double tol) {
    int64_t n = ft_numel(&p->g);
    uint16_t *a = malloc((size_t)n * 2 + 4);
    float *b = malloc((size_t)n * 4 + 4);
    G->download(G, a, p->g.data, (size_t)n * 2);
    C->download(C, b, p->c.data, (size_t)n * 4);
    double ss = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)b[i] * b[i];
    double rms = n ? sqrt(ss / (double)n) : 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        float x = from16(p->g.dtype, a[i]);
        double d = fabs((double)x - b[i]);
        if (isnan(x) || !(d <= tol * (fabs(b[i]) + rms))) {
            if (bad < 5) fprintf(stderr, "  %s[%lld]: cuda %.6g, cpu %.6g\n", what, (long long)i, x, b[i]);
            bad++;
        } else if (d / (fabs(b[i]) + rms + 1e-30) > worst)
            worst = d / (fabs(b[i]) + rms + 1e-30);
    }
    CHECK_MSG(bad == 0, "%s: %lld of %lld elements differ (tol %g)", what, (long long)bad, (long long)n, tol);
    if (!bad) fprintf(stderr, "ok %-40s n=%-8lld worst rel %.3g\n", what, (long long)n, worst);
    free(a);
    free(b);
}

/* cast: F32 -> BF16/F16 must round exactly as the host conversions (to nearest even), ties, subnormals,
 * overflow, infinities and -0 included; 16 -> F32 is exact; BF16 -> F16 goes through fp32. */
static void t_cast(void) {
    enum { N = 4099 };
    float *x = malloc(N * sizeof(float));
    const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65520.0f, 1e6f, -1e6f, INFINITY, -INFINITY,
                             0x1p-24f, 0x1p-25f, 0x1.8p-25f, 0x1p-14f, 0x1.ffcp-15f, 1.0f + 0x1p-11f,
                             1.0f + 0x3p-11f, 1.0f + 0x1p-8f, 1.0f + 0x3p-8f, 3e38f, 1e-40f};
    int ns = (int)(sizeof special / sizeof *special);
    for (int i = 0; i < N; i++) {
        if (i < ns) {
            x[i] = special[i];
        } else {
            uint32_t u = (uint32_t)ft_rng_next(&rng); /* any bit pattern, NaNs excluded below */
            if (i % 3 == 0) u = (u & 0xffffe000u) | 0x1000u; /* exact fp16 ties in the normal range */
            if (i % 3 == 1) u = (u & 0xffff0000u) | 0x8000u; /* exact bf16 ties */
            memcpy(&x[i], &u, 4);
            if (isnan(x[i])) x[i] = 1.5f;
        }
    }
    ft_dtype dts[2] = {FT_BF16, FT_F16};
    ft_tensor f32 = gpu_1d(FT_F32, N), h16[2] = {gpu_1d(FT_BF16, N), gpu_1d(FT_F16, N)}, back = gpu_1d(FT_F32, N);
    G->upload(G, f32.data, x, N * sizeof(float));
    uint16_t *h = malloc(N * 2);
    float *y = malloc(N * sizeof(float));
    for (int k = 0; k < 2; k++) {
        G->cast(G, &f32, &h16[k]);
        G->download(G, h, h16[k].data, N * 2);
        int bad = 0;
        for (int i = 0; i < N; i++)
            if (h[i] != to16(dts[k], x[i]) && bad++ < 5)
                fprintf(stderr, "  cast F32 -> %s of %a: cuda %#06x, host %#06x\n", ft_dtype_name(dts[k]), x[i], h[i],
                        to16(dts[k], x[i]));
        CHECK_MSG(bad == 0, "cast F32 -> %s: %d of %d differ from the host rounding", ft_dtype_name(dts[k]), bad, N);
        G->cast(G, &h16[k], &back); /* and back: exact */
        G->download(G, y, back.data, N * sizeof(float));
        int bad_back = 0;
        for (int i = 0; i < N; i++) bad_back += memcmp(&y[i], &(float){from16(dts[k], h[i])}, 4) != 0;
        CHECK_MSG(bad_back == 0, "cast %s -> F32: %d of %d not exact", ft_dtype_name(dts[k]), bad_back, N);
        if (!bad && !bad_back) fprintf(stderr, "ok cast F32 <-> %-28s n=%d bit-exact\n", ft_dtype_name(dts[k]), N);
    }
    G->cast(G, &h16[0], &h16[1]); /* BF16 -> F16 through fp32 */
    uint16_t *b16 = malloc(N * 2);
    G->download(G, b16, h16[0].data, N * 2);
    G->download(G, h, h16[1].data, N * 2);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += h[i] != ft_f32_to_f16(ft_bf16_to_f32(b16[i]));
    CHECK_MSG(bad == 0, "cast BF16 -> F16: %d of %d differ", bad, N);
    if (!bad) fprintf(stderr, "ok cast BF16 -> F16                          n=%d bit-exact\n", N);
    G->free(G, f32.data), G->free(G, h16[0].data), G->free(G, h16[1].data), G->free(G, back.data);
    free(x), free(h), free(y), free(b16);
}

/* offload staging: device -> pinned host -> device, asynchronous on the stream, exact after sync */
static void t_host_staging(void) {
    enum { N = 100003 };
    ft_tensor a = gpu_1d(FT_F32, N), b = gpu_1d(FT_F32, N);
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) x[i] = ft_rng_normal(&rng);
    G->upload(G, a.data, x, N * sizeof(float));
    float *pinned = G->alloc_host(G, N * sizeof(float));
    CHECK_MSG(pinned != NULL, "alloc_host of %d floats failed", N);
    if (!pinned) return;
    G->to_host_async(G, pinned, a.data, N * sizeof(float));
    G->zero(G, a.data, N * sizeof(float)); /* queued after the copy: must not reach the host copy */
    G->sync(G);
    CHECK_MSG(memcmp(pinned, x, N * sizeof(float)) == 0, "to_host_async: the pinned copy differs");
    G->from_host_async(G, b.data, pinned, N * sizeof(float));
    G->sync(G);
    G->download(G, y, b.data, N * sizeof(float));
    CHECK_MSG(memcmp(y, x, N * sizeof(float)) == 0, "from_host_async: the device copy differs");
    if (!memcmp(pinned, x, N * sizeof(float)) && !memcmp(y, x, N * sizeof(float)))
        fprintf(stderr, "ok host staging (to/from_host_async)      n=%d exact\n", N);
    G->free_host(G, pinned);
    G->free(G, a.data), G->free(G, b.data);
    free(x), free(y);
}

static void t_half(ft_dtype dt) {
    const char *nm = ft_dtype_name(dt);
    const double tol16 = dt == FT_BF16 ? 1e-2 : 2e-3;
    char w[96];
    int64_t M = 45, N = 70, K = 130;
    for (int ta = 0; ta < 2; ta++) {
        pair A = ta ? hrand(dt, 2, K, M, 0, 1, 0) : hrand(dt, 2, M, K, 0, 1, 0);
        pair B = hrand(dt, 2, N, K, 0, 1, 0), Cm = hrand(dt, 2, M, N, 0, 0, 1), Cf = fout(2, M, N, 0);
        G->gemm(G, &A.g, ta, &B.g, 1, &Cm.g, 1.0f, 0.0f);
        C->gemm(C, &A.c, ta, &B.c, 1, &Cm.c, 1.0f, 0.0f);
        snprintf(w, sizeof w, "gemm %s ta%d tb1", nm, ta);
        cmp16(w, &Cm, tol16);
        G->gemm(G, &A.g, ta, &B.g, 1, &Cf.g, 1.0f, 0.0f); /* 16-bit inputs, F32 output */
        C->gemm(C, &A.c, ta, &B.c, 1, &Cf.c, 1.0f, 0.0f);
        snprintf(w, sizeof w, "gemm %s inputs, F32 out, ta%d", nm, ta);
        cmp(w, &Cf, 1e-5);
        drop(&A), drop(&B), drop(&Cm), drop(&Cf);
    }
    pair x = hrand(dt, 2, 19, 200, 0, 1, 0), wt = hrand(dt, 1, 200, 0, 0, 1, 0), o = hrand(dt, 2, 19, 200, 0, 0, 1);
    pair r = fout(1, 19, 0, 0);
    G->rmsnorm(G, &x.g, &wt.g, 1e-5f, &o.g, &r.g);
    C->rmsnorm(C, &x.c, &wt.c, 1e-5f, &o.c, &r.c);
    snprintf(w, sizeof w, "rmsnorm %s", nm);
    cmp16(w, &o, tol16);
    cmp("  rstd (F32)", &r, 1e-5);
    pair u = hrand(dt, 2, 19, 200, 0, 1, 0);
    G->swiglu(G, &x.g, &u.g, &o.g);
    C->swiglu(C, &x.c, &u.c, &o.c);
    snprintf(w, sizeof w, "swiglu %s", nm);
    cmp16(w, &o, tol16);
    drop(&x), drop(&wt), drop(&o), drop(&r), drop(&u);

    /* the fused lm_head + log-softmax with 16-bit h and W (the mixed-precision path): 16-bit GEMMs into fp32
     * logits, fp32 softmax; log-probs and lse at the fp32 tolerance, the gradients (whose GEMMs read the logit
     * gradient rounded to 16 bits) within the 16-bit rounding; two vocabulary chunks (8192 + 808 columns) */
    {
        int64_t T = 2048, D = 64, V = 9000;
        pair h = hrand(dt, 2, T, D, 0, 1, 0), W = hrand(dt, 2, V, D, 0, 0.3f, 0);
        int32_t *tg = malloc((size_t)T * 4);
        for (int64_t t = 0; t < T; t++) tg[t] = (t % 5 == 2) ? -100 : (int32_t)(ft_rng_next(&rng) % (uint64_t)V);
        tg[T - 1] = (int32_t)V - 1;
        pair tgt = ints(T, tg);
        free(tg);
        pair logp = fout(1, T, 0, 0), lse = fout(1, T, 0, 0), dl = frand(1, T, 0, 0, 1);
        G->token_logprobs(G, &h.g, &W.g, &tgt.g, &logp.g, &lse.g);
        C->token_logprobs(C, &h.c, &W.c, &tgt.c, &logp.c, &lse.c);
        snprintf(w, sizeof w, "token_logprobs %s T%lld V%lld", nm, (long long)T, (long long)V);
        cmp(w, &logp, 1e-5);
        cmp("  lse (F32)", &lse, 1e-5);
        pair dh = fout(2, T, D, 0), dW = frand(2, V, D, 0, 0.1f);
        G->token_logprobs_backward(G, &h.g, &W.g, &tgt.g, &lse.g, &dl.g, &dh.g, &dW.g);
        C->token_logprobs_backward(C, &h.c, &W.c, &tgt.c, &lse.c, &dl.c, &dh.c, &dW.c);
        /* dh and dW sum D or T products whose factor G was rounded to 16 bits (as PyTorch's autocast rounds its
         * logit gradient): the error follows the sum of |terms|, not the result, so 3x the output-rounding
         * tolerance (emulator, sm_90: worst 0.0198 bf16 dW, 0.0017 fp16 dW) */
        cmp("  backward dh (F32)", &dh, 3 * tol16);
        cmp("  backward dW (F32, accumulated)", &dW, 3 * tol16);
        pair dh16 = hrand(dt, 2, T, D, 0, 0, 1);
        G->token_logprobs_backward(G, &h.g, &W.g, &tgt.g, NULL, &dl.g, &dh16.g, NULL);
        C->token_logprobs_backward(C, &h.c, &W.c, &tgt.c, NULL, &dl.c, &dh16.c, NULL);
        snprintf(w, sizeof w, "  backward dh (%s, lse NULL, dW NULL)", nm);
        cmp16(w, &dh16, 3 * tol16);
        drop(&h), drop(&W), drop(&tgt), drop(&logp), drop(&lse), drop(&dl), drop(&dh), drop(&dW), drop(&dh16);
    }

    int64_t T = 75, Hq = 4, Hkv = 2, Dh = 96;
    int32_t ds[75];
    for (int i = 0; i < T; i++) ds[i] = i < 40 ? 0 : 40;
    pair dsp = ints(T, ds);
    pair q = hrand(dt, 3, T, Hq, Dh, 1, 0), k = hrand(dt, 3, T, Hkv, Dh, 1, 0), v = hrand(dt, 3, T, Hkv, Dh, 1, 0);
    pair out = hrand(dt, 3, T, Hq, Dh, 0, 1), lse = fout(2, T, Hq, 0);
    ft_attn_layout Lg = {.doc_start = dsp.g.data, .window = 24, .scale = 1.0f / sqrtf((float)Dh)}, Lc = Lg;
    Lc.doc_start = dsp.c.data;
    G->attention(G, &q.g, &k.g, &v.g, &out.g, &lse.g, &Lg);
    C->attention(C, &q.c, &k.c, &v.c, &out.c, &lse.c, &Lc);
    snprintf(w, sizeof w, "attention %s (packed, window 24)", nm);
    cmp16(w, &out, tol16);
    cmp("  lse (F32)", &lse, 1e-5);
    drop(&dsp), drop(&q), drop(&k), drop(&v), drop(&out), drop(&lse);
}

/* The 16-bit compute path's one-pass ops: rmsnorm of fp32 x/w into a 16-bit out must give exactly the bits of
 * rmsnorm into fp32 and then cast (on each backend), and the backends agree within the 16-bit rounding; add of an
 * fp32 a and a 16-bit b into fp32 must equal the cast-then-add exactly, and the CPU's result exactly. */
static int same_bits(ft_backend *be, const ft_tensor *x, const ft_tensor *y) {
    size_t n = ft_nbytes(x);
    char *a = malloc(n + 1), *c = malloc(n + 1);
    be->download(be, a, x->data, n);
    be->download(be, c, y->data, n);
    int same = n == ft_nbytes(y) && memcmp(a, c, n) == 0;
    free(a), free(c);
    return same;
}
static void t_fused_casts(ft_dtype dt) {
    const char *nm = ft_dtype_name(dt);
    const double tol16 = dt == FT_BF16 ? 1e-2 : 2e-3;
    char w[96];
    int64_t T = 37, D = 300, sh[2] = {T, D};
    pair x = frand(2, T, D, 0, 2), wt = frand(1, D, 0, 0, 1), f = fout(2, T, D, 0), r = fout(1, T, 0, 0);
    pair o16 = mk(dt, 2, sh), c16 = mk(dt, 2, sh);
    G->rmsnorm(G, &x.g, &wt.g, 1e-5f, &o16.g, &r.g); /* one pass */
    C->rmsnorm(C, &x.c, &wt.c, 1e-5f, &o16.c, &r.c);
    G->rmsnorm(G, &x.g, &wt.g, 1e-5f, &f.g, NULL); /* two passes */
    C->rmsnorm(C, &x.c, &wt.c, 1e-5f, &f.c, NULL);
    G->cast(G, &f.g, &c16.g);
    C->cast(C, &f.c, &c16.c);
    CHECK_MSG(same_bits(G, &o16.g, &c16.g), "rmsnorm F32 -> %s on cuda differs from rmsnorm then cast", nm);
    CHECK_MSG(same_bits(C, &o16.c, &c16.c), "rmsnorm F32 -> %s on the cpu differs from rmsnorm then cast", nm);
    pair cmpp = {o16.g, f.c};
    snprintf(w, sizeof w, "rmsnorm F32 -> %s (= rmsnorm + cast)", nm);
    cmp16(w, &cmpp, tol16);
    cmp("  rstd", &r, 1e-5);
    /* add: fp32 a + 16-bit b (c16, the same bits on both) into fp32, and in place over a */
    pair a = frand(2, T, D, 0, 1), s1 = fout(2, T, D, 0), bf = fout(2, T, D, 0), s2 = fout(2, T, D, 0);
    G->add(G, &a.g, &c16.g, &s1.g);
    C->add(C, &a.c, &c16.c, &s1.c);
    G->cast(G, &c16.g, &bf.g);
    C->cast(C, &c16.c, &bf.c);
    G->add(G, &a.g, &bf.g, &s2.g);
    CHECK_MSG(same_bits(G, &s1.g, &s2.g), "add F32 + %s on cuda differs from cast then add", nm);
    snprintf(w, sizeof w, "add F32 + %s -> F32 (exact)", nm);
    cmp(w, &s1, 0);
    G->add(G, &a.g, &c16.g, &a.g);
    C->add(C, &a.c, &c16.c, &a.c);
    cmp("  in place over a", &a, 0);
    drop(&x), drop(&wt), drop(&f), drop(&r), drop(&o16), drop(&c16), drop(&a), drop(&s1), drop(&bf), drop(&s2);
}

/* Naive attention in double on the host with the whole visibility rule of backend.h (exclusions included),
 * for the layouts the CPU twin does not take: out, lse, and the gradients for dout. */
static void ref_attention(int Tq, int Tk, int Hq, int Hkv, int Dh, const ft_attn_layout *L, const int32_t *ds,
                          const int32_t *es, const int32_t *ee, const float *q, const float *k, const float *v,
                          const float *dout, float *out, float *lse, float *dq, float *dk, float *dv) {
    int grp = Hq / Hkv;
    double *p = malloc((size_t)Tk * sizeof(double));
    memset(dk, 0, (size_t)Tk * Hkv * Dh * 4);
    memset(dv, 0, (size_t)Tk * Hkv * Dh * 4);
    double *gk = calloc((size_t)Tk * Hkv * Dh, sizeof(double)), *gv = calloc((size_t)Tk * Hkv * Dh, sizeof(double));
    for (int i = 0; i < Tq; i++)
        for (int h = 0; h < Hq; h++) {
            int hk = h / grp, qi = (int)L->q_start + i;
            const float *qr = q + ((size_t)i * Hq + h) * Dh, *dor = dout + ((size_t)i * Hq + h) * Dh;
            double m = -INFINITY, l = 0;
            for (int j = 0; j < Tk; j++) {
                int vis = j >= ds[i] && j <= qi && (L->window <= 0 || qi - j < L->window) && !(j >= es[i] && j < ee[i]);
                double s = -INFINITY;
                if (vis) {
                    s = 0;
                    for (int d = 0; d < Dh; d++) s += (double)qr[d] * k[((size_t)j * Hkv + hk) * Dh + d];
                    s *= L->scale;
                }
                p[j] = s;
                if (s > m) m = s;
            }
            for (int j = 0; j < Tk; j++) l += p[j] = p[j] == -INFINITY ? 0 : exp(p[j] - m);
            double Di = 0;
            for (int d = 0; d < Dh; d++) {
                double o = 0;
                for (int j = 0; j < Tk; j++) o += p[j] / l * v[((size_t)j * Hkv + hk) * Dh + d];
                out[((size_t)i * Hq + h) * Dh + d] = (float)o;
                Di += o * dor[d];
            }
            lse[(size_t)i * Hq + h] = (float)(m + log(l));
            for (int d = 0; d < Dh; d++) dq[((size_t)i * Hq + h) * Dh + d] = 0;
            for (int j = 0; j < Tk; j++) {
                if (p[j] == 0) continue;
                double pj = p[j] / l, dp = 0;
                const float *kr = k + ((size_t)j * Hkv + hk) * Dh, *vr = v + ((size_t)j * Hkv + hk) * Dh;
                for (int d = 0; d < Dh; d++) dp += (double)dor[d] * vr[d];
                double dsij = pj * (dp - Di) * L->scale;
                for (int d = 0; d < Dh; d++) {
                    dq[((size_t)i * Hq + h) * Dh + d] += (float)(dsij * kr[d]);
                    gk[((size_t)j * Hkv + hk) * Dh + d] += dsij * qr[d];
                    gv[((size_t)j * Hkv + hk) * Dh + d] += pj * dor[d];
                }
            }
        }
    for (size_t x = 0; x < (size_t)Tk * Hkv * Dh; x++) dk[x] = (float)gk[x], dv[x] = (float)gv[x];
    free(p), free(gk), free(gv);
}

/* Attention with BF16/F16 storage, forward and backward (on tensor cores where cuda_flash.cu covers the case,
 * else the scalar kernels), against the CPU twin on the same rounded inputs; with excl (DPO's shared-prompt
 * layout: the last excl of the Tk keys do not see the excl before them) against ref_attention instead.
 * Tolerances: the forward pass's as for every 16-bit op (the output's rounding); the backward pass has the
 * rounded out in D = rowsum(dout * out) and, on tensor cores, P and dS rounded to 16 bits before their products:
 * 3e-2 (bf16) and 6e-3 (fp16), about 1.7x the worst seen on the emulator (bf16 0.018 on tensor cores, 0.017
 * with the scalar kernels; fp16 0.0028). */
static void t_attention16(ft_dtype dt, int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv, int64_t Dh, int window,
                          const int *docs, int ndocs, int excl) {
    const char *nm = ft_dtype_name(dt);
    const double tol16 = dt == FT_BF16 ? 1e-2 : 2e-3, tolb = dt == FT_BF16 ? 3e-2 : 6e-3;
    int64_t q0 = Tk - Tq;
    int32_t *ds = malloc((size_t)Tq * 4), *es = malloc((size_t)Tq * 4), *ee = malloc((size_t)Tq * 4);
    {
        int32_t start = 0, k = 0;
        for (int d = 0; d < ndocs; d++) {
            for (int j = 0; j < docs[d]; j++, k++)
                if (k >= q0) ds[k - q0] = start;
            start += docs[d];
        }
        for (; k < Tk; k++)
            if (k >= q0) ds[k - q0] = start;
    }
    for (int64_t i = 0; i < Tq; i++) { /* the last excl keys (rejected reply) skip the excl before them */
        int rej = q0 + i >= Tk - excl;
        es[i] = rej ? (int32_t)(Tk - 2 * excl) : 0;
        ee[i] = rej ? (int32_t)(Tk - excl) : 0;
    }
    pair dsp = ints(Tq, ds), esp = ints(Tq, es), eep = ints(Tq, ee);
    pair q = hrand(dt, 3, Tq, Hq, Dh, 1, 0), k = hrand(dt, 3, Tk, Hkv, Dh, 1, 0), v = hrand(dt, 3, Tk, Hkv, Dh, 1, 0);
    pair out = hrand(dt, 3, Tq, Hq, Dh, 0, 1), lse = fout(2, Tq, Hq, 0), dout = hrand(dt, 3, Tq, Hq, Dh, 1, 0);
    pair dq = hrand(dt, 3, Tq, Hq, Dh, 0, 1), dk = hrand(dt, 3, Tk, Hkv, Dh, 0, 1), dv = hrand(dt, 3, Tk, Hkv, Dh, 0, 1);
    ft_attn_layout Lg = {q0, dsp.g.data, window, 1.0f / sqrtf((float)Dh), excl ? esp.g.data : NULL,
                         excl ? eep.g.data : NULL},
                   Lc = Lg;
    Lc.doc_start = dsp.c.data;
    G->attention(G, &q.g, &k.g, &v.g, &out.g, &lse.g, &Lg);
    G->attention_backward(G, &q.g, &k.g, &v.g, &out.g, &lse.g, &dout.g, &dq.g, &dk.g, &dv.g, &Lg);
    if (!excl) {
        C->attention(C, &q.c, &k.c, &v.c, &out.c, &lse.c, &Lc);
        C->attention_backward(C, &q.c, &k.c, &v.c, &out.c, &lse.c, &dout.c, &dq.c, &dk.c, &dv.c, &Lc);
    } else { /* the reference into the CPU halves of the pairs */
        size_t nq = (size_t)(Tq * Hq * Dh), nk = (size_t)(Tk * Hkv * Dh);
        float *hq = malloc(nq * 4), *hk = malloc(nk * 4), *hv = malloc(nk * 4), *hd = malloc(nq * 4);
        float *ho = malloc(nq * 4), *hl = malloc((size_t)(Tq * Hq) * 4), *hdq = malloc(nq * 4), *hdk = malloc(nk * 4),
              *hdv = malloc(nk * 4);
        C->download(C, hq, q.c.data, nq * 4), C->download(C, hk, k.c.data, nk * 4);
        C->download(C, hv, v.c.data, nk * 4), C->download(C, hd, dout.c.data, nq * 4);
        ref_attention((int)Tq, (int)Tk, (int)Hq, (int)Hkv, (int)Dh, &Lg, ds, es, ee, hq, hk, hv, hd, ho, hl, hdq, hdk,
                      hdv);
        C->upload(C, out.c.data, ho, nq * 4), C->upload(C, lse.c.data, hl, (size_t)(Tq * Hq) * 4);
        C->upload(C, dq.c.data, hdq, nq * 4), C->upload(C, dk.c.data, hdk, nk * 4), C->upload(C, dv.c.data, hdv, nk * 4);
        free(hq), free(hk), free(hv), free(hd), free(ho), free(hl), free(hdq), free(hdk), free(hdv);
    }
    char w[128];
    snprintf(w, sizeof w, "attention %s Tq%lld Tk%lld H%lld/%lld Dh%lld W%d docs%d%s", nm, (long long)Tq,
             (long long)Tk, (long long)Hq, (long long)Hkv, (long long)Dh, window, ndocs, excl ? " excl" : "");
    cmp16(w, &out, tol16);
    cmp("  lse (F32)", &lse, 1e-5);
    cmp16("  backward dq", &dq, tolb);
    cmp16("  backward dk", &dk, tolb);
    cmp16("  backward dv", &dv, tolb);
    if (Hq / Hkv >= 4) { /* dk, dv sum a GQA group's heads: the same bits again (no atomics; the emulator
                          * shuffles the thread order of every run) */
        size_t nb = (size_t)ft_nbytes(&dk.g);
        uint16_t *a = malloc(nb), *b = malloc(nb);
        G->download(G, a, dk.g.data, nb);
        G->attention_backward(G, &q.g, &k.g, &v.g, &out.g, &lse.g, &dout.g, &dq.g, &dk.g, &dv.g, &Lg);
        G->download(G, b, dk.g.data, nb);
        CHECK_MSG(memcmp(a, b, nb) == 0, "attention %s backward: dk differs between two runs", nm);
        free(a), free(b);
    }
    free(ds), free(es), free(ee);
    drop(&dsp), drop(&esp), drop(&eep), drop(&q), drop(&k), drop(&v), drop(&out), drop(&lse), drop(&dout);
    drop(&dq), drop(&dk), drop(&dv);
}

/* ------------------------------------------------------------------ memory and bad calls */


/* NF4 dequantization: random packed bytes and absmax, odd n with a partial last block; F32 exact, BF16 output */
static void t_nf4(int64_t n, int blocksize) {
    int64_t nbytes = (n + 1) / 2, nb = (n + blocksize - 1) / blocksize;
    pair q = mk(FT_U8, 1, &nbytes);
    uint8_t *hq = malloc((size_t)nbytes);
    for (int64_t i = 0; i < nbytes; i++) hq[i] = (uint8_t)(ft_rng_next(&rng) & 255);
    put(&q, hq);
    free(hq);
    pair am = frand(1, nb, 0, 0, 0.1f);
    pair out = fout(1, n, 0, 0);
    G->nf4_dequant(G, &q.g, &am.g, blocksize, &out.g);
    C->nf4_dequant(C, &q.c, &am.c, blocksize, &out.c);
    cmp("nf4_dequant", &out, 0);
    ft_tensor o16;
    ft_error e;
    if (ft_backend_tensor(G, FT_BF16, 1, &n, &o16, &e) == 0) {
        G->nf4_dequant(G, &q.g, &am.g, blocksize, &o16);
        pair p16 = {o16, out.c};
        cmp16("nf4_dequant bf16", &p16, 1.0 / 128);
        G->free(G, o16.data);
    }
    drop(&q);
    drop(&am);
    drop(&out);
}

/* LoRA dropout: the GPU's mask must equal the CPU's exactly (same counter-based hash), F32 values exactly;
 * BF16/F16 storage keeps exactly the CPU's mask and the kept values are x*scale rounded once. */
static void t_dropout(int64_t n, float p, uint64_t seed) {
    char w[96];
    pair x = frand(1, n, 0, 0, 1.0f), out = fout(1, n, 0, 0);
    G->dropout(G, &x.g, &out.g, p, seed);
    C->dropout(C, &x.c, &out.c, p, seed);
    snprintf(w, sizeof w, "dropout p=%g seed=%llu (exact)", (double)p, (unsigned long long)seed);
    cmp(w, &out, 0);
    float *hx = malloc((size_t)n * 4 + 4), *hc = malloc((size_t)n * 4 + 4);
    C->download(C, hx, x.c.data, (size_t)n * 4);
    C->download(C, hc, out.c.data, (size_t)n * 4);
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) kept += hc[i] != 0;
    CHECK_MSG(n < 10000 || fabs((double)kept / (double)n - (1 - p)) < 0.02, "dropout keep rate %g, want %g",
              (double)kept / (double)n, 1 - (double)p);
    const ft_dtype half[2] = {FT_BF16, FT_F16};
    for (int hi = 0; hi < 2; hi++) {
        ft_dtype dt = half[hi];
        pair h = hrand(dt, 1, n, 0, 0, 1.0f, 0), ho = hrand(dt, 1, n, 0, 0, 0, 1);
        G->dropout(G, &h.g, &ho.g, p, seed);
        uint16_t *a = malloc((size_t)n * 2 + 4), *in = malloc((size_t)n * 2 + 4);
        G->download(G, a, ho.g.data, (size_t)n * 2);
        G->download(G, in, h.g.data, (size_t)n * 2);
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) {
            float xi = from16(dt, in[i]), want = hc[i] != 0 ? xi * (1.0f / (1.0f - p)) : 0.0f;
            uint16_t wb = hc[i] != 0 ? to16(dt, want) : to16(dt, 0.0f);
            if (a[i] != wb && !(hc[i] != 0 && xi == 0)) bad++;
        }
        CHECK_MSG(bad == 0, "dropout %s: %lld of %lld elements differ from the CPU mask / rounding",
                  ft_dtype_name(dt), (long long)bad, (long long)n);
        if (!bad) fprintf(stderr, "ok dropout %s: the CPU's mask, exactly\n", ft_dtype_name(dt));
        free(a), free(in);
        drop(&h), drop(&ho);
    }
    /* in place on the GPU: same result */
    G->dropout(G, &x.g, &x.g, p, seed);
    pair inplace = {x.g, out.c};
    cmp("dropout in place", &inplace, 0);
    free(hx), free(hc);
    drop(&x), drop(&out);
}

static void t_memory(void) {
    size_t u0, p0, u1, p1, u2;
    G->memory(G, &u0, &p0);
    void *x = G->alloc(G, 1 << 20);
    CHECK(x != NULL);
    G->memory(G, &u1, &p1);
    CHECK(u1 >= u0 + (1 << 20));
    CHECK(p1 >= u1);
    G->free(G, x);
    G->memory(G, &u2, NULL);
    CHECK(u2 == u0);
    /* an impossible allocation returns NULL and leaves the backend usable */
    void *huge = G->alloc(G, (size_t)1 << 52);
    CHECK(huge == NULL);
    G->memory(G, &u2, NULL);
    CHECK(u2 == u0);
    /* our own cap (mem_limit, the T4-on-an-H100 runs): counted with the cuBLASLt workspace (32 MiB here), an
     * allocation past it fails like a full GPU, nothing is held, and what fits still works */
    G->mem_limit = u0 + ((size_t)64 << 20);
    void *fits = G->alloc(G, (size_t)16 << 20);
    void *over = G->alloc(G, (size_t)60 << 20);
    CHECK_MSG(fits != NULL, "16 MiB under a cap 64 MiB above what is held was refused");
    CHECK_MSG(over == NULL, "60 MiB more past the cap was allowed");
    G->memory(G, &u2, NULL);
    CHECK(u2 == u0 + ((size_t)16 << 20));
    G->free(G, fits);
    fits = G->alloc(G, (size_t)31 << 20);
    CHECK_MSG(fits != NULL, "31 MiB under the cap after a free was refused");
    G->free(G, fits);
    G->mem_limit = 0;
    if (!over) fprintf(stderr, "ok mem_limit: refused past the cap, allowed under it\n");
    pair z = frand(1, 1000, 0, 0, 1);
    G->zero(G, z.g.data, ft_nbytes(&z.g));
    C->zero(C, z.c.data, ft_nbytes(&z.c));
    cmp("zero after a failed alloc", &z, 0);
    pair y = fout(1, 1000, 0, 0);
    G->copy(G, y.g.data, z.g.data, ft_nbytes(&z.g));
    C->copy(C, y.c.data, z.c.data, ft_nbytes(&z.c));
    cmp("copy", &y, 0);
    drop(&z), drop(&y);
}

static void t_bad_call(void) {
    /* mismatched gemm shapes: reported, nothing written, no crash */
    pair A = frand(2, 4, 5, 0, 1), B = frand(2, 6, 7, 0, 1), Cm = fout(2, 4, 7, 0);
    fprintf(stderr, "(an error message about gemm shapes is expected next)\n");
    G->gemm(G, &A.g, 0, &B.g, 0, &Cm.g, 1, 0);
    G->sync(G);
    float h[28];
    G->download(G, h, Cm.g.data, sizeof h);
    int untouched = 1;
    for (int i = 0; i < 28; i++) untouched &= isnan(h[i]) != 0;
    CHECK(untouched);
    drop(&A), drop(&B), drop(&Cm);
}

int main(void) {
    ft_error e = {0};
    if (!ft_backend_cuda_available()) {
        ft_backend *b = (ft_backend *)1;
        int rc = ft_backend_cuda_create(&b, &e);
        CHECK(rc == FT_EDEVICE);
        CHECK(b == NULL);
        CHECK(strlen(e.msg) > 10);
        fprintf(stderr, "no usable CUDA GPU; create says: %s\n", e.msg);
        if (t_failures) return 1;
        t_skip("no usable CUDA GPU (the CUDA op tests need a CUDA build on a machine with a GPU: tests/gpu/run.sh)");
    }
    if (ft_backend_cuda_create(&G, &e)) {
        fprintf(stderr, "a GPU is visible but the cuda backend failed: %s\n", e.msg);
        return 1;
    }
    C = ft_backend_cpu_create();
    if (!C) {
        fprintf(stderr, "the CPU backend is not available to compare against\n");
        return 1;
    }
    ft_rng_seed(&rng, 1234);

    t_memory();
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            t_gemm(37, 53, 71, ta, tb, 0.7f, 0.3f);
            t_gemm(37, 53, 71, ta, tb, 1.0f, 0.0f);
        }
    t_gemm(256, 512, 384, 0, 1, 1.0f, 0.0f);
    t_gemm(1, 300, 2, 1, 0, 1.0f, 1.0f);
    t_gemm_plans();
    t_embedding();
    t_rmsnorm(17, 300);
    t_rmsnorm(300, 96);
    t_rmsnorm(3, 4096);
    t_rope(9, 3, 64, 1.0f, 0);
    t_rope(9, 3, 80, 1.3f, 1);
    t_rope(5, 2, 128, 1.0f, 1);
    t_elementwise();
    t_optim();
    t_nf4(64 * 1000 + 37, 64);
    t_nf4(7, 64);
    t_dropout(1000003, 0.1f, 42);
    t_dropout(4099, 0.5f, 0xfeedfacecafebeefULL);
    t_dropout(17, 0.0f, 1);
    t_logprobs(23, 48, 1000, 1);
    t_logprobs(23, 48, 1000, 0);
    t_logprobs(4096, 64, 10000, 1); /* several vocab chunks */

    int one_doc[] = {70};
    t_attention(70, 70, 4, 2, 64, 0, one_doc, 1);
    int packed[] = {23, 27, 1, 39};
    t_attention(90, 90, 6, 2, 80, 0, packed, 4);
    int two[] = {50, 80};
    t_attention(130, 130, 8, 1, 96, 16, two, 2);
    t_attention(37, 100, 4, 4, 120, 40, one_doc, 0);          /* q_start 63, one sample */
    int gen[] = {30, 70};
    t_attention(37, 100, 4, 2, 64, 0, gen, 2);                /* q_start 63 inside the second sample */
    int p128[] = {33, 64, 2, 31};
    t_attention(130, 130, 2, 2, 128, 33, p128, 4);
    int big[] = {300, 500, 224};
    t_attention(1024, 1024, 8, 2, 128, 0, big, 3);
    t_attention(1024, 1024, 4, 2, 80, 256, big, 3);
    int tiny[] = {1, 1, 1};
    t_attention(3, 3, 2, 1, 8, 0, tiny, 3);                   /* every sample one token; small head dim */
    /* excluded key ranges (DPO shared prompt): ranges across key tiles and query tiles, windows, 1-token prompts */
    int sp1[] = {40, 25, 30, 7, 3, 9, 1, 5, 2};
    t_attention_shared(4, 2, 64, 0, sp1, 3);
    t_attention_shared(6, 2, 80, 0, sp1, 3);
    t_attention_shared(2, 1, 128, 20, sp1, 3);
    int sp2[] = {300, 200, 260, 90, 33, 64};
    t_attention_shared(8, 2, 96, 0, sp2, 2);
    {
        int32_t des[5] = {0, 10, 30, 60, 0}, dee[5] = {0, 40, 95, 98, 0}; /* cached decoding (q_start 95) */
        t_attention_x(5, 100, 4, 2, 64, 0, one_doc, 1, des, dee);
    }

    t_half(FT_BF16);
    t_half(FT_F16);
    t_fused_casts(FT_BF16);
    t_fused_casts(FT_F16);
    /* 16-bit attention: tensor cores (cuda_flash.cu) for F16, and for BF16 on sm_80+; tile edges (64 queries,
     * 32 keys), head dims 64, 80, 96, 120, 128, GQA, packed samples, windows, decode (q_start > 0), exclusions */
    int dec[] = {30, 47};
    for (int k16 = 0; k16 < 2; k16++) {
        ft_dtype dt = k16 ? FT_F16 : FT_BF16;
        t_attention16(dt, 70, 70, 4, 2, 64, 0, one_doc, 1, 0);
        t_attention16(dt, 90, 90, 6, 2, 80, 0, packed, 4, 0);
        t_attention16(dt, 130, 130, 4, 1, 96, 16, two, 2, 0);
        t_attention16(dt, 37, 100, 4, 4, 120, 40, one_doc, 0, 0); /* q_start 63 */
        t_attention16(dt, 1, 77, 2, 1, 128, 0, dec, 2, 0);        /* one-token decode */
        t_attention16(dt, 130, 130, 2, 2, 128, 33, p128, 4, 0);
        t_attention16(dt, 75, 75, 4, 2, 64, 0, one_doc, 0, 25);   /* prompt 25, chosen 25, rejected 25 */
    }
    setenv("FT_CUDA_ATTN", "scalar", 1); /* the scalar kernels with 16-bit storage too */
    t_attention16(FT_F16, 90, 90, 6, 2, 80, 0, packed, 4, 0);
    unsetenv("FT_CUDA_ATTN");
    t_cast();
    t_host_staging();
    t_bad_call();
    size_t used, peak;
    G->memory(G, &used, &peak);
    fprintf(stderr, "cuda memory: %zu bytes in use, peak %zu\n", used, peak);
    G->destroy(G);
    C->destroy(C);
    TEST_DONE();
}
