/* CPU backend: optimizer ops (AdamW, sum of squares, scale). */
#include <math.h>

#include "finetune/backend/cpu/backend_cpu.h"

void cpu_adamw(ft_backend *b, ft_tensor *w, const ft_tensor *g, ft_tensor *m, ft_tensor *v, const ft_adamw_args *a) {
    (void)b;
    cpu_need_f32("adamw", "w", w);
    cpu_need_f32("adamw", "g", g);
    cpu_need_f32("adamw", "m", m);
    cpu_need_f32("adamw", "v", v);
    int64_t n = ft_numel(w);
    if (ft_numel(g) != n || ft_numel(m) != n || ft_numel(v) != n)
        cpu_contract("adamw", "w, g, m, v must have the same number of elements");
    float *W = w->data, *M = m->data, *V = v->data;
    const float *G = g->data;
    /* the scalar factors are computed as PyTorch computes them: in double, then used in fp32 ops */
    double bc1 = 1.0 - pow((double)a->beta1, a->step), bc2 = 1.0 - pow((double)a->beta2, a->step);
    float step_size = (float)(a->lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float decay = 1.0f - a->lr * a->weight_decay, w1 = 1.0f - a->beta1, b2 = a->beta2, w2 = 1.0f - a->beta2;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float gi = G[i] * a->grad_scale;
        float wi = W[i] * decay;
        float mi = M[i] + w1 * (gi - M[i]); /* torch.lerp with weight < 0.5 */
        float vi = V[i] * b2 + w2 * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + a->eps;
        W[i] = wi - step_size * (mi / denom);
        M[i] = mi;
        V[i] = vi;
    }
}

double cpu_sumsq(ft_backend *b, const ft_tensor *x) {
    (void)b;
    cpu_need_f32("sumsq", "x", x);
    int64_t n = ft_numel(x);
    const float *X = x->data;
    /* fixed blocks summed in order: the same result for any thread count */
    enum { BLOCK = 4096 };
    int64_t nb = (n + BLOCK - 1) / BLOCK;
    double *part = cpu_scratch((size_t)(nb ? nb : 1) * sizeof(double));
    if (!part) cpu_contract("sumsq", "out of host memory");
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < nb; k++) {
        double s = 0;
        int64_t end = (k + 1) * BLOCK < n ? (k + 1) * BLOCK : n;
        for (int64_t i = k * BLOCK; i < end; i++) s += (double)X[i] * X[i];
        part[k] = s;
    }
    double total = 0;
    for (int64_t k = 0; k < nb; k++) total += part[k];
    cpu_scratch_free(part);
    return total;
}

double cpu_sumsq_many(ft_backend *b, int n, const ft_tensor *const *x) {
    double total = 0;
    for (int i = 0; i < n; i++) total += cpu_sumsq(b, x[i]);
    return total;
}

void cpu_scale(ft_backend *b, ft_tensor *x, float alpha) {
    (void)b;
    cpu_need_f32("scale", "x", x);
    int64_t n = ft_numel(x);
    float *X = x->data;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) X[i] *= alpha;
}
