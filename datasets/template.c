#include "datasets/template.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tmpl {
    char *name;
    tmpl_spec s;     /* strings owned */
    jinja_tmpl *jt;  /* a Hugging Face chat_template (then s is unused) */
    char *jsrc;      /* its text */
};

static const struct {
    const char *name;
    tmpl_spec s;
} BUILTIN[] = {
    /* H2O LLM Studio: system block only when there is a system text, no BOS */
    {"danube", {"", "<|system|>", "{eos}", 0, NULL, NULL, "<|prompt|>", "{eos}", "<|answer|>", "{eos}", "", "<|answer|>", 0}},
    {"chatml", {"", "<|im_start|>system\n", "<|im_end|>\n", 0, NULL, NULL, "<|im_start|>user\n", "<|im_end|>\n",
                "<|im_start|>assistant\n", "<|im_end|>", "\n", "<|im_start|>assistant\n", 0}},
    /* Llama-2 chat: BOS before every [INST]; system inside the first user turn */
    {"llama2", {"", NULL, NULL, 1, "<<SYS>>\n", "\n<</SYS>>\n\n", "{bos}[INST] ", " [/INST]", " ", " {eos}", "", "", 1}},
    {"llama3", {"<|begin_of_text|>", "<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>", 0, NULL, NULL,
                "<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>",
                "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", "",
                "<|start_header_id|>assistant<|end_header_id|>\n\n", 1}},
    /* Mistral-Instruct v0.1/v0.2: no system role; it is prepended to the first user turn */
    {"mistral", {"{bos}", NULL, NULL, 1, "", "\n\n", "[INST] ", " [/INST]", "", "{eos}", "", "", 0}},
    {"zephyr", {"", "<|system|>\n", "{eos}\n", 0, NULL, NULL, "<|user|>\n", "{eos}\n", "<|assistant|>\n", "{eos}", "\n",
                "<|assistant|>\n", 0}},
    {"alpaca", {"", "", "\n\n", 0, NULL, NULL, "### Instruction:\n", "\n\n", "### Response:\n", "{eos}", "\n\n",
                "### Response:\n", 0}},
};
#define N_BUILTIN (sizeof BUILTIN / sizeof BUILTIN[0])

const char *tmpl_builtin_names(void) { return "danube, chatml, llama2, llama3, mistral, zephyr, alpaca"; }
const char *tmpl_name(const tmpl *t) { return t->name; }

static int jinja_end_of_turn(const tmpl *t, char *buf, size_t n);

int tmpl_end_of_turn(const tmpl *t, char *buf, size_t n) {
    if (t->jt) return jinja_end_of_turn(t, buf, n);
    const char *s = t->s.assistant_end;
    if (!s) return 0;
    while (*s == ' ' || *s == '\n') s++;
    size_t len = strlen(s);
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\n')) len--;
    if (!len || len >= n || strncmp(s, "{eos}", 5) == 0) return 0;
    memcpy(buf, s, len);
    buf[len] = 0;
    return 1;
}

static char *dup0(const char *s) { return ft_xstrdup(s ? s : ""); }

int tmpl_custom(const tmpl_spec *spec, const char *name, tmpl **out, ft_error *e) {
    tmpl *t = ft_xcalloc(1, sizeof *t);
    t->name = dup0(name ? name : "custom");
    t->s = *spec;
    const char **f[] = {&t->s.begin, &t->s.system_prefix, &t->s.system_suffix, &t->s.merge_prefix, &t->s.merge_suffix,
                        &t->s.user_prefix, &t->s.user_suffix, &t->s.assistant_prefix, &t->s.assistant_end,
                        &t->s.assistant_trailer, &t->s.generation_prompt};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) *f[i] = dup0(*f[i]);
    *out = t;
    (void)e;
    return FT_OK;
}

int tmpl_custom_simple(const char *sys_pre, const char *sys_suf, const char *user_pre, const char *user_suf,
                       const char *asst_pre, const char *asst_suf, const char *gen_prompt, int bos, tmpl **out,
                       ft_error *e) {
    tmpl_spec s = {bos ? "{bos}" : "", sys_pre, sys_suf, 0, NULL, NULL, user_pre, user_suf, asst_pre, asst_suf, "",
                   gen_prompt, 0};
    return tmpl_custom(&s, "custom", out, e);
}

