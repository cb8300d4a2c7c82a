/* finetune dpo: preference tuning (DPO family) from a recipe.
 *
 * Each micro-batch holds batch_size pairs packed back to back in the flat token layout (no padding:
 * doc_start keeps samples apart): with dpo.shared_prompt (the default) each pair is one sample whose
 * prompt is computed once, [prompt, chosen, prompt's last token again, rejected] (dpo/dpo_batch.h),
 * otherwise TRL's layout, [chosen sequences; rejected sequences]; both give the same log-probs. A
 * token's sample id is 2 * pair + (0 chosen, 1 rejected), which is how the loss finds the pairs.
 * Only completion tokens carry targets, so prompt tokens never count in the log-probs.
 * Reference log-probs come from one pass over all pairs before training (the model as loaded, with any
 * LoRA adapter switched off: the base, as TRL's PEFT reference), on the fly per micro-batch with the
 * adapters switched off (no cache, no second model), from a separate reference model, or are not
 * needed (SimPO, ORPO). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/cli/cli.h"
#include "dpo/dpo_batch.h"
#include "dpo/refcache.h"
#include "finetune/train/job.h"
#include "finetune/model/memplan.h"

static const char DPO_HELP[] =
    "usage: finetune dpo RECIPE.json [key=value ...] [--dry-run] [--resume] [--nproc N]\n"
    "\n"
    "Preference tuning (DPO, cDPO, robust, IPO, hinge, SimPO, ORPO) on pairs such as\n"
    "UltraFeedback binarized, orca_dpo_pairs, OASST pairs or prompt/chosen/rejected.\n"
    "Recipe keys as for sft (docs/recipes.md) plus the dpo section (docs/dpo.md):\n"
    "dpo.loss, dpo.beta, dpo.label_smoothing, dpo.simpo_gamma, dpo.sft_weight,\n"
    "dpo.defaults (trl|h2o), dpo.reference (precompute|adapters_disabled|model),\n"
    "dpo.reference_model, dpo.reference_quantize (none|nf4), dpo.shared_prompt (true|false).\n"
    "With a lora/qlora section the output is a PEFT adapter.\n"
    "\n"
    "  --dry-run   print the plan and stop\n"
    "  --resume    continue from the newest complete checkpoint in output_dir\n"
    "  --nproc N   data parallel: start N ranks here (one per GPU; on the CPU through\n"
    "              mpirun) and wait for them; under mpirun/srun leave it out\n"
    "  --master-addr HOST, --master-port PORT   where rank 0 hands out NCCL's id\n"
    "              (default MASTER_ADDR/MASTER_PORT)\n"
    "  --dist-timeout S   seconds before a stuck collective or start-up ends every\n"
    "              rank with an error (default 300; docs/distributed.md)\n";

typedef struct pair_set {
    ds_pref_example *p;
    int n, cap;
    double *ref_c, *ref_r; /* [n] reference log-probs (NULL when the loss needs none) */
    ds_example_stats st;
    ds_read_stats rd;
} pair_set;

typedef struct dpo_job {
    ft_job j;
    dpo_config loss;
    const char *ref_mode;
    char *ref_model_dir;
    int ref_nf4;     /* hold the separate reference model's linears in NF4 */
    ft_dtype compute; /* the reference pass's compute dtype (part of the cache key) */
    dpo_layout layout; /* dpo.shared_prompt, and the span that keeps it exact for the model(s) */
    pair_set train, eval;
} dpo_job;

/* ---------- data ---------- */

static int read_pairs(ft_job *j, char **files, size_t n_files, pair_set *out, ft_error *e) {
    for (size_t f = 0; f < n_files; f++) {
        ds_dataset *d = NULL;
        int rc = ds_open(files[f], j->format, j->on_bad, &d, e);
        if (rc) return rc;
        if (!ds_dataset_is_preference(d)) {
            ds_close(d);
            return ft_fail(e, FT_EINPUT, "%s: not preference data (no chosen/rejected): train it with 'finetune sft'",
                           files[f]);
        }
        for (;;) {
            ds_pref p;
            int done = 0, kept = 0;
            rc = ds_next_pref(d, &p, &done, e);
            if (rc || done) break;
            if (out->n == out->cap) {
                out->cap = out->cap ? out->cap * 2 : 256;
                out->p = ft_xrealloc(out->p, (size_t)out->cap * sizeof *out->p);
            }
            rc = ds_build_pref_example(j->tmpl, &p, j->tok, &j->ex, &out->p[out->n], &kept, &out->st, e);
            ds_pref_free(&p);
            if (rc) break;
            out->n += kept;
        }
        const ds_read_stats *rs = ds_dataset_stats(d);
        out->rd.records += rs->records;
        out->rd.skipped_total += rs->skipped_total;
        if (!out->rd.first_skip[0]) memcpy(out->rd.first_skip, rs->first_skip, sizeof rs->first_skip);
        ds_close(d);
        if (rc) return rc;
    }
    return FT_OK;
}

