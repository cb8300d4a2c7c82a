/* gguf_write: build a GGUF v3 file (the layout finetune/io/gguf.h reads) and write it atomically.
 *
 * Contract: key-values are kept in the order added (a key added twice is an error), tensors likewise;
 * general.alignment is written first (u32, the alignment used, 32); each tensor's data starts at a multiple
 * of it from the data section, which itself starts aligned, with zero padding, as gguf-py's GGUFWriter
 * lays it out. Dims are ggml's order (ne[0] contiguous: a row-major [rows, cols] tensor is ne {cols, rows}).
 * The data is copied in when added, so the file is built in memory (the model's size, once) and
 * gguf_writer_finish writes it with ft_write_file_atomic: PATH.tmp.PID, fsync, rename, never a
 * half-written PATH. Errors are FT_EINPUT (bad key/tensor) or FT_EIO, naming the key, tensor or path.
 * `finetune export-gguf` (finetune/io/gguf_export, finetune/cli/export_gguf.c) writes its files through it. */
#ifndef FT_GGUF_WRITE_H
#define FT_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "finetune/base/util.h"

typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);

int gguf_writer_u32(gguf_writer *w, const char *key, uint32_t v, ft_error *e);
int gguf_writer_i32(gguf_writer *w, const char *key, int32_t v, ft_error *e);
int gguf_writer_f32(gguf_writer *w, const char *key, float v, ft_error *e);
int gguf_writer_bool(gguf_writer *w, const char *key, int v, ft_error *e);
int gguf_writer_str(gguf_writer *w, const char *key, const char *v, ft_error *e);
/* Arrays: of strings (n NUL-terminated), of i32, of f32. */
int gguf_writer_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n, ft_error *e);
int gguf_writer_arr_i32(gguf_writer *w, const char *key, const int32_t *v, uint64_t n, ft_error *e);
int gguf_writer_arr_f32(gguf_writer *w, const char *key, const float *v, uint64_t n, ft_error *e);

/* A tensor of ggml type `type` with n_dims (1..4) dims ne (ggml order); data holds exactly
 * ggml_nbytes(type, prod ne) bytes (checked: ne[0] a whole number of blocks). */
int gguf_writer_tensor(gguf_writer *w, const char *name, int type, int n_dims, const uint64_t *ne,
                       const void *data, ft_error *e);

/* Write the file atomically; w stays owned by the caller (free it after). */
int gguf_writer_finish(gguf_writer *w, const char *path, ft_error *e);

#endif
