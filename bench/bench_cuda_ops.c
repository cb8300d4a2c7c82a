/* bench_cuda_ops: CUDA backend timings at model-shaped sizes (Danube3-500M-like:
 * D 1536, 16/8 heads of 96, F 4096, V 32000, 4096 tokens packed).
 * gemm TFLOP/s, attention forward and backward, fused lm_head log-probs forward
 * and backward, each in fp32, bf16 (sm_80+) and fp16; rmsnorm in fp32; attention at
 * the issue-18 targets (T 4096, head dim 128) on tensor cores and scalar. Each op is
 * run until 0.3 s pass, synchronised, and reported per call.
 * Without a usable GPU it says so and exits 0 (nothing to measure).
 * Usage: bench_cuda_ops [scale]   (scale < 1 shrinks the token count) */
#include "finetune/backend/backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ft_backend *G;
static ft_rng rng;

static ft_tensor dev(ft_dtype dt, int ndim, int64_t d0, int64_t d1, int64_t d2, float scale) {
    int64_t sh[3] = {d0, d1, d2};
    ft_tensor t;
    ft_error e;
    if (ft_backend_tensor(G, dt, ndim, sh, &t, &e)) {
        fprintf(stderr, "bench_cuda_ops: %s\n", e.msg);
        exit(1);
    }
    int64_t n = ft_numel(&t);
    size_t es = ft_dtype_size(dt);
    unsigned char *h = malloc((size_t)n * es + 8);
    for (int64_t i = 0; i < n; i++) {
        float v = ft_rng_normal(&rng) * scale;
        if (dt == FT_F32) memcpy(h + i * 4, &v, 4);
        else if (dt == FT_BF16) ((uint16_t *)h)[i] = ft_f32_to_bf16(v);
        else if (dt == FT_F16) ((uint16_t *)h)[i] = ft_f32_to_f16(v);
        else if (dt == FT_I32) ((int32_t *)h)[i] = (int32_t)(ft_rng_next(&rng) % 32000);
    }
    G->upload(G, t.data, h, ft_nbytes(&t));
    free(h);
    return t;
}

#define TIME(label, flops, call)                                                                \
    do {                                                                                        \
        call;                                                                                   \
        G->sync(G);                                                                             \
        int reps_ = 0;                                                                          \
        double t0_ = ft_now(), el_;                                                             \
        do {                                                                                    \
            call;                                                                               \
            reps_++;                                                                            \
            G->sync(G);                                                                         \
            el_ = ft_now() - t0_;                                                               \
        } while (el_ < 0.3);                                                                    \
        double ms_ = el_ / reps_ * 1e3;                                                         \
        printf("%-52s %9.3f ms", label, ms_);                                                   \
        if ((flops) > 0) printf("  %8.2f TFLOP/s", (double)(flops) / (ms_ * 1e-3) / 1e12);      \
        printf("\n");                                                                           \
    } while (0)

/* ms = milliseconds per call of call, run until 0.3 s pass after one warm-up call */
#define MEASURE(ms, call)                                                                       \
    do {                                                                                        \
        call;                                                                                   \
        G->sync(G);                                                                             \
        int r_ = 0;                                                                             \
        double t_ = ft_now();                                                                   \
        do {                                                                                    \
            call;                                                                               \
            r_++;                                                                               \
            G->sync(G);                                                                         \
        } while (ft_now() - t_ < 0.3);                                                          \
        ms = (ft_now() - t_) / r_ * 1e3;                                                        \
    } while (0)

