/* tok_decode: the decoders of a Hugging Face tokenizer.json (Replace, ByteFallback, Fuse, Strip,
 * ByteLevel, Metaspace, Sequence) and tok_decode, which runs them over the tokens' strings like
 * Tokenizer.decode. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/tokenizer/tok_internal.h"

/* Rust String::from_utf8_lossy: each maximal invalid subpart becomes U+FFFD. */
static void put_lossy(tok_sbuf *o, const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t bad = 0, l = tok_utf8_check(s + i, n - i, &bad);
        if (l) {
            tok_sb_put(o, s + i, l);
            i += l;
        } else {
            tok_sb_put(o, "\xEF\xBF\xBD", 3);
            i += bad;
        }
    }
}

typedef struct {
    tok_sbuf *v;
    size_t n;
} toklist;

static void tl_set(tok_sbuf *x, const char *s, size_t n) {
    x->n = 0;
    tok_sb_put(x, s, n);
}

static int parse_byte_token(const tok_sbuf *x, uint8_t *b) {
    if (x->n != 6 || memcmp(x->s, "<0x", 3) != 0 || x->s[5] != '>') return 0;
    int v = 0;
    for (int k = 3; k < 5; k++) {
        char ch = x->s[k];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0) return 0;
        v = v * 16 + d;
    }
    *b = (uint8_t)v;
    return 1;
}

static void replace_all(tok_sbuf *x, const char *a, size_t alen, const char *b, size_t blen) {
    if (!alen || x->n < alen) return;
    tok_sbuf o = {0};
    size_t i = 0, run = 0;
    while (i + alen <= x->n) {
        if (memcmp(x->s + i, a, alen) == 0) {
            tok_sb_put(&o, x->s + run, i - run);
            tok_sb_put(&o, b, blen);
            i += alen;
            run = i;
        } else {
            i++;
        }
    }
    tok_sb_put(&o, x->s + run, x->n - run);
    free(x->s);
    *x = o;
}

static void decode_step(const ft_tokenizer *t, const tok_dec *d, toklist *L) {
    switch (d->type) {
    case TOK_DEC_REPLACE:
        for (size_t i = 0; i < L->n; i++) replace_all(&L->v[i], d->a, d->alen, d->b, d->blen);
        return;
    case TOK_DEC_METASPACE:
        for (size_t i = 0; i < L->n; i++) {
            replace_all(&L->v[i], d->a, d->alen, " ", 1);
            if (i == 0 && d->scheme != TOK_SCHEME_NEVER && L->v[0].n && L->v[0].s[0] == ' ') {
                memmove(L->v[0].s, L->v[0].s + 1, L->v[0].n);
                L->v[0].n--;
            }
        }
        return;
    case TOK_DEC_FUSE:
        for (size_t i = 1; i < L->n; i++) {
            if (L->v[i].n) tok_sb_put(&L->v[0], L->v[i].s, L->v[i].n);
            free(L->v[i].s);
        }
        if (L->n > 1) L->n = 1;
        return;
    case TOK_DEC_STRIP:
        for (size_t i = 0; i < L->n; i++) {
            tok_sbuf *x = &L->v[i];
            size_t st = 0, en = x->n;
            for (int k = 0; k < d->start && st + d->alen <= en && memcmp(x->s + st, d->a, d->alen) == 0; k++)
                st += d->alen;
            for (int k = 0; k < d->stop && en >= st + d->alen && memcmp(x->s + en - d->alen, d->a, d->alen) == 0; k++)
                en -= d->alen;
            if (st || en != x->n) {
                memmove(x->s, x->s + st, en - st);
                x->n = en - st;
                x->s[x->n] = 0;
            }
        }
        return;
    case TOK_DEC_BYTEFALLBACK: {
        size_t w = 0;
        tok_sbuf bytes = {0};
        size_t nbytes = 0;
        tok_sbuf *v = L->v;
        for (size_t i = 0; i <= L->n; i++) {
            uint8_t b;
            if (i < L->n && parse_byte_token(&v[i], &b)) {
                tok_sb_put(&bytes, &b, 1);
                nbytes++;
                free(v[i].s);
                v[i].s = NULL;
                continue;
            }
            if (nbytes) { /* flush: valid UTF-8 as is, else one U+FFFD per byte */
                int ok = 1;
                for (size_t k = 0; k < bytes.n && ok;) {
                    size_t bad, l = tok_utf8_check((uint8_t *)bytes.s + k, bytes.n - k, &bad);
                    if (!l) ok = 0;
                    k += l;
                }
                tok_sbuf o = {0};
                if (ok) tok_sb_put(&o, bytes.s, bytes.n);
                else
                    for (size_t k = 0; k < nbytes; k++) tok_sb_put(&o, "\xEF\xBF\xBD", 3);
                if (!o.s) tok_sb_put(&o, "", 0);
                v[w++] = o;
                bytes.n = 0;
                nbytes = 0;
            }
            if (i < L->n) v[w++] = v[i];
        }
        free(bytes.s);
        L->n = w;
        return;
    }
    case TOK_DEC_BYTELEVEL: {
        /* per token: map chars back to bytes, or keep the raw token if a char has no byte */
        uint32_t map[256];
        int16_t inv[512];
        tok_byte_level_table(map);
        for (int q = 0; q < 512; q++) inv[q] = -1;
        for (int q = 0; q < 256; q++) inv[map[q]] = (int16_t)q;
        (void)t;
        tok_sbuf bytes = {0};
        for (size_t i = 0; i < L->n; i++) {
            tok_sbuf *x = &L->v[i];
            size_t mark = bytes.n;
            int ok = 1;
            for (size_t k = 0; k < x->n && ok;) {
                uint32_t cp;
                size_t bad, l = tok_utf8_check((uint8_t *)x->s + k, x->n - k, &bad);
                if (!l) { ok = 0; break; }
                tok_utf8_dec((uint8_t *)x->s + k, &cp);
                if (cp >= 512 || inv[cp] < 0) { ok = 0; break; }
                uint8_t bb = (uint8_t)inv[cp];
                tok_sb_put(&bytes, &bb, 1);
                k += l;
            }
            if (!ok) {
                bytes.n = mark;
                tok_sb_put(&bytes, x->s, x->n);
            }
            free(x->s);
        }
        tok_sbuf o = {0};
        put_lossy(&o, (uint8_t *)bytes.s, bytes.n);
        if (!o.s) tok_sb_put(&o, "", 0);
        free(bytes.s);
        L->v[0] = o;
        L->n = 1;
        return;
    }
    }
}

