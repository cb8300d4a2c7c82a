#include "finetune/train/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ft_optim_cfg optim_defaults(void) {
    return (ft_optim_cfg){.lr = 1e-5f,
                          .beta1 = 0.9f,
                          .beta2 = 0.999f,
                          .eps = 1e-8f,
                          .weight_decay = 0.0f,
                          .grad_clip = 1.0f,
                          .schedule = FT_SCHED_COSINE,
                          .warmup_steps = 0,
                          .total_steps = 1,
                          .min_lr_ratio = 0.0f};
}

int optim_parse_schedule(const char *name, ft_schedule *out) {
    static const char *NAMES[] = {"constant", "linear", "cosine"};
    for (int i = 0; i < 3; i++)
        if (strcmp(name, NAMES[i]) == 0) {
            *out = (ft_schedule)i;
            return 0;
        }
    return -1;
}

int optim_create(ft_model *m, ft_weights *g, const ft_optim_cfg *cfg, ft_optim **out, ft_error *e) {
    return optim_create_ex(m, g, cfg, 0, out, e);
}

int optim_create_ex(ft_model *m, ft_weights *g, const ft_optim_cfg *cfg, int allow_empty, ft_optim **out,
                    ft_error *e) {
    ft_optim *o = ft_xcalloc(1, sizeof *o);
    o->cfg = *cfg;
    o->b = m->b;
    int nw = 0, ng = 0, rc = FT_OK;
    ft_param *w = model_params(m, &nw), *gp = weights_params(&m->cfg, g, &ng);
    o->w = ft_xcalloc((size_t)nw, sizeof *o->w);
    o->g = ft_xcalloc((size_t)nw, sizeof *o->g);
    o->m = ft_xcalloc((size_t)nw, sizeof *o->m);
    o->v = ft_xcalloc((size_t)nw, sizeof *o->v);
    o->decay = ft_xcalloc((size_t)nw, 1);
    o->cap = nw;
    for (int i = 0; i < nw && !rc; i++) {
        if (!gp[i].t->data) continue;
        int k = o->n++;
        o->w[k] = w[i];
        o->g[k] = gp[i];
        o->decay[k] = w[i].t->ndim >= 2;
        rc = ft_backend_tensor(m->b, FT_F32, w[i].t->ndim, w[i].t->shape, &o->m[k], e);
        if (!rc) rc = ft_backend_tensor(m->b, FT_F32, w[i].t->ndim, w[i].t->shape, &o->v[k], e);
        if (!rc) {
            m->b->zero(m->b, o->m[k].data, ft_nbytes(&o->m[k]));
            m->b->zero(m->b, o->v[k].data, ft_nbytes(&o->v[k]));
        }
    }
    free(w);
    free(gp);
    if (!rc && o->n == 0 && !allow_empty) rc = ft_fail(e, FT_EINPUT, "nothing to train: every parameter is frozen");
    if (rc) {
        optim_free(o);
        return rc;
    }
    *out = o;
    return FT_OK;
}

int optim_add_param(ft_optim *o, const char *name, ft_tensor *w, ft_tensor *g, ft_error *e) {
    if (w->dtype != FT_F32 || g->dtype != FT_F32 || ft_numel(w) != ft_numel(g) || !w->data || !g->data)
        return ft_fail(e, FT_EINTERNAL, "optim_add_param %s: weight and gradient must be allocated fp32 of one shape",
                       name);
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 16;
        o->w = ft_xrealloc(o->w, (size_t)o->cap * sizeof *o->w);
        o->g = ft_xrealloc(o->g, (size_t)o->cap * sizeof *o->g);
        o->m = ft_xrealloc(o->m, (size_t)o->cap * sizeof *o->m);
        o->v = ft_xrealloc(o->v, (size_t)o->cap * sizeof *o->v);
        o->decay = ft_xrealloc(o->decay, (size_t)o->cap);
    }
    int k = o->n;
    memset(&o->w[k], 0, sizeof o->w[k]);
    snprintf(o->w[k].name, sizeof o->w[k].name, "%s", name);
    o->w[k].t = w;
    o->g[k] = o->w[k];
    o->g[k].t = g;
    o->decay[k] = w->ndim >= 2;
    int rc = ft_backend_tensor(o->b, FT_F32, w->ndim, w->shape, &o->m[k], e);
    if (!rc) rc = ft_backend_tensor(o->b, FT_F32, w->ndim, w->shape, &o->v[k], e);
    if (rc) {
        if (o->m[k].data) o->b->free(o->b, o->m[k].data);
        return rc;
    }
    o->b->zero(o->b, o->m[k].data, ft_nbytes(&o->m[k]));
    o->b->zero(o->b, o->v[k].data, ft_nbytes(&o->v[k]));
    o->n++;
    return FT_OK;
}

void optim_free(ft_optim *o) {
    if (!o) return;
    for (int i = 0; i < o->n; i++) {
        if (o->m[i].data) o->b->free(o->b, o->m[i].data);
        if (o->v[i].data) o->b->free(o->b, o->v[i].data);
    }
    free(o->w);
    free(o->g);
    free(o->m);
    free(o->v);
    free(o->decay);
    free(o);
}

float optim_lr_at(const ft_optim_cfg *c, int step) {
    if (c->warmup_steps > 0 && step < c->warmup_steps) return c->lr * (float)step / (float)c->warmup_steps;
    if (c->schedule == FT_SCHED_CONSTANT) return c->lr;
    int span = c->total_steps - c->warmup_steps;
    double progress = span > 0 ? (double)(step - c->warmup_steps) / span : 1.0;
    if (progress > 1) progress = 1;
    double f = c->schedule == FT_SCHED_LINEAR ? 1.0 - progress : 0.5 * (1.0 + cos(3.14159265358979323846 * progress));
    if (f < 0) f = 0;
    return (float)(c->lr * (c->min_lr_ratio + (1.0 - c->min_lr_ratio) * f));
}

double optim_grad_norm(ft_optim *o, float grad_scale) {
    /* one device reduction and one wait for all the gradients (the same double as summing sumsq per tensor) */
    const ft_tensor **g = ft_xmalloc((size_t)(o->n ? o->n : 1) * sizeof *g);
    for (int i = 0; i < o->n; i++) g[i] = o->g[i].t;
    double total = o->b->sumsq_many(o->b, o->n, g);
    free(g);
    return sqrt(total) * fabs((double)grad_scale);
}

void optim_step(ft_optim *o, float grad_scale, ft_step_info *info) {
    double norm = optim_grad_norm(o, grad_scale);
    info->grad_norm = norm;
    info->lr = optim_lr_at(&o->cfg, o->step);
    info->skipped = !isfinite(norm);
    if (info->skipped) return;
    float scale = grad_scale;
    if (o->cfg.grad_clip > 0) {
        /* clip_grad_norm_: coefficient computed in fp32 and capped at 1 */
        float coef = o->cfg.grad_clip / (float)(norm + 1e-6);
        if (coef < 1.0f) scale *= coef;
    }
    o->step++;
    for (int i = 0; i < o->n; i++) {
        if (!o->m[i].data) continue; /* ZeRO-1: another rank updates it */
        ft_adamw_args a = {.lr = info->lr,
                           .beta1 = o->cfg.beta1,
                           .beta2 = o->cfg.beta2,
                           .eps = o->cfg.eps,
                           .weight_decay = o->decay[i] ? o->cfg.weight_decay : 0.0f,
                           .grad_scale = scale,
                           .step = o->step};
        o->b->adamw(o->b, o->w[i].t, o->g[i].t, &o->m[i], &o->v[i], &a);
    }
}
