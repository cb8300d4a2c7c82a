#include "finetune/train/trainer.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "finetune/io/ckpt.h"
#include "finetune/train/lossscale.h"
#include "finetune/train/metrics.h"

int trainer_micro_per_step(const ft_train_cfg *cfg) {
    return cfg->grad_accum * (cfg->world_size > 1 ? cfg->world_size : 1);
}

int trainer_total_steps(const ft_train_cfg *cfg, int batches_per_epoch) {
    if (cfg->max_steps > 0) return cfg->max_steps;
    int micro = trainer_micro_per_step(cfg);
    int per_epoch = (batches_per_epoch + micro - 1) / micro;
    return per_epoch * cfg->epochs;
}

/* ---------- precision ---------- */

/* The recipe's precision for this backend: auto = bf16 on sm_80+, fp16 (with loss scaling) on sm_75, fp32 on
 * the CPU. A 16-bit dtype on the CPU, or bf16 on a GPU without it, is a clear error. */
int trainer_compute_dtype(const char *precision, const ft_backend *b, ft_dtype *out, ft_error *e) {
    const char *p = precision ? precision : "auto";
    if (strcmp(p, "auto") == 0) {
        *out = b->device == FT_DEV_CPU ? FT_F32 : b->arch >= 80 ? FT_BF16 : FT_F16;
        return FT_OK;
    }
    if (strcmp(p, "fp32") == 0)
        *out = FT_F32;
    else if (strcmp(p, "bf16") == 0)
        *out = FT_BF16;
    else if (strcmp(p, "fp16") == 0)
        *out = FT_F16;
    else
        return ft_fail(e, FT_EINPUT, "precision '%s': expected auto, fp32, bf16 or fp16", p);
    if (*out != FT_F32 && b->device == FT_DEV_CPU)
        return ft_fail(e, FT_EINPUT,
                       "precision=%s needs device=cuda: the CPU backend computes in fp32 (use precision=fp32 or auto)",
                       p);
    if (*out == FT_BF16 && b->arch < 80)
        return ft_fail(e, FT_EINPUT,
                       "precision=bf16: this GPU (sm_%d) has no bf16 tensor cores; use precision=fp16 (with loss "
                       "scaling) or auto",
                       b->arch);
    return FT_OK;
}

/* ---------- checkpoints ---------- */

/* Names in the checkpoint: the parameter name for weights, "optim.m/<name>" and "optim.v/<name>". */
static int save_checkpoint(ft_train_job *job, ft_optim *o, int64_t step, int bad_streak, double tokens_seen,
                           const ft_lossscale *ls, ft_error *e) {
    const ft_train_cfg *cfg = job->cfg;
    ft_backend *b = job->model->b;
    ckpt_writer *w = NULL;
    int rc = ckpt_writer_begin(cfg->output_dir, step, &w, e);
    if (rc) return rc;
    char name[160];
    for (int i = 0; i < o->n && !rc; i++) {
        const ft_tensor *t = o->w[i].t;
        rc = ckpt_writer_declare(w, o->w[i].name, FT_F32, t->ndim, t->shape, e);
        snprintf(name, sizeof name, "optim.m/%s", o->w[i].name);
        if (!rc) rc = ckpt_writer_declare(w, name, FT_F32, t->ndim, t->shape, e);
        snprintf(name, sizeof name, "optim.v/%s", o->w[i].name);
        if (!rc) rc = ckpt_writer_declare(w, name, FT_F32, t->ndim, t->shape, e);
    }
    float *host = NULL;
    for (int i = 0; i < o->n && !rc; i++) {
        const ft_tensor *parts[3] = {o->w[i].t, &o->m[i], &o->v[i]};
        const char *prefix[3] = {"", "optim.m/", "optim.v/"};
        size_t bytes = ft_nbytes(o->w[i].t);
        host = ft_xrealloc(host, bytes);
        for (int k = 0; k < 3 && !rc; k++) {
            b->download(b, host, parts[k]->data, bytes);
            snprintf(name, sizeof name, "%s%s", prefix[k], o->w[i].name);
            rc = ckpt_writer_write(w, name, host, e);
        }
    }
    free(host);
    if (!rc) {
        char state[512];
        snprintf(state, sizeof state,
                 "{\"step\": %" PRId64 ", \"optim_step\": %d, \"seed\": \"%" PRIu64
                 "\", \"bad_streak\": %d, \"tokens_seen\": %.17g, \"loss_scale\": %.9g, \"loss_scale_good_steps\": %d, "
                 "\"micro_per_step\": %d, \"world_size\": %d}",
                 step, o->step, cfg->seed, bad_streak, tokens_seen, (double)ls->scale, ls->good_steps,
                 trainer_micro_per_step(cfg), cfg->world_size > 1 ? cfg->world_size : 1);
        rc = ckpt_writer_set_state(w, state, e);
    }
    if (rc) {
        ckpt_writer_abort(w);
        return rc;
    }
    return ckpt_writer_commit(w, cfg->keep_last, NULL, e);
}

