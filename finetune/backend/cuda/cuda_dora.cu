/* CUDA backend: the three small DoRA ops (the CPU twins are in backend_cpu_dora.c). */
#include "finetune/backend/cuda/cuda_internal.cuh"

/* one block per row, double accumulation */
__global__ void k_row_norm(const float *x, float *out, int64_t C) {
    __shared__ double part[256];
    const float *row = x + (size_t)blockIdx.x * C;
    double s = 0;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += (double)row[j] * row[j];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if ((int)threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = (float)sqrt(part[0]);
}

template <typename T>
__global__ void k_col_scale(const T *x, const float *num, const float *den, T *out, int64_t n, int64_t N) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t j = i % N;
        cu_st(out, (size_t)i, __fmul_rn(cu_ld(x, (size_t)i), __fdiv_rn(num[j], den[j])));
    }
}

/* one thread per column (reads are coalesced across the warp), double accumulation */
template <typename T>
__global__ void k_col_dot(const T *a, const T *x, const float *den, float *out, int64_t Tn, int64_t N) {
    int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (j >= N) return;
    double s = 0;
    for (int64_t t = 0; t < Tn; t++) s += (double)cu_ld(a, (size_t)(t * N + j)) * cu_ld(x, (size_t)(t * N + j));
    out[j] += (float)(s / den[j]);
}

extern "C" void cu_row_norm(ft_backend *b, const ft_tensor *x, ft_tensor *out) {
    const char *op = "row_norm";
    if (!cu_arg(b, op, "x", x, CU_F32, 2, 2) || !cu_arg(b, op, "out", out, CU_F32, 1, 2)) return;
    if (ft_numel(out) != x->shape[0]) {
        cu_report(b, "%s: out has %lld elements, x %lld rows", op, (long long)ft_numel(out), (long long)x->shape[0]);
        return;
    }
    if (!x->shape[0]) return;
    CU_LAUNCH((unsigned)x->shape[0], 256, cu_of(b)->stream, k_row_norm)((const float *)x->data, (float *)out->data,
                                                                     x->shape[1]);
    cu_check_launch(b, op);
}

static int cu_cols(ft_backend *b, const char *op, const ft_tensor *x, const ft_tensor *v, const char *vname) {
    if (!cu_arg(b, op, vname, v, CU_F32, 1, 2)) return 0;
    if (ft_numel(v) != x->shape[1]) {
        cu_report(b, "%s: %s has %lld elements, x has %lld columns", op, vname, (long long)ft_numel(v),
                  (long long)x->shape[1]);
        return 0;
    }
    return 1;
}

extern "C" void cu_col_scale(ft_backend *b, const ft_tensor *x, const ft_tensor *num, const ft_tensor *den,
                             ft_tensor *out) {
    const char *op = "col_scale";
    if (!cu_arg(b, op, "x", x, CU_ANYF, 2, 2) || !cu_arg(b, op, "out", out, CU_ANYF, 1, 4) ||
        !cu_cols(b, op, x, num, "num") || !cu_cols(b, op, x, den, "den"))
        return;
    int64_t n = ft_numel(x);
    if (ft_numel(out) != n || out->dtype != x->dtype) {
        cu_report(b, "%s: x and out must have one dtype and element count", op);
        return;
    }
    if (!n) return;
    unsigned blocks = (unsigned)((n + 255) / 256 < 65535 * 8 ? (n + 255) / 256 : 65535 * 8);
    CU_DISPATCH(b, op, x->dtype,
                CU_LAUNCH(blocks, 256, cu_of(b)->stream, k_col_scale<T>)((const T *)x->data, (const float *)num->data,
                                                                    (const float *)den->data, (T *)out->data, n,
                                                                    x->shape[1]));
    cu_check_launch(b, op);
}

extern "C" void cu_col_dot(ft_backend *b, const ft_tensor *a, const ft_tensor *x, const ft_tensor *den,
                           ft_tensor *out) {
    const char *op = "col_dot";
    if (!cu_arg(b, op, "a", a, CU_ANYF, 2, 2) || !cu_arg(b, op, "x", x, CU_ANYF, 2, 2) ||
        !cu_cols(b, op, x, den, "den") || !cu_cols(b, op, x, out, "out"))
        return;
    if (ft_numel(a) != ft_numel(x) || a->dtype != x->dtype) {
        cu_report(b, "%s: a and x must have one dtype and shape", op);
        return;
    }
    int64_t N = x->shape[1];
    if (!N) return;
    CU_DISPATCH(b, op, x->dtype,
                CU_LAUNCH((unsigned)((N + 255) / 256), 256, cu_of(b)->stream, k_col_dot<T>)(
                    (const T *)a->data, (const T *)x->data, (const float *)den->data, (float *)out->data,
                    x->shape[0], N));
    cu_check_launch(b, op);
}
