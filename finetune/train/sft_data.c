#include "finetune/train/sft_data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void add_read_stats(ds_read_stats *dst, const ds_read_stats *src) {
    dst->records += src->records;
    dst->yielded += src->yielded;
    dst->skipped_total += src->skipped_total;
    for (int i = 0; i < DS_SKIP_COUNT; i++) dst->skipped[i] += src->skipped[i];
    if (!dst->first_skip[0]) memcpy(dst->first_skip, src->first_skip, sizeof dst->first_skip);
}

int sft_data_read(ft_job *j, char **files, size_t n_files, sft_data *out, ft_error *e) {
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

void sft_data_free(sft_data *d) {
    for (int i = 0; i < d->n; i++) ds_example_free(&d->ex[i]);
    free(d->ex);
    memset(d, 0, sizeof *d);
}

void sft_data_split_eval(sft_data *train, sft_data *eval, double fraction, uint64_t seed) {
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

int sft_plan_epoch(void *ctx, int epoch, ds_batch **batches, int *n, ft_error *e) {
    const sft_plan *p = ctx;
    uint64_t seed = p->j->train.seed + (uint64_t)epoch * 1000003ULL;
    if (p->j->packing)
        return ds_batches_packed(p->d->ex, p->d->n, p->j->ex.max_length, p->j->batch_size, seed, p->pad, batches, n, e);
    return ds_batches_bucketed(p->d->ex, p->d->n, p->j->batch_size, p->j->bucket_window, seed, p->pad, batches, n, e);
}

const char *sft_sample_where(void *ctx, int32_t sample, char *buf, size_t cap) {
    const sft_plan *p = ctx;
    if (sample < 0 || sample >= p->d->n) return NULL;
    snprintf(buf, cap, "%s", p->d->ex[sample].where);
    return buf;
}

void sft_data_print_stats(const char *what, const sft_data *d) {
    long tokens = 0, trained = 0;
    for (int i = 0; i < d->n; i++) {
        tokens += d->ex[i].n;
        for (int t = 0; t < d->ex[i].n; t++) trained += d->ex[i].trained[t];
    }
    fprintf(stderr, "%s: %d examples, %ld tokens, %ld trained tokens\n", what, d->n, tokens, trained);
}

void sft_data_print_read_stats(const char *what, const sft_data *d) {
    fprintf(stderr,
            "%s: %ld records read, %ld skipped as bad; %ld examples truncated, %ld dropped (too long %ld, nothing "
            "left to train %ld)\n",
            what, d->rd.records, d->rd.skipped_total, d->st.truncated,
            d->st.dropped_too_long + d->st.dropped_no_trained, d->st.dropped_too_long, d->st.dropped_no_trained);
    if (d->rd.skipped_total) fprintf(stderr, "  first skipped record: %s\n", d->rd.first_skip);
}
