#include "datasets/example.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ds_trunc_parse(const char *s, ds_trunc *out, ft_error *e) {
    if (strcmp(s, "keep_start") == 0) *out = DS_TRUNC_KEEP_START;
    else if (strcmp(s, "keep_end") == 0) *out = DS_TRUNC_KEEP_END;
    else return ft_fail(e, FT_EINPUT, "truncation '%s': expected keep_start or keep_end", s);
    return FT_OK;
}

int ds_overlong_parse(const char *s, ds_overlong *out, ft_error *e) {
    if (strcmp(s, "truncate") == 0) *out = DS_LONG_TRUNCATE;
    else if (strcmp(s, "drop") == 0) *out = DS_LONG_DROP;
    else return ft_fail(e, FT_EINPUT, "overlong '%s': expected truncate or drop", s);
    return FT_OK;
}

void ds_example_free(ds_example *x) {
    free(x->ids);
    free(x->trained);
    x->ids = NULL;
    x->trained = NULL;
    x->n = 0;
}

void ds_pref_example_free(ds_pref_example *x) {
    free(x->prompt);
    free(x->chosen);
    free(x->rejected);
    memset(x, 0, sizeof *x);
}

int ds_build_example(const tmpl *t, const ds_conv *c, const ft_tokenizer *tok, const ds_example_opts *o,
                     ds_example *out, int *kept, ds_example_stats *st, ft_error *e) {
    *kept = 0;
    tmpl_text r;
    tmpl_tokens tk;
    int rc = tmpl_render(t, c, tok_token_str(tok, tok_bos_id(tok)) ? tok_token_str(tok, tok_bos_id(tok)) : "",
                         tok_token_str(tok, tok_eos_id(tok)) ? tok_token_str(tok, tok_eos_id(tok)) : "", 0, &r, e);
    if (rc) return rc;
    int last = r.n_turns - 1;
    rc = tmpl_tokenize(&r, tok, &tk, e);
    tmpl_text_free(&r);
    if (rc) return ft_error_prefix(e, "%s", c->where);
    int n = (int)tk.n;
    uint8_t *tr = ft_xmalloc((size_t)(n ? n : 1));
    int first_last = n; /* first trained token of the last assistant turn */
    for (int i = 0; i < n; i++) {
        tr[i] = o->loss_last_only ? tk.turn[i] == last : tk.turn[i] >= 0;
        if (tk.turn[i] == last && last >= 0 && first_last == n) first_last = i;
    }
    int32_t *ids = tk.ids;
    free(tk.turn);
    int L = o->max_length;
    /* kept: ids[0, b) + ids[b + cut, P) + ids[cs, ce) */
    int P = first_last, b = 0, cut = 0, cs = P, ce = n, truncated = 0;
    if (L > 0 && n > L) {
        if (o->overlong == DS_LONG_DROP) {
            st->dropped_too_long++;
            free(ids), free(tr);
            return FT_OK;
        }
        truncated = 1;
        int excess = n - L;
        b = P > 0 && ids[0] == tok_bos_id(tok); /* a leading BOS survives prompt cuts */
        int pmin = P < L / 4 ? P : L / 4;
        if (pmin < b) pmin = b;
        cut = P - pmin < excess ? P - pmin : excess;
        if (cut < 0) cut = 0;
        excess -= cut;
        if (excess > 0) {
            if (o->trunc == DS_TRUNC_KEEP_START) ce -= excess;
            else cs += excess;
        }
    }
    int m = b + (P - b - cut) + (ce - cs);
    out->ids = ft_xmalloc((size_t)(m > 0 ? m : 1) * sizeof *out->ids);
    out->trained = ft_xmalloc((size_t)(m > 0 ? m : 1));
    int k = 0;
    for (int i = 0; i < b; i++) out->ids[k] = ids[i], out->trained[k++] = tr[i];
    for (int i = b + cut; i < P; i++) out->ids[k] = ids[i], out->trained[k++] = tr[i];
    for (int i = cs; i < ce; i++) out->ids[k] = ids[i], out->trained[k++] = tr[i];
    out->n = k;
    snprintf(out->where, sizeof out->where, "%s", c->where);
    free(ids), free(tr);
    long ntr = 0;
    for (int i = 0; i < k; i++) ntr += out->trained[i];
    if (ntr == 0) {
        st->dropped_no_trained++;
        ds_example_free(out);
        return FT_OK;
    }
    st->truncated += truncated;
    st->examples++;
    st->tokens += k;
    st->trained_tokens += ntr;
    *kept = 1;
    return FT_OK;
}

