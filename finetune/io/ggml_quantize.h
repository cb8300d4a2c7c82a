/* ggml_quantize: fp32 to ggml's Q8_0 and Q4_0 blocks (finetune/io/ggml_types.h), for the GGUF exporter.
 *
 * Contract: the bytes are exactly what gguf-py's gguf.quants.quantize writes for the same fp32 values
 * (checked by tests/unit/test_ggml_quantize.c against fixtures made by
 * tests/reference/make_gguf_export_fixtures.py):
 *   Q8_0: per block of 32, d = max|x| / 127 (fp32), id = d ? 1/d : 0, q = round-half-away(x * id) as int8,
 *         d stored as IEEE half (round to nearest even).
 *   Q4_0: per block of 32, m = the x of largest |x| (the first such), d = m / -8, id = d ? 1/d : 0,
 *         q = min(15, trunc(x * id + 8.5)) in fp32 (each step rounded to fp32: a double sum differs where x * id
 *         lands just under a half); elements 0..15 in the low nibbles, 16..31 in the high.
 * n must be a multiple of 32. Returns 0, or -1 when it is not (nothing is written). */
#ifndef FT_GGML_QUANTIZE_H
#define FT_GGML_QUANTIZE_H

#include <stdint.h>

int ggml_quantize_q8_0(const float *src, void *dst, int64_t n);
int ggml_quantize_q4_0(const float *src, void *dst, int64_t n);

#endif
