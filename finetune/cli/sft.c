/* finetune sft: supervised fine-tuning from a recipe (full fine-tune; layers or embeddings may be frozen). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/cli/cli.h"
#include "finetune/train/job.h"
#include "finetune/model/memplan.h"

static const char SFT_HELP[] =
    "usage: finetune sft RECIPE.json [key=value ...] [--dry-run] [--resume]\n"
    "\n"
    "Supervised fine-tuning: reads the recipe (JSON with // comments; any key can be\n"
    "overridden as key=value, see docs/recipes.md), builds chat-templated examples\n"
    "with the loss on assistant tokens, trains, and writes an HF model directory to\n"
    "output_dir (plus metrics.jsonl and checkpoints/).\n"
    "\n"
    "  --dry-run   print the plan (examples, tokens, steps, memory) and stop\n"
    "  --resume    continue from the newest complete checkpoint in output_dir\n";

/* ---------- data ---------- */

typedef struct sft_data {
    ds_example *ex;
    int n, cap;
    ds_example_stats st;
    ds_read_stats rd;
} sft_data;

static void add_read_stats(ds_read_stats *dst, const ds_read_stats *src) {
    dst->records += src->records;
    dst->yielded += src->yielded;
    dst->skipped_total += src->skipped_total;
    for (int i = 0; i < DS_SKIP_COUNT; i++) dst->skipped[i] += src->skipped[i];
    if (!dst->first_skip[0]) memcpy(dst->first_skip, src->first_skip, sizeof dst->first_skip);
}

static int read_examples(ft_job *j, char **files, size_t n_files, sft_data *out, ft_error *e) {
    for (size_t f = 0; f < n_files; f++) {
        ds_dataset *d = NULL;
        int rc = ds_open(files[f], j->format, j->on_bad, &d, e);
        if (rc) return rc;
        if (ds_dataset_is_preference(d)) {
            ds_close(d);
            return ft_fail(e, FT_EINPUT, "%s: preference data (prompt/chosen/rejected): train it with 'finetune dpo'",
                           files[f]);
        }
        for (;;) {
            ds_conv c;
            int done = 0, kept = 0;
            rc = ds_next_conv(d, &c, &done, e);
            if (rc || done) break;
            if (out->n == out->cap) {
                out->cap = out->cap ? out->cap * 2 : 256;
                out->ex = ft_xrealloc(out->ex, (size_t)out->cap * sizeof *out->ex);
            }
            rc = ds_build_example(j->tmpl, &c, j->tok, &j->ex, &out->ex[out->n], &kept, &out->st, e);
            ds_conv_free(&c);
            if (rc) break;
            out->n += kept;
        }
        add_read_stats(&out->rd, ds_dataset_stats(d));
        ds_close(d);
        if (rc) return rc;
    }
    return FT_OK;
}

static void free_examples(sft_data *d) {
    for (int i = 0; i < d->n; i++) ds_example_free(&d->ex[i]);
    free(d->ex);
    memset(d, 0, sizeof *d);
}

/* Move a seeded random eval_fraction of the examples into eval (at least one when the fraction is > 0). */
static void split_eval(sft_data *train, sft_data *eval, double fraction, uint64_t seed) {
    if (fraction <= 0 || train->n < 2) return;
    int n_eval = (int)(fraction * train->n);
    if (n_eval < 1) n_eval = 1;
    ft_rng rng;
    ft_rng_seed(&rng, seed ^ 0x5eed0e7a1ULL);
    for (int i = train->n - 1; i > 0; i--) { /* Fisher-Yates */
        int k = (int)(ft_rng_next(&rng) % (uint64_t)(i + 1));
        ds_example t = train->ex[i];
        train->ex[i] = train->ex[k];
        train->ex[k] = t;
    }
    eval->ex = ft_xmalloc((size_t)n_eval * sizeof *eval->ex);
    memcpy(eval->ex, train->ex + train->n - n_eval, (size_t)n_eval * sizeof *eval->ex);
    eval->n = eval->cap = n_eval;
    train->n -= n_eval;
}

/* ---------- planning ---------- */

typedef struct sft_plan {
    const ft_job *j;
    const sft_data *d;
    int32_t pad;
} sft_plan;

static int plan_epoch(void *ctx, int epoch, ds_batch **batches, int *n, ft_error *e) {
    const sft_plan *p = ctx;
    uint64_t seed = p->j->train.seed + (uint64_t)epoch * 1000003ULL;
    if (p->j->packing)
        return ds_batches_packed(p->d->ex, p->d->n, p->j->ex.max_length, p->j->batch_size, seed, p->pad, batches, n, e);
    return ds_batches_bucketed(p->d->ex, p->d->n, p->j->batch_size, p->j->bucket_window, seed, p->pad, batches, n, e);
}

/* ---------- loss ---------- */

typedef struct sft_loss_ctx {
    ft_job *j;
    int per_sample; /* mean over each sample's tokens, then over samples */
} sft_loss_ctx;

/* Cross-entropy over trained tokens, averaged over all trained tokens of the accumulated step (as
 * transformers does), or per sample. */
