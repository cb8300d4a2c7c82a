#include "finetune/model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/model/rope.h"
#include "finetune/io/safetensors.h"

static void train_state_free(ft_train_state *s);

/* lm_head is the embedding (a classifier has no lm_head at all) */
static int model_tied(const ft_config *c) { return c->tie_word_embeddings && c->num_labels <= 0; }

const char *const FT_LINEAR_NAMES[FT_LIN_COUNT] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                   "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                   "mlp.down_proj"};

ft_tensor *model_linear_weight(ft_layer *L, ft_linear which) {
    switch (which) {
    case FT_LIN_Q: return &L->wq;
    case FT_LIN_K: return &L->wk;
    case FT_LIN_V: return &L->wv;
    case FT_LIN_O: return &L->wo;
    case FT_LIN_GATE: return &L->wg;
    case FT_LIN_UP: return &L->wu;
    default: return &L->wd;
    }
}

/* ---------- parameters ---------- */

static void set_param(ft_param *p, int *n, ft_tensor *t, const char *fmt, int layer) {
    if (!t->data && t->ndim == 0) return; /* absent optional tensor (bias) */
    snprintf(p[*n].name, sizeof p[*n].name, fmt, layer);
    p[*n].t = t;
    (*n)++;
}

ft_param *weights_params(const ft_config *c, ft_weights *w, int *n) {
    ft_param *p = ft_xcalloc((size_t)c->num_layers * 13 + 3, sizeof *p);
    *n = 0;
    set_param(p, n, &w->embed, "model.embed_tokens.weight", 0);
    for (int l = 0; l < c->num_layers; l++) {
        ft_layer *L = &w->layers[l];
        set_param(p, n, &L->ln1, "model.layers.%d.input_layernorm.weight", l);
        set_param(p, n, &L->wq, "model.layers.%d.self_attn.q_proj.weight", l);
        set_param(p, n, &L->bq, "model.layers.%d.self_attn.q_proj.bias", l);
        set_param(p, n, &L->wk, "model.layers.%d.self_attn.k_proj.weight", l);
        set_param(p, n, &L->bk, "model.layers.%d.self_attn.k_proj.bias", l);
        set_param(p, n, &L->wv, "model.layers.%d.self_attn.v_proj.weight", l);
        set_param(p, n, &L->bv, "model.layers.%d.self_attn.v_proj.bias", l);
        set_param(p, n, &L->wo, "model.layers.%d.self_attn.o_proj.weight", l);
        set_param(p, n, &L->bo, "model.layers.%d.self_attn.o_proj.bias", l);
        set_param(p, n, &L->ln2, "model.layers.%d.post_attention_layernorm.weight", l);
        set_param(p, n, &L->wg, "model.layers.%d.mlp.gate_proj.weight", l);
        set_param(p, n, &L->wu, "model.layers.%d.mlp.up_proj.weight", l);
        set_param(p, n, &L->wd, "model.layers.%d.mlp.down_proj.weight", l);
    }
    set_param(p, n, &w->norm, "model.norm.weight", 0);
    if (c->num_labels > 0)
        set_param(p, n, &w->score, "score.weight", 0);
    else if (!c->tie_word_embeddings)
        set_param(p, n, &w->lm_head, "lm_head.weight", 0);
    return p;
}

ft_param *model_params(ft_model *m, int *n) { return weights_params(&m->cfg, &m->w, n); }

void weights_shape(const ft_config *c, ft_device dev, ft_weights *w) {
    int64_t D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
    int64_t QD = (int64_t)c->num_heads * c->head_dim, KD = (int64_t)c->num_kv_heads * c->head_dim;
    w->embed = ft_t2(NULL, FT_F32, dev, V, D);
    w->norm = ft_t1(NULL, FT_F32, dev, D);
    memset(&w->score, 0, sizeof w->score);
    if (c->num_labels > 0) {
        memset(&w->lm_head, 0, sizeof w->lm_head);
        w->score = ft_t2(NULL, FT_F32, dev, c->num_labels, D);
    } else {
        w->lm_head = ft_t2(NULL, FT_F32, dev, V, D);
    }
    w->layers = ft_xcalloc((size_t)c->num_layers, sizeof *w->layers);
    for (int l = 0; l < c->num_layers; l++) {
        ft_layer *L = &w->layers[l];
        L->ln1 = ft_t1(NULL, FT_F32, dev, D);
        L->ln2 = ft_t1(NULL, FT_F32, dev, D);
        L->wq = ft_t2(NULL, FT_F32, dev, QD, D);
        L->wk = ft_t2(NULL, FT_F32, dev, KD, D);
        L->wv = ft_t2(NULL, FT_F32, dev, KD, D);
        L->wo = ft_t2(NULL, FT_F32, dev, D, QD);
        if (c->attention_bias) {
            L->bq = ft_t1(NULL, FT_F32, dev, QD);
            L->bk = ft_t1(NULL, FT_F32, dev, KD);
            L->bv = ft_t1(NULL, FT_F32, dev, KD);
            /* transformers' Llama puts attention_bias on o_proj as well; Qwen2 does not */
            if (c->arch == FT_ARCH_LLAMA) L->bo = ft_t1(NULL, FT_F32, dev, D);
        }
        L->wg = ft_t2(NULL, FT_F32, dev, F, D);
        L->wu = ft_t2(NULL, FT_F32, dev, F, D);
        L->wd = ft_t2(NULL, FT_F32, dev, D, F);
    }
}

static int alloc_params(ft_model *m, ft_param *p, int n, ft_error *e) {
    for (int i = 0; i < n; i++) {
        size_t bytes = ft_nbytes(p[i].t);
        p[i].t->data = m->b->alloc(m->b, bytes);
        if (!p[i].t->data)
            return ft_fail(e, FT_ENOMEM, "out of %s memory for %s (%zu bytes)", m->b->name, p[i].name, bytes);
    }
    if (model_tied(&m->cfg)) m->w.lm_head = m->w.embed;
    return FT_OK;
}

static ft_model *model_new(const ft_config *cfg, ft_backend *b) {
    ft_model *m = ft_xcalloc(1, sizeof *m);
    m->cfg = *cfg;
    m->b = b;
    arena_init(&m->arena, b);
    weights_shape(cfg, b->device, &m->w);
    return m;
}

static void convert_from_f32(const float *src, void *dst, size_t n, ft_dtype dt);

/* ---------- non-finite weights ---------- */

int64_t model_count_nonfinite(const float *x, size_t n) {
    int64_t c = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        c += (u & 0x7f800000u) == 0x7f800000u; /* exponent all ones: Inf or NaN */
    }
    return c;
}

void model_note_nonfinite(ft_nonfinite *nf, const char *name, int64_t count, int64_t numel) {
    if (count <= 0) return;
    if (nf->tensors < FT_NONFINITE_NAMED) {
        snprintf(nf->first[nf->tensors].name, sizeof nf->first[0].name, "%s", name);
        nf->first[nf->tensors].count = count;
        nf->first[nf->tensors].numel = numel;
    }
    nf->tensors++;
    nf->values += count;
}

void model_nonfinite_describe(const ft_nonfinite *nf, char *buf, size_t cap) {
    size_t k = 0;
    if (!cap) return;
    buf[0] = 0;
#define PUT(...) (k < cap ? (void)(k += (size_t)snprintf(buf + k, cap - k, __VA_ARGS__)) : (void)0)
    PUT("%lld non-finite value%s (NaN/Inf) in %d tensor%s: ", (long long)nf->values, nf->values == 1 ? "" : "s",
        nf->tensors, nf->tensors == 1 ? "" : "s");
    int named = nf->tensors < FT_NONFINITE_NAMED ? nf->tensors : FT_NONFINITE_NAMED;
    for (int i = 0; i < named; i++)
        PUT("%s%s (%lld of %lld)", i ? ", " : "", nf->first[i].name, (long long)nf->first[i].count,
            (long long)nf->first[i].numel);
    if (nf->tensors > named) PUT(", and %d more", nf->tensors - named);
#undef PUT
}

/* ---------- checking a checkpoint's tensors ---------- */

/* The checkpoint tensor for model tensor `name` shaped like `want`: present, of that shape and of a float
 * dtype (what st_read_f32 converts). The message names the file, the tensor and the reason. */
static int check_tensor(const st_model *st, const char *dir, const char *name, const ft_tensor *want,
                        const st_tensor_info **out, ft_error *e) {
    const st_tensor_info *info = st_model_find(st, name);
    *out = info;
    if (!info) return ft_fail(e, FT_EINPUT, "%s: tensor '%s' is missing from the checkpoint", dir, name);
    const char *file = info->file ? info->file : dir;
    int same = info->ndim == want->ndim;
    for (int d = 0; same && d < info->ndim; d++) same = info->shape[d] == want->shape[d];
    if (!same) {
        char w[64], got[64];
        ft_tensor g = ft_tensor_make(NULL, info->dtype, FT_DEV_CPU, info->ndim, info->shape);
        return ft_fail(e, FT_EINPUT, "%s: tensor '%s' has shape %s, config.json implies %s", file, name,
                       ft_shape_str(&g, got, sizeof got), ft_shape_str(want, w, sizeof w));
    }
    if (info->dtype != FT_F32 && info->dtype != FT_F16 && info->dtype != FT_BF16)
        return ft_fail(e, FT_EINPUT, "%s: tensor '%s' has dtype %s; model weights must be F32, F16 or BF16", file,
                       name, ft_dtype_name(info->dtype));
    return FT_OK;
}

/* One checkpoint tensor into p->t on the device, in p->t's dtype: F32, or BF16/F16 rounded on the host
 * (to nearest even, as the backends' cast). host/host_cap: a reused staging buffer of floats. Its
 * non-finite values are counted into m->nonfinite from that host copy. */
