#include "lora/lora.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/io/safetensors.h"
#include "lora/nf4.h"

static const char *const SHORT[FT_LIN_COUNT] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                "gate_proj", "up_proj", "down_proj"};

void lora_key(char *buf, size_t n, int layer, ft_linear which, const char *ab) {
    if (strcmp(ab, "M") == 0)
        snprintf(buf, n, "base_model.model.model.layers.%d.%s.lora_magnitude_vector", layer, FT_LINEAR_NAMES[which]);
    else
        snprintf(buf, n, "base_model.model.model.layers.%d.%s.lora_%s.weight", layer, FT_LINEAR_NAMES[which], ab);
}

static int target_index(const char *name) {
    for (int i = 0; i < FT_LIN_COUNT; i++)
        if (strcmp(name, SHORT[i]) == 0 || strcmp(name, FT_LINEAR_NAMES[i]) == 0) return i;
    return -1;
}

/* One target_modules entry: a short name ("q_proj"), a module path ("self_attn.q_proj") or a full path
 * ("model.layers.3.self_attn.q_proj", which PEFT matches as a suffix of the module's name). */
static int add_target(lora_cfg *c, const char *name, const char *where, ft_error *e) {
    int i = target_index(name);
    if (i >= 0) {
        c->targets |= 1u << i;
        return FT_OK;
    }
    const char *p = strstr(name, "layers.");
    if (p && (p == name || p[-1] == '.')) {
        char *end;
        long l = strtol(p + 7, &end, 10);
        if (end != p + 7 && *end == '.' && l >= 0 && l < 100000 && (i = target_index(end + 1)) >= 0) {
            c->pairs = ft_xrealloc(c->pairs, (size_t)(c->n_pairs + 1) * sizeof(int));
            c->pairs[c->n_pairs++] = (int)l * FT_LIN_COUNT + i;
            return FT_OK;
        }
    }
    return ft_fail(e, FT_EINPUT,
                   "%s: target_modules entry \"%s\": expected \"all-linear\" or q_proj, k_proj, v_proj, o_proj, "
                   "gate_proj, up_proj, down_proj (optionally as model.layers.N.self_attn.q_proj; regular expressions "
                   "are not supported)",
                   where, name);
}

static int parse_targets_json(const cJSON *t, lora_cfg *c, const char *where, ft_error *e) {
    c->targets = 0;
    c->all_linear = 0;
    if (cJSON_IsString(t)) {
        if (strcmp(t->valuestring, "all-linear") == 0) {
            c->all_linear = 1;
            c->targets = (1u << FT_LIN_COUNT) - 1;
            return FT_OK;
        }
        return add_target(c, t->valuestring, where, e);
    }
    if (!cJSON_IsArray(t) || cJSON_GetArraySize(t) == 0)
        return ft_fail(e, FT_EINPUT, "%s: target_modules must be \"all-linear\" or a non-empty list of module names",
                       where);
    const cJSON *it;
    cJSON_ArrayForEach(it, t) {
        if (!cJSON_IsString(it)) return ft_fail(e, FT_EINPUT, "%s: target_modules entries must be strings", where);
        int rc = add_target(c, it->valuestring, where, e);
        if (rc) return rc;
    }
    return FT_OK;
}

int lora_parse_targets(const char *json, lora_cfg *c, const char *where, ft_error *e) {
    cJSON *t = cJSON_Parse(json);
    if (!t) t = cJSON_CreateString(json); /* a bare word */
    int rc = parse_targets_json(t, c, where, e);
    cJSON_Delete(t);
    return rc;
}

int lora_check_cfg(const lora_cfg *c, const char *where, ft_error *e) {
    if (c->r <= 0) return ft_fail(e, FT_EINPUT, "%s: r = %d: the LoRA rank must be > 0", where, c->r);
    if (!(c->alpha > 0) || !isfinite(c->alpha))
        return ft_fail(e, FT_EINPUT, "%s: lora_alpha = %g: must be a positive number", where, c->alpha);
    if (!(c->dropout >= 0 && c->dropout < 1))
        return ft_fail(e, FT_EINPUT, "%s: lora_dropout = %g: must be in [0, 1)", where, c->dropout);
    if (!c->targets && !c->n_pairs) return ft_fail(e, FT_EINPUT, "%s: no target_modules", where);
    return FT_OK;
}

void lora_cfg_free(lora_cfg *c) {
    free(c->layers);
    free(c->pairs);
    c->layers = c->pairs = NULL;
    c->n_layers = c->n_pairs = 0;
}

static int layer_selected(const lora_cfg *c, int l) {
    if (!c->layers) return 1;
    for (int i = 0; i < c->n_layers; i++)
        if (c->layers[i] == l) return 1;
    return 0;
}

static int is_adapted(const lora_cfg *c, int l, int w) {
    for (int i = 0; i < c->n_pairs; i++)
        if (c->pairs[i] == l * FT_LIN_COUNT + w) return layer_selected(c, l);
    return (c->targets & (1u << w)) && layer_selected(c, l);
}

static int *dup_ints(const int *v, int n) {
    if (!v) return NULL;
    int *r = ft_xmalloc((size_t)(n + 1) * sizeof(int));
    memcpy(r, v, (size_t)n * sizeof(int));
    return r;
}

void lora_linear_shape(const ft_config *c, ft_linear w, int64_t *out, int64_t *in) {
    int64_t D = c->hidden_size, F = c->intermediate_size, QD = (int64_t)c->num_heads * c->head_dim,
            KD = (int64_t)c->num_kv_heads * c->head_dim;
    switch (w) {
    case FT_LIN_Q: *out = QD, *in = D; break;
    case FT_LIN_K:
    case FT_LIN_V: *out = KD, *in = D; break;
    case FT_LIN_O: *out = D, *in = QD; break;
    case FT_LIN_GATE:
    case FT_LIN_UP: *out = F, *in = D; break;
    default: *out = D, *in = F; break;
    }
}

static lora_adapter *adapter_new(ft_model *m, const lora_cfg *cfg) {
    lora_adapter *a = ft_xcalloc(1, sizeof *a);
    a->cfg = *cfg;
    a->cfg.layers = dup_ints(cfg->layers, cfg->n_layers);
    a->cfg.pairs = dup_ints(cfg->pairs, cfg->n_pairs);
    a->scaling = cfg->use_rslora ? cfg->alpha / sqrtf((float)cfg->r) : cfg->alpha / (float)cfg->r;
    a->b = m->b;
    a->m = m;
    a->num_layers = m->cfg.num_layers;
    size_t n = (size_t)a->num_layers * FT_LIN_COUNT;
    a->A = ft_xcalloc(n, sizeof *a->A);
    a->B = ft_xcalloc(n, sizeof *a->B);
    a->gA = ft_xcalloc(n, sizeof *a->gA);
    a->gB = ft_xcalloc(n, sizeof *a->gB);
    a->mag = ft_xcalloc(n, sizeof *a->mag);
    a->gmag = ft_xcalloc(n, sizeof *a->gmag);
    return a;
}

