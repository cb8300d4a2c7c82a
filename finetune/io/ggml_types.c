/* ggml_types: see ggml_types.h. The dequantizers follow ggml's reference dequantize_row_*
 * operation for operation (same products, same order, no fused multiply-add), so the floats are
 * bit-identical to ggml's and gguf-py's. Blocks are read from bytes (src may be unaligned). */
#include "finetune/io/ggml_types.h"

#include <string.h>

#include "finetune/base/util.h"

_Static_assert(sizeof(ggml_block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(ggml_block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(ggml_block_q5_0) == 22, "q5_0 block");
_Static_assert(sizeof(ggml_block_q5_1) == 24, "q5_1 block");
_Static_assert(sizeof(ggml_block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(ggml_block_q4_K) == 144, "q4_K block");
_Static_assert(sizeof(ggml_block_q5_K) == 176, "q5_K block");
_Static_assert(sizeof(ggml_block_q6_K) == 210, "q6_K block");

typedef struct {
    const char *name;
    int blck;
    int size;
} type_traits;

static const type_traits TRAITS[GGML_TYPE_COUNT] = {
    [GGML_TYPE_F32] = {"F32", 1, 4},
    [GGML_TYPE_F16] = {"F16", 1, 2},
    [GGML_TYPE_Q4_0] = {"Q4_0", 32, 18},
    [GGML_TYPE_Q4_1] = {"Q4_1", 32, 20},
    [GGML_TYPE_Q5_0] = {"Q5_0", 32, 22},
    [GGML_TYPE_Q5_1] = {"Q5_1", 32, 24},
    [GGML_TYPE_Q8_0] = {"Q8_0", 32, 34},
    [GGML_TYPE_Q8_1] = {"Q8_1", 32, 36},
    [GGML_TYPE_Q2_K] = {"Q2_K", 256, 84},
    [GGML_TYPE_Q3_K] = {"Q3_K", 256, 110},
    [GGML_TYPE_Q4_K] = {"Q4_K", 256, 144},
    [GGML_TYPE_Q5_K] = {"Q5_K", 256, 176},
    [GGML_TYPE_Q6_K] = {"Q6_K", 256, 210},
    [GGML_TYPE_Q8_K] = {"Q8_K", 256, 292},
    [GGML_TYPE_IQ2_XXS] = {"IQ2_XXS", 256, 66},
    [GGML_TYPE_IQ2_XS] = {"IQ2_XS", 256, 74},
    [GGML_TYPE_IQ3_XXS] = {"IQ3_XXS", 256, 98},
    [GGML_TYPE_IQ1_S] = {"IQ1_S", 256, 50},
    [GGML_TYPE_IQ4_NL] = {"IQ4_NL", 32, 18},
    [GGML_TYPE_IQ3_S] = {"IQ3_S", 256, 110},
    [GGML_TYPE_IQ2_S] = {"IQ2_S", 256, 82},
    [GGML_TYPE_IQ4_XS] = {"IQ4_XS", 256, 136},
    [GGML_TYPE_I8] = {"I8", 1, 1},
    [GGML_TYPE_I16] = {"I16", 1, 2},
    [GGML_TYPE_I32] = {"I32", 1, 4},
    [GGML_TYPE_I64] = {"I64", 1, 8},
    [GGML_TYPE_F64] = {"F64", 1, 8},
    [GGML_TYPE_IQ1_M] = {"IQ1_M", 256, 56},
    [GGML_TYPE_BF16] = {"BF16", 1, 2},
    [GGML_TYPE_TQ1_0] = {"TQ1_0", 256, 54},
    [GGML_TYPE_TQ2_0] = {"TQ2_0", 256, 66},
    [GGML_TYPE_MXFP4] = {"MXFP4", 32, 17},
};

const char *ggml_type_name(int type) {
    if (type < 0 || type >= GGML_TYPE_COUNT || !TRAITS[type].name) return "?";
    return TRAITS[type].name;
}

int ggml_blck_size(int type) {
    if (type < 0 || type >= GGML_TYPE_COUNT) return 0;
    return TRAITS[type].blck;
}

size_t ggml_type_size(int type) {
    if (type < 0 || type >= GGML_TYPE_COUNT) return 0;
    return (size_t)TRAITS[type].size;
}

int ggml_nbytes(int type, uint64_t n, uint64_t *out) {
    int blck = ggml_blck_size(type);
    if (blck <= 0 || n % (uint64_t)blck) return -1;
    return ft_mul_ok(n / (uint64_t)blck, ggml_type_size(type), out) ? 0 : -1;
}

int ggml_can_dequantize(int type) {
    switch (type) {
    case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16: case GGML_TYPE_F64:
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1:
    case GGML_TYPE_Q8_0: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
        return 1;
    default:
        return 0;
    }
}

static float rd_f16(const uint8_t *p) { return ft_f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

/* 6-bit scale and min j (0..7) of a Q4_K / Q5_K block (ggml's get_scale_min_k4). */
static void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void deq_q4_0(const uint8_t *b, float *y) {
    const float d = rd_f16(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        const int x0 = (qs[j] & 0x0F) - 8, x1 = (qs[j] >> 4) - 8;
        y[j] = (float)x0 * d;
        y[j + 16] = (float)x1 * d;
    }
}

static void deq_q4_1(const uint8_t *b, float *y) {
    const float d = rd_f16(b), m = rd_f16(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        const int x0 = qs[j] & 0x0F, x1 = qs[j] >> 4;
        y[j] = (float)x0 * d + m;
        y[j + 16] = (float)x1 * d + m;
    }
}

static void deq_q5(const uint8_t *b, float *y, int has_min) {
    const float d = rd_f16(b), m = has_min ? rd_f16(b + 2) : 0.0f;
    const uint8_t *qhp = b + (has_min ? 4 : 2), *qs = qhp + 4;
    const uint32_t qh = (uint32_t)qhp[0] | ((uint32_t)qhp[1] << 8) | ((uint32_t)qhp[2] << 16) | ((uint32_t)qhp[3] << 24);
    for (int j = 0; j < 16; j++) {
        const int xh0 = (int)(((qh >> j) << 4) & 0x10), xh1 = (int)((qh >> (j + 12)) & 0x10);
        if (has_min) {
            y[j] = (float)((qs[j] & 0x0F) | xh0) * d + m;
            y[j + 16] = (float)((qs[j] >> 4) | xh1) * d + m;
        } else {
            y[j] = (float)(((qs[j] & 0x0F) | xh0) - 16) * d;
            y[j + 16] = (float)(((qs[j] >> 4) | xh1) - 16) * d;
        }
    }
}

static void deq_q8_0(const uint8_t *b, float *y) {
    const float d = rd_f16(b);
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

static void deq_q4_K(const uint8_t *b, float *y) {
    const float d = rd_f16(b), min = rd_f16(b + 2);
    const uint8_t *scales = b + 4, *q = b + 16;
    int is = 0;
    for (int j = 0; j < GGML_QK_K; j += 64) {
        uint8_t sc, m;
        scale_min_k4(is, scales, &sc, &m);
        const float d1 = d * sc, m1 = min * m;
        scale_min_k4(is + 1, scales, &sc, &m);
        const float d2 = d * sc, m2 = min * m;
        for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0xF) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
        q += 32;
        is += 2;
    }
}

static void deq_q5_K(const uint8_t *b, float *y) {
    const float d = rd_f16(b), min = rd_f16(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
    int is = 0;
    unsigned u1 = 1, u2 = 2;
    for (int j = 0; j < GGML_QK_K; j += 64) {
        uint8_t sc, m;
        scale_min_k4(is, scales, &sc, &m);
        const float d1 = d * sc, m1 = min * m;
        scale_min_k4(is + 1, scales, &sc, &m);
        const float d2 = d * sc, m2 = min * m;
        for (int l = 0; l < 32; l++) *y++ = d1 * (float)((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        ql += 32;
        is += 2;
        u1 <<= 2;
        u2 <<= 2;
    }
}

static void deq_q6_K(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    const float d = rd_f16(b + 208);
    for (int n = 0; n < GGML_QK_K; n += 128) {
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            const int q1 = (int)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

int ggml_dequantize(int type, const void *src, float *dst, int64_t n) {
    if (!ggml_can_dequantize(type) || n < 0) return -1;
    const int blck = ggml_blck_size(type);
    if (n % blck) return -1;
    const size_t bs = ggml_type_size(type);
    const uint8_t *s = (const uint8_t *)src;
    const int64_t nb = n / blck;
    switch (type) {
    case GGML_TYPE_F32:
        memcpy(dst, s, (size_t)n * 4);
        return 0;
    case GGML_TYPE_F64:
        for (int64_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, s + 8 * i, 8);
            dst[i] = (float)v;
        }
        return 0;
    case GGML_TYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = rd_f16(s + 2 * i);
        return 0;
    case GGML_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = ft_bf16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8)));
        return 0;
    default:
        break;
    }
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *b = s + (size_t)i * bs;
        float *y = dst + i * blck;
        switch (type) {
        case GGML_TYPE_Q4_0: deq_q4_0(b, y); break;
        case GGML_TYPE_Q4_1: deq_q4_1(b, y); break;
        case GGML_TYPE_Q5_0: deq_q5(b, y, 0); break;
        case GGML_TYPE_Q5_1: deq_q5(b, y, 1); break;
        case GGML_TYPE_Q8_0: deq_q8_0(b, y); break;
        case GGML_TYPE_Q4_K: deq_q4_K(b, y); break;
        case GGML_TYPE_Q5_K: deq_q5_K(b, y); break;
        case GGML_TYPE_Q6_K: deq_q6_K(b, y); break;
        default: return -1;
        }
    }
    return 0;
}