int tmpl_builtin(const char *name, tmpl **out, ft_error *e) {
    for (size_t i = 0; i < N_BUILTIN; i++)
        if (strcmp(name, BUILTIN[i].name) == 0) return tmpl_custom(&BUILTIN[i].s, name, out, e);
    return ft_fail(e, FT_EINPUT, "unknown chat template '%s' (built in: %s)", name, tmpl_builtin_names());
}

void tmpl_free(tmpl *t) {
    if (!t) return;
    const char *f[] = {t->s.begin, t->s.system_prefix, t->s.system_suffix, t->s.merge_prefix, t->s.merge_suffix,
                       t->s.user_prefix, t->s.user_suffix, t->s.assistant_prefix, t->s.assistant_end,
                       t->s.assistant_trailer, t->s.generation_prompt};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) free((char *)f[i]);
    jinja_free(t->jt);
    free(t->jsrc);
    free(t->name);
    free(t);
}

/* ---- rendering ---- */

typedef struct {
    tmpl_text *r;
    size_t cap;
    int scap;
    const char *bos, *eos;
} rbuf;

static void put(rbuf *b, const char *s, size_t n, int turn) {
    if (n == 0) return;
    tmpl_text *r = b->r;
    if (r->len + n + 1 > b->cap) {
        while (r->len + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 256;
        r->text = ft_xrealloc(r->text, b->cap);
    }
    memcpy(r->text + r->len, s, n);
    /* extend the previous segment when the training flag is the same */
    if (r->n_segs && r->segs[r->n_segs - 1].turn == turn) {
        r->segs[r->n_segs - 1].len += n;
    } else {
        if (r->n_segs == b->scap) r->segs = ft_xrealloc(r->segs, (size_t)(b->scap = b->scap ? b->scap * 2 : 8) * sizeof *r->segs);
        r->segs[r->n_segs++] = (tmpl_seg){r->len, n, turn};
    }
    r->len += n;
    r->text[r->len] = 0;
}

/* template string with {bos}/{eos} expanded */
static void put_t(rbuf *b, const char *s, int turn) {
    while (*s) {
        const char *p = strchr(s, '{');
        if (!p) {
            put(b, s, strlen(s), turn);
            return;
        }
        put(b, s, (size_t)(p - s), turn);
        if (strncmp(p, "{bos}", 5) == 0) put(b, b->bos, strlen(b->bos), turn), s = p + 5;
        else if (strncmp(p, "{eos}", 5) == 0) put(b, b->eos, strlen(b->eos), turn), s = p + 5;
        else put(b, p, 1, turn), s = p + 1;
    }
}

/* Python str.isspace() for one code point at s; returns its byte length or 0 */
static int space_len(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) return 1;
    if (c == 0xC2 && n >= 2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (c == 0xE1 && n >= 3 && s[1] == 0x9A && s[2] == 0x80) return 3;
    if (c == 0xE2 && n >= 3 && s[1] == 0x80 && ((s[2] >= 0x80 && s[2] <= 0x8A) || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF)) return 3;
    if (c == 0xE2 && n >= 3 && s[1] == 0x81 && s[2] == 0x9F) return 3;
    if (c == 0xE3 && n >= 3 && s[1] == 0x80 && s[2] == 0x80) return 3;
    return 0;
}

static void trim(const char **s, size_t *n) {
    const unsigned char *p = (const unsigned char *)*s;
    size_t len = *n;
    int k;
    while ((k = space_len(p, len)) > 0) p += k, len -= (size_t)k;
    /* from the right: step back over UTF-8 code points */
    for (;;) {
        if (len == 0) break;
        size_t st = len - 1;
        while (st > 0 && (p[st] & 0xC0) == 0x80 && len - st < 4) st--;
        if (space_len(p + st, len - st) == (int)(len - st)) len = st;
        else break;
    }
    *s = (const char *)p;
    *n = len;
}

static void put_content(rbuf *b, const tmpl *t, const char *s, int turn) {
    size_t n = strlen(s);
    if (t->s.strip) trim(&s, &n);
    put(b, s, n, turn);
}

static int jinja_render_conv(const tmpl *t, const ds_conv *c, const char *bos, const char *eos, int gen,
                             tmpl_text *out, ft_error *e);

int tmpl_render(const tmpl *t, const ds_conv *c, const char *bos, const char *eos, int gen, tmpl_text *out,
                ft_error *e) {
    if (t->jt) return jinja_render_conv(t, c, bos, eos, gen, out, e);
    memset(out, 0, sizeof *out);
    rbuf b = {out, 0, 0, bos ? bos : "", eos ? eos : ""};
    const tmpl_spec *s = &t->s;
    int i = 0;
    const char *system = NULL;
    if (c->n > 0 && c->msgs[0].role == DS_SYSTEM) system = c->msgs[i++].content;
    if (system && !system[0]) system = NULL;
    put_t(&b, s->begin, -1);
    if (system && !s->system_in_first_user) {
        put_t(&b, s->system_prefix, -1);
        put_content(&b, t, system, -1);
        put_t(&b, s->system_suffix, -1);
    }
    int turn = 0;
    for (int k = i; k < c->n; k++) {
        const ds_msg *m = &c->msgs[k];
        if (m->role == DS_USER) {
            put_t(&b, s->user_prefix, -1);
            if (k == i && system && s->system_in_first_user) {
                /* merged then trimmed as one string, as the Llama-2 template does */
                rbuf tmp = {&(tmpl_text){0}, 0, 0, b.bos, b.eos};
                put_t(&tmp, s->merge_prefix, -1);
                put(&tmp, system, strlen(system), -1);
                put_t(&tmp, s->merge_suffix, -1);
                put(&tmp, m->content, strlen(m->content), -1);
                const char *p = tmp.r->text ? tmp.r->text : "";
                size_t n = tmp.r->len;
                if (s->strip) trim(&p, &n);
                put(&b, p, n, -1);
                free(tmp.r->text);
                free(tmp.r->segs);
            } else {
                put_content(&b, t, m->content, -1);
            }
            put_t(&b, s->user_suffix, -1);
        } else if (m->role == DS_ASSISTANT) {
            put_t(&b, s->assistant_prefix, -1);
            put_content(&b, t, m->content, turn);
            put_t(&b, s->assistant_end, turn);
            put_t(&b, s->assistant_trailer, -1);
            turn++;
        } else {
            tmpl_text_free(out);
            return ft_fail(e, FT_EINPUT, "%s: system turn at position %d (only the first turn may be a system turn)", c->where, k);
        }
    }
    if (gen) put_t(&b, s->generation_prompt, -1);
    out->n_turns = turn;
    if (!out->text) out->text = ft_xstrdup("");
    return FT_OK;
}

void tmpl_text_free(tmpl_text *r) {
    free(r->text);
    free(r->segs);
    memset(r, 0, sizeof *r);
}

/* ---- tokenizing with the mask ---- */

/* GPT-2 byte-level alphabet: code point -> byte (-1 when not in it) */
static void bytelevel_inverse(int inv[512]) {
    for (int i = 0; i < 512; i++) inv[i] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        if (keep) inv[b] = b;
        else inv[256 + n++] = b;
    }
}

