/* tok_internal: what the tokenizer's pieces share (private to finetune/tok_*.c and tokenizer.c).
 *
 * The tokenizer (public contract: tokenizer.h) is split by stage of HF tokenizers' pipeline:
 *   tokenizer.c   loading tokenizer.json / tokenizer_config.json, added tokens, post-processor,
 *                 tok_encode and the accessors;
 *   tok_pretok.c  normalizers and pre-tokenizers (load + run);
 *   tok_bpe.c     the BPE model: vocab and merge hash maps, the merge loop, byte fallback,
 *                 byte-level symbols, the word cache;
 *   tok_decode.c  decoders and tok_decode.
 * Encoding flows tok_encode -> (added-token split) -> tok_normalize -> tok_pretokenize ->
 * tok_model_word, appending ids to tok_enc_ctx.out. Small hot helpers are static inline here so
 * the split costs no speed. Loaders fill struct ft_tokenizer and fail with FT_EINPUT naming the
 * source (`where`) and the JSON key. */
#ifndef FT_TOK_INTERNAL_H
#define FT_TOK_INTERNAL_H

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/tokenizer/tokenizer.h"

/* ---------- small helpers ---------- */

typedef struct {
    int32_t *v;
    size_t n, cap;
} tok_ivec;

static inline void tok_iv_push(tok_ivec *a, int32_t x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = ft_xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = x;
}

typedef struct {
    char *s;
    size_t n, cap;
} tok_sbuf;

static inline void tok_sb_put(tok_sbuf *b, const void *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2 + 32;
        b->s = ft_xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, p, n);
    b->n += n;
    b->s[b->n] = 0;
}

static inline uint32_t tok_hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    return h;
}

/* Decode one code point of valid UTF-8 (already checked); returns its byte length. */
static inline int tok_utf8_dec(const uint8_t *s, uint32_t *cp) {
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

static inline int tok_utf8_enc(uint32_t cp, char *o) {
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
static inline size_t tok_utf8_check(const uint8_t *s, size_t n, size_t *bad) {
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

/* ---------- the tokenizer ---------- */

enum { TOK_NORM_PREPEND, TOK_NORM_REPLACE, TOK_NORM_NFC };
enum { TOK_PRE_METASPACE, TOK_PRE_BYTELEVEL, TOK_PRE_DIGITS, TOK_PRE_SPLIT };
enum { TOK_SPLIT_GPT2, TOK_SPLIT_LLAMA3, TOK_SPLIT_QWEN2 };
enum { TOK_SCHEME_ALWAYS, TOK_SCHEME_FIRST, TOK_SCHEME_NEVER };
enum { TOK_DEC_REPLACE, TOK_DEC_BYTEFALLBACK, TOK_DEC_FUSE, TOK_DEC_STRIP, TOK_DEC_BYTELEVEL, TOK_DEC_METASPACE };

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
} tok_cache_slot;

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
    tok_cache_slot *cslots;
    uint8_t *carena;
    uint32_t cused, ccount;
};

static inline int32_t tok_vocab_get(const ft_tokenizer *t, const char *s, size_t n) {
    if (!t->vh) return -1;
    uint32_t h = tok_hash_bytes(s, n) & t->vh_mask;
    for (;;) {
        int32_t e = t->vh[h];
        if (e < 0) return -1;
        if (t->v_len[e] == n && memcmp(t->v_s[e], s, n) == 0) return t->v_id[e];
        h = (h + 1) & t->vh_mask;
    }
}

/* Scratch buffers of the BPE merge loop, reused across the words of one tok_encode. */
typedef struct {
    tok_ivec sym;
    int32_t *prev, *next;
    uint32_t *rank;
    uint64_t *heap;
    size_t cap;
} tok_bpe_work;

/* State of one tok_encode call: ids are appended to out. */
typedef struct {
    tok_bpe_work w;
    tok_ivec *out;
    int cont; /* tok_encode_cont: the piece at_start gets no start-of-text prefix */
} tok_enc_ctx;

/* tokenizer.c: JSON helpers shared by the loaders */
int tok_json_bool(const cJSON *o, const char *key, int dflt);
const char *tok_json_str(const cJSON *o, const char *key);
int tok_pattern_string(const cJSON *o, const char *where, const char *key, const char **out, ft_error *e);

/* tok_pretok.c: normalizers and pre-tokenizers */
int tok_load_normalizer(ft_tokenizer *t, const cJSON *n, const char *where, const char *key, ft_error *e);
int tok_load_pretok(ft_tokenizer *t, const cJSON *n, const char *where, const char *key, ft_error *e);
/* Metaspace "prepend_scheme" (or the older add_prefix_space) of node n. */
int tok_parse_scheme(const cJSON *n, const char *where, const char *key, int *out, ft_error *e);
/* Run the normalizers on s[0..n); out->s is malloc'd (NULL when the result is empty). */
/* no_prepend: skip Prepend normalizers (the text continues another one) */
void tok_normalize(const ft_tokenizer *t, const uint8_t *s, size_t n, int no_prepend, tok_sbuf *out);
int tok_needs_nfc(const ft_tokenizer *t);
/* Pre-tokenize s[0..n) and run the model on each piece; at_start: s begins the text. */
void tok_pretokenize(const ft_tokenizer *t, const uint8_t *s, size_t n, int at_start, tok_enc_ctx *c);

/* tok_bpe.c: the BPE model */
/* model.type/vocab/merges checks, model options and the vocab map; *distinct counts distinct
 * vocab strings, *maxid is the largest vocab id (-1 when empty). */
int tok_bpe_load_vocab(ft_tokenizer *t, const cJSON *model, const char *where, size_t *distinct, int32_t *maxid,
                       ft_error *e);
/* Single-char and byte-fallback tables, unk_token and the merges (after the vocab). */
int tok_bpe_load_merges(ft_tokenizer *t, const cJSON *model, const char *where, ft_error *e);
/* Byte-level symbol tables; after the pre-tokenizer has set t->byte_level. */
void tok_bpe_byte_level_init(ft_tokenizer *t);
/* GPT-2's bytes_to_unicode map. */
void tok_byte_level_table(uint32_t map[256]);
/* BPE one pre-tokenized word, appending its ids to out. */
void tok_model_word(const ft_tokenizer *t, tok_bpe_work *w, const uint8_t *s, size_t n, tok_ivec *out);

/* tok_decode.c: decoders (tok_decode itself is public) */
int tok_load_decoder(ft_tokenizer *t, const cJSON *n, const char *where, const char *key, ft_error *e);

#endif