static int sft_loss(void *ctx, const ds_batch *b, const float *logp, const ft_step_norm *norm, float *dlogp,
                    double *loss, double *extra, ft_error *e) {
    const sft_loss_ctx *c = ctx;
    int T = b->n_tokens;
    for (int t = 0; t < T; t++) dlogp[t] = 0;
    if (!c->per_sample) {
        for (int t = 0; t < T; t++)
            if (b->targets[t] >= 0) {
                *loss -= logp[t] / norm->tokens;
                dlogp[t] = (float)(-1.0 / norm->tokens);
            }
        return FT_OK;
    }
    for (int t = 0; t < T;) { /* samples are contiguous runs of one sample id */
        int s = t, n = 0;
        while (t < T && b->sample[t] == b->sample[s]) n += b->targets[t++] >= 0;
        if (n == 0) continue;
        double w = 1.0 / ((double)n * norm->samples);
        for (int i = s; i < t; i++)
            if (b->targets[i] >= 0) {
                *loss -= logp[i] * w;
                dlogp[i] = (float)-w;
            }
    }
    (void)e, (void)extra;
    return FT_OK;
}

/* ---------- the command ---------- */

static void print_stats(const char *what, const sft_data *d) {
    long tokens = 0, trained = 0;
    for (int i = 0; i < d->n; i++) {
        tokens += d->ex[i].n;
        for (int t = 0; t < d->ex[i].n; t++) trained += d->ex[i].trained[t];
    }
    fprintf(stderr, "%s: %d examples, %ld tokens, %ld trained tokens\n", what, d->n, tokens, trained);
}

/* What reading did to the records: every truncated, dropped or skipped one is counted. */
static void print_read_stats(const char *what, const sft_data *d) {
    fprintf(stderr,
            "%s: %ld records read, %ld skipped as bad; %ld examples truncated, %ld dropped (too long %ld, nothing "
            "left to train %ld)\n",
            what, d->rd.records, d->rd.skipped_total, d->st.truncated,
            d->st.dropped_too_long + d->st.dropped_no_trained, d->st.dropped_too_long, d->st.dropped_no_trained);
    if (d->rd.skipped_total) fprintf(stderr, "  first skipped record: %s\n", d->rd.first_skip);
}

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
    int n_eval_batches = 0, n_probe = 0, per_sample = 0;
    const char *s;
    int rc = job_load_recipe(&args, &r, &e);
    if (!rc) rc = job_read_common(r, &j, args.resume, &e);
    if (!rc) rc = rcp_get_string(r, "save_dtype", "auto", &j.train.save_dtype_name, &e);
    if (!rc) rc = rcp_get_string(r, "loss_normalization", "tokens", &s, &e);
    if (!rc) {
        per_sample = strcmp(s, "samples") == 0;
        if (!per_sample && strcmp(s, "tokens") != 0)
            rc = ft_fail(&e, FT_EINPUT, "loss_normalization '%s': expected tokens or samples", s);
    }
    if (!rc) rc = job_setup_data(&j, r, &e);
    if (!rc) rc = rcp_check_unused(r, &e);
    if (!rc) rc = read_examples(&j, j.data, j.n_data, &train, &e);
    if (!rc && j.n_eval_data) rc = read_examples(&j, j.eval_data, j.n_eval_data, &eval, &e);
    if (!rc && !j.n_eval_data) split_eval(&train, &eval, j.eval_fraction, j.train.seed);
    if (!rc && train.n == 0) rc = ft_fail(&e, FT_EINPUT, "%s: no training examples left after reading the data", args.recipe);
    int32_t pad = 0;
    sft_plan plan = {&j, &train, pad};
    if (!rc) {
        int32_t p = tok_token_id(j.tok, "<pad>");
        plan.pad = p >= 0 ? p : (tok_eos_id(j.tok) >= 0 ? tok_eos_id(j.tok) : 0);
        rc = plan_epoch(&plan, 0, &probe, &n_probe, &e);
    }
    if (!rc && eval.n) {
        sft_plan ep = {&j, &eval, plan.pad};
        rc = ds_batches_bucketed(ep.d->ex, ep.d->n, j.batch_size, 1 << 30, 0, ep.pad, &eval_batches, &n_eval_batches,
                                 &e);
    }
    if (!rc) {
        print_read_stats("data", &train);
        if (j.n_eval_data) print_read_stats("eval data", &eval);
        print_stats("train", &train);
        if (eval.n) print_stats("eval", &eval);
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
        sft_loss_ctx lc = {&j, per_sample};
        ft_train_job job = {.cfg = &j.train,
                            .model = j.model,
                            .loss = {.ctx = &lc, .loss = sft_loss},
                            .trainable = job_trainable,
                            .trainable_ctx = &j,
                            .plan = plan_epoch,
                            .plan_ctx = &plan,
                            .batches_per_epoch = n_probe,
                            .eval = eval_batches,
                            .n_eval = n_eval_batches,
                            .add_params = j.use_lora ? job_add_params : NULL,
                            .params_ctx = &j,
                            .save_output = job_save_output,
                            .save_ctx = &j};
        if (!rc) rc = trainer_run(&job, &e);
        if (rc == FT_ENOMEM) job_explain_oom(&j, j.batch_size, &e);
    }
    ds_batches_free(probe, n_probe);
    ds_batches_free(eval_batches, n_eval_batches);
    free_examples(&train);
    free_examples(&eval);
    job_free(&j);
    rcp_free(r);
    return rc ? cli_report("sft", &e) : 0;
}
