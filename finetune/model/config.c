#include "finetune/model/config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/io/gguf_model.h"

/* Defaults follow transformers' LlamaConfig / MistralConfig / Qwen2Config
 * (transformers 5): a key absent from config.json takes the class default. */

static const char *json_type_name(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsNull(v)) return "null";
    return "invalid";
}

static int int_of(const cJSON *v, const char *key, int *out, const char *where, ft_error *e) {
    if (!cJSON_IsNumber(v))
        return ft_fail(e, FT_EINPUT, "%s: key \"%s\" must be an integer, got %s", where, key, json_type_name(v));
    double d = v->valuedouble;
    if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != floor(d))
        return ft_fail(e, FT_EINPUT, "%s: key \"%s\" must be an integer, got %g", where, key, d);
    *out = (int)d;
    return FT_OK;
}

/* Integer field: absent or null -> def (or an error when required). */
static int get_int(const cJSON *o, const char *key, int required, int def, int *out, const char *where,
                   ft_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return ft_fail(e, FT_EINPUT, "%s: missing required key \"%s\"", where, key);
        *out = def;
        return FT_OK;
    }
    return int_of(v, key, out, where, e);
}

static int get_float(const cJSON *o, const char *key, double def, double *out, const char *where, ft_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return FT_OK;
    }
    if (!cJSON_IsNumber(v))
        return ft_fail(e, FT_EINPUT, "%s: key \"%s\" must be a number, got %s", where, key, json_type_name(v));
    if (!isfinite(v->valuedouble)) return ft_fail(e, FT_EINPUT, "%s: key \"%s\" must be finite", where, key);
    *out = v->valuedouble;
    return FT_OK;
}

static int get_bool(const cJSON *o, const char *key, int def, int *out, const char *where, ft_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return FT_OK;
    }
    if (!cJSON_IsBool(v))
        return ft_fail(e, FT_EINPUT, "%s: key \"%s\" must be true or false, got %s", where, key, json_type_name(v));
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return FT_OK;
}

/* String field copied into buf; absent or null -> "". */
static int get_str(const cJSON *o, const char *key, char *buf, size_t n, const char *where, ft_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    buf[0] = 0;
    if (!v || cJSON_IsNull(v)) return FT_OK;
    if (!cJSON_IsString(v))
        return ft_fail(e, FT_EINPUT, "%s: key \"%s\" must be a string, got %s", where, key, json_type_name(v));
    if (strlen(v->valuestring) >= n)
        return ft_fail(e, FT_EINPUT, "%s: key \"%s\" is too long (%zu chars, at most %zu)", where, key,
                       strlen(v->valuestring), n - 1);
    snprintf(buf, n, "%s", v->valuestring);
    return FT_OK;
}

/* Token id: int, null (-1) or a list of ints (its first element). */
static int get_token(const cJSON *o, const char *key, int def, int *out, const char *where, ft_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (v && cJSON_IsNull(v)) {
        *out = -1;
        return FT_OK;
    }
    if (v && cJSON_IsArray(v)) { /* several EOS ids: keep the first */
        if (!v->child) {
            *out = -1;
            return FT_OK;
        }
        return int_of(v->child, key, out, where, e);
    }
    return get_int(o, key, 0, def, out, where, e);
}

static const struct {
    const char *arch, *model_type;
    ft_arch id;
} ARCHES[] = {
    {"LlamaForCausalLM", "llama", FT_ARCH_LLAMA},
    {"MistralForCausalLM", "mistral", FT_ARCH_MISTRAL},
    {"Qwen2ForCausalLM", "qwen2", FT_ARCH_QWEN2},
};
#define N_ARCHES (sizeof ARCHES / sizeof ARCHES[0])