/* Allocate A and B for every adapted linear (zeroed). */
static int adapter_alloc(lora_adapter *a, ft_model *m, ft_error *e) {
    for (int l = 0; l < a->num_layers; l++) {
        for (int w = 0; w < FT_LIN_COUNT; w++) {
            if (!is_adapted(&a->cfg, l, w)) continue;
            int64_t out, in;
            lora_linear_shape(&m->cfg, (ft_linear)w, &out, &in);
            int64_t sa[2] = {a->cfg.r, in}, sb[2] = {out, a->cfg.r};
            size_t k = (size_t)l * FT_LIN_COUNT + w;
            int rc = ft_backend_tensor(a->b, FT_F32, 2, sa, &a->A[k], e);
            if (!rc) rc = ft_backend_tensor(a->b, FT_F32, 2, sb, &a->B[k], e);
            if (rc) return rc;
            a->b->zero(a->b, a->A[k].data, ft_nbytes(&a->A[k]));
            a->b->zero(a->b, a->B[k].data, ft_nbytes(&a->B[k]));
            if (a->cfg.use_dora) {
                if ((rc = ft_backend_tensor(a->b, FT_F32, 1, &out, &a->mag[k], e))) return rc;
                a->b->zero(a->b, a->mag[k].data, ft_nbytes(&a->mag[k]));
            }
        }
    }
    return FT_OK;
}

/* ---------- DoRA ---------- */

/* DoRA scratch: dw (W + sBA, fp32, the largest adapted linear) and dn (its row norms) once; dys, dz [T, max
 * out] in the activations' dtype, grown with T. 0 (after printing why) when out of memory. */
static int ensure_dora(lora_adapter *a, int64_t T, ft_dtype dt) {
    ft_error e;
    int64_t max_w = 0, max_out = 0;
    for (size_t k = 0; k < (size_t)a->num_layers * FT_LIN_COUNT; k++) {
        if (!a->mag[k].data) continue;
        int64_t o = a->B[k].shape[0], w = o * a->A[k].shape[1];
        if (w > max_w) max_w = w;
        if (o > max_out) max_out = o;
    }
    int rc = FT_OK;
    if (!a->dw.data) {
        rc = ft_backend_tensor(a->b, FT_F32, 1, &max_w, &a->dw, &e);
        if (!rc) rc = ft_backend_tensor(a->b, FT_F32, 1, &max_out, &a->dn, &e);
    }
    if (!rc && T > 0 && (T > a->dora_T || dt != a->dora_dt)) {
        if (a->dys.data) a->b->free(a->b, a->dys.data);
        if (a->dz.data) a->b->free(a->b, a->dz.data);
        a->dys.data = a->dz.data = NULL;
        if (T < a->dora_T) T = a->dora_T;
        int64_t s[2] = {T, max_out};
        rc = ft_backend_tensor(a->b, dt, 2, s, &a->dys, &e);
        if (!rc) rc = ft_backend_tensor(a->b, dt, 2, s, &a->dz, &e);
        a->dora_T = rc ? 0 : T;
        a->dora_dt = dt;
    }
    if (rc) fprintf(stderr, "lora: DoRA scratch: %s\n", e.msg);
    return !rc;
}

/* The fp32 base weight of one linear into dst ([out, in] on a->dw): the model's fp32 weight, its 16-bit
 * compute copy cast up, or QLoRA's NF4 weight dequantized. 0 when there is none (yet). */
static int base_f32(lora_adapter *a, ft_model *m, int l, ft_linear which, ft_tensor *dst) {
    size_t k = (size_t)l * FT_LIN_COUNT + which;
    ft_backend *b = a->b;
    if (a->qpacked && a->qpacked[k].data) {
        b->nf4_dequant(b, &a->qpacked[k], &a->qabsmax[k], NF4_BLOCK, dst);
        return 1;
    }
    const ft_tensor *w = model_linear_weight(&m->w.layers[l], which);
    if (w->data && w->dtype == FT_F32) {
        b->copy(b, dst->data, w->data, ft_nbytes(dst));
        return 1;
    }
    if (m->wc.layers && (w = model_linear_weight(&m->wc.layers[l], which))->data) {
        b->cast(b, w, dst);
        return 1;
    }
    return 0;
}

/* n = ||W + s B A|| per output row (fp32 masters of A and B) into a->dn; *n views it. */
static int dora_norm(lora_adapter *a, ft_model *m, int l, ft_linear which, ft_tensor *n) {
    size_t k = (size_t)l * FT_LIN_COUNT + which;
    int64_t out = a->B[k].shape[0], in = a->A[k].shape[1];
    ft_tensor W = ft_t2(a->dw.data, FT_F32, a->b->device, out, in);
    if (!base_f32(a, m, l, which, &W)) return 0;
    a->b->gemm(a->b, &a->B[k], 0, &a->A[k], 0, &W, a->scaling, 1.0f);
    *n = ft_tensor_make(a->dn.data, FT_F32, a->b->device, 1, &out);
    a->b->row_norm(a->b, &W, n);
    return 1;
}

/* PEFT's init of the magnitudes: ||W + s B A|| per row (B = 0 for a new adapter: ||W||). */
static int dora_init_magnitudes(lora_adapter *a, ft_model *m, ft_error *e) {
    if (!ensure_dora(a, 0, m->compute)) return ft_fail(e, FT_ENOMEM, "lora: out of memory for the DoRA scratch");
    for (size_t k = 0; k < (size_t)a->num_layers * FT_LIN_COUNT; k++) {
        if (!a->mag[k].data) continue;
        ft_tensor n;
        int l = (int)(k / FT_LIN_COUNT);
        ft_linear w = (ft_linear)(k % FT_LIN_COUNT);
        if (!dora_norm(a, m, l, w, &n))
            return ft_fail(e, FT_EINTERNAL, "lora: DoRA needs the base weight of layer %d %s to initialise its magnitude",
                           l, SHORT[w]);
        a->b->copy(a->b, a->mag[k].data, n.data, ft_nbytes(&n));
    }
    a->mag_pending = 0;
    return FT_OK;
}

int lora_create(ft_model *m, const lora_cfg *cfg, uint64_t seed, lora_adapter **out, ft_error *e) {
    int rc = lora_check_cfg(cfg, "lora", e);
    for (int i = 0; !rc && i < cfg->n_layers; i++)
        if (cfg->layers[i] < 0 || cfg->layers[i] >= m->cfg.num_layers)
            rc = ft_fail(e, FT_EINPUT, "lora: layers_to_transform has layer %d but the model has %d layers",
                         cfg->layers[i], m->cfg.num_layers);
    if (rc) return rc;
    lora_adapter *a = adapter_new(m, cfg);
    rc = adapter_alloc(a, m, e);
    ft_rng rng;
    ft_rng_seed(&rng, seed ^ 0x10a4a11ce5ULL);
    float *h = NULL;
    for (size_t k = 0; !rc && k < (size_t)a->num_layers * FT_LIN_COUNT; k++) {
        if (!a->A[k].data) continue;
        int64_t n = ft_numel(&a->A[k]), in = a->A[k].shape[1];
        float bound = 1.0f / sqrtf((float)in); /* kaiming_uniform_(a=sqrt(5)) on [r, in] */
        h = ft_xrealloc(h, (size_t)n * sizeof(float));
        for (int64_t i = 0; i < n; i++) h[i] = (2.0f * ft_rng_uniform(&rng) - 1.0f) * bound;
        a->b->upload(a->b, a->A[k].data, h, (size_t)n * sizeof(float));
    }
    free(h);
    /* DoRA magnitudes = ||W|| per row; a quantized base (not there yet) does it in lora_quantize_base */
    if (!rc && cfg->use_dora) a->mag_pending = 1;
    if (!rc && cfg->use_dora &&
        (model_linear_weight(&m->w.layers[0], FT_LIN_Q)->data ||
         (m->wc.layers && model_linear_weight(&m->wc.layers[0], FT_LIN_Q)->data)))
        rc = dora_init_magnitudes(a, m, e);
    if (rc) {
        lora_free(a);
        return rc;
    }
    *out = a;
    return FT_OK;
}