static void free_pairs(pair_set *s) {
    for (int i = 0; i < s->n; i++) ds_pref_example_free(&s->p[i]);
    free(s->p);
    free(s->ref_c);
    free(s->ref_r);
    memset(s, 0, sizeof *s);
}

/* Move a seeded random eval_fraction of the pairs into eval. */
static void split_eval(pair_set *train, pair_set *eval, double fraction, uint64_t seed) {
    if (fraction <= 0 || train->n < 2) return;
    int n_eval = (int)(fraction * train->n);
    if (n_eval < 1) n_eval = 1;
    ft_rng rng;
    ft_rng_seed(&rng, seed ^ 0x5eed0e7a1ULL);
    for (int i = train->n - 1; i > 0; i--) {
        int k = (int)(ft_rng_next(&rng) % (uint64_t)(i + 1));
        ds_pref_example t = train->p[i];
        train->p[i] = train->p[k];
        train->p[k] = t;
    }
    eval->p = ft_xmalloc((size_t)n_eval * sizeof *eval->p);
    memcpy(eval->p, train->p + train->n - n_eval, (size_t)n_eval * sizeof *eval->p);
    eval->n = eval->cap = n_eval;
    train->n -= n_eval;
}

/* ---------- batches ---------- */

static int plan_epoch(void *ctx, int epoch, ds_batch **batches, int *n, ft_error *e) {
    const dpo_job *d = ctx;
    int *order = ft_xmalloc((size_t)(d->train.n ? d->train.n : 1) * sizeof(int));
    for (int i = 0; i < d->train.n; i++) order[i] = i;
    ft_rng rng;
    ft_rng_seed(&rng, d->j.train.seed + (uint64_t)epoch * 1000003ULL);
    for (int i = d->train.n - 1; i > 0; i--) {
        int k = (int)(ft_rng_next(&rng) % (uint64_t)(i + 1)), tmp = order[i];
        order[i] = order[k];
        order[k] = tmp;
    }
    dpo_build_batches(d->train.p, order, d->train.n, d->j.batch_size, &d->layout, batches, n);
    free(order);
    (void)e;
    return FT_OK;
}

/* The trainer's sample_where: a token's sample is 2 * pair + (0 chosen, 1 rejected). */
static const char *pair_where(void *ctx, int32_t sample, char *buf, size_t cap) {
    const dpo_job *d = ctx;
    if (sample < 0 || sample / 2 >= d->train.n) return NULL;
    snprintf(buf, cap, "%s (%s)", d->train.p[sample / 2].where, sample % 2 ? "rejected" : "chosen");
    return buf;
}

/* ---------- reference log-probs ---------- */

/* Summed completion log-probs of every pair of s under model m, in batches of `per` pairs, through the
 * on-disk cache at cache_path: a finished pass with the same key is reused, an interrupted one resumes. */
/* Data parallel: the chunks of `per` pairs not yet in the cache are split over the ranks (chunk k to rank
 * k mod world); their sums meet by an all-reduce, rank 0 alone writes the cache, and its values go to every rank. */
