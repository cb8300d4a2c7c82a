/* job: what every training job (sft, dpo) reads from its recipe and sets up before the loop.
 *
 * job_read_common reads the shared recipe keys (docs/recipes.md lists each with its default):
 * model / model_init, tokenizer, output_dir, data, eval_data, format, template, on_bad_record,
 * max_length, truncation, overlong, packing, batch_size, grad_accum, epochs, max_steps, the
 * optimizer and schedule keys, seed, eval_fraction, eval_every, save_every, keep_last, log_every,
 * device, freeze_embeddings, freeze_layers, save_dtype, max_bad_steps, allow_nonfinite_weights. job_setup then creates the
 * backend, loads (or randomly initialises) the model and loads the tokenizer and chat template. */
#ifndef FT_JOB_H
#define FT_JOB_H

#include "datasets/dataset.h"
#include "datasets/example.h"
#include "datasets/template.h"
#include "finetune/base/dirlock.h"
#include "finetune/base/paths.h"
#include "finetune/train/recipe.h"
#include "datasets/tokenizer/tokenizer.h"
#include "finetune/train/trainer.h"
#include "lora/lora.h"

typedef struct ft_job {
    /* recipe values */
    char *model_dir;  /* NULL when model_init is used */
    char *model_init; /* config.json to initialise a random model from */
    char *tokenizer_dir;
    char *output_dir;
    char **data, **eval_data;
    size_t n_data, n_eval_data;
    const char *format, *device;
    ds_on_bad on_bad;
    ds_example_opts ex;
    int packing, batch_size, bucket_window;
    double eval_fraction;
    int freeze_embeddings;
    int allow_nonfinite_weights; /* train from a checkpoint holding NaN/Inf weights (a warning, not a refusal) */
    int *freeze_layers;
    size_t n_freeze_layers;
    int has_gpu_memory_limit; /* recipe key gpu_memory_limit given: the backend's mem_limit (0 = none) */
    size_t gpu_memory_limit;
    ft_train_cfg train;
    /* LoRA / QLoRA: recipe section "lora" or "qlora" (keys r, alpha, dropout, target_modules,
     * layers_to_transform, use_rslora, use_dora, init_from, quantize_base "nf4"|"none"; qlora: nf4) */
    int use_lora, quantize_nf4;
    lora_cfg lora;
    char *lora_init_from; /* PEFT adapter dir to continue from */
    lora_adapter *adapter;
    /* data parallelism (finetune/train/dist.h): set up by job_read_common from the launcher's environment, bound to
     * the backend by job_setup_model; world 1 without a launcher */
    dist_comm *comm;
    char *recipe_text; /* the resolved recipe (job_write_resolved), compared across ranks */
    /* set up by job_claim_output_dir */
    ft_dirlock *lock;
    /* set up by job_setup */
    ft_backend *backend;
    ft_model *model;
    ft_tokenizer *tok;
    tmpl *tmpl;
} ft_job;

/* The command line of a training job: RECIPE.json [key=value ...] [--dry-run] [--resume] [--nproc N]
 * [--master-addr HOST] [--master-port PORT] [--dist-timeout SECONDS]
 * (parsed by cli_parse_job_args). */
typedef struct job_args {
    const char *recipe;
    int dry_run, resume;
    int nproc; /* --nproc N: start N ranks here (cli_launch); 0: run this process as it is */
    int argc;
    char **argv;
} job_args;
/* Load the recipe and apply the key=value overrides in order. */
int job_load_recipe(const job_args *a, rcp **r, ft_error *e);
/* Write output_dir/recipe.resolved.json: the effective configuration of the run (rank 0), and keep its text in
 * j->recipe_text (every rank) for the trainer's cross-rank check. */
int job_write_resolved(ft_job *j, const rcp *r, ft_error *e);

/* Read the shared keys; `dry_run` and `resume` come from the command line. Then join the data-parallel job the
 * environment describes (dist_init; sets j->comm and j->train.world_size). */
int job_read_common(rcp *r, ft_job *j, int resume, ft_error *e);
/* Before anything is loaded or read: refuse (FT_EINPUT) an output_dir that is, lies inside or contains one
 * of the job's inputs (model, model_init, tokenizer, lora init_from, each data and eval_data file) or one
 * of the n_extra more (e.g. DPO's reference model); then, unless dry_run, take output_dir's lock
 * (output_dir/.finetune.lock, see finetune/base/dirlock.h), held until job_free: a second run on the
 * same output_dir is refused. --resume into one's own output_dir is a run like any other. */
int job_claim_output_dir(ft_job *j, const ft_path_input *extra, int n_extra, int dry_run, ft_error *e);
/* Tokenizer and template only (enough for planning a dry run). */
int job_setup_data(ft_job *j, rcp *r, ft_error *e);
/* Backend and model (and the communicator bound to the backend). A loaded checkpoint holding NaN/Inf weights is refused (FT_EINPUT, naming the
 * tensors and counts) unless allow_nonfinite_weights, which turns it into a warning on stderr. */
int job_setup_model(ft_job *j, ft_error *e);
/* The same for `finetune classify`: the model loaded as a sequence classifier (model_load_cls; with LoRA the
 * score head keeps an fp32 master and trains). */
int job_setup_model_cls(ft_job *j, const ft_cls_load *cls, ft_error *e);
/* That check for any model the job loaded from `dir` (`what`: "model", "reference model"). */
int job_check_weights(const ft_job *j, const ft_model *m, const char *what, const char *dir, ft_error *e);
/* The model's config without loading weights (model dir or model_init file), for plans and estimates. */
int job_model_config(const ft_job *j, ft_config *c, ft_error *e);
/* Print the --dry-run memory estimate for this job's mode (full, LoRA or QLoRA), for micro-batches of
 * `rows` sequences of max_length tokens. */
void job_print_memory_estimate(const ft_job *j, int rows);
/* The same for a classifier of num_labels labels (no lm_head, no vocabulary workspace). */
void job_print_memory_estimate_cls(const ft_job *j, int rows, int num_labels);
/* After an out-of-memory failure: append the estimate for this recipe and what to lower to e's message. */
void job_explain_oom(const ft_job *j, int rows, ft_error *e);
/* Trainable-parameter predicate honouring freeze_embeddings and freeze_layers (ctx = ft_job). */
int job_trainable(const char *name, void *ctx);
/* With LoRA: create the adapter's gradients and hand its parameters to the optimizer (ft_train_job.add_params). */
int job_add_params(void *ctx, ft_optim *o, ft_error *e);
/* Write the output model directory: weights, config, generation config, tokenizer + chat template
 * (with LoRA: the PEFT adapter files + tokenizer + chat template instead of the weights). */
int job_save_output(void *ctx, ft_model *m, ft_error *e);
void job_free(ft_job *j);

/* Parse "f32" | "bf16" | "f16" | "auto" (auto: the base's torch_dtype when 16-bit, else f32). */
int job_parse_dtype(const char *s, const char *torch_dtype, ft_dtype *out, ft_error *e);

#endif