static int parse_arch(const cJSON *root, ft_config *c, const char *where, ft_error *e) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    char mt[32];
    int rc = get_str(root, "model_type", mt, sizeof mt, where, e);
    if (rc) return rc;
    const char *name = NULL;
    if (a && !cJSON_IsNull(a)) {
        if (!cJSON_IsArray(a) || !a->child || !cJSON_IsString(a->child))
            return ft_fail(e, FT_EINPUT, "%s: key \"architectures\" must be a list of strings, got %s", where,
                           json_type_name(a));
        name = a->child->valuestring;
        for (size_t i = 0; i < N_ARCHES; i++) {
            size_t k = strlen(ARCHES[i].arch) - strlen("CausalLM"); /* "Llama", "Mistral", "Qwen2" + "For" */
            int causal = strcmp(name, ARCHES[i].arch) == 0;
            int cls = !causal && strncmp(name, ARCHES[i].arch, k) == 0 && strcmp(name + k, "SequenceClassification") == 0;
            if (causal || cls) {
                c->arch = ARCHES[i].id;
                c->num_labels = cls ? -1 : 0; /* -1: parse_labels reads id2label */
                snprintf(c->architecture, sizeof c->architecture, "%s", name);
                snprintf(c->model_type, sizeof c->model_type, "%s", ARCHES[i].model_type);
                return FT_OK;
            }
        }
        return ft_fail(e, FT_EINPUT,
                       "%s: architecture \"%.64s\" is not supported (expected LlamaForCausalLM, MistralForCausalLM, "
                       "Qwen2ForCausalLM or one of them ...ForSequenceClassification)",
                       where, name);
    }
    if (!mt[0]) return ft_fail(e, FT_EINPUT, "%s: missing required key \"architectures\"", where);
    for (size_t i = 0; i < N_ARCHES; i++)
        if (strcmp(mt, ARCHES[i].model_type) == 0) {
            c->arch = ARCHES[i].id;
            snprintf(c->architecture, sizeof c->architecture, "%s", ARCHES[i].arch);
            snprintf(c->model_type, sizeof c->model_type, "%s", ARCHES[i].model_type);
            return FT_OK;
        }
    return ft_fail(e, FT_EINPUT, "%s: no \"architectures\" and model_type \"%s\" is not supported (llama, mistral, qwen2)",
                   where, mt);
}

/* rope_scaling (transformers 4) or rope_parameters (transformers 5); rope_theta inside the dict wins. */
static int parse_rope(const cJSON *root, ft_config *c, const char *where, ft_error *e) {
    double theta;
    int rc = get_float(root, "rope_theta", 10000.0, &theta, where, e);
    if (rc) return rc;
    const char *key = "rope_scaling";
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!r || cJSON_IsNull(r)) {
        key = "rope_parameters";
        r = cJSON_GetObjectItemCaseSensitive(root, key);
    }
    c->rope_type = FT_ROPE_NONE;
    c->rope_factor = 1.0f;
    c->rope_low_freq_factor = 0;
    c->rope_high_freq_factor = 0;
    c->rope_original_max_position = 0;
    if (r && !cJSON_IsNull(r)) {
        if (!cJSON_IsObject(r))
            return ft_fail(e, FT_EINPUT, "%s: key \"%s\" must be an object or null, got %s", where, key,
                           json_type_name(r));
        char sub[256];
        snprintf(sub, sizeof sub, "%s: %s", where, key);
        char type[32] = "";
        if ((rc = get_str(r, "rope_type", type, sizeof type, sub, e))) return rc;
        if (!type[0] && (rc = get_str(r, "type", type, sizeof type, sub, e))) return rc;
        if ((rc = get_float(r, "rope_theta", theta, &theta, sub, e))) return rc;
        if (!type[0] || strcmp(type, "default") == 0) {
            c->rope_type = FT_ROPE_NONE;
        } else if (strcmp(type, "linear") == 0 || strcmp(type, "dynamic") == 0 || strcmp(type, "llama3") == 0) {
            c->rope_type = type[0] == 'l' ? (type[1] == 'i' ? FT_ROPE_LINEAR : FT_ROPE_LLAMA3) : FT_ROPE_DYNAMIC;
            double f;
            const cJSON *fv = cJSON_GetObjectItemCaseSensitive(r, "factor");
            if (!fv) return ft_fail(e, FT_EINPUT, "%s: rope type \"%s\" needs key \"factor\"", sub, type);
            if ((rc = get_float(r, "factor", 1.0, &f, sub, e))) return rc;
            if (!(f > 0)) return ft_fail(e, FT_EINPUT, "%s: key \"factor\" must be positive, got %g", sub, f);
            c->rope_factor = (float)f;
            if (c->rope_type == FT_ROPE_LLAMA3) {
                double lo, hi;
                if (!cJSON_GetObjectItemCaseSensitive(r, "low_freq_factor"))
                    return ft_fail(e, FT_EINPUT, "%s: rope type llama3 needs key \"low_freq_factor\"", sub);
                if (!cJSON_GetObjectItemCaseSensitive(r, "high_freq_factor"))
                    return ft_fail(e, FT_EINPUT, "%s: rope type llama3 needs key \"high_freq_factor\"", sub);
                if ((rc = get_float(r, "low_freq_factor", 1.0, &lo, sub, e))) return rc;
                if ((rc = get_float(r, "high_freq_factor", 4.0, &hi, sub, e))) return rc;
                if (!(lo > 0) || !(hi > lo))
                    return ft_fail(e, FT_EINPUT, "%s: need 0 < low_freq_factor < high_freq_factor, got %g and %g",
                                   sub, lo, hi);
                c->rope_low_freq_factor = (float)lo;
                c->rope_high_freq_factor = (float)hi;
                if ((rc = get_int(r, "original_max_position_embeddings", 0, c->max_position_embeddings,
                                  &c->rope_original_max_position, sub, e)))
                    return rc;
                if (c->rope_original_max_position <= 0)
                    return ft_fail(e, FT_EINPUT, "%s: key \"original_max_position_embeddings\" must be positive", sub);
            }
        } else {
            return ft_fail(e, FT_EINPUT, "%s: rope type \"%s\" is not supported (default, linear, dynamic, llama3)",
                           sub, type);
        }
    }
    if (!(theta > 0) || theta > 3.4e38) return ft_fail(e, FT_EINPUT, "%s: rope_theta must be positive, got %g", where, theta);
    c->rope_theta = (float)theta;
    return FT_OK;
}