static int load_checkpoint(ft_train_job *job, ft_optim *o, const char *dir, int64_t *step, int *bad_streak,
                           double *tokens_seen, ft_lossscale *ls, ft_error *e) {
    ckpt *c = NULL;
    int rc = ckpt_load(dir, &c, e);
    if (rc) return rc;
    ft_backend *b = job->model->b;
    char name[160];
    float *host = NULL;
    for (int i = 0; i < o->n && !rc; i++) {
        ft_tensor *parts[3] = {o->w[i].t, &o->m[i], &o->v[i]};
        const char *prefix[3] = {"", "optim.m/", "optim.v/"};
        size_t bytes = ft_nbytes(o->w[i].t);
        host = ft_xrealloc(host, bytes);
        for (int k = 0; k < 3 && !rc; k++) {
            snprintf(name, sizeof name, "%s%s", prefix[k], o->w[i].name);
            rc = ckpt_read(c, name, FT_F32, parts[k]->ndim, parts[k]->shape, host, e);
            if (!rc) b->upload(b, parts[k]->data, host, bytes);
        }
    }
    free(host);
    cJSON *st = rc ? NULL : cJSON_Parse(ckpt_state(c));
    if (!rc) {
        const cJSON *js = cJSON_GetObjectItem(st, "step"), *jo = cJSON_GetObjectItem(st, "optim_step"),
                    *jseed = cJSON_GetObjectItem(st, "seed"), *jb = cJSON_GetObjectItem(st, "bad_streak"),
                    *jt = cJSON_GetObjectItem(st, "tokens_seen");
        if (!cJSON_IsNumber(js) || !cJSON_IsNumber(jo) || !cJSON_IsString(jseed) || !cJSON_IsNumber(jb) ||
            !cJSON_IsNumber(jt)) {
            rc = ft_fail(e, FT_EINPUT, "%s/state.json: missing or mistyped step, optim_step, seed, bad_streak or tokens_seen",
                         dir);
        } else if (strtoull(jseed->valuestring, NULL, 10) != job->cfg->seed) {
            rc = ft_fail(e, FT_EINPUT,
                         "%s: the checkpoint was made with seed %s but the recipe says %" PRIu64
                         "; resuming with another seed would not continue the same run",
                         dir, jseed->valuestring, job->cfg->seed);
        } else if (cJSON_IsNumber(cJSON_GetObjectItem(st, "micro_per_step")) &&
                   cJSON_GetObjectItem(st, "micro_per_step")->valueint != trainer_micro_per_step(job->cfg) &&
                   (job->cfg->world_size > 1 || (cJSON_IsNumber(cJSON_GetObjectItem(st, "world_size")) &&
                                                 cJSON_GetObjectItem(st, "world_size")->valueint > 1))) {
            /* the data position of a step is step x micro-batches per step: another global batch would not continue
             * the same run (one process resuming one process's checkpoint may change grad_accum, as before) */
            const cJSON *jw = cJSON_GetObjectItem(st, "world_size");
            int was = cJSON_GetObjectItem(st, "micro_per_step")->valueint, ranks = cJSON_IsNumber(jw) ? jw->valueint : 1;
            rc = ft_fail(e, FT_EINPUT,
                         "%s: the checkpoint was made with %d micro-batches per optimizer step (grad_accum %d x %d "
                         "rank(s)) but this run takes %d (grad_accum %d x %d rank(s)); resume with the same global "
                         "batch: grad_accum x ranks = %d",
                         dir, was, ranks > 0 ? was / ranks : was, ranks, trainer_micro_per_step(job->cfg),
                         job->cfg->grad_accum, job->cfg->world_size > 1 ? job->cfg->world_size : 1, was);
        } else {
            *step = (int64_t)js->valuedouble;
            o->step = jo->valueint;
            *bad_streak = jb->valueint;
            *tokens_seen = jt->valuedouble;
            /* fp16 loss scale (absent in older checkpoints: the scaler starts fresh) */
            const cJSON *jl = cJSON_GetObjectItem(st, "loss_scale"), *jg = cJSON_GetObjectItem(st, "loss_scale_good_steps");
            if (ls->enabled && cJSON_IsNumber(jl) && jl->valuedouble > 0 && cJSON_IsNumber(jg)) {
                ls->scale = (float)jl->valuedouble;
                ls->good_steps = jg->valueint;
            }
        }
    }
    cJSON_Delete(st);
    ckpt_free(c);
    return rc;
}

/* A full disk: every write failed cleanly (temp files removed, older checkpoints and the inputs
 * untouched); say what is still there and what to do. */
static void no_space_hint(const char *run_dir, ft_error *e) {
    int64_t *steps = NULL;
    size_t n = 0;
    ft_error le = {0};
    if (ckpt_list_steps(run_dir, &steps, &n, &le) == FT_OK && n > 0) {
        char *d = ckpt_dir_for_step(run_dir, steps[n - 1]);
        ft_error_append(e, ". The disk is full: free space on it, then run the same command again with --resume; it "
                           "continues from %s (intact) exactly as if never interrupted", d);
        free(d);
    } else {
        ft_error_append(e, ". The disk is full: free space on it, then run the same command again (there is no "
                           "checkpoint to --resume from yet)");
    }
    free(steps);
}

