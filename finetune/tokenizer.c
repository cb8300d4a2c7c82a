/* tokenizer: Hugging Face tokenizer.json BPE (SentencePiece-style and GPT-2 byte-level) in C.
 *
 * Pipeline, as in HF tokenizers: split the text on added tokens (non-normalized ones on the raw
 * text, normalized ones after the normalizer), normalize, pre-tokenize, BPE each piece, then the
 * post-processor's template. Pieces go through the pre-tokenizer stages recursively so no piece
 * list is materialised. BPE uses per-pair rank arrays for short words and a binary heap over a
 * linked list of symbols for long ones; a small word -> ids cache sits in front of it. */
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_unicode.h"

/* ---------- small helpers ---------- */

typedef struct {
    int32_t *v;
    size_t n, cap;
} ivec;

static void iv_push(ivec *a, int32_t x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = ft_xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = x;
}

typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const void *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2 + 32;
        b->s = ft_xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, p, n);
    b->n += n;
    b->s[b->n] = 0;
}

static uint32_t hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    return h;
}

static uint32_t pow2_at_least(size_t n) {
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* Decode one code point of valid UTF-8 (already checked); returns its byte length. */
static int utf8_dec(const uint8_t *s, uint32_t *cp) {
    if (s[0] < 0x80) { *cp = s[0]; return 1; }
    if (s[0] < 0xE0) { *cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F); return 2; }
    if (s[0] < 0xF0) {
        *cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
          (s[3] & 0x3F);
    return 4;
}

static int utf8_enc(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid. When invalid, *bad is the
 * length of its maximal valid prefix (>= 1), the unit Rust's from_utf8_lossy replaces. */
static size_t utf8_check(const uint8_t *s, size_t n, size_t *bad) {
    uint8_t c = s[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *bad = 1;
        return 0;
    }
    for (size_t k = 1; k <= need; k++) {
        uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (k >= n || s[k] < l || s[k] > h) {
            *bad = k;
            return 0;
        }
    }
    return need + 1;
}

/* Rust String::from_utf8_lossy: each maximal invalid subpart becomes U+FFFD. */
static void put_lossy(sbuf *o, const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t bad = 0, l = utf8_check(s + i, n - i, &bad);
        if (l) {
            sb_put(o, s + i, l);
            i += l;
        } else {
            sb_put(o, "\xEF\xBF\xBD", 3);
            i += bad;
        }
    }
}

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 upward. */
static void byte_level_table(uint32_t map[256]) {
    int k = 0;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        map[b] = keep ? (uint32_t)b : (uint32_t)(256 + k++);
    }
}

/* ---------- the tokenizer ---------- */

enum { NORM_PREPEND, NORM_REPLACE, NORM_NFC };
enum { PRE_METASPACE, PRE_BYTELEVEL, PRE_DIGITS, PRE_SPLIT };
enum { SPLIT_GPT2, SPLIT_LLAMA3, SPLIT_QWEN2 };
enum { SCHEME_ALWAYS, SCHEME_FIRST, SCHEME_NEVER };
enum { DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_BYTELEVEL, DEC_METASPACE };

typedef struct {
    int type;
    char *a, *b; /* prepend: a; replace: a -> b */
    size_t alen, blen;
} tok_norm;

typedef struct {
    int type;
    char repl[8]; /* Metaspace replacement (UTF-8) */
    size_t repl_len;
    int scheme, split;  /* Metaspace */
    int prefix_space;   /* ByteLevel add_prefix_space */
    int use_regex;      /* ByteLevel */
    int individual;     /* Digits */
    int pattern;        /* Split: which known regex */
} tok_pre;

typedef struct {
    int type;
    char *a, *b;
    size_t alen, blen;
    int start, stop; /* Strip */
    int scheme;      /* Metaspace */
} tok_dec;

typedef struct {
    int32_t id;
    char *s;
    size_t len;
    char *m; /* what is matched: the content, normalized when `normalized` */
    size_t mlen;
    int lstrip, rstrip, normalized, single_word, special;
} tok_added;

typedef struct {
    uint32_t hash, klen, nids;
    uint32_t off; /* into cache arena: key bytes then ids */
} cache_slot;

#define CACHE_SLOTS (1u << 15)
#define CACHE_ARENA (1u << 21)
#define CACHE_MAX_WORD 64

struct ft_tokenizer {
    /* model vocab: entry i is (v_s[i], v_len[i]) -> v_id[i] */
    size_t nv;
    char **v_s;
    uint32_t *v_len;
    int32_t *v_id;
    char *v_arena;
    int32_t *vh; /* hash slots -> entry index, -1 empty */
    uint32_t vh_mask;
    int32_t *char_id; /* single-code-point tokens for cp < 0x10000 (model vocab) */
    /* id -> string (added tokens override the model's) */
    int32_t n_ids;
    const char **id_s;
    uint32_t *id_len;
    uint8_t *id_special;
    /* merges: (a << 32 | b) -> rank, new id */
    uint64_t *mk;
    uint32_t *mrank;
    int32_t *mnew;
    uint32_t mmask;
    size_t nmerges;
    int32_t unk_id;
    int fuse_unk, byte_fallback, ignore_merges;
    int32_t fallback_id[256]; /* <0xXX> ids, -1 when absent */
    int byte_level;
    int32_t bl_id[256];   /* byte-level: id of each byte's mapped char */
    char bl_str[256][3];  /* mapped char as UTF-8 */
    uint8_t bl_len[256];
    int ms_split_ok; /* words may be cut before a U+2581 that follows another char */
    /* added tokens */
    tok_added *added;
    int n_added;
    uint8_t first_raw[256], first_norm[256];
    int has_norm_added;
    /* pipeline */
    tok_norm *norms;
    int n_norms;
    tok_pre *pres;
    int n_pres;
    int32_t *post_pre, *post_post;
    size_t n_post_pre, n_post_post;
    int has_decoder;
    tok_dec *decs;
    int n_decs;
    int32_t bos, eos;
    /* word cache (guarded; skipped when another thread holds it) */
    pthread_mutex_t cmu;
    cache_slot *cslots;
    uint8_t *carena;
    uint32_t cused, ccount;
};