/* A sequence classifier's labels: id2label {"0": name, ...} (keys 0..n-1), else num_labels, else 2 (transformers'
 * default), names LABEL_i; problem_type. */
static int parse_labels(const cJSON *root, ft_config *c, const char *where, ft_error *e) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "id2label");
    int rc, n = 2;
    if (m && !cJSON_IsNull(m)) {
        if (!cJSON_IsObject(m)) return ft_fail(e, FT_EINPUT, "%s: key \"id2label\" must be an object", where);
        n = cJSON_GetArraySize(m);
    } else if ((rc = get_int(root, "num_labels", 0, 2, &n, where, e))) {
        return rc;
    }
    if (n < 1 || n > FT_MAX_LABELS)
        return ft_fail(e, FT_EINPUT, "%s: %d labels (supported: 1 to %d)", where, n, FT_MAX_LABELS);
    char pt[32];
    if ((rc = get_str(root, "problem_type", pt, sizeof pt, where, e))) return rc;
    if ((rc = cfg_set_labels(c, n, NULL, pt[0] ? pt : NULL, e))) return rc;
    if (!m || cJSON_IsNull(m)) return FT_OK;
    int seen[FT_MAX_LABELS] = {0};
    const cJSON *it;
    cJSON_ArrayForEach(it, m) {
        char *end;
        long id = strtol(it->string, &end, 10);
        if (*end || end == it->string || id < 0 || id >= n || seen[id])
            return ft_fail(e, FT_EINPUT, "%s: id2label key \"%.32s\" is not a distinct label id 0..%d", where,
                           it->string, n - 1);
        if (!cJSON_IsString(it) || strlen(it->valuestring) >= FT_LABEL_LEN)
            return ft_fail(e, FT_EINPUT, "%s: id2label[\"%ld\"] must be a string of at most %d bytes", where, id,
                           FT_LABEL_LEN - 1);
        seen[id] = 1;
        snprintf(c->labels[id], FT_LABEL_LEN, "%s", it->valuestring);
    }
    return FT_OK;
}

