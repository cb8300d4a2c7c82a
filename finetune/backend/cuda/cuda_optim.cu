/* CUDA backend: optimizer ops (AdamW, sum of squares, scale), fp32 master state. */
#include "finetune/backend/cuda/cuda_internal.cuh"

#include <math.h>

static unsigned optim_blocks(int64_t n) { return (unsigned)((n + 255) / 256 < 65535 * 8 ? (n + 255) / 256 : 65535 * 8); }

__global__ void k_adamw(float *w, const float *g, float *m, float *v, int64_t n, float grad_scale, float decay,
                        float w1, float b2, float w2, float step_size, float bc2_sqrt, float eps) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float gi = g[i] * grad_scale;
        float wi = w[i] * decay;
        float mi = m[i] + w1 * (gi - m[i]);
        float vi = v[i] * b2 + w2 * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        w[i] = wi - step_size * (mi / denom);
        m[i] = mi;
        v[i] = vi;
    }
}

extern "C" void cu_adamw(ft_backend *b, ft_tensor *w, const ft_tensor *g, ft_tensor *m, ft_tensor *v,
                         const ft_adamw_args *a) {
    const char *op = "adamw";
    if (!cu_arg(b, op, "w", w, CU_F32, 1, 4) || !cu_arg(b, op, "g", g, CU_F32, 1, 4) ||
        !cu_arg(b, op, "m", m, CU_F32, 1, 4) || !cu_arg(b, op, "v", v, CU_F32, 1, 4))
        return;
    int64_t n = ft_numel(w);
    if (ft_numel(g) != n || ft_numel(m) != n || ft_numel(v) != n) {
        cu_report(b, "%s: w, g, m, v must have the same number of elements", op);
        return;
    }
    if (!n) return;
    /* scalar factors as the CPU backend (and PyTorch) computes them */
    double bc1 = 1.0 - pow((double)a->beta1, a->step), bc2 = 1.0 - pow((double)a->beta2, a->step);
    CU_LAUNCH(optim_blocks(n), 256, cu_of(b)->stream, k_adamw)(
        (float *)w->data, (const float *)g->data, (float *)m->data, (float *)v->data, n, a->grad_scale,
        1.0f - a->lr * a->weight_decay, 1.0f - a->beta1, a->beta2, 1.0f - a->beta2, (float)(a->lr / bc1),
        (float)sqrt(bc2), a->eps);
    cu_check_launch(b, op);
}

/* Two-level reduction in double, its shape fixed by n (so deterministic for a given n): up to 1024 blocks of
 * 256 threads, no more blocks than 256-element chunks (a small tensor does not launch 1024 idle blocks). */
#define SUMSQ_BLOCKS 1024
__global__ void k_sumsq_part(const float *x, int64_t n, double *part) {
    __shared__ double sh[256];
    double s = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        s += (double)x[i] * x[i];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int o = 128; o > 0; o >>= 1) {
        if (threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}

extern "C" double cu_sumsq(ft_backend *b, const ft_tensor *x) {
    const char *op = "sumsq";
    if (!cu_arg(b, op, "x", x, CU_F32, 1, 4)) return NAN;
    int64_t n = ft_numel(x);
    if (!n) return 0;
    double *part = (double *)cu_scratch(b, SUMSQ_BLOCKS * sizeof(double), op);
    if (!part) return NAN;
    int blocks = (int)((n + 255) / 256 < SUMSQ_BLOCKS ? (n + 255) / 256 : SUMSQ_BLOCKS);
    CU_LAUNCH(blocks, 256, cu_of(b)->stream, k_sumsq_part)((const float *)x->data, n, part);
    if (cu_check_launch(b, op)) return NAN;
    double host[SUMSQ_BLOCKS];
    cudaMemcpyAsync(host, part, (size_t)blocks * sizeof(double), cudaMemcpyDeviceToHost, cu_of(b)->stream);
    cudaStreamSynchronize(cu_of(b)->stream);
    double total = 0;
    for (int i = 0; i < blocks; i++) total += host[i];
    return total;
}

/* Per tensor i, its partials (the first blocks_i of its SUMSQ_BLOCKS slots, the rest zero) summed in slot order
 * from 0, exactly as cu_sumsq sums them on the host (adding the zero slots changes nothing); then the tensors'
 * sums in order by one thread. Double additions in the same order give the same double as the host loop. */
__global__ void k_sumsq_total(const double *part, int nt, double *tsum, double *out) {
    for (int i = threadIdx.x; i < nt; i += blockDim.x) {
        double t = 0;
        for (int j = 0; j < SUMSQ_BLOCKS; j++) t += part[(size_t)i * SUMSQ_BLOCKS + j];
        tsum[i] = t;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0;
        for (int i = 0; i < nt; i++) total += tsum[i];
        *out = total;
    }
}

extern "C" double cu_sumsq_many(ft_backend *b, int n, const ft_tensor *const *x) {
    const char *op = "sumsq_many";
    if (n <= 0) return 0;
    for (int i = 0; i < n; i++)
        if (!cu_arg(b, op, "x[i]", x[i], CU_F32, 1, 4)) return NAN;
    size_t parts = (size_t)n * SUMSQ_BLOCKS * sizeof(double);
    char *ws = (char *)cu_scratch(b, parts + (size_t)(n + 1) * sizeof(double), op);
    if (!ws) return NAN;
    double *part = (double *)ws, *tsum = (double *)(ws + parts), *out = tsum + n;
    cudaStream_t st = cu_of(b)->stream;
    if (cudaMemsetAsync(part, 0, parts, st) != cudaSuccess) {
        cu_report(b, "%s: clearing %zu bytes of partial sums failed", op, parts);
        return NAN;
    }
    for (int i = 0; i < n; i++) {
        int64_t len = ft_numel(x[i]);
        if (!len) continue;
        int blocks = (int)((len + 255) / 256 < SUMSQ_BLOCKS ? (len + 255) / 256 : SUMSQ_BLOCKS);
        CU_LAUNCH(blocks, 256, st, k_sumsq_part)((const float *)x[i]->data, len, part + (size_t)i * SUMSQ_BLOCKS);
    }
    CU_LAUNCH(1, 256, st, k_sumsq_total)(part, n, tsum, out);
    if (cu_check_launch(b, op)) return NAN;
    double total = NAN;
    cudaError_t err = cudaMemcpyAsync(&total, out, sizeof total, cudaMemcpyDeviceToHost, st);
    if (err == cudaSuccess) err = cudaStreamSynchronize(st);
    if (err != cudaSuccess) {
        cu_report(b, "%s: reading the result failed: %s", op, cudaGetErrorString(err));
        return NAN;
    }
    return total;
}

__global__ void k_scale(float *x, int64_t n, float alpha) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] *= alpha;
}

extern "C" void cu_scale(ft_backend *b, ft_tensor *x, float alpha) {
    if (!cu_arg(b, "scale", "x", x, CU_F32, 1, 4)) return;
    int64_t n = ft_numel(x);
    if (!n) return;
    CU_LAUNCH(optim_blocks(n), 256, cu_of(b)->stream, k_scale)((float *)x->data, n, alpha);
    cu_check_launch(b, "scale");
}