void lora_free(lora_adapter *a) {
    if (!a) return;
    size_t n = (size_t)a->num_layers * FT_LIN_COUNT;
    ft_tensor *lists[8] = {a->A, a->B, a->gA, a->gB, a->qpacked, a->qabsmax, a->mag, a->gmag};
    for (int j = 0; j < 8; j++) {
        if (!lists[j]) continue;
        for (size_t k = 0; k < n; k++)
            if (lists[j][k].data) a->b->free(a->b, lists[j][k].data);
        free(lists[j]);
    }
    ft_tensor *scratch[8] = {&a->xa, &a->dyb, &a->xd, &a->wc, &a->dw, &a->dn, &a->dys, &a->dz};
    for (int j = 0; j < 8; j++)
        if (scratch[j]->data) a->b->free(a->b, scratch[j]->data);
    if (a->wscratch.data) a->b->free(a->b, a->wscratch.data);
    lora_cfg_free(&a->cfg);
    free(a);
}

/* ---------- hooks ---------- */

/* Scratch in the dtype of the activations (the model's compute dtype): xa, dyb [T, r]; with dropout in
 * training xd [T, max_in] (dropout(x), then the masked input gradient); in 16-bit compute wc holds 16-bit
 * copies of one A and one B. Grown when a longer batch comes (rare: batches are bounded by max_length). */
static int ensure_scratch(lora_adapter *a, int64_t T, ft_dtype dt, int need_xd) {
    if (T <= a->cap_T && dt == a->cap_dt && (!need_xd || a->xd.data)) return 1;
    ft_error e;
    ft_tensor *bufs[4] = {&a->xa, &a->dyb, &a->xd, &a->wc};
    for (int i = 0; i < 4; i++) {
        if (bufs[i]->data) a->b->free(a->b, bufs[i]->data);
        bufs[i]->data = NULL;
    }
    if (T < a->cap_T) T = a->cap_T;
    int64_t max_in = 0, max_ab = 0;
    for (size_t k = 0; k < (size_t)a->num_layers * FT_LIN_COUNT; k++) {
        if (!a->A[k].data) continue;
        if (a->A[k].shape[1] > max_in) max_in = a->A[k].shape[1];
        if (ft_numel(&a->A[k]) + ft_numel(&a->B[k]) > max_ab) max_ab = ft_numel(&a->A[k]) + ft_numel(&a->B[k]);
    }
    int64_t s[2] = {T, a->cfg.r}, sx[2] = {T, max_in};
    int rc = ft_backend_tensor(a->b, dt, 2, s, &a->xa, &e);
    if (!rc) rc = ft_backend_tensor(a->b, dt, 2, s, &a->dyb, &e);
    if (!rc && need_xd) rc = ft_backend_tensor(a->b, dt, 2, sx, &a->xd, &e);
    if (!rc && dt != FT_F32) rc = ft_backend_tensor(a->b, dt, 1, &max_ab, &a->wc, &e);
    if (rc) {
        fprintf(stderr, "lora: %s\n", e.msg);
        for (int i = 0; i < 4; i++) {
            if (bufs[i]->data) a->b->free(a->b, bufs[i]->data);
            bufs[i]->data = NULL;
        }
        a->cap_T = 0;
        return 0;
    }
    a->cap_T = T;
    a->cap_dt = dt;
    return 1;
}

/* A and B as the activations' dtype: the fp32 masters themselves, or (16-bit compute) fresh 16-bit casts.
 * Casting per call rather than keeping copies refreshed after each optimizer step costs r * (in + out)
 * elements, nothing next to the GEMMs, and can never go stale (resume, init_from, DPO reference). */
static void adapter_ab(lora_adapter *a, size_t k, ft_dtype dt, ft_tensor *Ac, ft_tensor *Bc) {
    if (dt == FT_F32) {
        *Ac = a->A[k];
        *Bc = a->B[k];
        return;
    }
    *Ac = ft_tensor_make(a->wc.data, dt, a->b->device, 2, a->A[k].shape);
    *Bc = ft_tensor_make((char *)a->wc.data + (size_t)ft_numel(&a->A[k]) * ft_dtype_size(dt), dt, a->b->device, 2,
                         a->B[k].shape);
    a->b->cast(a->b, &a->A[k], Ac);
    a->b->cast(a->b, &a->B[k], Bc);
}

/* The dropout mask's seed for one linear of one layer in this micro-batch: every adapted linear draws its
 * own mask (PEFT has one dropout module per adapter), the same in forward and backward's recomputation. */
static uint64_t mask_seed(const ft_model *m, int layer, ft_linear which) {
    return ft_dropout_key(m->step_seed + (uint64_t)(layer * FT_LIN_COUNT + (int)which + 1) * 0xD1B54A32D192ED03ULL);
}

/* PEFT: y += s * B(A(dropout(x))), dropout only in training. */
static void hook_forward(void *ctx, ft_model *m, int layer, ft_linear which, const ft_tensor *x, ft_tensor *y) {
    lora_adapter *a = ctx;
    size_t k = (size_t)layer * FT_LIN_COUNT + which;
    if (!a->A[k].data) return;
    int64_t T = x->shape[0];
    int drop = a->cfg.dropout > 0 && m->training && !a->mag[k].data; /* DoRA: training refuses dropout */
    if (!ensure_scratch(a, T, x->dtype, drop)) return;
    ft_backend *b = m->b;
    ft_tensor Ac, Bc, xd;
    adapter_ab(a, k, x->dtype, &Ac, &Bc);
    const ft_tensor *xin = x;
    if (drop) {
        xd = ft_t2(a->xd.data, x->dtype, b->device, T, a->A[k].shape[1]);
        b->dropout(b, x, &xd, a->cfg.dropout, mask_seed(m, layer, which));
        xin = &xd;
    }
    ft_tensor xa = ft_t2(a->xa.data, x->dtype, b->device, T, a->cfg.r);
    b->gemm(b, xin, 0, &Ac, 1, &xa, 1.0f, 0.0f);
    b->gemm(b, &xa, 0, &Bc, 1, y, a->scaling, 1.0f);
    ft_tensor n;
    if (a->mag[k].data && ensure_dora(a, T, x->dtype) && dora_norm(a, m, layer, which, &n))
        b->col_scale(b, y, &a->mag[k], &n, y); /* y = (m / n) (x W^T + s B A x) */
}