static int utf8_next(const unsigned char *s, size_t n, unsigned *cp) {
    unsigned c = s[0];
    int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
    if ((size_t)len > n) len = 1;
    unsigned v = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    for (int k = 1; k < len; k++) v = (v << 6) | (s[k] & 0x3F);
    *cp = v;
    return len;
}

/* the bytes a token stands for in the text */
static size_t surface(const char *tokstr, int bytelevel, const int inv[512], char *out, size_t cap) {
    size_t n = strlen(tokstr), o = 0;
    if (n == 6 && strncmp(tokstr, "<0x", 3) == 0 && tokstr[5] == '>') {
        unsigned v;
        if (sscanf(tokstr + 3, "%2x", &v) == 1) {
            out[0] = (char)v;
            return 1;
        }
    }
    const unsigned char *s = (const unsigned char *)tokstr;
    int all_bl = bytelevel;
    if (bytelevel) { /* special tokens are not in the byte alphabet: keep them literal */
        for (size_t i = 0; i < n;) {
            unsigned cp;
            i += (size_t)utf8_next(s + i, n - i, &cp);
            if (cp >= 512 || inv[cp] < 0) all_bl = 0;
        }
    }
    for (size_t i = 0; i < n && o + 4 < cap;) {
        if (all_bl) {
            unsigned cp;
            i += (size_t)utf8_next(s + i, n - i, &cp);
            out[o++] = (char)inv[cp];
        } else if (!bytelevel && n - i >= 3 && s[i] == 0xE2 && s[i + 1] == 0x96 && s[i + 2] == 0x81) {
            out[o++] = ' '; /* SentencePiece's U+2581 */
            i += 3;
        } else {
            out[o++] = (char)s[i++];
        }
    }
    return o;
}

