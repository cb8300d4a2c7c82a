/* gguf_export: llama.cpp's GGUF layout of a Hugging Face model (see the header). */
#include "finetune/io/gguf_export.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/io/ggml_quantize.h"
#include "finetune/io/ggml_types.h"
#include "finetune/io/gguf.h"

int gguf_export_parse_type(const char *s, int *file_type, int *ggml_type, ft_error *e) {
    static const struct {
        const char *name;
        int file, ggml;
    } T[] = {{"f16", GGUF_FILE_F16, GGML_TYPE_F16},
             {"bf16", GGUF_FILE_BF16, GGML_TYPE_BF16},
             {"q8_0", GGUF_FILE_Q8_0, GGML_TYPE_Q8_0},
             {"q4_0", GGUF_FILE_Q4_0, GGML_TYPE_Q4_0}};
    for (size_t i = 0; s && i < sizeof T / sizeof T[0]; i++)
        if (!strcmp(s, T[i].name)) {
            *file_type = T[i].file;
            *ggml_type = T[i].ggml;
            return FT_OK;
        }
    return ft_fail(e, FT_EINPUT, "--type %s: expected f16, bf16, q8_0 or q4_0", s ? s : "(none)");
}

/* ---------- general.* and {arch}.* ---------- */

/* gguf-py's size_label: 135M, 1.1B, 72K ... (model_weight_count_rounded_notation, min_digits 2) */
static void size_label(int64_t n, char *buf, size_t len) {
    double x;
    const char *suf;
    if (n > 1e12) x = n * 1e-12, suf = "T";
    else if (n > 1e9) x = n * 1e-9, suf = "B";
    else if (n > 1e6) x = n * 1e-6, suf = "M";
    else x = n * 1e-3, suf = "K";
    char r[64];
    snprintf(r, sizeof r, "%.0f", nearbyint(x)); /* python round(): half to even, as nearbyint by default */
    const char *p = r;
    while (*p == '0') p++;
    int fix = 2 - (int)strlen(p);
    if (fix < 0) fix = 0;
    snprintf(buf, len, "%.*f%s", fix, x, suf);
}

int gguf_export_hparams_write(gguf_writer *w, const gguf_export_hparams *h, ft_error *e) {
    char k[128], label[32];
    const char *a = h->arch;
    int rc = gguf_writer_str(w, "general.architecture", a, e);
#define KEY(fmt) (snprintf(k, sizeof k, fmt, a), k)
    if (!rc) rc = gguf_writer_str(w, "general.type", "model", e);
    if (!rc) rc = gguf_writer_str(w, "general.name", h->name, e);
    if (!rc && h->n_params > 0) {
        size_label(h->n_params, label, sizeof label);
        rc = gguf_writer_str(w, "general.size_label", label, e);
    }
    if (!rc) rc = gguf_writer_u32(w, KEY("%s.block_count"), (uint32_t)h->block_count, e);
    if (!rc) rc = gguf_writer_u32(w, KEY("%s.context_length"), (uint32_t)h->context_length, e);
    if (!rc) rc = gguf_writer_u32(w, KEY("%s.embedding_length"), (uint32_t)h->embedding_length, e);
    if (!rc) rc = gguf_writer_u32(w, KEY("%s.feed_forward_length"), (uint32_t)h->feed_forward_length, e);
    if (!rc) rc = gguf_writer_u32(w, KEY("%s.attention.head_count"), (uint32_t)h->head_count, e);
    if (!rc) rc = gguf_writer_u32(w, KEY("%s.attention.head_count_kv"), (uint32_t)h->head_count_kv, e);
    if (!rc && h->rope_scaling_type) {
        rc = gguf_writer_str(w, KEY("%s.rope.scaling.type"), h->rope_scaling_type, e);
        if (!rc) rc = gguf_writer_f32(w, KEY("%s.rope.scaling.factor"), h->rope_scaling_factor, e);
    }
    if (!rc) rc = gguf_writer_f32(w, KEY("%s.rope.freq_base"), h->rope_freq_base, e);
    if (!rc) rc = gguf_writer_f32(w, KEY("%s.attention.layer_norm_rms_epsilon"), h->rms_norm_eps, e);
    if (!rc && h->head_dim != h->embedding_length / h->head_count) {
        rc = gguf_writer_u32(w, KEY("%s.attention.key_length"), (uint32_t)h->head_dim, e);
        if (!rc) rc = gguf_writer_u32(w, KEY("%s.attention.value_length"), (uint32_t)h->head_dim, e);
    }
    if (!rc && h->sliding_window > 0)
        rc = gguf_writer_u32(w, KEY("%s.attention.sliding_window"), (uint32_t)h->sliding_window, e);
    if (!rc) rc = gguf_writer_u32(w, "general.file_type", (uint32_t)h->file_type, e);
    if (!rc && !strcmp(a, "llama")) {
        rc = gguf_writer_u32(w, KEY("%s.vocab_size"), (uint32_t)h->vocab_size, e);
        if (!rc) rc = gguf_writer_u32(w, KEY("%s.rope.dimension_count"), (uint32_t)h->head_dim, e);
    }
    if (!rc) rc = gguf_writer_u32(w, "general.quantization_version", 2, e); /* GGML_QNT_VERSION */
#undef KEY
    return rc;
}

