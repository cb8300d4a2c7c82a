/* dpo_batch: preference pairs in the flat token layout, and the DPO loss of such a batch.
 *
 * A batch holds `count` pairs in TRL's layout, [chosen sequences; rejected sequences], each
 * sequence prompt + completion, packed back to back without padding (doc_start keeps them apart,
 * positions restart per sequence). Only completion tokens carry targets, so prompt tokens never count
 * in the log-probs. A token's sample id is 2 * pair + (0 chosen, 1 rejected), where pair indexes the
 * caller's pair array: that is how the loss finds both halves of a pair and its reference log-probs. */
#ifndef FT_DPO_BATCH_H
#define FT_DPO_BATCH_H

#include "datasets/batch.h"
#include "datasets/example.h"
#include "dpo/dpo_loss.h"

/* Batches of `per` pairs: pairs[order[0..n)] in that order (the last batch may be smaller). */
void dpo_build_batches(const ds_pref_example *pairs, const int *order, int n, int per, ds_batch **out, int *n_out);

/* Per-pair summed completion log-probs and completion lengths of a batch; slot k is the k-th distinct
 * pair met, pair[k] its index. Arrays hold at least b->n_samples entries. Returns the number of pairs. */
int dpo_gather(const ds_batch *b, const float *logp, int *pair, double *pc, double *pr, int *nc, int *nr);

/* The loss of the batch's pairs (their mean, times weight) added into *loss, and dlogp[t] for every token:
 * weight * d(mean loss)/d(logp[t]). ref_c/ref_r are indexed by pair (NULL for reference-free losses).
 * mt (may be NULL) receives the batch's metrics (means over its pairs, unweighted). */
int dpo_batch_loss(const dpo_config *cfg, const ds_batch *b, const float *logp, const double *ref_c,
                   const double *ref_r, double weight, float *dlogp, double *loss, dpo_metrics *mt, ft_error *e);

#endif
