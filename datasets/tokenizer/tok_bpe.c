/* tok_bpe: the BPE model of a Hugging Face tokenizer.json (see tok_internal.h for the layout).
 *
 * Vocab and merge ranks are open-addressing hash maps (merge key = the two ids). BPE uses
 * per-pair rank arrays for short words and a binary heap over a linked list of symbols for long
 * ones; a small word -> ids cache sits in front of it. Characters outside the vocab go to byte
 * fallback <0xXX> tokens or (fused) unk. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/tokenizer/tok_internal.h"

#define CACHE_SLOTS (1u << 15)
#define CACHE_ARENA (1u << 21)
#define CACHE_MAX_WORD 64

static uint32_t pow2_at_least(size_t n) {
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 upward. */
void tok_byte_level_table(uint32_t map[256]) {
    int k = 0;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        map[b] = keep ? (uint32_t)b : (uint32_t)(256 + k++);
    }
}

static uint32_t merge_slot(uint64_t k, uint32_t mask) { return (uint32_t)((k * 0x9E3779B97F4A7C15ull) >> 32) & mask; }

static int merge_get(const ft_tokenizer *t, int32_t a, int32_t b, uint32_t *rank, int32_t *nid) {
    if (!t->mk) return 0;
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t h = merge_slot(k, t->mmask);
    for (;;) {
        if (t->mrank[h] == UINT32_MAX) return 0;
        if (t->mk[h] == k) {
            *rank = t->mrank[h];
            *nid = t->mnew[h];
            return 1;
        }
        h = (h + 1) & t->mmask;
    }
}

static void merge_put(ft_tokenizer *t, int32_t a, int32_t b, uint32_t rank, int32_t nid) {
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t h = merge_slot(k, t->mmask);
    while (t->mrank[h] != UINT32_MAX && t->mk[h] != k) h = (h + 1) & t->mmask;
    t->mk[h] = k; /* a repeated pair keeps the later rank, as HF's HashMap collect does */
    t->mrank[h] = rank;
    t->mnew[h] = nid;
}

/* ---------- BPE on one word ---------- */

/* Initial symbols of a word: one per code point (or per byte in byte-level mode), with byte
 * fallback and (fused) unk for characters outside the vocab. */
static void word_symbols(const ft_tokenizer *t, const uint8_t *w, size_t n, tok_ivec *sym) {
    if (t->byte_level) {
        for (size_t i = 0; i < n; i++)
            if (t->bl_id[w[i]] >= 0) tok_iv_push(sym, t->bl_id[w[i]]);
            else if (t->unk_id >= 0) tok_iv_push(sym, t->unk_id);
        return;
    }
    int pending_unk = 0;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int l = tok_utf8_dec(w + i, &cp);
        int32_t id = cp < 0x10000 ? t->char_id[cp] : tok_vocab_get(t, (const char *)w + i, (size_t)l);
        if (id >= 0) {
            if (pending_unk) tok_iv_push(sym, t->unk_id), pending_unk = 0;
            tok_iv_push(sym, id);
        } else {
            int ok = t->byte_fallback;
            for (int k = 0; ok && k < l; k++) ok = t->fallback_id[w[i + k]] >= 0;
            if (ok) {
                if (pending_unk) tok_iv_push(sym, t->unk_id), pending_unk = 0;
                for (int k = 0; k < l; k++) tok_iv_push(sym, t->fallback_id[w[i + k]]);
            } else if (t->unk_id >= 0) {
                if (pending_unk && !t->fuse_unk) tok_iv_push(sym, t->unk_id);
                pending_unk = 1;
            } /* no unk token: the character is dropped, as HF does */
        }
        i += (size_t)l;
    }
    if (pending_unk) tok_iv_push(sym, t->unk_id);
}

static void work_reserve(tok_bpe_work *w, size_t n) {
    if (n <= w->cap) return;
    w->cap = n * 2;
    w->prev = ft_xrealloc(w->prev, w->cap * sizeof *w->prev);
    w->next = ft_xrealloc(w->next, w->cap * sizeof *w->next);
    w->rank = ft_xrealloc(w->rank, w->cap * sizeof *w->rank);
    w->heap = ft_xrealloc(w->heap, w->cap * 2 * sizeof *w->heap);
}

