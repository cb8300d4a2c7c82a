#include "datasets/dataset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/reader.h"

/* one oasst message row */
typedef struct {
    char *id, *parent, *tree, *text;
    int assistant, deleted, has_rank;
    double rank;
    long line;
    int parent_idx;   /* index of the parent row, -1 root, -2 missing */
    int usable;       /* not deleted, reachable from a root */
    int *kids;
    int nkids, capkids;
} oa_row;

struct ds_dataset {
    ds_reader *r;
    ds_format fmt;
    ds_on_bad on_bad;
    ds_read_stats st;
    cJSON *pending; /* the first record, read for detection */
    long pending_line;
    /* oasst: converted items, handed out in order */
    ds_conv *convs;
    ds_pref *prefs;
    int n_items, next_item;
};

int ds_parse_on_bad(const char *s, ds_on_bad *out, ft_error *e) {
    if (strcmp(s, "fail") == 0) *out = DS_BAD_FAIL;
    else if (strcmp(s, "skip") == 0) *out = DS_BAD_SKIP;
    else return ft_fail(e, FT_EINPUT, "on_bad_record '%s': expected 'fail' or 'skip'", s);
    return FT_OK;
}

ds_format ds_dataset_format(const ds_dataset *d) { return d->fmt; }
int ds_dataset_is_preference(const ds_dataset *d) { return ds_format_is_preference(d->fmt); }
const ds_read_stats *ds_dataset_stats(const ds_dataset *d) { return &d->st; }

/* Count a bad record under the policy: FT_OK to go on, else the error. */
static int on_bad(ds_dataset *d, int reason, int rc, ft_error *e) {
    if (d->on_bad == DS_BAD_FAIL || rc != FT_EINPUT) return rc;
    d->st.skipped[reason]++;
    d->st.skipped_total++;
    if (!d->st.first_skip[0]) snprintf(d->st.first_skip, sizeof d->st.first_skip, "%.500s", e->msg);
    return FT_OK;
}

/* next raw record, applying the policy to unparseable ones */
static int next_raw(ds_dataset *d, cJSON **rec, char *where, size_t wn, ft_error *e) {
    for (;;) {
        long line;
        if (d->pending) {
            *rec = d->pending;
            line = d->pending_line;
            d->pending = NULL;
        } else {
            int rc = ds_reader_next(d->r, rec, &line, e);
            if (rc) {
                if (!ds_reader_can_continue(d->r)) return rc;
                d->st.records++;
                int reason = strstr(e->msg, "longer than") ? DS_SKIP_TOO_LONG : DS_SKIP_JSON;
                if ((rc = on_bad(d, reason, rc, e))) return rc;
                continue;
            }
            if (!*rec) return FT_OK;
        }
        d->st.records++;
        snprintf(where, wn, "%s:%ld", ds_reader_path(d->r), line);
        return FT_OK;
    }
}

static void oa_free(oa_row *rows, int n) {
    for (int i = 0; i < n; i++) {
        free(rows[i].id);
        free(rows[i].parent);
        free(rows[i].tree);
        free(rows[i].text);
        free(rows[i].kids);
    }
    free(rows);
}

static int oa_str(const cJSON *rec, const char *k, int optional, char **out, const char *where, int *reason, ft_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, k);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) {
        if (optional) return FT_OK;
        *reason = DS_SKIP_FIELD;
        return ft_fail(e, FT_EINPUT, "%s: missing field '%s'", where, k);
    }
    if (!cJSON_IsString(v)) {
        *reason = DS_SKIP_FIELD;
        return ft_fail(e, FT_EINPUT, "%s: field '%s' must be a string", where, k);
    }
    size_t off;
    if (!ds_utf8_valid(v->valuestring, strlen(v->valuestring), &off)) {
        *reason = DS_SKIP_UTF8;
        return ft_fail(e, FT_EINPUT, "%s: field '%s' has invalid UTF-8 at byte %zu", where, k, off);
    }
    *out = ft_xstrdup(v->valuestring);
    return FT_OK;
}

