/* cuda_cast: the CUDA backend's precision and host-staging ops (backend.h: cast, alloc_host, free_host,
 * to_host_async, from_host_async). Casts go through fp32 with the round-to-nearest-even intrinsics
 * (__float2bfloat16, __float2half), which is what ft_f32_to_bf16 / ft_f32_to_f16 compute on the host. Host
 * staging memory is pinned (cudaMallocHost) so the copies run on the backend's stream, ordered with the
 * kernels: a layer input offloaded after the kernel that wrote it, and fetched before the one that reads it. */
#include "finetune/backend/cuda/cuda_internal.cuh"

#include <stdio.h>

template <typename S, typename D> __global__ void k_cast(const S *in, D *out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        cu_st(out, i, cu_ld(in, i));
}

template <typename S> static void cu_cast_from(ft_backend *b, const S *in, ft_tensor *out, int64_t n, unsigned grid) {
    cudaStream_t st = cu_of(b)->stream;
    CU_DISPATCH(b, "cast", out->dtype, CU_LAUNCH(grid, 256, st, k_cast<S, T>)(in, (T *)out->data, n));
}

extern "C" void cu_cast(ft_backend *b, const ft_tensor *in, ft_tensor *out) {
    const char *op = "cast";
    if (!cu_arg(b, op, "in", in, CU_ANYF, 0, 4) || !cu_arg(b, op, "out", out, CU_ANYF, 0, 4)) return;
    int64_t n = ft_numel(in);
    if (ft_numel(out) != n) {
        char s1[64], s2[64];
        cu_report(b, "cast: in %s and out %s have different element counts", ft_shape_str(in, s1, sizeof s1),
                  ft_shape_str(out, s2, sizeof s2));
        return;
    }
    if (!n) return;
    if (in->dtype == out->dtype) {
        if (in->data == out->data) return;
        cudaError_t err = cudaMemcpyAsync(out->data, in->data, ft_nbytes(in), cudaMemcpyDeviceToDevice,
                                          cu_of(b)->stream);
        if (err != cudaSuccess) cu_report(b, "cast: copy failed: %s", cudaGetErrorString(err));
        return;
    }
    int64_t g = (n + 255) / 256;
    unsigned grid = (unsigned)(g > 65535 * 16 ? 65535 * 16 : g); /* grid-stride beyond */
    CU_DISPATCH(b, op, in->dtype, cu_cast_from<T>(b, (const T *)in->data, out, n, grid));
    cu_check_launch(b, op);
}

extern "C" void *cu_alloc_host(ft_backend *b, size_t bytes) {
    void *p = NULL;
    cudaError_t err = cudaMallocHost(&p, bytes ? bytes : 1);
    if (err != cudaSuccess) {
        cudaGetLastError(); /* not sticky */
        (void)b;
        return NULL;
    }
    return p;
}

extern "C" void cu_free_host(ft_backend *b, void *p) {
    if (!p) return;
    /* pending copies may still read or write it */
    cudaStreamSynchronize(cu_of(b)->stream);
    cudaError_t err = cudaFreeHost(p);
    if (err != cudaSuccess) cu_report(b, "free_host: %s", cudaGetErrorString(err));
}

extern "C" void cu_to_host_async(ft_backend *b, void *dst_host, const void *src_dev, size_t bytes) {
    if (!bytes) return;
    cudaError_t err = cudaMemcpyAsync(dst_host, src_dev, bytes, cudaMemcpyDeviceToHost, cu_of(b)->stream);
    if (err != cudaSuccess) cu_report(b, "to_host_async of %zu bytes failed: %s", bytes, cudaGetErrorString(err));
}

extern "C" void cu_from_host_async(ft_backend *b, void *dst_dev, const void *src_host, size_t bytes) {
    if (!bytes) return;
    cudaError_t err = cudaMemcpyAsync(dst_dev, src_host, bytes, cudaMemcpyHostToDevice, cu_of(b)->stream);
    if (err != cudaSuccess) cu_report(b, "from_host_async of %zu bytes failed: %s", bytes, cudaGetErrorString(err));
}
