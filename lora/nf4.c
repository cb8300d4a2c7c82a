#include "lora/nf4.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const float NF4_CODE[16] = {-1.0f,
                            -0.6961928009986877f,
                            -0.5250730514526367f,
                            -0.39491748809814453f,
                            -0.28444138169288635f,
                            -0.18477343022823334f,
                            -0.09105003625154495f,
                            0.0f,
                            0.07958029955625534f,
                            0.16093020141124725f,
                            0.24611230194568634f,
                            0.33791524171829224f,
                            0.44070982933044434f,
                            0.5626170039176941f,
                            0.7229568362236023f,
                            1.0f};

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* torch.linspace(start, end, steps) in float32 on the CPU: the first half counts up from start, the
 * second half down from end, each value one fused multiply-add (checked against torch for 2..65 steps). */
static void linspace_f32(float start, float end, int steps, float *out) {
    float step = (end - start) / (float)(steps - 1);
    int half = steps / 2;
    for (int i = 0; i < steps; i++)
        out[i] = i < half ? fmaf(step, (float)i, start) : fmaf(-step, (float)(steps - i - 1), end);
}

void nf4_dynamic_map(float out[256]) {
    /* signed, 7 exponent bits, 8 bits: for exponent i, 2^i + 1 linear boundaries in [0.1, 1]; their
     * midpoints scaled by 10^(i-6), positive and negative; then 0 and 1. */
    int k = 0;
    float b[65];
    for (int i = 0; i < 7; i++) {
        int items = (1 << i) + 1;
        linspace_f32(0.1f, 1.0f, items, b);
        float scale = (float)pow(10.0, i - 6);
        for (int j = 0; j + 1 < items; j++) {
            float mid = (b[j] + b[j + 1]) / 2.0f;
            out[k++] = scale * mid;
            out[k++] = -(scale * mid);
        }
    }
    out[k++] = 0.0f;
    out[k++] = 1.0f;
    qsort(out, 256, sizeof(float), cmp_float);
}

void nf4_quantize(const float *w, int64_t n, int blocksize, uint8_t *packed, float *absmax) {
    /* midpoints between neighbouring codes, in float32 as bitsandbytes computes them */
    float mid[15];
    for (int i = 0; i < 15; i++) mid[i] = (NF4_CODE[i] + NF4_CODE[i + 1]) / 2.0f;
    int64_t nb = (n + blocksize - 1) / blocksize;
    memset(packed, 0, (size_t)((n + 1) / 2));
    for (int64_t b = 0; b < nb; b++) {
        int64_t s = b * blocksize, end = s + blocksize < n ? s + blocksize : n;
        float am = 0;
        for (int64_t i = s; i < end; i++) am = fmaxf(am, fabsf(w[i]));
        absmax[b] = am;
        float inv = 1.0f / fmaxf(am, 1e-38f);
        for (int64_t i = s; i < end; i++) {
            float v = w[i] * inv;
            v = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
            int q = 0; /* torch.bucketize (right=False): number of midpoints strictly below v */
            while (q < 15 && mid[q] < v) q++;
            packed[i >> 1] |= (uint8_t)(i & 1 ? q : q << 4);
        }
    }
    if (n & 1) packed[n >> 1] |= 7; /* bitsandbytes pads with a 0.0, whose code is 7 */
}

void nf4_dequantize(const uint8_t *packed, const float *absmax, int64_t n, int blocksize, float *out) {
    for (int64_t i = 0; i < n; i++) {
        uint8_t byte = packed[i >> 1];
        int q = i & 1 ? byte & 15 : byte >> 4;
        out[i] = NF4_CODE[q] * absmax[i / blocksize];
    }
}

#define LUT_SIZE 65536

