/* gguf_model: see gguf_model.h. Names, config and tokenizer follow transformers'
 * integrations/ggml.py + modeling_gguf_pytorch_utils.py (GGUF_CONFIG_MAPPING, GGUFGPTConverter,
 * reverse_permute) and llama.cpp's llama-vocab.cpp (the pre-tokenizer of each tokenizer.ggml.pre). */
#include "finetune/io/gguf_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include "finetune/io/ggml_types.h"

struct gguf_model {
    gguf_file *f;
    char *path;
    char arch[32];
    int64_t n_layers, n_head, n_head_kv, n_embd;
    gguf_model_tensor *t;
    size_t n;
};

/* ---------- names ---------- */

static const struct {
    const char *gguf, *hf;
} LAYER_NAMES[] = {
    {"attn_norm", "input_layernorm"},   {"attn_q", "self_attn.q_proj"}, {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},     {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
    {"ffn_gate", "mlp.gate_proj"},      {"ffn_up", "mlp.up_proj"},      {"ffn_down", "mlp.down_proj"},
};

/* HF name of a GGUF tensor; 0 when unknown. *qk: 1 for q_proj, 2 for k_proj. */
static int hf_name(const char *g, char *out, size_t cap, int *qk) {
    *qk = 0;
    snprintf(out, cap, "%s", g);
    if (strcmp(g, "token_embd.weight") == 0) return snprintf(out, cap, "model.embed_tokens.weight"), 1;
    if (strcmp(g, "output_norm.weight") == 0) return snprintf(out, cap, "model.norm.weight"), 1;
    if (strcmp(g, "output.weight") == 0) return snprintf(out, cap, "lm_head.weight"), 1;
    int layer, used = 0;
    if (sscanf(g, "blk.%d.%n", &layer, &used) != 1 || used == 0 || layer < 0) return 0;
    const char *rest = g + used, *dot = strrchr(rest, '.');
    if (!dot || (strcmp(dot, ".weight") != 0 && strcmp(dot, ".bias") != 0)) return 0;
    for (size_t i = 0; i < sizeof LAYER_NAMES / sizeof LAYER_NAMES[0]; i++) {
        size_t k = strlen(LAYER_NAMES[i].gguf);
        if ((size_t)(dot - rest) == k && strncmp(rest, LAYER_NAMES[i].gguf, k) == 0) {
            snprintf(out, cap, "model.layers.%d.%s%s", layer, LAYER_NAMES[i].hf, dot);
            if (strcmp(dot, ".weight") == 0) *qk = i == 1 ? 1 : i == 2 ? 2 : 0;
            return 1;
        }
    }
    return 0;
}

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const gguf_model_tensor *)a)->name, ((const gguf_model_tensor *)b)->name);
}

/* ---------- metadata helpers ---------- */

static int arch_int(const gguf_model *m, const char *suffix, int64_t *out, int required, ft_error *e) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->arch, suffix);
    if (!required && !gguf_find_kv(m->f, key)) return FT_OK;
    int rc = gguf_get_int(m->f, key, out, e);
    if (!rc && (*out <= 0 || *out > ((int64_t)1 << 31)))
        rc = ft_fail(e, FT_EINPUT, "%s: GGUF metadata '%s' is %lld; a positive count was expected", m->path, key,
                     (long long)*out);
    return rc;
}

static int arch_float(const gguf_model *m, const char *suffix, double *out, ft_error *e) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->arch, suffix);
    if (!gguf_find_kv(m->f, key)) return FT_OK;
    return gguf_get_float(m->f, key, out, e);
}