static int load_tensor(ft_model *m, const st_model *st, const char *dir, const ft_param *p, float **host,
                       size_t *host_cap, ft_error *e) {
    const st_tensor_info *info = NULL;
    int rc = check_tensor(st, dir, p->name, p->t, &info, e);
    if (rc) return rc;
    size_t n = (size_t)ft_numel(p->t);
    size_t want = p->t->dtype == FT_F32 ? n : n + (n + 1) / 2; /* a 16-bit copy after the floats */
    if (want > *host_cap) {
        free(*host);
        *host = malloc(want * sizeof(float));
        *host_cap = *host ? want : 0;
        if (!*host) return ft_fail(e, FT_ENOMEM, "out of host memory loading '%s'", p->name);
    }
    rc = st_read_f32(info, *host, n, e);
    if (rc) return rc;
    model_note_nonfinite(&m->nonfinite, p->name, model_count_nonfinite(*host, n), (int64_t)n);
    if (p->t->dtype == FT_F32) {
        m->b->upload(m->b, p->t->data, *host, n * sizeof(float));
    } else {
        convert_from_f32(*host, *host + n, n, p->t->dtype);
        m->b->upload(m->b, p->t->data, *host + n, n * 2);
    }
    return FT_OK;
}

/* Linear weights of the decoder layers ("model.layers.N.self_attn.q_proj.weight", ...). */
static int is_layer_linear(const char *name) {
    if (strncmp(name, "model.layers.", 13) != 0) return 0;
    for (int i = 0; i < FT_LIN_COUNT; i++) {
        char suffix[64];
        snprintf(suffix, sizeof suffix, "%s.weight", FT_LINEAR_NAMES[i]);
        size_t n = strlen(name), k = strlen(suffix);
        if (n > k && strcmp(name + n - k, suffix) == 0) return 1;
    }
    return 0;
}

int model_load(const char *dir, ft_backend *b, ft_model **out, ft_error *e) { return model_load_ex(dir, b, 0, out, e); }

static int cmp_param_name(const void *a, const void *b) {
    return strcmp(((const ft_param *)a)->name, ((const ft_param *)b)->name);
}

/* A decoder linear stored as bitsandbytes NF4 (U8, packed two to a byte, with its quant state beside it):
 * what QLoRA's loader reads (lora_quantize_base checks the quant state in full). */
static int check_nf4_linear(const st_model *st, const st_tensor_info *t, const char *name, const ft_tensor *want,
                            ft_error *e) {
    char k[160];
    snprintf(k, sizeof k, "%s.quant_state.bitsandbytes__nf4", name);
    int64_t n = ft_numel(want);
    if (!st_model_find(st, k))
        return ft_fail(e, FT_EINPUT, "%s: tensor '%s' is U8 but %s is missing (only NF4 4-bit checkpoints are read)",
                       t->file, name, k);
    if ((int64_t)t->nbytes != (n + 1) / 2)
        return ft_fail(e, FT_EINPUT, "%s: 4-bit tensor '%s' has %zu bytes; config.json implies %lld elements, %lld bytes",
                       t->file, name, t->nbytes, (long long)n, (long long)((n + 1) / 2));
    return FT_OK;
}

int model_check_checkpoint(const char *dir, ft_config *cfg, int *n_tensors, int *n_unused, ft_error *e) {
    int rc = cfg_load(dir, cfg, e);
    if (rc) return rc;
    st_model *st = NULL;
    rc = st_model_open(dir, &st, e);
    if (rc) return rc;
    ft_weights w;
    weights_shape(cfg, FT_DEV_CPU, &w);
    int n = 0;
    ft_param *p = weights_params(cfg, &w, &n);
    for (int i = 0; i < n && !rc; i++) {
        const st_tensor_info *t = st_model_find(st, p[i].name);
        if (t && t->dtype == FT_U8 && is_layer_linear(p[i].name))
            rc = check_nf4_linear(st, t, p[i].name, p[i].t, e);
        else
            rc = check_tensor(st, dir, p[i].name, p[i].t, &t, e);
    }
    if (!rc && n_tensors) *n_tensors = n;
    if (!rc && n_unused) { /* tensors that are neither a parameter nor a parameter's quant state ("<name>.absmax") */
        qsort(p, (size_t)n, sizeof *p, cmp_param_name);
        int unused = 0;
        for (size_t i = 0; i < st_model_count(st); i++) {
            ft_param key;
            snprintf(key.name, sizeof key.name, "%s", st_model_at(st, i)->name);
            char *q = strstr(key.name, ".weight.");
            if (q) q[7] = 0;
            unused += bsearch(&key, p, (size_t)n, sizeof *p, cmp_param_name) == NULL;
        }
        *n_unused = unused;
    }
    free(p);
    free(w.layers);
    st_model_close(st);
    return rc;
}

static int has_compute_copy(const char *name);

/* A new classification head as transformers initialises one: normal(0, initializer_range), no bias. */
static int init_score_weight(ft_model *m, const ft_param *dst, uint64_t seed, ft_error *e) {
    size_t n = (size_t)ft_numel(dst->t);
    float *h = malloc(n * sizeof(float));
    uint16_t *h16 = dst->t->dtype == FT_F32 ? NULL : malloc(n * 2);
    if (!h || (dst->t->dtype != FT_F32 && !h16)) {
        free(h);
        free(h16);
        return ft_fail(e, FT_ENOMEM, "out of host memory initialising %s", dst->name);
    }
    ft_rng rng;
    ft_rng_seed(&rng, seed ^ 0x73636f7265ULL); /* "score": its own stream, apart from LoRA's init */
    float std = m->cfg.initializer_range > 0 ? m->cfg.initializer_range : 0.02f;
    for (size_t j = 0; j < n; j++) h[j] = std * ft_rng_normal(&rng);
    if (h16) {
        convert_from_f32(h, h16, n, dst->t->dtype);
        m->b->upload(m->b, dst->t->data, h16, n * 2);
    } else {
        m->b->upload(m->b, dst->t->data, h, n * sizeof(float));
    }
    free(h);
    free(h16);
    return FT_OK;
}

static int check_compute_dtype(const ft_backend *b, ft_dtype dt, ft_error *e);

/* dt F32: fp32 weights. BF16/F16: what model_set_precision(dt) with nothing trainable leaves, built tensor
 * by tensor, so the device never holds the fp32 model. */
static int load_model(const char *dir, ft_backend *b, int skip_linears, ft_dtype dt, const ft_cls_load *cls,
                      ft_model **out, ft_error *e) {
    *out = NULL;
    if (dt != FT_F32) {
        int rc = check_compute_dtype(b, dt, e);
        if (rc) return rc;
    }
    ft_config cfg;
    int rc = cfg_load(dir, &cfg, e);
    if (rc) return rc;
    int init_score = 0;
    if (cls && cfg.num_labels == 0) { /* a causal LM becomes a classifier: no lm_head, a new score */
        rc = cfg_set_labels(&cfg, cls->num_labels, cls->labels, cls->problem_type, e);
        if (rc) return rc;
        init_score = 1;
    } else if (cls) {
        if (cfg.num_labels != cls->num_labels)
            return ft_fail(e, FT_EINPUT, "%s: the checkpoint is a classifier of %d labels; %d asked for", dir,
                           cfg.num_labels, cls->num_labels);
        for (int i = 0; cls->labels && i < cfg.num_labels; i++)
            if (strcmp(cfg.labels[i], cls->labels[i]) != 0)
                return ft_fail(e, FT_EINPUT, "%s: label %d of the checkpoint is '%s' (id2label); '%s' asked for", dir, i,
                               cfg.labels[i], cls->labels[i]);
        if (cls->problem_type) snprintf(cfg.problem_type, sizeof cfg.problem_type, "%s", cls->problem_type);
    }
    st_model *st = NULL;
    rc = st_model_open(dir, &st, e);
    if (rc) return rc;
    ft_model *m = model_new(&cfg, b);
    int n = 0, nc = 0;
    ft_param *p = model_params(m, &n), *pc = NULL;
    if (dt != FT_F32) {
        weights_shape(&m->cfg, b->device, &m->wc);
        pc = weights_params(&m->cfg, &m->wc, &nc); /* the same list in the same order as p */
        for (int i = 0; i < nc; i++)
            if (has_compute_copy(pc[i].name)) pc[i].t->dtype = dt;
        m->compute = dt; /* from here model_free releases the copies too */
    }
    float *host = NULL;
    size_t cap = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (skip_linears && is_layer_linear(p[i].name)) continue; /* a hook provides them */
        int is_score = p[i].t == &m->w.score, master = is_score && cls && cls->trainable_score && pc;
        const ft_param *dst = pc && has_compute_copy(p[i].name) && !master ? &pc[i] : &p[i];
        size_t bytes = ft_nbytes(dst->t);
        dst->t->data = b->alloc(b, bytes);
        if (!dst->t->data)
            rc = ft_fail(e, FT_ENOMEM, "out of %s memory for %s (%zu bytes)", b->name, p[i].name, bytes);
        else if (is_score && init_score)
            rc = init_score_weight(m, dst, cls->seed, e);
        else
            rc = load_tensor(m, st, dir, dst, &host, &cap, e);
        if (!rc && master) { /* and its compute copy */
            pc[i].t->data = b->alloc(b, ft_nbytes(pc[i].t));
            if (!pc[i].t->data)
                rc = ft_fail(e, FT_ENOMEM, "out of %s memory for %s's %s copy", b->name, p[i].name, ft_dtype_name(dt));
            else
                b->cast(b, p[i].t, pc[i].t);
        }
    }
    if (model_tied(&m->cfg)) {
        m->w.lm_head = m->w.embed;
        if (pc) m->wc.lm_head = m->wc.embed;
    }
    free(host);
    free(p);
    free(pc);
    st_model_close(st);
    if (rc) {
        model_free(m);
        return rc;
    }
    *out = m;
    return FT_OK;
}

int model_load_ex(const char *dir, ft_backend *b, int skip_linears, ft_model **out, ft_error *e) {
    return load_model(dir, b, skip_linears, FT_F32, NULL, out, e);
}

