#include "finetune/train/cls_data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/train/cls_loss.h"

static void add_example(cls_data *d, ds_cls_example *x) {
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->cx = ft_xrealloc(d->cx, (size_t)d->cap * sizeof *d->cx);
        d->ex = ft_xrealloc(d->ex, (size_t)d->cap * sizeof *d->ex);
    }
    d->cx[d->n] = *x;
    ds_example *v = &d->ex[d->n];
    memset(v, 0, sizeof *v);
    v->ids = x->ids;
    v->n = x->n;
    v->trained = ft_xcalloc((size_t)(x->n > 0 ? x->n : 1), 1);
    snprintf(v->where, sizeof v->where, "%s", x->where);
    d->n++;
}

int cls_data_read(char **files, size_t n_files, const ds_cls_opts *o, const ft_tokenizer *tok, cls_data *out,
                  ft_error *e) {
    for (size_t f = 0; f < n_files; f++) {
        ds_cls_example *x = NULL;
        int n = 0;
        ds_cls_stats st;
        memset(&st, 0, sizeof st);
        int rc = ds_cls_read(files[f], o, tok, &x, &n, &st, e);
        if (rc) return rc;
        for (int i = 0; i < n; i++) add_example(out, &x[i]);
        free(x); /* the examples' own memory now belongs to out */
        out->st.rows += st.rows;
        out->st.examples += st.examples;
        out->st.skipped += st.skipped;
        out->st.truncated_parts += st.truncated_parts;
        out->st.nulls += st.nulls;
        out->st.surrogates += st.surrogates;
        out->st.swapped += st.swapped;
        if (!out->st.first_skip[0]) snprintf(out->st.first_skip, sizeof out->st.first_skip, "%s", st.first_skip);
    }
    return FT_OK;
}

static void add_ids(cls_data *d, const int32_t *a, int na, const int32_t *b, int nb, float value, const char *where) {
    ds_cls_example x;
    memset(&x, 0, sizeof x);
    x.n = na + nb;
    x.ids = ft_xmalloc((size_t)(x.n > 0 ? x.n : 1) * sizeof *x.ids);
    memcpy(x.ids, a, (size_t)na * sizeof *a);
    memcpy(x.ids + na, b, (size_t)nb * sizeof *b);
    x.has_label = 1;
    x.value = value;
    snprintf(x.id, sizeof x.id, "%d", d->n / 2);
    snprintf(x.where, sizeof x.where, "%s", where);
    add_example(d, &x);
}

int cls_data_read_pairs(const ft_job *j, char **files, size_t n_files, cls_data *out, ft_error *e) {
    out->pairs = 1;
    for (size_t f = 0; f < n_files; f++) {
        ds_dataset *d = NULL;
        int rc = ds_open(files[f], j->format, j->on_bad, &d, e);
        if (rc) return rc;
        if (!ds_dataset_is_preference(d)) {
            ds_close(d);
            return ft_fail(e, FT_EINPUT, "%s: not preference data (no chosen/rejected): reward modelling needs pairs",
                           files[f]);
        }
        for (;;) {
            ds_pref p;
            ds_pref_example x;
            int done = 0, kept = 0;
            rc = ds_next_pref(d, &p, &done, e);
            if (rc || done) break;
            rc = ds_build_pref_example(j->tmpl, &p, j->tok, &j->ex, &x, &kept, &out->pst, e);
            ds_pref_free(&p);
            if (rc) break;
            if (!kept) continue;
            add_ids(out, x.prompt, x.n_prompt, x.chosen, x.n_chosen, 1.0f, x.where);
            add_ids(out, x.prompt, x.n_prompt, x.rejected, x.n_rejected, 0.0f, x.where);
            ds_pref_example_free(&x);
        }
        const ds_read_stats *rs = ds_dataset_stats(d);
        out->prd.records += rs->records;
        out->prd.skipped_total += rs->skipped_total;
        if (!out->prd.first_skip[0]) memcpy(out->prd.first_skip, rs->first_skip, sizeof rs->first_skip);
        ds_close(d);
        if (rc) return rc;
    }
    return FT_OK;
}

void cls_data_free(cls_data *d) {
    for (int i = 0; i < d->n; i++) free(d->ex[i].trained);
    ds_cls_free(d->cx, d->n);
    free(d->ex);
    memset(d, 0, sizeof *d);
}