/* Takes f (closed on failure). */
static int model_from_file(gguf_file *f, const char *path, gguf_model **out, ft_error *e) {
    gguf_model *m = ft_xcalloc(1, sizeof *m);
    m->f = f;
    m->path = ft_xstrdup(path);
    char *arch = NULL;
    int rc = gguf_get_str(f, "general.architecture", &arch, e);
    if (!rc && strcmp(arch, "llama") != 0)
        rc = ft_fail(e, FT_EINPUT, "%s: GGUF architecture '%s' is not supported (only 'llama': Llama, Mistral, SmolLM "
                     "and other Llama-shaped models)", path, arch);
    if (!rc) snprintf(m->arch, sizeof m->arch, "%s", arch);
    free(arch);
    m->n_head_kv = 0;
    if (!rc) rc = arch_int(m, "block_count", &m->n_layers, 1, e);
    if (!rc) rc = arch_int(m, "attention.head_count", &m->n_head, 1, e);
    if (!rc) rc = arch_int(m, "embedding_length", &m->n_embd, 1, e);
    if (!rc) rc = arch_int(m, "attention.head_count_kv", &m->n_head_kv, 0, e);
    if (!rc && !m->n_head_kv) m->n_head_kv = m->n_head;
    if (!rc && gguf_find_tensor(f, "rope_freqs.weight"))
        rc = ft_fail(e, FT_EINPUT, "%s: the file has rope_freqs.weight (Llama-3.1-style rope scaling baked into "
                     "factors), which a Hugging Face config cannot express; convert the original checkpoint instead", path);
    size_t n = rc ? 0 : gguf_tensor_count(f);
    m->t = ft_xcalloc(n ? n : 1, sizeof *m->t);
    for (size_t i = 0; !rc && i < n; i++) {
        const gguf_tensor *g = gguf_tensor_at(f, i);
        gguf_model_tensor *t = &m->t[m->n++];
        int qk;
        if (!hf_name(g->name, t->name, sizeof t->name, &qk))
            rc = ft_fail(e, FT_EINPUT, "%s: tensor '%s' is not one a Llama model has (token_embd, output_norm, output, "
                         "blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down})", path, g->name);
        t->t = g;
        t->ndim = g->n_dims;
        for (int d = 0; d < g->n_dims; d++) t->shape[d] = (int64_t)g->ne[g->n_dims - 1 - d];
        if (!rc && !ggml_can_dequantize(g->type))
            rc = ft_fail(e, FT_EINPUT, "%s: tensor '%s' is %s, which cannot be dequantized (supported: F32, F16, BF16, "
                         "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)", path, g->name, ggml_type_name(g->type));
        if (!rc && qk) {
            int64_t heads = qk == 1 ? m->n_head : m->n_head_kv;
            t->unpermute_heads = (int)heads;
            if (t->ndim != 2 || t->shape[0] % (2 * heads) != 0)
                rc = ft_fail(e, FT_EINPUT, "%s: tensor '%s' has %lld rows, not a whole number of %lld heads of even size",
                             path, g->name, (long long)t->shape[0], (long long)heads);
        }
    }
    if (!rc) {
        qsort(m->t, m->n, sizeof *m->t, cmp_tensor);
        for (size_t i = 1; !rc && i < m->n; i++)
            if (strcmp(m->t[i - 1].name, m->t[i].name) == 0)
                rc = ft_fail(e, FT_EINPUT, "%s: two tensors are both '%s'", path, m->t[i].name);
    }
    if (rc) {
        gguf_model_close(m);
        return rc;
    }
    *out = m;
    return FT_OK;
}

int gguf_model_open(const char *path, gguf_model **out, ft_error *e) {
    *out = NULL;
    gguf_file *f = NULL;
    int rc = gguf_open(path, &f, e);
    return rc ? rc : model_from_file(f, path, out, e);
}

int gguf_model_open_memory(const void *buf, size_t len, const char *name, gguf_model **out, ft_error *e) {
    *out = NULL;
    gguf_file *f = NULL;
    int rc = gguf_open_memory(buf, len, name, &f, e);
    return rc ? rc : model_from_file(f, name, out, e);
}

void gguf_model_close(gguf_model *m) {
    if (!m) return;
    gguf_close(m->f);
    free(m->t);
    free(m->path);
    free(m);
}

const char *gguf_model_path(const gguf_model *m) { return m->path; }
const gguf_file *gguf_model_file(const gguf_model *m) { return m->f; }
size_t gguf_model_count(const gguf_model *m) { return m->n; }
const gguf_model_tensor *gguf_model_at(const gguf_model *m, size_t i) { return i < m->n ? &m->t[i] : NULL; }

const gguf_model_tensor *gguf_model_find(const gguf_model *m, const char *hf_name) {
    gguf_model_tensor key;
    snprintf(key.name, sizeof key.name, "%s", hf_name);
    return bsearch(&key, m->t, m->n, sizeof *m->t, cmp_tensor);
}

int gguf_model_read_f32(const gguf_model *m, const gguf_model_tensor *t, float *dst, size_t n, ft_error *e) {
    if (!t->unpermute_heads) return gguf_read_f32(m->f, t->t, dst, n, e);
    float *tmp = malloc(n * sizeof(float));
    if (!tmp) return ft_fail(e, FT_ENOMEM, "out of host memory reading '%s' from %s", t->name, m->path);
    int rc = gguf_read_f32(m->f, t->t, tmp, n, e);
    if (!rc) {
        int64_t rows = t->shape[0], cols = t->shape[1], hd = rows / t->unpermute_heads, half = hd / 2;
        for (int64_t h = 0; h < t->unpermute_heads; h++)
            for (int64_t i = 0; i < 2; i++)
                for (int64_t j = 0; j < half; j++)
                    memcpy(dst + (h * hd + i * half + j) * cols, tmp + (h * hd + 2 * j + i) * cols,
                           (size_t)cols * sizeof(float));
    }
    free(tmp);
    return rc;
}

/* ---------- the HF files ---------- */

