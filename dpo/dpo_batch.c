#include "dpo/dpo_batch.h"

#include <stdlib.h>
#include <string.h>

/* Does pair p take the shared layout? It needs a prompt (the copy of its last token starts the rejected
 * reply) and a span within the limit. */
static int pair_shared(const ds_pref_example *p, const dpo_layout *lay) {
    if (!lay || !lay->shared || p->n_prompt < 1) return 0;
    int64_t span = (int64_t)p->n_prompt + p->n_chosen + 1 + p->n_rejected;
    return lay->span_limit <= 0 || span <= lay->span_limit;
}

/* Tokens of pair p in the layout */
static int pair_tokens(const ds_pref_example *p, const dpo_layout *lay) {
    return pair_shared(p, lay) ? p->n_prompt + p->n_chosen + 1 + p->n_rejected
                               : 2 * p->n_prompt + p->n_chosen + p->n_rejected;
}

/* One sequence prompt + completion at b's token t (its own sample); returns the next free token. */
static int put_sequence(ds_batch *b, int t, const ds_pref_example *p, int32_t sample, const int32_t *comp, int nc) {
    int L = p->n_prompt + nc, start = t;
    if (L > b->row_len) b->row_len = L;
    for (int i = 0; i < L; i++, t++) {
        b->ids[t] = i < p->n_prompt ? p->prompt[i] : comp[i - p->n_prompt];
        b->pos[t] = i;
        b->doc_start[t] = start;
        b->sample[t] = sample;
        /* position i predicts token i+1: a target only when that is a completion token */
        b->targets[t] = i + 1 < L && i + 1 >= p->n_prompt ? comp[i + 1 - p->n_prompt] : -1;
        if (b->excl_start) b->excl_start[t] = b->excl_end[t] = 0;
    }
    b->rows++;
    return t;
}

/* Pair p as one sample [prompt, chosen, prompt's last token again, rejected] at token t (see dpo_batch.h). */
static int put_shared(ds_batch *b, int t, const ds_pref_example *p, int32_t pair) {
    int P = p->n_prompt, C = p->n_chosen, R = p->n_rejected, start = t, L = P + C + 1 + R;
    if (L > b->row_len) b->row_len = L;
    for (int i = 0; i < P + C; i++, t++) { /* the chosen sequence, as in TRL's layout */
        b->ids[t] = i < P ? p->prompt[i] : p->chosen[i - P];
        b->pos[t] = i;
        b->targets[t] = i + 1 < P + C && i + 1 >= P ? p->chosen[i + 1 - P] : -1;
        b->sample[t] = 2 * pair;
        b->excl_start[t] = b->excl_end[t] = 0;
    }
    for (int k = -1; k < R; k++, t++) { /* the copy of the prompt's last token (k = -1), then rejected */
        b->ids[t] = k < 0 ? p->prompt[P - 1] : p->rejected[k];
        b->pos[t] = P + k;
        b->targets[t] = k + 1 < R ? p->rejected[k + 1] : -1;
        b->sample[t] = 2 * pair + 1;
        b->excl_start[t] = start + P - 1; /* the prompt's own last token and the chosen reply */
        b->excl_end[t] = start + P + C;
    }
    for (int i = start; i < t; i++) b->doc_start[i] = start;
    b->rows++;
    return t;
}

static void build_batch(const ds_pref_example *pairs, const int *order, int count, const dpo_layout *lay,
                        ds_batch *b) {
    int T = 0, shared = 0;
    for (int k = 0; k < count; k++) {
        T += pair_tokens(&pairs[order[k]], lay);
        shared |= pair_shared(&pairs[order[k]], lay);
    }
    memset(b, 0, sizeof *b);
    b->n_tokens = T;
    b->ids = ft_xmalloc((size_t)T * 4);
    b->targets = ft_xmalloc((size_t)T * 4);
    b->pos = ft_xmalloc((size_t)T * 4);
    b->doc_start = ft_xmalloc((size_t)T * 4);
    b->sample = ft_xmalloc((size_t)T * 4);
    if (shared) {
        b->excl_start = ft_xmalloc((size_t)T * 4);
        b->excl_end = ft_xmalloc((size_t)T * 4);
    }
    b->n_samples = 2 * count;
    int t = 0;
    if (!lay || !lay->shared) { /* TRL's layout: every chosen sequence, then every rejected one */
        for (int side = 0; side < 2; side++)
            for (int k = 0; k < count; k++) {
                const ds_pref_example *p = &pairs[order[k]];
                t = put_sequence(b, t, p, 2 * order[k] + side, side ? p->rejected : p->chosen,
                                 side ? p->n_rejected : p->n_chosen);
            }
        return;
    }
    for (int k = 0; k < count; k++) { /* pair by pair; a pair that cannot share runs as its two sequences */
        const ds_pref_example *p = &pairs[order[k]];
        if (pair_shared(p, lay)) {
            t = put_shared(b, t, p, order[k]);
        } else {
            t = put_sequence(b, t, p, 2 * order[k], p->chosen, p->n_chosen);
            t = put_sequence(b, t, p, 2 * order[k] + 1, p->rejected, p->n_rejected);
        }
    }
}