void cls_data_split_eval(cls_data *train, cls_data *eval, double fraction, uint64_t seed) {
    int g = train->pairs ? 2 : 1, units = train->n / g; /* a pair moves whole */
    eval->pairs = train->pairs;
    if (fraction <= 0 || units < 2) return;
    int k = (int)(fraction * units);
    if (k < 1) k = 1;
    if (k >= units) k = units - 1;
    ft_rng rng;
    ft_rng_seed(&rng, seed ^ 0x636c73ULL);
    /* pick k distinct examples (partial Fisher-Yates over an index array), keep the rest in order */
    int *idx = ft_xmalloc((size_t)units * sizeof *idx);
    char *out = ft_xcalloc((size_t)train->n, 1);
    for (int i = 0; i < units; i++) idx[i] = i;
    for (int i = 0; i < k; i++) {
        int j = i + (int)(ft_rng_next(&rng) % (uint64_t)(units - i));
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        for (int q = 0; q < g; q++) out[idx[i] * g + q] = 1;
    }
    int w = 0;
    for (int i = 0; i < train->n; i++) {
        if (out[i]) {
            free(train->ex[i].trained);
            add_example(eval, &train->cx[i]);
        } else {
            train->cx[w] = train->cx[i];
            train->ex[w] = train->ex[i];
            w++;
        }
    }
    train->n = w;
    free(idx);
    free(out);
}

void cls_data_print_stats(const char *what, const cls_data *d) {
    long tokens = 0;
    for (int i = 0; i < d->n; i++) tokens += d->cx[i].n;
    if (d->pairs) {
        fprintf(stderr, "%s: %d preference pairs, %ld tokens (%ld records read", what, d->n / 2, tokens, d->prd.records);
        if (d->prd.skipped_total) fprintf(stderr, ", %ld skipped (first: %s)", d->prd.skipped_total, d->prd.first_skip);
        if (d->pst.truncated) fprintf(stderr, ", %ld truncated", d->pst.truncated);
        if (d->pst.dropped_too_long) fprintf(stderr, ", %ld dropped: the prompt fills max_length", d->pst.dropped_too_long);
        if (d->pst.dropped_mismatch) fprintf(stderr, ", %ld dropped: prompt tokens differ", d->pst.dropped_mismatch);
        fprintf(stderr, ")\n");
        return;
    }
    fprintf(stderr, "%s: %d examples, %ld tokens", what, d->n, tokens);
    if (d->st.rows) fprintf(stderr, " (%ld rows read", d->st.rows);
    if (d->st.skipped) fprintf(stderr, ", %ld skipped (first: %s)", d->st.skipped, d->st.first_skip);
    if (d->st.truncated_parts) fprintf(stderr, ", %ld parts truncated", d->st.truncated_parts);
    if (d->st.nulls) fprintf(stderr, ", %ld null turns read as empty", d->st.nulls);
    if (d->st.swapped) fprintf(stderr, ", %ld a/b swapped", d->st.swapped);
    if (d->st.rows) fprintf(stderr, ")");
    fprintf(stderr, "\n");
}

/* Pairs: batch_size pairs per micro-batch in a seeded order, each pair's chosen then rejected sample back to
 * back in one flat row (the flat layout needs no padding). */
