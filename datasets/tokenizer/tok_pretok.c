/* tok_pretok: normalizers (Prepend, Replace, NFC, Sequence) and pre-tokenizers (Metaspace,
 * ByteLevel, Digits, Split with the GPT-2 / Llama-3 / Qwen2 regexes, Sequence) of a Hugging Face
 * tokenizer.json: loading and running. Pieces go through the pre-tokenizer stages recursively so
 * no piece list is materialised; the last stage hands each piece to tok_model_word. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/tokenizer/tok_internal.h"
#include "datasets/tokenizer/tok_unicode.h"

/* ---------- pre-tokenizers ---------- */

static int cls_of(uint32_t cp) { /* 0 space, 1 letter, 2 number, 3 other */
    if (tok_uni_is_space(cp)) return 0;
    if (tok_uni_is_letter(cp)) return 1;
    if (tok_uni_is_number(cp)) return 2;
    return 3;
}

static size_t run_of(const uint8_t *s, size_t n, size_t i, int cls) {
    while (i < n) {
        uint32_t cp;
        int l = tok_utf8_dec(s + i, &cp);
        if (cls_of(cp) != cls) break;
        i += (size_t)l;
    }
    return i;
}

static int lower_ascii(uint32_t c) { return c >= 'A' && c <= 'Z' ? (int)(c + 32) : (int)c; }

/* End of the regex match starting at i, for the GPT-2 pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * and the Llama-3 / Qwen2 pattern
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * (Qwen2 has \p{N} alone). Written by hand: no regex engine needed. */
static size_t regex_match(int pat, const uint8_t *s, size_t n, size_t i) {
    uint32_t c0, c1 = 0;
    int l0 = tok_utf8_dec(s + i, &c0), l1 = 0;
    if (i + (size_t)l0 < n) l1 = tok_utf8_dec(s + i + l0, &c1);
    if (c0 == '\'' && l1) {
        int a = pat == TOK_SPLIT_GPT2 ? (int)c1 : lower_ascii(c1);
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < n) {
            int b = pat == TOK_SPLIT_GPT2 ? s[i + 2] : lower_ascii(s[i + 2]);
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        }
    }
    int k0 = cls_of(c0), k1 = l1 ? cls_of(c1) : -1;
    if (pat == TOK_SPLIT_GPT2) {
        if (c0 == ' ' && l1 && k1 != 0) return run_of(s, n, i + 1, k1);
        if (k0 != 0) return run_of(s, n, i, k0);
    } else {
        if (k0 == 1) return run_of(s, n, i, 1);
        if (c0 != '\r' && c0 != '\n' && k0 != 2 && k1 == 1) return run_of(s, n, i + (size_t)l0, 1);
        if (k0 == 2) {
            if (pat == TOK_SPLIT_QWEN2) return i + (size_t)l0;
            size_t j = i;
            for (int d = 0; d < 3 && j < n; d++) {
                uint32_t cp;
                int l = tok_utf8_dec(s + j, &cp);
                if (cls_of(cp) != 2) break;
                j += (size_t)l;
            }
            return j;
        }
        size_t j = i;
        if (c0 == ' ' && l1 && k1 == 3) j = i + 1;
        if (j > i || k0 == 3) {
            j = run_of(s, n, j, 3);
            while (j < n && (s[j] == '\r' || s[j] == '\n')) j++;
            return j;
        }
        /* \s*[\r\n]+ : up to the last newline of the whitespace run */
        size_t e = run_of(s, n, i, 0), last_nl = 0;
        for (size_t p = i; p < e; p++)
            if (s[p] == '\r' || s[p] == '\n') last_nl = p + 1;
        if (last_nl) return last_nl;
    }
    /* whitespace: \s+(?!\S) then \s+ */
    size_t e = run_of(s, n, i, 0);
    if (e >= n) return n;
    size_t lastc = e - 1;
    while ((s[lastc] & 0xC0) == 0x80) lastc--;
    return lastc > i ? lastc : e;
}