void nf4_quantize_8bit(const float *x, int64_t n, int blocksize, const float code[256], uint8_t *q, float *absmax) {
    /* bitsandbytes' CPU kernel: [-1, 1] discretized into 65536 bins, each bin's nearest code precomputed */
    static uint8_t lut[LUT_SIZE];
    float mid[255];
    for (int i = 0; i < 255; i++) mid[i] = 0.5f * (code[i] + code[i + 1]);
    int c = 0;
    for (int i = 0; i < LUT_SIZE; i++) {
        float v = -1.0f + (2.0f * (float)i) / (float)(LUT_SIZE - 1);
        while (c < 255 && mid[c] < v) c++;
        lut[i] = (uint8_t)c;
    }
    int64_t nb = (n + blocksize - 1) / blocksize;
    for (int64_t b = 0; b < nb; b++) {
        int64_t s = b * blocksize, end = s + blocksize < n ? s + blocksize : n;
        float am = 0;
        for (int64_t i = s; i < end; i++) am = fmaxf(am, fabsf(x[i]));
        absmax[b] = am;
        if (am == 0.0f) {
            memset(q + s, 0, (size_t)(end - s));
            continue;
        }
        float inv = 1.0f / am;
        for (int64_t i = s; i < end; i++) {
            float v = x[i] * inv;
            v = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
            float idx = (v + 1.0f) * 0.5f;
            idx = idx * (float)(LUT_SIZE - 1);
            idx = idx + 0.5f;
            q[i] = lut[(uint16_t)idx];
        }
    }
}

/* torch's float32 sum of a contiguous vector on the CPU (the cascade of ATen's SumKernel: W-lane vectors,
 * 4 interleaved accumulators, 4 levels), which bitsandbytes' mean(absmax) goes through. W = 16 (AVX-512,
 * where the fixtures were made); AVX2 builds of torch use 8 and may differ in the last bit. */
#define TORCH_VEC 16
static void multi_row_sum(const float *x, int64_t rows, int lanes, float *out /* [4*lanes] */) {
    /* row i holds 4 * lanes values: ilp slot k lane l = x[(i*4 + k) * lanes + l] */
    int64_t lp = 0;
    while (((int64_t)1 << lp) < rows) lp++;
    lp = lp / 4 > 4 ? lp / 4 : 4;
    int64_t step = (int64_t)1 << lp, mask = step - 1;
    int width = 4 * lanes;
    float acc[4][4 * TORCH_VEC];
    memset(acc, 0, sizeof acc);
    int64_t i = 0;
    while (i + step <= rows) {
        for (int64_t j = 0; j < step; j++, i++)
            for (int k = 0; k < width; k++) acc[0][k] += x[i * width + k];
        for (int j = 1; j < 4; j++) {
            for (int k = 0; k < width; k++) {
                acc[j][k] += acc[j - 1][k];
                acc[j - 1][k] = 0;
            }
            if ((i & (mask << (j * lp))) != 0) break;
        }
    }
    for (; i < rows; i++)
        for (int k = 0; k < width; k++) acc[0][k] += x[i * width + k];
    for (int j = 1; j < 4; j++)
        for (int k = 0; k < width; k++) acc[0][k] += acc[j][k];
    memcpy(out, acc[0], (size_t)width * sizeof(float));
}

/* row_sum over `count` items of `lanes` floats each: returns lanes partial sums in out. */
static void row_sum(const float *x, int64_t count, int lanes, float *out) {
    float part[4 * TORCH_VEC];
    int64_t rows = count / 4;
    multi_row_sum(x, rows, lanes, part);
    for (int64_t i = rows * 4; i < count; i++)
        for (int l = 0; l < lanes; l++) part[l] += x[i * lanes + l];
    for (int k = 1; k < 4; k++)
        for (int l = 0; l < lanes; l++) part[l] += part[k * lanes + l];
    memcpy(out, part, (size_t)lanes * sizeof(float));
}

