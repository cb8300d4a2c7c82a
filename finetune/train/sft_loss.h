/* sft_loss: the SFT objective, cross-entropy on the trained tokens (beside dpo/dpo_loss for DPO).
 *
 * Input: one micro-batch and the model's log-prob logp[t] of each target b->targets[t] (positions with
 * targets[t] < 0 carry no loss), plus what the whole accumulated step holds (ft_step_norm). Output: the
 * micro-batch's share of the step loss, added into *loss, and dlogp[t] = dLoss/dlogp[t] for every t
 * (0 where untrained). Summed over the step's micro-batches the shares give the step loss:
 *   SFT_NORM_TOKENS   mean over all trained tokens of the step (transformers' Trainer):
 *                     L = -sum_t logp[t] / step->tokens
 *   SFT_NORM_SAMPLES  each sample's mean over its own trained tokens, then the mean over samples:
 *                     L = -sum_s (sum_{t in s} logp[t] / n_s) / step->samples
 * A sample is a contiguous run of one b->sample id (a packed row holds several). */
#ifndef FT_SFT_LOSS_H
#define FT_SFT_LOSS_H

#include "datasets/batch.h"
#include "finetune/train/trainer.h"

typedef enum sft_norm { SFT_NORM_TOKENS, SFT_NORM_SAMPLES } sft_norm;

/* The recipe key loss_normalization: "tokens" or "samples". */
int sft_norm_parse(const char *s, sft_norm *out, ft_error *e);

void sft_loss_batch(sft_norm norm, const ds_batch *b, const float *logp, const ft_step_norm *step, float *dlogp,
                    double *loss);

/* The same as the trainer's ft_loss_fn.loss; ctx points to an sft_norm. */
int sft_loss_fn(void *ctx, const ds_batch *b, const float *logp, const ft_step_norm *step, float *dlogp,
                double *loss, double *extra, ft_error *e);

#endif
