/* tokenizer: Hugging Face tokenizer.json BPE (SentencePiece-style and GPT-2 byte-level) in C.
 *
 * Pipeline, as in HF tokenizers: split the text on added tokens (non-normalized ones on the raw
 * text, normalized ones after the normalizer), normalize, pre-tokenize, BPE each piece, then the
 * post-processor's template. This file: loading (tokenizer.json, tokenizer_config.json), added
 * tokens, the post-processor, tok_encode and the accessors; the other stages live in tok_pretok.c,
 * tok_bpe.c and tok_decode.c (tok_internal.h). */
#include "datasets/tokenizer/tokenizer.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/tokenizer/tok_internal.h"
#include "datasets/tokenizer/tok_unicode.h"

/* ---------- added tokens ---------- */

static int is_word_char(uint32_t cp) { return cp == '_' || tok_uni_is_letter(cp) || tok_uni_is_number(cp); }

static uint32_t last_cp(const uint8_t *s, size_t end) {
    size_t i = end - 1;
    while (i > 0 && (s[i] & 0xC0) == 0x80) i--;
    uint32_t cp;
    tok_utf8_dec(s + i, &cp);
    return cp;
}

/* Leftmost-longest added token match in s[from..n) among tokens with normalized == norm.
 * Returns the added index or -1 and the match bounds in ms, me. */
static int added_find(const ft_tokenizer *t, int norm, const uint8_t *s, size_t n, size_t from, size_t *ms,
                      size_t *me) {
    const uint8_t *first = norm ? t->first_norm : t->first_raw;
    for (size_t i = from; i < n; i++) {
        if (!first[s[i]]) continue;
        for (int a = 0; a < t->n_added; a++) { /* sorted by length, longest first */
            const tok_added *x = &t->added[a];
            if (x->normalized != norm || x->mlen == 0 || x->mlen > n - i || memcmp(s + i, x->m, x->mlen) != 0) continue;
            *ms = i;
            *me = i + x->mlen;
            return a;
        }
    }
    return -1;
}

typedef void (*piece_fn)(const ft_tokenizer *t, const uint8_t *s, size_t n, int at_start, tok_enc_ctx *c);

/* Split s on added tokens (HF AddedVocabulary::find_matches): pieces between matches go to fn,
 * matched tokens are emitted as their ids. */
static void split_added(const ft_tokenizer *t, int norm, const uint8_t *s, size_t n, int at_start, tok_enc_ctx *c,
                        piece_fn fn) {
    size_t pos = 0, start_off = 0;
    for (;;) {
        size_t ms = 0, me = 0;
        int a = added_find(t, norm, s, n, pos, &ms, &me);
        if (a < 0) break;
        const tok_added *x = &t->added[a];
        pos = me;
        if (x->single_word) {
            int ss = ms == 0 || !is_word_char(last_cp(s, ms));
            uint32_t cp = 0;
            if (me < n) tok_utf8_dec(s + me, &cp);
            int es = me == n || !is_word_char(cp);
            if (!ss || !es) continue;
        }
        size_t st = ms, sp = me;
        if (x->lstrip) {
            size_t ns = st;
            while (ns > 0) {
                size_t q = ns - 1;
                while (q > 0 && (s[q] & 0xC0) == 0x80) q--;
                uint32_t cp;
                tok_utf8_dec(s + q, &cp);
                if (!tok_uni_is_space(cp)) break;
                ns = q;
            }
            st = ns > start_off ? ns : start_off;
        }
        if (x->rstrip) {
            while (sp < n) {
                uint32_t cp;
                int l = tok_utf8_dec(s + sp, &cp);
                if (!tok_uni_is_space(cp)) break;
                sp += (size_t)l;
            }
        }
        if (st > start_off) fn(t, s + start_off, st - start_off, at_start && start_off == 0, c);
        tok_iv_push(c->out, x->id);
        start_off = sp > start_off ? sp : start_off;
        if (pos < start_off) pos = start_off;
    }
    if (n > start_off) fn(t, s + start_off, n - start_off, at_start && start_off == 0, c);
}

