/* test_cuemu: the CUDA emulator's own semantics, so that a GPU test passing on it means something.
 *
 * Barrier reductions, every shuffle and vote against values worked out by hand, stream work deferred until
 * the host waits, shared memory that starts as garbage, blocks and threads run out of index order, the
 * 16-bit conversions against the project's host conversions (ft_f32_to_f16 / _bf16, checked against
 * PyTorch by the golden tests) on every 16-bit pattern and on random floats, cuBLAS' documented argument
 * checks, the emulated WMMA (fp16 and bf16 products against the host, both B layouts, a scrambled
 * element-to-lane mapping; divergent, misaligned, bad-ldm and bf16-on-sm_75 calls abort), and each misuse the emulator promises to catch (divergent barrier, partial warp, host pointer to
 * a kernel, host code touching device memory, out-of-bounds access, wrong memcpy kind), each in a forked
 * child that must abort with the expected message. */
#include "cuemu.h"
#include "include/mma.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

extern "C" {
#include "finetune/base/util.h"
}

static int failures, checks;
#define CHECK(c, ...)                                                                                                  \
    do {                                                                                                               \
        checks++;                                                                                                      \
        if (!(c)) {                                                                                                    \
            failures++;                                                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #c);                                      \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fprintf(stderr, "\n");                                                                                     \
        }                                                                                                              \
    } while (0)

#define LAUNCH(grid, block, stream, ...) (cuemu_launcher{#__VA_ARGS__, dim3(grid), dim3(block), stream} % __VA_ARGS__)

/* ---------------------------------------------------------------- kernels */

__global__ void k_barriers(int *out) {
    int t = threadIdx.x;
    int any = __syncthreads_or(t == 37), all = __syncthreads_and(t < 1000), cnt = __syncthreads_count(t % 3 == 0);
    int none = __syncthreads_or(0);
    out[t * 4 + 0] = any;
    out[t * 4 + 1] = all;
    out[t * 4 + 2] = cnt;
    out[t * 4 + 3] = none;
}

__global__ void k_shuffles(int *out) {
    int lane = threadIdx.x & 31, v = (int)threadIdx.x * 10;
    int *o = out + threadIdx.x * 7;
    o[0] = __shfl_sync(0xffffffffu, v, 5);           /* lane 5 of my warp */
    o[1] = __shfl_xor_sync(0xffffffffu, v, 1);       /* my neighbour */
    o[2] = __shfl_up_sync(0xffffffffu, v, 3);        /* lane - 3, or mine */
    o[3] = __shfl_down_sync(0xffffffffu, v, 3);      /* lane + 3, or mine */
    o[4] = __shfl_sync(0xffffffffu, v, lane + 1, 8); /* within segments of 8, wrapping */
    o[5] = __any_sync(0xffffffffu, lane == 31) + 2 * __all_sync(0xffffffffu, lane < 31);
    o[6] = (int)__ballot_sync(0xffffffffu, lane & 1);
}

/* a block-wide sum through shared memory: the pattern the backend's reductions use */
__global__ void k_block_sum(const float *x, float *out, int n) {
    __shared__ float part[256];
    float s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if ((int)threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}

/* shared memory read before any write: the emulator's garbage (all ones) */
__global__ void k_shared_garbage(float *out) {
    __shared__ float fresh[64];
    out[threadIdx.x] = fresh[threadIdx.x];
}

/* the order blocks and threads run in: a counter each one bumps on arrival */
__global__ void k_order(int *counter, int *block_rank, int *thread_rank) {
    if (threadIdx.x == 0) block_rank[blockIdx.x] = atomicAdd(counter, 1);
    if (blockIdx.x == 0) thread_rank[threadIdx.x] = atomicAdd(counter + 1, 1);
}

__global__ void k_fill(float *x, int n, float v) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] = v;
}

/* misuse */
__global__ void k_divergent_barrier(int *x) {
    if (threadIdx.x < 16) return;
    __syncthreads();
    x[threadIdx.x] = 1;
}
__global__ void k_partial_warp(int *x) { x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1); }
__global__ void k_divergent_warp(int *x) {
    if (threadIdx.x & 1) x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}