static int reference_pass_dist(dist_comm *dc, ft_model *m, pair_set *s, int per, const dpo_layout *lay,
                               const char *cache_path, const char *key, ft_error *e) {
    int rank = dist_rank(dc), world = dist_world(dc), n = s->n, rc = FT_OK;
    s->ref_c = ft_xcalloc((size_t)(n ? n : 1), sizeof(double));
    s->ref_r = ft_xcalloc((size_t)(n ? n : 1), sizeof(double));
    refc_cache *cache = NULL;
    double start = 0;
    if (rank == 0) {
        rc = refc_open(cache_path, key, n, &cache, e);
        if (!rc && refc_note(cache)[0]) fprintf(stderr, "%s\n", refc_note(cache));
        if (!rc) start = (double)refc_done(cache);
        for (int i = 0; i < (int)start && !rc; i++) rc = refc_get(cache, i, &s->ref_c[i], &s->ref_r[i], e);
    }
    if (!dist_all_ok(dc, !rc, e) && !rc) rc = ft_fail(e, FT_EIO, "rank 0 could not open the reference cache");
    if (!rc) rc = dist_broadcast_host(dc, &start, sizeof start, 0, "the reference pass's start", e);
    double *vals = ft_xcalloc((size_t)(n ? n : 1) * 2, sizeof(double));
    int *order = ft_xmalloc((size_t)(n ? n : 1) * sizeof(int));
    for (int i = 0; i < n; i++) order[i] = i;
    double t0 = ft_now();
    int k = 0;
    for (int first = (int)start; first < n && !rc; first += per, k++) {
        if (k % world != rank) continue;
        int count = first + per <= n ? per : n - first, nb;
        ds_batch *b;
        dpo_build_batches(s->p, order + first, count, count, lay, &b, &nb);
        float *logp = ft_xmalloc((size_t)b->n_tokens * sizeof(float));
        rc = model_forward_excl(m, b->n_tokens, b->ids, b->pos, b->doc_start, b->excl_start, b->excl_end, b->targets,
                                logp, e);
        if (!rc) {
            int *pair = ft_xmalloc((size_t)count * sizeof(int)), *nc = ft_xmalloc((size_t)count * sizeof(int)),
                *nr = ft_xmalloc((size_t)count * sizeof(int));
            double *pc = ft_xmalloc((size_t)count * 8), *pr = ft_xmalloc((size_t)count * 8);
            int got = dpo_gather(b, logp, pair, pc, pr, nc, nr);
            for (int q = 0; q < got; q++) {
                vals[2 * pair[q]] = pc[q];
                vals[2 * pair[q] + 1] = pr[q];
            }
            free(pair), free(nc), free(nr), free(pc), free(pr);
        }
        free(logp);
        ds_batches_free(b, nb);
    }
    if (!rc) rc = dist_allreduce_f64_host(dc, vals, (size_t)n * 2, "all-reduce of the reference log-probs", e);
    for (int first = (int)start; first < n && !rc && rank == 0; first += per) {
        int count = first + per <= n ? per : n - first;
        rc = refc_append(cache, first, count, vals + 2 * first, e);
    }
    if (!rc && rank == 0 && !refc_is_complete(cache)) rc = refc_complete(cache, e);
    for (int i = (int)start; i < n; i++) s->ref_c[i] = vals[2 * i], s->ref_r[i] = vals[2 * i + 1];
    if (!dist_all_ok(dc, !rc, e) && !rc) rc = ft_fail(e, FT_EIO, "rank 0 could not write the reference cache");
    if (!rc) rc = dist_broadcast_host(dc, s->ref_c, (size_t)n * sizeof(double), 0, "the reference log-probs", e);
    if (!rc) rc = dist_broadcast_host(dc, s->ref_r, (size_t)n * sizeof(double), 0, "the reference log-probs", e);
    refc_close(cache);
    free(order);
    free(vals);
    if (!rc && rank == 0 && start < n)
        fprintf(stderr, "reference log-probs: %d pairs on %d ranks in %.1f s (cached in %s)\n", n - (int)start, world,
                ft_now() - t0, cache_path);
    return rc;
}

static int reference_pass(dist_comm *dc, ft_model *m, pair_set *s, int per, const dpo_layout *lay,
                          const char *cache_path, const char *key, ft_error *e) {
    if (dist_active(dc)) return reference_pass_dist(dc, m, s, per, lay, cache_path, key, e);
    s->ref_c = ft_xcalloc((size_t)(s->n ? s->n : 1), sizeof(double));
    s->ref_r = ft_xcalloc((size_t)(s->n ? s->n : 1), sizeof(double));
    refc_cache *cache = NULL;
    int rc = refc_open(cache_path, key, s->n, &cache, e);
    if (rc) return rc;
    if (refc_note(cache)[0]) fprintf(stderr, "%s\n", refc_note(cache));
    int *order = ft_xmalloc((size_t)(s->n ? s->n : 1) * sizeof(int));
    for (int i = 0; i < s->n; i++) order[i] = i;
    double t0 = ft_now();
    int start = (int)refc_done(cache);
    for (int first = start; first < s->n && !rc; first += per) {
        int count = first + per <= s->n ? per : s->n - first, nb;
        ds_batch *b;
        dpo_build_batches(s->p, order + first, count, count, lay, &b, &nb);
        float *logp = ft_xmalloc((size_t)b->n_tokens * sizeof(float));
        rc = model_forward_excl(m, b->n_tokens, b->ids, b->pos, b->doc_start, b->excl_start, b->excl_end, b->targets,
                                logp, e);
        if (!rc) {
            int *pair = ft_xmalloc((size_t)count * sizeof(int)), *nc = ft_xmalloc((size_t)count * sizeof(int)),
                *nr = ft_xmalloc((size_t)count * sizeof(int));
            double *pc = ft_xmalloc((size_t)count * 8), *pr = ft_xmalloc((size_t)count * 8),
                   *vals = ft_xmalloc((size_t)count * 16);
            int n = dpo_gather(b, logp, pair, pc, pr, nc, nr);
            for (int k = 0; k < n; k++) {
                vals[2 * (pair[k] - first)] = pc[k];
                vals[2 * (pair[k] - first) + 1] = pr[k];
            }
            rc = refc_append(cache, first, count, vals, e);
            free(pair), free(nc), free(nr), free(pc), free(pr), free(vals);
        }
        free(logp);
        ds_batches_free(b, nb);
    }
    if (!rc && !refc_is_complete(cache)) rc = refc_complete(cache, e);
    for (int i = 0; i < s->n && !rc; i++) rc = refc_get(cache, i, &s->ref_c[i], &s->ref_r[i], e);
    refc_close(cache);
    free(order);
    if (!rc && start < s->n)
        fprintf(stderr, "reference log-probs: %d pairs in %.1f s (cached in %s)\n", s->n - start, ft_now() - t0,
                cache_path);
    return rc;
}