/* Text the tokenizer drops: a byte-level vocabulary without the symbol of some byte and without an unk
 * token leaves that byte out of the ids, as HF's BPE does (SmolLM has no symbol for 0x04, 0x1d, 0xf1, ...),
 * even in the middle of a token ("\x04<" is the one token "<"); a character-level one may drop a
 * character it has no piece for. No token stands for such text, so nothing trains there. */
typedef struct drop_map {
    const ft_tokenizer *tok;
    int bytelevel;
    uint8_t byte_dropped[256]; /* byte-level: the byte's symbol is not in the vocabulary */
} drop_map;

static void drop_map_init(drop_map *d, const ft_tokenizer *tok, int bytelevel, const int inv[512]) {
    d->tok = tok;
    d->bytelevel = bytelevel;
    memset(d->byte_dropped, 0, sizeof d->byte_dropped);
    if (!bytelevel) return;
    for (int cp = 0; cp < 512; cp++) {
        if (inv[cp] < 0) continue;
        char sym[3] = {0};
        if (cp < 0x80) sym[0] = (char)cp;
        else sym[0] = (char)(0xC0 | (cp >> 6)), sym[1] = (char)(0x80 | (cp & 0x3F));
        d->byte_dropped[inv[cp]] = tok_token_id(tok, sym) < 0;
    }
}

/* Bytes to skip at text[p]: 0 when the text there is encoded. */
static size_t dropped_at(const tmpl_text *r, size_t p, const drop_map *d) {
    if (p >= r->len) return 0;
    if (d->bytelevel) return d->byte_dropped[(unsigned char)r->text[p]];
    unsigned cp;
    size_t len = (size_t)utf8_next((const unsigned char *)r->text + p, r->len - p, &cp);
    int32_t *ids = NULL;
    size_t n = 1;
    ft_error e;
    if (tok_encode(d->tok, r->text + p, len, 0, &ids, &n, &e) != 0) n = 1;
    free(ids);
    return n == 0 ? len : 0;
}

/* Match a token's surface sf[0..sl) against the text at p, over dropped text; the end of the match. A
 * SentencePiece surface's ' ' is the token's U+2581, which stands for a space the normalizer replaced or
 * for a U+2581 the text itself holds. */
static int match_surface(const tmpl_text *r, size_t p, const char *sf, size_t sl, const drop_map *d, size_t *end) {
    if (sl == 0) return 0;
    for (size_t i = 0; i < sl;) {
        size_t k;
        if (p < r->len && r->text[p] == sf[i]) p++, i++;
        else if (!d->bytelevel && sf[i] == ' ' && p + 3 <= r->len && memcmp(r->text + p, "\xE2\x96\x81", 3) == 0)
            p += 3, i++;
        else if ((k = dropped_at(r, p, d)) > 0) p += k;
        else return 0;
    }
    *end = p;
    return 1;
}

