#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rope.h"
#include "safetensors.h"

/* ---------- parameters ---------- */

static void set_param(ft_param *p, int *n, ft_tensor *t, const char *fmt, int layer) {
    if (!t->data && t->ndim == 0) return; /* absent optional tensor (bias) */
    snprintf(p[*n].name, sizeof p[*n].name, fmt, layer);
    p[*n].t = t;
    (*n)++;
}

ft_param *model_params(ft_model *m, int *n) {
    const ft_config *c = &m->cfg;
    ft_param *p = ft_xcalloc((size_t)c->num_layers * 12 + 3, sizeof *p);
    *n = 0;
    set_param(p, n, &m->embed, "model.embed_tokens.weight", 0);
    for (int l = 0; l < c->num_layers; l++) {
        ft_layer *L = &m->layers[l];
        set_param(p, n, &L->ln1, "model.layers.%d.input_layernorm.weight", l);
        set_param(p, n, &L->wq, "model.layers.%d.self_attn.q_proj.weight", l);
        set_param(p, n, &L->bq, "model.layers.%d.self_attn.q_proj.bias", l);
        set_param(p, n, &L->wk, "model.layers.%d.self_attn.k_proj.weight", l);
        set_param(p, n, &L->bk, "model.layers.%d.self_attn.k_proj.bias", l);
        set_param(p, n, &L->wv, "model.layers.%d.self_attn.v_proj.weight", l);
        set_param(p, n, &L->bv, "model.layers.%d.self_attn.v_proj.bias", l);
        set_param(p, n, &L->wo, "model.layers.%d.self_attn.o_proj.weight", l);
        set_param(p, n, &L->ln2, "model.layers.%d.post_attention_layernorm.weight", l);
        set_param(p, n, &L->wg, "model.layers.%d.mlp.gate_proj.weight", l);
        set_param(p, n, &L->wu, "model.layers.%d.mlp.up_proj.weight", l);
        set_param(p, n, &L->wd, "model.layers.%d.mlp.down_proj.weight", l);
    }
    set_param(p, n, &m->norm, "model.norm.weight", 0);
    if (!m->cfg.tie_word_embeddings) set_param(p, n, &m->lm_head, "lm_head.weight", 0);
    return p;
}