/* ---------- tokenizer.* ---------- */

/* The pre-tokenizer regexes of tokenizer.json's Split pre-tokenizers that llama.cpp names. */
static const char *RX_LLAMA3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                               "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *RX_QWEN2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                              "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
static int jtype(const cJSON *o, const char *t) {
    const char *s = jstr(o, "type");
    return s && !strcmp(s, t);
}

/* llama.cpp's tokenizer.ggml.pre for a byte-level pre_tokenizer, or NULL. */
static const char *bpe_pre_name(const cJSON *pre) {
    if (jtype(pre, "ByteLevel")) {
        const cJSON *r = cJSON_GetObjectItem(pre, "use_regex");
        return !r || cJSON_IsTrue(r) ? "gpt-2" : NULL;
    }
    if (!jtype(pre, "Sequence")) return NULL;
    const cJSON *seq = cJSON_GetObjectItem(pre, "pretokenizers");
    if (cJSON_GetArraySize(seq) != 2) return NULL;
    const cJSON *p0 = cJSON_GetArrayItem(seq, 0), *p1 = cJSON_GetArrayItem(seq, 1);
    if (!jtype(p1, "ByteLevel")) return NULL;
    int regex1 = !cJSON_IsFalse(cJSON_GetObjectItem(p1, "use_regex"));
    if (jtype(p0, "Digits") && cJSON_IsTrue(cJSON_GetObjectItem(p0, "individual_digits")) && regex1) return "smollm";
    if (jtype(p0, "Split") && !regex1) {
        const char *rx = jstr(cJSON_GetObjectItem(p0, "pattern"), "Regex");
        if (rx && !strcmp(rx, RX_LLAMA3)) return "llama-bpe";
        if (rx && !strcmp(rx, RX_QWEN2)) return "qwen2";
    }
    return NULL;
}

/* convert_hf_to_gguf's does_token_look_special */
static int looks_special(const char *t) {
    size_t n = strlen(t);
    if (!strcmp(t, "<pad>") || !strcmp(t, "<mask>") || !strcmp(t, "<2mass>") || !strcmp(t, "[@BOS@]")) return 1;
    if (n >= 4 && !strncmp(t, "<|", 2) && !strcmp(t + n - 2, "|>")) return 1;
    const char *fl = "<\xef\xbd\x9c", *fr = "\xef\xbd\x9c>"; /* <｜ ... ｜> */
    if (n >= 8 && !strncmp(t, fl, 4) && !strcmp(t + n - 4, fr)) return 1;
    if (!strncmp(t, "<unused", 7) && t[n - 1] == '>') return 1;
    return 0;
}

static int is_byte_token(const char *t) { /* <0xXX> */
    return strlen(t) == 6 && !strncmp(t, "<0x", 3) && t[5] == '>' && strchr("0123456789abcdefABCDEF", t[3]) &&
           strchr("0123456789abcdefABCDEF", t[4]) && t[3] && t[4];
}

/* s with U+2581 replaced by ' ' (malloc'd) */
static char *unspace(const char *s) {
    char *r = ft_xmalloc(strlen(s) + 1), *o = r;
    for (const char *p = s; *p;) {
        if (!strncmp(p, "\xe2\x96\x81", 3)) *o++ = ' ', p += 3;
        else *o++ = *p++;
    }
    *o = 0;
    return r;
}