static int32_t vocab_get(const ft_tokenizer *t, const char *s, size_t n) {
    if (!t->vh) return -1;
    uint32_t h = hash_bytes(s, n) & t->vh_mask;
    for (;;) {
        int32_t e = t->vh[h];
        if (e < 0) return -1;
        if (t->v_len[e] == n && memcmp(t->v_s[e], s, n) == 0) return t->v_id[e];
        h = (h + 1) & t->vh_mask;
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
static void word_symbols(const ft_tokenizer *t, const uint8_t *w, size_t n, ivec *sym) {
    if (t->byte_level) {
        for (size_t i = 0; i < n; i++)
            if (t->bl_id[w[i]] >= 0) iv_push(sym, t->bl_id[w[i]]);
            else if (t->unk_id >= 0) iv_push(sym, t->unk_id);
        return;
    }
    int pending_unk = 0;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int l = utf8_dec(w + i, &cp);
        int32_t id = cp < 0x10000 ? t->char_id[cp] : vocab_get(t, (const char *)w + i, (size_t)l);
        if (id >= 0) {
            if (pending_unk) iv_push(sym, t->unk_id), pending_unk = 0;
            iv_push(sym, id);
        } else {
            int ok = t->byte_fallback;
            for (int k = 0; ok && k < l; k++) ok = t->fallback_id[w[i + k]] >= 0;
            if (ok) {
                if (pending_unk) iv_push(sym, t->unk_id), pending_unk = 0;
                for (int k = 0; k < l; k++) iv_push(sym, t->fallback_id[w[i + k]]);
            } else if (t->unk_id >= 0) {
                if (pending_unk && !t->fuse_unk) iv_push(sym, t->unk_id);
                pending_unk = 1;
            } /* no unk token: the character is dropped, as HF does */
        }
        i += (size_t)l;
    }
    if (pending_unk) iv_push(sym, t->unk_id);
}

typedef struct {
    ivec sym;
    int32_t *prev, *next;
    uint32_t *rank;
    uint64_t *heap;
    size_t cap;
} bpe_work;

static void work_reserve(bpe_work *w, size_t n) {
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
static void bpe_merge(const ft_tokenizer *t, bpe_work *w, ivec *out) {
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
        for (size_t i = 0; i < m; i++) iv_push(out, s[i]);
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
    for (int32_t i = 0; i >= 0; i = next[i]) iv_push(out, s[i]);
}

static int cache_get(ft_tokenizer *t, const uint8_t *w, size_t n, uint32_t h, ivec *out) {
    int hit = 0;
    if (pthread_mutex_trylock(&t->cmu) != 0) return 0;
    if (t->cslots) {
        uint32_t i = h & (CACHE_SLOTS - 1);
        for (int probe = 0; probe < 8; probe++, i = (i + 1) & (CACHE_SLOTS - 1)) {
            cache_slot *c = &t->cslots[i];
            if (c->klen == 0) break;
            if (c->hash == h && c->klen == n && memcmp(t->carena + c->off, w, n) == 0) {
                const uint8_t *p = t->carena + c->off + ((n + 3) & ~(size_t)3);
                for (uint32_t k = 0; k < c->nids; k++) {
                    int32_t id;
                    memcpy(&id, p + 4 * k, 4);
                    iv_push(out, id);
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
        cache_slot *c = &t->cslots[i];
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

static void bpe_word(const ft_tokenizer *ct, bpe_work *w, const uint8_t *s, size_t n, ivec *out) {
    ft_tokenizer *t = (ft_tokenizer *)ct; /* the cache is the only mutable state */
    if (n == 0) return;
    uint32_t h = 0;
    int cacheable = n <= CACHE_MAX_WORD;
    if (cacheable) {
        h = hash_bytes(s, n);
        if (cache_get(t, s, n, h, out)) return;
    }
    size_t before = out->n;
    if (t->ignore_merges) {
        int32_t id = -1;
        if (t->byte_level) {
            sbuf b = {0};
            for (size_t i = 0; i < n; i++) sb_put(&b, t->bl_str[s[i]], t->bl_len[s[i]]);
            id = vocab_get(t, b.s, b.n);
            free(b.s);
        } else {
            id = vocab_get(t, (const char *)s, n);
        }
        if (id >= 0) {
            iv_push(out, id);
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
static void model_word(const ft_tokenizer *t, bpe_work *w, const uint8_t *s, size_t n, ivec *out) {
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
        int l = utf8_dec(s + i, &cp);
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
    int l0 = utf8_dec(s + i, &c0), l1 = 0;
    if (i + (size_t)l0 < n) l1 = utf8_dec(s + i + l0, &c1);
    if (c0 == '\'' && l1) {
        int a = pat == SPLIT_GPT2 ? (int)c1 : lower_ascii(c1);
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < n) {
            int b = pat == SPLIT_GPT2 ? s[i + 2] : lower_ascii(s[i + 2]);
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        }
    }
    int k0 = cls_of(c0), k1 = l1 ? cls_of(c1) : -1;
    if (pat == SPLIT_GPT2) {
        if (c0 == ' ' && l1 && k1 != 0) return run_of(s, n, i + 1, k1);
        if (k0 != 0) return run_of(s, n, i, k0);
    } else {
        if (k0 == 1) return run_of(s, n, i, 1);
        if (c0 != '\r' && c0 != '\n' && k0 != 2 && k1 == 1) return run_of(s, n, i + (size_t)l0, 1);
        if (k0 == 2) {
            if (pat == SPLIT_QWEN2) return i + (size_t)l0;
            size_t j = i;
            for (int d = 0; d < 3 && j < n; d++) {
                uint32_t cp;
                int l = utf8_dec(s + j, &cp);
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

typedef struct {
    bpe_work w;
    ivec *out;
} enc_ctx;

static void pre_stage(const ft_tokenizer *t, int k, const uint8_t *s, size_t n, int at_start, enc_ctx *c);

static void pre_metaspace(const ft_tokenizer *t, const tok_pre *p, int k, const uint8_t *s, size_t n,
                          int at_start, enc_ctx *c) {
    sbuf b = {0};
    int starts = n >= p->repl_len && memcmp(s, p->repl, p->repl_len) == 0;
    int prepend = (p->scheme == SCHEME_ALWAYS || (p->scheme == SCHEME_FIRST && at_start));
    if (prepend && !(starts || (n > 0 && s[0] == ' '))) sb_put(&b, p->repl, p->repl_len);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            if (i > run) sb_put(&b, s + run, i - run);
            sb_put(&b, p->repl, p->repl_len);
            run = i + 1;
        }
    }
    if (n > run) sb_put(&b, s + run, n - run);
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

static void pre_stage(const ft_tokenizer *t, int k, const uint8_t *s, size_t n, int at_start, enc_ctx *c) {
    if (n == 0) return;
    if (k == t->n_pres) {
        model_word(t, &c->w, s, n, c->out);
        return;
    }
    const tok_pre *p = &t->pres[k];
    switch (p->type) {
    case PRE_METASPACE:
        pre_metaspace(t, p, k, s, n, at_start, c);
        return;
    case PRE_DIGITS: {
        size_t i = 0, start = 0;
        while (i < n) {
            uint32_t cp;
            int l = utf8_dec(s + i, &cp);
            if (tok_uni_is_number(cp)) {
                size_t e = i + (size_t)l;
                if (!p->individual)
                    while (e < n) {
                        int l2 = utf8_dec(s + e, &cp);
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
    case PRE_BYTELEVEL:
    case PRE_SPLIT: {
        uint8_t *own = NULL;
        if (p->type == PRE_BYTELEVEL && p->prefix_space && s[0] != ' ') {
            own = ft_xmalloc(n + 1);
            own[0] = ' ';
            memcpy(own + 1, s, n);
            s = own, n++;
        }
        if (p->type == PRE_BYTELEVEL && !p->use_regex) {
            pre_stage(t, k + 1, s, n, at_start, c);
        } else {
            int pat = p->type == PRE_BYTELEVEL ? SPLIT_GPT2 : p->pattern;
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

/* ---------- added tokens ---------- */

static int is_word_char(uint32_t cp) { return cp == '_' || tok_uni_is_letter(cp) || tok_uni_is_number(cp); }

static uint32_t last_cp(const uint8_t *s, size_t end) {
    size_t i = end - 1;
    while (i > 0 && (s[i] & 0xC0) == 0x80) i--;
    uint32_t cp;
    utf8_dec(s + i, &cp);
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

typedef void (*piece_fn)(const ft_tokenizer *t, const uint8_t *s, size_t n, int at_start, enc_ctx *c);

/* Split s on added tokens (HF AddedVocabulary::find_matches): pieces between matches go to fn,
 * matched tokens are emitted as their ids. */
static void split_added(const ft_tokenizer *t, int norm, const uint8_t *s, size_t n, int at_start, enc_ctx *c,
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
            if (me < n) utf8_dec(s + me, &cp);
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
                utf8_dec(s + q, &cp);
                if (!tok_uni_is_space(cp)) break;
                ns = q;
            }
            st = ns > start_off ? ns : start_off;
        }
        if (x->rstrip) {
            while (sp < n) {
                uint32_t cp;
                int l = utf8_dec(s + sp, &cp);
                if (!tok_uni_is_space(cp)) break;
                sp += (size_t)l;
            }
        }
        if (st > start_off) fn(t, s + start_off, st - start_off, at_start && start_off == 0, c);
        iv_push(c->out, x->id);
        start_off = sp > start_off ? sp : start_off;
        if (pos < start_off) pos = start_off;
    }
    if (n > start_off) fn(t, s + start_off, n - start_off, at_start && start_off == 0, c);
}

static void piece_pretok(const ft_tokenizer *t, const uint8_t *s, size_t n, int at_start, enc_ctx *c) {
    pre_stage(t, 0, s, n, at_start, c);
}

/* Normalizers (HF skips empty strings: Prepend only prepends to non-empty text). */
static void normalize(const ft_tokenizer *t, const uint8_t *s, size_t n, sbuf *out) {
    sbuf a = {0}, b = {0};
    sb_put(&a, s, n);
    for (int k = 0; k < t->n_norms; k++) {
        const tok_norm *nm = &t->norms[k];
        b.n = 0;
        if (nm->type == NORM_PREPEND) {
            if (a.n) sb_put(&b, nm->a, nm->alen);
            sb_put(&b, a.s, a.n);
        } else if (nm->type == NORM_REPLACE) {
            size_t i = 0, run = 0;
            while (nm->alen && i + nm->alen <= a.n) {
                if (memcmp(a.s + i, nm->a, nm->alen) == 0) {
                    sb_put(&b, a.s + run, i - run);
                    sb_put(&b, nm->b, nm->blen);
                    i += nm->alen;
                    run = i;
                } else {
                    i++;
                }
            }
            sb_put(&b, a.s + run, a.n - run);
        } else {
            sb_put(&b, a.s, a.n); /* NFC: identity on the text tok_encode lets through */
        }
        sbuf tmp = a;
        a = b;
        b = tmp;
    }
    free(b.s);
    *out = a;
}

static void piece_normalize(const ft_tokenizer *t, const uint8_t *s, size_t n, int at_start, enc_ctx *c) {
    if (t->n_norms == 0) {
        if (t->has_norm_added) split_added(t, 1, s, n, at_start, c, piece_pretok);
        else pre_stage(t, 0, s, n, at_start, c);
        return;
    }
    sbuf b = {0};
    normalize(t, s, n, &b);
    if (b.n) {
        if (t->has_norm_added) split_added(t, 1, (const uint8_t *)b.s, b.n, at_start, c, piece_pretok);
        else pre_stage(t, 0, (const uint8_t *)b.s, b.n, at_start, c);
    }
    free(b.s);
}

static int needs_nfc(const ft_tokenizer *t) {
    for (int k = 0; k < t->n_norms; k++)
        if (t->norms[k].type == NORM_NFC) return 1;
    return 0;
}

int tok_encode(const ft_tokenizer *t, const char *text, size_t len, int special, int32_t **ids, size_t *n,
               ft_error *e) {
    *ids = NULL;
    *n = 0;
    if (!t) return ft_fail(e, FT_EINTERNAL, "tok_encode: no tokenizer");
    if (!text && len) return ft_fail(e, FT_EINPUT, "tok_encode: NULL text");
    const uint8_t *s = (const uint8_t *)text;
    int nfc = needs_nfc(t);
    for (size_t i = 0; i < len;) {
        size_t bad = 0, l = utf8_check(s + i, len - i, &bad);
        if (!l) return ft_fail(e, FT_EINPUT, "invalid UTF-8 at byte %zu of the text", i);
        if (nfc && s[i] >= 0xCC)
            return ft_fail(e, FT_EINPUT,
                           "text byte %zu: the NFC normalizer is only implemented for text below U+0300 "
                           "(where NFC changes nothing)", i);
        i += l;
    }
    ivec out = {0};
    enc_ctx c = {.out = &out};
    if (special)
        for (size_t i = 0; i < t->n_post_pre; i++) iv_push(&out, t->post_pre[i]);
    split_added(t, 0, s, len, 1, &c, piece_normalize);
    if (special)
        for (size_t i = 0; i < t->n_post_post; i++) iv_push(&out, t->post_post[i]);
    free(c.w.sym.v);
    free(c.w.prev), free(c.w.next), free(c.w.rank), free(c.w.heap);
    if (!out.v) out.v = ft_xmalloc(sizeof(int32_t));
    *ids = out.v;
    *n = out.n;
    return FT_OK;
}

/* ---------- decoding ---------- */

typedef struct {
    sbuf *v;
    size_t n;
} toklist;

static void tl_set(sbuf *x, const char *s, size_t n) {
    x->n = 0;
    sb_put(x, s, n);
}

static int parse_byte_token(const sbuf *x, uint8_t *b) {
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

static void replace_all(sbuf *x, const char *a, size_t alen, const char *b, size_t blen) {
    if (!alen || x->n < alen) return;
    sbuf o = {0};
    size_t i = 0, run = 0;
    while (i + alen <= x->n) {
        if (memcmp(x->s + i, a, alen) == 0) {
            sb_put(&o, x->s + run, i - run);
            sb_put(&o, b, blen);
            i += alen;
            run = i;
        } else {
            i++;
        }
    }
    sb_put(&o, x->s + run, x->n - run);
    free(x->s);
    *x = o;
}

static void decode_step(const ft_tokenizer *t, const tok_dec *d, toklist *L) {
    switch (d->type) {
    case DEC_REPLACE:
        for (size_t i = 0; i < L->n; i++) replace_all(&L->v[i], d->a, d->alen, d->b, d->blen);
        return;
    case DEC_METASPACE:
        for (size_t i = 0; i < L->n; i++) {
            replace_all(&L->v[i], d->a, d->alen, " ", 1);
            if (i == 0 && d->scheme != SCHEME_NEVER && L->v[0].n && L->v[0].s[0] == ' ') {
                memmove(L->v[0].s, L->v[0].s + 1, L->v[0].n);
                L->v[0].n--;
            }
        }
        return;
    case DEC_FUSE:
        for (size_t i = 1; i < L->n; i++) {
            if (L->v[i].n) sb_put(&L->v[0], L->v[i].s, L->v[i].n);
            free(L->v[i].s);
        }
        if (L->n > 1) L->n = 1;
        return;
    case DEC_STRIP:
        for (size_t i = 0; i < L->n; i++) {
            sbuf *x = &L->v[i];
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
    case DEC_BYTEFALLBACK: {
        size_t w = 0;
        sbuf bytes = {0};
        size_t nbytes = 0;
        sbuf *v = L->v;
        for (size_t i = 0; i <= L->n; i++) {
            uint8_t b;
            if (i < L->n && parse_byte_token(&v[i], &b)) {
                sb_put(&bytes, &b, 1);
                nbytes++;
                free(v[i].s);
                v[i].s = NULL;
                continue;
            }
            if (nbytes) { /* flush: valid UTF-8 as is, else one U+FFFD per byte */
                int ok = 1;
                for (size_t k = 0; k < bytes.n && ok;) {
                    size_t bad, l = utf8_check((uint8_t *)bytes.s + k, bytes.n - k, &bad);
                    if (!l) ok = 0;
                    k += l;
                }
                sbuf o = {0};
                if (ok) sb_put(&o, bytes.s, bytes.n);
                else
                    for (size_t k = 0; k < nbytes; k++) sb_put(&o, "\xEF\xBF\xBD", 3);
                if (!o.s) sb_put(&o, "", 0);
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
    case DEC_BYTELEVEL: {
        /* per token: map chars back to bytes, or keep the raw token if a char has no byte */
        uint32_t map[256];
        int16_t inv[512];
        byte_level_table(map);
        for (int q = 0; q < 512; q++) inv[q] = -1;
        for (int q = 0; q < 256; q++) inv[map[q]] = (int16_t)q;
        (void)t;
        sbuf bytes = {0};
        for (size_t i = 0; i < L->n; i++) {
            sbuf *x = &L->v[i];
            size_t mark = bytes.n;
            int ok = 1;
            for (size_t k = 0; k < x->n && ok;) {
                uint32_t cp;
                size_t bad, l = utf8_check((uint8_t *)x->s + k, x->n - k, &bad);
                if (!l) { ok = 0; break; }
                utf8_dec((uint8_t *)x->s + k, &cp);
                if (cp >= 512 || inv[cp] < 0) { ok = 0; break; }
                uint8_t bb = (uint8_t)inv[cp];
                sb_put(&bytes, &bb, 1);
                k += l;
            }
            if (!ok) {
                bytes.n = mark;
                sb_put(&bytes, x->s, x->n);
            }
            free(x->s);
        }
        sbuf o = {0};
        put_lossy(&o, (uint8_t *)bytes.s, bytes.n);
        if (!o.s) sb_put(&o, "", 0);
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
    toklist L = {ft_xcalloc(n + 1, sizeof(sbuf)), 0};
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !t->id_s[id]) continue; /* unknown ids are dropped, as HF does */
        if (skip_special && t->id_special[id]) continue;
        tl_set(&L.v[L.n++], t->id_s[id], t->id_len[id]);
    }
    sbuf out = {0};
    if (!t->has_decoder) {
        for (size_t i = 0; i < L.n; i++) {
            if (i) sb_put(&out, " ", 1);
            sb_put(&out, L.v[i].s, L.v[i].n);
        }
    } else if (L.n) {
        for (int k = 0; k < t->n_decs; k++) decode_step(t, &t->decs[k], &L);
        for (size_t i = 0; i < L.n; i++) sb_put(&out, L.v[i].s, L.v[i].n);
    }
    for (size_t i = 0; i < L.n; i++) free(L.v[i].s);
    free(L.v);
    if (!out.s) sb_put(&out, "", 0);
    *text = out.s;
    return FT_OK;
}

/* ---------- loading ---------- */

static int json_bool(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

static const char *json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Pattern object {"String": ...} or {"Regex": ...}; only String is supported. */
static int pattern_string(const cJSON *o, const char *where, const char *key, const char **out, ft_error *e) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const char *s = json_str(p, "String");
    if (!s) {
        if (json_str(p, "Regex"))
            return ft_fail(e, FT_EINPUT, "%s: %s.pattern: Regex patterns are unsupported (only String)", where, key);
        return ft_fail(e, FT_EINPUT, "%s: %s.pattern: expected {\"String\": ...}", where, key);
    }
    *out = s;
    return FT_OK;
}

static int load_normalizer(ft_tokenizer *t, const cJSON *n, const char *where, const char *key, ft_error *e) {
    if (!n || cJSON_IsNull(n)) return FT_OK;
    const char *type = json_str(n, "type");
    if (!type) return ft_fail(e, FT_EINPUT, "%s: %s: missing \"type\"", where, key);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list)) return ft_fail(e, FT_EINPUT, "%s: %s.normalizers: expected an array", where, key);
        int i = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, list) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", key, i++);
            int rc = load_normalizer(t, x, where, sub, e);
            if (rc) return rc;
        }
        return FT_OK;
    }
    tok_norm nm = {0};
    if (strcmp(type, "Prepend") == 0) {
        const char *p = json_str(n, "prepend");
        if (!p) return ft_fail(e, FT_EINPUT, "%s: %s.prepend: expected a string", where, key);
        nm.type = NORM_PREPEND;
        nm.a = ft_xstrdup(p);
        nm.alen = strlen(p);
    } else if (strcmp(type, "Replace") == 0) {
        const char *pat, *content = json_str(n, "content");
        int rc = pattern_string(n, where, key, &pat, e);
        if (rc) return rc;
        if (!content) return ft_fail(e, FT_EINPUT, "%s: %s.content: expected a string", where, key);
        nm.type = NORM_REPLACE;
        nm.a = ft_xstrdup(pat), nm.alen = strlen(pat);
        nm.b = ft_xstrdup(content), nm.blen = strlen(content);
    } else if (strcmp(type, "NFC") == 0) {
        nm.type = NORM_NFC;
    } else {
        return ft_fail(e, FT_EINPUT, "%s: %s: unsupported normalizer type \"%s\"", where, key, type);
    }
    t->norms = ft_xrealloc(t->norms, (size_t)(t->n_norms + 1) * sizeof *t->norms);
    t->norms[t->n_norms++] = nm;
    return FT_OK;
}

static int parse_scheme(const cJSON *n, const char *where, const char *key, int *out, ft_error *e) {
    const char *s = json_str(n, "prepend_scheme");
    if (!s) { /* older files: add_prefix_space */
        *out = json_bool(n, "add_prefix_space", 1) ? SCHEME_ALWAYS : SCHEME_NEVER;
        return FT_OK;
    }
    if (strcmp(s, "always") == 0) *out = SCHEME_ALWAYS;
    else if (strcmp(s, "first") == 0) *out = SCHEME_FIRST;
    else if (strcmp(s, "never") == 0) *out = SCHEME_NEVER;
    else return ft_fail(e, FT_EINPUT, "%s: %s.prepend_scheme: \"%s\" is not always/first/never", where, key, s);
    return FT_OK;
}

static const char *RX_GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char *RX_LLAMA3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                               "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *RX_QWEN2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                              "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static int load_pretok(ft_tokenizer *t, const cJSON *n, const char *where, const char *key, ft_error *e) {
    if (!n || cJSON_IsNull(n)) return FT_OK;
    const char *type = json_str(n, "type");
    if (!type) return ft_fail(e, FT_EINPUT, "%s: %s: missing \"type\"", where, key);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "pretokenizers");
        if (!cJSON_IsArray(list)) return ft_fail(e, FT_EINPUT, "%s: %s.pretokenizers: expected an array", where, key);
        int i = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, list) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", key, i++);
            int rc = load_pretok(t, x, where, sub, e);
            if (rc) return rc;
        }
        return FT_OK;
    }
    tok_pre p = {0};
    if (strcmp(type, "Metaspace") == 0) {
        const char *r = json_str(n, "replacement");
        if (!r || !*r || strlen(r) >= sizeof p.repl)
            return ft_fail(e, FT_EINPUT, "%s: %s.replacement: expected one character", where, key);
        p.type = PRE_METASPACE;
        strcpy(p.repl, r);
        p.repl_len = strlen(r);
        p.split = json_bool(n, "split", 1);
        int rc = parse_scheme(n, where, key, &p.scheme, e);
        if (rc) return rc;
    } else if (strcmp(type, "ByteLevel") == 0) {
        p.type = PRE_BYTELEVEL;
        p.prefix_space = json_bool(n, "add_prefix_space", 1);
        p.use_regex = json_bool(n, "use_regex", 1);
        t->byte_level = 1;
    } else if (strcmp(type, "Digits") == 0) {
        p.type = PRE_DIGITS;
        p.individual = json_bool(n, "individual_digits", 0);
    } else if (strcmp(type, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *rx = json_str(pat, "Regex");
        const char *beh = json_str(n, "behavior");
        if (!rx) return ft_fail(e, FT_EINPUT, "%s: %s.pattern: only known Regex patterns are supported", where, key);
        if (strcmp(rx, RX_GPT2) == 0) p.pattern = SPLIT_GPT2;
        else if (strcmp(rx, RX_LLAMA3) == 0) p.pattern = SPLIT_LLAMA3;
        else if (strcmp(rx, RX_QWEN2) == 0) p.pattern = SPLIT_QWEN2;
        else return ft_fail(e, FT_EINPUT, "%s: %s.pattern: unsupported Split regex (only the GPT-2, Llama-3 and Qwen2 ones)", where, key);
        if (!beh || strcmp(beh, "Isolated") != 0 || json_bool(n, "invert", 0))
            return ft_fail(e, FT_EINPUT, "%s: %s: only Split with behavior Isolated and invert false is supported", where, key);
        p.type = PRE_SPLIT;
    } else {
        return ft_fail(e, FT_EINPUT, "%s: %s: unsupported pre_tokenizer type \"%s\"", where, key, type);
    }
    t->pres = ft_xrealloc(t->pres, (size_t)(t->n_pres + 1) * sizeof *t->pres);
    t->pres[t->n_pres++] = p;
    return FT_OK;
}

static int load_decoder(ft_tokenizer *t, const cJSON *n, const char *where, const char *key, ft_error *e) {
    if (!n || cJSON_IsNull(n)) return FT_OK;
    t->has_decoder = 1;
    const char *type = json_str(n, "type");
    if (!type) return ft_fail(e, FT_EINPUT, "%s: %s: missing \"type\"", where, key);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "decoders");
        if (!cJSON_IsArray(list)) return ft_fail(e, FT_EINPUT, "%s: %s.decoders: expected an array", where, key);
        int i = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, list) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.decoders[%d]", key, i++);
            int rc = load_decoder(t, x, where, sub, e);
            if (rc) return rc;
        }
        return FT_OK;
    }
    tok_dec d = {0};
    if (strcmp(type, "Replace") == 0) {
        const char *pat, *content = json_str(n, "content");
        int rc = pattern_string(n, where, key, &pat, e);
        if (rc) return rc;
        if (!content) return ft_fail(e, FT_EINPUT, "%s: %s.content: expected a string", where, key);
        d.type = DEC_REPLACE;
        d.a = ft_xstrdup(pat), d.alen = strlen(pat);
        d.b = ft_xstrdup(content), d.blen = strlen(content);
    } else if (strcmp(type, "ByteFallback") == 0) {
        d.type = DEC_BYTEFALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        d.type = DEC_FUSE;
    } else if (strcmp(type, "Strip") == 0) {
        const char *c = json_str(n, "content");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(n, "start"), *sp = cJSON_GetObjectItemCaseSensitive(n, "stop");
        if (!c || !*c || !cJSON_IsNumber(st) || !cJSON_IsNumber(sp) || st->valuedouble < 0 || sp->valuedouble < 0 ||
            st->valuedouble > 1e6 || sp->valuedouble > 1e6)
            return ft_fail(e, FT_EINPUT, "%s: %s: Strip needs content (a character), start and stop (counts)", where, key);
        d.type = DEC_STRIP;
        d.a = ft_xstrdup(c), d.alen = strlen(c);
        d.start = (int)st->valuedouble, d.stop = (int)sp->valuedouble;
    } else if (strcmp(type, "ByteLevel") == 0) {
        d.type = DEC_BYTELEVEL;
    } else if (strcmp(type, "Metaspace") == 0) {
        const char *r = json_str(n, "replacement");
        if (!r || !*r) return ft_fail(e, FT_EINPUT, "%s: %s.replacement: expected one character", where, key);
        int rc = parse_scheme(n, where, key, &d.scheme, e);
        if (rc) return rc;
        d.type = DEC_METASPACE;
        d.a = ft_xstrdup(r), d.alen = strlen(r);
    } else {
        return ft_fail(e, FT_EINPUT, "%s: %s: unsupported decoder type \"%s\"", where, key, type);
    }
    t->decs = ft_xrealloc(t->decs, (size_t)(t->n_decs + 1) * sizeof *t->decs);
    t->decs[t->n_decs++] = d;
    return FT_OK;
}

static int32_t token_lookup(const ft_tokenizer *t, const char *s) {
    size_t n = strlen(s);
    for (int a = 0; a < t->n_added; a++)
        if (t->added[a].len == n && memcmp(t->added[a].s, s, n) == 0) return t->added[a].id;
    return vocab_get(t, s, n);
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
    const char *type = json_str(n, "type");
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
                const char *id = json_str(st, "id");
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
    const char *type = json_str(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (type && strcmp(type, "BPE") != 0)
        return ft_fail(e, FT_EINPUT, "%s: model.type \"%s\" is unsupported (only BPE)", where, type);
    if (!type && !merges)
        return ft_fail(e, FT_EINPUT, "%s: model: no \"type\" and no \"merges\"; only BPE models are supported", where);
    if (!cJSON_IsObject(vocab)) return ft_fail(e, FT_EINPUT, "%s: model.vocab: expected an object", where);
    if (!cJSON_IsArray(merges)) return ft_fail(e, FT_EINPUT, "%s: model.merges: expected an array", where);
    const char *csp = json_str(model, "continuing_subword_prefix"), *ews = json_str(model, "end_of_word_suffix");
    if ((csp && *csp) || (ews && *ews))
        return ft_fail(e, FT_EINPUT, "%s: model: continuing_subword_prefix / end_of_word_suffix are unsupported", where);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0 && dropout->valuedouble < 1)
        return ft_fail(e, FT_EINPUT, "%s: model.dropout: BPE dropout is unsupported (set it to null)", where);
    t->fuse_unk = json_bool(model, "fuse_unk", 0);
    t->byte_fallback = json_bool(model, "byte_fallback", 0);
    t->ignore_merges = json_bool(model, "ignore_merges", 0);

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
        uint32_t h = hash_bytes(x->string, l) & t->vh_mask;
        while (t->vh[h] >= 0 && !(t->v_len[t->vh[h]] == l && memcmp(t->v_s[t->vh[h]], x->string, l) == 0))
            h = (h + 1) & t->vh_mask;
        if (t->vh[h] < 0) distinct++;
        t->vh[h] = (int32_t)i; /* a duplicate key keeps the last id, like a JSON map */
        i++;
    }

    /* added tokens extend the id space */
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added))
        return ft_fail(e, FT_EINPUT, "%s: added_tokens: expected an array", where);
    int na = cJSON_GetArraySize(added);
    t->added = ft_xcalloc((size_t)na + 1, sizeof *t->added);
    int k = 0;
    cJSON_ArrayForEach(x, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(x, "id");
        const char *content = json_str(x, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 16777216 || !content)
            return ft_fail(e, FT_EINPUT, "%s: added_tokens[%d]: expected \"id\" (0..16777216) and \"content\"", where, k);
        tok_added *a = &t->added[t->n_added];
        a->s = ft_xstrdup(content);
        a->len = strlen(content);
        a->lstrip = json_bool(x, "lstrip", 0);
        a->rstrip = json_bool(x, "rstrip", 0);
        a->single_word = json_bool(x, "single_word", 0);
        a->normalized = json_bool(x, "normalized", 0);
        a->special = json_bool(x, "special", 0);
        /* HF re-derives ids rather than trusting "id": an existing added or vocab token keeps its
         * id, a new one gets the next id after the vocab (AddedVocabulary::add_tokens). */
        a->id = -1;
        int32_t maxa = -1;
        for (int q = 0; q < t->n_added; q++) {
            if (t->added[q].len == a->len && memcmp(t->added[q].s, a->s, a->len) == 0) a->id = t->added[q].id;
            if (t->added[q].id > maxa) maxa = t->added[q].id;
        }
        if (a->id < 0) a->id = vocab_get(t, a->s, a->len);
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

    t->char_id = ft_xmalloc(0x10000 * sizeof *t->char_id);
    memset(t->char_id, 0xFF, 0x10000 * sizeof *t->char_id);
    for (size_t v = 0; v < nv; v++) {
        uint32_t cp;
        if (t->v_len[v] == 0) continue;
        size_t bad, l = utf8_check((const uint8_t *)t->v_s[v], t->v_len[v], &bad);
        if (l && l == t->v_len[v]) {
            utf8_dec((const uint8_t *)t->v_s[v], &cp);
            if (cp < 0x10000) t->char_id[cp] = vocab_get(t, t->v_s[v], l);
        }
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->fallback_id[b] = vocab_get(t, name, 6);
    }
    const char *unk = json_str(model, "unk_token");
    t->unk_id = -1;
    if (unk) {
        t->unk_id = vocab_get(t, unk, strlen(unk));
        if (t->unk_id < 0)
            return ft_fail(e, FT_EINPUT, "%s: model.unk_token \"%.80s\" is not in model.vocab", where, unk);
    }

    /* merges */
    size_t nm = (size_t)cJSON_GetArraySize(merges);
    cap = pow2_at_least(nm * 2 + 1);
    t->mk = ft_xmalloc(cap * sizeof *t->mk);
    t->mrank = ft_xmalloc(cap * sizeof *t->mrank);
    t->mnew = ft_xmalloc(cap * sizeof *t->mnew);
    t->mmask = cap - 1;
    memset(t->mrank, 0xFF, cap * sizeof *t->mrank);
    t->nmerges = nm;
    t->ms_split_ok = 1;
    sbuf cat = {0};
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
        int32_t ia = vocab_get(t, a, al), ib = vocab_get(t, b, bl);
        cat.n = 0;
        sb_put(&cat, a, al);
        sb_put(&cat, b, bl);
        int32_t inew = vocab_get(t, cat.s, cat.n);
        if (ia < 0 || ib < 0 || inew < 0) {
            char miss[128];
            snprintf(miss, sizeof miss, "%.*s", (int)(ia < 0 ? (al > 80 ? 80 : al) : ib < 0 ? (bl > 80 ? 80 : bl) : (cat.n > 80 ? 80 : cat.n)),
                     ia < 0 ? a : ib < 0 ? b : cat.s);
            free(cat.s);
            return ft_fail(e, FT_EINPUT, "%s: model.merges[%u]: token \"%s\" is not in model.vocab", where, rank, miss);
        }
        merge_put(t, ia, ib, rank, inew);
        /* a merge joining "..x" with "▁.." would cross a cut point of model_word */
        int a_ends = al >= 3 && memcmp(a + al - 3, "\xE2\x96\x81", 3) == 0;
        int b_starts = bl >= 3 && memcmp(b, "\xE2\x96\x81", 3) == 0;
        if (b_starts && !a_ends) t->ms_split_ok = 0;
        rank++;
    }
    free(cat.s);
    return FT_OK;
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
    if (!rc) rc = load_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), where, "normalizer", e);
    if (!rc) rc = load_pretok(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), where, "pre_tokenizer", e);
    if (!rc) rc = load_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), where, "post_processor", e);
    if (!rc) rc = load_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), where, "decoder", e);
    cJSON_Delete(root);
    if (rc) {
        tok_free(t);
        return rc;
    }
    /* added tokens: normalized ones are matched by their normalized form; longest first */
    for (int a = 0; a < t->n_added; a++) {
        tok_added *x = &t->added[a];
        sbuf b = {0};
        if (x->normalized) normalize(t, (const uint8_t *)x->s, x->len, &b);
        else sb_put(&b, x->s, x->len);
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
    if (t->byte_level) {
        uint32_t map[256];
        byte_level_table(map);
        for (int b = 0; b < 256; b++) {
            t->bl_len[b] = (uint8_t)utf8_enc(map[b], t->bl_str[b]);
            t->bl_id[b] = vocab_get(t, t->bl_str[b], t->bl_len[b]);
        }
    }
    /* BOS/EOS from the template (tokenizer_config.json may override in tok_load) */
    if (t->n_post_pre) t->bos = t->post_pre[0];
    if (t->n_post_post) t->eos = t->post_post[t->n_post_post - 1];
    *out = t;
    return FT_OK;
}

static int32_t config_token(const ft_tokenizer *t, const cJSON *cfg, const char *key, int *present) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    const char *s = cJSON_IsString(v) ? v->valuestring : json_str(v, "content");
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