static void heap_push(uint64_t *h, size_t *n, uint64_t x) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= x) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], x = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (x <= h[c]) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
    return top;
}

/* Apply merges in rank order (ties: leftmost), appending the resulting ids to out. */
static void bpe_merge(const ft_tokenizer *t, tok_bpe_work *w, tok_ivec *out) {
    int32_t *s = w->sym.v;
    size_t m = w->sym.n;
    if (m <= 48) {
        /* Short words: keep the rank of every adjacent pair; O(m) per merge. */
        work_reserve(w, m + 1);
        uint32_t *r = w->rank;
        int32_t nid;
        for (size_t i = 0; i + 1 < m; i++)
            if (!merge_get(t, s[i], s[i + 1], &r[i], &nid)) r[i] = UINT32_MAX;
        while (m > 1) {
            size_t best = 0;
            for (size_t i = 1; i + 1 < m; i++)
                if (r[i] < r[best]) best = i;
            if (r[best] == UINT32_MAX) break;
            uint32_t rk;
            merge_get(t, s[best], s[best + 1], &rk, &nid);
            s[best] = nid;
            memmove(s + best + 1, s + best + 2, (m - best - 2) * sizeof *s);
            memmove(r + best, r + best + 1, (m - best - 2) * sizeof *r);
            m--;
            if (best > 0 && !merge_get(t, s[best - 1], s[best], &r[best - 1], &nid)) r[best - 1] = UINT32_MAX;
            if (best + 1 < m && !merge_get(t, s[best], s[best + 1], &r[best], &nid)) r[best] = UINT32_MAX;
        }
        for (size_t i = 0; i < m; i++) tok_iv_push(out, s[i]);
        return;
    }
    /* Long words: linked list of symbols + min-heap keyed by (rank, position). */
    work_reserve(w, m + 1);
    int32_t *prev = w->prev, *next = w->next;
    uint64_t *h = w->heap;
    size_t hn = 0;
    for (size_t i = 0; i < m; i++) {
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < m ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < m; i++) {
        uint32_t rk;
        int32_t nid;
        if (merge_get(t, s[i], s[i + 1], &rk, &nid)) heap_push(h, &hn, ((uint64_t)rk << 32) | i);
    }
    while (hn) {
        uint64_t top = heap_pop(h, &hn);
        uint32_t rk = (uint32_t)(top >> 32), pos = (uint32_t)top, crk;
        int32_t nid;
        if (s[pos] < 0 || next[pos] < 0) continue; /* symbol gone or last */
        int32_t nx = next[pos];
        if (!merge_get(t, s[pos], s[nx], &crk, &nid) || crk != rk) continue; /* stale entry */
        s[pos] = nid;
        s[nx] = -1;
        next[pos] = next[nx];
        if (next[nx] >= 0) prev[next[nx]] = (int32_t)pos;
        if (prev[pos] >= 0) {
            int32_t p = prev[pos];
            if (merge_get(t, s[p], s[pos], &crk, &nid)) heap_push(h, &hn, ((uint64_t)crk << 32) | (uint32_t)p);
        }
        if (next[pos] >= 0) {
            if (merge_get(t, s[pos], s[next[pos]], &crk, &nid)) heap_push(h, &hn, ((uint64_t)crk << 32) | pos);
        }
    }
    for (int32_t i = 0; i >= 0; i = next[i]) tok_iv_push(out, s[i]);
}

static int cache_get(ft_tokenizer *t, const uint8_t *w, size_t n, uint32_t h, tok_ivec *out) {
    int hit = 0;
    if (pthread_mutex_trylock(&t->cmu) != 0) return 0;
    if (t->cslots) {
        uint32_t i = h & (CACHE_SLOTS - 1);
        for (int probe = 0; probe < 8; probe++, i = (i + 1) & (CACHE_SLOTS - 1)) {
            tok_cache_slot *c = &t->cslots[i];
            if (c->klen == 0) break;
            if (c->hash == h && c->klen == n && memcmp(t->carena + c->off, w, n) == 0) {
                const uint8_t *p = t->carena + c->off + ((n + 3) & ~(size_t)3);
                for (uint32_t k = 0; k < c->nids; k++) {
                    int32_t id;
                    memcpy(&id, p + 4 * k, 4);
                    tok_iv_push(out, id);
                }
                hit = 1;
                break;
            }
        }
    }
    pthread_mutex_unlock(&t->cmu);
    return hit;
}