static int oa_parse(const cJSON *rec, const char *where, oa_row *o, int *reason, ft_error *e) {
    memset(o, 0, sizeof *o);
    char *role = NULL;
    int rc;
    if (!cJSON_IsObject(rec)) {
        *reason = DS_SKIP_JSON;
        return ft_fail(e, FT_EINPUT, "%s: record is not a JSON object", where);
    }
    if ((rc = oa_str(rec, "message_id", 0, &o->id, where, reason, e)) ||
        (rc = oa_str(rec, "parent_id", 1, &o->parent, where, reason, e)) ||
        (rc = oa_str(rec, "message_tree_id", 0, &o->tree, where, reason, e)) ||
        (rc = oa_str(rec, "text", 0, &o->text, where, reason, e)) ||
        (rc = oa_str(rec, "role", 0, &role, where, reason, e)))
        goto fail;
    if (strcmp(role, "assistant") == 0) o->assistant = 1;
    else if (strcmp(role, "prompter") != 0) {
        *reason = DS_SKIP_ROLE;
        rc = ft_fail(e, FT_EINPUT, "%s: field 'role' is '%s'; expected 'prompter' or 'assistant'", where, role);
        goto fail;
    }
    const cJSON *rk = cJSON_GetObjectItemCaseSensitive(rec, "rank");
    if (rk && cJSON_IsNumber(rk)) o->has_rank = 1, o->rank = rk->valuedouble;
    else if (rk && !cJSON_IsNull(rk)) {
        *reason = DS_SKIP_FIELD;
        rc = ft_fail(e, FT_EINPUT, "%s: field 'rank' must be a number or null", where);
        goto fail;
    }
    const cJSON *del = cJSON_GetObjectItemCaseSensitive(rec, "deleted");
    if (del && !cJSON_IsBool(del) && !cJSON_IsNull(del)) {
        *reason = DS_SKIP_FIELD;
        rc = ft_fail(e, FT_EINPUT, "%s: field 'deleted' must be true or false", where);
        goto fail;
    }
    o->deleted = cJSON_IsTrue(del);
    free(role);
    return FT_OK;
fail:
    free(role);
    free(o->id), free(o->parent), free(o->tree), free(o->text);
    memset(o, 0, sizeof *o);
    return rc;
}

/* The lowest (best) or highest ranked child of the wanted role; unranked
 * children are only taken when no sibling has a rank (then the first in file
 * order). *n_ranked = how many candidates have a rank. -1 if none. */
static int oa_pick(const oa_row *rows, const oa_row *p, int assistant, int best, int *n_ranked) {
    int pick = -1, first = -1;
    *n_ranked = 0;
    for (int k = 0; k < p->nkids; k++) {
        const oa_row *c = &rows[p->kids[k]];
        if (!c->usable || c->assistant != assistant) continue;
        if (first < 0) first = p->kids[k];
        if (!c->has_rank) continue;
        (*n_ranked)++;
        if (pick < 0 || (best ? c->rank < rows[pick].rank : c->rank > rows[pick].rank)) pick = p->kids[k];
    }
    return pick >= 0 ? pick : first;
}

static void oa_path(const oa_row *rows, int leaf, ds_conv *c) {
    int depth = 0;
    for (int i = leaf; i >= 0; i = rows[i].parent_idx) depth++;
    int *path = ft_xmalloc((size_t)depth * sizeof *path);
    int k = depth;
    for (int i = leaf; i >= 0; i = rows[i].parent_idx) path[--k] = i;
    for (k = 0; k < depth; k++) ds_conv_add(c, rows[path[k]].assistant ? DS_ASSISTANT : DS_USER, rows[path[k]].text);
    free(path);
}


/* sort helper: indices by id string */
static oa_row *g_rows;
static int cmp_id(const void *a, const void *b) {
    return strcmp(g_rows[*(const int *)a].id, g_rows[*(const int *)b].id);
}

