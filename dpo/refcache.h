/* refcache: reference log-probs computed in one pass before DPO training, cached on disk.
 *
 * Contract: one file (e.g. RUN_DIR/ref_logps.bin) holds, for pair indices 0..n_pairs-1 of the
 * training (or eval) split, (ref_chosen, ref_rejected) as float64, keyed to a caller-built string
 * that names the model, the data and the template (refc_key_* below). The pass appends CHUNKS of
 * consecutive pairs; each chunk is one record with its own CRC32 and is fsync'ed, so a killed pass
 * loses at most the chunk being written: refc_open keeps every complete, checksummed chunk (cutting
 * a torn or corrupt tail off the file) and says how many pairs are done; the pass resumes there.
 * refc_complete appends an end record; a complete cache is reused as is. A different key or pair
 * count invalidates the file: refc_open starts it afresh and refc_note() says why, e.g.
 * "reference log-probs in X were computed for a different model/data/template (template: a -> b);
 * recomputing". Open a cache from one process at a time.
 *
 *   refc_cache *c; refc_open(path, key, n, &c, &e);   // refc_note(c): print it when non-empty
 *   for (i = refc_done(c); i < n; i += k) { ...; refc_append(c, i, k, values, &e); }
 *   refc_complete(c, &e);  ...  refc_get(c, i, &rc, &rr, &e);  refc_close(c);
 *
 * File layout (little-endian): "FTREFLP1", u32 version=1, u32 key_len, u64 n_pairs, key bytes,
 * u32 crc32(all of the above). Then records: "CHNK", u64 first, u32 count, count x (f64 rc, f64 rr),
 * u32 crc32(record so far); the last record of a finished pass is "DONE", u64 n_pairs, u32 crc32. */
#ifndef FT_DPO_REFCACHE_H
#define FT_DPO_REFCACHE_H

#include <stdint.h>

#include "finetune/base/util.h"

typedef enum refc_state {
    REFC_NEW = 0,     /* no usable cache: starting at pair 0 */
    REFC_RESUMED,     /* an interrupted pass: refc_done() pairs kept */
    REFC_COMPLETE,    /* a finished pass with this key: nothing to compute */
    REFC_INVALIDATED, /* a cache for another key / pair count / unreadable header: restarted */
} refc_state;

typedef struct refc_cache refc_cache;

int refc_open(const char *path, const char *key, int64_t n_pairs, refc_cache **out, ft_error *e);
/* Append pairs first..first+count-1; values = count x {ref_chosen, ref_rejected}. first must be
 * refc_done() (passes go in index order); values must be finite. The chunk is durable on return. */
int refc_append(refc_cache *c, int64_t first, int64_t count, const double *values, ft_error *e);
int refc_get(const refc_cache *c, int64_t i, double *ref_chosen, double *ref_rejected, ft_error *e);
/* Mark the pass finished; needs every pair present. */
int refc_complete(refc_cache *c, ft_error *e);
void refc_close(refc_cache *c);

int64_t refc_done(const refc_cache *c);
int64_t refc_n_pairs(const refc_cache *c);
int refc_is_complete(const refc_cache *c);
refc_state refc_status(const refc_cache *c);
/* What refc_open found (invalidated because..., torn chunk dropped...), "" when nothing to say. */
const char *refc_note(const refc_cache *c);

/* ---- building a key: "name=value" lines; refc_open names the fields that changed ---- */
typedef struct refc_key {
    char *s; /* NUL-terminated, heap */
    size_t len;
} refc_key;

void refc_key_init(refc_key *k);
void refc_key_free(refc_key *k);
/* name: no '=' or newline; value: no newline. */
int refc_key_add(refc_key *k, const char *name, const char *value, ft_error *e);
int refc_key_add_int(refc_key *k, const char *name, int64_t v, ft_error *e);
/* Fingerprint of file contents, in order (not their paths or mtimes, so a copied model or dataset
 * keeps its cache): size + CRC32 of the whole file up to 64 MiB; above that, size + CRC32 of the
 * first and last 4 MiB (a safetensors header names every tensor and its offsets). */
int refc_key_add_files(refc_key *k, const char *name, const char *const *paths, int n, ft_error *e);
/* A model directory: config.json and every *.safetensors / *.safetensors.index.json, by name; a model
 * given as one file (a GGUF model file) is that file's fingerprint. */
int refc_key_add_model_dir(refc_key *k, const char *name, const char *dir, ft_error *e);

#endif