int dpo_shared_span_limit(const ft_config *c, int limit) {
    if (c->sliding_window > 0 && (limit <= 0 || c->sliding_window < limit)) limit = c->sliding_window;
    if (c->rope_type == FT_ROPE_DYNAMIC && (limit <= 0 || c->max_position_embeddings < limit))
        limit = c->max_position_embeddings;
    return limit;
}

void dpo_build_batches(const ds_pref_example *pairs, const int *order, int n, int per, const dpo_layout *lay,
                       ds_batch **out, int *n_out) {
    int nb = (n + per - 1) / per;
    ds_batch *b = ft_xcalloc((size_t)(nb ? nb : 1), sizeof *b);
    for (int i = 0; i < nb; i++)
        build_batch(pairs, order + i * per, i * per + per <= n ? per : n - i * per, lay, &b[i]);
    *out = b;
    *n_out = nb;
}

int dpo_gather(const ds_batch *b, const float *logp, int *pair, double *pc, double *pr, int *nc, int *nr) {
    int n = 0, k = 0;
    for (int t = 0; t < b->n_tokens; t++) {
        if (b->targets[t] < 0) continue;
        int p = b->sample[t] / 2, side = b->sample[t] % 2;
        if (k >= n || pair[k] != p) /* tokens of one sequence are contiguous: search only on a change */
            for (k = 0; k < n && pair[k] != p; k++) {
            }
        if (k == n) {
            pair[n] = p;
            pc[n] = pr[n] = 0;
            nc[n] = nr[n] = 0;
            n++;
        }
        if (side) {
            pr[k] += logp[t];
            nr[k]++;
        } else {
            pc[k] += logp[t];
            nc[k]++;
        }
    }
    return n;
}

int dpo_batch_loss(const dpo_config *cfg, const ds_batch *b, const float *logp, const double *ref_c,
                   const double *ref_r, double weight, float *dlogp, double *loss, dpo_metrics *mt, ft_error *e) {
    size_t cap = (size_t)(b->n_samples > 0 ? b->n_samples : 1);
    int *pair = ft_xmalloc(cap * sizeof(int)), *nc = ft_xmalloc(cap * sizeof(int)), *nr = ft_xmalloc(cap * sizeof(int));
    double *pc = ft_xmalloc(cap * 8), *pr = ft_xmalloc(cap * 8), *rc = ft_xmalloc(cap * 8), *rr = ft_xmalloc(cap * 8),
           *dpc = ft_xmalloc(cap * 8), *dpr = ft_xmalloc(cap * 8);
    int n = dpo_gather(b, logp, pair, pc, pr, nc, nr);
    for (int k = 0; k < n; k++) {
        rc[k] = ref_c ? ref_c[pair[k]] : 0;
        rr[k] = ref_r ? ref_r[pair[k]] : 0;
    }
    double l = 0;
    int status = dpo_loss_forward(cfg, n, pc, pr, ref_c ? rc : NULL, ref_r ? rr : NULL, nc, nr, &l, dpc, dpr, mt, e);
    if (!status) {
        *loss += weight * l;
        for (int t = 0, k = 0; t < b->n_tokens; t++) {
            dlogp[t] = 0;
            if (b->targets[t] < 0) continue;
            int p = b->sample[t] / 2;
            if (pair[k] != p)
                for (k = 0; pair[k] != p; k++) {
                }
            dlogp[t] = (float)(weight * (b->sample[t] % 2 ? dpr[k] : dpc[k]));
        }
    }
    free(pair), free(nc), free(nr), free(pc), free(pr), free(rc), free(rr), free(dpc), free(dpr);
    return status;
}