int model_load_frozen(const char *dir, ft_backend *b, int skip_linears, ft_dtype dt, ft_model **out, ft_error *e) {
    return load_model(dir, b, skip_linears, dt, NULL, out, e);
}

int model_load_cls(const char *dir, ft_backend *b, int skip_linears, ft_dtype dt, const ft_cls_load *o, ft_model **out,
                   ft_error *e) {
    if (!o || o->num_labels < 1) return ft_fail(e, FT_EINTERNAL, "model_load_cls: num_labels must be > 0");
    return load_model(dir, b, skip_linears, dt, o, out, e);
}

int model_init_random(const ft_config *cfg, ft_backend *b, uint64_t seed, float std, ft_model **out, ft_error *e) {
    ft_model *m = model_new(cfg, b);
    int n = 0;
    ft_param *p = model_params(m, &n);
    int rc = alloc_params(m, p, n, e);
    ft_rng rng;
    ft_rng_seed(&rng, seed);
    for (int i = 0; i < n && !rc; i++) {
        size_t cnt = (size_t)ft_numel(p[i].t);
        float *h = malloc(cnt * sizeof(float));
        if (!h) {
            rc = ft_fail(e, FT_ENOMEM, "out of host memory initialising '%s'", p[i].name);
            break;
        }
        int is_norm = strstr(p[i].name, "norm") != NULL, is_bias = strstr(p[i].name, ".bias") != NULL;
        for (size_t j = 0; j < cnt; j++) h[j] = is_norm ? 1.0f : is_bias ? 0.0f : std * ft_rng_normal(&rng);
        b->upload(b, p[i].t->data, h, cnt * sizeof(float));
        free(h);
    }
    free(p);
    if (rc) {
        model_free(m);
        return rc;
    }
    *out = m;
    return FT_OK;
}

/* ---------- precision ---------- */

/* Norm weights are read in fp32 by the fp32 rmsnorm of the residual stream: no compute copy. */
static int has_compute_copy(const char *name) { return strstr(name, "norm.weight") == NULL; }

static int check_compute_dtype(const ft_backend *b, ft_dtype dt, ft_error *e) {
    if (dt != FT_BF16 && dt != FT_F16)
        return ft_fail(e, FT_EINPUT, "precision: compute dtype %s is not one of F32, BF16, F16", ft_dtype_name(dt));
    if (b->device == FT_DEV_CPU)
        return ft_fail(e, FT_EINPUT,
                       "precision=%s needs device=cuda: the CPU backend computes in fp32 (use precision=fp32 or auto)",
                       dt == FT_BF16 ? "bf16" : "fp16");
    return FT_OK;
}

int model_set_precision(ft_model *m, ft_dtype dt, int (*trainable)(const char *name, void *ctx), void *ctx,
                        ft_error *e) {
    if (dt == m->compute) return FT_OK;
    if (m->compute != FT_F32)
        return ft_fail(e, FT_EINTERNAL, "model_set_precision: the compute dtype is already %s",
                       ft_dtype_name(m->compute));
    int rc = check_compute_dtype(m->b, dt, e);
    if (rc) return rc;
    weights_shape(&m->cfg, m->b->device, &m->wc);
    int n = 0, nc = 0;
    ft_param *p = model_params(m, &n), *pc = weights_params(&m->cfg, &m->wc, &nc);
    for (int i = 0; i < n && !rc; i++) {
        /* the same list in the same order: p[i] and pc[i] name one parameter */
        if (!p[i].t->data || !has_compute_copy(p[i].name)) continue;
        pc[i].t->dtype = dt;
        size_t bytes = ft_nbytes(pc[i].t);
        pc[i].t->data = m->b->alloc(m->b, bytes);
        if (!pc[i].t->data) {
            rc = ft_fail(e, FT_ENOMEM, "out of %s memory for the %s copy of %s (%zu bytes)", m->b->name,
                         ft_dtype_name(dt), p[i].name, bytes);
            break;
        }
        m->b->cast(m->b, p[i].t, pc[i].t);
        if (trainable && !trainable(p[i].name, ctx)) { /* frozen: the 16-bit copy is all we keep */
            m->b->sync(m->b);
            m->b->free(m->b, p[i].t->data);
            p[i].t->data = NULL;
        }
    }
    for (int i = 0; i < nc; i++)
        if (has_compute_copy(pc[i].name)) pc[i].t->dtype = dt; /* hook-provided weights: the dtype to supply */
    free(p);
    free(pc);
    if (model_tied(&m->cfg)) {
        m->w.lm_head = m->w.embed;
        m->wc.lm_head = m->wc.embed;
    }
    m->compute = dt; /* even on failure: model_free must release the copies made so far */
    return rc;
}

void model_sync_compute(ft_model *m) {
    if (m->compute == FT_F32) return;
    int n = 0, nc = 0;
    ft_param *p = model_params(m, &n), *pc = weights_params(&m->cfg, &m->wc, &nc);
    for (int i = 0; i < n; i++)
        if (p[i].t->data && pc[i].t->data) m->b->cast(m->b, p[i].t, pc[i].t);
    free(p);
    free(pc);
}

/* transformers' save_pretrained default shard size */
#define MODEL_MAX_SHARD_BYTES (5ull * 1000 * 1000 * 1000)

static void convert_from_f32(const float *src, void *dst, size_t n, ft_dtype dt) {
    if (dt == FT_F32) {
        memcpy(dst, src, n * sizeof(float));
    } else {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = dt == FT_F16 ? ft_f32_to_f16(src[i]) : ft_f32_to_bf16(src[i]);
    }
}

int model_save(ft_model *m, const char *dir, ft_dtype dtype, ft_error *e) {
    int rc = ft_mkdir_p(dir, e);
    if (rc) return rc;
    ft_config cfg = m->cfg;
    snprintf(cfg.torch_dtype, sizeof cfg.torch_dtype, "%s",
             dtype == FT_BF16 ? "bfloat16" : dtype == FT_F16 ? "float16" : "float32");
    rc = cfg_write(dir, &cfg, e);
    if (rc) return rc;
    int n = 0;
    ft_param *p = model_params(m, &n);
    st_sharded *w = NULL;
    rc = st_sharded_open(dir, "model", MODEL_MAX_SHARD_BYTES, &w, e);
    if (!rc) rc = st_sharded_metadata(w, "format", "pt", e);
    for (int i = 0; i < n && !rc; i++) rc = st_sharded_declare(w, p[i].name, dtype, p[i].t->ndim, p[i].t->shape, e);
    float *host = NULL;
    void *conv = NULL;
    int nc = 0;
    ft_param *pc = m->wc.layers ? weights_params(&m->cfg, &m->wc, &nc) : NULL;
    for (int i = 0; i < n && !rc; i++) {
        size_t cnt = (size_t)ft_numel(p[i].t);
        host = ft_xrealloc(host, cnt * sizeof(float));
        conv = ft_xrealloc(conv, cnt * ft_dtype_size(dtype));
        if (p[i].t->data) {
            m->b->download(m->b, host, p[i].t->data, cnt * sizeof(float));
        } else if (pc && pc[i].t->data) { /* a frozen parameter kept only as its 16-bit compute copy */
            uint16_t *h16 = conv; /* at least 2 bytes per element; refilled by the conversion below */
            m->b->download(m->b, h16, pc[i].t->data, cnt * 2);
            for (size_t j = 0; j < cnt; j++)
                host[j] = pc[i].t->dtype == FT_BF16 ? ft_bf16_to_f32(h16[j]) : ft_f16_to_f32(h16[j]);
        } else {
            rc = ft_fail(e, FT_EINTERNAL, "model_save: %s has no weights on the model (provided by a hook)",
                         p[i].name);
            break;
        }
        convert_from_f32(host, conv, cnt, dtype);
        rc = st_sharded_write(w, p[i].name, conv, e);
    }
    free(host);
    free(conv);
    free(pc);
    if (w) {
        if (rc)
            st_sharded_abort(w);
        else
            rc = st_sharded_finish(w, e);
    }
    free(p);
    return rc;
}

void model_free(ft_model *m) {
    if (!m) return;
    int n = 0;
    ft_param *p = model_params(m, &n);
    for (int i = 0; i < n; i++)
        if (p[i].t->data) m->b->free(m->b, p[i].t->data);
    free(p);
    if (m->wc.layers) {
        p = weights_params(&m->cfg, &m->wc, &n);
        for (int i = 0; i < n; i++)
            if (p[i].t->data) m->b->free(m->b, p[i].t->data);
        free(p);
        free(m->wc.layers);
    }
    arena_free(&m->arena);
    train_state_free(m->train);
    free(m->w.layers);
    free(m);
}

/* ---------- forward ---------- */

/* Per-layer KV cache for generation: keys (after RoPE) and values of every past token. */
typedef struct kv_cache {
    ft_tensor *k, *v; /* [num_layers] each [cap, Hkv*Dh] */
    int cap, len;
} kv_cache;

/* The inputs of one forward on the device, and the RoPE segments. With dynamic scaling the frequencies
 * depend on each sample's own length (as if each packed sample ran alone, which is what transformers
 * computes), so every sample is its own segment; otherwise one segment covers the whole run. */
typedef struct step_inputs {
    int64_t T;
    ft_tensor ids, pos, doc, invf; /* invf [nseg, Dh/2] */
    ft_tensor excl_start, excl_end; /* data NULL without exclusions */
    int nseg;
    int *seg_start; /* [nseg + 1], host */
    float mscale;
    ft_attn_layout L;
} step_inputs;

/* One layer's intermediates: kept for backward when training, scratch otherwise. */
/* Compute-dtype tensors: h1, q, k, v, att, o, h2, g, u, a; fp32: xmid (residual), rstd1/2, lse. (16-bit compute
 * needs no fp32 scratch: the norms round into their 16-bit output and the residual adds widen their 16-bit
 * operand themselves.) */
typedef struct layer_acts {
    ft_tensor h1, q, k, v, att, o, xmid, h2, g, u, a, rstd1, rstd2, lse;
} layer_acts;