static int finish_json(cJSON *o, char **json) {
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    size_t n = strlen(s);
    s = ft_xrealloc(s, n + 2);
    s[n] = '\n';
    s[n + 1] = 0;
    *json = s;
    return FT_OK;
}

static int opt_token_id(const gguf_model *m, const char *key, int64_t *id, ft_error *e) {
    *id = -1;
    if (!gguf_find_kv(m->f, key)) return FT_OK;
    return gguf_get_int(m->f, key, id, e);
}

static int opt_bool(const gguf_model *m, const char *key, int dflt, int *out, ft_error *e) {
    *out = dflt;
    if (!gguf_find_kv(m->f, key)) return FT_OK;
    return gguf_get_bool(m->f, key, out, e);
}

int gguf_model_config_json(const gguf_model *m, char **json, ft_error *e) {
    *json = NULL;
    int64_t ff = 0, ctx = 0, vocab = 0, bos, eos, pad, key_len = 0;
    double eps = 1e-5, theta = 10000.0, factor = 0;
    int rc = arch_int(m, "feed_forward_length", &ff, 1, e);
    if (!rc) rc = arch_int(m, "context_length", &ctx, 0, e);
    if (!rc) rc = arch_int(m, "vocab_size", &vocab, 0, e);
    if (!rc) rc = arch_int(m, "attention.key_length", &key_len, 0, e);
    if (!rc) rc = arch_float(m, "attention.layer_norm_rms_epsilon", &eps, e);
    if (!rc) rc = arch_float(m, "rope.freq_base", &theta, e);
    if (!rc) rc = opt_token_id(m, "tokenizer.ggml.bos_token_id", &bos, e);
    if (!rc) rc = opt_token_id(m, "tokenizer.ggml.eos_token_id", &eos, e);
    if (!rc) rc = opt_token_id(m, "tokenizer.ggml.padding_token_id", &pad, e);
    char *scaling = NULL;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", m->arch);
    if (!rc && gguf_find_kv(m->f, key)) rc = gguf_get_str(m->f, key, &scaling, e);
    if (!rc && scaling && strcmp(scaling, "none") != 0) {
        if (strcmp(scaling, "linear") != 0)
            rc = ft_fail(e, FT_EINPUT, "%s: GGUF rope scaling '%s' is not supported (none or linear)", m->path, scaling);
        if (!rc) rc = arch_float(m, "rope.scaling.factor", &factor, e);
        if (!rc && factor <= 0) rc = ft_fail(e, FT_EINPUT, "%s: linear rope scaling needs %s.rope.scaling.factor", m->path, m->arch);
    }
    free(scaling);
    const gguf_model_tensor *emb = gguf_model_find(m, "model.embed_tokens.weight");
    if (!rc && !emb) rc = ft_fail(e, FT_EINPUT, "%s: no token_embd.weight tensor", m->path);
    if (!rc && !vocab) {
        const gguf_kv *toks = gguf_find_kv(m->f, "tokenizer.ggml.tokens");
        vocab = toks && toks->type == GGUF_VT_ARRAY ? (int64_t)toks->n : emb->shape[0];
    }
    if (rc) return rc;
    /* the file type says which float the weights were (quantized ones dequantize to fp32) */
    int64_t ftype = -1;
    if (gguf_find_kv(m->f, "general.file_type")) gguf_get_int(m->f, "general.file_type", &ftype, NULL);
    const char *dtype = ftype == 1 ? "float16" : ftype == 32 ? "bfloat16" : "float32";
    cJSON *o = cJSON_CreateObject();
    cJSON *archs = cJSON_AddArrayToObject(o, "architectures");
    cJSON_AddItemToArray(archs, cJSON_CreateString("LlamaForCausalLM"));
    cJSON_AddStringToObject(o, "model_type", "llama");
    cJSON_AddNumberToObject(o, "vocab_size", (double)vocab);
    cJSON_AddNumberToObject(o, "hidden_size", (double)m->n_embd);
    cJSON_AddNumberToObject(o, "intermediate_size", (double)ff);
    cJSON_AddNumberToObject(o, "num_hidden_layers", (double)m->n_layers);
    cJSON_AddNumberToObject(o, "num_attention_heads", (double)m->n_head);
    cJSON_AddNumberToObject(o, "num_key_value_heads", (double)m->n_head_kv);
    cJSON_AddNumberToObject(o, "head_dim", (double)(key_len ? key_len : m->n_embd / m->n_head));
    if (ctx) cJSON_AddNumberToObject(o, "max_position_embeddings", (double)ctx);
    cJSON_AddNumberToObject(o, "rms_norm_eps", (double)(float)eps);
    cJSON_AddNumberToObject(o, "rope_theta", (double)(float)theta);
    if (factor > 0) {
        cJSON *rs = cJSON_AddObjectToObject(o, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type", "linear");
        cJSON_AddNumberToObject(rs, "factor", (double)(float)factor);
    } else {
        cJSON_AddNullToObject(o, "rope_scaling");
    }
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    cJSON_AddBoolToObject(o, "attention_bias", gguf_model_find(m, "model.layers.0.self_attn.q_proj.bias") != NULL);
    cJSON_AddBoolToObject(o, "mlp_bias", 0);
    cJSON_AddBoolToObject(o, "tie_word_embeddings", gguf_model_find(m, "lm_head.weight") == NULL);
    if (bos >= 0) cJSON_AddNumberToObject(o, "bos_token_id", (double)bos);
    if (eos >= 0) cJSON_AddNumberToObject(o, "eos_token_id", (double)eos);
    if (pad >= 0) cJSON_AddNumberToObject(o, "pad_token_id", (double)pad);
    cJSON_AddStringToObject(o, "torch_dtype", dtype);
    return finish_json(o, json);
}

/* A GGUF string as a NUL-terminated copy; an embedded NUL is an error naming the key and index. */
static int kv_string(const gguf_model *m, const gguf_kv *kv, uint64_t i, char **out, ft_error *e) {
    const char *s;
    uint64_t len;
    if (gguf_kv_str(kv, i, &s, &len) != 0)
        return ft_fail(e, FT_EINPUT, "%s: GGUF metadata '%s' must hold strings", m->path, kv->key);
    if (memchr(s, 0, len))
        return ft_fail(e, FT_EINPUT, "%s: GGUF metadata '%s'[%llu] holds a NUL byte", m->path, kv->key,
                       (unsigned long long)i);
    char *c = ft_xmalloc(len + 1);
    memcpy(c, s, len);
    c[len] = 0;
    *out = c;
    return FT_OK;
}

/* llama.cpp's pre-tokenizer for tokenizer.ggml.pre (llama-vocab.cpp), as the tokenizer.json the
 * original model ships: GPT-2's regex, SmolLM's single digits first, Llama-3's and Qwen2's Split. */
static cJSON *bytelevel(int use_regex) {
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", "ByteLevel");
    cJSON_AddBoolToObject(b, "add_prefix_space", 0);
    cJSON_AddBoolToObject(b, "trim_offsets", 1);
    cJSON_AddBoolToObject(b, "use_regex", use_regex);
    return b;
}

static const char *RX_LLAMA3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                               "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *RX_QWEN2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                              "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static cJSON *pretokenizer(const char *pre) {
    cJSON *seq = cJSON_CreateObject(), *list;
    cJSON_AddStringToObject(seq, "type", "Sequence");
    list = cJSON_AddArrayToObject(seq, "pretokenizers");
    if (!pre || strcmp(pre, "default") == 0 || strcmp(pre, "gpt2") == 0 || strcmp(pre, "gpt-2") == 0) {
        cJSON_Delete(seq);
        return bytelevel(1);
    }
    if (strcmp(pre, "smollm") == 0) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "type", "Digits");
        cJSON_AddBoolToObject(d, "individual_digits", 1);
        cJSON_AddItemToArray(list, d);
        cJSON_AddItemToArray(list, bytelevel(1));
        return seq;
    }
    const char *rx = strcmp(pre, "llama3") == 0 || strcmp(pre, "llama-bpe") == 0 || strcmp(pre, "llama-v3") == 0
                         ? RX_LLAMA3
                         : strcmp(pre, "qwen2") == 0 ? RX_QWEN2 : NULL;
    if (!rx) {
        cJSON_Delete(seq);
        return NULL;
    }
    cJSON *s = cJSON_CreateObject(), *pat = cJSON_AddObjectToObject(s, "pattern");
    cJSON_AddStringToObject(s, "type", "Split");
    cJSON_AddStringToObject(pat, "Regex", rx);
    cJSON_AddStringToObject(s, "behavior", "Isolated");
    cJSON_AddBoolToObject(s, "invert", 0);
    cJSON_AddItemToArray(list, s);
    cJSON_AddItemToArray(list, bytelevel(0));
    return seq;
}

