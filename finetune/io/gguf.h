/* gguf: read GGUF files (llama.cpp / ggml), versions 3 and 2.
 *
 * Contract: gguf_open mmaps the file and validates all of it before returning: the magic "GGUF",
 * the version (2 or 3), the tensor and key-value counts (bounded by the file's size), every key
 * (non-empty, unique), every value type, string and array length (inside the file; arrays of
 * arrays refused), general.alignment (a u32 power of two; 32 when absent), every tensor info
 * (unique name, 1..4 dims, known type, first dim a whole number of blocks, element count and
 * byte size overflow-checked, offset a multiple of the alignment, data inside the file and not
 * overlapping another tensor). A corrupt or truncated file is an FT_EINPUT error naming the file
 * and what was wrong, never a crash (tests/fuzz/fuzz_gguf.c). Values are views into the mapping,
 * valid until gguf_close; strings in the file are not NUL-terminated, so they come with lengths,
 * except keys and tensor names, which are copied and terminated.
 *
 * Dims are ggml's order: ne[0] is the contiguous one, so a row-major (Hugging Face) shape is
 * ne reversed. */
#ifndef FT_GGUF_H
#define FT_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "finetune/base/util.h"

enum {
    GGUF_VT_UINT8 = 0,
    GGUF_VT_INT8 = 1,
    GGUF_VT_UINT16 = 2,
    GGUF_VT_INT16 = 3,
    GGUF_VT_UINT32 = 4,
    GGUF_VT_INT32 = 5,
    GGUF_VT_FLOAT32 = 6,
    GGUF_VT_BOOL = 7,
    GGUF_VT_STRING = 8,
    GGUF_VT_ARRAY = 9,
    GGUF_VT_UINT64 = 10,
    GGUF_VT_INT64 = 11,
    GGUF_VT_FLOAT64 = 12,
    GGUF_VT_COUNT = 13,
};

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

typedef struct gguf_kv {
    const char *key;     /* NUL-terminated copy */
    int type;            /* GGUF_VT_* */
    int elem_type;       /* for an array: its elements' type; else == type */
    uint64_t n;          /* array length; 1 for a scalar */
    const uint8_t *data; /* little-endian value bytes: the scalar or the packed elements (not for strings) */
    const char **strs;   /* for a string or array of strings: n pointers into the file ... */
    const uint64_t *str_lens; /* ... and their byte lengths */
} gguf_kv;

typedef struct gguf_tensor {
    const char *name; /* NUL-terminated copy */
    int type;         /* GGML_TYPE_* (finetune/io/ggml_types.h) */
    int n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ggml order, unused dims 1 */
    uint64_t n_elems;
    uint64_t offset; /* from the start of the data section */
    uint64_t nbytes;
    const void *data; /* into the mapping */
} gguf_tensor;

typedef struct gguf_file gguf_file;

int gguf_open(const char *path, gguf_file **out, ft_error *e);
/* Parse a GGUF image held in memory (not copied; buf must outlive the file); name names it in errors. */
int gguf_open_memory(const void *buf, size_t len, const char *name, gguf_file **out, ft_error *e);
void gguf_close(gguf_file *f);
const char *gguf_name(const gguf_file *f); /* the path given to gguf_open */
uint32_t gguf_version(const gguf_file *f);
uint32_t gguf_alignment(const gguf_file *f);

size_t gguf_kv_count(const gguf_file *f);
const gguf_kv *gguf_kv_at(const gguf_file *f, size_t i);
const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key); /* NULL if absent */
const char *gguf_type_name(int vtype); /* "u32", "string", ... */

/* Element i (0 for a scalar) of a value. Return 0, or -1 when the type does not fit:
 * _int: any integer or bool (a u64 above INT64_MAX does not fit); _float: f32, f64 or an integer;
 * _str: a string. */
int gguf_kv_int(const gguf_kv *kv, uint64_t i, int64_t *out);
int gguf_kv_float(const gguf_kv *kv, uint64_t i, double *out);
int gguf_kv_str(const gguf_kv *kv, uint64_t i, const char **s, uint64_t *len);

/* Scalars by key, with errors (FT_EINPUT) naming the file and key: absent, or of another type. */
int gguf_get_int(const gguf_file *f, const char *key, int64_t *out, ft_error *e);
int gguf_get_float(const gguf_file *f, const char *key, double *out, ft_error *e);
int gguf_get_bool(const gguf_file *f, const char *key, int *out, ft_error *e);
/* A fresh NUL-terminated copy (free it); an embedded NUL is an error. */
int gguf_get_str(const gguf_file *f, const char *key, char **out, ft_error *e);
/* An array by key: its kv (elem_type, n) or an error naming file and key. */
int gguf_get_arr(const gguf_file *f, const char *key, const gguf_kv **out, ft_error *e);

size_t gguf_tensor_count(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, size_t i); /* in file order */
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name); /* NULL if absent */
/* Dequantize a tensor to fp32; n must equal its element count (errors name the file and tensor,
 * also for a type ggml_dequantize does not handle). */
int gguf_read_f32(const gguf_file *f, const gguf_tensor *t, float *dst, uint64_t n, ft_error *e);

/* 1 when path names a GGUF file: ends in .gguf, or is a regular file starting with "GGUF". */
int gguf_is_gguf_path(const char *path);

#endif
