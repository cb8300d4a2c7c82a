/* dpo_batch: preference pairs in the flat token layout, and the DPO loss of such a batch.
 *
 * Two layouts (dpo_layout). TRL's: a batch holds `count` pairs as [chosen sequences; rejected sequences],
 * each sequence prompt + completion, packed back to back without padding (doc_start keeps them apart,
 * positions restart per sequence). The shared-prompt layout computes each pair's prompt once: the pair is
 * one sample [prompt P, chosen C, the prompt's last token again, rejected R], pairs packed back to back.
 * The copy of the last prompt token has that token's position P-1 and the rejected tokens positions P..,
 * and the copy and the rejected tokens exclude (ds_batch.excl_start/excl_end) the original last prompt
 * token and the chosen reply: they see prompt[0..P-2], the copy and the rejected tokens before them.
 * The copy, as the same token at the same position seeing the same keys, has at every layer exactly the
 * hidden state of the prompt's last token, so it predicts rejected[0] as TRL's rejected sequence does;
 * every log-prob equals TRL's layout up to fp32 summation order. A pair with no prompt tokens, or whose
 * P + C + 1 + R exceeds span_limit (> 0), is laid out as its two sequences as in TRL's layout: a caller
 * sets span_limit to the sliding window (which counts flat indices, not positions) and, with dynamic RoPE
 * scaling (frequencies from the sample's length), to the unscaled context length, so those stay exact.
 *
 * Only completion tokens carry targets, so prompt tokens never count in the log-probs. A token's sample id
 * is 2 * pair + (0 chosen, 1 rejected) (shared layout: prompt and chosen 0, the copy and rejected 1), where
 * pair indexes the caller's pair array: that is how the loss finds both halves of a pair and its reference
 * log-probs. */
#ifndef FT_DPO_BATCH_H
#define FT_DPO_BATCH_H

#include "datasets/batch.h"
#include "datasets/example.h"
#include "dpo/dpo_loss.h"
#include "finetune/model/config.h"

typedef struct dpo_layout {
    int shared;     /* 1: the shared-prompt layout; 0: TRL's */
    int span_limit; /* > 0: pairs longer than this (P + C + 1 + R) keep TRL's layout */
} dpo_layout;

/* The span limit that keeps the shared-prompt layout exact under model config c, tightening `limit`
 * (0: none): the sliding window (it counts flat indices) and, with dynamic RoPE, max_position_embeddings. */
int dpo_shared_span_limit(const ft_config *c, int limit);

/* Batches of `per` pairs: pairs[order[0..n)] in that order (the last batch may be smaller). lay NULL: TRL's. */
void dpo_build_batches(const ds_pref_example *pairs, const int *order, int n, int per, const dpo_layout *lay,
                       ds_batch **out, int *n_out);

/* Per-pair summed completion log-probs and completion lengths of a batch; slot k is the k-th distinct
 * pair met, pair[k] its index. Arrays hold at least b->n_samples entries. Returns the number of pairs. */
int dpo_gather(const ds_batch *b, const float *logp, int *pair, double *pc, double *pr, int *nc, int *nr);

/* The loss of the batch's pairs (their mean, times weight) added into *loss, and dlogp[t] for every token:
 * weight * d(mean loss)/d(logp[t]). ref_c/ref_r are indexed by pair (NULL for reference-free losses).
 * mt (may be NULL) receives the batch's metrics (means over its pairs, unweighted). */
int dpo_batch_loss(const dpo_config *cfg, const ds_batch *b, const float *logp, const double *ref_c,
                   const double *ref_r, double weight, float *dlogp, double *loss, dpo_metrics *mt, ft_error *e);

#endif