static void piece_pretok(const ft_tokenizer *t, const uint8_t *s, size_t n, int at_start, tok_enc_ctx *c) {
    tok_pretokenize(t, s, n, at_start, c);
}

static void piece_normalize(const ft_tokenizer *t, const uint8_t *s, size_t n, int at_start, tok_enc_ctx *c) {
    if (t->n_norms == 0) {
        if (t->has_norm_added) split_added(t, 1, s, n, at_start, c, piece_pretok);
        else tok_pretokenize(t, s, n, at_start, c);
        return;
    }
    tok_sbuf b = {0};
    tok_normalize(t, s, n, c->cont && at_start, &b);
    if (b.n) {
        if (t->has_norm_added) split_added(t, 1, (const uint8_t *)b.s, b.n, at_start, c, piece_pretok);
        else tok_pretokenize(t, (const uint8_t *)b.s, b.n, at_start, c);
    }
    free(b.s);
}

static int encode(const ft_tokenizer *t, const char *text, size_t len, int special, int cont, int32_t **ids,
                  size_t *n, ft_error *e) {
    *ids = NULL;
    *n = 0;
    if (!t) return ft_fail(e, FT_EINTERNAL, "tok_encode: no tokenizer");
    if (!text && len) return ft_fail(e, FT_EINPUT, "tok_encode: NULL text");
    const uint8_t *s = (const uint8_t *)text;
    int nfc = tok_needs_nfc(t);
    for (size_t i = 0; i < len;) {
        size_t bad = 0, l = tok_utf8_check(s + i, len - i, &bad);
        if (!l) return ft_fail(e, FT_EINPUT, "invalid UTF-8 at byte %zu of the text", i);
        if (nfc && s[i] >= 0xCC)
            return ft_fail(e, FT_EINPUT,
                           "text byte %zu: the NFC normalizer is only implemented for text below U+0300 "
                           "(where NFC changes nothing)", i);
        i += l;
    }
    tok_ivec out = {0};
    tok_enc_ctx c = {.out = &out, .cont = cont};
    if (special)
        for (size_t i = 0; i < t->n_post_pre; i++) tok_iv_push(&out, t->post_pre[i]);
    split_added(t, 0, s, len, 1, &c, piece_normalize);
    if (special)
        for (size_t i = 0; i < t->n_post_post; i++) tok_iv_push(&out, t->post_post[i]);
    free(c.w.sym.v);
    free(c.w.prev), free(c.w.next), free(c.w.rank), free(c.w.heap);
    if (!out.v) out.v = ft_xmalloc(sizeof(int32_t));
    *ids = out.v;
    *n = out.n;
    return FT_OK;
}

int tok_encode(const ft_tokenizer *t, const char *text, size_t len, int special, int32_t **ids, size_t *n,
               ft_error *e) {
    return encode(t, text, len, special, 0, ids, n, e);
}

int tok_encode_cont(const ft_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, ft_error *e) {
    return encode(t, text, len, 0, 1, ids, n, e);
}

/* ---------- loading ---------- */

int tok_json_bool(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

const char *tok_json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Pattern object {"String": ...} or {"Regex": ...}; only String is supported. */
int tok_pattern_string(const cJSON *o, const char *where, const char *key, const char **out, ft_error *e) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const char *s = tok_json_str(p, "String");
    if (!s) {
        if (tok_json_str(p, "Regex"))
            return ft_fail(e, FT_EINPUT, "%s: %s.pattern: Regex patterns are unsupported (only String)", where, key);
        return ft_fail(e, FT_EINPUT, "%s: %s.pattern: expected {\"String\": ...}", where, key);
    }
    *out = s;
    return FT_OK;
}

static int32_t token_lookup(const ft_tokenizer *t, const char *s) {
    size_t n = strlen(s);
    for (int a = 0; a < t->n_added; a++)
        if (t->added[a].len == n && memcmp(t->added[a].s, s, n) == 0) return t->added[a].id;
    return tok_vocab_get(t, s, n);
}