int cfg_set_labels(ft_config *c, int n, const char *const *names, const char *problem_type, ft_error *e) {
    if (n < 1 || n > FT_MAX_LABELS) return ft_fail(e, FT_EINPUT, "num_labels %d: supported are 1 to %d", n, FT_MAX_LABELS);
    if (problem_type && strcmp(problem_type, "single_label_classification") &&
        strcmp(problem_type, "multi_label_classification") && strcmp(problem_type, "regression"))
        return ft_fail(e, FT_EINPUT,
                       "problem_type '%.40s': expected single_label_classification, multi_label_classification or "
                       "regression",
                       problem_type);
    for (int i = 0; i < n; i++) {
        if (names && strlen(names[i]) >= FT_LABEL_LEN)
            return ft_fail(e, FT_EINPUT, "label '%.60s...' is longer than %d bytes", names[i], FT_LABEL_LEN - 1);
        for (int j = 0; names && j < i; j++)
            if (strcmp(names[i], names[j]) == 0) return ft_fail(e, FT_EINPUT, "label '%s' is given twice", names[i]);
    }
    c->num_labels = n;
    memset(c->labels, 0, sizeof c->labels);
    for (int i = 0; i < n; i++) {
        if (names)
            snprintf(c->labels[i], FT_LABEL_LEN, "%s", names[i]);
        else
            snprintf(c->labels[i], FT_LABEL_LEN, "LABEL_%d", i);
    }
    snprintf(c->problem_type, sizeof c->problem_type, "%s", problem_type ? problem_type : "");
    return FT_OK;
}

