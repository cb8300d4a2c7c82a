/* safetensors: read and write Hugging Face .safetensors checkpoints.
 *
 * Reader: a file is mmapped and its header validated in full before any use
 * (header length bounded by the file, JSON object, known dtypes, shapes of at
 * most 4 non-negative dims, data_offsets inside the data section and not
 * overlapping, shape x dtype size == byte length, all overflow-checked).
 * st_model_open views one file or all shards of a checkpoint directory
 * (model.safetensors or model.safetensors.index.json); pickle files are never
 * read. Tensors are listed sorted by name.
 *
 * Writer: declare every tensor (name, dtype, shape), then write each one's
 * data in any order; the layout (dtype alignment first, then name) and the
 * space-padded header match the Python `safetensors` library, so the same
 * tensors give the same bytes. The file appears atomically on finish.
 * st_sharded_* does the same for a directory, splitting into
 * model-0000i-of-0000N.safetensors + model.safetensors.index.json when the
 * total exceeds a maximum shard size (as transformers' save_pretrained). */
#ifndef FT_SAFETENSORS_H
#define FT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "finetune/base/tensor.h"
#include "finetune/base/util.h"

#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000) /* refuse headers above 100 MB */
#define ST_DEFAULT_SHARD_BYTES ((uint64_t)5 * 1000 * 1000 * 1000) /* "5GB" as transformers */

typedef struct st_tensor_info {
    const char *name;
    ft_dtype dtype;
    int ndim;
    int64_t shape[4];
    const void *data; /* mmapped bytes */
    size_t nbytes;
    const char *file; /* path of the file holding it (for messages; valid while the file is open) */
    /* A tensor of a GGUF file (st_model_open on a .gguf): dtype is F32 (what it dequantizes to), data and
     * nbytes are its stored (quantized) bytes; read it with st_read_f32, which dequantizes it and
     * un-permutes q/k (io/gguf_model). NULL for a safetensors tensor. */
    const void *gguf, *gguf_tensor;
} st_tensor_info;

/* ---- one file ---- */
typedef struct st_file st_file;
int st_open(const char *path, st_file **out, ft_error *e);
/* Parse a safetensors image held in memory (not copied: buf must outlive the file);
 * `name` names it in errors. */
int st_open_memory(const void *buf, size_t len, const char *name, st_file **out, ft_error *e);
void st_close(st_file *f);
const st_tensor_info *st_find(const st_file *f, const char *name);
size_t st_count(const st_file *f);
const st_tensor_info *st_at(const st_file *f, size_t i);
const char *st_metadata(const st_file *f, const char *key);
size_t st_metadata_count(const st_file *f);
/* i-th metadata pair, in file order. */
void st_metadata_at(const st_file *f, size_t i, const char **key, const char **value);

/* ---- a checkpoint: one file or all shards ---- */
typedef struct st_model st_model; /* one file or all shards of a checkpoint dir */
/* dir: a checkpoint directory, the path of one .safetensors file, or a GGUF model file (its tensors
 * under their Hugging Face names and shapes, see io/gguf_model). */
int st_model_open(const char *dir, st_model **out, ft_error *e);
void st_model_close(st_model *m);
const st_tensor_info *st_model_find(const st_model *m, const char *name); /* NULL if absent */
size_t st_model_count(const st_model *m);
const st_tensor_info *st_model_at(const st_model *m, size_t i);
const char *st_model_metadata(const st_model *m, const char *key); /* NULL if absent */
/* Convert a F32/F16/BF16 (or GGUF) tensor to fp32; n must equal its element count (error otherwise, naming the tensor). */
int st_model_read_f32(const st_model *m, const char *name, float *dst, size_t n, ft_error *e);
/* Same for one tensor info (from st_find / st_model_find). */
int st_read_f32(const st_tensor_info *t, float *dst, size_t n, ft_error *e);

/* ---- writer ---- */
typedef struct st_writer st_writer;
/* Declare every tensor first, then write each one's data (any order, pwrite at its offset), then finish:
 * finish fsyncs and renames the temp file into place; abort removes it. */
int st_writer_open(const char *path, st_writer **out, ft_error *e);
int st_writer_metadata(st_writer *w, const char *key, const char *value, ft_error *e);
int st_writer_declare(st_writer *w, const char *name, ft_dtype dt, int ndim, const int64_t *shape, ft_error *e);
int st_writer_write(st_writer *w, const char *name, const void *data, ft_error *e);
int st_writer_finish(st_writer *w, ft_error *e);
void st_writer_abort(st_writer *w);

/* Sharded writer for a checkpoint directory: same protocol. Tensors are put
 * into shards in declaration order; a shard is closed when the next tensor
 * would take it past max_shard_bytes (0 = ST_DEFAULT_SHARD_BYTES); a tensor
 * larger than the limit gets a shard of its own. One shard is written as
 * DIR/model.safetensors with no index. `prefix` is "model" unless given. */
typedef struct st_sharded st_sharded;
int st_sharded_open(const char *dir, const char *prefix, uint64_t max_shard_bytes, st_sharded **out,
                    ft_error *e);
int st_sharded_metadata(st_sharded *s, const char *key, const char *value, ft_error *e);
int st_sharded_declare(st_sharded *s, const char *name, ft_dtype dt, int ndim, const int64_t *shape,
                       ft_error *e);
int st_sharded_write(st_sharded *s, const char *name, const void *data, ft_error *e);
int st_sharded_finish(st_sharded *s, ft_error *e);
void st_sharded_abort(st_sharded *s);
/* Number of shard files (known once the first tensor is written or on finish). */
int st_sharded_num_shards(const st_sharded *s);

#endif