static int push_special_ids(ft_tokenizer *t, const cJSON *specials, const char *name, int32_t **v, size_t *nv,
                            const char *where, const char *key, ft_error *e) {
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(specials, name);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(sp, "ids");
    if (!cJSON_IsArray(list))
        return ft_fail(e, FT_EINPUT, "%s: %s: special token \"%s\" missing from post_processor.special_tokens", where,
                       key, name);
    const cJSON *x;
    cJSON_ArrayForEach(x, list) {
        if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= t->n_ids)
            return ft_fail(e, FT_EINPUT, "%s: post_processor.special_tokens.%s.ids: id out of range", where, name);
        *v = ft_xrealloc(*v, (*nv + 1) * sizeof **v);
        (*v)[(*nv)++] = (int32_t)x->valuedouble;
    }
    return FT_OK;
}

static int load_post(ft_tokenizer *t, const cJSON *n, const char *where, const char *key, ft_error *e) {
    if (!n || cJSON_IsNull(n)) return FT_OK;
    const char *type = tok_json_str(n, "type");
    if (!type) return ft_fail(e, FT_EINPUT, "%s: %s: missing \"type\"", where, key);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "processors");
        if (!cJSON_IsArray(list)) return ft_fail(e, FT_EINPUT, "%s: %s.processors: expected an array", where, key);
        int i = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, list) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.processors[%d]", key, i++);
            int rc = load_post(t, x, where, sub, e);
            if (rc) return rc;
        }
        return FT_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) return FT_OK; /* offsets only */
    if (strcmp(type, "TemplateProcessing") == 0) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(n, "single");
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(n, "special_tokens");
        if (!cJSON_IsArray(single)) return ft_fail(e, FT_EINPUT, "%s: %s.single: expected an array", where, key);
        int seen_a = 0, i = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, single) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.single[%d]", key, i++);
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(x, "SpecialToken");
            const cJSON *sq = cJSON_GetObjectItemCaseSensitive(x, "Sequence");
            if (st) {
                const char *id = tok_json_str(st, "id");
                if (!id) return ft_fail(e, FT_EINPUT, "%s: %s.SpecialToken.id: expected a string", where, sub);
                int rc = seen_a ? push_special_ids(t, specials, id, &t->post_post, &t->n_post_post, where, sub, e)
                                : push_special_ids(t, specials, id, &t->post_pre, &t->n_post_pre, where, sub, e);
                if (rc) return rc;
            } else if (sq) {
                seen_a = 1;
            } else {
                return ft_fail(e, FT_EINPUT, "%s: %s: expected SpecialToken or Sequence", where, sub);
            }
        }
        return FT_OK;
    }
    if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(n, "cls"), *sep = cJSON_GetObjectItemCaseSensitive(n, "sep");
        const cJSON *ci = cJSON_GetArrayItem(cls, 1), *si = cJSON_GetArrayItem(sep, 1);
        if (!cJSON_IsNumber(ci) || !cJSON_IsNumber(si) || ci->valuedouble < 0 || si->valuedouble < 0 ||
            ci->valuedouble >= t->n_ids || si->valuedouble >= t->n_ids)
            return ft_fail(e, FT_EINPUT, "%s: %s: cls/sep must be [token, id] with a valid id", where, key);
        t->post_pre = ft_xrealloc(t->post_pre, (t->n_post_pre + 1) * sizeof(int32_t));
        t->post_pre[t->n_post_pre++] = (int32_t)ci->valuedouble;
        t->post_post = ft_xrealloc(t->post_post, (t->n_post_post + 1) * sizeof(int32_t));
        t->post_post[t->n_post_post++] = (int32_t)si->valuedouble;
        return FT_OK;
    }
    return ft_fail(e, FT_EINPUT, "%s: %s: unsupported post_processor type \"%s\"", where, key, type);
}

