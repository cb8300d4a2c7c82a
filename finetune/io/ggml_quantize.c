/* ggml_quantize: Q8_0 and Q4_0 quantization, the arithmetic of gguf-py's quantizer (see the header). */
#include "finetune/io/ggml_quantize.h"

#include <math.h>
#include <string.h>

#include "finetune/base/util.h"
#include "finetune/io/ggml_types.h"

int ggml_quantize_q8_0(const float *src, void *dst, int64_t n) {
    if (n < 0 || n % GGML_QK8_0) return -1;
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / GGML_QK8_0; b++) {
        const float *x = src + b * GGML_QK8_0;
        float amax = 0.0f;
        for (int i = 0; i < GGML_QK8_0; i++) amax = fmaxf(amax, fabsf(x[i]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = ft_f32_to_f16(d);
        uint8_t *blk = out + b * (int64_t)sizeof(ggml_block_q8_0);
        memcpy(blk, &dh, 2); /* little-endian host */
        for (int i = 0; i < GGML_QK8_0; i++) {
            float v = x[i] * id;
            blk[2 + i] = (uint8_t)(int8_t)roundf(v); /* round half away from zero, as np_roundf */
        }
    }
    return 0;
}

int ggml_quantize_q4_0(const float *src, void *dst, int64_t n) {
    if (n < 0 || n % GGML_QK4_0) return -1;
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / GGML_QK4_0; b++) {
        const float *x = src + b * GGML_QK4_0;
        float amax = 0.0f, m = 0.0f;
        for (int i = 0; i < GGML_QK4_0; i++)
            if (fabsf(x[i]) > amax) { /* strict: the first of equal magnitudes, as argmax */
                amax = fabsf(x[i]);
                m = x[i];
            }
        float d = m / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = ft_f32_to_f16(d);
        uint8_t *blk = out + b * (int64_t)sizeof(ggml_block_q4_0);
        memcpy(blk, &dh, 2);
        uint8_t q[GGML_QK4_0];
        for (int i = 0; i < GGML_QK4_0; i++) { /* in fp32, as ggml and gguf-py (x * id + 8.5f, each rounded) */
            float p = x[i] * id, t = truncf(p + 8.5f);
            q[i] = t >= 15.0f ? 15 : t <= 0.0f ? 0 : (uint8_t)t;
        }
        for (int i = 0; i < GGML_QK4_0 / 2; i++) blk[2 + i] = (uint8_t)(q[i] | (q[i + GGML_QK4_0 / 2] << 4));
    }
    return 0;
}