/* prompt + one reply: prompt ids (before the reply's first trained token) and
 * the reply's trained ids (its content and end marker) */
static int encode_reply(const tmpl *t, const ds_pref *p, const char *reply, const ft_tokenizer *tok,
                        int32_t **pr, int *npr, int32_t **rep, int *nrep, ft_error *e) {
    ds_conv c = {0};
    snprintf(c.where, sizeof c.where, "%s", p->prompt.where);
    for (int i = 0; i < p->prompt.n; i++) ds_conv_add(&c, p->prompt.msgs[i].role, p->prompt.msgs[i].content);
    ds_conv_add(&c, DS_ASSISTANT, reply);
    tmpl_tokens tk;
    int rc = tmpl_encode(t, &c, tok, 0, &tk, e);
    ds_conv_free(&c);
    if (rc) return rc;
    int n = (int)tk.n, f = n, l = -1, last = -1;
    for (int i = 0; i < n; i++)
        if (tk.turn[i] > last) last = tk.turn[i];
    for (int i = 0; i < n; i++) /* the reply is the last assistant turn */
        if (tk.turn[i] == last && last >= 0) {
            if (f == n) f = i;
            l = i;
        }
    *npr = f;
    *nrep = l >= f ? l - f + 1 : 0;
    *pr = ft_xmalloc((size_t)(f ? f : 1) * sizeof **pr);
    memcpy(*pr, tk.ids, (size_t)f * sizeof **pr);
    *rep = ft_xmalloc((size_t)(*nrep ? *nrep : 1) * sizeof **rep);
    memcpy(*rep, tk.ids + f, (size_t)*nrep * sizeof **rep);
    tmpl_tokens_free(&tk);
    return FT_OK;
}

int ds_build_pref_example(const tmpl *t, const ds_pref *p, const ft_tokenizer *tok, const ds_example_opts *o,
                          ds_pref_example *out, int *kept, ds_example_stats *st, ft_error *e) {
    *kept = 0;
    memset(out, 0, sizeof *out);
    int32_t *p2 = NULL;
    int np2 = 0;
    int rc = encode_reply(t, p, p->chosen, tok, &out->prompt, &out->n_prompt, &out->chosen, &out->n_chosen, e);
    if (!rc) rc = encode_reply(t, p, p->rejected, tok, &p2, &np2, &out->rejected, &out->n_rejected, e);
    if (rc) {
        ds_pref_example_free(out);
        free(p2);
        return rc;
    }
    int same = np2 == out->n_prompt && memcmp(p2, out->prompt, (size_t)np2 * sizeof *p2) == 0;
    free(p2);
    if (!same) { /* the reply's first token merged with the prompt's end differently */
        st->dropped_mismatch++;
        ds_pref_example_free(out);
        return FT_OK;
    }
    int L = o->max_length;
    if (L > 0) {
        if (out->n_prompt >= L) {
            st->dropped_too_long++;
            ds_pref_example_free(out);
            return FT_OK;
        }
        int room = L - out->n_prompt;
        if (out->n_chosen > room || out->n_rejected > room) {
            if (o->overlong == DS_LONG_DROP) {
                st->dropped_too_long++;
                ds_pref_example_free(out);
                return FT_OK;
            }
            st->truncated++;
            if (out->n_chosen > room) out->n_chosen = room;
            if (out->n_rejected > room) out->n_rejected = room;
        }
    }
    if (out->n_chosen == 0 || out->n_rejected == 0) {
        st->dropped_no_trained++;
        ds_pref_example_free(out);
        return FT_OK;
    }
    snprintf(out->where, sizeof out->where, "%s", p->prompt.where);
    st->examples++;
    st->tokens += out->n_prompt * 2 + out->n_chosen + out->n_rejected;
    st->trained_tokens += out->n_chosen + out->n_rejected;
    *kept = 1;
    return FT_OK;
}