static void hook_backward(void *ctx, ft_model *m, int layer, ft_linear which, const ft_tensor *x, const ft_tensor *dy,
                          ft_tensor *dx) {
    lora_adapter *a = ctx;
    size_t k = (size_t)layer * FT_LIN_COUNT + which;
    if (!a->A[k].data) return;
    int64_t T = x->shape[0];
    int drop = a->cfg.dropout > 0 && m->training && !a->mag[k].data;
    if (!ensure_scratch(a, T, x->dtype, drop)) return;
    ft_backend *b = m->b;
    ft_tensor Ac, Bc, xd;
    adapter_ab(a, k, x->dtype, &Ac, &Bc);
    const ft_tensor *xin = x;
    uint64_t seed = mask_seed(m, layer, which);
    if (drop) { /* the forward's mask again: same seed */
        xd = ft_t2(a->xd.data, x->dtype, b->device, T, a->A[k].shape[1]);
        b->dropout(b, x, &xd, a->cfg.dropout, seed);
        xin = &xd;
    }
    ft_tensor xa = ft_t2(a->xa.data, x->dtype, b->device, T, a->cfg.r);
    ft_tensor dyb = ft_t2(a->dyb.data, x->dtype, b->device, T, a->cfg.r);
    b->gemm(b, dy, 0, &Bc, 0, &dyb, 1.0f, 0.0f); /* dy B  [T, r] */
    if (a->gB[k].data) {
        b->gemm(b, xin, 0, &Ac, 1, &xa, 1.0f, 0.0f);            /* x' A^T [T, r], x' = dropout(x) */
        b->gemm(b, dy, 1, &xa, 0, &a->gB[k], a->scaling, 1.0f); /* dB += s dy^T (x' A^T) */
        b->gemm(b, &dyb, 1, xin, 0, &a->gA[k], a->scaling, 1.0f); /* dA += s (dy B)^T x' */
    }
    if (!drop) {
        b->gemm(b, &dyb, 0, &Ac, 0, dx, a->scaling, 1.0f); /* dx += s (dy B) A */
    } else {
        /* dx += mask / (1 - p) * s (dy B) A, through xd (x' is no longer needed) */
        ft_tensor g = ft_tensor_make(a->xd.data, dx->dtype, b->device, dx->ndim, dx->shape);
        b->gemm(b, &dyb, 0, &Ac, 0, &g, a->scaling, 0.0f);
        b->dropout(b, &g, &g, a->cfg.dropout, seed);
        b->add(b, dx, &g, dx);
    }
}

/* The dequantized base weight, in the dtype the model computes in (scratch->dtype). The scratch was made in
 * the model's compute dtype when quantizing; if the model went 16-bit after that, it gets a buffer half the
 * size on first use (if that allocation fails the fp32 one, which is large enough, is reused). */
static const ft_tensor *hook_base_weight(void *ctx, ft_model *m, int layer, ft_linear which, ft_tensor *scratch) {
    lora_adapter *a = ctx;
    size_t k = (size_t)layer * FT_LIN_COUNT + which;
    ft_tensor *w = &a->wscratch;
    if (scratch->dtype != a->wscratch_dt) {
        void *p = a->b->alloc(a->b, (size_t)a->wscratch_n * ft_dtype_size(scratch->dtype));
        if (p) {
            a->b->free(a->b, w->data);
            w->data = p;
        }
        a->wscratch_dt = scratch->dtype;
    }
    ft_tensor view = ft_tensor_make(w->data, scratch->dtype, a->b->device, scratch->ndim, scratch->shape);
    *w = view;
    m->b->nf4_dequant(m->b, &a->qpacked[k], &a->qabsmax[k], NF4_BLOCK, w);
    return w;
}

/* The base weight in the compute dtype, as the model's linear_fwd multiplies by it. */
static const ft_tensor *base_compute(lora_adapter *a, ft_model *m, int l, ft_linear which) {
    ft_tensor *w = model_linear_weight(m->compute == FT_F32 ? &m->w.layers[l] : &m->wc.layers[l], which);
    if (w->data || !a->qpacked) return w;
    ft_tensor scratch = *w;
    return hook_base_weight(a, m, l, which, &scratch);
}

/* DoRA backward, before the base GEMMs: y = c * z with c = m / n (n a constant), z = x W^T + s B A x, so
 * dm += sum_t dy * z / n (z recomputed) and every other gradient flows through dz = c * dy. */
static const ft_tensor *hook_grad_out(void *ctx, ft_model *m, int layer, ft_linear which, const ft_tensor *x,
                                      const ft_tensor *dy) {
    lora_adapter *a = ctx;
    size_t k = (size_t)layer * FT_LIN_COUNT + which;
    if (!a->mag[k].data) return dy;
    int64_t T = x->shape[0], out = a->B[k].shape[0];
    ft_tensor n;
    if (!ensure_scratch(a, T, x->dtype, 0) || !ensure_dora(a, T, x->dtype) || !dora_norm(a, m, layer, which, &n))
        return dy;
    ft_backend *b = m->b;
    if (a->gmag[k].data) {
        ft_tensor Ac, Bc, z = ft_t2(a->dz.data, x->dtype, b->device, T, out);
        b->gemm(b, x, 0, base_compute(a, m, layer, which), 1, &z, 1.0f, 0.0f);
        adapter_ab(a, k, x->dtype, &Ac, &Bc);
        ft_tensor xa = ft_t2(a->xa.data, x->dtype, b->device, T, a->cfg.r);
        b->gemm(b, x, 0, &Ac, 1, &xa, 1.0f, 0.0f);
        b->gemm(b, &xa, 0, &Bc, 1, &z, a->scaling, 1.0f);
        b->col_dot(b, dy, &z, &n, &a->gmag[k]);
    }
    a->dys = ft_t2(a->dys.data, x->dtype, b->device, T, out);
    b->col_scale(b, dy, &a->mag[k], &n, &a->dys);
    return &a->dys;
}

void lora_attach(lora_adapter *a, ft_model *m) {
    m->hooks.ctx = a;
    m->hooks.forward = hook_forward;
    m->hooks.backward = hook_backward;
    m->hooks.base_weight = a->qpacked ? hook_base_weight : NULL;
    m->hooks.grad_out = a->cfg.use_dora ? hook_grad_out : NULL;
}

int lora_grads_create(lora_adapter *a, ft_error *e) {
    if (a->cfg.use_dora && a->cfg.dropout > 0)
        return ft_fail(e, FT_EINPUT,
                       "lora: use_dora with lora_dropout = %g: training DoRA with dropout is not implemented; set "
                       "lora_dropout to 0",
                       (double)a->cfg.dropout);
    for (size_t k = 0; k < (size_t)a->num_layers * FT_LIN_COUNT; k++) {
        if (!a->A[k].data) continue;
        int rc = ft_backend_tensor(a->b, FT_F32, 2, a->A[k].shape, &a->gA[k], e);
        if (!rc) rc = ft_backend_tensor(a->b, FT_F32, 2, a->B[k].shape, &a->gB[k], e);
        if (!rc && a->mag[k].data) {
            rc = ft_backend_tensor(a->b, FT_F32, 1, a->mag[k].shape, &a->gmag[k], e);
            if (!rc) a->b->zero(a->b, a->gmag[k].data, ft_nbytes(&a->gmag[k]));
        }
        if (rc) return rc;
        a->b->zero(a->b, a->gA[k].data, ft_nbytes(&a->gA[k]));
        a->b->zero(a->b, a->gB[k].data, ft_nbytes(&a->gB[k]));
    }
    return FT_OK;
}

int lora_params(lora_adapter *a, ft_param **w, ft_param **g, int *n) {
    size_t cap = (size_t)a->num_layers * FT_LIN_COUNT * 3;
    *w = ft_xcalloc(cap, sizeof **w);
    *g = ft_xcalloc(cap, sizeof **g);
    int k = 0;
    for (int l = 0; l < a->num_layers; l++)
        for (int j = 0; j < FT_LIN_COUNT; j++) {
            size_t i = (size_t)l * FT_LIN_COUNT + j;
            if (!a->A[i].data) continue;
            lora_key((*w)[k].name, sizeof (*w)[k].name, l, (ft_linear)j, "A");
            (*w)[k].t = &a->A[i];
            (*g)[k] = (*w)[k];
            (*g)[k].t = &a->gA[i];
            k++;
            lora_key((*w)[k].name, sizeof (*w)[k].name, l, (ft_linear)j, "B");
            (*w)[k].t = &a->B[i];
            (*g)[k] = (*w)[k];
            (*g)[k].t = &a->gB[i];
            k++;
            if (!a->mag[i].data) continue;
            lora_key((*w)[k].name, sizeof (*w)[k].name, l, (ft_linear)j, "M");
            (*w)[k].t = &a->mag[i];
            (*g)[k] = (*w)[k];
            (*g)[k].t = &a->gmag[i];
            k++;
        }
    *n = k;
    return FT_OK;
}

