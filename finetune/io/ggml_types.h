/* ggml_types: the tensor types of GGUF files (ggml's numbering and block layouts) and their
 * dequantization to fp32.
 *
 * Contract: GGML_TYPE_* carry exactly ggml's numbers (ggml.h, enum ggml_type); a type's data is
 * a sequence of blocks of ggml_blck_size(type) elements taking ggml_type_size(type) bytes each,
 * laid out as the block_* structs below (little-endian, packed, as ggml's ggml-common.h).
 * ggml_dequantize writes the same floats as ggml's reference dequantize_row_* (and gguf-py's
 * gguf.quants.dequantize): bit-exact, checked by tests/unit/test_gguf.c against fixtures made
 * by tests/reference/make_gguf_fixtures.py. Quantizers live in ggml_quantize (the exporter). */
#ifndef FT_GGML_TYPES_H
#define FT_GGML_TYPES_H

#include <stddef.h>
#include <stdint.h>

enum {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    /* 4, 5: Q4_2, Q4_3 (removed) */
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10,
    GGML_TYPE_Q3_K = 11,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_Q8_K = 15,
    GGML_TYPE_IQ2_XXS = 16,
    GGML_TYPE_IQ2_XS = 17,
    GGML_TYPE_IQ3_XXS = 18,
    GGML_TYPE_IQ1_S = 19,
    GGML_TYPE_IQ4_NL = 20,
    GGML_TYPE_IQ3_S = 21,
    GGML_TYPE_IQ2_S = 22,
    GGML_TYPE_IQ4_XS = 23,
    GGML_TYPE_I8 = 24,
    GGML_TYPE_I16 = 25,
    GGML_TYPE_I32 = 26,
    GGML_TYPE_I64 = 27,
    GGML_TYPE_F64 = 28,
    GGML_TYPE_IQ1_M = 29,
    GGML_TYPE_BF16 = 30,
    /* 31..33: Q4_0_4_4, Q4_0_4_8, Q4_0_8_8 (removed) */
    GGML_TYPE_TQ1_0 = 34,
    GGML_TYPE_TQ2_0 = 35,
    /* 36..38: IQ4_NL_4_4, IQ4_NL_4_8, IQ4_NL_8_8 (removed) */
    GGML_TYPE_MXFP4 = 39,
    GGML_TYPE_COUNT = 40,
};

#define GGML_QK4_0 32
#define GGML_QK4_1 32
#define GGML_QK5_0 32
#define GGML_QK5_1 32
#define GGML_QK8_0 32
#define GGML_QK8_1 32
#define GGML_QK_K 256
#define GGML_K_SCALE_SIZE 12

/* Block layouts (fp16 fields are raw IEEE half bits). */
typedef struct { uint16_t d; uint8_t qs[GGML_QK4_0 / 2]; } ggml_block_q4_0;            /* 18 bytes */
typedef struct { uint16_t d, m; uint8_t qs[GGML_QK4_1 / 2]; } ggml_block_q4_1;         /* 20 bytes */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[GGML_QK5_0 / 2]; } ggml_block_q5_0; /* 22 */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[GGML_QK5_1 / 2]; } ggml_block_q5_1; /* 24 */
typedef struct { uint16_t d; int8_t qs[GGML_QK8_0]; } ggml_block_q8_0;                 /* 34 bytes */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[GGML_K_SCALE_SIZE]; /* 8 scales + 8 mins, 6 bits each */
    uint8_t qs[GGML_QK_K / 2];
} ggml_block_q4_K; /* 144 bytes */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[GGML_K_SCALE_SIZE];
    uint8_t qh[GGML_QK_K / 8]; /* high bit */
    uint8_t qs[GGML_QK_K / 2]; /* low 4 bits */
} ggml_block_q5_K; /* 176 bytes */
typedef struct {
    uint8_t ql[GGML_QK_K / 2];     /* low 4 bits */
    uint8_t qh[GGML_QK_K / 4];     /* high 2 bits */
    int8_t scales[GGML_QK_K / 16]; /* 8-bit scales */
    uint16_t d;
} ggml_block_q6_K; /* 210 bytes */

/* Name as ggml prints it ("F32", "Q4_K", ...); "?" for an unknown id. */
const char *ggml_type_name(int type);
/* Elements per block (1 for F32/F16/BF16/I*); 0 for an unknown or removed id. */
int ggml_blck_size(int type);
/* Bytes per block; 0 for an unknown or removed id. */
size_t ggml_type_size(int type);
/* Bytes of n elements of the type: 0 on success, -1 when the type is unknown, n is not a whole
 * number of blocks, or the size overflows. */
int ggml_nbytes(int type, uint64_t n, uint64_t *out);
/* 1 when ggml_dequantize handles the type: F32, F16, BF16, F64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * Q4_K, Q5_K, Q6_K. */
int ggml_can_dequantize(int type);
/* n elements (a whole number of blocks) of `type` at src to fp32 at dst (src need not be aligned).
 * Returns 0, or -1 when the type is not supported or n is not a multiple of the block size. */
int ggml_dequantize(int type, const void *src, float *dst, int64_t n);

#endif
