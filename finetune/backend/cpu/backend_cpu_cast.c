/* backend_cpu_cast: the CPU backend's precision and host-staging ops (cast, alloc_host, free_host,
 * to_host_async, from_host_async). The CPU computes in fp32; cast exists so the model's mixed-precision
 * code and its tests can run the same conversions as the GPU (round to nearest even, util.h). */
#include <stdlib.h>
#include <string.h>

#include "finetune/backend/cpu/backend_cpu.h"

static int cast_dtype_ok(ft_dtype t) { return t == FT_F32 || t == FT_BF16 || t == FT_F16; }

static float load_one(const void *p, ft_dtype t, int64_t i) {
    if (t == FT_F32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return t == FT_BF16 ? ft_bf16_to_f32(h) : ft_f16_to_f32(h);
}

void cpu_cast(ft_backend *b, const ft_tensor *in, ft_tensor *out) {
    (void)b;
    if (!cast_dtype_ok(in->dtype) || !cast_dtype_ok(out->dtype))
        cpu_contract("cast", "dtypes %s -> %s: only F32, BF16 and F16 convert", ft_dtype_name(in->dtype),
                     ft_dtype_name(out->dtype));
    int64_t n = ft_numel(in);
    if (ft_numel(out) != n) cpu_contract("cast", "in has %lld elements, out %lld", (long long)n, (long long)ft_numel(out));
    if (!n) return;
    if (in->dtype == out->dtype) {
        if (out->data != in->data) memmove(out->data, in->data, ft_nbytes(in));
        return;
    }
    if (out->dtype == FT_F32) {
        float *o = out->data;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) o[i] = load_one(in->data, in->dtype, i);
    } else {
        uint16_t *o = out->data;
        int bf = out->dtype == FT_BF16;
        /* 16 -> 16 goes through fp32, which is exact for the source, so it rounds once */
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) {
            float v = load_one(in->data, in->dtype, i);
            o[i] = bf ? ft_f32_to_bf16(v) : ft_f32_to_f16(v);
        }
    }
}

void *cpu_alloc_host(ft_backend *b, size_t bytes) {
    (void)b;
    return malloc(bytes ? bytes : 1);
}

void cpu_free_host(ft_backend *b, void *p) {
    (void)b;
    free(p);
}

/* the CPU has one memory: the "async" copies are plain copies, done on return */
void cpu_to_host_async(ft_backend *b, void *dst_host, const void *src_dev, size_t bytes) {
    (void)b;
    if (bytes && dst_host != src_dev) memmove(dst_host, src_dev, bytes);
}

void cpu_from_host_async(ft_backend *b, void *dst_dev, const void *src_host, size_t bytes) {
    (void)b;
    if (bytes && dst_dev != src_host) memmove(dst_dev, src_host, bytes);
}