int tok_decode(const ft_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **text, ft_error *e) {
    *text = NULL;
    if (!t) return ft_fail(e, FT_EINTERNAL, "tok_decode: no tokenizer");
    toklist L = {ft_xcalloc(n + 1, sizeof(tok_sbuf)), 0};
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !t->id_s[id]) continue; /* unknown ids are dropped, as HF does */
        if (skip_special && t->id_special[id]) continue;
        tl_set(&L.v[L.n++], t->id_s[id], t->id_len[id]);
    }
    tok_sbuf out = {0};
    if (!t->has_decoder) {
        for (size_t i = 0; i < L.n; i++) {
            if (i) tok_sb_put(&out, " ", 1);
            tok_sb_put(&out, L.v[i].s, L.v[i].n);
        }
    } else if (L.n) {
        for (int k = 0; k < t->n_decs; k++) decode_step(t, &t->decs[k], &L);
        for (size_t i = 0; i < L.n; i++) tok_sb_put(&out, L.v[i].s, L.v[i].n);
    }
    for (size_t i = 0; i < L.n; i++) free(L.v[i].s);
    free(L.v);
    if (!out.s) tok_sb_put(&out, "", 0);
    *text = out.s;
    return FT_OK;
}

/* ---------- loading ---------- */

int tok_load_decoder(ft_tokenizer *t, const cJSON *n, const char *where, const char *key, ft_error *e) {
    if (!n || cJSON_IsNull(n)) return FT_OK;
    t->has_decoder = 1;
    const char *type = tok_json_str(n, "type");
    if (!type) return ft_fail(e, FT_EINPUT, "%s: %s: missing \"type\"", where, key);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "decoders");
        if (!cJSON_IsArray(list)) return ft_fail(e, FT_EINPUT, "%s: %s.decoders: expected an array", where, key);
        int i = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, list) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.decoders[%d]", key, i++);
            int rc = tok_load_decoder(t, x, where, sub, e);
            if (rc) return rc;
        }
        return FT_OK;
    }
    tok_dec d = {0};
    if (strcmp(type, "Replace") == 0) {
        const char *pat, *content = tok_json_str(n, "content");
        int rc = tok_pattern_string(n, where, key, &pat, e);
        if (rc) return rc;
        if (!content) return ft_fail(e, FT_EINPUT, "%s: %s.content: expected a string", where, key);
        d.type = TOK_DEC_REPLACE;
        d.a = ft_xstrdup(pat), d.alen = strlen(pat);
        d.b = ft_xstrdup(content), d.blen = strlen(content);
    } else if (strcmp(type, "ByteFallback") == 0) {
        d.type = TOK_DEC_BYTEFALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        d.type = TOK_DEC_FUSE;
    } else if (strcmp(type, "Strip") == 0) {
        const char *c = tok_json_str(n, "content");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(n, "start"), *sp = cJSON_GetObjectItemCaseSensitive(n, "stop");
        if (!c || !*c || !cJSON_IsNumber(st) || !cJSON_IsNumber(sp) || st->valuedouble < 0 || sp->valuedouble < 0 ||
            st->valuedouble > 1e6 || sp->valuedouble > 1e6)
            return ft_fail(e, FT_EINPUT, "%s: %s: Strip needs content (a character), start and stop (counts)", where, key);
        d.type = TOK_DEC_STRIP;
        d.a = ft_xstrdup(c), d.alen = strlen(c);
        d.start = (int)st->valuedouble, d.stop = (int)sp->valuedouble;
    } else if (strcmp(type, "ByteLevel") == 0) {
        d.type = TOK_DEC_BYTELEVEL;
    } else if (strcmp(type, "Metaspace") == 0) {
        const char *r = tok_json_str(n, "replacement");
        if (!r || !*r) return ft_fail(e, FT_EINPUT, "%s: %s.replacement: expected one character", where, key);
        int rc = tok_parse_scheme(n, where, key, &d.scheme, e);
        if (rc) return rc;
        d.type = TOK_DEC_METASPACE;
        d.a = ft_xstrdup(r), d.alen = strlen(r);
    } else {
        return ft_fail(e, FT_EINPUT, "%s: %s: unsupported decoder type \"%s\"", where, key, type);
    }
    t->decs = ft_xrealloc(t->decs, (size_t)(t->n_decs + 1) * sizeof *t->decs);
    t->decs[t->n_decs++] = d;
    return FT_OK;
}

