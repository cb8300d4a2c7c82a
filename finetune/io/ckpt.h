/* ckpt: training checkpoints for exact resume.
 *
 * A checkpoint is RUN_DIR/checkpoints/step-000123/ holding
 *   tensors.safetensors  named tensors the trainer hands over (trainable
 *                        weights, AdamW m and v, ...), any dtype;
 *   state.json           opaque JSON text from the trainer (step, epoch, data
 *                        cursor, RNG state, schedule, loss scale, ...);
 *   MANIFEST.json        {"format":1,"step":N,"files":[{"name","size","crc32"}]}
 *                        written last: its presence marks a COMPLETE checkpoint.
 * Writing goes to step-000123.tmp-PID, every file and the dir are fsynced,
 * the dir is renamed into place and the parent fsynced, so a crash (SIGKILL,
 * power loss) leaves either the old set of checkpoints or the new one, plus at
 * worst a .tmp dir that ckpt_latest removes. Loading checks every file's size
 * and CRC32 (zlib) against the manifest and refuses a corrupt or truncated
 * checkpoint, naming the file.
 *
 * Writer protocol: begin; add_tensor (the host pointer must stay valid until
 * commit/abort: nothing is copied) and/or declare + write (for a caller that
 * stages tensors through one buffer: declare all first, then write each);
 * set_state; commit(keep_last) or abort. Both commit and abort free the writer. */
#ifndef FT_CKPT_H
#define FT_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "finetune/io/safetensors.h"
#include "finetune/base/tensor.h"
#include "finetune/base/util.h"

typedef struct ckpt_writer ckpt_writer;

int ckpt_writer_begin(const char *run_dir, int64_t step, ckpt_writer **out, ft_error *e);
/* Declare a tensor and keep its host pointer; its bytes are written at commit. */
int ckpt_writer_add_tensor(ckpt_writer *w, const char *name, ft_dtype dt, int ndim, const int64_t *shape,
                           const void *host_data, ft_error *e);
/* Declare without data; write it with ckpt_writer_write once everything is declared. */
int ckpt_writer_declare(ckpt_writer *w, const char *name, ft_dtype dt, int ndim, const int64_t *shape,
                        ft_error *e);
int ckpt_writer_write(ckpt_writer *w, const char *name, const void *host_data, ft_error *e);
/* The JSON text is validated (must parse) and copied. */
int ckpt_writer_set_state(ckpt_writer *w, const char *json_text, ft_error *e);
/* Finish atomically, then delete all but the keep_last newest complete
 * checkpoints (keep_last <= 0 keeps all; the new one is never deleted).
 * path_out (may be NULL) receives the malloc'd final directory. Frees w. */
int ckpt_writer_commit(ckpt_writer *w, int keep_last, char **path_out, ft_error *e);
void ckpt_writer_abort(ckpt_writer *w);

/* Newest complete checkpoint of a run: *path_out malloc'd (NULL and FT_OK when
 * there is none), *step_out its step (may be NULL). Removes leftover .tmp dirs
 * of processes that no longer run (a previous checkpoint that a killed writer
 * had moved aside to re-save its step is put back instead). */
int ckpt_latest(const char *run_dir, char **path_out, int64_t *step_out, ft_error *e);
/* Steps of all complete checkpoints, ascending (malloc'd). */
int ckpt_list_steps(const char *run_dir, int64_t **steps, size_t *n, ft_error *e);
/* "RUN_DIR/checkpoints/step-000123" (malloc'd). */
char *ckpt_dir_for_step(const char *run_dir, int64_t step);

/* ---- loading ---- */
typedef struct ckpt ckpt;
/* dir: one checkpoint directory. Verifies the manifest (sizes, CRC32) first. */
int ckpt_load(const char *dir, ckpt **out, ft_error *e);
void ckpt_free(ckpt *c);
int64_t ckpt_step(const ckpt *c);
const char *ckpt_state(const ckpt *c); /* NUL-terminated JSON text */
size_t ckpt_num_tensors(const ckpt *c);
const st_tensor_info *ckpt_tensor_at(const ckpt *c, size_t i); /* sorted by name */
const st_tensor_info *ckpt_find(const ckpt *c, const char *name); /* NULL if absent */
/* Copy a tensor into a caller buffer; dtype and shape must match exactly
 * (error names the checkpoint, tensor, and both shapes). */
int ckpt_read(const ckpt *c, const char *name, ft_dtype dt, int ndim, const int64_t *shape, void *dst,
              ft_error *e);

/* zlib CRC32 of a whole file (streamed). */
int ckpt_crc32_file(const char *path, uint32_t *crc, uint64_t *size, ft_error *e);

#endif