static int parse_root(const cJSON *root, const char *where, ft_config *c, ft_error *e) {
    int rc;
    memset(c, 0, sizeof *c);
    if (!cJSON_IsObject(root)) return ft_fail(e, FT_EINPUT, "%s: config is not a JSON object", where);
    if ((rc = parse_arch(root, c, where, e))) return rc;
    if (c->num_labels < 0 && (rc = parse_labels(root, c, where, e))) return rc;
    int llama = c->arch == FT_ARCH_LLAMA, mistral = c->arch == FT_ARCH_MISTRAL, qwen2 = c->arch == FT_ARCH_QWEN2;

    if ((rc = get_int(root, "vocab_size", 1, 0, &c->vocab_size, where, e))) return rc;
    if ((rc = get_int(root, "hidden_size", 1, 0, &c->hidden_size, where, e))) return rc;
    if ((rc = get_int(root, "intermediate_size", 1, 0, &c->intermediate_size, where, e))) return rc;
    if ((rc = get_int(root, "num_hidden_layers", 1, 0, &c->num_layers, where, e))) return rc;
    if ((rc = get_int(root, "num_attention_heads", 1, 0, &c->num_heads, where, e))) return rc;
    if (c->hidden_size <= 0) return ft_fail(e, FT_EINPUT, "%s: hidden_size must be positive, got %d", where, c->hidden_size);
    if (c->num_heads <= 0)
        return ft_fail(e, FT_EINPUT, "%s: num_attention_heads must be positive, got %d", where, c->num_heads);
    /* class defaults: Llama None -> heads, Mistral 8, Qwen2 32 */
    int kv_def = mistral ? 8 : qwen2 ? 32 : c->num_heads;
    if ((rc = get_int(root, "num_key_value_heads", 0, kv_def, &c->num_kv_heads, where, e))) return rc;
    if ((rc = get_int(root, "head_dim", 0, c->hidden_size / c->num_heads, &c->head_dim, where, e))) return rc;
    int mpe_def = mistral ? 4096 * 32 : qwen2 ? 32768 : 2048;
    if ((rc = get_int(root, "max_position_embeddings", 0, mpe_def, &c->max_position_embeddings, where, e))) return rc;
    double eps;
    if ((rc = get_float(root, "rms_norm_eps", 1e-6, &eps, where, e))) return rc;
    c->rms_norm_eps = (float)eps;
    if ((rc = parse_rope(root, c, where, e))) return rc;

    if (mistral) {
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
        if ((rc = get_int(root, "sliding_window", 0, 4096, &c->sliding_window, where, e))) return rc;
        if (sw && cJSON_IsNull(sw)) c->sliding_window = 0;
    } else if (qwen2) {
        int use_sw, mwl;
        if ((rc = get_bool(root, "use_sliding_window", 0, &use_sw, where, e))) return rc;
        if (use_sw) {
            if ((rc = get_int(root, "sliding_window", 0, 4096, &c->sliding_window, where, e))) return rc;
            if ((rc = get_int(root, "max_window_layers", 0, 28, &mwl, where, e))) return rc;
            /* layer i slides iff i >= max_window_layers: only all-or-none fits one window */
            if (mwl >= c->num_layers)
                c->sliding_window = 0;
            else if (mwl > 0)
                return ft_fail(e, FT_EINPUT,
                               "%s: use_sliding_window with max_window_layers %d < num_hidden_layers %d (mixed "
                               "sliding/full layers) is not supported",
                               where, mwl, c->num_layers);
        }
    }
    if ((rc = get_bool(root, "tie_word_embeddings", 0, &c->tie_word_embeddings, where, e))) return rc;
    if (qwen2)
        c->attention_bias = 1;
    else if (llama && (rc = get_bool(root, "attention_bias", 0, &c->attention_bias, where, e)))
        return rc;
    if (llama) {
        int mlp_bias;
        if ((rc = get_bool(root, "mlp_bias", 0, &mlp_bias, where, e))) return rc;
        if (mlp_bias) return ft_fail(e, FT_EINPUT, "%s: key \"mlp_bias\" true is not supported", where);
    }
    char act[32];
    if ((rc = get_str(root, "hidden_act", act, sizeof act, where, e))) return rc;
    if (act[0] && strcmp(act, "silu") != 0)
        return ft_fail(e, FT_EINPUT, "%s: hidden_act \"%s\" is not supported (only \"silu\")", where, act);

    if ((rc = get_token(root, "bos_token_id", qwen2 ? -1 : 1, &c->bos_token_id, where, e))) return rc;
    if ((rc = get_token(root, "eos_token_id", qwen2 ? -1 : 2, &c->eos_token_id, where, e))) return rc;
    if ((rc = get_token(root, "pad_token_id", -1, &c->pad_token_id, where, e))) return rc;

    if ((rc = get_str(root, "torch_dtype", c->torch_dtype, sizeof c->torch_dtype, where, e))) return rc;
    if (!c->torch_dtype[0] && (rc = get_str(root, "dtype", c->torch_dtype, sizeof c->torch_dtype, where, e)))
        return rc;
    double ir;
    if ((rc = get_float(root, "initializer_range", 0.02, &ir, where, e))) return rc;
    if (!(ir >= 0 && ir < 1e3)) return ft_fail(e, FT_EINPUT, "%s: initializer_range must be >= 0, got %g", where, ir);
    c->initializer_range = (float)ir;

    /* consistency */
    struct {
        const char *key;
        int v;
    } pos[] = {{"vocab_size", c->vocab_size},
               {"intermediate_size", c->intermediate_size},
               {"num_hidden_layers", c->num_layers},
               {"num_key_value_heads", c->num_kv_heads},
               {"head_dim", c->head_dim},
               {"max_position_embeddings", c->max_position_embeddings}};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        if (pos[i].v <= 0) return ft_fail(e, FT_EINPUT, "%s: %s must be positive, got %d", where, pos[i].key, pos[i].v);
    if (c->num_heads % c->num_kv_heads != 0)
        return ft_fail(e, FT_EINPUT, "%s: num_attention_heads %d is not divisible by num_key_value_heads %d", where,
                       c->num_heads, c->num_kv_heads);
    if (c->sliding_window < 0)
        return ft_fail(e, FT_EINPUT, "%s: sliding_window must be positive or null, got %d", where, c->sliding_window);
    if (!(c->rms_norm_eps > 0)) return ft_fail(e, FT_EINPUT, "%s: rms_norm_eps must be positive, got %g", where, eps);
    int ids[3] = {c->bos_token_id, c->eos_token_id, c->pad_token_id};
    const char *idk[3] = {"bos_token_id", "eos_token_id", "pad_token_id"};
    for (int i = 0; i < 3; i++)
        if (ids[i] < -1) return ft_fail(e, FT_EINPUT, "%s: %s must be a token id, got %d", where, idk[i], ids[i]);
    return FT_OK;
}

int cfg_parse(const char *json, size_t len, const char *where, ft_config *cfg, ft_error *e) {
    if (!where) where = "config.json";
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        memset(cfg, 0, sizeof *cfg);
        size_t at = end && end >= json && end <= json + len ? (size_t)(end - json) : 0;
        return ft_fail(e, FT_EINPUT, "%s: not valid JSON (error near byte %zu)", where, at);
    }
    int rc = parse_root(root, where, cfg, e);
    cJSON_Delete(root);
    return rc;
}

