/* nf4: bitsandbytes-compatible 4-bit NormalFloat quantization (QLoRA), on the host.
 *
 * Bit-exact with bitsandbytes (checked by tests/unit/test_nf4.c against fixtures it wrote):
 * - NF4: blocks of `blocksize` (64) over the row-major flattened weight; absmax = max |x| per block
 *   (the last block may be partial); x * (1/max(absmax, 1e-38)) clamped to [-1, 1] maps to the
 *   nearest of the 16 code values (a value exactly on a midpoint takes the lower code);
 *   element 2j goes in the HIGH nibble of byte j, 2j+1 in the low one (a padded 0 when n is odd).
 * - Double quantization: offset = mean(absmax) (float32); absmax - offset is quantized to 8 bits in
 *   blocks of 256 with bitsandbytes' signed dynamic map (nf4_dynamic_map), as its CPU kernel does:
 *   a 65536-entry lookup table over [-1, 1] maps each scaled value to its nearest code.
 * Dequantization: absmax = code8[q] * nested_absmax[block/256] + offset; w = NF4[nibble] * absmax. */
#ifndef FT_NF4_H
#define FT_NF4_H

#include <stdint.h>

#include "finetune/base/util.h"

#define NF4_BLOCK 64
#define NF4_NESTED_BLOCK 256

extern const float NF4_CODE[16];

/* bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), sorted. */
void nf4_dynamic_map(float out[256]);

/* packed: (n+1)/2 bytes; absmax: ceil(n/blocksize) floats. */
void nf4_quantize(const float *w, int64_t n, int blocksize, uint8_t *packed, float *absmax);
/* out[i] = NF4_CODE[nibble i] * absmax[i / blocksize] (fp32). */
void nf4_dequantize(const uint8_t *packed, const float *absmax, int64_t n, int blocksize, float *out);

/* 8-bit blockwise quantization with a sorted 256-entry code (bitsandbytes' CPU quantize_blockwise). */
void nf4_quantize_8bit(const float *x, int64_t n, int blocksize, const float code[256], uint8_t *q, float *absmax);

/* Double quantization of nb absmax values: q [nb], nested [ceil(nb/256)], *offset. */
void nf4_double_quant(const float *absmax, int64_t nb, uint8_t *q, float *nested, float *offset);
/* Inverse: absmax[i] = code[q[i]] * nested[i/256] + offset. */
void nf4_double_dequant(const uint8_t *q, const float *nested, float offset, int64_t nb, float *absmax);

/* A quantized weight held on the host (what a checkpoint stores). */
typedef struct nf4_weight {
    int64_t rows, cols, n, nblocks;
    uint8_t *packed;  /* (n+1)/2 */
    uint8_t *absmax_q; /* nblocks (double-quantized absmax) */
    float *nested;     /* ceil(nblocks/256) */
    float offset;
    float *absmax; /* nblocks, fp32 absmax after undoing the double quantization */
} nf4_weight;

/* Quantize a [rows, cols] fp32 weight with double quantization. */
int nf4_weight_quantize(const float *w, int64_t rows, int64_t cols, nf4_weight *out, ft_error *e);
void nf4_weight_free(nf4_weight *q);

/* The quant_state JSON bitsandbytes stores (quant_state.bitsandbytes__nf4), e.g.
 * {"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [r, c], "nested_blocksize": 256,
 *  "nested_dtype": "float32", "nested_offset": 0.0123}; malloc'd. */
char *nf4_quant_state_json(const nf4_weight *q, const char *dtype);

#endif