static int plan_pairs(const cls_data *d, int per_batch, uint64_t seed, ds_batch **out, int *n_out) {
    int np = d->n / 2, nb = (np + per_batch - 1) / per_batch;
    int *order = ft_xmalloc((size_t)(np ? np : 1) * sizeof *order);
    for (int i = 0; i < np; i++) order[i] = i;
    ft_rng rng;
    ft_rng_seed(&rng, seed);
    for (int i = np - 1; i > 0; i--) {
        int j = (int)(ft_rng_next(&rng) % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    ds_batch *b = ft_xcalloc((size_t)(nb ? nb : 1), sizeof *b);
    for (int k = 0; k < nb; k++) {
        int first = k * per_batch, last = first + per_batch < np ? first + per_batch : np, T = 0;
        for (int i = first; i < last; i++) T += d->cx[2 * order[i]].n + d->cx[2 * order[i] + 1].n;
        ds_batch *bt = &b[k];
        bt->n_tokens = bt->row_len = T;
        bt->rows = 1;
        bt->n_samples = 2 * (last - first);
        bt->ids = ft_xmalloc((size_t)T * 4);
        bt->targets = ft_xmalloc((size_t)T * 4);
        bt->pos = ft_xmalloc((size_t)T * 4);
        bt->doc_start = ft_xmalloc((size_t)T * 4);
        bt->sample = ft_xmalloc((size_t)T * 4);
        for (int i = first, t = 0; i < last; i++)
            for (int q = 0; q < 2; q++) {
                int s = 2 * order[i] + q, start = t;
                for (int u = 0; u < d->cx[s].n; u++, t++) {
                    bt->ids[t] = d->cx[s].ids[u];
                    bt->targets[t] = -1;
                    bt->pos[t] = u;
                    bt->doc_start[t] = start;
                    bt->sample[t] = s;
                }
            }
    }
    free(order);
    *out = b;
    *n_out = nb;
    return FT_OK;
}

int cls_plan_epoch(void *ctx, int epoch, ds_batch **batches, int *n, ft_error *e) {
    const cls_job *p = ctx;
    uint64_t seed = p->j->train.seed + (uint64_t)epoch * 1000003ULL;
    if (p->train->pairs) return plan_pairs(p->train, p->j->batch_size, seed, batches, n);
    if (p->j->packing)
        return ds_batches_packed(p->train->ex, p->train->n, p->j->ex.max_length, p->j->batch_size, seed, p->pad,
                                 batches, n, e);
    return ds_batches_bucketed(p->train->ex, p->train->n, p->j->batch_size, p->j->bucket_window, seed, p->pad, batches,
                               n, e);
}

const char *cls_sample_where(void *ctx, int32_t sample, char *buf, size_t cap) {
    const cls_job *p = ctx;
    if (sample < 0 || sample >= p->train->n) return NULL;
    snprintf(buf, cap, "%s", p->train->cx[sample].where);
    return buf;
}

/* One example's loss; w times its gradient added into dz (may be NULL); *hit: argmax equals the target's. */
static double example_loss(const ds_cls_example *x, int K, double eps, const float *z, double w, float *dz,
                           double *log_loss, int *hit) {
    if (K == 1) {
        *log_loss = NAN;
        *hit = 0;
        return cls_mse(z[0], x->value, w, dz);
    }
    int pred, best = 0;
    double l = cls_ce(z, x->probs, K, eps, w, dz, log_loss, &pred);
    for (int k = 1; k < K; k++)
        if (x->probs[k] > x->probs[best]) best = k;
    *hit = pred == best;
    return l;
}

int cls_loss_fn(void *ctx, const ds_batch *b, int S, const int32_t *rows, const float *logits, const ft_step_norm *norm,
                float *dlogits, double *loss, double *extra, ft_error *e) {
    const cls_job *p = ctx;
    int K = p->num_labels;
    double w = 1.0 / (norm->samples > 0 ? norm->samples : 1);
    if (p->train->pairs) { /* rows come as (chosen, rejected) of one pair */
        w *= 2; /* the mean over the step's pairs */
        for (int i = 0; i < S; i += 2) {
            int32_t s = b->sample[rows[i]];
            if (i + 1 >= S || s % 2 || b->sample[rows[i + 1]] != s + 1)
                return ft_fail(e, FT_EINTERNAL, "reward modelling: pooled sample %d is not a chosen/rejected pair", s);
            float zc = logits[i], zr = logits[i + 1];
            *loss += w * cls_pair(zc, zr, p->margin, w, &dlogits[i], &dlogits[i + 1]);
            extra[0] += w * (zc > zr);
            extra[1] += w * ((double)zc - zr);
        }
        return FT_OK;
    }
    for (int i = 0; i < S; i++) {
        int32_t s = b->sample[rows[i]];
        if (s < 0 || s >= p->train->n) return ft_fail(e, FT_EINTERNAL, "classification: pooled sample %d unknown", s);
        const ds_cls_example *x = &p->train->cx[s];
        if (!x->has_label) return ft_fail(e, FT_EINPUT, "%s: the example has no label", x->where);
        double ll;
        int hit;
        *loss += w * example_loss(x, K, p->label_smoothing, logits + (size_t)i * K, w, dlogits + (size_t)i * K, &ll,
                                  &hit);
        if (K > 1) extra[0] += w * hit;
    }
    return FT_OK;
}

typedef struct by_len {
    int n, i;
} by_len;
static int cmp_len(const void *a, const void *b) {
    const by_len *x = a, *y = b;
    return x->n != y->n ? (x->n > y->n ? -1 : 1) : (x->i > y->i) - (x->i < y->i);
}

int cls_logits(ft_model *m, const cls_data *d, int batch_tokens, int progress, float *logits, ft_error *e) {
    int K = m->cfg.num_labels, rc = FT_OK;
    by_len *order = ft_xmalloc((size_t)(d->n ? d->n : 1) * sizeof *order);
    for (int i = 0; i < d->n; i++) order[i] = (by_len){d->cx[i].n, i};
    qsort(order, (size_t)d->n, sizeof *order, cmp_len); /* longest first: a too-large batch fails at once */
    int32_t *ids = NULL, *pos = NULL, *doc = NULL, *rows = NULL;
    float *lg = NULL;
    for (int i = 0; i < d->n && !rc;) {
        int T = 0, S = 0, j = i;
        while (j < d->n && (S == 0 || T + order[j].n <= batch_tokens)) T += order[j++].n, S++;
        ids = ft_xrealloc(ids, (size_t)T * 4);
        pos = ft_xrealloc(pos, (size_t)T * 4);
        doc = ft_xrealloc(doc, (size_t)T * 4);
        rows = ft_xrealloc(rows, (size_t)S * 4);
        lg = ft_xrealloc(lg, (size_t)S * K * 4);
        for (int k = 0, t = 0; k < S; k++) {
            const ds_cls_example *x = &d->cx[order[i + k].i];
            for (int q = 0; q < x->n; q++, t++) {
                ids[t] = x->ids[q];
                pos[t] = q;
                doc[t] = t - q;
            }
            rows[k] = t - 1;
        }
        rc = model_forward_cls(m, T, ids, pos, doc, S, rows, lg, e);
        for (int k = 0; !rc && k < S; k++) memcpy(logits + (size_t)order[i + k].i * K, lg + (size_t)k * K, (size_t)K * 4);
        i = j;
        if (progress && !rc) fprintf(stderr, "\rpredicted %d of %d", i, d->n);
    }
    if (progress) fprintf(stderr, "\n");
    free(order);
    free(ids);
    free(pos);
    free(doc);
    free(rows);
    free(lg);
    return rc;
}

void cls_score(const cls_data *d, int K, double margin, const float *logits, double *loss, double *accuracy,
               double *log_loss) {
    double l = 0, ll = 0, hits = 0;
    int n = 0;
    if (d->pairs) { /* log_loss slot: the mean reward margin */
        for (int i = 0; i + 1 < d->n; i += 2, n++) {
            l += cls_pair(logits[i], logits[i + 1], margin, 0, NULL, NULL);
            hits += logits[i] > logits[i + 1];
            ll += (double)logits[i] - logits[i + 1];
        }
        *loss = n ? l / n : NAN;
        *accuracy = n ? hits / n : NAN;
        *log_loss = n ? ll / n : NAN;
        return;
    }
    for (int i = 0; i < d->n; i++) {
        if (!d->cx[i].has_label) continue;
        double lli;
        int hit;
        l += example_loss(&d->cx[i], K, 0.0, logits + (size_t)i * K, 0, NULL, &lli, &hit);
        ll += lli;
        hits += hit;
        n++;
    }
    *loss = n ? l / n : NAN;
    *accuracy = n && K > 1 ? hits / n : NAN;
    *log_loss = n && K > 1 ? ll / n : NAN;
}

int cls_eval_fn(void *ctx, ft_model *m, double *values, ft_error *e) {
    const cls_job *p = ctx;
    float *lg = ft_xmalloc((size_t)(p->eval->n ? p->eval->n : 1) * p->num_labels * sizeof *lg);
    int tokens = p->j->ex.max_length * p->j->batch_size;
    int rc = cls_logits(m, p->eval, tokens, 0, lg, e);
    if (!rc) cls_score(p->eval, p->num_labels, p->margin, lg, &values[0], &values[1], &values[2]);
    free(lg);
    return rc;
}