static void pre_stage(const ft_tokenizer *t, int k, const uint8_t *s, size_t n, int at_start, tok_enc_ctx *c);

static void pre_metaspace(const ft_tokenizer *t, const tok_pre *p, int k, const uint8_t *s, size_t n,
                          int at_start, tok_enc_ctx *c) {
    tok_sbuf b = {0};
    int starts = n >= p->repl_len && memcmp(s, p->repl, p->repl_len) == 0;
    int prepend = (p->scheme == TOK_SCHEME_ALWAYS || (p->scheme == TOK_SCHEME_FIRST && at_start)) &&
                  !(c->cont && at_start);
    if (prepend && !(starts || (n > 0 && s[0] == ' '))) tok_sb_put(&b, p->repl, p->repl_len);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            if (i > run) tok_sb_put(&b, s + run, i - run);
            tok_sb_put(&b, p->repl, p->repl_len);
            run = i + 1;
        }
    }
    if (n > run) tok_sb_put(&b, s + run, n - run);
    if (!b.s) return;
    if (!p->split) {
        pre_stage(t, k + 1, (const uint8_t *)b.s, b.n, at_start, c);
    } else { /* MergedWithNext: each replacement starts a new piece */
        size_t start = 0;
        for (size_t i = 1; i + p->repl_len <= b.n; i++) {
            if (memcmp(b.s + i, p->repl, p->repl_len) == 0) {
                pre_stage(t, k + 1, (const uint8_t *)b.s + start, i - start, at_start && start == 0, c);
                start = i;
            }
        }
        pre_stage(t, k + 1, (const uint8_t *)b.s + start, b.n - start, at_start && start == 0, c);
    }
    free(b.s);
}

static void pre_stage(const ft_tokenizer *t, int k, const uint8_t *s, size_t n, int at_start, tok_enc_ctx *c) {
    if (n == 0) return;
    if (k == t->n_pres) {
        tok_model_word(t, &c->w, s, n, c->out);
        return;
    }
    const tok_pre *p = &t->pres[k];
    switch (p->type) {
    case TOK_PRE_METASPACE:
        pre_metaspace(t, p, k, s, n, at_start, c);
        return;
    case TOK_PRE_DIGITS: {
        size_t i = 0, start = 0;
        while (i < n) {
            uint32_t cp;
            int l = tok_utf8_dec(s + i, &cp);
            if (tok_uni_is_number(cp)) {
                size_t e = i + (size_t)l;
                if (!p->individual)
                    while (e < n) {
                        int l2 = tok_utf8_dec(s + e, &cp);
                        if (!tok_uni_is_number(cp)) break;
                        e += (size_t)l2;
                    }
                if (i > start) pre_stage(t, k + 1, s + start, i - start, at_start && start == 0, c);
                pre_stage(t, k + 1, s + i, e - i, at_start && i == 0, c);
                start = i = e;
            } else {
                i += (size_t)l;
            }
        }
        if (n > start) pre_stage(t, k + 1, s + start, n - start, at_start && start == 0, c);
        return;
    }
    case TOK_PRE_BYTELEVEL:
    case TOK_PRE_SPLIT: {
        uint8_t *own = NULL;
        if (p->type == TOK_PRE_BYTELEVEL && p->prefix_space && s[0] != ' ' && !(c->cont && at_start)) {
            own = ft_xmalloc(n + 1);
            own[0] = ' ';
            memcpy(own + 1, s, n);
            s = own, n++;
        }
        if (p->type == TOK_PRE_BYTELEVEL && !p->use_regex) {
            pre_stage(t, k + 1, s, n, at_start, c);
        } else {
            int pat = p->type == TOK_PRE_BYTELEVEL ? TOK_SPLIT_GPT2 : p->pattern;
            for (size_t i = 0; i < n;) {
                size_t e = regex_match(pat, s, n, i);
                pre_stage(t, k + 1, s + i, e - i, at_start && i == 0, c);
                i = e;
            }
        }
        free(own);
        return;
    }
    }
}