/* ---------- evaluation ---------- */

/* Mean negative log-likelihood per trained token over the eval batches (split over the ranks). */
static int evaluate(ft_train_job *job, double *mean_nll, ft_error *e) {
    double nll = 0, count = 0;
    int rank = dist_rank(job->comm), world = dist_world(job->comm);
    for (int i = rank; i < job->n_eval; i += world) {
        const ds_batch *bt = &job->eval[i];
        float *logp = ft_xmalloc((size_t)bt->n_tokens * sizeof(float));
        int rc = model_forward_excl(job->model, bt->n_tokens, bt->ids, bt->pos, bt->doc_start, bt->excl_start,
                                    bt->excl_end, bt->targets, logp, e);
        for (int t = 0; !rc && t < bt->n_tokens; t++)
            if (bt->targets[t] >= 0) {
                nll -= logp[t];
                count++;
            }
        free(logp);
        if (rc) return rc;
    }
    double sums[2] = {nll, count};
    int rc = dist_allreduce_f64_host(job->comm, sums, 2, "reducing the eval loss", e);
    if (rc) return rc;
    nll = sums[0], count = sums[1];
    *mean_nll = count > 0 ? nll / count : NAN;
    return FT_OK;
}

/* ---------- the loop ---------- */

/* What one micro-batch was when the step's loss first became non-finite (step 0's diagnosis). */
typedef struct bad_batch {
    int index;           /* micro-batch of the step, -1: none yet */
    int64_t trained;     /* trained tokens (targets >= 0) */
    int64_t bad_logp;    /* of which the model's log-prob was non-finite */
    int32_t first_sample;
} bad_batch;

static void note_bad_batch(const ds_batch *b, const float *logp, int index, bad_batch *bb) {
    bb->index = index;
    bb->trained = bb->bad_logp = 0;
    bb->first_sample = -1;
    for (int t = 0; t < b->n_tokens; t++) {
        if (bb->first_sample < 0 && b->sample[t] >= 0) bb->first_sample = b->sample[t];
        if (b->targets[t] < 0) continue;
        bb->trained++;
        bb->bad_logp += !isfinite(logp[t]);
    }
}

/* A non-finite loss at the very first step is not divergence: say what is known about the weights and the
 * micro-batch that made it so. */
static void explain_first_bad_loss(const ft_train_job *job, const bad_batch *bb, int n_micro, double loss,
                                   mx_term *term) {
    const ft_model *m = job->model;
    char weights[1200], where[300] = "";
    if (m->nonfinite.values) {
        char d[1024];
        model_nonfinite_describe(&m->nonfinite, d, sizeof d);
        snprintf(weights, sizeof weights, "the weights held %s when loaded (allow_nonfinite_weights)", d);
    } else {
        snprintf(weights, sizeof weights, "the weights were finite when loaded");
    }
    if (bb->index < 0) {
        mx_print(term, "step 1: loss %g before any training: %s; no single micro-batch's contribution was non-finite",
                 loss, weights);
        return;
    }
    if (bb->first_sample >= 0) {
        char buf[256];
        const char *w = job->sample_where ? job->sample_where(job->plan_ctx, bb->first_sample, buf, sizeof buf) : NULL;
        snprintf(where, sizeof where, ", first example %s", w && *w ? w : "(unknown origin)");
    }
    const char *why = bb->trained == 0
                          ? "it has no trained tokens, so a per-token average divides by zero"
                      : bb->bad_logp
                          ? "the forward pass gave non-finite log-probs"
                          : "its log-probs were all finite, so the loss itself (not the model) was non-finite";
    mx_print(term,
             "step 1: loss %g before any training, from micro-batch %d of %d%s: %lld trained tokens, %lld with "
             "non-finite log-probs; %s; %s",
             loss, bb->index + 1, n_micro, where, (long long)bb->trained, (long long)bb->bad_logp, weights, why);
}

/* Add a batch's trained tokens and trained samples to the step's totals. */
static void count_trained(const ds_batch *b, ft_step_norm *n) {
    int32_t last_sample = -1;
    for (int t = 0; t < b->n_tokens; t++)
        if (b->targets[t] >= 0) {
            n->tokens++;
            if (b->sample[t] != last_sample) n->samples++;
            last_sample = b->sample[t];
        }
}

/* ---------- data parallelism ---------- */

#ifndef FT_BUILD_ID
#define FT_BUILD_ID "unknown"
#endif

/* What every rank must hold the same of, checked at start-up: the recipe, the code, the model and the data
 * (epoch 0's planned batches). */