/* ---------- PEFT files ---------- */

static void json_str(char **buf, size_t *len, size_t *cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
#include <stdarg.h>
static void json_str(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if ((size_t)k < *cap - *len) {
            *len += (size_t)k;
            return;
        }
        *cap = *cap * 2 + (size_t)k;
        *buf = ft_xrealloc(*buf, *cap);
    }
}

/* Python's json float repr of the number the user wrote, for an fp32 value (0.1f -> "0.1", 8 -> "8.0"):
 * the shortest digits that read back as the same float. */
static void py_float32(float v, char *out, size_t n) {
    for (int p = 1; p <= 9; p++) {
        snprintf(out, n, "%.*g", p, (double)v);
        if (strtof(out, NULL) == v) break;
    }
    if (!strpbrk(out, ".eEn")) strncat(out, ".0", n - strlen(out) - 1);
}

static char *json_escape(const char *s) {
    cJSON *j = cJSON_CreateString(s);
    char *r = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return r;
}

/* PEFT's key of a SEQ_CLS adapter's head (modules_to_save "score", the adapter name dropped) */
#define LORA_SCORE_KEY "base_model.model.score.weight"

int lora_save(const lora_adapter *a, const char *dir, const char *base_model, ft_error *e) {
    int rc = ft_mkdir_p(dir, e);
    if (rc) return rc;
    int cls = a->m && a->m->cfg.num_labels > 0;
    /* adapter_config.json: PEFT 0.21's keys, sorted, indent 2 */
    size_t len = 0, cap = 4096;
    char *s = ft_xmalloc(cap), drop[40], *base = json_escape(base_model ? base_model : "");
    py_float32(a->cfg.dropout, drop, sizeof drop);
    char alpha[40];
    if (a->cfg.alpha == floorf(a->cfg.alpha) && fabsf(a->cfg.alpha) < 1e9f)
        snprintf(alpha, sizeof alpha, "%lld", (long long)a->cfg.alpha);
    else
        py_float32(a->cfg.alpha, alpha, sizeof alpha);
    char targets[8192] = "", layers[1024] = "null";
    if (a->cfg.all_linear && !a->cfg.n_pairs) {
        snprintf(targets, sizeof targets, "\"all-linear\"");
    } else {
        strcat(targets, "[");
        int first = 1;
        for (int i = 0; i < FT_LIN_COUNT; i++)
            if (a->cfg.targets & (1u << i)) {
                size_t t = strlen(targets);
                snprintf(targets + t, sizeof targets - t, "%s\n    \"%s\"", first ? "" : ",", SHORT[i]);
                first = 0;
            }
        for (int i = 0; i < a->cfg.n_pairs; i++) {
            size_t t = strlen(targets);
            if (t + 80 >= sizeof targets) break;
            snprintf(targets + t, sizeof targets - t, "%s\n    \"model.layers.%d.%s\"", first ? "" : ",",
                     a->cfg.pairs[i] / FT_LIN_COUNT, FT_LINEAR_NAMES[a->cfg.pairs[i] % FT_LIN_COUNT]);
            first = 0;
        }
        strcat(targets, "\n  ]");
    }
    if (a->cfg.layers) {
        size_t t = 0;
        t += (size_t)snprintf(layers, sizeof layers, "[");
        for (int i = 0; i < a->cfg.n_layers && t < sizeof layers - 16; i++)
            t += (size_t)snprintf(layers + t, sizeof layers - t, "%s\n    %d", i ? "," : "", a->cfg.layers[i]);
        snprintf(layers + t, sizeof layers - t, "\n  ]");
    }
    json_str(&s, &len, &cap,
             "{\n"
             "  \"alora_invocation_tokens\": null,\n"
             "  \"alpha_pattern\": {},\n"
             "  \"arrow_config\": null,\n"
             "  \"auto_mapping\": null,\n"
             "  \"base_model_name_or_path\": %s,\n"
             "  \"bias\": \"none\",\n"
             "  \"corda_config\": null,\n"
             "  \"ensure_weight_tying\": false,\n"
             "  \"eva_config\": null,\n"
             "  \"exclude_modules\": null,\n"
             "  \"fan_in_fan_out\": false,\n"
             "  \"inference_mode\": true,\n"
             "  \"init_lora_weights\": true,\n"
             "  \"kasa_config\": null,\n"
             "  \"layer_replication\": null,\n"
             "  \"layers_pattern\": null,\n"
             "  \"layers_to_transform\": %s,\n"
             "  \"loftq_config\": {},\n"
             "  \"lora_alpha\": %s,\n"
             "  \"lora_bias\": false,\n"
             "  \"lora_dropout\": %s,\n"
             "  \"lora_ga_config\": null,\n"
             "  \"megatron_config\": null,\n"
             "  \"megatron_core\": \"megatron.core\",\n"
             "  \"modules_to_save\": %s,\n"
             "  \"monteclora_config\": null,\n"
             "  \"peft_type\": \"LORA\",\n"
             "  \"peft_version\": \"0.21.2\",\n"
             "  \"qalora_group_size\": 16,\n"
             "  \"r\": %d,\n"
             "  \"rank_pattern\": {},\n"
             "  \"revision\": null,\n"
             "  \"target_modules\": %s,\n"
             "  \"target_parameters\": null,\n"
             "  \"task_type\": \"%s\",\n"
             "  \"trainable_token_indices\": null,\n"
             "  \"use_bdlora\": null,\n"
             "  \"use_dora\": %s,\n"
             "  \"use_qalora\": false,\n"
             "  \"use_rslora\": %s,\n"
             "  \"velora_config\": null\n"
             "}",
             base, layers, alpha, drop,
             cls ? "[\n    \"classifier\",\n    \"score\",\n    \"pre_classifier\"\n  ]" : "null", a->cfg.r,
             targets, cls ? "SEQ_CLS" : "CAUSAL_LM", a->cfg.use_dora ? "true" : "false",
             a->cfg.use_rslora ? "true" : "false");
    free(base);
    char *path = ft_path_join(dir, "adapter_config.json");
    rc = ft_write_file_atomic(path, s, len, e);
    free(path);
    free(s);
    if (rc) return rc;
    /* adapter_model.safetensors */
    path = ft_path_join(dir, "adapter_model.safetensors");
    st_writer *w = NULL;
    rc = st_writer_open(path, &w, e);
    free(path);
    if (rc) return rc;
    rc = st_writer_metadata(w, "format", "pt", e);
    char key[160];
    size_t n = (size_t)a->num_layers * FT_LIN_COUNT;
    for (size_t k = 0; k < n && !rc; k++) {
        if (!a->A[k].data) continue;
        lora_key(key, sizeof key, (int)(k / FT_LIN_COUNT), (ft_linear)(k % FT_LIN_COUNT), "A");
        rc = st_writer_declare(w, key, FT_F32, 2, a->A[k].shape, e);
        lora_key(key, sizeof key, (int)(k / FT_LIN_COUNT), (ft_linear)(k % FT_LIN_COUNT), "B");
        if (!rc) rc = st_writer_declare(w, key, FT_F32, 2, a->B[k].shape, e);
        lora_key(key, sizeof key, (int)(k / FT_LIN_COUNT), (ft_linear)(k % FT_LIN_COUNT), "M");
        if (!rc && a->mag[k].data) rc = st_writer_declare(w, key, FT_F32, 1, a->mag[k].shape, e);
    }
    if (cls && !rc) rc = st_writer_declare(w, LORA_SCORE_KEY, FT_F32, 2, a->m->w.score.shape, e);
    float *h = NULL;
    if (cls && !rc) { /* modules_to_save: the head, whole */
        h = ft_xmalloc(ft_nbytes(&a->m->w.score));
        rc = model_param_get(a->m, &a->m->w.score, h, e);
        if (!rc) rc = st_writer_write(w, LORA_SCORE_KEY, h, e);
    }
    for (size_t k = 0; k < n && !rc; k++) {
        if (!a->A[k].data) continue;
        const ft_tensor *t[3] = {&a->A[k], &a->B[k], &a->mag[k]};
        for (int j = 0; j < 3 && !rc; j++) {
            if (!t[j]->data) continue;
            h = ft_xrealloc(h, ft_nbytes(t[j]));
            a->b->download(a->b, h, t[j]->data, ft_nbytes(t[j]));
            lora_key(key, sizeof key, (int)(k / FT_LIN_COUNT), (ft_linear)(k % FT_LIN_COUNT), j == 0 ? "A" : j == 1 ? "B" : "M");
            rc = st_writer_write(w, key, h, e);
        }
    }
    free(h);
    if (rc) {
        st_writer_abort(w);
        return rc;
    }
    return st_writer_finish(w, e);
}