void tok_pretokenize(const ft_tokenizer *t, const uint8_t *s, size_t n, int at_start, tok_enc_ctx *c) {
    pre_stage(t, 0, s, n, at_start, c);
}

/* ---------- normalizers ---------- */

/* Normalizers (HF skips empty strings: Prepend only prepends to non-empty text). */
void tok_normalize(const ft_tokenizer *t, const uint8_t *s, size_t n, int no_prepend, tok_sbuf *out) {
    tok_sbuf a = {0}, b = {0};
    tok_sb_put(&a, s, n);
    for (int k = 0; k < t->n_norms; k++) {
        const tok_norm *nm = &t->norms[k];
        b.n = 0;
        if (nm->type == TOK_NORM_PREPEND) {
            if (a.n && !no_prepend) tok_sb_put(&b, nm->a, nm->alen);
            tok_sb_put(&b, a.s, a.n);
        } else if (nm->type == TOK_NORM_REPLACE) {
            size_t i = 0, run = 0;
            while (nm->alen && i + nm->alen <= a.n) {
                if (memcmp(a.s + i, nm->a, nm->alen) == 0) {
                    tok_sb_put(&b, a.s + run, i - run);
                    tok_sb_put(&b, nm->b, nm->blen);
                    i += nm->alen;
                    run = i;
                } else {
                    i++;
                }
            }
            tok_sb_put(&b, a.s + run, a.n - run);
        } else {
            tok_sb_put(&b, a.s, a.n); /* NFC: identity on the text tok_encode lets through */
        }
        tok_sbuf tmp = a;
        a = b;
        b = tmp;
    }
    free(b.s);
    *out = a;
}

int tok_needs_nfc(const ft_tokenizer *t) {
    for (int k = 0; k < t->n_norms; k++)
        if (t->norms[k].type == TOK_NORM_NFC) return 1;
    return 0;
}

/* ---------- loading ---------- */

int tok_load_normalizer(ft_tokenizer *t, const cJSON *n, const char *where, const char *key, ft_error *e) {
    if (!n || cJSON_IsNull(n)) return FT_OK;
    const char *type = tok_json_str(n, "type");
    if (!type) return ft_fail(e, FT_EINPUT, "%s: %s: missing \"type\"", where, key);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list)) return ft_fail(e, FT_EINPUT, "%s: %s.normalizers: expected an array", where, key);
        int i = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, list) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", key, i++);
            int rc = tok_load_normalizer(t, x, where, sub, e);
            if (rc) return rc;
        }
        return FT_OK;
    }
    tok_norm nm = {0};
    if (strcmp(type, "Prepend") == 0) {
        const char *p = tok_json_str(n, "prepend");
        if (!p) return ft_fail(e, FT_EINPUT, "%s: %s.prepend: expected a string", where, key);
        nm.type = TOK_NORM_PREPEND;
        nm.a = ft_xstrdup(p);
        nm.alen = strlen(p);
    } else if (strcmp(type, "Replace") == 0) {
        const char *pat, *content = tok_json_str(n, "content");
        int rc = tok_pattern_string(n, where, key, &pat, e);
        if (rc) return rc;
        if (!content) return ft_fail(e, FT_EINPUT, "%s: %s.content: expected a string", where, key);
        nm.type = TOK_NORM_REPLACE;
        nm.a = ft_xstrdup(pat), nm.alen = strlen(pat);
        nm.b = ft_xstrdup(content), nm.blen = strlen(content);
    } else if (strcmp(type, "NFC") == 0) {
        nm.type = TOK_NORM_NFC;
    } else {
        return ft_fail(e, FT_EINPUT, "%s: %s: unsupported normalizer type \"%s\"", where, key, type);
    }
    t->norms = ft_xrealloc(t->norms, (size_t)(t->n_norms + 1) * sizeof *t->norms);
    t->norms[t->n_norms++] = nm;
    return FT_OK;
}