static size_t tensor_bytes(int64_t floats) { return (size_t)floats * 4 + 256; }
/* elements of the compute dtype (esz bytes each) */
static size_t ctensor_bytes(int64_t n, size_t esz) { return (size_t)n * esz + 256; }

/* Bytes of the inputs and one set of layer activations for T tokens (esz: compute element size). */
static size_t step_bytes(const ft_config *c, int64_t T, size_t esz) {
    int64_t D = c->hidden_size, F = c->intermediate_size;
    int64_t QD = (int64_t)c->num_heads * c->head_dim, KD = (int64_t)c->num_kv_heads * c->head_dim;
    /* ids, pos, doc_start, excl_start, excl_end; the RoPE frequencies */
    return 5 * tensor_bytes(T) + tensor_bytes(T * c->head_dim / 2 + c->head_dim) +
           3 * ctensor_bytes(T * D, esz) + 2 * tensor_bytes(T * D) +
           3 * ctensor_bytes(T * QD, esz) + 2 * ctensor_bytes(T * KD, esz) + 3 * ctensor_bytes(T * F, esz) +
           2 * tensor_bytes(T) + tensor_bytes(T * c->num_heads);
}

static int arena_f32(ft_arena *A, ft_tensor *t, int nd, int64_t d0, int64_t d1, int64_t d2, ft_error *e) {
    int64_t s[3] = {d0, d1, d2};
    return arena_tensor(A, FT_F32, nd, s, t, e);
}

/* a tensor of the model's compute dtype */
static int arena_c(ft_model *m, ft_tensor *t, int nd, int64_t d0, int64_t d1, int64_t d2, ft_error *e) {
    int64_t s[3] = {d0, d1, d2};
    return arena_tensor(&m->arena, m->compute, nd, s, t, e);
}

static size_t model_esz(const ft_model *m) { return ft_dtype_size(m->compute); }

static int acts_alloc(ft_model *m, int64_t T, int keep_lse, layer_acts *a, ft_error *e) {
    const ft_config *c = &m->cfg;
    ft_arena *A = &m->arena;
    int64_t D = c->hidden_size, F = c->intermediate_size, Hq = c->num_heads, Hkv = c->num_kv_heads,
            Dh = c->head_dim;
    int rc = 0;
    memset(a, 0, sizeof *a);
    rc = rc ? rc : arena_c(m, &a->h1, 2, T, D, 0, e);
    rc = rc ? rc : arena_c(m, &a->q, 3, T, Hq, Dh, e);
    rc = rc ? rc : arena_c(m, &a->k, 3, T, Hkv, Dh, e);
    rc = rc ? rc : arena_c(m, &a->v, 3, T, Hkv, Dh, e);
    rc = rc ? rc : arena_c(m, &a->att, 3, T, Hq, Dh, e);
    rc = rc ? rc : arena_c(m, &a->o, 2, T, D, 0, e);
    rc = rc ? rc : arena_f32(A, &a->xmid, 2, T, D, 0, e);
    rc = rc ? rc : arena_c(m, &a->h2, 2, T, D, 0, e);
    rc = rc ? rc : arena_c(m, &a->g, 2, T, F, 0, e);
    rc = rc ? rc : arena_c(m, &a->u, 2, T, F, 0, e);
    rc = rc ? rc : arena_c(m, &a->a, 2, T, F, 0, e);
    rc = rc ? rc : arena_f32(A, &a->rstd1, 1, T, 0, 0, e);
    rc = rc ? rc : arena_f32(A, &a->rstd2, 1, T, 0, 0, e);
    if (keep_lse) rc = rc ? rc : arena_f32(A, &a->lse, 2, T, Hq, 0, e);
    return rc;
}

/* Validate and upload the inputs; fill the RoPE segments. excl_start/excl_end: host [T] or both NULL. */
static int inputs_setup(ft_model *m, int64_t T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start,
                        const int32_t *excl_start, const int32_t *excl_end, int64_t q_start, step_inputs *in,
                        ft_error *e) {
    const ft_config *c = &m->cfg;
    ft_backend *b = m->b;
    ft_arena *A = &m->arena;
    int64_t Dh = c->head_dim;
    memset(in, 0, sizeof *in);
    in->T = T;
    if (!excl_start != !excl_end)
        return ft_fail(e, FT_EINTERNAL, "excl_start and excl_end must both be given or both be NULL");
    for (int64_t t = 0; t < T; t++) {
        if (ids[t] < 0 || ids[t] >= c->vocab_size)
            return ft_fail(e, FT_EINPUT, "token id %d at position %lld is outside the vocabulary (size %d)", ids[t],
                           (long long)t, c->vocab_size);
        if (doc_start[t] < 0 || doc_start[t] > q_start + t)
            return ft_fail(e, FT_EINTERNAL, "doc_start[%lld] = %d is after the token itself", (long long)t,
                           doc_start[t]);
        if (excl_start && (excl_start[t] < 0 || excl_start[t] > excl_end[t] || excl_end[t] > q_start + t))
            return ft_fail(e, FT_EINTERNAL, "excluded keys [%d, %d) of token %lld: not a range before the token",
                           excl_start[t], excl_end[t], (long long)t);
    }
    in->nseg = 1;
    if (c->rope_type == FT_ROPE_DYNAMIC)
        for (int64_t t = 1; t < T; t++) in->nseg += doc_start[t] != doc_start[t - 1];
    int64_t s1[1] = {T}, sI[2] = {in->nseg, Dh / 2};
    int rc = arena_tensor(A, FT_I32, 1, s1, &in->ids, e);
    if (!rc) rc = arena_tensor(A, FT_I32, 1, s1, &in->pos, e);
    if (!rc) rc = arena_tensor(A, FT_I32, 1, s1, &in->doc, e);
    if (!rc) rc = arena_tensor(A, FT_F32, 2, sI, &in->invf, e);
    if (!rc && excl_start) rc = arena_tensor(A, FT_I32, 1, s1, &in->excl_start, e);
    if (!rc && excl_start) rc = arena_tensor(A, FT_I32, 1, s1, &in->excl_end, e);
    if (rc) return rc;
    in->seg_start = ft_xmalloc((size_t)(in->nseg + 1) * sizeof(int));
    float *inv_freq = ft_xmalloc((size_t)in->nseg * (size_t)(Dh / 2) * sizeof(float));
    for (int s = 0, t = 0; s < in->nseg; s++) {
        in->seg_start[s] = t;
        int32_t max_pos = pos[t++];
        while (t < T && (in->nseg == 1 || doc_start[t] == doc_start[t - 1])) {
            if (pos[t] > max_pos) max_pos = pos[t];
            t++;
        }
        rope_inv_freq(c, (int64_t)max_pos + 1, inv_freq + (size_t)s * (Dh / 2), &in->mscale);
    }
    in->seg_start[in->nseg] = (int)T;
    b->upload(b, in->ids.data, ids, (size_t)T * 4);
    b->upload(b, in->pos.data, pos, (size_t)T * 4);
    b->upload(b, in->doc.data, doc_start, (size_t)T * 4);
    b->upload(b, in->invf.data, inv_freq, (size_t)in->nseg * (size_t)(Dh / 2) * 4);
    if (excl_start) {
        b->upload(b, in->excl_start.data, excl_start, (size_t)T * 4);
        b->upload(b, in->excl_end.data, excl_end, (size_t)T * 4);
    }
    free(inv_freq);
    in->L = (ft_attn_layout){.q_start = q_start,
                             .doc_start = in->doc.data,
                             .window = c->sliding_window,
                             .scale = 1.0f / sqrtf((float)Dh),
                             .excl_start = in->excl_start.data,
                             .excl_end = in->excl_end.data};
    return FT_OK;
}

static void inputs_free(step_inputs *in) {
    free(in->seg_start);
    in->seg_start = NULL;
}

/* RoPE on q [T,Hq,Dh] and k [T,Hkv,Dh], segment by segment; inverse for the backward pass. */
static void apply_rope(ft_model *m, const step_inputs *in, ft_tensor *q, ft_tensor *k, int inverse) {
    ft_backend *b = m->b;
    int64_t Hq = m->cfg.num_heads, Hkv = m->cfg.num_kv_heads, Dh = m->cfg.head_dim;
    for (int s = 0; s < in->nseg; s++) {
        int64_t t0 = in->seg_start[s], n = in->seg_start[s + 1] - t0;
        size_t esz = ft_dtype_size(q->dtype);
        ft_tensor qs = ft_t3((char *)q->data + (size_t)(t0 * Hq * Dh) * esz, q->dtype, b->device, n, Hq, Dh);
        ft_tensor ks = ft_t3((char *)k->data + (size_t)(t0 * Hkv * Dh) * esz, k->dtype, b->device, n, Hkv, Dh);
        ft_tensor ps = ft_t1((int32_t *)in->pos.data + t0, FT_I32, b->device, n);
        ft_tensor fs = ft_t1((float *)in->invf.data + (size_t)s * (Dh / 2), FT_F32, b->device, Dh / 2);
        b->rope(b, &qs, &ps, &fs, in->mscale, inverse);
        b->rope(b, &ks, &ps, &fs, in->mscale, inverse);
    }
}

static ft_tensor view2(const ft_tensor *t, int64_t rows, int64_t cols) {
    return ft_t2(t->data, t->dtype, t->device, rows, cols);
}

/* The weight to multiply by: the model's own, or a hook's (dequantized) one. */
static const ft_tensor *linear_weight(ft_model *m, int l, ft_linear which) {
    ft_tensor *w = model_linear_weight(m->compute == FT_F32 ? &m->w.layers[l] : &m->wc.layers[l], which);
    if (w->data || !m->hooks.base_weight) return w;
    ft_tensor scratch = *w; /* shape of the weight; the hook supplies the memory */
    return m->hooks.base_weight(m->hooks.ctx, m, l, which, &scratch);
}