static void cache_put(ft_tokenizer *t, const uint8_t *w, size_t n, uint32_t h, const int32_t *ids, size_t nids) {
    if (pthread_mutex_trylock(&t->cmu) != 0) return;
    size_t need = ((n + 3) & ~(size_t)3) + 4 * nids;
    if (!t->cslots) {
        t->cslots = calloc(CACHE_SLOTS, sizeof *t->cslots);
        t->carena = malloc(CACHE_ARENA);
        if (!t->cslots || !t->carena) {
            free(t->cslots), free(t->carena);
            t->cslots = NULL, t->carena = NULL;
            goto done;
        }
    }
    if (t->cused + need > CACHE_ARENA || t->ccount >= CACHE_SLOTS / 2) { /* full: start over */
        memset(t->cslots, 0, CACHE_SLOTS * sizeof *t->cslots);
        t->cused = t->ccount = 0;
    }
    uint32_t i = h & (CACHE_SLOTS - 1);
    for (int probe = 0; probe < 8; probe++, i = (i + 1) & (CACHE_SLOTS - 1)) {
        tok_cache_slot *c = &t->cslots[i];
        if (c->klen != 0) continue;
        c->hash = h;
        c->klen = (uint32_t)n;
        c->nids = (uint32_t)nids;
        c->off = t->cused;
        memcpy(t->carena + c->off, w, n);
        memcpy(t->carena + c->off + ((n + 3) & ~(size_t)3), ids, 4 * nids);
        t->cused += (uint32_t)need;
        t->ccount++;
        break;
    }
done:
    pthread_mutex_unlock(&t->cmu);
}

static void bpe_word(const ft_tokenizer *ct, tok_bpe_work *w, const uint8_t *s, size_t n, tok_ivec *out) {
    ft_tokenizer *t = (ft_tokenizer *)ct; /* the cache is the only mutable state */
    if (n == 0) return;
    uint32_t h = 0;
    int cacheable = n <= CACHE_MAX_WORD;
    if (cacheable) {
        h = tok_hash_bytes(s, n);
        if (cache_get(t, s, n, h, out)) return;
    }
    size_t before = out->n;
    if (t->ignore_merges) {
        int32_t id = -1;
        if (t->byte_level) {
            tok_sbuf b = {0};
            for (size_t i = 0; i < n; i++) tok_sb_put(&b, t->bl_str[s[i]], t->bl_len[s[i]]);
            id = tok_vocab_get(t, b.s, b.n);
            free(b.s);
        } else {
            id = tok_vocab_get(t, (const char *)s, n);
        }
        if (id >= 0) {
            tok_iv_push(out, id);
            goto store;
        }
    }
    w->sym.n = 0;
    word_symbols(t, s, n, &w->sym);
    bpe_merge(t, w, out);
store:
    if (cacheable && out->n > before) cache_put(t, s, n, h, out->v + before, out->n - before);
}

/* A SentencePiece-style word, cut before each U+2581 run that follows another character when
 * no merge can join across such a cut (checked at load), so long texts stay linear. */
void tok_model_word(const ft_tokenizer *t, tok_bpe_work *w, const uint8_t *s, size_t n, tok_ivec *out) {
    if (!t->ms_split_ok || t->byte_level || t->ignore_merges) {
        bpe_word(t, w, s, n, out);
        return;
    }
    size_t start = 0;
    for (size_t i = 1; i + 2 < n; i++) {
        if (s[i] == 0xE2 && s[i + 1] == 0x96 && s[i + 2] == 0x81 &&
            !(i >= 3 && s[i - 3] == 0xE2 && s[i - 2] == 0x96 && s[i - 1] == 0x81)) {
            bpe_word(t, w, s + start, i - start, out);
            start = i;
            i += 2;
        }
    }
    bpe_word(t, w, s + start, n - start, out);
}

/* ---------- loading ---------- */