int lora_read_config(const char *dir, lora_cfg *out, ft_error *e) {
    memset(out, 0, sizeof *out);
    char *path = ft_path_join(dir, "adapter_config.json"), *text = NULL;
    int rc = ft_read_file(path, &text, NULL, e);
    cJSON *j = rc ? NULL : cJSON_Parse(text);
    free(text);
    if (!rc && !cJSON_IsObject(j)) rc = ft_fail(e, FT_EINPUT, "%s: not a JSON object", path);
    const cJSON *v;
    if (!rc) {
        v = cJSON_GetObjectItem(j, "peft_type");
        if (!cJSON_IsString(v))
            rc = ft_fail(e, FT_EINPUT, "%s: missing \"peft_type\" (expected \"LORA\")", path);
        else if (strcmp(v->valuestring, "LORA") != 0)
            rc = ft_fail(e, FT_EINPUT, "%s: peft_type \"%s\" is not supported (only \"LORA\")", path, v->valuestring);
    }
    out->r = 8;
    out->alpha = 8;
    if (!rc && (v = cJSON_GetObjectItem(j, "r")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
            rc = ft_fail(e, FT_EINPUT, "%s: \"r\" must be an integer", path);
        else
            out->r = v->valueint;
    }
    if (!rc && (v = cJSON_GetObjectItem(j, "lora_alpha")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v)) rc = ft_fail(e, FT_EINPUT, "%s: \"lora_alpha\" must be a number", path);
        else out->alpha = (float)v->valuedouble;
    }
    if (!rc && (v = cJSON_GetObjectItem(j, "lora_dropout")) && cJSON_IsNumber(v)) out->dropout = (float)v->valuedouble;
    if (!rc && (v = cJSON_GetObjectItem(j, "use_rslora"))) out->use_rslora = cJSON_IsTrue(v);
    if (!rc && (v = cJSON_GetObjectItem(j, "use_dora"))) out->use_dora = cJSON_IsTrue(v);
    if (!rc && cJSON_IsTrue(cJSON_GetObjectItem(j, "fan_in_fan_out")))
        rc = ft_fail(e, FT_EINPUT, "%s: fan_in_fan_out = true is for GPT-2 style Conv1D layers, not Llama/Mistral", path);
    if (!rc && (v = cJSON_GetObjectItem(j, "bias")) && cJSON_IsString(v) && strcmp(v->valuestring, "none") != 0)
        rc = ft_fail(e, FT_EINPUT, "%s: bias \"%s\" is not supported (only \"none\")", path, v->valuestring);
    const cJSON *rp = cJSON_GetObjectItem(j, "rank_pattern"), *ap = cJSON_GetObjectItem(j, "alpha_pattern");
    if (!rc && ((cJSON_IsObject(rp) && rp->child) || (cJSON_IsObject(ap) && ap->child)))
        rc = ft_fail(e, FT_EINPUT, "%s: rank_pattern / alpha_pattern are not supported", path);
    if (!rc) {
        v = cJSON_GetObjectItem(j, "target_modules");
        if (!v || cJSON_IsNull(v))
            rc = ft_fail(e, FT_EINPUT, "%s: missing \"target_modules\"", path);
        else
            rc = parse_targets_json(v, out, path, e);
    }
    if (!rc && (v = cJSON_GetObjectItem(j, "layers_to_transform")) && !cJSON_IsNull(v)) {
        if (cJSON_IsNumber(v)) {
            out->layers = ft_xmalloc(sizeof(int));
            out->layers[0] = v->valueint;
            out->n_layers = 1;
        } else if (cJSON_IsArray(v)) {
            out->n_layers = cJSON_GetArraySize(v);
            out->layers = ft_xmalloc((size_t)(out->n_layers + 1) * sizeof(int));
            int i = 0;
            const cJSON *it;
            cJSON_ArrayForEach(it, v) out->layers[i++] = it->valueint;
        } else {
            rc = ft_fail(e, FT_EINPUT, "%s: layers_to_transform must be an integer or a list of integers", path);
        }
    }
    if (!rc) rc = lora_check_cfg(out, path, e);
    cJSON_Delete(j);
    free(path);
    if (rc) lora_cfg_free(out);
    return rc;
}

