/* classify: classification rows (text + label, or the LMSYS pair layout) from .jsonl/.json(.gz) or
 * .csv(.gz) files to token ids and a target (contract in classify.h; rules in docs/datasets.md). */
#include "datasets/classify.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/csv.h"
#include "datasets/format.h"
#include "datasets/reader.h"

enum { SLOT_LIT = -1, SLOT_PROMPT = 0, SLOT_A = 1, SLOT_B = 2, SLOT_TEXT = 3 };
#define CLS_MAX_TAIL 64 /* bytes of a part's tail moved to the literal after it */

/* The template in pieces: literals and parts, each tokenized alone. A boundary between two pieces is put
 * where pre-tokenizers split anyway, before the whitespace in front of a word: a literal's trailing
 * whitespace, or its last word with the whitespace before it, goes to the start of the part after it
 * (lead); a part's last word with the whitespace around it goes to the start of the literal after it,
 * which is tokenized again for that row. So no merge crosses a boundary (" \n\n", " <", ":\"" and
 * ".\n\n" are single tokens for some byte-level tokenizers). */
typedef struct cls_piece {
    int slot;     /* SLOT_LIT or a part */
    char *text;   /* a literal: its text, less the tail moved to the part after it; a part: that tail (lead) */
    size_t len;
    int32_t *ids; /* a literal's ids */
    size_t n;
} cls_piece;

typedef struct cls_ids {
    int32_t *v;
    size_t n;
} cls_ids;

/* one field of a row: a CSV cell or a JSON value */
typedef struct cls_val {
    int present;
    const char *s; /* CSV cell, or a JSON string's value */
    size_t len;
    const cJSON *j; /* JSON value (NULL for CSV) */
    long line, col; /* col 0: unknown (JSON) */
    const char *name;
} cls_val;

typedef struct cls_ctx {
    const ds_cls_opts *o;
    const ft_tokenizer *tok;
    const char *path;
    int csv;
    ds_csv *cr;
    ds_reader *jr;
    const ds_csv_row *row; /* CSV */
    const cJSON *rec;      /* JSON */
    long line;
    /* the layout's column names and (CSV) their indices */
    const char *text, *label, *id, *prompt, *ra, *rb, *win[3];
    int ci_text, ci_label, ci_id, ci_prompt, ci_ra, ci_rb, ci_win[3];
    cls_piece *pieces;
    int npieces;
    cls_ids pre, post; /* post-processor tokens around a text, EOS appended to post when add_eos */
    long fixed;        /* tokens every example has besides its parts */
    double share[4];
    ds_cls_stats *st;
} cls_ctx;

int ds_cls_layout_parse(const char *s, ds_cls_layout *out, ft_error *e) {
    if (s && strcmp(s, "text") == 0) *out = DS_CLS_TEXT;
    else if (s && strcmp(s, "lmsys") == 0) *out = DS_CLS_LMSYS;
    else return ft_fail(e, FT_EINPUT, "classification layout '%s': expected text or lmsys", s ? s : "(null)");
    return FT_OK;
}

void ds_cls_unswap_probs(float *probs, int num_labels) {
    if (num_labels < 2) return;
    float t = probs[0];
    probs[0] = probs[1];
    probs[1] = t;
}