/* y = x W^T for one linear of layer l, plus any adapter. */
static void linear_fwd(ft_model *m, int l, ft_linear which, const ft_tensor *x, ft_tensor *y) {
    m->b->gemm(m->b, x, 0, linear_weight(m, l, which), 1, y, 1.0f, 0.0f);
    if (m->hooks.forward) m->hooks.forward(m->hooks.ctx, m, l, which, x, y);
}

/* Backward of linear_fwd: dx (+)= dy W (+ adapter), dW += dy^T x when trainable. */
static void linear_bwd(ft_model *m, int l, ft_linear which, const ft_tensor *x, const ft_tensor *dy, ft_tensor *dx,
                       int acc, ft_tensor *dW) {
    if (m->hooks.grad_out) dy = m->hooks.grad_out(m->hooks.ctx, m, l, which, x, dy);
    m->b->gemm(m->b, dy, 0, linear_weight(m, l, which), 0, dx, 1.0f, acc ? 1.0f : 0.0f);
    if (dW && dW->data) m->b->gemm(m->b, dy, 1, x, 0, dW, 1.0f, 1.0f);
    if (m->hooks.backward) m->hooks.backward(m->hooks.ctx, m, l, which, x, dy, dx);
}

/* out (compute dtype) = rmsnorm of the fp32 x with fp32 w; in 16-bit compute the backend's rmsnorm computes in
 * fp32 and rounds once into the 16-bit out (one pass: no fp32 copy written and read back by a cast). */
static void norm_to_compute(ft_model *m, const ft_tensor *x, const ft_tensor *w, ft_tensor *out, ft_tensor *rstd) {
    m->b->rmsnorm(m->b, x, w, m->cfg.rms_norm_eps, out, rstd);
}

/* x_out (fp32) = x_in (fp32) + y (compute dtype): a 16-bit y is widened inside the add (exact), one pass. */
static void residual_add(ft_model *m, const ft_tensor *x_in, const ft_tensor *y, ft_tensor *x_out) {
    m->b->add(m->b, x_in, y, x_out);
}

/* x (fp32 [T,D]) = embedding rows of ids; 16-bit compute reads the compute copy into tmp, then casts up. */
static void embed_to(ft_model *m, const ft_tensor *ids, ft_tensor *x, ft_tensor *tmp) {
    ft_backend *b = m->b;
    if (m->compute == FT_F32) {
        b->embedding(b, ids, &m->w.embed, x);
        return;
    }
    b->embedding(b, ids, &m->wc.embed, tmp);
    b->cast(b, tmp, x);
}

/* The lm_head weight the loss reads: the compute copy in 16-bit compute. */
static ft_tensor *lm_head_weight(ft_model *m) { return m->compute == FT_F32 ? &m->w.lm_head : &m->wc.lm_head; }

/* x_out = layer l applied to x_in (x_out may equal x_in; both fp32). With a cache, the new keys/values are
 * appended at cache->len and attention sees the whole cache. Intermediates land in a. */
static void layer_forward(ft_model *m, int l, const step_inputs *in, const ft_tensor *x_in, ft_tensor *x_out,
                          layer_acts *a, kv_cache *cache) {
    const ft_config *c = &m->cfg;
    ft_backend *b = m->b;
    ft_layer *W = &m->w.layers[l], *Wc = m->compute == FT_F32 ? W : &m->wc.layers[l];
    int64_t T = in->T, Hq = c->num_heads, Hkv = c->num_kv_heads, Dh = c->head_dim;
    ft_tensor q2 = view2(&a->q, T, Hq * Dh), k2 = view2(&a->k, T, Hkv * Dh), v2 = view2(&a->v, T, Hkv * Dh);
    ft_tensor att2 = view2(&a->att, T, Hq * Dh);
    norm_to_compute(m, x_in, &W->ln1, &a->h1, &a->rstd1);
    linear_fwd(m, l, FT_LIN_Q, &a->h1, &q2);
    linear_fwd(m, l, FT_LIN_K, &a->h1, &k2);
    linear_fwd(m, l, FT_LIN_V, &a->h1, &v2);
    if (Wc->bq.data) {
        b->add_bias(b, &q2, &Wc->bq);
        b->add_bias(b, &k2, &Wc->bk);
        b->add_bias(b, &v2, &Wc->bv);
    }
    apply_rope(m, in, &a->q, &a->k, 0);
    const ft_tensor *kk = &a->k, *vv = &a->v;
    ft_tensor kc, vc;
    if (cache) {
        size_t row = (size_t)(Hkv * Dh) * model_esz(m), off = (size_t)cache->len * row;
        b->copy(b, (char *)cache->k[l].data + off, a->k.data, (size_t)T * row);
        b->copy(b, (char *)cache->v[l].data + off, a->v.data, (size_t)T * row);
        kc = ft_t3(cache->k[l].data, m->compute, b->device, cache->len + T, Hkv, Dh);
        vc = ft_t3(cache->v[l].data, m->compute, b->device, cache->len + T, Hkv, Dh);
        kk = &kc;
        vv = &vc;
    }
    b->attention(b, &a->q, kk, vv, &a->att, a->lse.data ? &a->lse : NULL, &in->L);
    linear_fwd(m, l, FT_LIN_O, &att2, &a->o);
    if (Wc->bo.data) b->add_bias(b, &a->o, &Wc->bo);
    residual_add(m, x_in, &a->o, &a->xmid);
    norm_to_compute(m, &a->xmid, &W->ln2, &a->h2, &a->rstd2);
    linear_fwd(m, l, FT_LIN_GATE, &a->h2, &a->g);
    linear_fwd(m, l, FT_LIN_UP, &a->h2, &a->u);
    b->swiglu(b, &a->g, &a->u, &a->a);
    linear_fwd(m, l, FT_LIN_DOWN, &a->a, &a->o);
    residual_add(m, &a->xmid, &a->o, x_out);
}

/* Embedding, all layers, final norm: the normed hidden states land in *h (arena). */
static int run_decoder(ft_model *m, const step_inputs *in, kv_cache *cache, ft_tensor *h, ft_error *e) {
    const ft_config *c = &m->cfg;
    ft_tensor x;
    layer_acts a;
    int rc = arena_f32(&m->arena, &x, 2, in->T, c->hidden_size, 0, e);
    if (!rc) rc = acts_alloc(m, in->T, 0, &a, e);
    if (rc) return rc;
    embed_to(m, &in->ids, &x, &a.h1);
    for (int l = 0; l < c->num_layers; l++) layer_forward(m, l, in, &x, &x, &a, cache);
    *h = a.h1; /* reuse as the output buffer (compute dtype) */
    norm_to_compute(m, &x, &m->w.norm, h, NULL);
    if (cache) cache->len += (int)in->T;
    return FT_OK;
}

int model_forward(ft_model *m, int T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start,
                  const int32_t *targets, float *logp, ft_error *e) {
    return model_forward_excl(m, T, ids, pos, doc_start, NULL, NULL, targets, logp, e);
}

int model_forward_excl(ft_model *m, int T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start,
                       const int32_t *excl_start, const int32_t *excl_end, const int32_t *targets, float *logp,
                       ft_error *e) {
    if (T <= 0) return FT_OK;
    for (int t = 0; t < T; t++)
        if (targets[t] >= m->cfg.vocab_size)
            return ft_fail(e, FT_EINPUT, "target id %d at position %d is outside the vocabulary (size %d)", targets[t],
                           t, m->cfg.vocab_size);
    int rc = arena_reserve(&m->arena, step_bytes(&m->cfg, T, model_esz(m)) + 3 * tensor_bytes(T), e);
    if (rc) return rc;
    arena_reset(&m->arena);
    m->training = 0;
    step_inputs in;
    ft_tensor h, tg, lp;
    rc = inputs_setup(m, T, ids, pos, doc_start, excl_start, excl_end, 0, &in, e);
    if (!rc) rc = run_decoder(m, &in, NULL, &h, e);
    int64_t s1[1] = {T};
    if (!rc) rc = arena_tensor(&m->arena, FT_I32, 1, s1, &tg, e);
    if (!rc) rc = arena_tensor(&m->arena, FT_F32, 1, s1, &lp, e);
    if (!rc) {
        m->b->upload(m->b, tg.data, targets, (size_t)T * 4);
        m->b->token_logprobs(m->b, &h, lm_head_weight(m), &tg, &lp, NULL);
        m->b->download(m->b, logp, lp.data, (size_t)T * 4);
    }
    inputs_free(&in);
    return rc;
}

int model_score(ft_model *m, const int32_t *ids, int n, float *logp, ft_error *e) {
    if (n < 2) return FT_OK;
    int32_t *pos = ft_xmalloc((size_t)n * 4), *doc = ft_xcalloc((size_t)n, 4), *tg = ft_xmalloc((size_t)n * 4);
    float *lp = ft_xmalloc((size_t)n * 4);
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        tg[i] = i + 1 < n ? ids[i + 1] : -1;
    }
    int rc = model_forward(m, n, ids, pos, doc, tg, lp, e);
    if (!rc) memcpy(logp, lp, (size_t)(n - 1) * sizeof(float));
    free(pos);
    free(doc);
    free(tg);
    free(lp);
    return rc;
}

/* ---------- generation ---------- */

static int cmp_desc(const void *a, const void *b) {
    float x = ((const float *)a)[0], y = ((const float *)b)[0];
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Choose the next token from logits[V] (modified in place). */
static int32_t sample_token(float *logits, int V, const ft_sample_opts *o, ft_rng *rng) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (o->greedy) return best;
    float temp = o->temperature > 0 ? o->temperature : 1.0f;
    double sum = 0;
    float mx = logits[best];
    for (int i = 0; i < V; i++) {
        logits[i] = expf((logits[i] - mx) / temp);
        sum += logits[i];
    }
    /* (prob, id) pairs sorted by prob for top-p */
    float *pairs = ft_xmalloc((size_t)V * 2 * sizeof(float));
    for (int i = 0; i < V; i++) {
        pairs[2 * i] = (float)(logits[i] / sum);
        memcpy(&pairs[2 * i + 1], &i, sizeof(int));
    }
    qsort(pairs, (size_t)V, 2 * sizeof(float), cmp_desc);
    float top_p = o->top_p > 0 && o->top_p <= 1 ? o->top_p : 1.0f;
    int keep = 0;
    double cum = 0;
    while (keep < V && (keep == 0 || cum < top_p)) cum += pairs[2 * keep++];
    double r = ft_rng_uniform(rng) * cum, acc = 0;
    int id = 0;
    for (int i = 0; i < keep; i++) {
        acc += pairs[2 * i];
        memcpy(&id, &pairs[2 * i + 1], sizeof(int));
        if (r < acc) break;
    }
    free(pairs);
    return id;
}