static int cmp_added_len(const void *a, const void *b) {
    const tok_added *x = a, *y = b;
    if (x->mlen != y->mlen) return x->mlen > y->mlen ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int load_model(ft_tokenizer *t, const cJSON *root, const char *where, ft_error *e) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return ft_fail(e, FT_EINPUT, "%s: missing \"model\" object", where);
    size_t distinct;
    int32_t maxid;
    int rc = tok_bpe_load_vocab(t, model, where, &distinct, &maxid, e);
    if (rc) return rc;
    size_t nv = t->nv;
    const cJSON *x;

    /* added tokens extend the id space */
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added))
        return ft_fail(e, FT_EINPUT, "%s: added_tokens: expected an array", where);
    int na = cJSON_GetArraySize(added);
    t->added = ft_xcalloc((size_t)na + 1, sizeof *t->added);
    int k = 0;
    cJSON_ArrayForEach(x, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(x, "id");
        const char *content = tok_json_str(x, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 16777216 || !content)
            return ft_fail(e, FT_EINPUT, "%s: added_tokens[%d]: expected \"id\" (0..16777216) and \"content\"", where, k);
        tok_added *a = &t->added[t->n_added];
        a->s = ft_xstrdup(content);
        a->len = strlen(content);
        a->lstrip = tok_json_bool(x, "lstrip", 0);
        a->rstrip = tok_json_bool(x, "rstrip", 0);
        a->single_word = tok_json_bool(x, "single_word", 0);
        a->normalized = tok_json_bool(x, "normalized", 0);
        a->special = tok_json_bool(x, "special", 0);
        /* HF re-derives ids rather than trusting "id": an existing added or vocab token keeps its
         * id, a new one gets the next id after the vocab (AddedVocabulary::add_tokens). */
        a->id = -1;
        int32_t maxa = -1;
        for (int q = 0; q < t->n_added; q++) {
            if (t->added[q].len == a->len && memcmp(t->added[q].s, a->s, a->len) == 0) a->id = t->added[q].id;
            if (t->added[q].id > maxa) maxa = t->added[q].id;
        }
        if (a->id < 0) a->id = tok_vocab_get(t, a->s, a->len);
        if (a->id < 0) a->id = maxa < 0 ? (int32_t)distinct : maxa >= (int32_t)distinct ? maxa + 1 : (int32_t)distinct;
        t->n_added++;
        if (a->id > maxid) maxid = a->id;
        k++;
    }

    t->n_ids = maxid + 1;
    t->id_s = ft_xcalloc((size_t)t->n_ids + 1, sizeof *t->id_s);
    t->id_len = ft_xcalloc((size_t)t->n_ids + 1, sizeof *t->id_len);
    t->id_special = ft_xcalloc((size_t)t->n_ids + 1, 1);
    for (size_t v = 0; v < nv; v++) {
        t->id_s[t->v_id[v]] = t->v_s[v];
        t->id_len[t->v_id[v]] = t->v_len[v];
    }
    for (int a = 0; a < t->n_added; a++) {
        t->id_s[t->added[a].id] = t->added[a].s;
        t->id_len[t->added[a].id] = (uint32_t)t->added[a].len;
        t->id_special[t->added[a].id] = (uint8_t)t->added[a].special;
    }
    return tok_bpe_load_merges(t, model, where, e);
}

void tok_free(ft_tokenizer *t) {
    if (!t) return;
    free(t->v_s), free(t->v_len), free(t->v_id), free(t->v_arena), free(t->vh), free(t->char_id);
    free(t->id_s), free(t->id_len), free(t->id_special);
    free(t->mk), free(t->mrank), free(t->mnew);
    for (int a = 0; a < t->n_added; a++) free(t->added[a].s), free(t->added[a].m);
    free(t->added);
    for (int k = 0; k < t->n_norms; k++) free(t->norms[k].a), free(t->norms[k].b);
    free(t->norms);
    free(t->pres);
    for (int k = 0; k < t->n_decs; k++) free(t->decs[k].a), free(t->decs[k].b);
    free(t->decs);
    free(t->post_pre), free(t->post_post);
    free(t->cslots), free(t->carena);
    pthread_mutex_destroy(&t->cmu);
    free(t);
}