/* ---------- loss and evaluation ---------- */

static const char *const METRIC_NAMES[] = {"rewards/chosen", "rewards/rejected", "rewards/accuracies",
                                           "rewards/margins", "logps/chosen",    "logps/rejected"};
static const char *const METRIC_LABELS[] = {NULL, NULL, "acc", "margin", NULL, NULL};

static void metrics_into(const dpo_metrics *mt, double w, double *v) {
    v[0] += w * mt->rewards_chosen;
    v[1] += w * mt->rewards_rejected;
    v[2] += w * mt->rewards_accuracies;
    v[3] += w * mt->rewards_margins;
    v[4] += w * mt->logps_chosen;
    v[5] += w * mt->logps_rejected;
}

static int dpo_step_loss(void *ctx, const ds_batch *b, const float *logp, const ft_step_norm *norm, float *dlogp,
                         double *loss, double *extra, ft_error *e) {
    const dpo_job *d = ctx;
    /* the batch loss is the mean over its pairs; the step's is the mean over all the step's pairs */
    double step_pairs = norm->samples / 2, w = step_pairs > 0 ? (b->n_samples / 2) / step_pairs : 0;
    dpo_metrics mt;
    int rc = dpo_batch_loss(&d->loss, b, logp, d->train.ref_c, d->train.ref_r, w, dlogp, loss, &mt, e);
    if (!rc) metrics_into(&mt, w, extra);
    return rc;
}