/* tokenizer_config's "<typ>_token": a string or {"content": ...} */
static const char *cfg_token_text(const cJSON *tc, const char *typ) {
    char k[32];
    snprintf(k, sizeof k, "%s_token", typ);
    const cJSON *v = cJSON_GetObjectItem(tc, k);
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) return jstr(v, "content");
    return NULL;
}

static int eq(const char *a, const char *b) { return a && b && !strcmp(a, b); }
/* a post-processor template item's {"SpecialToken": {"id": ...}} / {"Sequence": {"id": ...}} */
static const char *special_of(const cJSON *item) { return jstr(cJSON_GetObjectItem(item, "SpecialToken"), "id"); }
static const char *sequence_of(const cJSON *item) { return jstr(cJSON_GetObjectItem(item, "Sequence"), "id"); }

static int added_id(const cJSON *added, const char *content) {
    const cJSON *a;
    cJSON_ArrayForEach(a, added) {
        const char *c = jstr(a, "content");
        const cJSON *id = cJSON_GetObjectItem(a, "id");
        if (c && cJSON_IsNumber(id) && !strcmp(c, content)) return id->valueint;
    }
    return -1;
}

typedef struct vocab_build {
    char **tok;
    int32_t *type;
    float *score;
    int n;
} vocab_build;

static void vb_free(vocab_build *v) {
    for (int i = 0; v->tok && i < v->n; i++) free(v->tok[i]);
    free(v->tok);
    free(v->type);
    free(v->score);
}

/* The text of merge entry m: "a b" (a string) or ["a", "b"] (spaces inside parts written as U+0120 + 256,
 * i.e. chr(ord(' ') + 256), as gguf-py does), malloc'd; NULL if malformed. */
static char *merge_text(const cJSON *m) {
    if (cJSON_IsString(m)) return ft_xstrdup(m->valuestring);
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) != 2) return NULL;
    const cJSON *a = cJSON_GetArrayItem(m, 0), *b = cJSON_GetArrayItem(m, 1);
    if (!cJSON_IsString(a) || !cJSON_IsString(b)) return NULL;
    size_t la = strlen(a->valuestring), lb = strlen(b->valuestring);
    char *r = ft_xmalloc(2 * (la + lb) + 2), *o = r;
    for (int part = 0; part < 2; part++) {
        for (const char *p = part ? b->valuestring : a->valuestring; *p; p++) {
            if (*p == ' ') *o++ = (char)0xc4, *o++ = (char)0xa0; /* U+0120 */
            else *o++ = *p;
        }
        if (!part) *o++ = ' ';
    }
    *o = 0;
    return r;
}

/* token text -> id over v.tok (open addressing, FNV-1a) */
typedef struct tok_index {
    int32_t *slot; /* id, -1 empty */
    uint32_t mask;
} tok_index;