int tmpl_tokenize(const tmpl_text *r, const ft_tokenizer *tok, tmpl_tokens *out, ft_error *e) {
    memset(out, 0, sizeof *out);
    int32_t *ids;
    size_t n;
    int rc = tok_encode(tok, r->text, r->len, 0, &ids, &n, e);
    if (rc) return rc;
    int inv[512];
    bytelevel_inverse(inv);
    int bytelevel = tok_token_id(tok, "\xC4\xA0") >= 0 && tok_token_id(tok, "\xE2\x96\x81") < 0; /* "Ġ" vs "▁" */
    drop_map dm;
    drop_map_init(&dm, tok, bytelevel, inv);
    int32_t *turn = ft_xmalloc((n ? n : 1) * sizeof *turn);
    /* map each text byte to its segment's turn */
    size_t p = 0;
    int seg = 0;
    char buf[1024];
    for (size_t i = 0; i < n; i++) {
        const char *ts = tok_token_str(tok, ids[i]);
        size_t sl = ts ? surface(ts, bytelevel, inv, buf, sizeof buf) : 0, end = p, k;
        while (!match_surface(r, p, buf, sl, &dm, &end) && (k = dropped_at(r, p, &dm)) > 0)
            p += k; /* dropped text before the token: no token's */
        if (match_surface(r, p, buf, sl, &dm, &end)) {
        } else if (sl > 0 && buf[0] == ' ' && (sl == 1 || match_surface(r, p, buf + 1, sl - 1, &dm, &end))) {
            /* a space the tokenizer prepended (Metaspace / legacy SentencePiece); alone, it covers no text */
            if (sl == 1) end = p;
        } else {
            /* the message before the free: it names ids[i] (reading it after the free was a use-after-free) */
            rc = ft_fail(e, FT_EINTERNAL,
                         "chat template: cannot align token %zu (id %d, '%s') with the rendered text at byte %zu; the tokenizer's normalizer changes the text",
                         i, ids[i], ts ? ts : "?", p);
            free(ids);
            free(turn);
            return rc;
        }
        /* trained if any byte of [p, end) (or, for an empty span, byte p) is in a trained segment */
        int t = -1;
        size_t hi = end > p ? end : p + 1;
        while (seg < r->n_segs && r->segs[seg].start + r->segs[seg].len <= p) seg++;
        for (int s = seg; s < r->n_segs && r->segs[s].start < hi; s++)
            if (r->segs[s].turn >= 0) {
                t = r->segs[s].turn;
                break;
            }
        turn[i] = t;
        p = end;
    }
    for (size_t k; p < r->len && (k = dropped_at(r, p, &dm)) > 0;) p += k;
    if (p != r->len) {
        free(ids);
        free(turn);
        return ft_fail(e, FT_EINTERNAL, "chat template: tokens cover %zu of %zu bytes of the rendered text", p, r->len);
    }
    out->ids = ids;
    out->turn = turn;
    out->n = n;
    return FT_OK;
}

void tmpl_tokens_free(tmpl_tokens *t) {
    free(t->ids);
    free(t->turn);
    memset(t, 0, sizeof *t);
}

int tmpl_encode(const tmpl *t, const ds_conv *c, const ft_tokenizer *tok, int gen, tmpl_tokens *out, ft_error *e) {
    int32_t b = tok_bos_id(tok), s = tok_eos_id(tok);
    const char *bos = b >= 0 ? tok_token_str(tok, b) : "", *eos = s >= 0 ? tok_token_str(tok, s) : "";
    tmpl_text r;
    int rc = tmpl_render(t, c, bos, eos, gen, &r, e);
    if (rc) return rc;
    rc = tmpl_tokenize(&r, tok, out, e);
    if (rc) ft_error_prefix(e, "%s", c->where);
    tmpl_text_free(&r);
    return rc;
}

/* ---- Jinja ---- */

typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s) {
    size_t l = strlen(s);
    if (b->n + l + 1 > b->cap) {
        while (b->n + l + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 512;
        b->s = ft_xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, l + 1);
    b->n += l;
}

/* a template string as a Jinja expression: 'lit' + bos_token + 'lit' */
static void sb_expr(sbuf *b, const char *s) {
    int first = 1;
    sb_put(b, "(");
    while (*s || first) {
        const char *p = s;
        while (*p && strncmp(p, "{bos}", 5) && strncmp(p, "{eos}", 5)) p++;
        if (p > s || (first && !*p)) {
            if (!first) sb_put(b, " + ");
            sb_put(b, "'");
            for (const char *q = s; q < p; q++) {
                char ch[3] = {*q, 0, 0};
                if (*q == '\\') sb_put(b, "\\\\");
                else if (*q == '\'') sb_put(b, "\\'");
                else if (*q == '\n') sb_put(b, "\\n");
                else if (*q == '\r') sb_put(b, "\\r");
                else if (*q == '\t') sb_put(b, "\\t");
                else sb_put(b, ch);
            }
            sb_put(b, "'");
            first = 0;
        }
        if (!*p) break;
        if (!first) sb_put(b, " + ");
        sb_put(b, strncmp(p, "{bos}", 5) == 0 ? "bos_token" : "eos_token");
        first = 0;
        s = p + 5;
    }
    sb_put(b, ")");
}

char *tmpl_jinja(const tmpl *t) {
    if (t->jt) return ft_xstrdup(t->jsrc);
    const tmpl_spec *s = &t->s;
    const char *tr = s->strip ? "|trim" : "";
    sbuf b = {0};
    sb_put(&b, "{{ ");
    sb_expr(&b, s->begin);
    sb_put(&b, " }}{% if messages and messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
               "{% set loop_messages = messages[1:] %}{% else %}{% set system = '' %}{% set loop_messages = messages %}{% endif %}");
    if (!s->system_in_first_user) {
        sb_put(&b, "{% if system %}{{ ");
        sb_expr(&b, s->system_prefix);
        sb_put(&b, " + (system");
        sb_put(&b, tr);
        sb_put(&b, ") + ");
        sb_expr(&b, s->system_suffix);
        sb_put(&b, " }}{% endif %}");
    }
    sb_put(&b, "{% for message in loop_messages %}{% set content = message['content'] %}");
    if (s->system_in_first_user) {
        sb_put(&b, "{% if loop.first and system %}{% set content = ");
        sb_expr(&b, s->merge_prefix);
        sb_put(&b, " + system + ");
        sb_expr(&b, s->merge_suffix);
        sb_put(&b, " + content %}{% endif %}");
    }
    sb_put(&b, "{% if message['role'] == 'user' %}{{ ");
    sb_expr(&b, s->user_prefix);
    sb_put(&b, " + (content");
    sb_put(&b, tr);
    sb_put(&b, ") + ");
    sb_expr(&b, s->user_suffix);
    sb_put(&b, " }}{% elif message['role'] == 'assistant' %}{{ ");
    sb_expr(&b, s->assistant_prefix);
    sb_put(&b, " + (content");
    sb_put(&b, tr);
    sb_put(&b, ") + ");
    sb_expr(&b, s->assistant_end);
    sb_put(&b, " + ");
    sb_expr(&b, s->assistant_trailer);
    sb_put(&b, " }}{% else %}{{ raise_exception('Only a first system turn, then user and assistant turns are supported') }}{% endif %}{% endfor %}"
               "{% if add_generation_prompt %}{{ ");
    sb_expr(&b, s->generation_prompt);
    sb_put(&b, " }}{% endif %}");
    return b.s;
}

/* ---- a model's own chat_template (datasets/jinja) ---- */

int tmpl_is_jinja(const tmpl *t) { return t->jt != NULL; }

int tmpl_from_jinja(const char *text, const char *name, tmpl **out, ft_error *e) {
    *out = NULL;
    jinja_tmpl *jt;
    int rc = jinja_parse(text, strlen(text), name, &jt, e);
    if (rc) {
        ft_error_prefix(e, "the chat template cannot be used (name a built-in instead: %s)", tmpl_builtin_names());
        return rc;
    }
    tmpl *t = ft_xcalloc(1, sizeof *t);
    t->name = ft_xstrdup(name);
    t->jt = jt;
    t->jsrc = ft_xstrdup(text);
    *out = t;
    return FT_OK;
}

/* The chat_template of one directory: tokenizer_config.json's "chat_template" (a string, or a list of
 * {name, template} where "default" is taken), else chat_template.jinja. NULL when it has none. */
static int dir_chat_template(const char *dir, char **text, char **where, ft_error *e) {
    *text = NULL;
    *where = NULL;
    char *p = ft_path_join(dir, "tokenizer_config.json");
    int rc = FT_OK;
    if (ft_file_exists(p)) {
        char *data = NULL;
        size_t len = 0;
        rc = ft_read_file(p, &data, &len, e);
        cJSON *j = rc ? NULL : cJSON_Parse(data);
        free(data);
        if (!rc && !j) rc = ft_fail(e, FT_EINPUT, "%s: not valid JSON", p);
        const cJSON *ct = j ? cJSON_GetObjectItem(j, "chat_template") : NULL;
        if (cJSON_IsString(ct)) {
            *text = ft_xstrdup(ct->valuestring);
        } else if (cJSON_IsArray(ct)) {
            const cJSON *x, *pick = NULL;
            cJSON_ArrayForEach(x, ct) {
                const char *nm = cJSON_GetStringValue(cJSON_GetObjectItem(x, "name"));
                if (!pick || (nm && strcmp(nm, "default") == 0)) pick = x;
            }
            const char *tt = pick ? cJSON_GetStringValue(cJSON_GetObjectItem(pick, "template")) : NULL;
            if (tt) *text = ft_xstrdup(tt);
        } else if (ct && !cJSON_IsNull(ct)) {
            rc = ft_fail(e, FT_EINPUT, "%s: chat_template must be a string or a list of {name, template}", p);
        }
        cJSON_Delete(j);
        if (*text) {
            size_t n = strlen(p) + 32;
            *where = ft_xmalloc(n);
            snprintf(*where, n, "%s chat_template", p);
        }
    }
    free(p);
    if (rc || *text) return rc;
    p = ft_path_join(dir, "chat_template.jinja");
    if (ft_file_exists(p)) {
        size_t len;
        rc = ft_read_file(p, text, &len, e);
        if (!rc) *where = ft_xstrdup(p);
    }
    free(p);
    return rc;
}

int tmpl_auto(const char *const *dirs, int n, tmpl **out, ft_error *e) {
    *out = NULL;
    for (int i = 0; i < n; i++) {
        if (!dirs[i]) continue;
        char *text, *where;
        int rc = dir_chat_template(dirs[i], &text, &where, e);
        if (!rc && text) rc = tmpl_from_jinja(text, where, out, e);
        free(text);
        free(where);
        if (rc || *out) return rc;
    }
    return FT_OK;
}

int tmpl_resolve(const char *name, const char *const *dirs, int n, const char *fallback, tmpl **out, ft_error *e) {
    *out = NULL;
    if (name && strcmp(name, "none") == 0) return FT_OK;
    if (name && strcmp(name, "auto") != 0) return tmpl_builtin(name, out, e);
    int rc = tmpl_auto(dirs, n, out, e);
    if (!rc && !*out && fallback) rc = tmpl_builtin(fallback, out, e);
    return rc;
}

/* The variables apply_chat_template gives the template: messages, tools/documents (None),
 * add_generation_prompt and the special tokens the tokenizer has. */
static cJSON *conv_vars(const ds_conv *c, int upto, const char *bos, const char *eos, int gen) {
    cJSON *v = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(v, "messages");
    for (int i = 0; i < upto; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", ds_role_name(c->msgs[i].role));
        cJSON_AddStringToObject(m, "content", c->msgs[i].content);
        cJSON_AddItemToArray(msgs, m);
    }
    cJSON_AddNullToObject(v, "tools");
    cJSON_AddNullToObject(v, "documents");
    cJSON_AddBoolToObject(v, "add_generation_prompt", gen);
    if (bos && *bos) cJSON_AddStringToObject(v, "bos_token", bos);
    if (eos && *eos) cJSON_AddStringToObject(v, "eos_token", eos);
    return v;
}

static int render_upto(const tmpl *t, const ds_conv *c, int upto, const char *bos, const char *eos, int gen,
                       char **text, size_t *len, ft_error *e) {
    cJSON *v = conv_vars(c, upto, bos, eos, gen);
    int rc = jinja_render(t->jt, v, text, len, e);
    cJSON_Delete(v);
    return rc;
}

static int is_prefix(const char *p, size_t pn, const char *s, size_t sn) { return pn <= sn && memcmp(p, s, pn) == 0; }

/* The whole conversation rendered once; the assistant turns found the way TRL does without
 * {% generation %} markers: what rendering the first k messages with the generation prompt gives is
 * the text before turn k (not trained), and rendering the first k+1 messages without it ends where
 * turn k ends (trained: the content and its end marker, trailing whitespace not). Both must be
 * prefixes of the whole text, else the template rewrites earlier turns and masking would be wrong. */
static int jinja_render_conv(const tmpl *t, const ds_conv *c, const char *bos, const char *eos, int gen,
                             tmpl_text *out, ft_error *e) {
    memset(out, 0, sizeof *out);
    char *full = NULL;
    size_t flen = 0;
    int rc = render_upto(t, c, c->n, bos, eos, gen, &full, &flen, e);
    if (rc) {
        ft_error_prefix(e, "%s", c->where);
        return rc;
    }
    rbuf b = {out, 0, 0, "", ""};
    size_t cursor = 0;
    int turn = 0;
    size_t eosn = eos ? strlen(eos) : 0;
    for (int k = 0; k < c->n && !rc; k++) {
        if (c->msgs[k].role != DS_ASSISTANT) continue;
        char *g = NULL, *en = NULL;
        size_t gl = 0, el = 0;
        rc = render_upto(t, c, k, bos, eos, 1, &g, &gl, e);
        if (!rc) rc = render_upto(t, c, k + 1, bos, eos, 0, &en, &el, e);
        if (rc) {
            ft_error_prefix(e, "%s", c->where);
        } else if (!is_prefix(g, gl, full, flen) || gl < cursor) {
            rc = ft_fail(e, FT_EINPUT,
                         "%s: chat template %s: the first %d messages with the generation prompt do not render as a "
                         "prefix of the whole conversation (the template rewrites earlier turns), so the assistant "
                         "turns cannot be masked; name a built-in template (%s)",
                         c->where, t->name, k, tmpl_builtin_names());
        } else {
            size_t end = 0;
            if (is_prefix(en, el, full, flen)) end = el;
            else if (eosn && el >= eosn && memcmp(en + el - eosn, eos, eosn) == 0 && is_prefix(en, el - eosn, full, flen))
                end = el - eosn; /* the template closes a conversation with EOS (Phi-3) */
            if (end <= gl) {
                rc = ft_fail(e, FT_EINPUT,
                             "%s: chat template %s: assistant turn %d (message %d) does not render as a continuation "
                             "of the conversation before it, so it cannot be masked; name a built-in template (%s)",
                             c->where, t->name, turn, k, tmpl_builtin_names());
            } else {
                while (end > gl && (full[end - 1] == ' ' || full[end - 1] == '\n' || full[end - 1] == '\t' ||
                                    full[end - 1] == '\r'))
                    end--;
                put(&b, full + cursor, gl - cursor, -1);
                put(&b, full + gl, end - gl, turn);
                cursor = end;
                turn++;
            }
        }
        free(g);
        free(en);
    }
    if (!rc) {
        put(&b, full + cursor, flen - cursor, -1);
        out->n_turns = turn;
        if (!out->text) out->text = ft_xstrdup("");
    } else
        tmpl_text_free(out);
    free(full);
    return rc;
}

/* A one-turn probe: the text right after the assistant's content, up to the first whitespace, when
 * it is not EOS itself (chatml <|im_end|>, Llama-3 <|eot_id|>, Gemma <end_of_turn>, Phi-3 <|end|>). */
static int jinja_end_of_turn(const tmpl *t, char *buf, size_t n) {
    static const char *probe = "Zq9xProbeReply";
    ds_conv c = {0};
    snprintf(c.where, sizeof c.where, "end-of-turn probe");
    ds_conv_add(&c, DS_USER, "Hello");
    ds_conv_add(&c, DS_ASSISTANT, probe);
    const char *bos = "\x01" "BOS\x01", *eos = "\x01" "EOS\x01";
    char *g = NULL, *en = NULL;
    size_t gl = 0, el = 0;
    ft_error e;
    int found = 0;
    if (!render_upto(t, &c, 1, bos, eos, 1, &g, &gl, &e) && !render_upto(t, &c, 2, bos, eos, 0, &en, &el, &e) &&
        is_prefix(g, gl, en, el)) {
        const char *p = strstr(en + gl, probe);
        if (p) {
            p += strlen(probe);
            while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
            size_t len = 0;
            while (p[len] && p[len] != ' ' && p[len] != '\n' && p[len] != '\t' && p[len] != '\r' && p[len] != '\x01')
                len++;
            if (len && len < n && strncmp(p, eos, strlen(eos)) != 0) {
                memcpy(buf, p, len);
                buf[len] = 0;
                found = 1;
            }
        }
    }
    free(g);
    free(en);
    ds_conv_free(&c);
    return found;
}