int tok_parse_scheme(const cJSON *n, const char *where, const char *key, int *out, ft_error *e) {
    const char *s = tok_json_str(n, "prepend_scheme");
    if (!s) { /* older files: add_prefix_space */
        *out = tok_json_bool(n, "add_prefix_space", 1) ? TOK_SCHEME_ALWAYS : TOK_SCHEME_NEVER;
        return FT_OK;
    }
    if (strcmp(s, "always") == 0) *out = TOK_SCHEME_ALWAYS;
    else if (strcmp(s, "first") == 0) *out = TOK_SCHEME_FIRST;
    else if (strcmp(s, "never") == 0) *out = TOK_SCHEME_NEVER;
    else return ft_fail(e, FT_EINPUT, "%s: %s.prepend_scheme: \"%s\" is not always/first/never", where, key, s);
    return FT_OK;
}

static const char *RX_GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char *RX_LLAMA3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                               "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *RX_QWEN2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                              "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

int tok_load_pretok(ft_tokenizer *t, const cJSON *n, const char *where, const char *key, ft_error *e) {
    if (!n || cJSON_IsNull(n)) return FT_OK;
    const char *type = tok_json_str(n, "type");
    if (!type) return ft_fail(e, FT_EINPUT, "%s: %s: missing \"type\"", where, key);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "pretokenizers");
        if (!cJSON_IsArray(list)) return ft_fail(e, FT_EINPUT, "%s: %s.pretokenizers: expected an array", where, key);
        int i = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, list) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", key, i++);
            int rc = tok_load_pretok(t, x, where, sub, e);
            if (rc) return rc;
        }
        return FT_OK;
    }
    tok_pre p = {0};
    if (strcmp(type, "Metaspace") == 0) {
        const char *r = tok_json_str(n, "replacement");
        if (!r || !*r || strlen(r) >= sizeof p.repl)
            return ft_fail(e, FT_EINPUT, "%s: %s.replacement: expected one character", where, key);
        p.type = TOK_PRE_METASPACE;
        strcpy(p.repl, r);
        p.repl_len = strlen(r);
        p.split = tok_json_bool(n, "split", 1);
        int rc = tok_parse_scheme(n, where, key, &p.scheme, e);
        if (rc) return rc;
    } else if (strcmp(type, "ByteLevel") == 0) {
        p.type = TOK_PRE_BYTELEVEL;
        p.prefix_space = tok_json_bool(n, "add_prefix_space", 1);
        p.use_regex = tok_json_bool(n, "use_regex", 1);
        t->byte_level = 1;
    } else if (strcmp(type, "Digits") == 0) {
        p.type = TOK_PRE_DIGITS;
        p.individual = tok_json_bool(n, "individual_digits", 0);
    } else if (strcmp(type, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *rx = tok_json_str(pat, "Regex");
        const char *beh = tok_json_str(n, "behavior");
        if (!rx) return ft_fail(e, FT_EINPUT, "%s: %s.pattern: only known Regex patterns are supported", where, key);
        if (strcmp(rx, RX_GPT2) == 0) p.pattern = TOK_SPLIT_GPT2;
        else if (strcmp(rx, RX_LLAMA3) == 0) p.pattern = TOK_SPLIT_LLAMA3;
        else if (strcmp(rx, RX_QWEN2) == 0) p.pattern = TOK_SPLIT_QWEN2;
        else return ft_fail(e, FT_EINPUT, "%s: %s.pattern: unsupported Split regex (only the GPT-2, Llama-3 and Qwen2 ones)", where, key);
        if (!beh || strcmp(beh, "Isolated") != 0 || tok_json_bool(n, "invert", 0))
            return ft_fail(e, FT_EINPUT, "%s: %s: only Split with behavior Isolated and invert false is supported", where, key);
        p.type = TOK_PRE_SPLIT;
    } else {
        return ft_fail(e, FT_EINPUT, "%s: %s: unsupported pre_tokenizer type \"%s\"", where, key, type);
    }
    t->pres = ft_xrealloc(t->pres, (size_t)(t->n_pres + 1) * sizeof *t->pres);
    t->pres[t->n_pres++] = p;
    return FT_OK;
}