/* A GGUF model file: the config.json transformers would build from its metadata (io/gguf_model). */
static int cfg_load_gguf(const char *path, ft_config *cfg, ft_error *e) {
    gguf_model *g = NULL;
    char *json = NULL;
    int rc = gguf_model_open(path, &g, e);
    if (!rc) rc = gguf_model_config_json(g, &json, e);
    if (!rc) rc = cfg_parse(json, strlen(json), path, cfg, e);
    free(json);
    gguf_model_close(g);
    return rc;
}

int cfg_load(const char *model_dir, ft_config *cfg, ft_error *e) {
    if (gguf_is_gguf_path(model_dir)) return cfg_load_gguf(model_dir, cfg, e);
    char *path = ft_path_join(model_dir, "config.json");
    char *text = NULL;
    size_t len = 0;
    int rc = ft_read_file(path, &text, &len, e);
    if (rc == FT_OK) rc = cfg_parse(text, len, path, cfg, e);
    free(text);
    free(path);
    return rc;
}

/* Shortest decimal that reads back as the same float, always with a '.' or exponent (so Python sees a float). */
static cJSON *float_item(float v) {
    char buf[48];
    if (v == (float)(int64_t)v && fabsf(v) < 1e15f) { /* 500000.0 rather than 5e+05 */
        snprintf(buf, sizeof buf, "%.1f", (double)v);
        return cJSON_CreateRaw(buf);
    }
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eEn")) strcat(buf, ".0");
    return cJSON_CreateRaw(buf);
}

static cJSON *token_item(int id) { return id < 0 ? cJSON_CreateNull() : cJSON_CreateNumber(id); }