/* TemplateProcessing adding BOS before / EOS after the sequence (NULL names: none). */
static cJSON *template_post(const char *bos, int64_t bos_id, const char *eos, int64_t eos_id) {
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "type", "TemplateProcessing");
    const char *keys[2] = {"single", "pair"};
    for (int k = 0; k < 2; k++) {
        cJSON *arr = cJSON_AddArrayToObject(p, keys[k]);
        for (int part = 0; part <= k; part++) {
            if (bos) {
                cJSON *x = cJSON_CreateObject(), *st = cJSON_AddObjectToObject(x, "SpecialToken");
                cJSON_AddStringToObject(st, "id", bos);
                cJSON_AddNumberToObject(st, "type_id", part);
                cJSON_AddItemToArray(arr, x);
            }
            cJSON *x = cJSON_CreateObject(), *sq = cJSON_AddObjectToObject(x, "Sequence");
            cJSON_AddStringToObject(sq, "id", part ? "B" : "A");
            cJSON_AddNumberToObject(sq, "type_id", part);
            cJSON_AddItemToArray(arr, x);
            if (eos) {
                cJSON *y = cJSON_CreateObject(), *st = cJSON_AddObjectToObject(y, "SpecialToken");
                cJSON_AddStringToObject(st, "id", eos);
                cJSON_AddNumberToObject(st, "type_id", part);
                cJSON_AddItemToArray(arr, y);
            }
        }
    }
    cJSON *sp = cJSON_AddObjectToObject(p, "special_tokens");
    const char *names[2] = {bos, eos};
    int64_t ids[2] = {bos_id, eos_id};
    for (int k = 0; k < 2; k++) {
        if (!names[k] || cJSON_GetObjectItemCaseSensitive(sp, names[k])) continue;
        cJSON *t = cJSON_AddObjectToObject(sp, names[k]);
        cJSON_AddStringToObject(t, "id", names[k]);
        cJSON *i = cJSON_AddArrayToObject(t, "ids"), *s = cJSON_AddArrayToObject(t, "tokens");
        cJSON_AddItemToArray(i, cJSON_CreateNumber((double)ids[k]));
        cJSON_AddItemToArray(s, cJSON_CreateString(names[k]));
    }
    return p;
}

