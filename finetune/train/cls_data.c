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

void cls_data_free(cls_data *d) {
    for (int i = 0; i < d->n; i++) free(d->ex[i].trained);
    ds_cls_free(d->cx, d->n);
    free(d->ex);
    memset(d, 0, sizeof *d);
}

void cls_data_split_eval(cls_data *train, cls_data *eval, double fraction, uint64_t seed) {
    if (fraction <= 0 || train->n < 2) return;
    int k = (int)(fraction * train->n);
    if (k < 1) k = 1;
    if (k >= train->n) k = train->n - 1;
    ft_rng rng;
    ft_rng_seed(&rng, seed ^ 0x636c73ULL);
    /* pick k distinct examples (partial Fisher-Yates over an index array), keep the rest in order */
    int *idx = ft_xmalloc((size_t)train->n * sizeof *idx);
    char *out = ft_xcalloc((size_t)train->n, 1);
    for (int i = 0; i < train->n; i++) idx[i] = i;
    for (int i = 0; i < k; i++) {
        int j = i + (int)(ft_rng_next(&rng) % (uint64_t)(train->n - i));
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        out[idx[i]] = 1;
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
    fprintf(stderr, "%s: %d examples, %ld tokens", what, d->n, tokens);
    if (d->st.rows) fprintf(stderr, " (%ld rows read", d->st.rows);
    if (d->st.skipped) fprintf(stderr, ", %ld skipped (first: %s)", d->st.skipped, d->st.first_skip);
    if (d->st.truncated_parts) fprintf(stderr, ", %ld parts truncated", d->st.truncated_parts);
    if (d->st.nulls) fprintf(stderr, ", %ld null turns read as empty", d->st.nulls);
    if (d->st.swapped) fprintf(stderr, ", %ld a/b swapped", d->st.swapped);
    if (d->st.rows) fprintf(stderr, ")");
    fprintf(stderr, "\n");
}

int cls_plan_epoch(void *ctx, int epoch, ds_batch **batches, int *n, ft_error *e) {
    const cls_job *p = ctx;
    uint64_t seed = p->j->train.seed + (uint64_t)epoch * 1000003ULL;
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

void cls_score(const cls_data *d, int K, const float *logits, double *loss, double *accuracy, double *log_loss) {
    double l = 0, ll = 0, hits = 0;
    int n = 0;
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
    if (!rc) cls_score(p->eval, p->num_labels, lg, &values[0], &values[1], &values[2]);
    free(lg);
    return rc;
}
