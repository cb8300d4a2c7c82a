/* batch: examples -> the one flat token layout the model consumes.
 *
 * Contract: a ds_batch holds rows x row_len tokens in one flat array. Each
 * sample sits whole inside one row (never crosses rows); its position ids
 * restart at 0; doc_start[t] is the flat index of the first token of t's
 * sample, which is what keeps packed samples from attending to each other;
 * padding tokens (pad id) are their own 1-token samples with pos 0, target -1
 * and sample -1. targets[t] = ids[t+1] when t+1 is in the same sample and is
 * trained, else -1. Two planners, both deterministic given the seed
 * (ft_rng): ds_batches_bucketed (shuffle, sort by length within windows of
 * `window` examples, `rows` examples per batch padded to the batch's longest)
 * and ds_batches_packed (best-fit-decreasing into rows of row_len, `rows`
 * rows per batch; batch order shuffled). */
#ifndef DS_BATCH_H
#define DS_BATCH_H

#include <stdint.h>

#include "datasets/example.h"

typedef struct ds_batch {
    int n_tokens;        /* T = rows * row_len */
    int rows, row_len;
    int32_t *ids;        /* [T] input ids (pad id in padding) */
    int32_t *targets;    /* [T] next-token target of each position, or -1 where no loss: targets[t] = ids[t+1] when t+1 is in the same sample and token t+1 is trained; -1 at each sample's last token and in padding */
    int32_t *pos;        /* [T] position ids, restarting at 0 for every sample */
    int32_t *doc_start;  /* [T] index (in the flat layout) of the first token of t's sample; padding tokens are their own 1-token samples */
    int32_t *sample;     /* [T] index of the example a token belongs to, -1 for padding */
    int32_t *excl_start, *excl_end; /* [T] or NULL (the planners here leave them NULL): keys [excl_start[t], excl_end[t]) t does not attend to inside its sample (DPO's shared-prompt layout, backend.h) */
    int n_samples;
} ds_batch;

int ds_batches_bucketed(const ds_example *ex, int n, int rows, int window, uint64_t seed, int32_t pad_id,
                        ds_batch **out, int *n_batches, ft_error *e);
/* An example longer than row_len is an error (truncate first). */
int ds_batches_packed(const ds_example *ex, int n, int row_len, int rows, uint64_t seed, int32_t pad_id,
                      ds_batch **out, int *n_batches, ft_error *e);
void ds_batches_free(ds_batch *b, int n_batches);

#endif
