/* trainer: the training loop shared by the jobs (SFT now; DPO plugs in its loss).
 *
 * The trainer owns the model, its gradients and the optimizer; it walks the planned batches
 * (deterministic from the seed and the epoch), accumulates gradients over grad_accum micro-batches,
 * steps AdamW, evaluates, logs metrics.jsonl and the progress line, writes checkpoints and, at the end,
 * the output model. A resumed run continues from the newest complete checkpoint so that on the CPU its
 * losses and final weights are bit-identical to an uninterrupted run: everything a step depends on is
 * either in the checkpoint (trainable weights, AdamW moments, step) or recomputed from the seed.
 *
 * Data parallel (ft_train_job.comm, finetune/train/dist.h): every rank plans the same batches; an optimizer step
 * takes grad_accum x world_size micro-batches, rank r the r-th run of grad_accum of them; the step's loss
 * normalisation (ft_step_norm) is over the whole global step, so the summed gradients are exactly those of one
 * process with the same global batch. Rank 0 alone writes metrics, checkpoints and the output.
 *
 * The job supplies the loss through ft_loss_fn: given a micro-batch and the model's per-token
 * log-probs, it returns the loss contribution and the gradient dL/dlogp of each token. */
#ifndef FT_TRAINER_H
#define FT_TRAINER_H

#include "datasets/batch.h"
#include "finetune/train/dist.h"
#include "finetune/train/optim.h"

typedef struct ft_train_cfg {
    const char *output_dir;
    const char *device;
    int epochs;    /* used when max_steps <= 0 */
    int max_steps; /* > 0: stop after this many optimizer steps */
    int grad_accum;
    ft_optim_cfg optim; /* total_steps is filled by the trainer */
    float warmup_ratio; /* used when optim.warmup_steps == 0 */
    uint64_t seed;
    int eval_every, save_every, keep_last, log_every;
    int max_bad_steps; /* consecutive non-finite steps that stop the run */
    float loss_scale_init;          /* fp16 dynamic loss scaling (GradScaler): initial scale, 0 = 2^16 */
    int loss_scale_growth_interval; /* clean steps before the scale doubles, 0 = 2000 */
    const char *precision;          /* "auto" | "fp32" | "bf16" | "fp16" (job_setup_model applies it) */
    int offload_activations;        /* keep saved layer inputs in pinned host memory */
    const char *save_dtype_name; /* "auto", "f32", "bf16", "f16" */
    int resume;
    ft_dtype save_dtype;
    int world_size; /* data-parallel ranks (0 or 1: one process); a step takes grad_accum x world_size micro-batches */
    int zero;       /* 1: ZeRO-1, each rank keeps AdamW's moments of its share of the parameters and updates only
                     * those; the updated weights are broadcast from their owner (no effect with one rank) */
} ft_train_cfg;

/* What the whole accumulated step holds, for losses that average over it. */
typedef struct ft_step_norm {
    double tokens;  /* trained tokens (targets >= 0) */
    double samples; /* samples with at least one trained token */
} ft_step_norm;

#define FT_MAX_EXTRA_METRICS 8

/* Loss of one micro-batch. logp[t]: model log-prob of batch->targets[t] (0 where targets[t] < 0).
 * Fill dlogp[t] (the gradient of the step loss w.r.t. logp[t]) and add the batch's contribution to
 * the step loss into *loss, and its share of each extra metric into extra[i] (the trainer zeroes them
 * per step and logs them under extra_names, e.g. DPO's "rewards/accuracies"). */