__global__ void k_past_end(float *x, int n) { x[n + threadIdx.x] = 1.f; }

/* WMMA: C[32x32] = A[32x48] B[48x32] + C0, one warp per 16x16 tile of C (4 warps). A row-major; B as given
 * col-major (Bt[n][k], as K^T is in attention) when bcol, else row-major B[k][n]; C0 read column-major, C
 * written row-major. Operands staged in shared memory (ldm with padding, as the backend does). */
template <typename T, int bcol> __global__ void k_wmma(const T *A, const T *B, const float *C0, float *C) {
    using namespace nvcuda;
    __shared__ __align__(32) T sA[32][56];
    __shared__ __align__(32) T sB[48][40];  /* B row-major [k][n] */
    __shared__ __align__(32) T sBt[32][56]; /* or Bt [n][k] */
    __shared__ __align__(32) float sC[32][36];
    for (int i = threadIdx.x; i < 32 * 48; i += blockDim.x) {
        sA[i / 48][i % 48] = A[i];
        if (bcol)
            sBt[i / 48][i % 48] = B[i];
        else
            sB[i / 32][i % 32] = B[i];
    }
    __syncthreads();
    int warp = threadIdx.x >> 5, tm = warp >> 1, tn = warp & 1;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::load_matrix_sync(acc, C0 + tn * 16 * 32 + tm * 16, 32, wmma::mem_col_major);
    for (int k = 0; k < 48; k += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, &sA[tm * 16][k], 56);
        if (bcol) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
            wmma::load_matrix_sync(b, &sBt[tn * 16][k], 56);
            wmma::mma_sync(acc, a, b, acc);
        } else {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
            wmma::load_matrix_sync(b, &sB[k][tn * 16], 40);
            wmma::mma_sync(acc, a, b, acc);
        }
    }
    for (int e = 0; e < acc.num_elements; e++) acc.x[e] *= 2.f; /* elementwise: legal for any mapping */
    wmma::store_matrix_sync(&sC[tm * 16][tn * 16], acc, 36, wmma::mem_row_major);
    __syncwarp();
    for (int i = threadIdx.x & 31; i < 256; i += 32)
        C[(tm * 16 + i / 16) * 32 + tn * 16 + i % 16] = sC[tm * 16 + i / 16][tn * 16 + i % 16];
}

/* a kernel that assumes lane l holds elements l*8 .. l*8+7 of a row-major accumulator */
__global__ void k_wmma_layout(float *out) {
    using namespace nvcuda;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    for (int e = 0; e < acc.num_elements; e++) acc.x[e] = (float)(threadIdx.x * acc.num_elements + e);
    wmma::store_matrix_sync(out, acc, 16, wmma::mem_row_major);
}
__global__ void k_wmma_divergent(const __half *p) {
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
    if (threadIdx.x < 16) wmma::load_matrix_sync(a, p, 16);
}
__global__ void k_wmma_load(const __half *p, int ldm) {
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
    wmma::load_matrix_sync(a, p, ldm);
}
__global__ void k_wmma_bf16(const __nv_bfloat16 *p) {
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
    wmma::load_matrix_sync(b, p, 16);
}

/* ---------------------------------------------------------------- helpers */

