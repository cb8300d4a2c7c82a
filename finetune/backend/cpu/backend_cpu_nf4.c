/* CPU backend: NF4 dequantization of QLoRA base weights (the layout of lora/nf4.h, bitsandbytes'). */
#include <stdint.h>

#include "finetune/backend/cpu/backend_cpu.h"

static const float CPU_NF4[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                                  -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                                  0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f,
                                  0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
                                  0.7229568362236023f, 1.0f};

void cpu_nf4_dequant(ft_backend *b, const ft_tensor *packed, const ft_tensor *absmax, int blocksize, ft_tensor *out) {
    (void)b;
    const char *op = "nf4_dequant";
    cpu_need_f32(op, "absmax", absmax);
    cpu_need_f32(op, "out", out);
    if (packed->dtype != FT_U8) cpu_contract(op, "packed must be U8");
    int64_t n = ft_numel(out);
    if (blocksize <= 0 || ft_numel(packed) != (n + 1) / 2 || ft_numel(absmax) != (n + blocksize - 1) / blocksize)
        cpu_contract(op, "packed has %lld bytes and absmax %lld values for %lld outputs (blocksize %d)",
                     (long long)ft_numel(packed), (long long)ft_numel(absmax), (long long)n, blocksize);
    const uint8_t *q = packed->data;
    const float *am = absmax->data;
    float *o = out->data;
    int64_t nb = (n + blocksize - 1) / blocksize;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t s = blk * blocksize, e = s + blocksize < n ? s + blocksize : n;
        float a = am[blk];
        for (int64_t i = s; i < e; i++) {
            uint8_t byte = q[i >> 1];
            o[i] = CPU_NF4[i & 1 ? byte & 15 : byte >> 4] * a;
        }
    }
}