static int oa_find(const oa_row *rows, const int *sorted, int n, const char *id) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(rows[sorted[mid]].id, id);
        if (c == 0) return sorted[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static void oa_mark(oa_row *rows, int i, int usable, long *count) {
    /* iterative DFS over the subtree; usable=0 counts every message in it */
    int cap = 64, top = 0;
    int *stack = ft_xmalloc((size_t)cap * sizeof *stack);
    stack[top++] = i;
    while (top) {
        int x = stack[--top];
        rows[x].usable = usable;
        if (count) (*count)++;
        for (int k = 0; k < rows[x].nkids; k++) {
            if (rows[rows[x].kids[k]].deleted) continue; /* counted as deleted on its own */
            if (top == cap) stack = ft_xrealloc(stack, (size_t)(cap *= 2) * sizeof *stack);
            stack[top++] = rows[x].kids[k];
        }
    }
    free(stack);
}

static int oa_load(ds_dataset *d, ft_error *e) {
    int n = 0, cap = 256;
    oa_row *rows = ft_xmalloc((size_t)cap * sizeof *rows);
    char where[300];
    int rc;
    for (;;) {
        cJSON *rec;
        if ((rc = next_raw(d, &rec, where, sizeof where, e))) goto out;
        if (!rec) break;
        int reason = DS_SKIP_FIELD;
        if (n == cap) rows = ft_xrealloc(rows, (size_t)(cap *= 2) * sizeof *rows);
        rc = oa_parse(rec, where, &rows[n], &reason, e);
        cJSON_Delete(rec);
        if (rc) {
            if ((rc = on_bad(d, reason, rc, e))) goto out;
            continue;
        }
        sscanf(strrchr(where, ':') + 1, "%ld", &rows[n].line);
        n++;
    }
    /* link parents */
    int *sorted = ft_xmalloc((size_t)(n ? n : 1) * sizeof *sorted);
    for (int i = 0; i < n; i++) sorted[i] = i;
    g_rows = rows;
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_id);
    for (int i = 0; i < n; i++) {
        oa_row *o = &rows[i];
        o->parent_idx = -1;
        if (o->parent) {
            int p = oa_find(rows, sorted, n, o->parent);
            o->parent_idx = p >= 0 ? p : -2;
            if (p >= 0) {
                oa_row *pp = &rows[p];
                if (pp->nkids == pp->capkids) pp->kids = ft_xrealloc(pp->kids, (size_t)(pp->capkids = pp->capkids ? pp->capkids * 2 : 4) * sizeof(int));
                pp->kids[pp->nkids++] = i;
            }
        }
    }
    free(sorted);
    /* usable = reachable from a non-deleted root through non-deleted messages */
    long deleted = 0, missing = 0;
    for (int i = 0; i < n; i++)
        if (rows[i].deleted) {
            long c = 0;
            oa_mark(rows, i, 0, &c);
            deleted += c;
        }
    for (int i = 0; i < n; i++)
        if (!rows[i].deleted && rows[i].parent_idx == -1) oa_mark(rows, i, 1, NULL);
    for (int i = 0; i < n; i++)
        if (!rows[i].deleted && rows[i].parent_idx == -2) {
            long c = 0;
            oa_mark(rows, i, 0, &c);
            missing += c;
        }
    /* deleted subtrees and rows whose parent is not in the file (e.g. a
     * language filter dropped it) are normal in oasst exports: they are left
     * out under either policy and counted, never an error */
    if (deleted || missing) {
        d->st.skipped[DS_SKIP_DELETED] += deleted;
        d->st.skipped[DS_SKIP_MISSING_PARENT] += missing;
        d->st.skipped_total += deleted + missing;
        if (!d->st.first_skip[0])
            snprintf(d->st.first_skip, sizeof d->st.first_skip, "%s: %ld deleted / %ld missing-parent oasst messages left out",
                     ds_reader_path(d->r), deleted, missing);
    }
    int icap = 16;
    if (d->fmt == DS_FMT_OASST) d->convs = ft_xmalloc((size_t)icap * sizeof *d->convs);
    else d->prefs = ft_xmalloc((size_t)icap * sizeof *d->prefs);
    for (int i = 0; i < n; i++) {
        if (!rows[i].usable) continue;
        if (d->n_items == icap) {
            icap *= 2;
            if (d->convs) d->convs = ft_xrealloc(d->convs, (size_t)icap * sizeof *d->convs);
            else d->prefs = ft_xrealloc(d->prefs, (size_t)icap * sizeof *d->prefs);
        }
        int unr;
        if (d->fmt == DS_FMT_OASST) {
            if (rows[i].parent_idx != -1) continue;
            /* one conversation per tree: from the root, follow the best-ranked reply */
            int x = i, last_asst = -1;
            while (x >= 0) {
                if (rows[x].assistant) last_asst = x;
                x = oa_pick(rows, &rows[x], !rows[x].assistant, 1, &unr);
            }
            if (last_asst < 0) {
                rc = ft_fail(e, FT_EINPUT, "%s:%ld: oasst tree %s has no assistant reply", ds_reader_path(d->r), rows[i].line, rows[i].tree);
                if ((rc = on_bad(d, DS_SKIP_NO_REPLY, rc, e))) goto out2;
                continue;
            }
            ds_conv *c = &d->convs[d->n_items];
            memset(c, 0, sizeof *c);
            snprintf(c->where, sizeof c->where, "%s:%ld", ds_reader_path(d->r), rows[i].line);
            oa_path(rows, last_asst, c);
            int reason;
            if ((rc = ds_conv_check(c, DS_ASSISTANT, &reason, e))) {
                ds_conv_free(c);
                if ((rc = on_bad(d, reason, rc, e))) goto out2;
                continue;
            }
            d->n_items++;
        } else {
            if (rows[i].assistant) continue;
            int nas = 0;
            for (int k = 0; k < rows[i].nkids; k++) nas += rows[rows[i].kids[k]].usable && rows[rows[i].kids[k]].assistant;
            if (nas < 2) continue;
            int best = oa_pick(rows, &rows[i], 1, 1, &unr), worst = oa_pick(rows, &rows[i], 1, 0, &unr);
            if (unr < 2 || rows[best].rank == rows[worst].rank) {
                rc = ft_fail(e, FT_EINPUT, "%s:%ld: oasst message %s has %d replies but not two with distinct ranks", ds_reader_path(d->r), rows[i].line, rows[i].id, nas);
                if ((rc = on_bad(d, DS_SKIP_UNRANKED, rc, e))) goto out2;
                continue;
            }
            ds_pref *p = &d->prefs[d->n_items];
            memset(p, 0, sizeof *p);
            snprintf(p->prompt.where, sizeof p->prompt.where, "%s:%ld", ds_reader_path(d->r), rows[i].line);
            oa_path(rows, i, &p->prompt);
            p->chosen = ft_xstrdup(rows[best].text);
            p->rejected = ft_xstrdup(rows[worst].text);
            int reason;
            if ((rc = ds_conv_check(&p->prompt, DS_USER, &reason, e)) ||
                (rc = ds_conv_check(&(ds_conv){.msgs = (ds_msg[]){{DS_USER, "x"}, {DS_ASSISTANT, p->chosen}, {DS_USER, "x"}, {DS_ASSISTANT, p->rejected}}, .n = 4}, DS_ASSISTANT, &reason, e))) {
                if (reason == DS_SKIP_EMPTY_TURN) snprintf(e->msg, sizeof e->msg, "%s: a reply is empty", p->prompt.where);
                ds_pref_free(p);
                if ((rc = on_bad(d, reason, rc, e))) goto out2;
                continue;
            }
            d->n_items++;
        }
    }
    rc = FT_OK;
out2:
out:
    oa_free(rows, n);
    return rc;
}