int model_generate(ft_model *m, const int32_t *prompt, int n_prompt, int max_new, const ft_sample_opts *opts,
                   int32_t *out, int *n_out, void (*on_token)(int32_t id, void *ctx), void *ctx, ft_error *e) {
    const ft_config *c = &m->cfg;
    ft_backend *b = m->b;
    *n_out = 0;
    if (n_prompt < 1) return ft_fail(e, FT_EINPUT, "generate: the prompt is empty");
    if (max_new <= 0) return FT_OK;
    int cap = n_prompt + max_new;
    kv_cache cache = {ft_xcalloc((size_t)c->num_layers, sizeof(ft_tensor)),
                      ft_xcalloc((size_t)c->num_layers, sizeof(ft_tensor)), cap, 0};
    int64_t shape[2] = {cap, (int64_t)c->num_kv_heads * c->head_dim};
    int rc = FT_OK;
    for (int l = 0; l < c->num_layers && !rc; l++) {
        rc = ft_backend_tensor(b, m->compute, 2, shape, &cache.k[l], e);
        if (!rc) rc = ft_backend_tensor(b, m->compute, 2, shape, &cache.v[l], e);
    }
    if (!rc) rc = arena_reserve(&m->arena, step_bytes(c, n_prompt, model_esz(m)) + tensor_bytes(c->vocab_size), e);
    float *logits = ft_xmalloc((size_t)c->vocab_size * sizeof(float));
    int32_t *pos = ft_xmalloc((size_t)cap * 4), *doc = ft_xcalloc((size_t)cap, 4);
    for (int i = 0; i < cap; i++) pos[i] = i;
    ft_rng rng;
    ft_rng_seed(&rng, opts->seed);
    const int32_t *feed = prompt;
    int n_feed = n_prompt;
    while (!rc && *n_out < max_new) {
        arena_reset(&m->arena);
        step_inputs in;
        ft_tensor h, lg;
        rc = inputs_setup(m, n_feed, feed, pos + cache.len, doc, NULL, NULL, cache.len, &in, e);
        if (!rc) rc = run_decoder(m, &in, &cache, &h, e);
        if (!rc) rc = arena_f32(&m->arena, &lg, 2, 1, c->vocab_size, 0, e);
        inputs_free(&in);
        if (rc) break;
        ft_tensor h_last = ft_t2((char *)h.data + (size_t)(n_feed - 1) * c->hidden_size * model_esz(m), m->compute,
                                 b->device, 1, c->hidden_size);
        b->gemm(b, &h_last, 0, lm_head_weight(m), 1, &lg, 1.0f, 0.0f); /* fp32 logits */
        b->download(b, logits, lg.data, (size_t)c->vocab_size * 4);
        int32_t last = sample_token(logits, c->vocab_size, opts, &rng);
        out[(*n_out)++] = last;
        if (on_token) on_token(last, ctx);
        if (opts->stop_at_eos && ((c->eos_token_id >= 0 && last == c->eos_token_id) ||
                                  (opts->has_stop_id && last == opts->stop_id)))
            break;
        feed = &out[*n_out - 1];
        n_feed = 1;
    }
    for (int l = 0; l < c->num_layers; l++) {
        if (cache.k[l].data) b->free(b, cache.k[l].data);
        if (cache.v[l].data) b->free(b, cache.v[l].data);
    }
    free(cache.k);
    free(cache.v);
    free(logits);
    free(pos);
    free(doc);
    return rc;
}

/* ---------- training ---------- */

struct ft_train_state {
    int64_t T;
    step_inputs in;
    ft_tensor *xs; /* [num_layers + 1] layer inputs (fp32), the last being the final norm's input; with
                    * offload only xs[num_layers] is on the device, the others are in xs_host */
    ft_tensor xbuf[2]; /* offload: the device buffers layers read from and write to, alternately */
    char *xs_host;     /* offload: num_layers x [T, D] fp32 in alloc_host memory */
    size_t xs_host_bytes;
    ft_backend *b;
    int offload;
    ft_tensor rstd_final, h, tg, lse; /* h: the final norm's output, compute dtype */
    int cls, S;                       /* classification: S pooled samples */
    ft_tensor rows, pooled;           /* [S] each sample's last token, [S, D] their h rows (compute dtype) */
    layer_acts acts; /* one layer's intermediates, reused by the recomputation in backward */
    int ready;
};

static void train_state_free(ft_train_state *s) {
    if (!s) return;
    inputs_free(&s->in);
    free(s->xs);
    if (s->xs_host) s->b->free_host(s->b, s->xs_host);
    free(s);
}

/* The input and output buffers of layer l during training (see xs, xbuf). */
static ft_tensor *train_x_in(ft_train_state *s, int l) { return s->offload ? &s->xbuf[l & 1] : &s->xs[l]; }
static ft_tensor *train_x_out(ft_train_state *s, int l, int L) {
    return s->offload && l + 1 < L ? &s->xbuf[(l + 1) & 1] : &s->xs[l + 1];
}

int grads_create(ft_model *m, int (*trainable)(const char *name, void *ctx), void *ctx, ft_weights *g, ft_error *e) {
    weights_shape(&m->cfg, m->b->device, g);
    int n = 0, rc = FT_OK;
    ft_param *p = weights_params(&m->cfg, g, &n);
    for (int i = 0; i < n && !rc; i++) {
        if (trainable && !trainable(p[i].name, ctx)) continue;
        size_t bytes = ft_nbytes(p[i].t);
        p[i].t->data = m->b->alloc(m->b, bytes);
        if (!p[i].t->data)
            rc = ft_fail(e, FT_ENOMEM, "out of %s memory for the gradient of %s", m->b->name, p[i].name);
        else
            m->b->zero(m->b, p[i].t->data, bytes);
    }
    free(p);
    if (model_tied(&m->cfg)) g->lm_head = g->embed;
    if (rc) grads_free(m, g);
    return rc;
}

void grads_zero(ft_model *m, ft_weights *g) {
    int n = 0;
    ft_param *p = weights_params(&m->cfg, g, &n);
    for (int i = 0; i < n; i++)
        if (p[i].t->data) m->b->zero(m->b, p[i].t->data, ft_nbytes(p[i].t));
    free(p);
}

void grads_free(ft_model *m, ft_weights *g) {
    if (!g->layers) return;
    int n = 0;
    ft_param *p = weights_params(&m->cfg, g, &n);
    for (int i = 0; i < n; i++)
        if (p[i].t->data) m->b->free(m->b, p[i].t->data);
    free(p);
    free(g->layers);
    memset(g, 0, sizeof *g);
}

/* Bytes of backward's own buffers for T tokens (esz: compute element size). */
static size_t backward_bytes(const ft_config *c, int64_t T, size_t esz) {
    int64_t D = c->hidden_size, F = c->intermediate_size;
    int64_t QD = (int64_t)c->num_heads * c->head_dim, KD = (int64_t)c->num_kv_heads * c->head_dim;
    return 3 * tensor_bytes(T * D) + (esz < 4 ? 2 * ctensor_bytes(T * D, esz) : 0) + 2 * ctensor_bytes(T * QD, esz) +
           2 * ctensor_bytes(T * KD, esz) + 3 * ctensor_bytes(T * F, esz) + tensor_bytes(T) + ctensor_bytes(T, esz) +
           tensor_bytes(T * c->num_heads);
}

size_t model_train_arena_bytes(const ft_config *c, int64_t T, ft_dtype compute, int offload) {
    size_t esz = ft_dtype_size(compute), TD = (size_t)T * (size_t)c->hidden_size;
    /* saved layer inputs (all, or with offload the two alternating buffers and the last), the final norm's
     * output, the loss vectors, one layer's working set and backward's buffers */
    return step_bytes(c, T, esz) + (size_t)(offload ? 3 : c->num_layers + 1) * tensor_bytes((int64_t)TD) +
           ctensor_bytes((int64_t)TD, esz) + 4 * tensor_bytes(T) + backward_bytes(c, T, esz);
}

/* The training forward up to the final norm's output s->h, keeping what backward needs; `extra` arena bytes
 * for the head; excl_start/excl_end: attention exclusions (NULL: none). */