void ds_cls_free(ds_cls_example *x, int n) {
    if (!x) return;
    for (int i = 0; i < n; i++) {
        free(x[i].ids);
        free(x[i].probs);
    }
    free(x);
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static void ids_push(cls_ids *a, const int32_t *v, size_t n) {
    if (!n) return;
    a->v = ft_xrealloc(a->v, (a->n + n) * sizeof *a->v);
    memcpy(a->v + a->n, v, n * sizeof *v);
    a->n += n;
}

/* ---------- setup ---------- */

/* The tokens the post-processor puts around a text: encode "a" with and without them. */
static int special_frame(cls_ctx *c, ft_error *e) {
    int32_t *with = NULL, *plain = NULL;
    size_t nw = 0, np = 0;
    int rc = tok_encode(c->tok, "a", 1, 1, &with, &nw, e);
    if (!rc) rc = tok_encode(c->tok, "a", 1, 0, &plain, &np, e);
    if (!rc) {
        size_t k = 0;
        while (k + np <= nw && memcmp(with + k, plain, np * sizeof *plain) != 0) k++;
        if (k + np > nw) {
            rc = ft_fail(e, FT_EINTERNAL, "tokenizer: the post-processor's output does not hold the text's ids");
        } else {
            ids_push(&c->pre, with, k);
            ids_push(&c->post, with + k + np, nw - k - np);
        }
    }
    free(with);
    free(plain);
    if (rc) return rc;
    if (c->o->add_eos) {
        int32_t eos = tok_eos_id(c->tok);
        if (eos < 0) return ft_fail(e, FT_EINPUT, "classification: add_eos is set but the tokenizer has no EOS token");
        if (c->post.n == 0 || c->post.v[c->post.n - 1] != eos) ids_push(&c->post, &eos, 1);
    }
    return FT_OK;
}

static int is_ws(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'; }

static cls_piece *add_piece(cls_ctx *c, int slot, const char *text, size_t len) {
    c->pieces = ft_xrealloc(c->pieces, (size_t)(c->npieces + 1) * sizeof *c->pieces);
    cls_piece *x = &c->pieces[c->npieces++];
    memset(x, 0, sizeof *x);
    x->slot = slot;
    x->text = ft_xmalloc(len + 1);
    memcpy(x->text, text, len);
    x->text[len] = 0;
    x->len = len;
    return x;
}

static int parse_template(cls_ctx *c, ft_error *e) {
    const char *t = c->o->pair_template ? c->o->pair_template : DS_CLS_DEFAULT_PAIR_TEMPLATE;
    static const char *names[3] = {"{prompt}", "{response_a}", "{response_b}"};
    int seen[3] = {0, 0, 0};
    const char *p = t, *lit = t;
    for (;;) {
        int slot = -1;
        if (*p == '{')
            for (int k = 0; k < 3; k++)
                if (strncmp(p, names[k], strlen(names[k])) == 0) slot = k;
        if (slot < 0 && *p) {
            p++;
            continue;
        }
        size_t n = (size_t)(p - lit), ws = 0; /* ws: the bytes moved to the part */
        if (slot >= 0 && n > 0 && is_ws(lit[n - 1])) {
            while (ws < n && is_ws(lit[n - 1 - ws])) ws++;
        } else if (slot >= 0) {
            while (ws < n && !is_ws(lit[n - 1 - ws])) ws++;
            if (ws < n) ws++;
        }
        if (n > ws) {
            cls_piece *x = add_piece(c, SLOT_LIT, lit, n - ws);
            int rc = c->npieces == 1 ? tok_encode(c->tok, x->text, x->len, 0, &x->ids, &x->n, e)
                                     : tok_encode_cont(c->tok, x->text, x->len, &x->ids, &x->n, e);
            if (rc) return ft_error_prefix(e, "pair_template");
        }
        if (slot < 0) break;
        if (seen[slot]++) return ft_fail(e, FT_EINPUT, "pair_template: %s appears twice", names[slot]);
        add_piece(c, slot, lit + n - ws, ws);
        p += strlen(names[slot]);
        lit = p;
    }
    if (!seen[SLOT_A] || !seen[SLOT_B])
        return ft_fail(e, FT_EINPUT, "pair_template \"%s\": needs {response_a} and {response_b} (and may hold {prompt})",
                       t);
    return FT_OK;
}

static int check_opts(const ds_cls_opts *o, ft_error *e) {
    if (o->num_labels < 1) return ft_fail(e, FT_EINPUT, "classification: num_labels must be at least 1");
    if (o->layout == DS_CLS_LMSYS && o->num_labels != 3)
        return ft_fail(e, FT_EINPUT,
                       "classification: the lmsys layout has 3 labels (model_a, model_b, tie); num_labels is %d",
                       o->num_labels);
    if (o->layout != DS_CLS_LMSYS && o->swap != DS_CLS_SWAP_NONE)
        return ft_fail(e, FT_EINPUT, "classification: swapping responses needs the lmsys layout");
    if (!(o->prompt_share >= 0 && o->prompt_share <= 1) || !(o->response_share >= 0 && o->response_share <= 1))
        return ft_fail(e, FT_EINPUT, "classification: prompt_share and response_share must be in [0, 1] (0: default)");
    if (o->labels)
        for (int i = 0; i < o->num_labels; i++)
            if (!o->labels[i]) return ft_fail(e, FT_EINPUT, "classification: label name %d is missing", i);
    return FT_OK;
}

/* CSV: the columns the layout needs, by index; a missing one ends the file. */
static int csv_column(cls_ctx *c, const char *name, const char *what, int required, int *ci, ft_error *e) {
    *ci = ds_csv_col_find(c->cr, name);
    if (*ci >= 0 || !required) return FT_OK;
    char cols[1024];
    ds_csv_col_list(c->cr, cols, sizeof cols);
    return ft_fail(e, FT_EINPUT, "%s:1: missing column '%s' (%s); the header has: %s", c->path, name, what, cols);
}

static int csv_columns(cls_ctx *c, ft_error *e) {
    const ds_cls_opts *o = c->o;
    int rc;
    if (o->layout == DS_CLS_TEXT) {
        if ((rc = csv_column(c, c->text, "the text", 1, &c->ci_text, e))) return rc;
        if ((rc = csv_column(c, c->label, "the label", o->require_labels, &c->ci_label, e))) return rc;
        return csv_column(c, c->id, "the id", o->id_field != NULL, &c->ci_id, e);
    }
    if ((rc = csv_column(c, c->prompt, "the prompt", 1, &c->ci_prompt, e))) return rc;
    if ((rc = csv_column(c, c->ra, "response a", 1, &c->ci_ra, e))) return rc;
    if ((rc = csv_column(c, c->rb, "response b", 1, &c->ci_rb, e))) return rc;
    int found = 0;
    for (int k = 0; k < 3; k++) found += ds_csv_col_find(c->cr, c->win[k]) >= 0;
    static const char *what[3] = {"label: model a won", "label: model b won", "label: a tie"};
    for (int k = 0; k < 3; k++)
        if ((rc = csv_column(c, c->win[k], what[k], o->require_labels || found > 0, &c->ci_win[k], e))) return rc;
    return csv_column(c, c->id, "the id", o->id_col != NULL, &c->ci_id, e);
}

/* ---------- values ---------- */

static cls_val get(const cls_ctx *c, const char *name, int ci) {
    cls_val v = {0};
    v.name = name;
    v.line = c->line;
    if (c->csv) {
        if (ci < 0) return v;
        const ds_csv_field *f = &c->row->f[ci];
        v.present = 1;
        v.s = f->s;
        v.len = f->len;
        v.line = f->line;
        v.col = f->col;
        return v;
    }
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->rec, name);
    if (!j || cJSON_IsNull(j)) return v;
    v.present = 1;
    v.j = j;
    if (cJSON_IsString(j)) {
        v.s = j->valuestring;
        v.len = strlen(j->valuestring);
    }
    return v;
}

static int bad(const cls_ctx *c, const cls_val *v, ft_error *e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad(const cls_ctx *c, const cls_val *v, ft_error *e, const char *fmt, ...) {
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (v && v->col > 0)
        return ft_fail(e, FT_EINPUT, "%s:%ld:%ld: column '%s': %s", c->path, v->line, v->col, v->name, msg);
    if (v) return ft_fail(e, FT_EINPUT, "%s:%ld: field '%s': %s", c->path, v->line, v->name, msg);
    return ft_fail(e, FT_EINPUT, "%s:%ld: %s", c->path, c->line, msg);
}

static int missing(const cls_ctx *c, const cls_val *v, ft_error *e) {
    if (c->csv) return bad(c, v, e, "empty");
    return bad(c, NULL, e, "missing field '%s'", v->name);
}

static int text_utf8(const cls_ctx *c, const cls_val *v, const char *s, size_t n, ft_error *e) {
    size_t off;
    if (!ds_utf8_valid(s, n, &off)) return bad(c, v, e, "invalid UTF-8 at byte %zu", off);
    return FT_OK;
}

/* A number from a CSV cell or a JSON string: all of it, finite. */
static int parse_num(const char *s, size_t len, double *out) {
    if (!s || !len) return 0;
    char buf[64];
    if (len >= sizeof buf) return 0;
    memcpy(buf, s, len);
    buf[len] = 0;
    char *end;
    double d = strtod(buf, &end);
    while (*end == ' ') end++;
    if (end == buf || *end || !isfinite(d)) return 0;
    *out = d;
    return 1;
}

/* four hex digits at s, or -1 */
static long hex4(const char *s) {
    long v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = s[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Lone UTF-16 surrogate escapes (\uD83D without its pair; Python writes them, cJSON refuses them) become
 * \uFFFD, the same length. Returns the count; s is changed in place. */
static long fix_surrogates(char *s, size_t n) {
    long fixed = 0;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        if (!in_str) {
            if (s[i] == '"') in_str = 1;
            continue;
        }
        if (s[i] == '"') {
            in_str = 0;
        } else if (s[i] == '\\' && i + 1 < n) {
            if (s[i + 1] != 'u' || i + 6 > n) {
                i++;
                continue;
            }
            long u = hex4(s + i + 2);
            if (u < 0) {
                i++;
                continue;
            }
            int hi = u >= 0xD800 && u <= 0xDBFF, lo = u >= 0xDC00 && u <= 0xDFFF;
            if (hi) {
                long u2 = i + 12 <= n && s[i + 6] == '\\' && s[i + 7] == 'u' ? hex4(s + i + 8) : -1;
                if (u2 >= 0xDC00 && u2 <= 0xDFFF) {
                    i += 11; /* a proper pair */
                    continue;
                }
            }
            if (hi || lo) {
                memcpy(s + i, "\\uFFFD", 6);
                fixed++;
            }
            i += 5;
        }
    }
    return fixed;
}

/* A list of turns (a JSON array, or a string holding one) joined by "\n"; null turns read as "". */
static int turns(cls_ctx *c, const cls_val *v, char **out, ft_error *e) {
    *out = NULL;
    if (!v->present) return missing(c, v, e);
    cJSON *parsed = NULL;
    const cJSON *list = v->j;
    if (v->s) {
        char *tmp = ft_xmalloc(v->len + 1);
        memcpy(tmp, v->s, v->len);
        tmp[v->len] = 0;
        long nfix = fix_surrogates(tmp, v->len);
        const char *end = NULL;
        parsed = cJSON_ParseWithLengthOpts(tmp, v->len + 1, &end, 1); /* + its NUL: cJSON checks it */
        size_t off = end && end >= tmp ? (size_t)(end - tmp) : 0;
        free(tmp);
        if (!parsed) return bad(c, v, e, "unparsable JSON list (error near byte %zu of the value)", off);
        c->st->surrogates += nfix;
        list = parsed;
    }
    if (!cJSON_IsArray(list)) {
        cJSON_Delete(parsed);
        return bad(c, v, e, "expected a JSON list of turns (strings or null)");
    }
    size_t len = 0, cap = 256;
    char *s = ft_xmalloc(cap);
    int k = 0;
    const cJSON *x;
    long nulls = 0;
    cJSON_ArrayForEach(x, list) {
        const char *t = "";
        if (cJSON_IsNull(x)) nulls++;
        else if (cJSON_IsString(x)) t = x->valuestring;
        else {
            free(s);
            cJSON_Delete(parsed);
            return bad(c, v, e, "turn %d is neither a string nor null", k);
        }
        size_t tl = strlen(t);
        while (len + tl + 2 > cap) s = ft_xrealloc(s, cap *= 2);
        if (k++) s[len++] = '\n';
        memcpy(s + len, t, tl);
        len += tl;
    }
    s[len] = 0;
    cJSON_Delete(parsed);
    int rc = text_utf8(c, v, s, len, e);
    if (rc) {
        free(s);
        return rc;
    }
    c->st->nulls += nulls;
    *out = s;
    return FT_OK;
}

/* ---------- labels ---------- */

static int label_index(const cls_ctx *c, const cls_val *v, double d, float *probs, ft_error *e) {
    if (d != floor(d) || d < 0 || d >= c->o->num_labels)
        return bad(c, v, e, "label %g is not an index in [0, %d)", d, c->o->num_labels);
    probs[(int)d] = 1;
    return FT_OK;
}

static int label_soft(const cls_ctx *c, const cls_val *v, const cJSON *a, float *probs, ft_error *e) {
    int n = cJSON_GetArraySize(a), k = 0;
    if (n != c->o->num_labels)
        return bad(c, v, e, "soft label has %d probabilities, expected num_labels = %d", n, c->o->num_labels);
    double sum = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, a) {
        if (!cJSON_IsNumber(x) || !(x->valuedouble >= 0 && x->valuedouble <= 1))
            return bad(c, v, e, "soft label: probability %d is not a number in [0, 1]", k);
        probs[k++] = (float)x->valuedouble;
        sum += x->valuedouble;
    }
    if (fabs(sum - 1) > 1e-3) return bad(c, v, e, "soft label: the probabilities sum to %.6g, not 1", sum);
    return FT_OK;
}

static int text_label(cls_ctx *c, ds_cls_example *x, ft_error *e) {
    const ds_cls_opts *o = c->o;
    cls_val v = get(c, c->label, c->ci_label);
    if (!v.present || (c->csv && v.len == 0)) {
        if (o->require_labels) return missing(c, &v, e);
        return FT_OK;
    }
    x->has_label = 1;
    double d;
    if (o->num_labels == 1) {
        if (v.j && cJSON_IsNumber(v.j) && isfinite(v.j->valuedouble)) x->value = (float)v.j->valuedouble;
        else if (v.s && parse_num(v.s, v.len, &d)) x->value = (float)d;
        else return bad(c, &v, e, "expected a number (regression: num_labels = 1)");
        return FT_OK;
    }
    x->probs = ft_xcalloc((size_t)o->num_labels, sizeof *x->probs);
    if (v.j && cJSON_IsNumber(v.j)) return label_index(c, &v, v.j->valuedouble, x->probs, e);
    if (v.j && cJSON_IsArray(v.j)) return label_soft(c, &v, v.j, x->probs, e);
    if (!v.s) return bad(c, &v, e, "expected a label name, an index or a list of probabilities");
    if (o->labels)
        for (int i = 0; i < o->num_labels; i++)
            if (strlen(o->labels[i]) == v.len && memcmp(o->labels[i], v.s, v.len) == 0) {
                x->probs[i] = 1;
                return FT_OK;
            }
    if (parse_num(v.s, v.len, &d)) return label_index(c, &v, d, x->probs, e);
    if (v.len && v.s[0] == '[') {
        cJSON *a = cJSON_ParseWithLength(v.s, v.len);
        int rc = a && cJSON_IsArray(a) ? label_soft(c, &v, a, x->probs, e)
                                      : bad(c, &v, e, "unparsable list of probabilities");
        cJSON_Delete(a);
        return rc;
    }
    char names[512] = "";
    size_t o2 = 0;
    for (int i = 0; o->labels && i < o->num_labels && o2 + 1 < sizeof names; i++) {
        int k = snprintf(names + o2, sizeof names - o2, "%s%s", i ? ", " : "", o->labels[i]);
        if (k < 0) break;
        o2 += (size_t)k;
    }
    if (!o->labels) return bad(c, &v, e, "label '%.100s' is not an index (no label names are set)", v.s);
    return bad(c, &v, e, "label '%.100s' is not one of: %s", v.s, names);
}

/* winner_model_a, winner_model_b, winner_tie: one-hot 0/1 */
static int lmsys_label(cls_ctx *c, ds_cls_example *x, ft_error *e) {
    cls_val v[3];
    int found = 0;
    for (int k = 0; k < 3; k++) {
        v[k] = get(c, c->win[k], c->ci_win[k]);
        found += v[k].present && !(c->csv && v[k].len == 0);
    }
    if (found == 0 && !c->o->require_labels) return FT_OK;
    double d[3];
    for (int k = 0; k < 3; k++) {
        if (!v[k].present || (c->csv && v[k].len == 0)) return missing(c, &v[k], e);
        if (v[k].j && cJSON_IsBool(v[k].j)) d[k] = cJSON_IsTrue(v[k].j);
        else if (v[k].j && cJSON_IsNumber(v[k].j)) d[k] = v[k].j->valuedouble;
        else if (!v[k].s || !parse_num(v[k].s, v[k].len, &d[k])) return bad(c, &v[k], e, "expected 0 or 1");
    }
    int ones = 0, arg = 0;
    for (int k = 0; k < 3; k++) {
        if (d[k] != 0 && d[k] != 1)
            return bad(c, &v[k], e, "label not one-hot: %s = %g, %s = %g, %s = %g", c->win[0], d[0], c->win[1], d[1],
                       c->win[2], d[2]);
        if (d[k] == 1) ones++, arg = k;
    }
    if (ones != 1)
        return bad(c, NULL, e, "label not one-hot: %s = %g, %s = %g, %s = %g", c->win[0], d[0], c->win[1], d[1],
                   c->win[2], d[2]);
    x->has_label = 1;
    x->probs = ft_xcalloc(3, sizeof *x->probs);
    x->probs[arg] = 1;
    return FT_OK;
}

/* ---------- ids ---------- */

/* Keep per part: everything when it fits, else the budget shared by weight, a part's unused share going to
 * the others (water-filling), the remainder of the rounding to the first parts still cut. */
static void share_budget(const long *len, const double *w, int n, long budget, long *keep) {
    long total = 0;
    for (int i = 0; i < n; i++) total += keep[i] = len[i];
    if (budget < 0 || total <= budget) return;
    int active[8];
    for (int i = 0; i < n; i++) active[i] = 1;
    long rest = budget;
    for (int changed = 1; changed;) {
        changed = 0;
        double sw = 0;
        for (int i = 0; i < n; i++)
            if (active[i]) sw += w[i];
        for (int i = 0; i < n; i++) {
            if (!active[i] || (double)len[i] > floor((double)rest * w[i] / sw)) continue;
            active[i] = 0;
            rest -= len[i];
            changed = 1;
            break; /* recompute the weights */
        }
    }
    double sw = 0;
    for (int i = 0; i < n; i++)
        if (active[i]) sw += w[i];
    long used = 0;
    for (int i = 0; i < n; i++)
        if (active[i]) used += keep[i] = (long)floor((double)rest * w[i] / sw);
    for (int i = 0; i < n && used < rest; i++)
        if (active[i] && keep[i] < len[i]) keep[i]++, used++;
}

/* A part's ids. When a literal follows, the part's tail (its last word with the whitespace around it) is
 * left to that literal, which is then tokenized again with it for this row (lit). */
typedef struct cls_part {
    cls_ids ids;
    int slot;
    cls_ids lit; /* the next literal's ids with the part's tail before it, when the tail moved */
    long extra;  /* lit's tokens beyond the literal's own (>= 0): counted in the part's length */
} cls_part;

static int encode(const cls_ctx *c, const cls_val *v, const char *s, size_t n, int first, cls_ids *out,
                  ft_error *e) {
    int rc = first ? tok_encode(c->tok, s, n, 0, &out->v, &out->n, e) : tok_encode_cont(c->tok, s, n, &out->v, &out->n, e);
    if (rc == FT_EINPUT) return bad(c, v, e, "%s", e->msg);
    return rc;
}

/* piece i is a part holding text; a literal may follow */
static int encode_part(const cls_ctx *c, const cls_val *v, int i, const char *text, cls_part *out, ft_error *e) {
    const cls_piece *p = &c->pieces[i];
    size_t tn = strlen(text), n = p->len + tn;
    char *s = ft_xmalloc(n + 1);
    memcpy(s, p->text, p->len);
    memcpy(s + p->len, text, tn + 1);
    size_t core = n;
    const cls_piece *next = i + 1 < c->npieces && c->pieces[i + 1].slot == SLOT_LIT ? &c->pieces[i + 1] : NULL;
    if (next) {
        while (core > 0 && is_ws(s[core - 1])) core--;
        size_t w = core;
        while (w > 0 && !is_ws(s[w - 1])) w--;
        if (w > 0) w--;
        if (n - w <= CLS_MAX_TAIL) core = w; /* a longer "word" (a URL, base64) keeps its place */
    }
    int rc = encode(c, v, s, core, i == 0, &out->ids, e);
    if (!rc && core < n) {
        size_t wn = n - core;
        char *w = ft_xmalloc(wn + next->len + 1);
        memcpy(w, s + core, wn);
        memcpy(w + wn, next->text, next->len + 1);
        rc = encode(c, v, w, wn + next->len, 0, &out->lit, e);
        free(w);
        if (!rc && out->lit.n > next->n) out->extra = (long)(out->lit.n - next->n);
    }
    free(s);
    return rc;
}

static void part_free(cls_part *p) {
    free(p->ids.v);
    free(p->lit.v);
}

static void put(int32_t *dst, size_t *o, const int32_t *src, size_t n) {
    if (n) memcpy(dst + *o, src, n * sizeof *src);
    *o += n;
}

/* pieces (or the one text) -> x->ids within max_length */
static void assemble(cls_ctx *c, ds_cls_example *x, cls_part *parts, int nparts) {
    long len[4], keep[4];
    double w[4];
    for (int i = 0; i < nparts; i++) len[i] = (long)parts[i].ids.n + parts[i].extra, w[i] = c->share[parts[i].slot];
    long budget = c->o->max_length > 0 ? c->o->max_length - c->fixed : -1;
    share_budget(len, w, nparts, budget, keep);
    size_t total = c->pre.n + c->post.n;
    for (int i = 0; i < nparts; i++) {
        total += parts[i].ids.n + parts[i].lit.n;
        if (keep[i] < len[i]) c->st->truncated_parts++;
    }
    for (int i = 0; i < c->npieces; i++) total += c->pieces[i].n;
    x->ids = ft_xmalloc((total ? total : 1) * sizeof *x->ids);
    size_t o = 0;
    put(x->ids, &o, c->pre.v, c->pre.n);
    const cls_ids *lit = NULL; /* the next literal's ids for this row, when its part's tail moved there */
    for (int i = 0, pi = 0; i < c->npieces || (c->npieces == 0 && pi < nparts); i++) {
        const int32_t *src;
        size_t n;
        if (c->npieces && c->pieces[i].slot == SLOT_LIT) {
            src = lit ? lit->v : c->pieces[i].ids;
            n = lit ? lit->n : c->pieces[i].n;
            lit = NULL;
        } else {
            int whole = keep[pi] >= len[pi];
            src = parts[pi].ids.v;
            n = whole ? parts[pi].ids.n : (size_t)keep[pi] < parts[pi].ids.n ? (size_t)keep[pi] : parts[pi].ids.n;
            lit = whole && parts[pi].lit.v ? &parts[pi].lit : NULL;
            pi++;
        }
        put(x->ids, &o, src, n);
    }
    put(x->ids, &o, c->post.v, c->post.n);
    x->n = (int)o;
}

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void set_id(const cls_ctx *c, ds_cls_example *x, long row) {
    cls_val v = get(c, c->id, c->ci_id);
    if (v.j && cJSON_IsNumber(v.j)) snprintf(x->id, sizeof x->id, "%.17g", v.j->valuedouble);
    else if (v.s && v.len) snprintf(x->id, sizeof x->id, "%.*s", (int)(v.len < 127 ? v.len : 127), v.s);
    else snprintf(x->id, sizeof x->id, "%ld", row);
}

static int build_text(cls_ctx *c, ds_cls_example *x, ft_error *e) {
    cls_val v = get(c, c->text, c->ci_text);
    if (!v.present) return missing(c, &v, e);
    if (!v.s) return bad(c, &v, e, "expected a string");
    int rc = text_utf8(c, &v, v.s, v.len, e);
    if (!rc) rc = text_label(c, x, e);
    if (rc) return rc;
    cls_part part = {.slot = SLOT_TEXT};
    rc = encode(c, &v, v.s, v.len, 1, &part.ids, e);
    if (!rc) assemble(c, x, &part, 1);
    part_free(&part);
    return rc;
}

static int build_lmsys(cls_ctx *c, ds_cls_example *x, long row, ft_error *e) {
    cls_val v[3] = {get(c, c->prompt, c->ci_prompt), get(c, c->ra, c->ci_ra), get(c, c->rb, c->ci_rb)};
    char *text[3] = {NULL, NULL, NULL};
    int rc = FT_OK;
    for (int k = 0; k < 3 && !rc; k++) rc = turns(c, &v[k], &text[k], e);
    if (!rc) rc = lmsys_label(c, x, e);
    int swap = c->o->swap == DS_CLS_SWAP_ALL ||
               (c->o->swap == DS_CLS_SWAP_HALF && (mix64(c->o->seed ^ mix64((uint64_t)row + 1)) >> 63));
    cls_part parts[3];
    memset(parts, 0, sizeof parts);
    int np = 0;
    for (int i = 0; i < c->npieces && !rc; i++) {
        int slot = c->pieces[i].slot;
        if (slot == SLOT_LIT) continue;
        int src = swap && slot != SLOT_PROMPT ? (slot == SLOT_A ? SLOT_B : SLOT_A) : slot;
        parts[np].slot = slot;
        rc = encode_part(c, &v[src], i, text[src], &parts[np++], e);
    }
    if (!rc) {
        assemble(c, x, parts, np);
        if (swap) {
            x->swapped = 1;
            c->st->swapped++;
            if (x->probs) ds_cls_unswap_probs(x->probs, 3);
        }
    }
    for (int k = 0; k < 3; k++) free(text[k]), part_free(&parts[k]);
    return rc;
}

/* ---------- the file ---------- */

static int next_row(cls_ctx *c, int *done, int *can_continue, ft_error *e) {
    *done = 0;
    *can_continue = 0;
    if (c->csv) {
        int rc = ds_csv_next(c->cr, &c->row, e);
        if (rc) {
            *can_continue = ds_csv_can_continue(c->cr);
            return rc;
        }
        if (!c->row) *done = 1;
        else c->line = c->row->line;
        return FT_OK;
    }
    cJSON_Delete((cJSON *)c->rec);
    c->rec = NULL;
    cJSON *rec = NULL;
    int rc = ds_reader_next(c->jr, &rec, &c->line, e);
    if (rc) {
        *can_continue = ds_reader_can_continue(c->jr);
        return rc;
    }
    if (!rec) *done = 1;
    c->rec = rec;
    if (rec && !cJSON_IsObject(rec)) {
        *can_continue = 1;
        return ft_fail(e, FT_EINPUT, "%s:%ld: expected a JSON object per record", c->path, c->line);
    }
    return FT_OK;
}

int ds_cls_read(const char *path, const ds_cls_opts *o, const ft_tokenizer *tok, ds_cls_example **out, int *n,
                ds_cls_stats *st, ft_error *e) {
    *out = NULL;
    *n = 0;
    memset(st, 0, sizeof *st);
    int rc = check_opts(o, e);
    if (rc) return rc;
    cls_ctx c = {0};
    c.o = o;
    c.tok = tok;
    c.path = path;
    c.st = st;
    c.text = o->text_field ? o->text_field : "text";
    c.label = o->label_field ? o->label_field : "label";
    c.id = o->layout == DS_CLS_LMSYS ? (o->id_col ? o->id_col : "id") : (o->id_field ? o->id_field : "id");
    c.prompt = o->prompt_col ? o->prompt_col : "prompt";
    c.ra = o->response_a_col ? o->response_a_col : "response_a";
    c.rb = o->response_b_col ? o->response_b_col : "response_b";
    static const char *win[3] = {"winner_model_a", "winner_model_b", "winner_tie"};
    for (int k = 0; k < 3; k++) c.win[k] = o->winner_cols[k] ? o->winner_cols[k] : win[k];
    double ps = o->prompt_share > 0 ? o->prompt_share : 0.2, rs = o->response_share > 0 ? o->response_share : 0.4;
    c.share[SLOT_PROMPT] = ps;
    c.share[SLOT_A] = c.share[SLOT_B] = rs;
    c.share[SLOT_TEXT] = 1;
    c.ci_text = c.ci_label = c.ci_id = c.ci_prompt = c.ci_ra = c.ci_rb = -1;
    c.ci_win[0] = c.ci_win[1] = c.ci_win[2] = -1;
    ds_cls_example *ex = NULL;
    int nex = 0, cap = 0;

    rc = special_frame(&c, e);
    if (!rc && o->layout == DS_CLS_LMSYS) rc = parse_template(&c, e);
    if (rc) goto done;
    c.fixed = (long)(c.pre.n + c.post.n);
    for (int i = 0; i < c.npieces; i++)
        if (c.pieces[i].slot == SLOT_LIT) c.fixed += (long)c.pieces[i].n;
    if (o->max_length > 0 && o->max_length <= c.fixed) {
        rc = ft_fail(e, FT_EINPUT,
                     "classification: max_length %d leaves no room for the text: the template and special tokens "
                     "alone take %ld tokens",
                     o->max_length, c.fixed);
        goto done;
    }
    c.csv = ends_with(path, ".csv") || ends_with(path, ".csv.gz");
    rc = c.csv ? ds_csv_open(path, &c.cr, e) : ds_reader_open(path, &c.jr, e);
    if (!rc && c.csv) rc = csv_columns(&c, e);
    if (rc) goto done;

    for (;;) {
        int row_done, cont;
        rc = next_row(&c, &row_done, &cont, e);
        if (!rc && row_done) break;
        long row = st->rows++;
        ds_cls_example x;
        memset(&x, 0, sizeof x);
        if (!rc) {
            snprintf(x.where, sizeof x.where, "%s:%ld", path, c.line);
            rc = o->layout == DS_CLS_TEXT ? build_text(&c, &x, e) : build_lmsys(&c, &x, row, e);
            cont = 1;
            if (!rc && !x.has_label && o->require_labels) rc = bad(&c, NULL, e, "the row has no label");
        }
        if (rc) {
            free(x.ids);
            free(x.probs);
            if (rc != FT_EINPUT || !cont || o->on_bad != DS_BAD_SKIP) goto done;
            if (st->skipped++ == 0) snprintf(st->first_skip, sizeof st->first_skip, "%s", e->msg);
            rc = FT_OK;
            continue;
        }
        set_id(&c, &x, row);
        if (nex == cap) ex = ft_xrealloc(ex, (size_t)(cap = cap ? cap * 2 : 256) * sizeof *ex);
        ex[nex++] = x;
        st->examples++;
    }
    if (st->rows == 0 && c.csv) rc = ft_fail(e, FT_EINPUT, "%s: no data rows after the CSV header", path);

done:
    cJSON_Delete((cJSON *)c.rec);
    ds_csv_close(c.cr);
    ds_reader_close(c.jr);
    for (int i = 0; i < c.npieces; i++) free(c.pieces[i].ids), free(c.pieces[i].text);
    free(c.pieces);
    free(c.pre.v);
    free(c.post.v);
    if (rc) {
        ds_cls_free(ex, nex);
        return rc;
    }
    *out = ex;
    *n = nex;
    return FT_OK;
}