/* Run f in a child; it must die by SIGABRT with `want` in its stderr. */
static void expect_abort(const char *what, void (*f)(void), const char *want) {
    int pipefd[2];
    if (pipe(pipefd)) abort();
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        f();
        _exit(0);
    }
    close(pipefd[1]);
    static char buf[1 << 16];
    size_t n = 0;
    ssize_t r;
    while ((r = read(pipefd[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
    buf[n] = 0;
    close(pipefd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    int aborted = WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
    CHECK(aborted && strstr(buf, want), "%s: want an abort saying \"%s\"; got status %#x and:\n%.600s", what, want, st,
          buf);
    if (aborted && strstr(buf, want)) {
        const char *line = strstr(buf, "cuemu: ");
        fprintf(stderr, "ok %-28s %.*s\n", what, (int)strcspn(line ? line : buf, "\n"), line ? line : buf);
    }
}

static void misuse_barrier(void) {
    int *d;
    cudaMalloc(&d, 64 * sizeof(int));
    LAUNCH(1, 64, 0, k_divergent_barrier)(d);
    cudaDeviceSynchronize();
}
static void misuse_partial_warp(void) {
    int *d;
    cudaMalloc(&d, 48 * sizeof(int));
    LAUNCH(1, 48, 0, k_partial_warp)(d);
    cudaDeviceSynchronize();
}
static void misuse_divergent_warp(void) {
    int *d;
    cudaMalloc(&d, 32 * sizeof(int));
    LAUNCH(1, 32, 0, k_divergent_warp)(d);
    cudaDeviceSynchronize();
}
static void misuse_host_pointer(void) {
    static float host[64];
    LAUNCH(1, 64, 0, k_fill)(host, 64, 1.f);
}
static void misuse_host_touch(void) {
    float *d;
    cudaMalloc(&d, 64 * sizeof(float));
    volatile float *p = d;
    p[3] = 1.f; /* a device pointer dereferenced on the host */
}
static void misuse_past_end(void) {
    float *d;
    cudaMalloc(&d, 1024 * sizeof(float));
    LAUNCH(1, 32, 0, k_past_end)(d, 1024);
    cudaDeviceSynchronize();
}
static void misuse_memcpy_kind(void) {
    float *d, h[4] = {0};
    cudaMalloc(&d, sizeof h);
    cudaMemcpyAsync(d, h, sizeof h, cudaMemcpyDeviceToHost, 0); /* the kind says the other way round */
}

static void misuse_wmma_divergent(void) {
    __half *d;
    cudaMalloc(&d, 256 * sizeof(__half));
    LAUNCH(1, 32, 0, k_wmma_divergent)(d);
    cudaDeviceSynchronize();
}
static void misuse_wmma_misaligned(void) {
    __half *d;
    cudaMalloc(&d, 512 * sizeof(__half));
    LAUNCH(1, 32, 0, k_wmma_load)(d + 4, 16);
    cudaDeviceSynchronize();
}
static void misuse_wmma_ldm(void) {
    __half *d;
    cudaMalloc(&d, 512 * sizeof(__half));
    LAUNCH(1, 32, 0, k_wmma_load)(d, 20);
    cudaDeviceSynchronize();
}
static void misuse_wmma_bf16_sm75(void) {
    setenv("CUEMU_SM", "75", 1);
    __nv_bfloat16 *d;
    cudaMalloc(&d, 256 * sizeof(__nv_bfloat16));
    LAUNCH(1, 32, 0, k_wmma_bf16)(d);
    cudaDeviceSynchronize();
}

/* ---------------------------------------------------------------- tests */

static void t_barriers(void) {
    int *d, h[256 * 4];
    cudaMalloc(&d, sizeof h);
    LAUNCH(1, 256, 0, k_barriers)(d);
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int t = 0; t < 256; t++) bad += h[t * 4] != 1 || h[t * 4 + 1] != 1 || h[t * 4 + 2] != 86 || h[t * 4 + 3] != 0;
    CHECK(bad == 0, "barrier reductions wrong in %d threads (thread 0: or %d and %d count %d none %d)", bad, h[0], h[1],
          h[2], h[3]);
    cudaFree(d);
}

static void t_shuffles(void) {
    enum { N = 64 };
    int *d, h[N * 7];
    cudaMalloc(&d, sizeof h);
    LAUNCH(1, N, 0, k_shuffles)(d);
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int t = 0; t < N; t++) {
        int lane = t & 31, base = t - lane, *o = h + t * 7;
        int seg = lane & ~7;
        int want[7] = {(base + 5) * 10,
                       (t ^ 1) * 10,
                       (lane >= 3 ? t - 3 : t) * 10,
                       (lane + 3 < 32 ? t + 3 : t) * 10,
                       (base + seg + ((lane + 1) & 7)) * 10,
                       1 + 0,
                       (int)0xaaaaaaaau};
        for (int k = 0; k < 7; k++)
            if (o[k] != want[k]) {
                if (bad++ < 5) fprintf(stderr, "  thread %d op %d: got %d, want %d\n", t, k, o[k], want[k]);
            }
    }
    CHECK(bad == 0, "%d shuffle/vote results wrong", bad);
    cudaFree(d);
}

static void t_block_sum_and_streams(void) {
    enum { N = 1000, B = 3 };
    float *x, *out, *pinned;
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaMalloc(&x, N * sizeof(float));
    cudaMalloc(&out, B * sizeof(float));
    cudaMallocHost(&pinned, B * sizeof(float));
    for (int b = 0; b < B; b++) pinned[b] = -1.f;
    LAUNCH(4, 128, s, k_fill)(x, N, 0.5f);
    LAUNCH(B, 256, s, k_block_sum)(x, out, N);
    cudaMemcpyAsync(pinned, out, B * sizeof(float), cudaMemcpyDeviceToHost, s);
    /* nothing has run yet: the host has not waited for the stream */
    CHECK(pinned[0] == -1.f, "work ran before the stream was synchronised (pinned[0] = %g)", pinned[0]);
    cudaStreamSynchronize(s);
    CHECK(pinned[0] == 500.f && pinned[2] == 500.f, "block sum %g %g, want 500", pinned[0], pinned[2]);
    /* a copy into pageable memory returns when it is done */
    float h[B] = {0};
    LAUNCH(1, 32, s, k_fill)(out, B, 2.f);
    cudaMemcpyAsync(h, out, sizeof h, cudaMemcpyDeviceToHost, s);
    CHECK(h[1] == 2.f, "pageable copy not complete on return (%g)", h[1]);
    /* a pageable source is read at the call: changing it afterwards does not change what arrives */
    float src[B] = {7.f, 7.f, 7.f};
    cudaMemcpyAsync(out, src, sizeof src, cudaMemcpyHostToDevice, s);
    src[0] = 9.f;
    cudaMemcpyAsync(h, out, sizeof h, cudaMemcpyDeviceToHost, s);
    CHECK(h[0] == 7.f, "staged host-to-device copy: got %g, want 7", h[0]);
    /* fresh device memory is garbage (all ones: NaN) */
    float *fresh;
    cudaMalloc(&fresh, 4 * sizeof(float));
    cudaMemcpy(h, fresh, sizeof h, cudaMemcpyDeviceToHost);
    CHECK(isnan(h[0]), "fresh device memory reads %g, want NaN", h[0]);
    /* a launch with too many threads fails as on a GPU, and the error is not sticky */
    LAUNCH(1, 2048, s, k_fill)(x, N, 0.f);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "a 2048-thread block was accepted");
    CHECK(cudaGetLastError() == cudaSuccess, "the launch error is sticky");
    /* device memory is limited */
    void *huge = NULL;
    CHECK(cudaMalloc(&huge, (size_t)1 << 50) == cudaErrorMemoryAllocation && !huge, "a 1 PiB cudaMalloc succeeded");
    cudaGetLastError();
    cudaFree(fresh);
    cudaFreeHost(pinned);
    cudaFree(out);
    cudaFree(x);
    cudaStreamDestroy(s);
}

static void t_order_and_garbage(void) {
    float *d, h[64];
    cudaMalloc(&d, sizeof h);
    LAUNCH(1, 64, 0, k_shared_garbage)(d);
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    CHECK(isnan(h[0]) && isnan(h[63]), "unwritten shared memory reads %g, want NaN", h[0]);
    cudaFree(d);
    enum { B = 16, N = 64 };
    int *c, hc[2 + B + N] = {0};
    cudaMalloc(&c, sizeof hc);
    cudaMemcpy(c, hc, sizeof hc, cudaMemcpyHostToDevice);
    LAUNCH(B, N, 0, k_order)(c, c + 2, c + 2 + B);
    cudaMemcpy(hc, c, sizeof hc, cudaMemcpyDeviceToHost);
    int blocks_in_order = 1, threads_in_order = 1;
    for (int b = 0; b < B; b++) blocks_in_order &= hc[2 + b] == b;
    for (int t = 0; t < N; t++) threads_in_order &= hc[2 + B + t] == t;
    CHECK(!blocks_in_order && !threads_in_order, "blocks ran in index order %d, threads %d (want shuffled)",
          blocks_in_order, threads_in_order);
    cudaFree(c);
}

static void t_half(void) {
    int bad = 0;
    for (uint32_t u = 0; u < 65536; u++) { /* every 16-bit pattern: widen, narrow back, compare with the host's */
        __half h;
        h.x = (uint16_t)u;
        float f = __half2float(h);
        if (isnan(f)) continue;
        if (__float2half(f).x != u || ft_f16_to_f32((uint16_t)u) != f) bad++;
        __nv_bfloat16 b;
        b.x = (uint16_t)u;
        float g = __bfloat162float(b);
        if (!isnan(g) && (__float2bfloat16(g).x != u || ft_bf16_to_f32((uint16_t)u) != g)) bad++;
    }
    CHECK(bad == 0, "%d 16-bit patterns do not round-trip", bad);
    /* random floats over the whole range, ties included: same rounding as the host conversions */
    uint64_t z = 12345;
    int diff_h = 0, diff_b = 0;
    for (int i = 0; i < 2000000; i++) {
        z = z * 6364136223846793005ULL + 1442695040888963407ULL;
        uint32_t bits = (uint32_t)(z >> 32);
        if (i % 4 == 0) bits &= 0xffffe000u | 0x1000u;         /* exact ties for fp16 */
        if (i % 4 == 1) bits = (bits & 0xffff0000u) | 0x8000u; /* exact ties for bf16 */
        float f;
        memcpy(&f, &bits, 4);
        if (isnan(f)) continue;
        if (__float2half(f).x != ft_f32_to_f16(f)) {
            if (diff_h++ < 3)
                fprintf(stderr, "  fp16 of %a: emulator %#x, host %#x\n", f, __float2half(f).x, ft_f32_to_f16(f));
        }
        if (__float2bfloat16(f).x != ft_f32_to_bf16(f)) {
            if (diff_b++ < 3)
                fprintf(stderr, "  bf16 of %a: emulator %#x, host %#x\n", f, __float2bfloat16(f).x, ft_f32_to_bf16(f));
        }
    }
    CHECK(diff_h == 0 && diff_b == 0, "conversions differ from the host's: fp16 %d, bf16 %d", diff_h, diff_b);
}

static void t_blas_checks(void) {
    cublasHandle_t h;
    cublasCreate(&h);
    float *a, one = 1.f, zero = 0.f;
    cudaMalloc(&a, 64 * sizeof(float));
    /* lda below the rows of A (m = 4, op N) is rejected, as cuBLAS documents */
    CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, a, 3, a, 4, &zero, a, 4) ==
              CUBLAS_STATUS_INVALID_VALUE,
          "lda 3 < m 4 accepted");
    CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, CUDA_R_16BF, 2, a, CUDA_R_16F, 2, &zero, a,
                       CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED,
          "mixed bf16/fp16 inputs accepted");
    /* C = A^T B on 2x2 column-major operands, beta 0 ignores a NaN C */
    float hA[4] = {1, 2, 3, 4}, hB[4] = {5, 6, 7, 8}, hC[4], nan4[4] = {NAN, NAN, NAN, NAN};
    cudaMemcpy(a, hA, sizeof hA, cudaMemcpyHostToDevice);
    cudaMemcpy(a + 4, hB, sizeof hB, cudaMemcpyHostToDevice);
    cudaMemcpy(a + 8, nan4, sizeof nan4, cudaMemcpyHostToDevice);
    CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, 2, 2, 2, &one, a, 2, a + 4, 2, &zero, a + 8, 2) ==
              CUBLAS_STATUS_SUCCESS,
          "valid Sgemm rejected");
    cudaMemcpy(hC, a + 8, sizeof hC, cudaMemcpyDeviceToHost);
    /* A = [[1,3],[2,4]], A^T = [[1,2],[3,4]], B = [[5,7],[6,8]]: A^T B = [[17,23],[39,53]] (column-major 17,39,23,53)
     */
    CHECK(hC[0] == 17 && hC[1] == 39 && hC[2] == 23 && hC[3] == 53, "A^T B = %g %g %g %g", hC[0], hC[1], hC[2], hC[3]);
    cudaFree(a);
    cublasDestroy(h);
}

