/* cls_data: the classification job's data, batch plan, loss and evaluation (finetune classify, predict).
 *
 * cls_data_read reads each file with datasets/classify (text or LMSYS layout) and keeps, beside the reader's
 * examples, ds_example views of their ids (no trained tokens: the loss is on the pooled logits) for the
 * batch planners; a planned batch's `sample` index names the example, hence its label. cls_plan_epoch is the
 * trainer's ft_plan_fn (packed rows or bucketed padded rows, as SFT; each sample is pooled at its own last
 * token). cls_loss_fn is the trainer's ft_loss_fn.cls_loss: cross-entropy over the labels (soft labels,
 * label smoothing) or MSE for one label, the mean over the step's samples; extra metric "accuracy"; with pairs
 * the reward-model loss, the mean over the step's pairs; extra metrics "accuracy" and "margin".
 * cls_evaluate runs the model over batches of examples and gives the mean loss, accuracy and log loss
 * (regression: loss = MSE, accuracy and log loss NaN); cls_predict gives each example's logits. */
#ifndef FT_CLS_DATA_H
#define FT_CLS_DATA_H

#include "datasets/classify.h"
#include "finetune/train/job.h"

typedef struct cls_data {
    ds_cls_example *cx;
    ds_example *ex; /* views of cx[i].ids for the planners (trained all 0) */
    int n, cap;
    ds_cls_stats st;
    int pairs; /* reward modelling: cx[2i] = prompt + chosen, cx[2i + 1] = prompt + rejected */
    ds_example_stats pst;
    ds_read_stats prd;
} cls_data;

/* Reward modelling (TRL's RewardTrainer): preference pairs in any format finetune reads (the job's format,
 * template, max_length and truncation: ds_build_pref_example), each pair two examples, chosen then rejected. */
int cls_data_read_pairs(const ft_job *j, char **files, size_t n_files, cls_data *out, ft_error *e);

int cls_data_read(char **files, size_t n_files, const ds_cls_opts *o, const ft_tokenizer *tok, cls_data *out,
                  ft_error *e);
void cls_data_free(cls_data *d);
/* Move a seeded random `fraction` of train into eval (at least one when fraction > 0). */
void cls_data_split_eval(cls_data *train, cls_data *eval, double fraction, uint64_t seed);
void cls_data_print_stats(const char *what, const cls_data *d);

typedef struct cls_job {
    const ft_job *j;
    cls_data *train, *eval;
    int32_t pad;
    int num_labels;
    double label_smoothing;
    double margin; /* reward modelling: -log sigmoid(r_c - r_r - margin) */
} cls_job;
int cls_plan_epoch(void *ctx, int epoch, ds_batch **batches, int *n, ft_error *e);
const char *cls_sample_where(void *ctx, int32_t sample, char *buf, size_t cap);
/* ft_loss_fn.cls_loss; ctx = cls_job (labels of the train set) */
int cls_loss_fn(void *ctx, const ds_batch *b, int S, const int32_t *rows, const float *logits, const ft_step_norm *norm,
                float *dlogits, double *loss, double *extra, ft_error *e);
/* ft_eval_fn.run over the eval set: values = loss, accuracy, log_loss (pairs: loss, accuracy, margin) */
int cls_eval_fn(void *ctx, ft_model *m, double *values, ft_error *e);

/* Logits [n * num_labels] of every example of d (in d's order) in batches of at most `batch_tokens` tokens,
 * the examples sorted by length (so padding is small); with progress on stderr when `progress`. */
int cls_logits(ft_model *m, const cls_data *d, int batch_tokens, int progress, float *logits, ft_error *e);
/* Mean loss, accuracy and log loss of logits against d's labels (regression: MSE, NaN, NaN; pairs: the pair
 * loss with `margin`, reward accuracy r_c > r_r, mean r_c - r_r). */
void cls_score(const cls_data *d, int num_labels, double margin, const float *logits, double *loss, double *accuracy,
               double *log_loss);

#endif