int ds_open(const char *path, const char *format, ds_on_bad on_bad_, ds_dataset **out, ft_error *e) {
    *out = NULL;
    ds_dataset *d = ft_xcalloc(1, sizeof *d);
    d->on_bad = on_bad_;
    int rc = ds_reader_open(path, &d->r, e);
    if (rc) {
        free(d);
        return rc;
    }
    if (format && strcmp(format, "auto") != 0) {
        if ((rc = ds_format_from_name(format, &d->fmt, e))) goto fail;
    } else {
        /* detect from the first record that parses */
        char where[300];
        cJSON *rec;
        if ((rc = next_raw(d, &rec, where, sizeof where, e))) goto fail;
        if (!rec) {
            rc = ft_fail(e, FT_EINPUT, "%s: no valid record to detect the format from", path);
            goto fail;
        }
        d->st.records--; /* counted again when handed out */
        d->pending = rec;
        d->pending_line = atol(strrchr(where, ':') + 1);
        if ((rc = ds_format_detect(rec, where, &d->fmt, e))) goto fail;
    }
    if (d->fmt == DS_FMT_OASST || d->fmt == DS_FMT_OASST_PREFERENCE)
        if ((rc = oa_load(d, e))) goto fail;
    *out = d;
    return FT_OK;
fail:
    ds_close(d);
    return rc;
}