/* cuBLASLt: an algorithm found for one problem and alignment, used for another, aborts (what a plan cache keyed
 * too loosely would do) */
static void lt_plan(cublasLtHandle_t h, int m, cublasLtMatmulDesc_t *d, cublasLtMatrixLayout_t *l,
                    cublasLtMatmulHeuristicResult_t *r, uint32_t align) {
    cublasLtMatmulDescCreate(d, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasLtMatrixLayoutCreate(l, CUDA_R_32F, m, m, m);
    cublasLtMatmulPreference_t p;
    cublasLtMatmulPreferenceCreate(&p);
    for (int i = 0; i < 4; i++)
        cublasLtMatmulPreferenceSetAttribute(
            p, (cublasLtMatmulPreferenceAttributes_t)(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES + i), &align, 4);
    int found = 0;
    cublasLtMatmulAlgoGetHeuristic(h, *d, *l, *l, *l, *l, p, 1, r, &found);
    cublasLtMatmulPreferenceDestroy(p);
}
static void misuse_lt_other_problem(void) {
    cublasLtHandle_t h;
    cublasLtCreate(&h);
    float *a, one = 1.f, zero = 0.f;
    cudaMalloc(&a, 64 * sizeof(float));
    cublasLtMatmulDesc_t d2, d4;
    cublasLtMatrixLayout_t l2, l4;
    cublasLtMatmulHeuristicResult_t r2, r4;
    lt_plan(h, 2, &d2, &l2, &r2, 16);
    lt_plan(h, 4, &d4, &l4, &r4, 16);
    cublasLtMatmul(h, d4, &one, a, l4, a, l4, &zero, a + 16, l4, a + 16, l4, &r4.algo, NULL, 0, 0); /* fine */
    cudaDeviceSynchronize();
    cublasLtMatmul(h, d4, &one, a, l4, a, l4, &zero, a + 16, l4, a + 16, l4, &r2.algo, NULL, 0, 0);
}
static void misuse_lt_alignment(void) {
    cublasLtHandle_t h;
    cublasLtCreate(&h);
    float *a, one = 1.f, zero = 0.f;
    cudaMalloc(&a, 64 * sizeof(float));
    cublasLtMatmulDesc_t d;
    cublasLtMatrixLayout_t l;
    cublasLtMatmulHeuristicResult_t r;
    lt_plan(h, 2, &d, &l, &r, 16);
    cublasLtMatmul(h, d, &one, a + 1, l, a, l, &zero, a + 16, l, a + 16, l, &r.algo, NULL, 0, 0);
}

template <typename T> static void t_wmma_one(const char *nm, int bcol, T (*to)(float), float (*from)(T)) {
    T hA[32 * 48], hB[48 * 32];
    float fA[32 * 48], fB[48 * 32], hC0[32 * 32], hC[32 * 32];
    uint64_t s = 12345;
    for (int i = 0; i < 32 * 48; i++) {
        s = s * 6364136223846793005ull + 1;
        hA[i] = to((float)((int)(s >> 40) % 2001 - 1000) / 300.f);
        fA[i] = from(hA[i]);
        s = s * 6364136223846793005ull + 1;
        hB[i] = to((float)((int)(s >> 40) % 2001 - 1000) / 300.f);
        fB[i] = from(hB[i]);
    }
    for (int i = 0; i < 32 * 32; i++) hC0[i] = (float)(i % 7) - 3.f;
    T *dA, *dB;
    float *dC0, *dC;
    cudaMalloc(&dA, sizeof hA);
    cudaMalloc(&dB, sizeof hB);
    cudaMalloc(&dC0, sizeof hC0);
    cudaMalloc(&dC, sizeof hC);
    cudaMemcpy(dA, hA, sizeof hA, cudaMemcpyHostToDevice);
    cudaMemcpy(dB, hB, sizeof hB, cudaMemcpyHostToDevice);
    cudaMemcpy(dC0, hC0, sizeof hC0, cudaMemcpyHostToDevice);
    if (bcol)
        LAUNCH(1, 128, 0, k_wmma<T, 1>)(dA, dB, dC0, dC);
    else
        LAUNCH(1, 128, 0, k_wmma<T, 0>)(dA, dB, dC0, dC);
    cudaMemcpy(hC, dC, sizeof hC, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int m = 0; m < 32; m++)
        for (int n = 0; n < 32; n++) {
            double want = hC0[n * 32 + m]; /* C0 was read column-major */
            for (int k = 0; k < 48; k++) want += (double)fA[m * 48 + k] * (bcol ? fB[n * 48 + k] : fB[k * 32 + n]);
            want *= 2;
            if (fabs(hC[m * 32 + n] - want) > 1e-5 * (fabs(want) + 10) && bad++ < 3)
                fprintf(stderr, "  wmma %s bcol%d C[%d][%d] = %g, want %g\n", nm, bcol, m, n, hC[m * 32 + n], want);
        }
    CHECK(bad == 0, "wmma %s (B %s-major): %d of 1024 elements wrong", nm, bcol ? "col" : "row", bad);
    if (!bad) fprintf(stderr, "ok wmma %s, B %s-major, 32x48 by 48x32 + C\n", nm, bcol ? "col" : "row");
    cudaFree(dA), cudaFree(dB), cudaFree(dC0), cudaFree(dC);
}
static __half to_h(float f) { return __float2half(f); }
static float from_h(__half h) { return __half2float(h); }
static __nv_bfloat16 to_b(float f) { return __float2bfloat16(f); }
static float from_b(__nv_bfloat16 h) { return __bfloat162float(h); }

static void t_wmma(void) {
    for (int bcol = 0; bcol < 2; bcol++) {
        t_wmma_one<__half>("fp16", bcol, to_h, from_h);
        t_wmma_one<__nv_bfloat16>("bf16", bcol, to_b, from_b);
    }
    /* the element-to-lane mapping is scrambled: a kernel assuming one sees a permutation, not the identity */
    float *d, h[256];
    cudaMalloc(&d, sizeof h);
    LAUNCH(1, 32, 0, k_wmma_layout)(d);
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    int seen[256] = {0}, perm = 1, ident = 1;
    for (int i = 0; i < 256; i++) {
        int v = (int)h[i];
        if (v < 0 || v > 255 || seen[v]++) perm = 0;
        ident &= v == i;
    }
    CHECK(perm && !ident, "wmma store of x[e] = lane * 8 + e: permutation %d, identity %d", perm, ident);
    cudaFree(d);
}

int main(void) {
    t_barriers();
    t_shuffles();
    t_block_sum_and_streams();
    t_order_and_garbage();
    t_half();
    t_blas_checks();
    t_wmma();
    expect_abort("divergent __syncthreads", misuse_barrier, "divergent barrier");
    expect_abort("partial warp", misuse_partial_warp, "warp op in a warp of only 16 threads");
    expect_abort("divergent warp op", misuse_divergent_warp, "divergent warp op");
    expect_abort("host pointer to a kernel", misuse_host_pointer, "not device memory");
    expect_abort("host touches device memory", misuse_host_touch, "host code touched device memory");
    expect_abort("out of bounds in a kernel", misuse_past_end, "past the end of an allocation of 4096 bytes");
    expect_abort("wrong memcpy kind", misuse_memcpy_kind, "the destination is device memory and the source host");
    expect_abort("cuBLASLt algo, other shape", misuse_lt_other_problem, "the algorithm was chosen for another problem");
    expect_abort("cuBLASLt algo, alignment", misuse_lt_alignment, "is 4-byte aligned, but the algorithm was chosen for 16");
    expect_abort("divergent wmma op", misuse_wmma_divergent, "divergent warp op");
    expect_abort("misaligned wmma pointer", misuse_wmma_misaligned, "is not 256-bit aligned");
    expect_abort("wmma ldm", misuse_wmma_ldm, "ldm 20 elements is not a multiple of 16 bytes");
    expect_abort("bf16 wmma on sm_75", misuse_wmma_bf16_sm75, "needs sm_80 or later");
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