/* The tokenizer's metadata, read once for both files. */
typedef struct tok_meta {
    const gguf_kv *tokens, *types, *merges, *scores; /* merges: gpt2; scores: llama */
    char *model, *pre;
    int64_t bos, eos, unk, pad;
    int add_bos, add_eos;
} tok_meta;

static void tok_meta_free(tok_meta *t) {
    free(t->model);
    free(t->pre);
}

static int token_name(const gguf_model *m, const tok_meta *t, int64_t id, const char *what, char **out, ft_error *e) {
    *out = NULL;
    if (id < 0) return FT_OK;
    if ((uint64_t)id >= t->tokens->n)
        return ft_fail(e, FT_EINPUT, "%s: tokenizer.ggml.%s_token_id %lld is outside the %llu-token vocabulary", m->path,
                       what, (long long)id, (unsigned long long)t->tokens->n);
    return kv_string(m, t->tokens, (uint64_t)id, out, e);
}

static int tok_meta_read(const gguf_model *m, tok_meta *t, ft_error *e) {
    memset(t, 0, sizeof *t);
    int rc = gguf_get_str(m->f, "tokenizer.ggml.model", &t->model, e);
    if (rc) return ft_error_append(e, " (the file carries no tokenizer; give one with --tokenizer / tokenizer=)"), rc;
    int spm = strcmp(t->model, "llama") == 0;
    if (strcmp(t->model, "gpt2") != 0 && !spm)
        return ft_fail(e, FT_EINPUT, "%s: tokenizer.ggml.model '%s' is not supported (gpt2: byte-level BPE, llama: "
                       "SentencePiece BPE); give a tokenizer.json directory with --tokenizer / tokenizer=", m->path, t->model);
    if (gguf_find_kv(m->f, "tokenizer.ggml.pre")) rc = gguf_get_str(m->f, "tokenizer.ggml.pre", &t->pre, e);
    if (!rc) rc = gguf_get_arr(m->f, "tokenizer.ggml.tokens", &t->tokens, e);
    if (!rc && t->tokens->elem_type != GGUF_VT_STRING)
        rc = ft_fail(e, FT_EINPUT, "%s: tokenizer.ggml.tokens must be an array of strings", m->path);
    if (!rc && !spm) rc = gguf_get_arr(m->f, "tokenizer.ggml.merges", &t->merges, e);
    if (!rc && !spm && t->merges->elem_type != GGUF_VT_STRING)
        rc = ft_fail(e, FT_EINPUT, "%s: tokenizer.ggml.merges must be an array of strings", m->path);
    if (!rc && spm) rc = gguf_get_arr(m->f, "tokenizer.ggml.scores", &t->scores, e);
    if (!rc && spm && (t->scores->elem_type != GGUF_VT_FLOAT32 || t->scores->n != t->tokens->n))
        rc = ft_fail(e, FT_EINPUT, "%s: tokenizer.ggml.scores must be %llu f32 values, one per token", m->path,
                     (unsigned long long)t->tokens->n);
    if (!rc && gguf_find_kv(m->f, "tokenizer.ggml.token_type")) {
        rc = gguf_get_arr(m->f, "tokenizer.ggml.token_type", &t->types, e);
        if (!rc && t->types->n != t->tokens->n)
            rc = ft_fail(e, FT_EINPUT, "%s: tokenizer.ggml.token_type has %llu entries for %llu tokens", m->path,
                         (unsigned long long)t->types->n, (unsigned long long)t->tokens->n);
    }
    if (!rc) rc = opt_token_id(m, "tokenizer.ggml.bos_token_id", &t->bos, e);
    if (!rc) rc = opt_token_id(m, "tokenizer.ggml.eos_token_id", &t->eos, e);
    if (!rc) rc = opt_token_id(m, "tokenizer.ggml.unknown_token_id", &t->unk, e);
    if (!rc) rc = opt_token_id(m, "tokenizer.ggml.padding_token_id", &t->pad, e);
    /* a SentencePiece vocabulary adds BOS unless it says otherwise (llama.cpp; transformers' GGUF loader) */
    if (!rc) rc = opt_bool(m, "tokenizer.ggml.add_bos_token", spm, &t->add_bos, e);
    if (!rc) rc = opt_bool(m, "tokenizer.ggml.add_eos_token", 0, &t->add_eos, e);
    return rc;
}

