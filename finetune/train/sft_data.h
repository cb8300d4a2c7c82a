/* sft_data: SFT's examples, read from the recipe's data files and planned into batches.
 *
 * sft_data_read reads each file (conversations only: preference data is refused, it is DPO's), builds the
 * chat-templated, masked examples with the job's template and tokenizer, and counts what reading and
 * building did (records, skipped, truncated, dropped). sft_data_split_eval moves a seeded random fraction
 * into the eval set. sft_plan_epoch is the trainer's ft_plan_fn: packed rows or bucketed padded rows,
 * deterministic from the seed and the epoch. */
#ifndef FT_SFT_DATA_H
#define FT_SFT_DATA_H

#include "finetune/train/job.h"

typedef struct sft_data {
    ds_example *ex;
    int n, cap;
    ds_example_stats st;
    ds_read_stats rd;
} sft_data;

/* Append the examples of n_files files to out. */
int sft_data_read(ft_job *j, char **files, size_t n_files, sft_data *out, ft_error *e);
void sft_data_free(sft_data *d);
/* Move a seeded random `fraction` of train into eval (at least one when the fraction is > 0). */
void sft_data_split_eval(sft_data *train, sft_data *eval, double fraction, uint64_t seed);

typedef struct sft_plan {
    const ft_job *j;
    const sft_data *d;
    int32_t pad;
} sft_plan;
int sft_plan_epoch(void *ctx, int epoch, ds_batch **batches, int *n, ft_error *e);
/* The trainer's sample_where: "file:line" of the planned example `sample` (ctx = sft_plan). */
const char *sft_sample_where(void *ctx, int32_t sample, char *buf, size_t cap);

/* To stderr: examples and tokens; what reading did to the records (every truncated, dropped or skipped one). */
void sft_data_print_stats(const char *what, const sft_data *d);
void sft_data_print_read_stats(const char *what, const sft_data *d);

#endif
