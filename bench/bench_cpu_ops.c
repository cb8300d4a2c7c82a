/* bench_cpu_ops: CPU backend micro-benchmarks.
 * gemm GFLOP/s at a few model-shaped sizes (all transpose cases at one size),
 * attention forward/backward tokens/s, fused lm_head log-prob tokens/s.
 * Usage: bench_cpu_ops [scale]  (scale < 1 shrinks every size, for a quick run) */
#include "finetune/backend/backend.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

static float *rnd(ft_rng *r, int64_t n) {
    float *p = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = ft_rng_normal(r) * 0.5f;
    return p;
}

static int64_t sc(int64_t n, double s) {
    int64_t v = (int64_t)(n * s);
    return v < 1 ? 1 : v;
}

static void bench_gemm(ft_backend *b, ft_rng *r, int64_t M, int64_t N, int64_t K, int ta, int tb) {
    float *A = rnd(r, M * K), *B = rnd(r, K * N), *C = rnd(r, M * N);
    ft_tensor tA = ta ? ft_t2(A, FT_F32, FT_DEV_CPU, K, M) : ft_t2(A, FT_F32, FT_DEV_CPU, M, K);
    ft_tensor tB = tb ? ft_t2(B, FT_F32, FT_DEV_CPU, N, K) : ft_t2(B, FT_F32, FT_DEV_CPU, K, N);
    ft_tensor tC = ft_t2(C, FT_F32, FT_DEV_CPU, M, N);
    b->gemm(b, &tA, ta, &tB, tb, &tC, 1.0f, 0.0f); /* warm up */
    int reps = 0;
    double t0 = ft_now(), el;
    do {
        b->gemm(b, &tA, ta, &tB, tb, &tC, 1.0f, 0.0f);
        reps++;
        el = ft_now() - t0;
    } while (el < 0.5);
    printf("gemm M=%-5lld N=%-5lld K=%-5lld ta=%d tb=%d  %7.2f GFLOP/s\n", (long long)M, (long long)N, (long long)K,
           ta, tb, 2.0 * M * N * K * reps / el / 1e9);
    free(A);
    free(B);
    free(C);
}

static void bench_attention(ft_backend *b, ft_rng *r, int64_t T, int64_t Hq, int64_t Hkv, int64_t Dh, int window) {
    float *q = rnd(r, T * Hq * Dh), *k = rnd(r, T * Hkv * Dh), *v = rnd(r, T * Hkv * Dh);
    float *o = rnd(r, T * Hq * Dh), *l = rnd(r, T * Hq), *dq = rnd(r, T * Hq * Dh), *dk = rnd(r, T * Hkv * Dh),
          *dv = rnd(r, T * Hkv * Dh);
    ft_tensor tq = ft_t3(q, FT_F32, FT_DEV_CPU, T, Hq, Dh), tk = ft_t3(k, FT_F32, FT_DEV_CPU, T, Hkv, Dh),
              tv = ft_t3(v, FT_F32, FT_DEV_CPU, T, Hkv, Dh), to = ft_t3(o, FT_F32, FT_DEV_CPU, T, Hq, Dh),
              tl = ft_t2(l, FT_F32, FT_DEV_CPU, T, Hq), tdq = ft_t3(dq, FT_F32, FT_DEV_CPU, T, Hq, Dh),
              tdk = ft_t3(dk, FT_F32, FT_DEV_CPU, T, Hkv, Dh), tdv = ft_t3(dv, FT_F32, FT_DEV_CPU, T, Hkv, Dh);
    ft_attn_layout L = {.q_start = 0, .doc_start = NULL, .window = window, .scale = 1.0f / sqrtf((float)Dh)};
    double t0 = ft_now();
    b->attention(b, &tq, &tk, &tv, &to, &tl, &L);
    double t1 = ft_now();
    b->attention_backward(b, &tq, &tk, &tv, &to, &tl, &to, &tdq, &tdk, &tdv, &L);
    double t2 = ft_now();
    printf("attention T=%-5lld Hq=%lld Hkv=%lld Dh=%lld window=%d  fwd %9.0f tok/s  bwd %9.0f tok/s\n", (long long)T,
           (long long)Hq, (long long)Hkv, (long long)Dh, window, T / (t1 - t0), T / (t2 - t1));
    free(q);
    free(k);
    free(v);
    free(o);
    free(l);
    free(dq);
    free(dk);
    free(dv);
}

static void bench_logprobs(ft_backend *b, ft_rng *r, int64_t T, int64_t V, int64_t D) {
    float *h = rnd(r, T * D), *W = rnd(r, V * D), *lp = rnd(r, T), *ls = rnd(r, T), *dh = rnd(r, T * D);
    int32_t *tg = malloc((size_t)T * sizeof(int32_t));
    for (int64_t t = 0; t < T; t++) tg[t] = (int32_t)(ft_rng_next(r) % (uint64_t)V);
    ft_tensor th = ft_t2(h, FT_F32, FT_DEV_CPU, T, D), tW = ft_t2(W, FT_F32, FT_DEV_CPU, V, D),
              tt = ft_t1(tg, FT_I32, FT_DEV_CPU, T), tl = ft_t1(lp, FT_F32, FT_DEV_CPU, T),
              tls = ft_t1(ls, FT_F32, FT_DEV_CPU, T), tdh = ft_t2(dh, FT_F32, FT_DEV_CPU, T, D);
    double t0 = ft_now();
    b->token_logprobs(b, &th, &tW, &tt, &tl, &tls);
    double t1 = ft_now();
    b->token_logprobs_backward(b, &th, &tW, &tt, &tls, &tl, &tdh, NULL);
    double t2 = ft_now();
    printf("token_logprobs T=%lld V=%lld D=%lld  fwd %8.0f tok/s (%.1f GFLOP/s)  bwd(dh) %8.0f tok/s\n", (long long)T,
           (long long)V, (long long)D, T / (t1 - t0), 2.0 * T * V * D / (t1 - t0) / 1e9, T / (t2 - t1));
    free(h);
    free(W);
    free(lp);
    free(ls);
    free(dh);
    free(tg);
}

int main(int argc, char **argv) {
    double s = argc > 1 ? atof(argv[1]) : 1.0;
    if (!(s > 0)) s = 1.0;
    ft_backend *b = ft_backend_cpu_create();
    if (!b) {
        fprintf(stderr, "bench_cpu_ops: could not create the CPU backend\n");
        return 1;
    }
    ft_rng r;
    ft_rng_seed(&r, 7);
    printf("cpu backend, %d threads\n", omp_get_max_threads());
    bench_gemm(b, &r, sc(256, s), sc(256, s), sc(256, s), 0, 0);
    bench_gemm(b, &r, sc(512, s), sc(512, s), sc(512, s), 0, 0);
    bench_gemm(b, &r, sc(1024, s), sc(1024, s), sc(1024, s), 0, 0);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) bench_gemm(b, &r, sc(512, s), sc(1536, s), sc(1536, s), ta, tb);
    bench_gemm(b, &r, sc(512, s), sc(4096, s), sc(1536, s), 0, 1); /* x . W^T, MLP up-projection shaped */
    bench_gemm(b, &r, 1, sc(4096, s), sc(1536, s), 0, 1);          /* one decoding token */
    bench_attention(b, &r, sc(512, s), 16, 8, 96, 0);
    bench_attention(b, &r, sc(2048, s), 16, 8, 96, 0);
    bench_attention(b, &r, sc(2048, s), 16, 8, 96, 256);
    bench_logprobs(b, &r, sc(256, s), sc(32000, s), sc(512, s));
    b->destroy(b);
    return 0;
}