static int agree_at_start(ft_train_job *job, const ft_optim *o, const ds_batch *bt, int n_batches, ft_error *e) {
    dist_comm *c = job->comm;
    char text[640];
    int rc = job->recipe_text ? dist_agree(c, "recipe", job->recipe_text, e) : FT_OK;
    if (!rc) {
        snprintf(text, sizeof text, "finetune commit %s", FT_BUILD_ID);
        rc = dist_agree(c, "code version", text, e);
    }
    if (!rc) {
        const ft_config *k = &job->model->cfg;
        uLong crc = crc32(0L, Z_NULL, 0);
        long long params = 0;
        for (int i = 0; i < o->n; i++) {
            crc = crc32(crc, (const Bytef *)o->w[i].name, (uInt)strlen(o->w[i].name));
            crc = crc32(crc, (const Bytef *)o->w[i].t->shape, (uInt)(o->w[i].t->ndim * sizeof o->w[i].t->shape[0]));
            params += (long long)ft_numel(o->w[i].t);
        }
        snprintf(text, sizeof text,
                 "architecture %s; layers %d; hidden size %d; intermediate size %d; heads %d; kv heads %d; vocab %d; "
                 "trainable tensors %d; trainable parameters %lld; their names and shapes crc32 %08lx",
                 k->architecture, k->num_layers, k->hidden_size, k->intermediate_size, k->num_heads, k->num_kv_heads,
                 k->vocab_size, o->n, params, (unsigned long)crc);
        rc = dist_agree(c, "model", text, e);
    }
    if (!rc) {
        uLong ci = crc32(0L, Z_NULL, 0), ct = ci;
        long long tokens = 0;
        for (int i = 0; i < n_batches; i++) {
            ci = crc32(ci, (const Bytef *)bt[i].ids, (uInt)((size_t)bt[i].n_tokens * sizeof(int32_t)));
            ct = crc32(ct, (const Bytef *)bt[i].targets, (uInt)((size_t)bt[i].n_tokens * sizeof(int32_t)));
            tokens += bt[i].n_tokens;
        }
        snprintf(text, sizeof text, "micro-batches per epoch %d; tokens %lld; token ids crc32 %08lx; targets crc32 %08lx",
                 n_batches, tokens, (unsigned long)ci, (unsigned long)ct);
        rc = dist_agree(c, "data", text, e);
    }
    return rc;
}

/* Rank 0's trainable weights (and, resuming, AdamW's moments) to every rank. */
static int broadcast_trainables(ft_train_job *job, ft_optim *o, int moments, ft_error *e) {
    int rc = FT_OK;
    for (int i = 0; i < o->n && !rc; i++) {
        size_t bytes = ft_nbytes(o->w[i].t);
        rc = dist_broadcast(job->comm, o->w[i].t->data, bytes, 0, "broadcasting the trainable weights", e);
        if (!rc && moments) rc = dist_broadcast(job->comm, o->m[i].data, bytes, 0, "broadcasting AdamW's moments", e);
        if (!rc && moments) rc = dist_broadcast(job->comm, o->v[i].data, bytes, 0, "broadcasting AdamW's moments", e);
    }
    if (!rc) model_sync_compute(job->model);
    return rc;
}

/* Sum the step's gradients over the ranks (each rank's are already normalised by the global step): one bucket
 * of all of them after the backward (NCCL: one group on its own stream). */
static int allreduce_grads(ft_train_job *job, ft_optim *o, ft_error *e) {
    float **bufs = ft_xmalloc((size_t)(o->n ? o->n : 1) * sizeof *bufs);
    size_t *ns = ft_xmalloc((size_t)(o->n ? o->n : 1) * sizeof *ns);
    for (int i = 0; i < o->n; i++) bufs[i] = o->g[i].t->data, ns[i] = (size_t)ft_numel(o->g[i].t);
    int rc = dist_allreduce_f32_many(job->comm, bufs, ns, o->n, "all-reduce of the gradients", e);
    free(bufs);
    free(ns);
    return rc;
}

/* ZeRO-1: the owner of each trainable tensor, the rank with the fewest elements so far (the same on every rank). */
static int *zero_owners(const ft_optim *o, int world) {
    int *own = ft_xcalloc((size_t)(o->n ? o->n : 1), sizeof *own);
    int64_t *load = ft_xcalloc((size_t)world, sizeof *load);
    for (int i = 0; i < o->n; i++) {
        int best = 0;
        for (int r = 1; r < world; r++)
            if (load[r] < load[best]) best = r;
        own[i] = best;
        load[best] += ft_numel(o->w[i].t);
    }
    free(load);
    return own;
}

/* Free the moments of the tensors another rank owns (optim_step then leaves those tensors to their owner). */
static void zero_release(ft_optim *o, const int *own, int rank) {
    for (int i = 0; i < o->n; i++)
        if (own[i] != rank && o->m[i].data) {
            o->b->free(o->b, o->m[i].data);
            o->b->free(o->b, o->v[i].data);
            o->m[i].data = o->v[i].data = NULL;
        }
}

/* Every tensor's moments on every rank again, from their owners (for a checkpoint; zero_release after it). */
static int zero_gather(ft_train_job *job, ft_optim *o, const int *own, ft_error *e) {
    int rc = FT_OK;
    for (int i = 0; i < o->n && !rc; i++) {
        const ft_tensor *w = o->w[i].t;
        if (!o->m[i].data) {
            rc = ft_backend_tensor(o->b, FT_F32, w->ndim, w->shape, &o->m[i], e);
            if (!rc) rc = ft_backend_tensor(o->b, FT_F32, w->ndim, w->shape, &o->v[i], e);
            if (rc) break;
        }
        rc = dist_broadcast(job->comm, o->m[i].data, ft_nbytes(w), own[i], "gathering AdamW's moments (ZeRO-1)", e);
        if (!rc) rc = dist_broadcast(job->comm, o->v[i].data, ft_nbytes(w), own[i], "gathering AdamW's moments (ZeRO-1)", e);
    }
    return rc;
}

