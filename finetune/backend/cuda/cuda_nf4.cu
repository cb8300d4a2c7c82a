/* CUDA backend: NF4 dequantization of QLoRA base weights (bitsandbytes' layout; see backend.h). */
#include "finetune/backend/cuda/cuda_internal.cuh"

__constant__ float c_nf4[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                                -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                                0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f,
                                0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
                                0.7229568362236023f, 1.0f};

/* one thread per packed byte: two outputs */
template <typename T>
__global__ void k_nf4_dequant(const uint8_t *q, const float *absmax, int blocksize, int64_t n, T *out) {
    int64_t nbytes = (n + 1) / 2;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < nbytes; j += (int64_t)gridDim.x * blockDim.x) {
        uint8_t byte = q[j];
        int64_t i = 2 * j;
        cu_st(out, (size_t)i, c_nf4[byte >> 4] * absmax[i / blocksize]);
        if (i + 1 < n) cu_st(out, (size_t)(i + 1), c_nf4[byte & 15] * absmax[(i + 1) / blocksize]);
    }
}

extern "C" void cu_nf4_dequant(ft_backend *b, const ft_tensor *packed, const ft_tensor *absmax, int blocksize,
                               ft_tensor *out) {
    const char *op = "nf4_dequant";
    if (!cu_arg(b, op, "absmax", absmax, CU_F32, 1, 4) || !cu_arg(b, op, "out", out, CU_ANYF, 1, 4)) return;
    int64_t n = ft_numel(out);
    if (packed->dtype != FT_U8 || packed->device != FT_DEV_CUDA || blocksize <= 0 ||
        ft_numel(packed) != (n + 1) / 2 || ft_numel(absmax) != (n + blocksize - 1) / blocksize) {
        cu_report(b, "%s: packed must be U8 on the GPU with (n+1)/2 bytes and absmax ceil(n/blocksize) values", op);
        return;
    }
    if (!n) return;
    int64_t nbytes = (n + 1) / 2;
    unsigned blocks = (unsigned)((nbytes + 255) / 256 < 65535 * 8 ? (nbytes + 255) / 256 : 65535 * 8);
    CU_DISPATCH(b, op, out->dtype,
                CU_LAUNCH(blocks, 256, cu_of(b)->stream, k_nf4_dequant<T>)((const uint8_t *)packed->data,
                                                                      (const float *)absmax->data, blocksize, n,
                                                                      (T *)out->data));
    cu_check_launch(b, op);
}
