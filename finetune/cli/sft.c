/* finetune sft: supervised fine-tuning from a recipe (full fine-tune; layers or embeddings may be frozen). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/cli/cli.h"
#include "finetune/model/memplan.h"
#include "finetune/train/job.h"
#include "finetune/train/sft_data.h"
#include "finetune/train/sft_loss.h"

static const char SFT_HELP[] =
    "usage: finetune sft RECIPE.json [key=value ...] [--dry-run] [--resume] [--nproc N]\n"
    "\n"
    "Supervised fine-tuning: reads the recipe (JSON with // comments; any key can be\n"
    "overridden as key=value, see docs/recipes.md), builds chat-templated examples\n"
    "with the loss on assistant tokens, trains, and writes an HF model directory to\n"
    "output_dir (plus metrics.jsonl and checkpoints/).\n"
    "\n"
    "  --dry-run   print the plan (examples, tokens, steps, memory) and stop\n"
    "  --resume    continue from the newest complete checkpoint in output_dir\n"
    "  --nproc N   data parallel: start N ranks here (one per GPU; on the CPU through\n"
    "              mpirun) and wait for them; under mpirun/srun leave it out\n"
    "  --master-addr HOST, --master-port PORT   where rank 0 hands out NCCL's id\n"
    "              (default MASTER_ADDR/MASTER_PORT)\n"
    "  --dist-timeout S   seconds before a stuck collective or start-up ends every\n"
    "              rank with an error (default 300; docs/distributed.md)\n";

int cmd_sft(int argc, char **argv) {
    job_args args;
    int exit_now = cli_parse_job_args("sft", SFT_HELP, argc, argv, &args);
    if (exit_now >= 0) return exit_now;
    ft_error e = {0};
    rcp *r = NULL;
    ft_job j;
    memset(&j, 0, sizeof j);
    sft_data train = {0}, eval = {0};
    ds_batch *eval_batches = NULL, *probe = NULL;
    int n_eval_batches = 0, n_probe = 0;
    sft_norm norm = SFT_NORM_TOKENS;
    const char *s;
    int rc = job_load_recipe(&args, &r, &e);
    if (!rc) rc = job_read_common(r, &j, args.resume, &e);
    if (!rc) rc = job_claim_output_dir(&j, NULL, 0, args.dry_run, &e);
    if (!rc) rc = rcp_get_string(r, "save_dtype", "auto", &j.train.save_dtype_name, &e);
    if (!rc) rc = rcp_get_string(r, "loss_normalization", "tokens", &s, &e);
    if (!rc) rc = sft_norm_parse(s, &norm, &e);
    if (!rc) rc = job_setup_data(&j, r, &e);
    if (!rc) rc = rcp_check_unused(r, &e);
    if (!rc) rc = sft_data_read(&j, j.data, j.n_data, &train, &e);
    if (!rc && j.n_eval_data) rc = sft_data_read(&j, j.eval_data, j.n_eval_data, &eval, &e);
    if (!rc && !j.n_eval_data) sft_data_split_eval(&train, &eval, j.eval_fraction, j.train.seed);
    if (!rc && train.n == 0) rc = ft_fail(&e, FT_EINPUT, "%s: no training examples left after reading the data", args.recipe);
    int32_t pad = 0;
    sft_plan plan = {&j, &train, pad};
    if (!rc) {
        int32_t p = tok_token_id(j.tok, "<pad>");
        plan.pad = p >= 0 ? p : (tok_eos_id(j.tok) >= 0 ? tok_eos_id(j.tok) : 0);
        rc = sft_plan_epoch(&plan, 0, &probe, &n_probe, &e);
    }
    if (!rc && eval.n) {
        sft_plan ep = {&j, &eval, plan.pad};
        rc = ds_batches_bucketed(ep.d->ex, ep.d->n, j.batch_size, 1 << 30, 0, ep.pad, &eval_batches, &n_eval_batches,
                                 &e);
    }
    if (!rc) {
        sft_data_print_read_stats("data", &train);
        if (j.n_eval_data) sft_data_print_read_stats("eval data", &eval);
        sft_data_print_stats("train", &train);
        if (eval.n) sft_data_print_stats("eval", &eval);
        int total = trainer_total_steps(&j.train, n_probe);
        fprintf(stderr, "plan: %d micro-batches of %d %s per epoch, grad_accum %d, %d optimizer steps\n", n_probe,
                j.batch_size, j.packing ? "packed rows" : "padded rows", j.train.grad_accum, total);
        if (args.dry_run) {
            job_print_memory_estimate(&j, j.batch_size);
            fprintf(stderr, "dry run: nothing trained\n");
        }
    }
    if (!rc && !args.dry_run) {
        rc = job_setup_model(&j, &e);
        if (!rc) rc = job_parse_dtype(j.train.save_dtype_name, j.model->cfg.torch_dtype, &j.train.save_dtype, &e);
        if (!rc) rc = job_write_resolved(&j, r, &e);
        ft_train_job job = {.cfg = &j.train,
                            .model = j.model,
                            .loss = {.ctx = &norm, .loss = sft_loss_fn},
                            .trainable = job_trainable,
                            .trainable_ctx = &j,
                            .plan = sft_plan_epoch,
                            .plan_ctx = &plan,
                            .sample_where = sft_sample_where,
                            .batches_per_epoch = n_probe,
                            .eval = eval_batches,
                            .n_eval = n_eval_batches,
                            .add_params = j.use_lora ? job_add_params : NULL,
                            .params_ctx = &j,
                            .comm = j.comm,
                            .recipe_text = j.recipe_text,
                            .save_output = job_save_output,
                            .save_ctx = &j};
        if (!rc) rc = trainer_run(&job, &e);
        if (rc == FT_ENOMEM) job_explain_oom(&j, j.batch_size, &e);
    }
    ds_batches_free(probe, n_probe);
    ds_batches_free(eval_batches, n_eval_batches);
    sft_data_free(&train);
    sft_data_free(&eval);
    job_free(&j);
    rcp_free(r);
    return rc ? cli_report("sft", &e) : 0;
}