/* After the step: each tensor's updated weights from the rank that updated it. */
static int zero_allgather_weights(ft_train_job *job, ft_optim *o, const int *own, ft_error *e) {
    int rc = FT_OK;
    for (int i = 0; i < o->n && !rc; i++)
        rc = dist_broadcast(job->comm, o->w[i].t->data, ft_nbytes(o->w[i].t), own[i],
                            "all-gather of the updated weights (ZeRO-1)", e);
    return rc;
}

/* A failure on one rank fails all: the others learn it here instead of waiting in the next collective. */
static int all_ok(ft_train_job *job, int rc, const char *what, ft_error *e) {
    if (!dist_active(job->comm)) return rc;
    int ok = dist_all_ok(job->comm, rc == FT_OK, e);
    if (ok || rc) return rc;
    return ft_fail(e, FT_EIO, "another rank failed %s (its message says why); stopping", what);
}

/* token t is the last of a (non-padding) sample */
static int sample_end(const ds_batch *b, int t) {
    return b->sample[t] >= 0 && (t + 1 == b->n_tokens || b->doc_start[t + 1] != b->doc_start[t]);
}

int trainer_pool_rows(const ds_batch *b, int32_t *rows) {
    int S = 0;
    for (int t = 0; t < b->n_tokens; t++)
        if (sample_end(b, t)) rows[S++] = t;
    return S;
}

/* One classification micro-batch: forward to the pooled logits, the job's loss, backward from dlogits
 * (multiplied by the fp16 loss scale). */
static int cls_micro_batch(ft_train_job *job, const ds_batch *bt, const ft_step_norm *norm, float scale,
                           ft_weights *g, double *loss, double *extra, ft_error *e) {
    ft_model *m = job->model;
    int NL = m->cfg.num_labels;
    int32_t *rows = ft_xmalloc((size_t)bt->n_tokens * sizeof *rows);
    int S = trainer_pool_rows(bt, rows);
    float *lg = ft_xmalloc((size_t)S * NL * sizeof *lg), *dlg = ft_xcalloc((size_t)S * NL, sizeof *dlg);
    int rc = S ? FT_OK : ft_fail(e, FT_EINTERNAL, "classification micro-batch without samples");
    if (!rc) rc = model_forward_train_cls(m, bt->n_tokens, bt->ids, bt->pos, bt->doc_start, S, rows, lg, e);
    if (!rc) rc = job->loss.cls_loss(job->loss.ctx, bt, S, rows, lg, norm, dlg, loss, extra, e);
    for (int i = 0; !rc && scale != 1.0f && i < S * NL; i++) dlg[i] *= scale;
    if (!rc) rc = model_backward_cls(m, dlg, g, e);
    free(rows);
    free(lg);
    free(dlg);
    return rc;
}