void ds_close(ds_dataset *d) {
    if (!d) return;
    ds_reader_close(d->r);
    if (d->pending) cJSON_Delete(d->pending);
    for (int i = d->next_item; i < d->n_items; i++) {
        if (d->convs) ds_conv_free(&d->convs[i]);
        if (d->prefs) ds_pref_free(&d->prefs[i]);
    }
    free(d->convs);
    free(d->prefs);
    free(d);
}

/* Convert one streamed record into *out (a ds_conv or a ds_pref). */
typedef int (*record_fn)(ds_format f, const cJSON *rec, const char *where, void *out, int *reason, ft_error *e);

static int conv_of(ds_format f, const cJSON *rec, const char *where, void *out, int *reason, ft_error *e) {
    return ds_record_to_conv(f, rec, where, out, reason, e);
}

static int pref_of(ds_format f, const cJSON *rec, const char *where, void *out, int *reason, ft_error *e) {
    return ds_record_to_pref(f, rec, where, out, reason, e);
}

/* The next good record of a streamed format, bad ones handled per on_bad_record. */
static int next_record(ds_dataset *d, record_fn convert, void *out, int *done, ft_error *e) {
    for (;;) {
        char where[300];
        cJSON *rec;
        int rc = next_raw(d, &rec, where, sizeof where, e), reason = DS_SKIP_FIELD;
        if (rc) return rc;
        if (!rec) return *done = 1, FT_OK;
        rc = convert(d->fmt, rec, where, out, &reason, e);
        cJSON_Delete(rec);
        if (!rc) {
            d->st.yielded++;
            return FT_OK;
        }
        if ((rc = on_bad(d, reason, rc, e))) return rc;
    }
}

int ds_next_conv(ds_dataset *d, ds_conv *out, int *done, ft_error *e) {
    *done = 0;
    if (ds_format_is_preference(d->fmt))
        return ft_fail(e, FT_EINPUT, "%s: format '%s' gives preference pairs, not SFT conversations", ds_reader_path(d->r), ds_format_name(d->fmt));
    if (d->fmt == DS_FMT_OASST) {
        if (d->next_item >= d->n_items) return *done = 1, FT_OK;
        *out = d->convs[d->next_item++];
        d->st.yielded++;
        return FT_OK;
    }
    return next_record(d, conv_of, out, done, e);
}

int ds_next_pref(ds_dataset *d, ds_pref *out, int *done, ft_error *e) {
    *done = 0;
    if (!ds_format_is_preference(d->fmt))
        return ft_fail(e, FT_EINPUT, "%s: format '%s' gives SFT conversations, not preference pairs", ds_reader_path(d->r), ds_format_name(d->fmt));
    if (d->fmt == DS_FMT_OASST_PREFERENCE) {
        if (d->next_item >= d->n_items) return *done = 1, FT_OK;
        *out = d->prefs[d->next_item++];
        d->st.yielded++;
        return FT_OK;
    }
    return next_record(d, pref_of, out, done, e);
}