/* ---------- SentencePiece merges from scores (transformers' generate_merges) ---------- */

typedef struct tok_hash {
    const char **s; /* NUL-terminated tokens, by id */
    int64_t *slot;  /* id + 1, 0 = empty */
    size_t cap;
} tok_hash;

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

/* The id of the n bytes at s (the last id of a duplicated token, as a Python dict keeps), or -1. */
static int64_t hash_find(const tok_hash *h, const char *s, size_t n) {
    for (size_t i = fnv1a(s, n) & (h->cap - 1);; i = (i + 1) & (h->cap - 1)) {
        int64_t id = h->slot[i] - 1;
        if (id < 0) return -1;
        if (strlen(h->s[id]) == n && memcmp(h->s[id], s, n) == 0) return id;
    }
}

static void hash_put(tok_hash *h, int64_t id) {
    size_t n = strlen(h->s[id]);
    for (size_t i = fnv1a(h->s[id], n) & (h->cap - 1);; i = (i + 1) & (h->cap - 1)) {
        int64_t old = h->slot[i] - 1;
        if (old < 0 || (strlen(h->s[old]) == n && memcmp(h->s[old], h->s[id], n) == 0)) {
            h->slot[i] = id + 1;
            return;
        }
    }
}

static size_t utf8_chars(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((uint8_t)s[i] & 0xC0) != 0x80;
    return c;
}

typedef struct spm_merge {
    int64_t tok, seq;     /* the merged token, the order generate_merges appends in */
    size_t split;         /* bytes of the left piece */
    int64_t left, right;  /* their ids */
    double score;
    size_t lchars, rchars;
} spm_merge;

static int cmp_local(const void *a, const void *b) {
    const spm_merge *x = a, *y = b;
    if (x->left != y->left) return x->left < y->left ? -1 : 1;
    return x->right < y->right ? -1 : x->right > y->right;
}

/* sorted(merges, key=(score, len(left), len(right)), reverse=True): descending, ties in append order */
static int cmp_global(const void *a, const void *b) {
    const spm_merge *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->lchars != y->lchars) return x->lchars > y->lchars ? -1 : 1;
    if (x->rchars != y->rchars) return x->rchars > y->rchars ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Every split of every token into two tokens of the vocabulary, ordered as transformers' generate_merges
 * orders them for a SentencePiece vocabulary with scores; appended to `merges` as [left, right] pairs. */
static void spm_merges(const char **toks, const gguf_kv *scores, int64_t n, cJSON *merges) {
    tok_hash h = {toks, NULL, 16};
    while (h.cap < (size_t)n * 2) h.cap *= 2;
    h.slot = ft_xcalloc(h.cap, sizeof *h.slot);
    for (int64_t i = 0; i < n; i++) hash_put(&h, i);
    spm_merge *all = NULL;
    size_t cnt = 0, cap = 0;
    for (int64_t i = 0; i < n; i++) {
        if (hash_find(&h, toks[i], strlen(toks[i])) != i) continue; /* a duplicate: the dict holds the last one */
        double sc = 0;
        gguf_kv_float(scores, (uint64_t)i, &sc);
        size_t len = strlen(toks[i]), first = cnt;
        for (size_t k = 1; k < len; k++) {
            if (((uint8_t)toks[i][k] & 0xC0) == 0x80) continue; /* split between characters only */
            int64_t l = hash_find(&h, toks[i], k), r = l < 0 ? -1 : hash_find(&h, toks[i] + k, len - k);
            if (l < 0 || r < 0) continue;
            if (cnt == cap) all = ft_xrealloc(all, (cap = cap ? 2 * cap : 4096) * sizeof *all);
            all[cnt++] = (spm_merge){i, 0, k, l, r, sc, utf8_chars(toks[i], k), utf8_chars(toks[i] + k, len - k)};
        }
        if (cnt > first) qsort(all + first, cnt - first, sizeof *all, cmp_local); /* all is NULL until a merge */
        for (size_t k = first; k < cnt; k++) all[k].seq = (int64_t)k;
    }
    if (cnt) qsort(all, cnt, sizeof *all, cmp_global);
    for (size_t k = 0; k < cnt; k++) {
        cJSON *pair = cJSON_CreateArray();
        const char *t = toks[all[k].tok];
        char *l = ft_xmalloc(all[k].split + 1);
        memcpy(l, t, all[k].split);
        l[all[k].split] = 0;
        cJSON_AddItemToArray(pair, cJSON_CreateString(l));
        cJSON_AddItemToArray(pair, cJSON_CreateString(t + all[k].split));
        cJSON_AddItemToArray(merges, pair);
        free(l);
    }
    free(all);
    free(h.slot);
}