int trainer_run(ft_train_job *job, ft_error *e) {
    const ft_train_cfg *cfg = job->cfg;
    ft_model *m = job->model;
    ft_backend *b = m->b;
    dist_comm *comm = job->comm;
    int rank = dist_rank(comm), world = dist_world(comm), lead = rank == 0, dp = dist_active(comm);
    if (world != (cfg->world_size > 1 ? cfg->world_size : 1))
        return ft_fail(e, FT_EINTERNAL, "trainer: %d ranks but the config says world_size %d", world, cfg->world_size);
    int micro = trainer_micro_per_step(cfg);
    int total = trainer_total_steps(cfg, job->batches_per_epoch);
    int steps_per_epoch = (job->batches_per_epoch + micro - 1) / micro;
    if (total <= 0 || steps_per_epoch <= 0) return ft_fail(e, FT_EINPUT, "nothing to train: no batches");
    ft_optim_cfg ocfg = cfg->optim;
    ocfg.total_steps = total;
    if (ocfg.warmup_steps <= 0 && cfg->warmup_ratio > 0) ocfg.warmup_steps = (int)ceil(cfg->warmup_ratio * total);

    ft_weights g = {0};
    ft_optim *o = NULL;
    mx_log *mx = NULL;
    ds_batch *batches = NULL;
    int n_batches = 0, planned_epoch = -1, bad_streak = 0;
    int64_t start = 0;
    double tokens_seen = 0;
    ft_lossscale ls; /* fp16 compute: dynamic loss scaling; otherwise scale 1, never changes */
    ft_dtype compute = FT_F32;
    int rc = trainer_compute_dtype(cfg->precision, b, &compute, e);
    if (!rc && lead)
        fprintf(stderr, "device: %s; compute %s%s%s\n", b->desc, ft_dtype_name(compute),
                compute == FT_F16 ? " with dynamic loss scaling" : "",
                cfg->offload_activations ? ", layer inputs offloaded to host memory" : "");
    if (!rc && lead && dp)
        fprintf(stderr, "data parallel: %s; %d micro-batches per optimizer step (grad_accum %d x %d rank(s))\n",
                dist_desc(comm), micro, cfg->grad_accum, world);
    if (!rc) m->offload_activations = cfg->offload_activations;
    /* before grads_create, with its predicate: frozen weights keep only their 16-bit compute copies */
    if (!rc) rc = model_set_precision(m, compute, job->trainable, job->trainable_ctx, e);
    lossscale_init(&ls, !rc && m->compute == FT_F16, cfg->loss_scale_init, cfg->loss_scale_growth_interval);
    if (!rc) rc = grads_create(m, job->trainable, job->trainable_ctx, &g, e);
    if (!rc) rc = optim_create_ex(m, &g, &ocfg, job->add_params != NULL, &o, e);
    if (!rc && job->add_params) {
        rc = job->add_params(job->params_ctx, o, e);
        if (!rc && o->n == 0) rc = ft_fail(e, FT_EINPUT, "nothing to train: every parameter is frozen");
    }
    if (dp) { /* every rank the same recipe, code, model and data, then rank 0's trainable weights everywhere */
        if (!rc) rc = job->plan(job->plan_ctx, 0, &batches, &n_batches, e);
        if (!rc) planned_epoch = 0;
        if (!rc) rc = agree_at_start(job, o, batches, n_batches, e);
        if (!rc && !cfg->resume) rc = broadcast_trainables(job, o, 0, e);
    }
    if (!rc && lead) rc = ft_mkdir_p(cfg->output_dir, e);
    if (!rc && cfg->resume) {
        if (lead) {
            char *dir = NULL;
            rc = ckpt_latest(cfg->output_dir, &dir, NULL, e);
            if (!rc && !dir)
                rc = ft_fail(e, FT_EINPUT, "--resume: %s has no complete checkpoint to resume from", cfg->output_dir);
            if (!rc) rc = load_checkpoint(job, o, dir, &start, &bad_streak, &tokens_seen, &ls, e);
            if (!rc) ft_remove_stale_tmp(cfg->output_dir, NULL); /* temp files of the killed run's last writes */
            if (!rc) model_sync_compute(m); /* the 16-bit compute copies of the loaded masters */
            if (!rc) fprintf(stderr, "resuming from %s (step %" PRId64 " of %d)\n", dir, start, total);
            free(dir);
        }
        if (dp) { /* rank 0 read the checkpoint (it need not be on a shared path): its state goes to every rank */
            rc = all_ok(job, rc, "to resume", e);
            double st[6] = {(double)start, bad_streak, tokens_seen, ls.scale, ls.good_steps, o->step};
            if (!rc) rc = dist_broadcast_host(comm, st, sizeof st, 0, "broadcasting the resumed state", e);
            if (!rc) {
                start = (int64_t)st[0], bad_streak = (int)st[1], tokens_seen = st[2];
                ls.scale = (float)st[3], ls.good_steps = (int)st[4], o->step = (int)st[5];
                rc = broadcast_trainables(job, o, 1, e);
            }
        }
    }
    if (!rc && lead) rc = mx_open(cfg->output_dir, cfg->resume ? start : -1, &mx, e);
    if (dp) rc = all_ok(job, rc, "to start", e);
    int *own = NULL; /* ZeRO-1: the rank that keeps each tensor's moments and updates it */
    if (!rc && dp && cfg->zero && world > 1) {
        own = zero_owners(o, world);
        zero_release(o, own, rank);
        int64_t mine = 0, all = 0;
        for (int i = 0; i < o->n; i++) {
            all += ft_numel(o->w[i].t);
            if (own[i] == rank) mine += ft_numel(o->w[i].t);
        }
        if (lead)
            fprintf(stderr, "ZeRO-1: AdamW's moments sharded over %d ranks (rank 0 keeps %lld of %lld parameters' moments)\n",
                    world, (long long)mine, (long long)all);
    }

    /* rank 0 alone prints the progress line and the step notes */
    FILE *quiet = lead ? NULL : fopen("/dev/null", "w");
    mx_term term;
    mx_term_init(&term, quiet ? quiet : stderr, lead ? -1 : 0, cfg->log_every > 0 ? cfg->log_every : 1);
    double t_start = ft_now(), tokens_run = 0;
    float *logp = NULL, *dlogp = NULL;
    for (int64_t step = start; !rc && step < total; step++) {
        int epoch = (int)(step / steps_per_epoch);
        int first = (int)(step % steps_per_epoch) * micro; /* the global step's micro-batches: [first, last) */
        if (epoch != planned_epoch) {
            ds_batches_free(batches, n_batches);
            batches = NULL;
            rc = job->plan(job->plan_ctx, epoch, &batches, &n_batches, e);
            if (rc) break;
            planned_epoch = epoch;
        }
        int last = first + micro < n_batches ? first + micro : n_batches;
        double loss = 0, step_tokens = 0, extra[FT_MAX_EXTRA_METRICS] = {0};
        ft_step_norm norm = {0, 0};
        for (int i = first; i < last; i++) count_trained(&batches[i], &norm);
        /* this rank's share: the rank-th run of grad_accum micro-batches (world 1: all of them) */
        int mine = first + rank * cfg->grad_accum < last ? first + rank * cfg->grad_accum : last;
        int mine_end = mine + cfg->grad_accum < last ? mine + cfg->grad_accum : last;
        if (job->loss.cls_loss) { /* a classifier trains on every (pooled) sample */
            norm.samples = 0;
            for (int i = first; i < last; i++)
                for (int t = 0; t < batches[i].n_tokens; t++) norm.samples += sample_end(&batches[i], t);
        }
        grads_zero(m, &g);
        for (int i = 0; i < o->n; i++) /* the model's again (cheap), and any extra (adapter) gradients */
            if (job->add_params) b->zero(b, o->g[i].t->data, ft_nbytes(o->g[i].t));
        bad_batch bb = {-1, 0, 0, -1};
        for (int i = mine; i < mine_end && !rc; i++) {
            const ds_batch *bt = &batches[i];
            double before = loss;
            logp = ft_xrealloc(logp, (size_t)bt->n_tokens * sizeof(float));
            dlogp = ft_xrealloc(dlogp, (size_t)bt->n_tokens * sizeof(float));
            /* the micro-batch's global index: a resumed run draws the same dropout masks */
            m->step_seed = ft_dropout_key(cfg->seed ^ ft_dropout_key((uint64_t)step * (uint64_t)micro +
                                                                     (uint64_t)(i - first)));
            if (job->loss.cls_loss) {
                rc = cls_micro_batch(job, bt, &norm, ls.enabled ? ls.scale : 1.0f, &g, &loss, extra, e);
                step_tokens += bt->n_tokens;
                continue;
            }
            if (job->loss.prepare) rc = job->loss.prepare(job->loss.ctx, m, bt, e);
            if (!rc)
                rc = model_forward_train_excl(m, bt->n_tokens, bt->ids, bt->pos, bt->doc_start, bt->excl_start,
                                              bt->excl_end, bt->targets, logp, e);
            if (!rc) rc = job->loss.loss(job->loss.ctx, bt, logp, &norm, dlogp, &loss, extra, e);
            if (!rc && step == 0 && bb.index < 0 && isfinite(before) && !isfinite(loss))
                note_bad_batch(bt, logp, i - first, &bb);
            if (!rc && ls.enabled)
                for (int t = 0; t < bt->n_tokens; t++) dlogp[t] *= ls.scale;
            if (!rc) rc = model_backward(m, dlogp, &g, e);
            step_tokens += bt->n_tokens;
        }
        if (rc) break;
        if (dp) { /* the step's loss, metrics and gradients summed over the ranks: every rank decides alike */
            double sums[FT_MAX_EXTRA_METRICS + 2] = {loss, step_tokens};
            for (int k = 0; k < FT_MAX_EXTRA_METRICS; k++) sums[2 + k] = extra[k];
            rc = dist_allreduce_f64_host(comm, sums, FT_MAX_EXTRA_METRICS + 2, "all-reduce of the step's loss", e);
            if (!rc) rc = allreduce_grads(job, o, e);
            if (rc) break;
            loss = sums[0], step_tokens = sums[1];
            for (int k = 0; k < FT_MAX_EXTRA_METRICS; k++) extra[k] = sums[2 + k];
        }
        ft_fault_point("train-mid-step"); /* test-only: killed between the backward and the update */
        ft_step_info info = {0};
        if (isfinite(loss)) {
            optim_step(o, 1.0f / ls.scale, &info); /* unscales the gradients */
        } else {
            info.skipped = 1;
            info.grad_norm = NAN;
            info.lr = optim_lr_at(&o->cfg, o->step);
        }
        tokens_seen += step_tokens;
        tokens_run += step_tokens;
        /* fp16 overflow (finite loss, inf/NaN gradients): GradScaler halves the scale and skips the step;
         * that is routine and not a bad step unless the scale has collapsed below 1 */
        int overflow = ls.enabled && info.skipped && isfinite(loss);
        lossscale_update(&ls, ls.enabled && info.skipped);
        if (own && !info.skipped && (rc = zero_allgather_weights(job, o, own, e))) break;
        if (!info.skipped) model_sync_compute(m);
        bad_streak = !info.skipped ? 0 : overflow && ls.scale >= 1.0f ? bad_streak : bad_streak + 1;
        if (overflow)
            mx_print(&term, "step %" PRId64 ": fp16 gradient overflow: step skipped, loss scale now %g", step + 1,
                     (double)ls.scale);
        else if (info.skipped)
            mx_print(&term, "step %" PRId64 ": non-finite loss or gradients (loss %g, grad norm %g): step skipped",
                     step + 1, loss, info.grad_norm);
        if (step == 0 && !isfinite(loss)) explain_first_bad_loss(job, &bb, mine_end - mine, loss, &term);

        size_t in_use = 0, peak = 0;
        b->memory(b, &in_use, &peak);
        double elapsed = ft_now() - t_start;
        mx_begin(mx, step + 1);
        mx_add(mx, "epoch", (double)(step + 1) / steps_per_epoch);
        mx_add(mx, "loss", loss);
        mx_add(mx, "lr", info.lr);
        mx_add(mx, "grad_norm", info.grad_norm);
        mx_add(mx, "tokens_per_s", elapsed > 0 ? tokens_run / elapsed : 0);
        mx_add(mx, "mem_gib", (double)peak / (1u << 30));
        if (info.skipped) mx_add(mx, "skipped", 1);
        if (ls.enabled) mx_add(mx, "loss_scale", ls.scale);
        mx_field fields[FT_MAX_EXTRA_METRICS + 1];
        int n_fields = 0;
        if (ls.enabled) fields[n_fields++] = (mx_field){"scale", ls.scale, "%.0f"};
        for (int k = 0; k < job->loss.n_extra && k < FT_MAX_EXTRA_METRICS; k++) {
            mx_add(mx, job->loss.extra_names[k], extra[k]);
            if (job->loss.extra_labels && job->loss.extra_labels[k])
                fields[n_fields++] = (mx_field){job->loss.extra_labels[k], extra[k], "%.3f"};
        }
        rc = mx_write(mx, e);
        mx_progress_info pi = {.step = step + 1,
                               .total_steps = total,
                               .loss = loss,
                               .lr = info.lr,
                               .grad_norm = info.grad_norm,
                               .tokens_per_s = elapsed > 0 ? tokens_run / elapsed : NAN,
                               .mem_gib = (double)peak / (1u << 30),
                               .extra = fields,
                               .n_extra = n_fields};
        mx_progress(&term, &pi);

        int final = step + 1 == total;
        int eval_now = (cfg->eval_every > 0 && (step + 1) % cfg->eval_every == 0) || final;
        if (!rc && job->eval_fn.run && eval_now) {
            double v[FT_MAX_EXTRA_METRICS];
            rc = job->eval_fn.run(job->eval_fn.ctx, m, v, e);
            if (!rc && mx) {
                char key[96], line[1024];
                size_t off = 0;
                mx_begin(mx, step + 1);
                for (int k = 0; k < job->eval_fn.n_values && k < FT_MAX_EXTRA_METRICS; k++) {
                    snprintf(key, sizeof key, "eval_%s", job->eval_fn.names[k]);
                    mx_add(mx, key, v[k]);
                    if (off < sizeof line)
                        off += (size_t)snprintf(line + off, sizeof line - off, "%s%s %.4f", k ? ", " : "",
                                                job->eval_fn.names[k], v[k]);
                }
                rc = mx_write(mx, e);
                mx_print(&term, "step %" PRId64 ": eval %s", step + 1, line);
            }
        } else if (!rc && job->n_eval > 0 && eval_now) {
            double nll;
            rc = evaluate(job, &nll, e);
            if (!rc && mx) {
                mx_begin(mx, step + 1);
                mx_add(mx, "eval_loss", nll);
                mx_add(mx, "eval_ppl", exp(nll));
                rc = mx_write(mx, e);
                mx_print(&term, "step %" PRId64 ": eval loss %.4f, perplexity %.3f", step + 1, nll, exp(nll));
            }
        }
        if (!rc && bad_streak >= cfg->max_bad_steps) {
            rc = ft_fail(e, FT_EINPUT,
                         "%d steps in a row had non-finite loss or gradients (last at step %" PRId64
                         "); stopping. The last good checkpoint in %s/checkpoints is intact: lower the learning "
                         "rate or check the data, then --resume",
                         bad_streak, step + 1, cfg->output_dir);
            break;
        }
        /* never checkpoint during a bad streak: the weights may be blown up, and keep_last would prune the good ones */
        if (!rc && bad_streak == 0 && ((cfg->save_every > 0 && (step + 1) % cfg->save_every == 0) || final)) {
            if (dp) { /* the ranks agree on the step before rank 0 writes it */
                double s1[2] = {(double)(step + 1), 1};
                rc = dist_allreduce_f64_host(comm, s1, 2, "agreeing on the checkpoint step", e);
                if (!rc && s1[0] != (double)(step + 1) * s1[1])
                    rc = ft_fail(e, FT_EINTERNAL, "the ranks are at different steps at the checkpoint of step %" PRId64,
                                 step + 1);
            }
            if (!rc && own) rc = zero_gather(job, o, own, e); /* the checkpoint holds every tensor's moments */
            if (!rc && lead) rc = save_checkpoint(job, o, step + 1, bad_streak, tokens_seen, &ls, e);
            if (dp) rc = all_ok(job, rc, "to write the checkpoint", e);
            if (own) zero_release(o, own, rank);
        }
    }
    mx_term_finish(&term);
    if (quiet) fclose(quiet);
    if (!rc && job->save_output && lead) rc = job->save_output(job->save_ctx, m, e);
    if (dp && (!rc || lead)) rc = all_ok(job, rc, "to write the output", e);
    if (!rc && lead) fprintf(stderr, "trained %d steps, %.0f tokens; output in %s\n", total, tokens_seen, cfg->output_dir);
    if (rc && ft_error_no_space(e)) no_space_hint(cfg->output_dir, e);
    free(logp);
    free(dlogp);
    ds_batches_free(batches, n_batches);
    mx_close(mx);
    optim_free(o);
    free(own);
    grads_free(m, &g);
    return rc;
}