int lora_load(const char *dir, ft_model *m, lora_adapter **out, ft_error *e) {
    lora_cfg cfg;
    int rc = lora_read_config(dir, &cfg, e);
    if (rc) return rc;
    for (int i = 0; i < cfg.n_layers && !rc; i++)
        if (cfg.layers[i] < 0 || cfg.layers[i] >= m->cfg.num_layers)
            rc = ft_fail(e, FT_EINPUT, "%s/adapter_config.json: layers_to_transform has layer %d; the base has %d layers",
                         dir, cfg.layers[i], m->cfg.num_layers);
    if (rc) {
        lora_cfg_free(&cfg);
        return rc;
    }
    lora_adapter *a = adapter_new(m, &cfg);
    lora_cfg_free(&cfg);
    rc = adapter_alloc(a, m, e);
    char *path = ft_path_join(dir, "adapter_model.safetensors");
    st_file *f = NULL;
    if (!rc) rc = st_open(path, &f, e);
    /* every tensor of the file must be an A or B of an adapted linear, with the base's shapes */
    for (size_t i = 0; !rc && i < st_count(f); i++) {
        const st_tensor_info *t = st_at(f, i);
        int layer = -1, found = 0;
        char mod[64] = "", ab = 0;
        const char *pre = "base_model.model.model.layers.";
        if (strncmp(t->name, pre, strlen(pre)) == 0) {
            char *endp;
            long lv = strtol(t->name + strlen(pre), &endp, 10);
            size_t L = strlen(endp);
            if (*endp == '.' && L > 15 && L - 15 < sizeof mod &&
                (strcmp(endp + L - 14, ".lora_A.weight") == 0 || strcmp(endp + L - 14, ".lora_B.weight") == 0)) {
                layer = lv > 100000 ? 100000 : (int)lv;
                ab = endp[L - 8];
                memcpy(mod, endp + 1, L - 15);
                mod[L - 15] = 0;
            } else if (*endp == '.' && L > 23 && L - 23 < sizeof mod &&
                       strcmp(endp + L - 22, ".lora_magnitude_vector") == 0) { /* DoRA */
                layer = lv > 100000 ? 100000 : (int)lv;
                ab = 'M';
                memcpy(mod, endp + 1, L - 23);
                mod[L - 23] = 0;
            }
        }
        int w = ab ? target_index(mod) : -1;
        if (strcmp(t->name, LORA_SCORE_KEY) == 0) { /* a SEQ_CLS adapter's head */
            ft_tensor *sc = &m->w.score;
            if (m->cfg.num_labels <= 0)
                rc = ft_fail(e, FT_EINPUT,
                             "%s: tensor %s is a sequence-classification head (task_type SEQ_CLS); load the base as a "
                             "classifier",
                             path, t->name);
            else if (t->ndim != 2 || t->shape[0] != sc->shape[0] || t->shape[1] != sc->shape[1])
                rc = ft_fail(e, FT_EINPUT, "%s: tensor %s has shape [%lld, %lld] but the classifier needs [%lld, %lld]",
                             path, t->name, (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0),
                             (long long)sc->shape[0], (long long)sc->shape[1]);
            float *h = rc ? NULL : ft_xmalloc(ft_nbytes(sc));
            if (!rc) rc = st_read_f32(t, h, (size_t)ft_numel(sc), e);
            if (!rc) rc = model_param_set(m, sc, h, e);
            free(h);
        } else if (w >= 0 && layer >= 0 && layer < a->num_layers && (ab == 'A' || ab == 'B' || ab == 'M')) {
            size_t k = (size_t)layer * FT_LIN_COUNT + w;
            ft_tensor *dst = ab == 'A' ? &a->A[k] : ab == 'B' ? &a->B[k] : &a->mag[k];
            if (ab == 'M' && !a->cfg.use_dora)
                rc = ft_fail(e, FT_EINPUT,
                             "%s: tensor %s is a DoRA magnitude but adapter_config.json does not say use_dora: true",
                             path, t->name);
            else if (!dst->data)
                rc = ft_fail(e, FT_EINPUT,
                             "%s: tensor %s adapts layer %d %s, which adapter_config.json's target_modules / "
                             "layers_to_transform do not select",
                             path, t->name, layer, SHORT[w]);
            else if (t->ndim != dst->ndim || t->shape[0] != dst->shape[0] ||
                     (dst->ndim == 2 && t->shape[1] != dst->shape[1])) {
                char s1[64], s2[64];
                ft_tensor tt = ft_tensor_make(NULL, t->dtype, FT_DEV_CPU, t->ndim, t->shape);
                rc = ft_fail(e, FT_EINPUT, "%s: tensor %s has shape %s but the base model needs %s", path, t->name,
                             ft_shape_str(&tt, s1, sizeof s1), ft_shape_str(dst, s2, sizeof s2));
            } else {
                size_t cnt = (size_t)ft_numel(dst);
                float *h = malloc(cnt * sizeof(float));
                if (!h) rc = ft_fail(e, FT_ENOMEM, "out of host memory reading %s", t->name);
                if (!rc) rc = st_read_f32(t, h, cnt, e);
                if (!rc) a->b->upload(a->b, dst->data, h, cnt * sizeof(float));
                free(h);
                found = 1;
            }
        } else if (layer >= a->num_layers) {
            rc = ft_fail(e, FT_EINPUT, "%s: tensor %s is for layer %d but the base model has %d layers", path,
                         t->name, layer, a->num_layers);
        } else {
            rc = ft_fail(e, FT_EINPUT,
                         "%s: tensor %s is not a LoRA A/B matrix or DoRA magnitude of a Llama/Mistral linear layer "
                         "(biases and modules_to_save are not supported)",
                         path, t->name);
        }
        (void)found;
    }
    /* and every adapted linear must have both matrices */
    char key[160];
    for (size_t k = 0; !rc && k < (size_t)a->num_layers * FT_LIN_COUNT; k++) {
        if (!a->A[k].data) continue;
        for (int j = 0; j < (a->cfg.use_dora ? 3 : 2) && !rc; j++) {
            lora_key(key, sizeof key, (int)(k / FT_LIN_COUNT), (ft_linear)(k % FT_LIN_COUNT),
                     j == 0 ? "A" : j == 1 ? "B" : "M");
            if (!st_find(f, key))
                rc = ft_fail(e, FT_EINPUT, "%s: missing tensor %s (adapter_config.json targets it%s)", path, key,
                             j == 2 ? " with use_dora: true, so DoRA needs its magnitude vector" : "");
        }
    }
    if (f) st_close(f);
    free(path);
    if (rc) {
        lora_free(a);
        return rc;
    }
    *out = a;
    return FT_OK;
}

/* ---------- QLoRA base ---------- */