static uint32_t fnv1a(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static void index_build(tok_index *ix, const vocab_build *v) {
    uint32_t cap = 1;
    while (cap < 2u * (uint32_t)v->n + 1) cap <<= 1;
    ix->mask = cap - 1;
    ix->slot = ft_xmalloc((size_t)cap * sizeof *ix->slot);
    memset(ix->slot, 0xff, (size_t)cap * sizeof *ix->slot);
    for (int i = 0; i < v->n; i++) {
        uint32_t h = fnv1a(v->tok[i]) & ix->mask;
        while (ix->slot[h] >= 0) h = (h + 1) & ix->mask;
        ix->slot[h] = i;
    }
}

static int index_find(const tok_index *ix, const vocab_build *v, const char *s) {
    for (uint32_t h = fnv1a(s) & ix->mask; ix->slot[h] >= 0; h = (h + 1) & ix->mask)
        if (!strcmp(v->tok[ix->slot[h]], s)) return ix->slot[h];
    return -1;
}

/* Joined text of a merge ("a b" -> "ab"; a pair's parts as they are). */
static char *merge_result(const cJSON *m) {
    if (cJSON_IsArray(m)) {
        const cJSON *a = cJSON_GetArrayItem(m, 0), *b = cJSON_GetArrayItem(m, 1);
        if (!cJSON_IsString(a) || !cJSON_IsString(b)) return NULL;
        char *r = ft_xmalloc(strlen(a->valuestring) + strlen(b->valuestring) + 1);
        strcpy(r, a->valuestring);
        strcat(r, b->valuestring);
        return r;
    }
    if (!cJSON_IsString(m)) return NULL;
    const char *sp = strchr(m->valuestring, ' ');
    if (!sp || sp == m->valuestring || !sp[1]) return NULL;
    char *r = ft_xmalloc(strlen(m->valuestring));
    memcpy(r, m->valuestring, (size_t)(sp - m->valuestring));
    strcpy(r + (sp - m->valuestring), sp + 1);
    return r;
}

int gguf_export_vocab(gguf_writer *w, const char *tok_dir, int n_vocab, const gguf_export_ids *cfg_ids, int eot,
                      const char *chat_template, ft_error *e) {
    char *tj_path = ft_path_join(tok_dir, "tokenizer.json"), *tc_path = ft_path_join(tok_dir, "tokenizer_config.json");
    char *text = NULL, *tc_text = NULL;
    cJSON *tj = NULL, *tc = NULL;
    vocab_build v = {0};
    char **merges = NULL;
    int n_merges = 0;
    int rc = ft_read_file(tj_path, &text, NULL, e);
    if (!rc && !(tj = cJSON_Parse(text))) rc = ft_fail(e, FT_EINPUT, "%s: not valid JSON", tj_path);
    if (!rc && ft_file_exists(tc_path)) {
        rc = ft_read_file(tc_path, &tc_text, NULL, e);
        if (!rc && !(tc = cJSON_Parse(tc_text))) rc = ft_fail(e, FT_EINPUT, "%s: not valid JSON", tc_path);
    }
    const cJSON *model = tj ? cJSON_GetObjectItem(tj, "model") : NULL;
    const cJSON *vocab = model ? cJSON_GetObjectItem(model, "vocab") : NULL;
    const cJSON *mlist = model ? cJSON_GetObjectItem(model, "merges") : NULL;
    const cJSON *added = tj ? cJSON_GetObjectItem(tj, "added_tokens") : NULL;
    if (!rc && (!jtype(model, "BPE") || !cJSON_IsObject(vocab)))
        rc = ft_fail(e, FT_EINPUT, "%s: model.type is %s; GGUF export handles BPE tokenizers (model.vocab, model.merges)",
                     tj_path, jstr(model, "type") ? jstr(model, "type") : "missing");
    int spm = !rc && cJSON_IsTrue(cJSON_GetObjectItem(model, "byte_fallback"));
    const char *pre = "default";
    if (!rc && !spm) {
        pre = bpe_pre_name(cJSON_GetObjectItem(tj, "pre_tokenizer"));
        if (!pre) {
            char *s = cJSON_PrintUnformatted(cJSON_GetObjectItem(tj, "pre_tokenizer"));
            rc = ft_fail(e, FT_EINPUT, "%s: pre_tokenizer %.200s is not one llama.cpp names (GPT-2, SmolLM, Llama-3, "
                         "Qwen2 byte-level BPE); it cannot be exported to GGUF", tj_path, s ? s : "null");
            free(s);
        }
    }
    if (!rc) {
        v.n = n_vocab;
        v.tok = ft_xcalloc((size_t)n_vocab, sizeof *v.tok);
        v.type = ft_xcalloc((size_t)n_vocab, sizeof *v.type);
        v.score = ft_xcalloc((size_t)n_vocab, sizeof *v.score);
        const cJSON *it;
        cJSON_ArrayForEach(it, vocab) {
            int id = cJSON_IsNumber(it) ? it->valueint : -1;
            if (id < 0 || id >= n_vocab) {
                rc = ft_fail(e, FT_EINPUT, "%s: token %s has id %d, outside the model's vocab_size %d (the tokenizer "
                             "does not belong to this model)", tj_path, it->string, id, n_vocab);
                break;
            }
            free(v.tok[id]);
            v.tok[id] = ft_xstrdup(it->string);
            v.type[id] = spm && is_byte_token(it->string) ? GGUF_TOK_BYTE : GGUF_TOK_NORMAL;
        }
        cJSON_ArrayForEach(it, added) {
            if (rc) break;
            const char *c = jstr(it, "content");
            const cJSON *idj = cJSON_GetObjectItem(it, "id");
            int id = cJSON_IsNumber(idj) ? idj->valueint : -1;
            if (!c || id < 0 || id >= n_vocab) {
                rc = ft_fail(e, FT_EINPUT, "%s: added token %s has id %d, outside the model's vocab_size %d", tj_path,
                             c ? c : "(no content)", id, n_vocab);
                break;
            }
            int special = cJSON_IsTrue(cJSON_GetObjectItem(it, "special"));
            if (spm && !special && v.tok[id] && !strcmp(v.tok[id], c)) continue; /* a base token: NORMAL */
            free(v.tok[id]);
            if (special || (!spm && looks_special(c))) {
                v.tok[id] = ft_xstrdup(c);
                v.type[id] = GGUF_TOK_CONTROL;
            } else {
                v.tok[id] = spm ? ft_xstrdup(c) : unspace(c);
                v.type[id] = GGUF_TOK_USER_DEFINED;
            }
        }
        for (int i = 0; !rc && i < n_vocab; i++)
            if (!v.tok[i]) {
                char b[32];
                snprintf(b, sizeof b, "[PAD%d]", i);
                v.tok[i] = ft_xstrdup(b);
                v.type[i] = GGUF_TOK_UNUSED;
            }
    }
    /* merges: the "gpt2" list; for "llama" the scores (-rank of the merge that makes a token) */
    int nm = cJSON_GetArraySize(mlist);
    tok_index ix = {0};
    if (!rc && spm) index_build(&ix, &v);
    if (!rc && !spm) merges = ft_xcalloc((size_t)(nm > 0 ? nm : 1), sizeof *merges);
    const cJSON *m = mlist ? mlist->child : NULL;
    for (int r = 0; !rc && r < nm; r++, m = m->next) {
        if (!spm) {
            if (!(merges[n_merges] = merge_text(m))) rc = ft_fail(e, FT_EINPUT, "%s: merge %d is malformed", tj_path, r);
            else n_merges++;
            continue;
        }
        char *res = merge_result(m);
        if (!res) {
            rc = ft_fail(e, FT_EINPUT, "%s: merge %d is malformed", tj_path, r);
            break;
        }
        int id = index_find(&ix, &v, res);
        if (id >= 0 && v.type[id] == GGUF_TOK_NORMAL && v.score[id] == 0) v.score[id] = -(float)(r + 1);
        free(res);
    }
    if (!rc) rc = gguf_writer_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2", e);
    if (!rc) rc = gguf_writer_str(w, "tokenizer.ggml.pre", pre, e);
    if (!rc) rc = gguf_writer_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.tok, (uint64_t)v.n, e);
    if (!rc && spm) rc = gguf_writer_arr_f32(w, "tokenizer.ggml.scores", v.score, (uint64_t)v.n, e);
    if (!rc) rc = gguf_writer_arr_i32(w, "tokenizer.ggml.token_type", v.type, (uint64_t)v.n, e);
    if (!rc && !spm) rc = gguf_writer_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, (uint64_t)n_merges, e);
    /* special ids: tokenizer_config's token texts (looked up among the added tokens), else config.json's */
    static const char *const TYPES[7] = {"bos", "eos", "unk", "sep", "pad", "cls", "mask"};
    const int cfg_vals[7] = {cfg_ids->bos, cfg_ids->eos, cfg_ids->unk, cfg_ids->sep, cfg_ids->pad, cfg_ids->cls, cfg_ids->mask};
    int bos_id = -1, eos_id = -1;
    for (int t = 0; !rc && t < 7; t++) {
        const char *txt = tc ? cfg_token_text(tc, TYPES[t]) : NULL;
        int id = txt ? added_id(added, txt) : -1;
        if (id < 0) id = cfg_vals[t];
        if (id < 0 || id >= n_vocab) continue;
        if (t == 0) bos_id = id;
        if (t == 1) eos_id = id;
        char k[64];
        snprintf(k, sizeof k, "tokenizer.ggml.%s_token_id", TYPES[t]);
        rc = gguf_writer_u32(w, k, (uint32_t)id, e);
    }
    if (!rc && eot >= 0 && eot < n_vocab) rc = gguf_writer_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)eot, e);
    /* add_bos / add_eos: the post-processor's template (a leading BOS, a trailing EOS), else tokenizer_config */
    int add_bos = -1, add_eos = -1, add_sep = -1;
    const cJSON *pp = tj ? cJSON_GetObjectItem(tj, "post_processor") : NULL;
    const cJSON *procs = jtype(pp, "Sequence") ? cJSON_GetObjectItem(pp, "processors") : NULL;
    for (int i = 0; !rc && pp && i < (procs ? cJSON_GetArraySize(procs) : 1); i++) {
        const cJSON *p = procs ? cJSON_GetArrayItem(procs, i) : pp;
        if (jtype(p, "ByteLevel")) {
            if (add_bos < 0) add_bos = 0;
            if (add_eos < 0) add_eos = 0;
        } else if (jtype(p, "TemplateProcessing")) {
            const cJSON *single = cJSON_GetObjectItem(p, "single");
            int ns = cJSON_GetArraySize(single);
            const char *first = NULL, *last = NULL;
            if (ns > 1) {
                first = special_of(cJSON_GetArrayItem(single, 0));
                last = special_of(cJSON_GetArrayItem(single, ns - 1));
                if (first) add_bos = bos_id >= 0 && added_id(added, first) == bos_id;
                if (last) add_eos = eos_id >= 0 && added_id(added, last) == eos_id;
            }
            /* add_sep, as SpecialVocab reads the pair template: [first] A [sep [sep]] B [last] */
            const cJSON *pair = cJSON_GetObjectItem(p, "pair");
            int lo = 0, hi = cJSON_GetArraySize(pair); /* [lo, hi) */
            if (hi && first && eq(special_of(cJSON_GetArrayItem(pair, 0)), first)) lo++;
            if (hi > lo && last && eq(special_of(cJSON_GetArrayItem(pair, hi - 1)), last)) hi--;
            if (hi - lo > 2 && eq(sequence_of(cJSON_GetArrayItem(pair, lo)), "A") &&
                eq(sequence_of(cJSON_GetArrayItem(pair, hi - 1)), "B")) {
                const char *sep = tc ? cfg_token_text(tc, "sep") : NULL, *eos = tc ? cfg_token_text(tc, "eos") : NULL;
                const char *m0 = special_of(cJSON_GetArrayItem(pair, lo + 1));
                add_sep = 0;
                if (m0 && (eq(m0, sep) || eq(m0, eos)) && !last) add_sep = 1;
                if (hi - lo == 4) {
                    const char *m1 = special_of(cJSON_GetArrayItem(pair, lo + 2));
                    if (m1 && (eq(m1, sep) || eq(m1, eos))) add_sep = 1;
                }
            }
        }
    }
    if (tc) {
        const cJSON *b = cJSON_GetObjectItem(tc, "add_bos_token"), *s = cJSON_GetObjectItem(tc, "add_eos_token");
        if (add_bos < 0 && cJSON_IsBool(b)) add_bos = cJSON_IsTrue(b);
        if (add_eos < 0 && cJSON_IsBool(s)) add_eos = cJSON_IsTrue(s);
    }
    if (!rc) rc = gguf_writer_bool(w, "tokenizer.ggml.add_bos_token", add_bos > 0, e);
    if (!rc && add_eos >= 0) rc = gguf_writer_bool(w, "tokenizer.ggml.add_eos_token", add_eos, e);
    if (!rc && add_sep >= 0) rc = gguf_writer_bool(w, "tokenizer.ggml.add_sep_token", add_sep, e);
    const cJSON *aps = tc ? cJSON_GetObjectItem(tc, "add_prefix_space") : NULL;
    if (!rc && cJSON_IsBool(aps)) rc = gguf_writer_bool(w, "tokenizer.ggml.add_space_prefix", cJSON_IsTrue(aps), e);
    if (!rc && chat_template) rc = gguf_writer_str(w, "tokenizer.chat_template", chat_template, e);
    free(ix.slot);
    for (int i = 0; i < n_merges; i++) free(merges[i]);
    free(merges);
    vb_free(&v);
    cJSON_Delete(tj);
    cJSON_Delete(tc);
    free(text);
    free(tc_text);
    free(tj_path);
    free(tc_path);
    return rc;
}