static cJSON *decoder_item(const char *type) {
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "type", type);
    return d;
}

int gguf_model_tokenizer_json(const gguf_model *m, char **json, ft_error *e) {
    *json = NULL;
    tok_meta tm;
    int rc = tok_meta_read(m, &tm, e);
    int spm = !rc && strcmp(tm.model, "llama") == 0;
    cJSON *pre = NULL;
    if (!rc && spm) { /* transformers' LlamaTokenizer: Metaspace, prepend on the first piece, no split */
        pre = cJSON_CreateObject();
        cJSON_AddStringToObject(pre, "type", "Metaspace");
        cJSON_AddStringToObject(pre, "replacement", "\xe2\x96\x81");
        cJSON_AddStringToObject(pre, "prepend_scheme", "first");
        cJSON_AddBoolToObject(pre, "split", 0);
    } else if (!rc) {
        pre = pretokenizer(tm.pre);
    }
    if (!rc && !pre)
        rc = ft_fail(e, FT_EINPUT, "%s: tokenizer.ggml.pre '%s' is not supported (default, gpt2, smollm, llama-bpe, "
                     "llama3, qwen2); give a tokenizer.json directory with --tokenizer / tokenizer=", m->path, tm.pre);
    if (rc) {
        tok_meta_free(&tm);
        return rc;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "version", "1.0");
    cJSON_AddNullToObject(o, "truncation");
    cJSON_AddNullToObject(o, "padding");
    cJSON *added = cJSON_AddArrayToObject(o, "added_tokens");
    cJSON *model = cJSON_CreateObject();
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", spm);
    cJSON_AddBoolToObject(model, "byte_fallback", spm);
    cJSON_AddBoolToObject(model, "ignore_merges", 0);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab"), *merges = cJSON_AddArrayToObject(model, "merges");
    const char **toks = ft_xcalloc(tm.tokens->n ? tm.tokens->n : 1, sizeof *toks);
    for (uint64_t i = 0; !rc && i < tm.tokens->n; i++) {
        char *s = NULL;
        rc = kv_string(m, tm.tokens, i, &s, e);
        if (rc) break;
        toks[i] = s;
        cJSON_AddItemToObject(vocab, s, cJSON_CreateNumber((double)i));
        int64_t type = 1;
        if (tm.types && gguf_kv_int(tm.types, i, &type) != 0)
            rc = ft_fail(e, FT_EINPUT, "%s: tokenizer.ggml.token_type must hold integers", m->path);
        /* CONTROL tokens (and SentencePiece's UNKNOWN) are special added tokens, USER_DEFINED ones added tokens */
        if (!rc && (type == 3 || type == 4 || (spm && type == 2))) {
            cJSON *a = cJSON_CreateObject();
            cJSON_AddNumberToObject(a, "id", (double)i);
            cJSON_AddStringToObject(a, "content", s);
            cJSON_AddBoolToObject(a, "single_word", 0);
            cJSON_AddBoolToObject(a, "lstrip", 0);
            cJSON_AddBoolToObject(a, "rstrip", 0);
            cJSON_AddBoolToObject(a, "normalized", 0);
            cJSON_AddBoolToObject(a, "special", type != 4);
            cJSON_AddItemToArray(added, a);
        }
    }
    if (!rc && spm) spm_merges(toks, tm.scores, (int64_t)tm.tokens->n, merges);
    for (uint64_t i = 0; i < tm.tokens->n; i++) free((char *)toks[i]);
    free(toks);
    for (uint64_t i = 0; !rc && !spm && i < tm.merges->n; i++) {
        char *s = NULL;
        rc = kv_string(m, tm.merges, i, &s, e);
        if (!rc && !strchr(s, ' '))
            rc = ft_fail(e, FT_EINPUT, "%s: tokenizer.ggml.merges[%llu] '%s' is not two tokens separated by a space",
                         m->path, (unsigned long long)i, s);
        if (!rc) cJSON_AddItemToArray(merges, cJSON_CreateString(s));
        free(s);
    }
    char *bos = NULL, *eos = NULL;
    if (!rc && tm.add_bos) rc = token_name(m, &tm, tm.bos, "bos", &bos, e);
    if (!rc && tm.add_eos) rc = token_name(m, &tm, tm.eos, "eos", &eos, e);
    if (!rc && ((tm.add_bos && !bos) || (tm.add_eos && !eos)))
        rc = ft_fail(e, FT_EINPUT, "%s: tokenizer.ggml.add_%s_token is set but the file names no %s token", m->path,
                     tm.add_bos && !bos ? "bos" : "eos", tm.add_bos && !bos ? "bos" : "eos");
    cJSON_AddNullToObject(o, "normalizer");
    cJSON_AddItemToObject(o, "pre_tokenizer", pre);
    if (bos || eos) {
        cJSON_AddItemToObject(o, "post_processor", template_post(bos, tm.bos, eos, tm.eos));
    } else if (spm) {
        cJSON_AddNullToObject(o, "post_processor");
    } else {
        cJSON *p = cJSON_AddObjectToObject(o, "post_processor");
        cJSON_AddStringToObject(p, "type", "ByteLevel");
        cJSON_AddBoolToObject(p, "add_prefix_space", 1);
        cJSON_AddBoolToObject(p, "trim_offsets", 0);
        cJSON_AddBoolToObject(p, "use_regex", 1);
    }
    cJSON *dec = cJSON_AddObjectToObject(o, "decoder");
    if (spm) { /* Replace U+2581 by a space, ByteFallback, Fuse, Strip the leading space */
        cJSON_AddStringToObject(dec, "type", "Sequence");
        cJSON *list = cJSON_AddArrayToObject(dec, "decoders"), *r = decoder_item("Replace"), *st = decoder_item("Strip");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(r, "pattern"), "String", "\xe2\x96\x81");
        cJSON_AddStringToObject(r, "content", " ");
        cJSON_AddStringToObject(st, "content", " ");
        cJSON_AddNumberToObject(st, "start", 1);
        cJSON_AddNumberToObject(st, "stop", 0);
        cJSON_AddItemToArray(list, r);
        cJSON_AddItemToArray(list, decoder_item("ByteFallback"));
        cJSON_AddItemToArray(list, decoder_item("Fuse"));
        cJSON_AddItemToArray(list, st);
    } else {
        cJSON_AddStringToObject(dec, "type", "ByteLevel");
        cJSON_AddBoolToObject(dec, "add_prefix_space", 1);
        cJSON_AddBoolToObject(dec, "trim_offsets", 1);
        cJSON_AddBoolToObject(dec, "use_regex", 1);
    }
    cJSON_AddItemToObject(o, "model", model);
    free(bos);
    free(eos);
    tok_meta_free(&tm);
    if (rc) {
        cJSON_Delete(o);
        return rc;
    }
    return finish_json(o, json);
}

