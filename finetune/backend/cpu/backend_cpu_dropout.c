/* CPU backend: inverted dropout with a counter-based mask (the hash of backend.h, shared with CUDA). */
#include <stdint.h>

#include "finetune/backend/cpu/backend_cpu.h"

void cpu_dropout(ft_backend *b, const ft_tensor *x, ft_tensor *out, float p, uint64_t seed) {
    (void)b;
    const char *op = "dropout";
    cpu_need_f32(op, "x", x);
    cpu_need_f32(op, "out", out);
    int64_t n = ft_numel(x);
    if (ft_numel(out) != n) cpu_contract(op, "x has %lld elements, out %lld", (long long)n, (long long)ft_numel(out));
    if (!(p >= 0 && p < 1)) cpu_contract(op, "p = %g: must be in [0, 1)", (double)p);
    const uint64_t key = ft_dropout_key(seed), thr = (uint64_t)((double)p * 16777216.0);
    const float keep_scale = 1.0f / (1.0f - p);
    const float *xi = x->data;
    float *o = out->data;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        uint64_t z = key + (uint64_t)i * 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        o[i] = (z >> 40) >= thr ? xi[i] * keep_scale : 0.0f;
    }
}