/* ---------- tensors ---------- */

int gguf_export_tensor_name(const char *hf, int num_layers, char *out, size_t n) {
    static const char *const TOP[][2] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
    };
    static const char *const LAYER[][2] = {
        {"input_layernorm", "attn_norm"}, {"self_attn.q_proj", "attn_q"},   {"self_attn.k_proj", "attn_k"},
        {"self_attn.v_proj", "attn_v"},   {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
        {"mlp.gate_proj", "ffn_gate"},    {"mlp.up_proj", "ffn_up"},        {"mlp.down_proj", "ffn_down"},
    };
    for (size_t i = 0; i < sizeof TOP / sizeof TOP[0]; i++)
        if (!strcmp(hf, TOP[i][0])) {
            snprintf(out, n, "%s", TOP[i][1]);
            return 1;
        }
    const char *pre = "model.layers.";
    if (strncmp(hf, pre, strlen(pre))) return -1;
    char *end;
    long l = strtol(hf + strlen(pre), &end, 10);
    if (end == hf + strlen(pre) || *end != '.' || l < 0 || l >= num_layers) return -1;
    const char *rest = end + 1;
    if (!strcmp(rest, "self_attn.rotary_emb.inv_freq")) return 0;
    for (size_t i = 0; i < sizeof LAYER / sizeof LAYER[0]; i++) {
        size_t k = strlen(LAYER[i][0]);
        if (!strncmp(rest, LAYER[i][0], k) && (!strcmp(rest + k, ".weight") || !strcmp(rest + k, ".bias"))) {
            snprintf(out, n, "blk.%ld.%s%s", l, LAYER[i][1], rest + k);
            return 1;
        }
    }
    return -1;
}

