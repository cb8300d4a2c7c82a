/* CPU backend: the three small DoRA ops (row norms of W + sBA, per-column scaling, per-column dot products). */
#include <math.h>

#include "finetune/backend/cpu/backend_cpu.h"

void cpu_row_norm(ft_backend *b, const ft_tensor *x, ft_tensor *out) {
    (void)b;
    const char *op = "row_norm";
    cpu_need_f32(op, "x", x);
    cpu_need_f32(op, "out", out);
    if (x->ndim != 2 || ft_numel(out) != x->shape[0])
        cpu_contract(op, "x must be [R,C] and out [R] (out has %lld elements)", (long long)ft_numel(out));
    int64_t R = x->shape[0], C = x->shape[1];
    const float *xi = x->data;
    float *o = out->data;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < R; i++) {
        double s = 0;
        for (int64_t j = 0; j < C; j++) s += (double)xi[i * C + j] * xi[i * C + j];
        o[i] = (float)sqrt(s);
    }
}

static int64_t cols_of(const char *op, const ft_tensor *x, const ft_tensor *v, const char *vname) {
    if (x->ndim != 2) cpu_contract(op, "x must be 2-D");
    cpu_need_f32(op, vname, v);
    if (ft_numel(v) != x->shape[1])
        cpu_contract(op, "%s has %lld elements, x has %lld columns", vname, (long long)ft_numel(v),
                     (long long)x->shape[1]);
    return x->shape[1];
}

void cpu_col_scale(ft_backend *b, const ft_tensor *x, const ft_tensor *num, const ft_tensor *den, ft_tensor *out) {
    (void)b;
    const char *op = "col_scale";
    cpu_need_f32(op, "x", x);
    cpu_need_f32(op, "out", out);
    int64_t N = cols_of(op, x, num, "num");
    cols_of(op, x, den, "den");
    if (ft_numel(out) != ft_numel(x)) cpu_contract(op, "x and out differ in size");
    int64_t T = x->shape[0];
    const float *xi = x->data, *nu = num->data, *de = den->data;
    float *o = out->data;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < N; j++) o[t * N + j] = xi[t * N + j] * (nu[j] / de[j]);
}

void cpu_col_dot(ft_backend *b, const ft_tensor *a, const ft_tensor *x, const ft_tensor *den, ft_tensor *out) {
    (void)b;
    const char *op = "col_dot";
    cpu_need_f32(op, "a", a);
    cpu_need_f32(op, "x", x);
    int64_t N = cols_of(op, x, den, "den");
    cols_of(op, x, out, "out");
    if (ft_numel(a) != ft_numel(x)) cpu_contract(op, "a and x differ in size");
    int64_t T = x->shape[0];
    const float *ai = a->data, *xi = x->data, *de = den->data;
    float *o = out->data;
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < N; j++) {
        double s = 0;
        for (int64_t t = 0; t < T; t++) s += (double)ai[t * N + j] * xi[t * N + j];
        o[j] += (float)(s / de[j]);
    }
}