int tok_bpe_load_vocab(ft_tokenizer *t, const cJSON *model, const char *where, size_t *distinct_out,
                       int32_t *maxid_out, ft_error *e) {
    const char *type = tok_json_str(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (type && strcmp(type, "BPE") != 0)
        return ft_fail(e, FT_EINPUT, "%s: model.type \"%s\" is unsupported (only BPE)", where, type);
    if (!type && !merges)
        return ft_fail(e, FT_EINPUT, "%s: model: no \"type\" and no \"merges\"; only BPE models are supported", where);
    if (!cJSON_IsObject(vocab)) return ft_fail(e, FT_EINPUT, "%s: model.vocab: expected an object", where);
    if (!cJSON_IsArray(merges)) return ft_fail(e, FT_EINPUT, "%s: model.merges: expected an array", where);
    const char *csp = tok_json_str(model, "continuing_subword_prefix");
    const char *ews = tok_json_str(model, "end_of_word_suffix");
    if ((csp && *csp) || (ews && *ews))
        return ft_fail(e, FT_EINPUT, "%s: model: continuing_subword_prefix / end_of_word_suffix are unsupported", where);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0 && dropout->valuedouble < 1)
        return ft_fail(e, FT_EINPUT, "%s: model.dropout: BPE dropout is unsupported (set it to null)", where);
    t->fuse_unk = tok_json_bool(model, "fuse_unk", 0);
    t->byte_fallback = tok_json_bool(model, "byte_fallback", 0);
    t->ignore_merges = tok_json_bool(model, "ignore_merges", 0);

    /* vocab */
    size_t nv = 0, bytes = 0, distinct = 0;
    int32_t maxid = -1;
    const cJSON *x;
    cJSON_ArrayForEach(x, vocab) {
        if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 16777216 || x->valuedouble != (int32_t)x->valuedouble)
            return ft_fail(e, FT_EINPUT, "%s: model.vocab[\"%.80s\"]: expected an id in [0, 16777216]", where,
                           x->string ? x->string : "");
        nv++;
        bytes += strlen(x->string) + 1;
        if ((int32_t)x->valuedouble > maxid) maxid = (int32_t)x->valuedouble;
    }
    t->nv = nv;
    t->v_s = ft_xmalloc((nv + 1) * sizeof *t->v_s);
    t->v_len = ft_xmalloc((nv + 1) * sizeof *t->v_len);
    t->v_id = ft_xmalloc((nv + 1) * sizeof *t->v_id);
    t->v_arena = ft_xmalloc(bytes + 1);
    uint32_t cap = pow2_at_least(nv * 2 + 1);
    t->vh = ft_xmalloc(cap * sizeof *t->vh);
    t->vh_mask = cap - 1;
    memset(t->vh, 0xFF, cap * sizeof *t->vh);
    size_t off = 0, i = 0;
    cJSON_ArrayForEach(x, vocab) {
        size_t l = strlen(x->string);
        memcpy(t->v_arena + off, x->string, l + 1);
        t->v_s[i] = t->v_arena + off;
        t->v_len[i] = (uint32_t)l;
        t->v_id[i] = (int32_t)x->valuedouble;
        off += l + 1;
        uint32_t h = tok_hash_bytes(x->string, l) & t->vh_mask;
        while (t->vh[h] >= 0 && !(t->v_len[t->vh[h]] == l && memcmp(t->v_s[t->vh[h]], x->string, l) == 0))
            h = (h + 1) & t->vh_mask;
        if (t->vh[h] < 0) distinct++;
        t->vh[h] = (int32_t)i; /* a duplicate key keeps the last id, like a JSON map */
        i++;
    }
    *distinct_out = distinct;
    *maxid_out = maxid;
    return FT_OK;
}