typedef struct ft_loss_fn {
    void *ctx;
    int (*loss)(void *ctx, const ds_batch *b, const float *logp, const ft_step_norm *norm, float *dlogp,
                double *loss, double *extra, ft_error *e);
    int n_extra;
    const char *const *extra_names;
    const char *const *extra_labels; /* short labels for the progress line (NULL: not shown) */
    /* Called before each micro-batch's forward (may be NULL): e.g. DPO's reference log-probs computed on
     * the fly with the adapters disabled. */
    int (*prepare)(void *ctx, ft_model *m, const ds_batch *b, ft_error *e);
    /* Sequence classification (set instead of `loss`; the model has a score head): each sample of the
     * micro-batch is pooled at its last token, rows[i] (trainer_pool_rows), and logits [S * num_labels] are
     * the head's output; fill dlogits (dL/dlogits of the step loss) and add into *loss and extra as `loss`
     * does. norm->samples counts the pooled samples of the whole step. */
    int (*cls_loss)(void *ctx, const ds_batch *b, int S, const int32_t *rows, const float *logits,
                    const ft_step_norm *norm, float *dlogits, double *loss, double *extra, ft_error *e);
} ft_loss_fn;

/* The flat index of each sample's last token in b (padding skipped), in order; returns S. rows has room for
 * b->n_tokens entries. */
int trainer_pool_rows(const ds_batch *b, int32_t *rows);

/* A job's own evaluation (e.g. DPO's eval rewards): fills values[n_values], logged as eval_<name>. */
typedef struct ft_eval_fn {
    void *ctx;
    int (*run)(void *ctx, ft_model *m, double *values, ft_error *e);
    int n_values;
    const char *const *names;
} ft_eval_fn;

/* Batches of one epoch: the job plans them (deterministic from seed and epoch). */
typedef int (*ft_plan_fn)(void *ctx, int epoch, ds_batch **batches, int *n, ft_error *e);

typedef struct ft_train_job {
    const ft_train_cfg *cfg;
    ft_model *model;
    ft_loss_fn loss;
    int (*trainable)(const char *name, void *ctx); /* which parameters train (NULL: all) */
    void *trainable_ctx;
    ft_plan_fn plan;
    void *plan_ctx;
    /* Where example `sample` of a planned batch (ds_batch.sample) came from, e.g. "data.jsonl:12", for the
     * diagnosis of a non-finite loss at step 0 (may be NULL; called with plan_ctx). */
    const char *(*sample_where)(void *plan_ctx, int32_t sample, char *buf, size_t cap);
    int batches_per_epoch;
    const ds_batch *eval; /* eval batches for the mean-NLL evaluation (may be NULL) */
    int n_eval;
    ft_eval_fn eval_fn; /* instead of the NLL evaluation when run is set */
    /* Extra trainable parameters outside the model's weights (LoRA adapters): called once after the
     * optimizer exists, to optim_add_param them; their gradients are zeroed with the model's each step and
     * they are saved in / restored from checkpoints like the model's. NULL: none. */
    int (*add_params)(void *ctx, ft_optim *o, ft_error *e);
    void *params_ctx;
    /* Called after the final weights are in place, to write the output directory. */
    int (*save_output)(void *ctx, ft_model *m, ft_error *e);
    void *save_ctx;
    /* Data parallelism (NULL: one process). Bound to the model's backend (dist_bind) before trainer_run. */
    dist_comm *comm;
    const char *recipe_text; /* the resolved recipe, compared across ranks at start-up (may be NULL) */
} ft_train_job;

/* The compute dtype of a recipe's precision on backend b: auto = bf16 on sm_80+, fp16 (with loss scaling) on
 * sm_75, fp32 on the CPU; a 16-bit dtype on the CPU, or bf16 below sm_80, is a clear error (FT_EINPUT). */
int trainer_compute_dtype(const char *precision, const ft_backend *b, ft_dtype *out, ft_error *e);

/* Micro-batches of one optimizer step over all ranks: grad_accum x world_size. */
int trainer_micro_per_step(const ft_train_cfg *cfg);
/* Total optimizer steps the job will take. */
int trainer_total_steps(const ft_train_cfg *cfg, int batches_per_epoch);
int trainer_run(ft_train_job *job, ft_error *e);

#endif