void gguf_export_permute(float *x, int64_t rows, int64_t cols, int n_head, float *tmp) {
    int64_t hd = rows / n_head, half = hd / 2;
    for (int h = 0; h < n_head; h++) {
        float *head = x + (int64_t)h * hd * cols;
        memcpy(tmp, head, (size_t)(hd * cols) * sizeof(float));
        for (int64_t i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy(head + (2 * i + j) * cols, tmp + (j * half + i) * cols, (size_t)cols * sizeof(float));
    }
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

int gguf_export_tensor_type(const char *name, int n_dims, int64_t ne0, int weight_type) {
    if (n_dims <= 1 || ends_with(name, "_norm.weight") || !ends_with(name, ".weight")) return GGML_TYPE_F32;
    if ((weight_type == GGML_TYPE_Q8_0 || weight_type == GGML_TYPE_Q4_0) && ne0 % 32) return GGML_TYPE_F16;
    return weight_type;
}

int gguf_export_add_tensor(gguf_writer *w, const char *name, const float *x, int n_dims, const int64_t *hf_shape,
                           int weight_type, int *type_out, ft_error *e) {
    uint64_t ne[GGUF_MAX_DIMS], n = 1;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) return ft_fail(e, FT_EINPUT, "gguf: tensor %s has %d dims", name, n_dims);
    for (int d = 0; d < n_dims; d++) {
        ne[d] = (uint64_t)hf_shape[n_dims - 1 - d];
        n *= ne[d];
    }
    int type = gguf_export_tensor_type(name, n_dims, (int64_t)ne[0], weight_type);
    if (type_out) *type_out = type;
    if (type == GGML_TYPE_F32) return gguf_writer_tensor(w, name, type, n_dims, ne, x, e);
    uint64_t nbytes;
    if (ggml_nbytes(type, n, &nbytes)) return ft_fail(e, FT_EINPUT, "gguf: tensor %s: bad size", name);
    void *buf = malloc(nbytes ? nbytes : 1);
    if (!buf) return ft_fail(e, FT_ENOMEM, "gguf: out of memory converting %s (%llu bytes)", name, (unsigned long long)nbytes);
    uint16_t *h = buf;
    if (type == GGML_TYPE_F16)
        for (uint64_t i = 0; i < n; i++) h[i] = ft_f32_to_f16(x[i]);
    else if (type == GGML_TYPE_BF16)
        for (uint64_t i = 0; i < n; i++) h[i] = ft_f32_to_bf16(x[i]);
    else if (type == GGML_TYPE_Q8_0)
        ggml_quantize_q8_0(x, buf, (int64_t)n);
    else
        ggml_quantize_q4_0(x, buf, (int64_t)n);
    int rc = gguf_writer_tensor(w, name, type, n_dims, ne, buf, e);
    free(buf);
    return rc;
}

void gguf_export_llama3_rope_factors(int dim, float base, float factor, float low_freq_factor, float high_freq_factor,
                                     int original_max_position, float *out) {
    float old = (float)original_max_position;
    float low_wavelen = old / low_freq_factor, high_wavelen = old / high_freq_factor;
    for (int i = 0; i < dim / 2; i++) {
        float freq = 1.0f / powf(base, (float)(2 * i) / (float)dim);
        float wavelen = (float)(2 * 3.14159265358979323846) / freq;
        if (wavelen < high_wavelen) out[i] = 1.0f;
        else if (wavelen > low_wavelen) out[i] = factor;
        else {
            float smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
            out[i] = 1.0f / ((1 - smooth) / factor + smooth);
        }
    }
}