/* Give every parameter its shape (data still NULL). */
static void shape_params(ft_model *m) {
    const ft_config *c = &m->cfg;
    int64_t D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
    int64_t QD = (int64_t)c->num_heads * c->head_dim, KD = (int64_t)c->num_kv_heads * c->head_dim;
    ft_device dev = m->b->device;
    m->embed = ft_t2(NULL, FT_F32, dev, V, D);
    m->norm = ft_t1(NULL, FT_F32, dev, D);
    m->lm_head = ft_t2(NULL, FT_F32, dev, V, D);
    m->layers = ft_xcalloc((size_t)c->num_layers, sizeof *m->layers);
    for (int l = 0; l < c->num_layers; l++) {
        ft_layer *L = &m->layers[l];
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
    if (m->cfg.tie_word_embeddings) m->lm_head = m->embed;
    return FT_OK;
}

static ft_model *model_new(const ft_config *cfg, ft_backend *b) {
    ft_model *m = ft_xcalloc(1, sizeof *m);
    m->cfg = *cfg;
    m->b = b;
    arena_init(&m->arena, b);
    shape_params(m);
    return m;
}

static int load_tensor(ft_model *m, const st_model *st, const char *dir, const ft_param *p, float **host,
                       size_t *host_cap, ft_error *e) {
    const st_tensor_info *info = st_model_find(st, p->name);
    if (!info) return ft_fail(e, FT_EINPUT, "%s: tensor '%s' is missing from the checkpoint", dir, p->name);
    int same = info->ndim == p->t->ndim;
    for (int d = 0; same && d < info->ndim; d++) same = info->shape[d] == p->t->shape[d];
    if (!same) {
        char want[64], got[64];
        ft_tensor g = ft_tensor_make(NULL, info->dtype, FT_DEV_CPU, info->ndim, info->shape);
        return ft_fail(e, FT_EINPUT, "%s: tensor '%s' has shape %s, config.json implies %s", dir, p->name,
                       ft_shape_str(&g, got, sizeof got), ft_shape_str(p->t, want, sizeof want));
    }
    size_t n = (size_t)ft_numel(p->t);
    if (n > *host_cap) {
        free(*host);
        *host = malloc(n * sizeof(float));
        *host_cap = *host ? n : 0;
        if (!*host) return ft_fail(e, FT_ENOMEM, "out of host memory loading '%s'", p->name);
    }
    int rc = st_model_read_f32(st, p->name, *host, n, e);
    if (rc) return rc;
    m->b->upload(m->b, p->t->data, *host, n * sizeof(float));
    return FT_OK;
}

int model_load(const char *dir, ft_backend *b, ft_model **out, ft_error *e) {
    ft_config cfg;
    int rc = cfg_load(dir, &cfg, e);
    if (rc) return rc;
    st_model *st = NULL;
    rc = st_model_open(dir, &st, e);
    if (rc) return rc;
    ft_model *m = model_new(&cfg, b);
    int n = 0;
    ft_param *p = model_params(m, &n);
    float *host = NULL;
    size_t cap = 0;
    rc = alloc_params(m, p, n, e);
    for (int i = 0; i < n && !rc; i++) rc = load_tensor(m, st, dir, &p[i], &host, &cap, e);
    free(host);
    free(p);
    st_model_close(st);
    if (rc) {
        model_free(m);
        return rc;
    }
    *out = m;
    return FT_OK;
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
    char *path = ft_path_join(dir, "model.safetensors");
    st_writer *w = NULL;
    rc = st_writer_open(path, &w, e);
    if (!rc) rc = st_writer_metadata(w, "format", "pt", e);
    for (int i = 0; i < n && !rc; i++) rc = st_writer_declare(w, p[i].name, dtype, p[i].t->ndim, p[i].t->shape, e);
    float *host = NULL;
    void *conv = NULL;
    for (int i = 0; i < n && !rc; i++) {
        size_t cnt = (size_t)ft_numel(p[i].t);
        host = ft_xrealloc(host, cnt * sizeof(float));
        conv = ft_xrealloc(conv, cnt * ft_dtype_size(dtype));
        m->b->download(m->b, host, p[i].t->data, cnt * sizeof(float));
        convert_from_f32(host, conv, cnt, dtype);
        rc = st_writer_write(w, p[i].name, conv, e);
    }
    free(host);
    free(conv);
    if (w) {
        if (rc)
            st_writer_abort(w);
        else
            rc = st_writer_finish(w, e);
    }
    free(path);
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
    arena_free(&m->arena);
    free(m->layers);
    free(m);
}

/* ---------- forward ---------- */

/* Per-layer KV cache for generation: keys (after RoPE) and values of every past token. */
typedef struct kv_cache {
    ft_tensor *k, *v; /* [num_layers] each [cap, Hkv*Dh] */
    int cap, len;
} kv_cache;

/* Bytes of activations one forward of T tokens needs (with a KV cache of cap tokens, or none). */
static size_t forward_bytes(const ft_config *c, int64_t T, int with_logits) {
    int64_t D = c->hidden_size, F = c->intermediate_size;
    int64_t QD = (int64_t)c->num_heads * c->head_dim, KD = (int64_t)c->num_kv_heads * c->head_dim;
    int64_t floats = T * (3 * D + 2 * QD + 2 * KD + 3 * F) + T * 2 + T * c->head_dim / 2 + c->head_dim;
    if (with_logits) floats += c->vocab_size;
    int64_t ints = 4 * T;
    return (size_t)(floats * 4 + ints * 4) + 32 * 256; /* + alignment slack per tensor */
}

typedef struct fwd_inputs {
    int T;
    const int32_t *ids, *pos, *doc_start;
} fwd_inputs;

/* Run embedding + all layers + final norm over T tokens; leaves the normed hidden states in *h_out.
 * With a cache, new keys/values are appended at cache->len and attention sees the whole cache. */
static int run_decoder(ft_model *m, const fwd_inputs *in, kv_cache *cache, ft_tensor *h_out, ft_error *e) {
    const ft_config *c = &m->cfg;
    ft_backend *b = m->b;
    ft_arena *A = &m->arena;
    int64_t T = in->T, D = c->hidden_size, F = c->intermediate_size;
    int64_t Hq = c->num_heads, Hkv = c->num_kv_heads, Dh = c->head_dim;
    ft_tensor ids, pos, doc, x, h, q, k, v, att, tmp, g, u, invf;
    /* RoPE segments: one for the whole run, except with dynamic scaling, whose frequencies depend on each
     * sample's own length (as if each packed sample ran alone, which is what transformers computes). */
    int nseg = 1;
    if (c->rope_type == FT_ROPE_DYNAMIC)
        for (int64_t t = 1; t < in->T; t++) nseg += in->doc_start[t] != in->doc_start[t - 1];
    int rc = 0;
    int64_t s1[1] = {T}, sD[2] = {T, D}, sQ[3] = {T, Hq, Dh}, sK[3] = {T, Hkv, Dh}, sF[2] = {T, F},
            sI[2] = {nseg, Dh / 2};
    rc = rc ? rc : arena_tensor(A, FT_I32, 1, s1, &ids, e);
    rc = rc ? rc : arena_tensor(A, FT_I32, 1, s1, &pos, e);
    rc = rc ? rc : arena_tensor(A, FT_I32, 1, s1, &doc, e);
    rc = rc ? rc : arena_tensor(A, FT_F32, 2, sD, &x, e);
    rc = rc ? rc : arena_tensor(A, FT_F32, 2, sD, &h, e);
    rc = rc ? rc : arena_tensor(A, FT_F32, 2, sD, &tmp, e);
    rc = rc ? rc : arena_tensor(A, FT_F32, 3, sQ, &q, e);
    rc = rc ? rc : arena_tensor(A, FT_F32, 3, sQ, &att, e);
    rc = rc ? rc : arena_tensor(A, FT_F32, 3, sK, &k, e);
    rc = rc ? rc : arena_tensor(A, FT_F32, 3, sK, &v, e);
    rc = rc ? rc : arena_tensor(A, FT_F32, 2, sF, &g, e);
    rc = rc ? rc : arena_tensor(A, FT_F32, 2, sF, &u, e);
    rc = rc ? rc : arena_tensor(A, FT_F32, 2, sI, &invf, e);
    if (rc) return rc;

    for (int64_t t = 0; t < T; t++)
        if (in->ids[t] < 0 || in->ids[t] >= c->vocab_size)
            return ft_fail(e, FT_EINPUT, "token id %d at position %lld is outside the vocabulary (size %d)",
                           in->ids[t], (long long)t, c->vocab_size);
    /* seg_start[s]: first token of RoPE segment s; frequencies from the segment's largest position */
    int *seg_start = ft_xmalloc((size_t)(nseg + 1) * sizeof(int));
    float *inv_freq = ft_xmalloc((size_t)nseg * (size_t)(Dh / 2) * sizeof(float)), mscale = 1.0f;
    for (int s = 0, t = 0; s < nseg; s++) {
        seg_start[s] = t;
        int32_t max_pos = in->pos[t++];
        while (t < T && (nseg == 1 || in->doc_start[t] == in->doc_start[t - 1])) {
            if (in->pos[t] > max_pos) max_pos = in->pos[t];
            t++;
        }
        rope_inv_freq(c, (int64_t)max_pos + 1, inv_freq + (size_t)s * (Dh / 2), &mscale);
    }
    seg_start[nseg] = (int)T;
    b->upload(b, ids.data, in->ids, (size_t)T * 4);
    b->upload(b, pos.data, in->pos, (size_t)T * 4);
    b->upload(b, doc.data, in->doc_start, (size_t)T * 4);
    b->upload(b, invf.data, inv_freq, (size_t)nseg * (size_t)(Dh / 2) * 4);
    free(inv_freq);

    ft_attn_layout L = {.q_start = cache ? cache->len : 0,
                        .doc_start = doc.data,
                        .window = c->sliding_window,
                        .scale = 1.0f / sqrtf((float)Dh)};
    /* 2-D views of the [T, H, Dh] tensors for the GEMMs */
    ft_tensor q2 = ft_t2(q.data, FT_F32, b->device, T, Hq * Dh), att2 = ft_t2(att.data, FT_F32, b->device, T, Hq * Dh);
    ft_tensor k2 = ft_t2(k.data, FT_F32, b->device, T, Hkv * Dh), v2 = ft_t2(v.data, FT_F32, b->device, T, Hkv * Dh);

    b->embedding(b, &ids, &m->embed, &x);
    for (int l = 0; l < c->num_layers; l++) {
        ft_layer *W = &m->layers[l];
        b->rmsnorm(b, &x, &W->ln1, c->rms_norm_eps, &h, NULL);
        b->gemm(b, &h, 0, &W->wq, 1, &q2, 1.0f, 0.0f);
        b->gemm(b, &h, 0, &W->wk, 1, &k2, 1.0f, 0.0f);
        b->gemm(b, &h, 0, &W->wv, 1, &v2, 1.0f, 0.0f);
        if (W->bq.data) {
            b->add_bias(b, &q2, &W->bq);
            b->add_bias(b, &k2, &W->bk);
            b->add_bias(b, &v2, &W->bv);
        }
        for (int s = 0; s < nseg; s++) {
            int64_t t0 = seg_start[s], n = seg_start[s + 1] - t0;
            ft_tensor qs = ft_t3((float *)q.data + t0 * Hq * Dh, FT_F32, b->device, n, Hq, Dh);
            ft_tensor ks = ft_t3((float *)k.data + t0 * Hkv * Dh, FT_F32, b->device, n, Hkv, Dh);
            ft_tensor ps = ft_t1((int32_t *)pos.data + t0, FT_I32, b->device, n);
            ft_tensor fs = ft_t1((float *)invf.data + (size_t)s * (Dh / 2), FT_F32, b->device, Dh / 2);
            b->rope(b, &qs, &ps, &fs, mscale, 0);
            b->rope(b, &ks, &ps, &fs, mscale, 0);
        }
        const ft_tensor *kk = &k, *vv = &v;
        ft_tensor kc, vc;
        if (cache) {
            size_t row = (size_t)(Hkv * Dh) * sizeof(float), off = (size_t)cache->len * row;
            b->copy(b, (char *)cache->k[l].data + off, k.data, (size_t)T * row);
            b->copy(b, (char *)cache->v[l].data + off, v.data, (size_t)T * row);
            kc = ft_t3(cache->k[l].data, FT_F32, b->device, cache->len + T, Hkv, Dh);
            vc = ft_t3(cache->v[l].data, FT_F32, b->device, cache->len + T, Hkv, Dh);
            kk = &kc;
            vv = &vc;
        }
        b->attention(b, &q, kk, vv, &att, NULL, &L);
        b->gemm(b, &att2, 0, &W->wo, 1, &tmp, 1.0f, 0.0f);
        b->add(b, &x, &tmp, &x);
        b->rmsnorm(b, &x, &W->ln2, c->rms_norm_eps, &h, NULL);
        b->gemm(b, &h, 0, &W->wg, 1, &g, 1.0f, 0.0f);
        b->gemm(b, &h, 0, &W->wu, 1, &u, 1.0f, 0.0f);
        b->swiglu(b, &g, &u, &g);
        b->gemm(b, &g, 0, &W->wd, 1, &tmp, 1.0f, 0.0f);
        b->add(b, &x, &tmp, &x);
    }
    b->rmsnorm(b, &x, &m->norm, c->rms_norm_eps, &h, NULL);
    if (cache) cache->len += (int)T;
    free(seg_start);
    *h_out = h;
    return FT_OK;
}

int model_forward(ft_model *m, int T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start,
                  const int32_t *targets, float *logp, ft_error *e) {
    if (T <= 0) return FT_OK;
    int rc = arena_reserve(&m->arena, forward_bytes(&m->cfg, T, 0) + (size_t)T * 12 + 1024, e);
    if (rc) return rc;
    arena_reset(&m->arena);
    fwd_inputs in = {T, ids, pos, doc_start};
    ft_tensor h, tg, lp;
    int64_t s1[1] = {T};
    rc = run_decoder(m, &in, NULL, &h, e);
    if (!rc) rc = arena_tensor(&m->arena, FT_I32, 1, s1, &tg, e);
    if (!rc) rc = arena_tensor(&m->arena, FT_F32, 1, s1, &lp, e);
    if (rc) return rc;
    for (int t = 0; t < T; t++)
        if (targets[t] >= m->cfg.vocab_size)
            return ft_fail(e, FT_EINPUT, "target id %d at position %d is outside the vocabulary (size %d)", targets[t],
                           t, m->cfg.vocab_size);
    m->b->upload(m->b, tg.data, targets, (size_t)T * 4);
    m->b->token_logprobs(m->b, &h, &m->lm_head, &tg, &lp, NULL);
    m->b->download(m->b, logp, lp.data, (size_t)T * 4);
    return FT_OK;
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
        rc = ft_backend_tensor(b, FT_F32, 2, shape, &cache.k[l], e);
        if (!rc) rc = ft_backend_tensor(b, FT_F32, 2, shape, &cache.v[l], e);
    }
    if (!rc) rc = arena_reserve(&m->arena, forward_bytes(c, n_prompt, 1) + 4096, e);
    float *logits = ft_xmalloc((size_t)c->vocab_size * sizeof(float));
    int32_t *pos = ft_xmalloc((size_t)cap * 4), *doc = ft_xcalloc((size_t)cap, 4);
    for (int i = 0; i < cap; i++) pos[i] = i;
    ft_rng rng;
    ft_rng_seed(&rng, opts->seed);
    const int32_t *feed = prompt;
    int n_feed = n_prompt;
    int32_t last;
    while (!rc && *n_out < max_new) {
        arena_reset(&m->arena);
        fwd_inputs in = {n_feed, feed, pos + cache.len, doc};
        ft_tensor h, lg;
        int64_t sV[2] = {1, c->vocab_size};
        rc = run_decoder(m, &in, &cache, &h, e);
        if (!rc) rc = arena_tensor(&m->arena, FT_F32, 2, sV, &lg, e);
        if (rc) break;
        ft_tensor h_last = ft_t2((char *)h.data + (size_t)(n_feed - 1) * c->hidden_size * 4, FT_F32, b->device, 1,
                                 c->hidden_size);
        b->gemm(b, &h_last, 0, &m->lm_head, 1, &lg, 1.0f, 0.0f);
        b->download(b, logits, lg.data, (size_t)c->vocab_size * 4);
        last = sample_token(logits, c->vocab_size, opts, &rng);
        out[(*n_out)++] = last;
        if (on_token) on_token(last, ctx);
        if (opts->stop_at_eos && c->eos_token_id >= 0 && last == c->eos_token_id) break;
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