int main(int argc, char **argv) {
    double scale = argc > 1 ? atof(argv[1]) : 1.0;
    if (!ft_backend_cuda_available()) {
        printf("bench_cuda_ops: no usable CUDA GPU, nothing to measure\n");
        return 0;
    }
    ft_error e;
    if (ft_backend_cuda_create(&G, &e)) {
        fprintf(stderr, "bench_cuda_ops: %s\n", e.msg);
        return 1;
    }
    ft_rng_seed(&rng, 7);
    int64_t T = (int64_t)(4096 * scale), D = 1536, F = 4096, V = 32000, Hq = 16, Hkv = 8, Dh = 96;
    if (T < 64) T = 64;
    printf("bench_cuda_ops: T=%lld D=%lld F=%lld V=%lld heads %lld/%lld x %lld\n", (long long)T, (long long)D,
           (long long)F, (long long)V, (long long)Hq, (long long)Hkv, (long long)Dh);

    char lab[128];
    ft_dtype dts[3] = {FT_F32, FT_BF16, FT_F16};
    for (int k = 0; k < 3; k++) {
        if (dts[k] == FT_BF16 && G->arch < 80) continue;
        ft_tensor x = dev(dts[k], 2, T, D, 0, 1), w = dev(dts[k], 2, F, D, 0, 0.02f), y = dev(dts[k], 2, T, F, 0, 0);
        snprintf(lab, sizeof lab, "gemm %s [T,D] x [F,D]^T (mlp up)", ft_dtype_name(dts[k]));
        TIME(lab, 2.0 * T * D * F, G->gemm(G, &x, 0, &w, 1, &y, 1.0f, 0.0f));
        snprintf(lab, sizeof lab, "gemm %s [T,F]^T x [T,D] (weight grad)", ft_dtype_name(dts[k]));
        TIME(lab, 2.0 * T * D * F, G->gemm(G, &y, 1, &x, 0, &w, 1.0f, 1.0f));
        G->free(G, x.data), G->free(G, w.data), G->free(G, y.data);
    }

    ft_tensor x = dev(FT_F32, 2, T, D, 0, 1), nw = dev(FT_F32, 1, D, 0, 0, 1), no = dev(FT_F32, 2, T, D, 0, 0),
              rs = dev(FT_F32, 1, T, 0, 0, 0), dx = dev(FT_F32, 2, T, D, 0, 0), dnw = dev(FT_F32, 1, D, 0, 0, 0);
    TIME("rmsnorm f32", 0, G->rmsnorm(G, &x, &nw, 1e-5f, &no, &rs));
    TIME("rmsnorm_backward f32", 0, G->rmsnorm_backward(G, &no, &x, &nw, &rs, &dx, &dnw, 0));

    /* attention and the fused lm_head + log-softmax in each dtype training uses (bf16 needs sm_80) */
    int32_t *ds = malloc((size_t)T * 4);
    for (int64_t i = 0; i < T; i++) ds[i] = (int32_t)(i / (T / 4) * (T / 4)); /* 4 packed samples of T/4 */
    ft_tensor dsd = dev(FT_I32, 1, T, 0, 0, 0);
    G->upload(G, dsd.data, ds, (size_t)T * 4);
    free(ds);
    for (int kd = 0; kd < 3; kd++) {
        ft_dtype dt = dts[kd];
        const char *nm = ft_dtype_name(dt);
        if (dt == FT_BF16 && G->arch < 80) continue;
        ft_attn_layout L = {.doc_start = dsd.data, .scale = 1.0f / sqrtf((float)Dh)};
        ft_tensor q = dev(dt, 3, T, Hq, Dh, 1), k = dev(dt, 3, T, Hkv, Dh, 1), v = dev(dt, 3, T, Hkv, Dh, 1),
                  o = dev(dt, 3, T, Hq, Dh, 0), lse = dev(FT_F32, 2, T, Hq, 0, 0), dout = dev(dt, 3, T, Hq, Dh, 1),
                  dq = dev(dt, 3, T, Hq, Dh, 0), dk = dev(dt, 3, T, Hkv, Dh, 0), dv = dev(dt, 3, T, Hkv, Dh, 0);
        double seg = (double)(T / 4), aflops = 4.0 * 4 * seg * seg / 2 * Dh * Hq; /* causal: half of QK^T, PV */
        snprintf(lab, sizeof lab, "attention fwd %s (4 packed samples)", nm);
        TIME(lab, aflops, G->attention(G, &q, &k, &v, &o, &lse, &L));
        snprintf(lab, sizeof lab, "attention bwd %s (4 packed samples)", nm);
        TIME(lab, 2.5 * aflops, G->attention_backward(G, &q, &k, &v, &o, &lse, &dout, &dq, &dk, &dv, &L));
        L.window = 1024;
        snprintf(lab, sizeof lab, "attention fwd %s (window 1024)", nm);
        TIME(lab, 0, G->attention(G, &q, &k, &v, &o, &lse, &L));
        ft_tensor *att[9] = {&q, &k, &v, &o, &lse, &dout, &dq, &dk, &dv};
        for (int i = 0; i < 9; i++) G->free(G, att[i]->data);

        /* the lm_head weight gradient accumulates in fp32, as in training */
        ft_tensor h = dev(dt, 2, T, D, 0, 1), W = dev(dt, 2, V, D, 0, 0.02f), tg = dev(FT_I32, 1, T, 0, 0, 0),
                  lp = dev(FT_F32, 1, T, 0, 0, 0), ls = dev(FT_F32, 1, T, 0, 0, 0), dl = dev(FT_F32, 1, T, 0, 0, 1),
                  dh = dev(dt, 2, T, D, 0, 0), dW = dev(FT_F32, 2, V, D, 0, 0);
        snprintf(lab, sizeof lab, "token_logprobs fwd %s (V %lld)", nm, (long long)V);
        TIME(lab, 2.0 * T * D * V, G->token_logprobs(G, &h, &W, &tg, &lp, &ls));
        snprintf(lab, sizeof lab, "token_logprobs bwd %s (V %lld)", nm, (long long)V);
        TIME(lab, 6.0 * T * D * V, G->token_logprobs_backward(G, &h, &W, &tg, &ls, &dl, &dh, &dW));
        ft_tensor *lpt[8] = {&h, &W, &tg, &lp, &ls, &dl, &dh, &dW};
        for (int i = 0; i < 8; i++) G->free(G, lpt[i]->data);
    }

    /* Attention at the issue-18 target shape: T 4096, head dim 128, 32/8 heads, one causal sample; tensor cores
     * (cuda_flash.cu) and the scalar kernels (FT_CUDA_ATTN=scalar), as a share of a 4096^3 GEMM (scaled like T) of the
     * same dtype on the same GPU. Built for compute_75 only (-DCMAKE_CUDA_ARCHITECTURES=75) and run on a newer GPU,
     * the fp16 lines time the sm_75 code path. */
    {
        int64_t Tt = (int64_t)(4096 * scale), H = 32, Hk = 8, Dt = 128, N = (int64_t)(4096 * scale);
        if (Tt < 64) Tt = 64;
        if (N < 256) N = 256;
        printf("attention targets: T=%lld heads %lld/%lld x %lld, causal, one sample\n", (long long)Tt, (long long)H,
               (long long)Hk, (long long)Dt);
        ft_dtype d16[2] = {FT_BF16, FT_F16};
        for (int kd = 0; kd < 2; kd++) {
            ft_dtype dt = d16[kd];
            const char *nm = ft_dtype_name(dt);
            if (dt == FT_BF16 && G->arch < 80) continue;
            double ms, gemm_ms, af = 4.0 * (double)Tt * Tt / 2 * Dt * H; /* causal: half of QK^T and PV */
            ft_tensor a = dev(dt, 2, N, N, 0, 1), bm = dev(dt, 2, N, N, 0, 0.02f), c = dev(dt, 2, N, N, 0, 0);
            MEASURE(gemm_ms, G->gemm(G, &a, 0, &bm, 1, &c, 1.0f, 0.0f));
            double gemm_rate = 2.0 * N * N * N / (gemm_ms * 1e-3);
            snprintf(lab, sizeof lab, "gemm %s %lld^3", nm, (long long)N);
            printf("%-52s %9.3f ms  %8.2f TFLOP/s\n", lab, gemm_ms, gemm_rate / 1e12);
            G->free(G, a.data), G->free(G, bm.data), G->free(G, c.data);
            ft_attn_layout L = {0, NULL, 0, 1.0f / sqrtf((float)Dt), NULL, NULL};
            ft_tensor q = dev(dt, 3, Tt, H, Dt, 1), k = dev(dt, 3, Tt, Hk, Dt, 1), v = dev(dt, 3, Tt, Hk, Dt, 1),
                      o = dev(dt, 3, Tt, H, Dt, 0), lse = dev(FT_F32, 2, Tt, H, 0, 0), dout = dev(dt, 3, Tt, H, Dt, 1),
                      dq = dev(dt, 3, Tt, H, Dt, 0), dk = dev(dt, 3, Tt, Hk, Dt, 0), dv = dev(dt, 3, Tt, Hk, Dt, 0);
            for (int path = 0; path < 2; path++) {
                const char *pn = path ? "scalar" : "tensor cores";
                if (path) setenv("FT_CUDA_ATTN", "scalar", 1);
                double fwd = af, bwd = 2.5 * af; /* backward: 5 products of the forward's 2 */
                MEASURE(ms, G->attention(G, &q, &k, &v, &o, &lse, &L));
                snprintf(lab, sizeof lab, "attention fwd %s %s", nm, pn);
                printf("%-52s %9.3f ms  %8.2f TFLOP/s  %5.1f%% of gemm (target 50%%)\n", lab, ms, fwd / (ms * 1e-3) / 1e12,
                       fwd / (ms * 1e-3) / gemm_rate * 100);
                MEASURE(ms, G->attention_backward(G, &q, &k, &v, &o, &lse, &dout, &dq, &dk, &dv, &L));
                snprintf(lab, sizeof lab, "attention bwd %s %s", nm, pn);
                printf("%-52s %9.3f ms  %8.2f TFLOP/s  %5.1f%% of gemm (target 35%%)\n", lab, ms, bwd / (ms * 1e-3) / 1e12,
                       bwd / (ms * 1e-3) / gemm_rate * 100);
                if (path) unsetenv("FT_CUDA_ATTN");
            }
            ft_tensor *att[9] = {&q, &k, &v, &o, &lse, &dout, &dq, &dk, &dv};
            for (int i = 0; i < 9; i++) G->free(G, att[i]->data);
        }
    }

    size_t used, peak;
    G->memory(G, &used, &peak);
    printf("cuda memory: %.1f MiB in use, peak %.1f MiB\n", used / 1048576.0, peak / 1048576.0);
    G->destroy(G);
    return 0;
}