int tok_bpe_load_merges(ft_tokenizer *t, const cJSON *model, const char *where, ft_error *e) {
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *x;
    size_t nv = t->nv;
    t->char_id = ft_xmalloc(0x10000 * sizeof *t->char_id);
    memset(t->char_id, 0xFF, 0x10000 * sizeof *t->char_id);
    for (size_t v = 0; v < nv; v++) {
        uint32_t cp;
        if (t->v_len[v] == 0) continue;
        size_t bad, l = tok_utf8_check((const uint8_t *)t->v_s[v], t->v_len[v], &bad);
        if (l && l == t->v_len[v]) {
            tok_utf8_dec((const uint8_t *)t->v_s[v], &cp);
            if (cp < 0x10000) t->char_id[cp] = tok_vocab_get(t, t->v_s[v], l);
        }
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->fallback_id[b] = tok_vocab_get(t, name, 6);
    }
    const char *unk = tok_json_str(model, "unk_token");
    t->unk_id = -1;
    if (unk) {
        t->unk_id = tok_vocab_get(t, unk, strlen(unk));
        if (t->unk_id < 0)
            return ft_fail(e, FT_EINPUT, "%s: model.unk_token \"%.80s\" is not in model.vocab", where, unk);
    }

    /* merges */
    size_t nm = (size_t)cJSON_GetArraySize(merges);
    uint32_t cap = pow2_at_least(nm * 2 + 1);
    t->mk = ft_xmalloc(cap * sizeof *t->mk);
    t->mrank = ft_xmalloc(cap * sizeof *t->mrank);
    t->mnew = ft_xmalloc(cap * sizeof *t->mnew);
    t->mmask = cap - 1;
    memset(t->mrank, 0xFF, cap * sizeof *t->mrank);
    t->nmerges = nm;
    t->ms_split_ok = 1;
    tok_sbuf cat = {0};
    uint32_t rank = 0;
    cJSON_ArrayForEach(x, merges) {
        const char *a, *b;
        size_t al, bl;
        if (cJSON_IsString(x)) {
            const char *sp = strchr(x->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' '))
                return ft_fail(e, FT_EINPUT, "%s: model.merges[%u]: \"%.80s\" is not two tokens separated by one space",
                               where, rank, x->valuestring);
            a = x->valuestring, al = (size_t)(sp - a);
            b = sp + 1, bl = strlen(b);
        } else if (cJSON_IsArray(x) && cJSON_GetArraySize(x) == 2 && cJSON_IsString(cJSON_GetArrayItem(x, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(x, 1))) {
            a = cJSON_GetArrayItem(x, 0)->valuestring, al = strlen(a);
            b = cJSON_GetArrayItem(x, 1)->valuestring, bl = strlen(b);
        } else {
            free(cat.s);
            return ft_fail(e, FT_EINPUT, "%s: model.merges[%u]: expected \"a b\" or [\"a\", \"b\"]", where, rank);
        }
        int32_t ia = tok_vocab_get(t, a, al), ib = tok_vocab_get(t, b, bl);
        cat.n = 0;
        tok_sb_put(&cat, a, al);
        tok_sb_put(&cat, b, bl);
        int32_t inew = tok_vocab_get(t, cat.s, cat.n);
        if (ia < 0 || ib < 0 || inew < 0) {
            char miss[128];
            snprintf(miss, sizeof miss, "%.*s", (int)(ia < 0 ? (al > 80 ? 80 : al) : ib < 0 ? (bl > 80 ? 80 : bl) : (cat.n > 80 ? 80 : cat.n)),
                     ia < 0 ? a : ib < 0 ? b : cat.s);
            free(cat.s);
            return ft_fail(e, FT_EINPUT, "%s: model.merges[%u]: token \"%s\" is not in model.vocab", where, rank, miss);
        }
        merge_put(t, ia, ib, rank, inew);
        /* a merge joining "..x" with "▁.." would cross a cut point of tok_model_word */
        int a_ends = al >= 3 && memcmp(a + al - 3, "\xE2\x96\x81", 3) == 0;
        int b_starts = bl >= 3 && memcmp(b, "\xE2\x96\x81", 3) == 0;
        if (b_starts && !a_ends) t->ms_split_ok = 0;
        rank++;
    }
    free(cat.s);
    return FT_OK;
}

void tok_bpe_byte_level_init(ft_tokenizer *t) {
    uint32_t map[256];
    tok_byte_level_table(map);
    for (int b = 0; b < 256; b++) {
        t->bl_len[b] = (uint8_t)tok_utf8_enc(map[b], t->bl_str[b]);
        t->bl_id[b] = tok_vocab_get(t, t->bl_str[b], t->bl_len[b]);
    }
}
