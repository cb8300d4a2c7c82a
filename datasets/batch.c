#include "datasets/batch.h"

#include <stdlib.h>
#include <string.h>

static void batch_alloc(ds_batch *b, int rows, int row_len, int32_t pad) {
    memset(b, 0, sizeof *b);
    b->rows = rows;
    b->row_len = row_len;
    b->n_tokens = rows * row_len;
    size_t T = (size_t)(b->n_tokens ? b->n_tokens : 1);
    b->ids = ft_xmalloc(T * sizeof(int32_t));
    b->targets = ft_xmalloc(T * sizeof(int32_t));
    b->pos = ft_xmalloc(T * sizeof(int32_t));
    b->doc_start = ft_xmalloc(T * sizeof(int32_t));
    b->sample = ft_xmalloc(T * sizeof(int32_t));
    for (int t = 0; t < b->n_tokens; t++) {
        b->ids[t] = pad;
        b->targets[t] = -1;
        b->pos[t] = 0;
        b->doc_start[t] = t;
        b->sample[t] = -1;
    }
}

/* place example `idx` at flat offset `at` */
static void place(ds_batch *b, const ds_example *x, int idx, int at) {
    for (int i = 0; i < x->n; i++) {
        int t = at + i;
        b->ids[t] = x->ids[i];
        b->targets[t] = i + 1 < x->n && x->trained[i + 1] ? x->ids[i + 1] : -1;
        b->pos[t] = i;
        b->doc_start[t] = at;
        b->sample[t] = idx;
    }
    b->n_samples++;
}

static void shuffle(int *v, int n, ft_rng *r) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(ft_rng_next(r) % (uint64_t)(i + 1));
        int t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

static const ds_example *g_ex;
static int by_len_desc(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    if (g_ex[x].n != g_ex[y].n) return g_ex[y].n - g_ex[x].n;
    return x - y; /* stable: ties by index */
}

int ds_batches_bucketed(const ds_example *ex, int n, int rows, int window, uint64_t seed, int32_t pad,
                        ds_batch **out, int *n_batches, ft_error *e) {
    *out = NULL;
    *n_batches = 0;
    if (rows <= 0) return ft_fail(e, FT_EINPUT, "batch: rows per batch must be positive (got %d)", rows);
    if (window < rows) window = rows;
    ft_rng r;
    ft_rng_seed(&r, seed);
    int *ord = ft_xmalloc((size_t)(n ? n : 1) * sizeof *ord);
    for (int i = 0; i < n; i++) ord[i] = i;
    shuffle(ord, n, &r);
    g_ex = ex;
    for (int w = 0; w < n; w += window) qsort(ord + w, (size_t)(n - w < window ? n - w : window), sizeof *ord, by_len_desc);
    int nb = (n + rows - 1) / rows;
    ds_batch *bs = ft_xcalloc((size_t)(nb ? nb : 1), sizeof *bs);
    int *border = ft_xmalloc((size_t)(nb ? nb : 1) * sizeof *border);
    for (int k = 0; k < nb; k++) border[k] = k;
    shuffle(border, nb, &r); /* batch order random; lengths alike within a batch */
    for (int k = 0; k < nb; k++) {
        int s = border[k] * rows, m = n - s < rows ? n - s : rows, L = 1;
        for (int i = 0; i < m; i++)
            if (ex[ord[s + i]].n > L) L = ex[ord[s + i]].n;
        batch_alloc(&bs[k], m, L, pad);
        for (int i = 0; i < m; i++) place(&bs[k], &ex[ord[s + i]], ord[s + i], i * L);
    }
    free(ord);
    free(border);
    *out = bs;
    *n_batches = nb;
    return FT_OK;
}

int ds_batches_packed(const ds_example *ex, int n, int row_len, int rows, uint64_t seed, int32_t pad,
                      ds_batch **out, int *n_batches, ft_error *e) {
    *out = NULL;
    *n_batches = 0;
    if (rows <= 0 || row_len <= 0) return ft_fail(e, FT_EINPUT, "batch: rows (%d) and row length (%d) must be positive", rows, row_len);
    for (int i = 0; i < n; i++)
        if (ex[i].n > row_len)
            return ft_fail(e, FT_EINPUT, "%s: example of %d tokens does not fit a packed row of %d (truncate to max_length first)",
                           ex[i].where, ex[i].n, row_len);
    int *ord = ft_xmalloc((size_t)(n ? n : 1) * sizeof *ord);
    for (int i = 0; i < n; i++) ord[i] = i;
    g_ex = ex;
    qsort(ord, (size_t)n, sizeof *ord, by_len_desc);
    /* best fit decreasing: each example into the open row with the least room that still fits */
    int nrows = 0, cap = 16;
    int *room = ft_xmalloc((size_t)cap * sizeof *room), *row_of = ft_xmalloc((size_t)(n ? n : 1) * sizeof *row_of);
    for (int k = 0; k < n; k++) {
        int x = ord[k], best = -1;
        for (int j = 0; j < nrows; j++)
            if (room[j] >= ex[x].n && (best < 0 || room[j] < room[best])) best = j;
        if (best < 0) {
            if (nrows == cap) room = ft_xrealloc(room, (size_t)(cap *= 2) * sizeof *room);
            room[nrows] = row_len;
            best = nrows++;
        }
        room[best] -= ex[x].n;
        row_of[x] = best;
    }
    ft_rng r;
    ft_rng_seed(&r, seed);
    int *rord = ft_xmalloc((size_t)(nrows ? nrows : 1) * sizeof *rord);
    for (int j = 0; j < nrows; j++) rord[j] = j;
    shuffle(rord, nrows, &r);
    int *slot = ft_xmalloc((size_t)(nrows ? nrows : 1) * sizeof *slot); /* row -> position in batches */
    for (int j = 0; j < nrows; j++) slot[rord[j]] = j;
    int nb = (nrows + rows - 1) / rows;
    ds_batch *bs = ft_xcalloc((size_t)(nb ? nb : 1), sizeof *bs);
    for (int k = 0; k < nb; k++) batch_alloc(&bs[k], nrows - k * rows < rows ? nrows - k * rows : rows, row_len, pad);
    int *fill = ft_xcalloc((size_t)(nrows ? nrows : 1), sizeof *fill);
    for (int k = 0; k < n; k++) { /* in length order, so rows fill longest first */
        int x = ord[k], j = row_of[x], s = slot[j];
        ds_batch *b = &bs[s / rows];
        place(b, &ex[x], x, (s % rows) * row_len + fill[j]);
        fill[j] += ex[x].n;
    }
    free(ord), free(room), free(row_of), free(rord), free(slot), free(fill);
    *out = bs;
    *n_batches = nb;
    return FT_OK;
}

void ds_batches_free(ds_batch *b, int n) {
    if (!b) return;
    for (int k = 0; k < n; k++) {
        free(b[k].ids);
        free(b[k].targets);
        free(b[k].pos);
        free(b[k].doc_start);
        free(b[k].sample);
        free(b[k].excl_start);
        free(b[k].excl_end);
    }
    free(b);
}