static int forward_train_decoder(ft_model *m, int T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start,
                                 const int32_t *excl_start, const int32_t *excl_end, size_t extra, ft_error *e) {
    const ft_config *c = &m->cfg;
    ft_backend *b = m->b;
    ft_arena *A = &m->arena;
    if (!m->train) m->train = ft_xcalloc(1, sizeof *m->train);
    ft_train_state *s = m->train;
    m->training = 1; /* until the end of model_backward: adapters apply dropout identically in both */
    inputs_free(&s->in);
    s->ready = 0;
    s->T = T;
    s->b = b;
    int L = c->num_layers;
    s->offload = m->offload_activations && L > 0;
    int64_t D = c->hidden_size;
    size_t TD = (size_t)T * (size_t)D;
    int rc = arena_reserve(A, model_train_arena_bytes(c, T, m->compute, s->offload) + extra, e);
    if (rc) return rc;
    if (s->offload && s->xs_host_bytes < (size_t)L * TD * 4) {
        if (s->xs_host) b->free_host(b, s->xs_host);
        s->xs_host_bytes = (size_t)L * TD * 4;
        s->xs_host = b->alloc_host(b, s->xs_host_bytes);
        if (!s->xs_host) {
            size_t want = s->xs_host_bytes;
            s->xs_host_bytes = 0;
            return ft_fail(e, FT_ENOMEM,
                           "offload_activations: cannot allocate %.2f GiB of pinned host memory for %d layer inputs "
                           "of %d tokens; lower batch_size or max_length, or set offload_activations=false",
                           (double)want / (1u << 30), L, T);
        }
    }
    arena_reset(A);
    s->xs = ft_xrealloc(s->xs, (size_t)(L + 1) * sizeof *s->xs);
    memset(s->xs, 0, (size_t)(L + 1) * sizeof *s->xs);
    rc = inputs_setup(m, T, ids, pos, doc_start, excl_start, excl_end, 0, &s->in, e);
    for (int l = 0; l <= L && !rc; l++)
        if (!s->offload || l == L) rc = arena_f32(A, &s->xs[l], 2, T, D, 0, e);
    for (int k = 0; k < 2 && s->offload && !rc; k++) rc = arena_f32(A, &s->xbuf[k], 2, T, D, 0, e);
    if (!rc) rc = acts_alloc(m, T, 1, &s->acts, e);
    if (!rc) rc = arena_c(m, &s->h, 2, T, D, 0, e);
    if (!rc) rc = arena_f32(A, &s->rstd_final, 1, T, 0, 0, e);
    if (rc) return rc;
    embed_to(m, &s->in.ids, train_x_in(s, 0), &s->acts.h1);
    for (int l = 0; l < L; l++) {
        ft_tensor *xin = train_x_in(s, l);
        /* queued after the op that wrote xin and before the next layer overwrites its buffer */
        if (s->offload) b->to_host_async(b, s->xs_host + (size_t)l * TD * 4, xin->data, TD * 4);
        layer_forward(m, l, &s->in, xin, train_x_out(s, l, L), &s->acts, NULL);
    }
    norm_to_compute(m, &s->xs[L], &m->w.norm, &s->h, &s->rstd_final);
    return FT_OK;
}

int model_forward_train(ft_model *m, int T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start,
                        const int32_t *targets, float *logp, ft_error *e) {
    return model_forward_train_excl(m, T, ids, pos, doc_start, NULL, NULL, targets, logp, e);
}

int model_forward_train_excl(ft_model *m, int T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start,
                             const int32_t *excl_start, const int32_t *excl_end, const int32_t *targets, float *logp,
                             ft_error *e) {
    const ft_config *c = &m->cfg;
    ft_backend *b = m->b;
    if (T <= 0) return ft_fail(e, FT_EINTERNAL, "model_forward_train: empty batch");
    if (c->num_labels > 0) return ft_fail(e, FT_EINTERNAL, "model_forward_train: the model is a classifier");
    for (int t = 0; t < T; t++)
        if (targets[t] >= c->vocab_size)
            return ft_fail(e, FT_EINPUT, "target id %d at position %d is outside the vocabulary (size %d)", targets[t],
                           t, c->vocab_size);
    int rc = forward_train_decoder(m, T, ids, pos, doc_start, excl_start, excl_end, 0, e);
    if (rc) return rc;
    ft_train_state *s = m->train;
    ft_tensor lp;
    int64_t s1[1] = {T};
    rc = arena_f32(&m->arena, &s->lse, 1, T, 0, 0, e);
    if (!rc) rc = arena_tensor(&m->arena, FT_I32, 1, s1, &s->tg, e);
    if (!rc) rc = arena_f32(&m->arena, &lp, 1, T, 0, 0, e);
    if (rc) return rc;
    b->upload(b, s->tg.data, targets, (size_t)T * 4);
    b->token_logprobs(b, &s->h, lm_head_weight(m), &s->tg, &lp, &s->lse);
    b->download(b, logp, lp.data, (size_t)T * 4);
    s->cls = 0;
    s->ready = 1;
    return FT_OK;
}

/* ---------- sequence classification head ---------- */

static ft_tensor *score_weight(ft_model *m) { return m->compute == FT_F32 ? &m->w.score : &m->wc.score; }

/* Arena bytes of the head for S samples: rows, pooled rows, logits; backward's dlogits (fp32 and compute
 * dtype) and pooled-row gradient. */
static size_t cls_head_bytes(const ft_config *c, int64_t S, size_t esz) {
    int64_t D = c->hidden_size, NL = c->num_labels;
    return 2 * tensor_bytes(S) + ctensor_bytes(S * D, esz) + 2 * tensor_bytes(S * NL) + ctensor_bytes(S * NL, esz) +
           tensor_bytes(S * D);
}

size_t model_cls_head_bytes(const ft_config *c, int64_t S, ft_dtype compute) {
    return cls_head_bytes(c, S, ft_dtype_size(compute));
}

static int cls_check(const ft_model *m, int T, int S, const int32_t *rows, const char *fn, ft_error *e) {
    if (m->cfg.num_labels <= 0) return ft_fail(e, FT_EINTERNAL, "%s: the model has no classification head", fn);
    if (T <= 0 || S <= 0) return ft_fail(e, FT_EINTERNAL, "%s: empty batch", fn);
    for (int i = 0; i < S; i++)
        if (rows[i] < 0 || rows[i] >= T || (i && rows[i] <= rows[i - 1]))
            return ft_fail(e, FT_EINTERNAL, "%s: pooled row %d = %d is not an increasing index below %d", fn, i,
                           rows[i], T);
    return FT_OK;
}

/* logits [S, num_labels] (fp32, on the host) = score(h[rows]); rows_dev and pooled are left for backward. */
static int cls_head_forward(ft_model *m, const ft_tensor *h, int S, const int32_t *rows, ft_tensor *rows_dev,
                            ft_tensor *pooled, float *logits, ft_error *e) {
    ft_backend *b = m->b;
    int64_t s1[1] = {S};
    ft_tensor lg;
    int rc = arena_tensor(&m->arena, FT_I32, 1, s1, rows_dev, e);
    if (!rc) rc = arena_c(m, pooled, 2, S, m->cfg.hidden_size, 0, e);
    if (!rc) rc = arena_f32(&m->arena, &lg, 2, S, m->cfg.num_labels, 0, e);
    if (rc) return rc;
    b->upload(b, rows_dev->data, rows, (size_t)S * 4);
    b->embedding(b, rows_dev, h, pooled); /* a gather of the pooled rows */
    b->gemm(b, pooled, 0, score_weight(m), 1, &lg, 1.0f, 0.0f);
    b->download(b, logits, lg.data, (size_t)S * m->cfg.num_labels * 4);
    return FT_OK;
}

int model_forward_cls(ft_model *m, int T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start, int S,
                      const int32_t *rows, float *logits, ft_error *e) {
    int rc = cls_check(m, T, S, rows, "model_forward_cls", e);
    if (rc) return rc;
    rc = arena_reserve(&m->arena, step_bytes(&m->cfg, T, model_esz(m)) + cls_head_bytes(&m->cfg, S, model_esz(m)), e);
    if (rc) return rc;
    arena_reset(&m->arena);
    m->training = 0;
    step_inputs in;
    ft_tensor h, rows_dev, pooled;
    rc = inputs_setup(m, T, ids, pos, doc_start, NULL, NULL, 0, &in, e);
    if (!rc) rc = run_decoder(m, &in, NULL, &h, e);
    if (!rc) rc = cls_head_forward(m, &h, S, rows, &rows_dev, &pooled, logits, e);
    inputs_free(&in);
    return rc;
}

int model_forward_train_cls(ft_model *m, int T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start,
                            int S, const int32_t *rows, float *logits, ft_error *e) {
    int rc = cls_check(m, T, S, rows, "model_forward_train_cls", e);
    if (!rc) rc = forward_train_decoder(m, T, ids, pos, doc_start, NULL, NULL, cls_head_bytes(&m->cfg, S, model_esz(m)), e);
    if (rc) return rc;
    ft_train_state *s = m->train;
    rc = cls_head_forward(m, &s->h, S, rows, &s->rows, &s->pooled, logits, e);
    if (rc) return rc;
    s->cls = 1;
    s->S = S;
    s->ready = 1;
    return FT_OK;
}

/* db += sum over rows of dY, as ones^T dY */
static void bias_grad(ft_backend *b, const ft_tensor *ones, const ft_tensor *dY, ft_tensor *db) {
    if (!db->data) return;
    ft_tensor db2 = ft_t2(db->data, FT_F32, b->device, 1, db->shape[0]);
    b->gemm(b, ones, 1, dY, 0, &db2, 1.0f, 1.0f);
}

/* In 16-bit compute: cast src into dst (other dtype, same shape) and return dst; in F32 return src. */
static ft_tensor *as_dtype(ft_model *m, ft_tensor *src, ft_tensor *dst) {
    if (m->compute == FT_F32) return src;
    m->b->cast(m->b, src, dst);
    return dst;
}

/* The gradient of sum dlogits * logits into dh (fp32 [T, D], overwritten) and score's gradient. */
static int cls_head_backward(ft_model *m, const float *dlogits_host, ft_tensor *dh, ft_weights *g, ft_error *e) {
    ft_backend *b = m->b;
    ft_train_state *s = m->train;
    int64_t S = s->S, NL = m->cfg.num_labels;
    ft_tensor dlg, dlc, dpool;
    int rc = arena_f32(&m->arena, &dlg, 2, S, NL, 0, e);
    if (!rc && m->compute != FT_F32) rc = arena_c(m, &dlc, 2, S, NL, 0, e);
    if (!rc) rc = arena_f32(&m->arena, &dpool, 2, S, m->cfg.hidden_size, 0, e);
    if (rc) return rc;
    b->upload(b, dlg.data, dlogits_host, (size_t)(S * NL) * 4);
    ft_tensor *dl = as_dtype(m, &dlg, &dlc);
    if (g->score.data) b->gemm(b, dl, 1, &s->pooled, 0, &g->score, 1.0f, 1.0f);
    b->gemm(b, dl, 0, score_weight(m), 0, &dpool, 1.0f, 0.0f);
    b->embedding_backward(b, &s->rows, &dpool, dh, 0); /* scattered back to the pooled rows, zero elsewhere */
    return FT_OK;
}