static float torch_sum_f32(const float *x, int64_t n) {
    if (n < TORCH_VEC) {
        float s;
        row_sum(x, n, 1, &s);
        return s;
    }
    int64_t nv = n / TORCH_VEC;
    float lanes[TORCH_VEC], acc = 0;
    row_sum(x, nv, TORCH_VEC, lanes);
    for (int64_t k = nv * TORCH_VEC; k < n; k++) acc += x[k];
    for (int l = 0; l < TORCH_VEC; l++) acc += lanes[l];
    return acc;
}

void nf4_double_quant(const float *absmax, int64_t nb, uint8_t *q, float *nested, float *offset) {
    float off = torch_sum_f32(absmax, nb) / (float)nb;
    float *centered = ft_xmalloc((size_t)nb * sizeof(float));
    for (int64_t i = 0; i < nb; i++) centered[i] = absmax[i] - off;
    float code[256];
    nf4_dynamic_map(code);
    nf4_quantize_8bit(centered, nb, NF4_NESTED_BLOCK, code, q, nested);
    free(centered);
    *offset = off;
}

void nf4_double_dequant(const uint8_t *q, const float *nested, float offset, int64_t nb, float *absmax) {
    float code[256];
    nf4_dynamic_map(code);
    for (int64_t i = 0; i < nb; i++) absmax[i] = code[q[i]] * nested[i / NF4_NESTED_BLOCK] + offset;
}

int nf4_weight_quantize(const float *w, int64_t rows, int64_t cols, nf4_weight *out, ft_error *e) {
    memset(out, 0, sizeof *out);
    int64_t n = rows * cols;
    if (rows <= 0 || cols <= 0) return ft_fail(e, FT_EINPUT, "nf4: cannot quantize an empty [%lld, %lld] weight",
                                                (long long)rows, (long long)cols);
    out->rows = rows;
    out->cols = cols;
    out->n = n;
    out->nblocks = (n + NF4_BLOCK - 1) / NF4_BLOCK;
    int64_t nn = (out->nblocks + NF4_NESTED_BLOCK - 1) / NF4_NESTED_BLOCK;
    out->packed = malloc((size_t)(n + 1) / 2);
    out->absmax_q = malloc((size_t)out->nblocks);
    out->nested = malloc((size_t)nn * sizeof(float));
    out->absmax = malloc((size_t)out->nblocks * sizeof(float));
    if (!out->packed || !out->absmax_q || !out->nested || !out->absmax) {
        nf4_weight_free(out);
        return ft_fail(e, FT_ENOMEM, "nf4: out of host memory quantizing a [%lld, %lld] weight", (long long)rows,
                       (long long)cols);
    }
    nf4_quantize(w, n, NF4_BLOCK, out->packed, out->absmax);
    nf4_double_quant(out->absmax, out->nblocks, out->absmax_q, out->nested, &out->offset);
    /* what a loader sees: the absmax as the double quantization restores it */
    nf4_double_dequant(out->absmax_q, out->nested, out->offset, out->nblocks, out->absmax);
    return FT_OK;
}

void nf4_weight_free(nf4_weight *q) {
    free(q->packed);
    free(q->absmax_q);
    free(q->nested);
    free(q->absmax);
    memset(q, 0, sizeof *q);
}

/* Shortest decimal that reads back as the same double (Python's repr of a float). */
static void repr_double(double v, char *buf, size_t n) {
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", n - strlen(buf) - 1);
}

char *nf4_quant_state_json(const nf4_weight *q, const char *dtype) {
    char off[40], *s = ft_xmalloc(512);
    repr_double((double)q->offset, off, sizeof off);
    snprintf(s, 512,
             "{\"quant_type\": \"nf4\", \"blocksize\": %d, \"dtype\": \"%s\", \"shape\": [%lld, %lld], "
             "\"nested_blocksize\": %d, \"nested_dtype\": \"float32\", \"nested_offset\": %s}",
             NF4_BLOCK, dtype, (long long)q->rows, (long long)q->cols, NF4_NESTED_BLOCK, off);
    return s;
}