int gguf_model_chat_template(const gguf_model *m, char **text, ft_error *e) {
    *text = NULL;
    if (!gguf_find_kv(m->f, "tokenizer.chat_template")) return FT_OK;
    return gguf_get_str(m->f, "tokenizer.chat_template", text, e);
}

int gguf_model_tokenizer_config_json(const gguf_model *m, char **json, ft_error *e) {
    *json = NULL;
    tok_meta tm;
    int rc = tok_meta_read(m, &tm, e);
    char *names[4] = {0}, *tmpl = NULL;
    const char *keys[4] = {"bos_token", "eos_token", "unk_token", "pad_token"}, *what[4] = {"bos", "eos", "unknown", "padding"};
    int64_t ids[4] = {tm.bos, tm.eos, tm.unk, tm.pad};
    for (int k = 0; !rc && k < 4; k++) rc = token_name(m, &tm, ids[k], what[k], &names[k], e);
    if (!rc) rc = gguf_model_chat_template(m, &tmpl, e);
    int64_t ctx = 0;
    if (!rc) rc = arch_int(m, "context_length", &ctx, 0, e);
    if (!rc) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, "add_bos_token", tm.add_bos);
        cJSON_AddBoolToObject(o, "add_eos_token", tm.add_eos);
        cJSON_AddBoolToObject(o, "add_prefix_space", 0);
        for (int k = 0; k < 4; k++)
            if (names[k]) cJSON_AddStringToObject(o, keys[k], names[k]);
        if (tmpl) cJSON_AddStringToObject(o, "chat_template", tmpl);
        cJSON_AddBoolToObject(o, "clean_up_tokenization_spaces", 0);
        if (ctx) cJSON_AddNumberToObject(o, "model_max_length", (double)ctx);
        cJSON_AddStringToObject(o, "tokenizer_class", "PreTrainedTokenizerFast");
        finish_json(o, json);
    }
    for (int k = 0; k < 4; k++) free(names[k]);
    free(tmpl);
    tok_meta_free(&tm);
    return rc;
}
