/* CUDA backend: inverted dropout with the counter-based mask of backend.h (the CPU twin draws the same mask). */
#include "finetune/backend/cuda/cuda_internal.cuh"

template <typename T>
__global__ void k_dropout(const T *x, T *out, int64_t n, uint64_t key, uint64_t thr, float keep_scale) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint64_t z = key + (uint64_t)i * 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        /* __fmul_rn: one rounded product, as the CPU computes it (no contraction into anything else) */
        cu_st(out, (size_t)i, (z >> 40) >= thr ? __fmul_rn(cu_ld(x, (size_t)i), keep_scale) : 0.0f);
    }
}

extern "C" void cu_dropout(ft_backend *b, const ft_tensor *x, ft_tensor *out, float p, uint64_t seed) {
    const char *op = "dropout";
    if (!cu_arg(b, op, "x", x, CU_ANYF, 1, 4) || !cu_arg(b, op, "out", out, CU_ANYF, 1, 4)) return;
    int64_t n = ft_numel(x);
    if (ft_numel(out) != n || out->dtype != x->dtype) {
        cu_report(b, "%s: x (%s, %lld elements) and out (%s, %lld) must have one dtype and element count", op,
                  ft_dtype_name(x->dtype), (long long)n, ft_dtype_name(out->dtype), (long long)ft_numel(out));
        return;
    }
    if (!(p >= 0 && p < 1)) {
        cu_report(b, "%s: p = %g: must be in [0, 1)", op, (double)p);
        return;
    }
    if (!n) return;
    uint64_t key = ft_dropout_key(seed), thr = (uint64_t)((double)p * 16777216.0);
    float keep_scale = 1.0f / (1.0f - p);
    unsigned blocks = (unsigned)((n + 255) / 256 < 65535 * 8 ? (n + 255) / 256 : 65535 * 8);
    CU_DISPATCH(b, op, x->dtype,
                CU_LAUNCH(blocks, 256, cu_of(b)->stream, k_dropout<T>)((const T *)x->data, (T *)out->data, n, key, thr,
                                                                  keep_scale));
    cu_check_launch(b, op);
}