int tok_load_json(const char *json, size_t len, const char *where, ft_tokenizer **out, ft_error *e) {
    *out = NULL;
    if (!where) where = "tokenizer.json";
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        return ft_fail(e, FT_EINPUT, "%s: not valid JSON (error near byte %zu)", where, at);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ft_fail(e, FT_EINPUT, "%s: expected a JSON object at the top level", where);
    }
    ft_tokenizer *t = ft_xcalloc(1, sizeof *t);
    pthread_mutex_init(&t->cmu, NULL);
    t->bos = t->eos = -1;
    int rc = load_model(t, root, where, e);
    if (!rc) rc = tok_load_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), where, "normalizer", e);
    if (!rc)
        rc = tok_load_pretok(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), where, "pre_tokenizer", e);
    if (!rc) rc = load_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), where, "post_processor", e);
    if (!rc) rc = tok_load_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), where, "decoder", e);
    cJSON_Delete(root);
    if (rc) {
        tok_free(t);
        return rc;
    }
    /* added tokens: normalized ones are matched by their normalized form; longest first */
    for (int a = 0; a < t->n_added; a++) {
        tok_added *x = &t->added[a];
        tok_sbuf b = {0};
        if (x->normalized) tok_normalize(t, (const uint8_t *)x->s, x->len, 0, &b);
        else tok_sb_put(&b, x->s, x->len);
        x->m = b.s ? b.s : ft_xstrdup("");
        x->mlen = b.n;
        if (x->normalized) { /* HF keeps (and decodes) the normalized content */
            t->id_s[x->id] = x->m;
            t->id_len[x->id] = (uint32_t)x->mlen;
        }
    }
    qsort(t->added, (size_t)t->n_added, sizeof *t->added, cmp_added_len);
    for (int a = 0; a < t->n_added; a++) {
        if (!t->added[a].mlen) continue;
        if (t->added[a].normalized) t->first_norm[(uint8_t)t->added[a].m[0]] = 1, t->has_norm_added = 1;
        else t->first_raw[(uint8_t)t->added[a].m[0]] = 1;
    }
    if (t->byte_level) tok_bpe_byte_level_init(t);
    /* BOS/EOS from the template (tokenizer_config.json may override in tok_load) */
    if (t->n_post_pre) t->bos = t->post_pre[0];
    if (t->n_post_post) t->eos = t->post_post[t->n_post_post - 1];
    *out = t;
    return FT_OK;
}

static int32_t config_token(const ft_tokenizer *t, const cJSON *cfg, const char *key, int *present) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    const char *s = cJSON_IsString(v) ? v->valuestring : tok_json_str(v, "content");
    *present = s != NULL;
    return s ? token_lookup(t, s) : -1;
}

int tok_load(const char *dir, ft_tokenizer **out, ft_error *e) {
    *out = NULL;
    char *path = ft_path_join(dir, "tokenizer.json");
    char *buf = NULL;
    size_t len = 0;
    int rc = ft_read_file(path, &buf, &len, e);
    if (rc) {
        if (!ft_file_exists(path))
            rc = ft_fail(e, FT_EINPUT, "%s: not found (a tokenizer directory needs a Hugging Face tokenizer.json)", path);
        free(path);
        return rc;
    }
    rc = tok_load_json(buf, len, path, out, e);
    free(buf);
    free(path);
    if (rc) return rc;
    path = ft_path_join(dir, "tokenizer_config.json");
    if (ft_file_exists(path) && ft_read_file(path, &buf, &len, NULL) == FT_OK) {
        cJSON *cfg = cJSON_ParseWithLength(buf, len);
        if (cfg) { /* best effort: the config only names BOS/EOS */
            int present;
            int32_t id = config_token(*out, cfg, "bos_token", &present);
            if (present && id >= 0) (*out)->bos = id;
            id = config_token(*out, cfg, "eos_token", &present);
            if (present && id >= 0) (*out)->eos = id;
            cJSON_Delete(cfg);
        }
        free(buf);
    }
    free(path);
    return FT_OK;
}

int tok_vocab_size(const ft_tokenizer *t) { return t ? t->n_ids : 0; }

int32_t tok_token_id(const ft_tokenizer *t, const char *token) { return t && token ? token_lookup(t, token) : -1; }

const char *tok_token_str(const ft_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_ids) return NULL;
    return t->id_s[id];
}

int32_t tok_bos_id(const ft_tokenizer *t) { return t ? t->bos : -1; }
int32_t tok_eos_id(const ft_tokenizer *t) { return t ? t->eos : -1; }