static int backward(ft_model *m, const float *dlogp_host, const float *dlogits_host, ft_weights *g, ft_error *e);

int model_backward(ft_model *m, const float *dlogp_host, ft_weights *g, ft_error *e) {
    if (m->train && m->train->ready && m->train->cls)
        return ft_fail(e, FT_EINTERNAL, "model_backward after model_forward_train_cls");
    return backward(m, dlogp_host, NULL, g, e);
}

int model_backward_cls(ft_model *m, const float *dlogits, ft_weights *g, ft_error *e) {
    if (m->train && m->train->ready && !m->train->cls)
        return ft_fail(e, FT_EINTERNAL, "model_backward_cls after model_forward_train");
    return backward(m, NULL, dlogits, g, e);
}

static int backward(ft_model *m, const float *dlogp_host, const float *dlogits_host, ft_weights *g, ft_error *e) {
    const ft_config *c = &m->cfg;
    ft_backend *b = m->b;
    ft_arena *A = &m->arena;
    ft_train_state *s = m->train;
    if (!s || !s->ready) return ft_fail(e, FT_EINTERNAL, "model_backward without a preceding model_forward_train");
    s->ready = 0; /* the recomputation below overwrites the saved state */
    int64_t T = s->T, D = c->hidden_size, F = c->intermediate_size, Hq = c->num_heads, Hkv = c->num_kv_heads,
            Dh = c->head_dim;
    int L = c->num_layers, mixed = m->compute != FT_F32;
    size_t TD = (size_t)T * (size_t)D;
    /* fp32: dx, dxm (residual gradients), dh (a norm's output gradient), dlogp. Compute dtype: the rest;
     * in 16-bit compute dc holds dx or dxm cast down for the GEMMs and dhc the GEMMs' input gradient. */
    ft_tensor dx, dxm, dh, dq, dk, dv, datt, dg, du, da, dlogp, ones, dc, dhc;
    layer_acts a = s->acts;
    int rc = arena_f32(A, &dx, 2, T, D, 0, e);
    rc = rc ? rc : arena_f32(A, &dxm, 2, T, D, 0, e);
    rc = rc ? rc : arena_f32(A, &dh, 2, T, D, 0, e);
    rc = rc ? rc : arena_c(m, &dq, 3, T, Hq, Dh, e);
    rc = rc ? rc : arena_c(m, &datt, 3, T, Hq, Dh, e);
    rc = rc ? rc : arena_c(m, &dk, 3, T, Hkv, Dh, e);
    rc = rc ? rc : arena_c(m, &dv, 3, T, Hkv, Dh, e);
    rc = rc ? rc : arena_c(m, &dg, 2, T, F, 0, e);
    rc = rc ? rc : arena_c(m, &du, 2, T, F, 0, e);
    rc = rc ? rc : arena_c(m, &da, 2, T, F, 0, e);
    rc = rc ? rc : arena_f32(A, &dlogp, 1, T, 0, 0, e);
    rc = rc ? rc : arena_c(m, &ones, 2, T, 1, 0, e);
    if (mixed) {
        rc = rc ? rc : arena_c(m, &dc, 2, T, D, 0, e);
        rc = rc ? rc : arena_c(m, &dhc, 2, T, D, 0, e);
    } else {
        dhc = dh;
    }
    if (rc) return rc;
    if (dlogp_host) b->upload(b, dlogp.data, dlogp_host, (size_t)T * 4);
    if (c->attention_bias) {
        float *h1 = ft_xmalloc((size_t)T * 4);
        for (int64_t t = 0; t < T; t++) h1[t] = 1.0f;
        if (mixed) { /* through the fp32 scratch dh, free until the loss head below */
            ft_tensor of = ft_t2(dh.data, FT_F32, b->device, T, 1);
            b->upload(b, of.data, h1, (size_t)T * 4);
            b->cast(b, &of, &ones);
        } else {
            b->upload(b, ones.data, h1, (size_t)T * 4);
        }
        free(h1);
    }
    /* loss head and final norm: dh is fp32 whatever the compute dtype (the fp32 norm backward reads it) */
    if (dlogits_host) {
        rc = cls_head_backward(m, dlogits_host, &dh, g, e);
        if (rc) return rc;
    } else {
        b->token_logprobs_backward(b, &s->h, lm_head_weight(m), &s->tg, &s->lse, &dlogp, &dh,
                                   g->lm_head.data ? &g->lm_head : NULL);
    }
    b->rmsnorm_backward(b, &dh, &s->xs[L], &m->w.norm, &s->rstd_final, &dx, g->norm.data ? &g->norm : NULL, 0);
    ft_tensor att2 = view2(&a.att, T, Hq * Dh), dq2 = view2(&dq, T, Hq * Dh), dk2 = view2(&dk, T, Hkv * Dh),
              dv2 = view2(&dv, T, Hkv * Dh), datt2 = view2(&datt, T, Hq * Dh);
    for (int l = L - 1; l >= 0; l--) {
        ft_layer *W = &m->w.layers[l], *G = &g->layers[l];
        ft_tensor *xin = train_x_in(s, l);
        if (s->offload) b->from_host_async(b, xin->data, s->xs_host + (size_t)l * TD * 4, TD * 4);
        /* recompute the layer from its saved input (rewrites its output with identical values) */
        layer_forward(m, l, &s->in, xin, train_x_out(s, l, L), &a, NULL);
        /* MLP: out = x_mid + down(silu(gate(h2)) * up(h2)) */
        linear_bwd(m, l, FT_LIN_DOWN, &a.a, as_dtype(m, &dx, &dc), &da, 0, &G->wd);
        b->swiglu_backward(b, &a.g, &a.u, &da, &dg, &du);
        linear_bwd(m, l, FT_LIN_GATE, &a.h2, &dg, &dhc, 0, &G->wg);
        linear_bwd(m, l, FT_LIN_UP, &a.h2, &du, &dhc, 1, &G->wu);
        b->copy(b, dxm.data, dx.data, ft_nbytes(&dx));
        b->rmsnorm_backward(b, as_dtype(m, &dhc, &dh), &a.xmid, &W->ln2, &a.rstd2, &dxm, G->ln2.data ? &G->ln2 : NULL,
                            1);
        /* attention: x_mid = x + o_proj(attention(rope(q), rope(k), v)) */
        ft_tensor *dyo = as_dtype(m, &dxm, &dc);
        linear_bwd(m, l, FT_LIN_O, &att2, dyo, &datt2, 0, &G->wo);
        bias_grad(b, &ones, dyo, &G->bo);
        b->attention_backward(b, &a.q, &a.k, &a.v, &a.att, &a.lse, &datt, &dq, &dk, &dv, &s->in.L);
        apply_rope(m, &s->in, &dq, &dk, 1);
        bias_grad(b, &ones, &dq2, &G->bq);
        bias_grad(b, &ones, &dk2, &G->bk);
        bias_grad(b, &ones, &dv2, &G->bv);
        linear_bwd(m, l, FT_LIN_Q, &a.h1, &dq2, &dhc, 0, &G->wq);
        linear_bwd(m, l, FT_LIN_K, &a.h1, &dk2, &dhc, 1, &G->wk);
        linear_bwd(m, l, FT_LIN_V, &a.h1, &dv2, &dhc, 1, &G->wv);
        b->copy(b, dx.data, dxm.data, ft_nbytes(&dx));
        b->rmsnorm_backward(b, as_dtype(m, &dhc, &dh), xin, &W->ln1, &a.rstd1, &dx, G->ln1.data ? &G->ln1 : NULL, 1);
    }
    if (g->embed.data) b->embedding_backward(b, &s->in.ids, &dx, &g->embed, 1);
    m->training = 0;
    return FT_OK;
}

/* ---------- one parameter from/to the host ---------- */

/* The compute copy of the model's parameter w (NULL when none). */
static ft_tensor *compute_copy_of(ft_model *m, const ft_tensor *w) {
    if (!m->wc.layers) return NULL;
    int n = 0, nc = 0;
    ft_param *p = model_params(m, &n), *pc = weights_params(&m->cfg, &m->wc, &nc);
    ft_tensor *out = NULL;
    for (int i = 0; i < n && !out; i++)
        if (p[i].t == w && pc[i].t->data) out = pc[i].t;
    free(p);
    free(pc);
    return out;
}

int model_param_set(ft_model *m, ft_tensor *w, const float *host, ft_error *e) {
    ft_tensor *c = compute_copy_of(m, w);
    size_t n = (size_t)ft_numel(w);
    if (!w->data && !c) return ft_fail(e, FT_EINTERNAL, "model_param_set: the parameter has no memory");
    if (w->data) m->b->upload(m->b, w->data, host, n * 4);
    if (c) {
        uint16_t *h = ft_xmalloc(n * 2);
        convert_from_f32(host, h, n, c->dtype);
        m->b->upload(m->b, c->data, h, n * 2);
        free(h);
    }
    return FT_OK;
}

int model_param_get(ft_model *m, const ft_tensor *w, float *host, ft_error *e) {
    size_t n = (size_t)ft_numel(w);
    if (w->data) {
        m->b->download(m->b, host, w->data, n * 4);
        return FT_OK;
    }
    ft_tensor *c = compute_copy_of(m, w);
    if (!c) return ft_fail(e, FT_EINTERNAL, "model_param_get: the parameter has no memory");
    uint16_t *h = ft_xmalloc(n * 2);
    m->b->download(m->b, h, c->data, n * 2);
    for (size_t i = 0; i < n; i++) host[i] = c->dtype == FT_BF16 ? ft_bf16_to_f32(h[i]) : ft_f16_to_f32(h[i]);
    free(h);
    return FT_OK;
}
