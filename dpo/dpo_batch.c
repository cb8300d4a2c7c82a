#include "dpo/dpo_batch.h"

#include <stdlib.h>
#include <string.h>

static void build_batch(const ds_pref_example *pairs, const int *order, int count, ds_batch *b) {
    int T = 0;
    for (int k = 0; k < count; k++) {
        const ds_pref_example *p = &pairs[order[k]];
        T += 2 * p->n_prompt + p->n_chosen + p->n_rejected;
    }
    memset(b, 0, sizeof *b);
    b->n_tokens = T;
    b->rows = 2 * count;
    b->ids = ft_xmalloc((size_t)T * 4);
    b->targets = ft_xmalloc((size_t)T * 4);
    b->pos = ft_xmalloc((size_t)T * 4);
    b->doc_start = ft_xmalloc((size_t)T * 4);
    b->sample = ft_xmalloc((size_t)T * 4);
    b->n_samples = 2 * count;
    int t = 0;
    for (int side = 0; side < 2; side++)
        for (int k = 0; k < count; k++) {
            const ds_pref_example *p = &pairs[order[k]];
            const int32_t *comp = side ? p->rejected : p->chosen;
            int nc = side ? p->n_rejected : p->n_chosen, L = p->n_prompt + nc, start = t;
            if (L > b->row_len) b->row_len = L;
            for (int i = 0; i < L; i++, t++) {
                b->ids[t] = i < p->n_prompt ? p->prompt[i] : comp[i - p->n_prompt];
                b->pos[t] = i;
                b->doc_start[t] = start;
                b->sample[t] = 2 * order[k] + side;
                /* position i predicts token i+1: a target only when that is a completion token */
                b->targets[t] = i + 1 < L && i + 1 >= p->n_prompt ? comp[i + 1 - p->n_prompt] : -1;
            }
        }
}

void dpo_build_batches(const ds_pref_example *pairs, const int *order, int n, int per, ds_batch **out, int *n_out) {
    int nb = (n + per - 1) / per;
    ds_batch *b = ft_xcalloc((size_t)(nb ? nb : 1), sizeof *b);
    for (int i = 0; i < nb; i++) build_batch(pairs, order + i * per, i * per + per <= n ? per : n - i * per, &b[i]);
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