/* Loss and rewards over the eval pairs (values: loss then the six TRL metrics). */
static const char *const EVAL_NAMES[] = {"loss",           "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                                         "rewards/margins", "logps/chosen",  "logps/rejected"};

static int dpo_eval(void *ctx, ft_model *m, double *values, ft_error *e) {
    const dpo_job *d = ctx;
    const pair_set *s = &d->eval;
    int n = s->n, *pair = ft_xmalloc((size_t)n * 2 * sizeof(int)), *nc = ft_xmalloc((size_t)n * 2 * sizeof(int)),
        *nr = ft_xmalloc((size_t)n * 2 * sizeof(int)), *order = ft_xmalloc((size_t)n * sizeof(int));
    double *pc = ft_xcalloc((size_t)n * 2, 8), *pr = ft_xcalloc((size_t)n * 2, 8);
    double *all_pc = ft_xcalloc((size_t)n, 8), *all_pr = ft_xcalloc((size_t)n, 8);
    int *all_nc = ft_xcalloc((size_t)n, sizeof(int)), *all_nr = ft_xcalloc((size_t)n, sizeof(int));
    for (int i = 0; i < n; i++) order[i] = i;
    int rc = FT_OK, per = d->j.batch_size, rank = dist_rank(d->j.comm), world = dist_world(d->j.comm), k = 0;
    for (int first = 0; first < n && !rc; first += per) {
        if (k++ % world != rank) continue; /* data parallel: batch k on rank k mod world */
        ds_batch *b;
        int nb;
        dpo_build_batches(s->p, order + first, first + per <= n ? per : n - first, per, &d->layout, &b, &nb);
        float *logp = ft_xmalloc((size_t)b->n_tokens * sizeof(float));
        rc = model_forward_excl(m, b->n_tokens, b->ids, b->pos, b->doc_start, b->excl_start, b->excl_end, b->targets,
                                logp, e);
        if (!rc) {
            int k = dpo_gather(b, logp, pair, pc, pr, nc, nr);
            for (int i = 0; i < k; i++) {
                all_pc[pair[i]] = pc[i];
                all_pr[pair[i]] = pr[i];
                all_nc[pair[i]] = nc[i];
                all_nr[pair[i]] = nr[i];
            }
        }
        free(logp);
        ds_batches_free(b, nb);
    }
    if (!rc && dist_active(d->j.comm)) { /* each pair was computed on one rank, zeros elsewhere: sums gather them */
        double *v = ft_xcalloc((size_t)n * 4 + 1, sizeof(double));
        for (int i = 0; i < n; i++) v[4 * i] = all_pc[i], v[4 * i + 1] = all_pr[i], v[4 * i + 2] = all_nc[i], v[4 * i + 3] = all_nr[i];
        rc = dist_allreduce_f64_host(d->j.comm, v, (size_t)n * 4, "all-reduce of the eval log-probs", e);
        for (int i = 0; i < n && !rc; i++)
            all_pc[i] = v[4 * i], all_pr[i] = v[4 * i + 1], all_nc[i] = (int)v[4 * i + 2], all_nr[i] = (int)v[4 * i + 3];
        free(v);
    }
    dpo_metrics mt;
    if (!rc) rc = dpo_loss_forward(&d->loss, n, all_pc, all_pr, s->ref_c, s->ref_r, all_nc, all_nr, &values[0], NULL,
                                   NULL, &mt, e);
    if (!rc) {
        for (int i = 1; i < 7; i++) values[i] = 0;
        metrics_into(&mt, 1.0, values + 1);
    }
    free(pair), free(nc), free(nr), free(order), free(pc), free(pr), free(all_pc), free(all_pr), free(all_nc),
        free(all_nr);
    return rc;
}

/* ---------- the command ---------- */

static int read_dpo_keys(rcp *r, dpo_job *d, ft_error *e) {
    const char *s, *defaults;
    double v;
    dpo_loss_type type;
    int rc = rcp_get_string(r, "dpo.loss", "sigmoid", &s, e);
    if (!rc && (rc = dpo_loss_type_parse(s, &type, e))) ft_error_prefix(e, "%s: key 'dpo.loss'", rcp_name(r));
    if (!rc) rc = rcp_get_string(r, "dpo.defaults", "trl", &defaults, e);
    if (rc) return rc;
    if (strcmp(defaults, "trl") == 0)
        dpo_config_default(&d->loss, type);
    else if (strcmp(defaults, "h2o") == 0)
        dpo_config_h2o(&d->loss, type);
    else
        return ft_fail(e, FT_EINPUT, "dpo.defaults '%s': expected trl or h2o", defaults);
    if ((rc = rcp_get_float(r, "dpo.beta", d->loss.beta, &v, e))) return rc;
    d->loss.beta = v;
    if ((rc = rcp_get_float(r, "dpo.label_smoothing", d->loss.label_smoothing, &v, e))) return rc;
    d->loss.label_smoothing = v;
    if ((rc = rcp_get_float(r, "dpo.simpo_gamma", d->loss.simpo_gamma, &v, e))) return rc;
    d->loss.simpo_gamma = v;
    if ((rc = rcp_get_float(r, "dpo.sft_weight", d->loss.sft_weight, &v, e))) return rc;
    d->loss.sft_weight = v;
    if ((rc = dpo_config_check(&d->loss, e))) return rc;
    if ((rc = rcp_get_string(r, "dpo.reference", "precompute", &d->ref_mode, e))) return rc;
    if ((rc = rcp_get_path(r, "dpo.reference_model", NULL, &d->ref_model_dir, e))) return rc;
    if (strcmp(d->ref_mode, "precompute") != 0 && strcmp(d->ref_mode, "model") != 0 &&
        strcmp(d->ref_mode, "adapters_disabled") != 0)
        return ft_fail(e, FT_EINPUT, "dpo.reference '%s': expected precompute, adapters_disabled or model",
                       d->ref_mode);
    const char *q;
    if ((rc = rcp_get_string(r, "dpo.reference_quantize", "none", &q, e))) return rc;
    if (strcmp(q, "nf4") != 0 && strcmp(q, "none") != 0)
        return ft_fail(e, FT_EINPUT, "dpo.reference_quantize '%s': expected none or nf4", q);
    d->ref_nf4 = strcmp(q, "nf4") == 0;
    if (d->ref_nf4 && strcmp(d->ref_mode, "model") != 0)
        return ft_fail(e, FT_EINPUT, "dpo.reference_quantize applies to dpo.reference 'model' only");
    if (strcmp(d->ref_mode, "model") == 0 && !d->ref_model_dir)
        return ft_fail(e, FT_EINPUT, "dpo.reference 'model' needs dpo.reference_model (an HF model dir)");
    return rcp_get_bool(r, "dpo.shared_prompt", 1, &d->layout.shared, e);
}

/* The shared-prompt layout's span limit from the policy's config and the separate reference model's. */
static int layout_setup(dpo_job *d, ft_error *e) {
    if (!d->layout.shared) return FT_OK;
    ft_config c;
    int rc = job_model_config(&d->j, &c, e);
    if (!rc) d->layout.span_limit = dpo_shared_span_limit(&c, 0);
    if (!rc && strcmp(d->ref_mode, "model") == 0 && dpo_needs_reference(d->loss.type) &&
        !(rc = cfg_load(d->ref_model_dir, &c, e)))
        d->layout.span_limit = dpo_shared_span_limit(&c, d->layout.span_limit);
    return rc;
}

/* The policy with its adapters switched off (the base model, as TRL's PEFT reference); the quantized base
 * weight hook stays. Returns the hooks to restore. */
static ft_linear_hooks adapters_off(ft_model *m) {
    ft_linear_hooks saved = m->hooks;
    m->hooks.forward = NULL;
    m->hooks.backward = NULL;
    m->hooks.grad_out = NULL;
    return saved;
}

/* dpo.reference = adapters_disabled: before each micro-batch, the base model's log-probs of its pairs. */
static int reference_on_the_fly(void *ctx, ft_model *m, const ds_batch *b, ft_error *e) {
    dpo_job *d = ctx;
    float *logp = ft_xmalloc((size_t)b->n_tokens * sizeof(float));
    ft_linear_hooks saved = adapters_off(m);
    int rc = model_forward_excl(m, b->n_tokens, b->ids, b->pos, b->doc_start, b->excl_start, b->excl_end, b->targets,
                                logp, e);
    m->hooks = saved;
    if (!rc) {
        size_t cap = (size_t)b->n_samples;
        int *pair = ft_xmalloc(cap * sizeof(int)), *nc = ft_xmalloc(cap * sizeof(int)), *nr = ft_xmalloc(cap * sizeof(int));
        double *pc = ft_xmalloc(cap * 8), *pr = ft_xmalloc(cap * 8);
        int n = dpo_gather(b, logp, pair, pc, pr, nc, nr);
        for (int k = 0; k < n; k++) {
            d->train.ref_c[pair[k]] = pc[k];
            d->train.ref_r[pair[k]] = pr[k];
        }
        free(pair), free(nc), free(nr), free(pc), free(pr);
    }
    free(logp);
    return rc;
}

/* What the reference log-probs depend on: the reference model, the data and how it became pairs. */
static int reference_key(dpo_job *d, const char *split, refc_key *k, ft_error *e) {
    ft_job *j = &d->j;
    const char *ref_dir = strcmp(d->ref_mode, "model") == 0 ? d->ref_model_dir : j->model_dir;
    int rc = ref_dir ? refc_key_add_model_dir(k, "model", ref_dir, e)
                     : refc_key_add_files(k, "model_init", (const char *const *)&j->model_init, 1, e);
    if (!rc && !ref_dir) rc = refc_key_add_int(k, "init_seed", (int64_t)j->train.seed, e);
    if (!rc) rc = refc_key_add(k, "reference_quantize", d->ref_nf4 ? "nf4" : "none", e);
    if (!rc) rc = refc_key_add_files(k, "data", (const char *const *)j->data, (int)j->n_data, e);
    if (!rc && j->n_eval_data) rc = refc_key_add_files(k, "eval_data", (const char *const *)j->eval_data, (int)j->n_eval_data, e);
    if (!rc) rc = refc_key_add(k, "split", split, e);
    if (!rc) rc = refc_key_add_int(k, "split_seed", (int64_t)j->train.seed, e);
    char frac[32];
    snprintf(frac, sizeof frac, "%.17g", j->eval_fraction);
    if (!rc) rc = refc_key_add(k, "eval_fraction", frac, e);
    if (!rc) rc = refc_key_add(k, "template", tmpl_name(j->tmpl), e);
    if (!rc) rc = refc_key_add_model_dir(k, "tokenizer", j->tokenizer_dir, e);
    if (!rc) rc = refc_key_add(k, "format", j->format, e);
    if (!rc) rc = refc_key_add_int(k, "max_length", j->ex.max_length, e);
    if (!rc) rc = refc_key_add_int(k, "truncation", j->ex.trunc, e);
    if (!rc) rc = refc_key_add_int(k, "overlong", j->ex.overlong, e);
    if (!rc) rc = refc_key_add(k, "compute", ft_dtype_name(d->compute), e);
    /* the layouts agree up to fp32 summation order; the key keeps a resumed run bit-exact */
    if (!rc && d->layout.shared) rc = refc_key_add_int(k, "shared_prompt_span_limit", d->layout.span_limit, e);
    return rc;
}

/* The separate reference model; with dpo.reference_quantize = nf4 its layer linears are held in NF4
 * (bitsandbytes' layout) through the QLoRA base machinery: a rank-1 adapter whose only role is to own
 * the quantized weights (its forward hook is switched off, so it adds nothing). */
static int load_reference_model(dpo_job *d, ft_dtype compute, ft_model **out, lora_adapter **holder, ft_error *e) {
    *holder = NULL;
    if (!d->ref_nf4) {
        int rc = model_load_frozen(d->ref_model_dir, d->j.backend, 0, compute, out, e);
        return rc ? rc : job_check_weights(&d->j, *out, "reference model", d->ref_model_dir, e);
    }
    *out = NULL;
    int rc = model_load_frozen(d->ref_model_dir, d->j.backend, 1, compute, out, e);
    lora_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    if (!rc) rc = lora_parse_targets("\"all-linear\"", &cfg, "dpo.reference_quantize", e);
    cfg.r = 1;
    cfg.alpha = 1;
    if (!rc) rc = lora_create(*out, &cfg, 0, holder, e);
    if (!rc) rc = lora_quantize_base(*holder, *out, d->ref_model_dir, e);
    if (!rc) lora_attach(*holder, *out);
    lora_cfg_free(&cfg);
    if (!rc) rc = job_check_weights(&d->j, *out, "reference model", d->ref_model_dir, e);
    return rc;
}

/* Reference log-probs for train and eval pairs, from the policy as loaded or a separate model, in the
 * compute dtype training will use (as TRL, whose reference pass runs under the same autocast): a 16-bit
 * policy then starts with rewards of exactly 0, as with the on-the-fly reference. */
static int compute_references(dpo_job *d, ft_error *e) {
    if (!dpo_needs_reference(d->loss.type)) return FT_OK;
    ft_model *ref = d->j.model, *own = NULL;
    lora_adapter *holder = NULL;
    ft_dtype compute;
    int rc = trainer_compute_dtype(d->j.train.precision, d->j.backend, &compute, e);
    if (!rc && strcmp(d->ref_mode, "model") == 0) {
        rc = load_reference_model(d, compute, &own, &holder, e); /* already in the compute dtype */
        ref = own;
    } else if (!rc) { /* the policy: what the trainer would do first (it is then a no-op there) */
        rc = model_set_precision(ref, compute, job_trainable, &d->j, e);
    }
    if (rc) {
        model_free(own);
        lora_free(holder);
        return rc;
    }
    d->compute = compute;
    if (strcmp(d->ref_mode, "adapters_disabled") == 0) { /* train pairs on the fly; eval pairs now */
        d->train.ref_c = ft_xcalloc((size_t)d->train.n, sizeof(double));
        d->train.ref_r = ft_xcalloc((size_t)d->train.n, sizeof(double));
    }
    ft_linear_hooks saved = adapters_off(ref);
    rc = ft_mkdir_p(d->j.output_dir, e);
    const char *splits[2] = {"train", "eval"};
    pair_set *sets[2] = {&d->train, &d->eval};
    for (int i = 0; i < 2 && !rc; i++) {
        if (sets[i]->n == 0 || sets[i]->ref_c) continue;
        refc_key k;
        refc_key_init(&k);
        char name[64];
        snprintf(name, sizeof name, "ref_logps.%s.bin", splits[i]);
        char *path = ft_path_join(d->j.output_dir, name);
        rc = reference_key(d, splits[i], &k, e);
        if (!rc) rc = reference_pass(d->j.comm, ref, sets[i], d->j.batch_size, &d->layout, path, k.s, e);
        free(path);
        refc_key_free(&k);
    }
    ref->hooks = saved;
    model_free(own);
    lora_free(holder);
    return rc;
}

int cmd_dpo(int argc, char **argv) {
    job_args args;
    int exit_now = cli_parse_job_args("dpo", DPO_HELP, argc, argv, &args);
    if (exit_now >= 0) return exit_now;
    ft_error e = {0};
    rcp *r = NULL;
    dpo_job *d = ft_xcalloc(1, sizeof *d);
    ft_job *j = &d->j;
    ds_batch *probe = NULL;
    int n_probe = 0;
    int rc = job_load_recipe(&args, &r, &e);
    if (!rc) rc = job_read_common(r, j, args.resume, &e);
    if (!rc) rc = rcp_get_string(r, "save_dtype", "auto", &j->train.save_dtype_name, &e);
    if (!rc) rc = read_dpo_keys(r, d, &e);
    if (!rc) {
        ft_path_input ref = {d->ref_model_dir, "dpo.reference_model directory"};
        rc = job_claim_output_dir(j, &ref, 1, args.dry_run, &e);
    }
    if (!rc && strcmp(d->ref_mode, "adapters_disabled") == 0 && !j->use_lora)
        rc = ft_fail(&e, FT_EINPUT, "dpo.reference 'adapters_disabled' needs a lora or qlora section");
    int on_the_fly = !rc && strcmp(d->ref_mode, "adapters_disabled") == 0 && dpo_needs_reference(d->loss.type);
    if (!rc) rc = job_setup_data(j, r, &e);
    if (!rc) rc = rcp_check_unused(r, &e);
    if (!rc) rc = read_pairs(j, j->data, j->n_data, &d->train, &e);
    if (!rc && j->n_eval_data) rc = read_pairs(j, j->eval_data, j->n_eval_data, &d->eval, &e);
    if (!rc && !j->n_eval_data) split_eval(&d->train, &d->eval, j->eval_fraction, j->train.seed);
    if (!rc && d->train.n == 0) rc = ft_fail(&e, FT_EINPUT, "%s: no preference pairs left after reading the data", args.recipe);
    if (!rc) rc = layout_setup(d, &e);
    if (!rc) rc = plan_epoch(d, 0, &probe, &n_probe, &e);
    if (!rc) {
        const ds_example_stats *st = &d->train.st;
        fprintf(stderr,
                "data: %ld records read, %ld skipped as bad; %ld pairs truncated, %ld dropped (prompt fills "
                "max_length or too long %ld, nothing left %ld, prompt tokenized differently %ld)\n",
                d->train.rd.records, d->train.rd.skipped_total, st->truncated,
                st->dropped_too_long + st->dropped_no_trained + st->dropped_mismatch, st->dropped_too_long,
                st->dropped_no_trained, st->dropped_mismatch);
        if (d->train.rd.skipped_total) fprintf(stderr, "  first skipped record: %s\n", d->train.rd.first_skip);
        fprintf(stderr, "train: %d pairs; eval: %d pairs; loss %s, beta %g; reference: %s\n", d->train.n, d->eval.n,
                dpo_loss_type_name(d->loss.type), d->loss.beta,
                dpo_needs_reference(d->loss.type) ? d->ref_mode : "none (reference-free loss)");
        fprintf(stderr, "plan: %d micro-batches of %d pairs per epoch, grad_accum %d, %d optimizer steps\n", n_probe,
                j->batch_size, j->train.grad_accum, trainer_total_steps(&j->train, n_probe));
        long long toks = 0, trl = 0;
        for (int i = 0; i < n_probe; i++) toks += probe[i].n_tokens;
        for (int i = 0; i < d->train.n; i++)
            trl += 2LL * d->train.p[i].n_prompt + d->train.p[i].n_chosen + d->train.p[i].n_rejected;
        if (d->layout.shared)
            fprintf(stderr, "layout: shared prompt, %lld tokens per epoch (TRL's layout: %lld, %.2fx)\n", toks, trl,
                    toks ? (double)trl / (double)toks : 0.0);
        else
            fprintf(stderr, "layout: TRL's [chosen; rejected], %lld tokens per epoch\n", toks);
        if (args.dry_run) {
            job_print_memory_estimate(j, 2 * j->batch_size); /* chosen and rejected sequences */
            fprintf(stderr, "dry run: nothing trained\n");
        }
    }
    if (!rc && !args.dry_run) {
        rc = job_setup_model(j, &e);
        if (!rc) rc = job_parse_dtype(j->train.save_dtype_name, j->model->cfg.torch_dtype, &j->train.save_dtype, &e);
        if (!rc) rc = compute_references(d, &e);
        if (!rc) rc = job_write_resolved(j, r, &e);
        ft_train_job job = {.cfg = &j->train,
                            .model = j->model,
                            .loss = {.ctx = d,
                                     .loss = dpo_step_loss,
                                     .n_extra = 6,
                                     .extra_names = METRIC_NAMES,
                                     .extra_labels = METRIC_LABELS,
                                     .prepare = on_the_fly ? reference_on_the_fly : NULL},
                            .add_params = j->use_lora ? job_add_params : NULL,
                            .params_ctx = j,
                            .trainable = job_trainable,
                            .trainable_ctx = j,
                            .plan = plan_epoch,
                            .plan_ctx = d,
                            .sample_where = pair_where,
                            .batches_per_epoch = n_probe,
                            .eval_fn = {.ctx = d, .run = d->eval.n ? dpo_eval : NULL, .n_values = 7, .names = EVAL_NAMES},
                            .comm = j->comm,
                            .recipe_text = j->recipe_text,
                            .save_output = job_save_output,
                            .save_ctx = j};
        if (!rc) rc = trainer_run(&job, &e);
        if (rc == FT_ENOMEM) job_explain_oom(j, 2 * j->batch_size, &e);
    }
    ds_batches_free(probe, n_probe);
    free_pairs(&d->train);
    free_pairs(&d->eval);
    free(d->ref_model_dir);
    job_free(j);
    free(d);
    rcp_free(r);
    return rc ? cli_report("dpo", &e) : 0;
}