/* absmax of one bitsandbytes 4-bit tensor ("<name>.absmax" etc.), fp32; checks the quant state. */
static int read_bnb4(const st_model *st, const char *wname, int64_t rows, int64_t cols, uint8_t **packed,
                     float **absmax, const char *dir, ft_error *e) {
    char k[256];
    int64_t n = rows * cols, nb = (n + NF4_BLOCK - 1) / NF4_BLOCK;
    const st_tensor_info *w = st_model_find(st, wname), *am, *qm, *qs;
    if (w->dtype != FT_U8 || (int64_t)w->nbytes != (n + 1) / 2)
        return ft_fail(e, FT_EINPUT, "%s: 4-bit tensor %s has %zu bytes of %s; a [%lld, %lld] NF4 weight needs %lld U8",
                       dir, wname, w->nbytes, ft_dtype_name(w->dtype), (long long)rows, (long long)cols,
                       (long long)((n + 1) / 2));
    snprintf(k, sizeof k, "%s.quant_state.bitsandbytes__nf4", wname);
    if (!(qs = st_model_find(st, k)))
        return ft_fail(e, FT_EINPUT, "%s: %s is U8 but %s is missing (only NF4 4-bit checkpoints are supported)", dir,
                       wname, k);
    char *js = ft_xmalloc(qs->nbytes + 1);
    memcpy(js, qs->data, qs->nbytes);
    js[qs->nbytes] = 0;
    cJSON *j = cJSON_Parse(js);
    free(js);
    const cJSON *bs = cJSON_GetObjectItem(j, "blocksize"), *sh = cJSON_GetObjectItem(j, "shape"),
                *qt = cJSON_GetObjectItem(j, "quant_type"), *off = cJSON_GetObjectItem(j, "nested_offset");
    int rc = FT_OK;
    if (!cJSON_IsString(qt) || strcmp(qt->valuestring, "nf4") != 0 || !cJSON_IsNumber(bs) ||
        bs->valueint != NF4_BLOCK || !cJSON_IsArray(sh) || cJSON_GetArraySize(sh) != 2 ||
        cJSON_GetArrayItem(sh, 0)->valuedouble != (double)rows || cJSON_GetArrayItem(sh, 1)->valuedouble != (double)cols)
        rc = ft_fail(e, FT_EINPUT,
                     "%s: %s: quant state must say quant_type nf4, blocksize 64 and shape [%lld, %lld] (the config's)",
                     dir, k, (long long)rows, (long long)cols);
    snprintf(k, sizeof k, "%s.quant_map", wname);
    if (!rc && (!(qm = st_model_find(st, k)) || qm->dtype != FT_F32 || qm->nbytes != 64 ||
                memcmp(qm->data, NF4_CODE, 64) != 0))
        rc = ft_fail(e, FT_EINPUT, "%s: %s missing or not the NF4 code values", dir, k);
    snprintf(k, sizeof k, "%s.absmax", wname);
    if (!rc && !(am = st_model_find(st, k))) rc = ft_fail(e, FT_EINPUT, "%s: missing %s", dir, k);
    *absmax = rc ? NULL : ft_xmalloc((size_t)nb * sizeof(float));
    if (!rc && am->dtype == FT_U8) { /* double quantization */
        const st_tensor_info *na, *nq;
        int64_t nn = (nb + NF4_NESTED_BLOCK - 1) / NF4_NESTED_BLOCK;
        snprintf(k, sizeof k, "%s.nested_absmax", wname);
        na = st_model_find(st, k);
        snprintf(k, sizeof k, "%s.nested_quant_map", wname);
        nq = st_model_find(st, k);
        if ((int64_t)am->nbytes != nb || !na || na->dtype != FT_F32 || (int64_t)na->nbytes != nn * 4 || !nq ||
            nq->dtype != FT_F32 || nq->nbytes != 1024 || !cJSON_IsNumber(off))
            rc = ft_fail(e, FT_EINPUT,
                         "%s: %s: inconsistent double-quantized state (need absmax U8 [%lld], nested_absmax F32 [%lld], "
                         "nested_quant_map F32 [256], nested_offset)",
                         dir, wname, (long long)nb, (long long)nn);
        else {
            const uint8_t *q = am->data;
            const float *nest = na->data, *code = nq->data;
            float o = (float)off->valuedouble;
            for (int64_t i = 0; i < nb; i++) (*absmax)[i] = code[q[i]] * nest[i / NF4_NESTED_BLOCK] + o;
        }
    } else if (!rc) {
        if (am->dtype != FT_F32 || (int64_t)am->nbytes != nb * 4)
            rc = ft_fail(e, FT_EINPUT, "%s: %s must be F32 [%lld] (or U8 with nested state)", dir, k, (long long)nb);
        else
            memcpy(*absmax, am->data, (size_t)nb * 4);
    }
    cJSON_Delete(j);
    if (!rc) {
        *packed = ft_xmalloc((size_t)(n + 1) / 2);
        memcpy(*packed, w->data, (size_t)(n + 1) / 2);
    } else {
        free(*absmax);
        *absmax = NULL;
    }
    return rc;
}

int lora_quantize_base(lora_adapter *a, ft_model *m, const char *model_dir, ft_error *e) {
    st_model *st = NULL;
    int rc = st_model_open(model_dir, &st, e);
    if (rc) return rc;
    size_t n = (size_t)a->num_layers * FT_LIN_COUNT;
    a->qpacked = ft_xcalloc(n, sizeof *a->qpacked);
    a->qabsmax = ft_xcalloc(n, sizeof *a->qabsmax);
    int64_t biggest = 0;
    float *h = NULL;
    char name[160];
    for (size_t k = 0; k < n && !rc; k++) {
        int l = (int)(k / FT_LIN_COUNT);
        ft_linear which = (ft_linear)(k % FT_LIN_COUNT);
        int64_t rows, cols;
        lora_linear_shape(&m->cfg, which, &rows, &cols);
        if (rows * cols > biggest) biggest = rows * cols;
        snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, FT_LINEAR_NAMES[which]);
        const st_tensor_info *t = st_model_find(st, name);
        uint8_t *packed = NULL;
        float *absmax = NULL;
        if (!t) {
            rc = ft_fail(e, FT_EINPUT, "%s: missing tensor %s", model_dir, name);
            break;
        }
        if (t->dtype == FT_U8) {
            rc = read_bnb4(st, name, rows, cols, &packed, &absmax, model_dir, e);
            if (!rc) { /* a non-finite block scale makes its whole block non-finite */
                int64_t nb = (rows * cols + NF4_BLOCK - 1) / NF4_BLOCK;
                char an[192];
                snprintf(an, sizeof an, "%s.absmax", name);
                model_note_nonfinite(&m->nonfinite, an, model_count_nonfinite(absmax, (size_t)nb), nb);
            }
        } else {
            nf4_weight q;
            h = ft_xrealloc(h, (size_t)(rows * cols) * sizeof(float));
            if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
                rc = ft_fail(e, FT_EINPUT, "%s: tensor %s should be [%lld, %lld]", model_dir, name, (long long)rows,
                             (long long)cols);
            if (!rc) rc = st_read_f32(t, h, (size_t)(rows * cols), e);
            if (!rc) model_note_nonfinite(&m->nonfinite, name, model_count_nonfinite(h, (size_t)(rows * cols)), rows * cols);
            if (!rc) rc = nf4_weight_quantize(h, rows, cols, &q, e);
            if (!rc) {
                packed = q.packed;
                absmax = q.absmax;
                q.packed = NULL;
                q.absmax = NULL;
                nf4_weight_free(&q);
            }
        }
        int64_t nbytes = (rows * cols + 1) / 2, nb = (rows * cols + NF4_BLOCK - 1) / NF4_BLOCK;
        if (!rc) rc = ft_backend_tensor(a->b, FT_U8, 1, &nbytes, &a->qpacked[k], e);
        if (!rc) rc = ft_backend_tensor(a->b, FT_F32, 1, &nb, &a->qabsmax[k], e);
        if (!rc) {
            a->b->upload(a->b, a->qpacked[k].data, packed, (size_t)nbytes);
            a->b->upload(a->b, a->qabsmax[k].data, absmax, (size_t)nb * 4);
        }
        free(packed);
        free(absmax);
    }
    free(h);
    st_model_close(st);
    /* in the dtype the model computes in now (a 16-bit model loaded by model_load_frozen): no fp32 buffer
     * that the first forward would trade for a 16-bit one while the activations are live */
    if (!rc) rc = ft_backend_tensor(a->b, m->compute, 1, &biggest, &a->wscratch, e);
    a->wscratch_n = biggest;
    a->wscratch_dt = m->compute;
    if (!rc && a->mag_pending) rc = dora_init_magnitudes(a, m, e);
    return rc;
}

int lora_bnb4_dequant(const st_model *st, const char *wname, int64_t rows, int64_t cols, float *out,
                      const char *where, ft_error *e) {
    uint8_t *packed = NULL;
    float *absmax = NULL;
    int rc = read_bnb4(st, wname, rows, cols, &packed, &absmax, where, e);
    if (!rc) nf4_dequantize(packed, absmax, rows * cols, NF4_BLOCK, out);
    free(packed);
    free(absmax);
    return rc;
}

int lora_is_bnb4_aux(const char *name) {
    static const char *const SUFFIX[] = {".weight.absmax", ".weight.quant_map", ".weight.nested_absmax",
                                         ".weight.nested_quant_map", ".weight.quant_state.bitsandbytes__nf4"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof SUFFIX / sizeof SUFFIX[0]; i++) {
        size_t k = strlen(SUFFIX[i]);
        if (n > k && strcmp(name + n - k, SUFFIX[i]) == 0) return 1;
    }
    return 0;
}