int cfg_write(const char *model_dir, const ft_config *c, ft_error *e) {
    int llama = c->arch == FT_ARCH_LLAMA, mistral = c->arch == FT_ARCH_MISTRAL, qwen2 = c->arch == FT_ARCH_QWEN2;
    char arch[64];
    snprintf(arch, sizeof arch, "%sFor%s", llama ? "Llama" : mistral ? "Mistral" : "Qwen2",
             c->num_labels > 0 ? "SequenceClassification" : "CausalLM");
    const char *mt = llama ? "llama" : mistral ? "mistral" : "qwen2";
    if (!llama && !mistral && !qwen2) return ft_fail(e, FT_EINTERNAL, "cfg_write: unknown arch %d", (int)c->arch);
    cJSON *o = cJSON_CreateObject();
    /* keys in sorted order, as transformers writes them */
    cJSON *archs = cJSON_CreateArray();
    cJSON_AddItemToArray(archs, cJSON_CreateString(arch));
    cJSON_AddItemToObject(o, "architectures", archs);
    if (llama) cJSON_AddBoolToObject(o, "attention_bias", c->attention_bias); /* Qwen2: implied */
    cJSON_AddItemToObject(o, "attention_dropout", cJSON_CreateRaw("0.0"));
    cJSON_AddItemToObject(o, "bos_token_id", token_item(c->bos_token_id));
    cJSON_AddItemToObject(o, "eos_token_id", token_item(c->eos_token_id));
    cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    cJSON_AddNumberToObject(o, "hidden_size", c->hidden_size);
    if (c->num_labels > 0) { /* transformers derives num_labels from id2label */
        cJSON *i2l = cJSON_CreateObject();
        for (int i = 0; i < c->num_labels; i++) {
            char k[16];
            snprintf(k, sizeof k, "%d", i);
            cJSON_AddStringToObject(i2l, k, c->labels[i]);
        }
        cJSON_AddItemToObject(o, "id2label", i2l);
    }
    cJSON_AddItemToObject(o, "initializer_range", float_item(c->initializer_range > 0 ? c->initializer_range : 0.02f));
    cJSON_AddNumberToObject(o, "intermediate_size", c->intermediate_size);
    if (c->num_labels > 0) {
        cJSON *l2i = cJSON_CreateObject();
        for (int i = 0; i < c->num_labels; i++) cJSON_AddNumberToObject(l2i, c->labels[i], i);
        cJSON_AddItemToObject(o, "label2id", l2i);
    }
    cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_position_embeddings);
    if (qwen2) cJSON_AddNumberToObject(o, "max_window_layers", c->sliding_window > 0 ? 0 : c->num_layers);
    if (llama) cJSON_AddBoolToObject(o, "mlp_bias", 0);
    cJSON_AddStringToObject(o, "model_type", mt);
    cJSON_AddNumberToObject(o, "num_attention_heads", c->num_heads);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->num_layers);
    cJSON_AddNumberToObject(o, "num_key_value_heads", c->num_kv_heads);
    cJSON_AddItemToObject(o, "pad_token_id", token_item(c->pad_token_id));
    if (c->num_labels > 0 && c->problem_type[0]) cJSON_AddStringToObject(o, "problem_type", c->problem_type);
    cJSON_AddItemToObject(o, "rms_norm_eps", float_item(c->rms_norm_eps));
    if (c->rope_type == FT_ROPE_NONE) {
        cJSON_AddNullToObject(o, "rope_scaling");
    } else {
        const char *rt = c->rope_type == FT_ROPE_LINEAR ? "linear" : c->rope_type == FT_ROPE_DYNAMIC ? "dynamic" : "llama3";
        cJSON *r = cJSON_CreateObject();
        cJSON_AddItemToObject(r, "factor", float_item(c->rope_factor));
        if (c->rope_type == FT_ROPE_LLAMA3) {
            cJSON_AddItemToObject(r, "high_freq_factor", float_item(c->rope_high_freq_factor));
            cJSON_AddItemToObject(r, "low_freq_factor", float_item(c->rope_low_freq_factor));
            cJSON_AddNumberToObject(r, "original_max_position_embeddings", c->rope_original_max_position);
        }
        cJSON_AddStringToObject(r, "rope_type", rt);
        cJSON_AddStringToObject(r, "type", rt); /* the spelling older transformers read */
        cJSON_AddItemToObject(o, "rope_scaling", r);
    }
    cJSON_AddItemToObject(o, "rope_theta", float_item(c->rope_theta));
    if (mistral || qwen2) {
        if (c->sliding_window > 0)
            cJSON_AddNumberToObject(o, "sliding_window", c->sliding_window);
        else
            cJSON_AddNullToObject(o, "sliding_window");
    }
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_word_embeddings);
    if (c->torch_dtype[0]) cJSON_AddStringToObject(o, "torch_dtype", c->torch_dtype);
    cJSON_AddBoolToObject(o, "use_cache", 1);
    if (qwen2) cJSON_AddBoolToObject(o, "use_sliding_window", c->sliding_window > 0);
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return ft_fail(e, FT_ENOMEM, "cfg_write: out of memory");
    size_t n = strlen(text);
    char *buf = ft_xmalloc(n + 2);
    memcpy(buf, text, n);
    buf[n] = '\n';
    free(text);
    int rc = ft_mkdir_p(model_dir, e);
    char *path = ft_path_join(model_dir, "config.json");
    if (rc == FT_OK) rc = ft_write_file_atomic(path, buf, n + 1, e);
    free(path);
    free(buf);
    return rc;
}

int64_t cfg_param_count(const ft_config *c) {
    int64_t H = c->hidden_size, V = c->vocab_size, I = c->intermediate_size;
    int64_t q = (int64_t)c->num_heads * c->head_dim, kv = (int64_t)c->num_kv_heads * c->head_dim;
    int64_t layer = H * q + 2 * H * kv + q * H /* q, k, v, o */
                    + 3 * H * I                 /* gate, up, down */
                    + 2 * H;                    /* two RMSNorms */
    if (c->attention_bias) layer += q + 2 * kv;
    if (c->attention_bias && c->arch == FT_ARCH_LLAMA) layer += H; /* Llama's o_proj has a bias too; Qwen2's not */
    int64_t n = V * H + (int64_t)c->num_layers * layer + H;
    if (c->num_labels > 0)
        n += (int64_t)c->num_labels * H; /* score; no lm_head */
    else if (!c->tie_word_embeddings)
        n += V * H;
    return n;
}
