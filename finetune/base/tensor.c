#include "finetune/base/tensor.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} DTYPES[FT_DTYPE_COUNT] = {
    [FT_F32] = {"F32", 4}, [FT_F16] = {"F16", 2}, [FT_BF16] = {"BF16", 2},
    [FT_F64] = {"F64", 8}, [FT_I64] = {"I64", 8}, [FT_I32] = {"I32", 4},
    [FT_I16] = {"I16", 2}, [FT_I8] = {"I8", 1},   [FT_U8] = {"U8", 1},
    [FT_BOOL] = {"BOOL", 1},
};

size_t ft_dtype_size(ft_dtype t) { return (unsigned)t < FT_DTYPE_COUNT ? DTYPES[t].size : 0; }

const char *ft_dtype_name(ft_dtype t) { return (unsigned)t < FT_DTYPE_COUNT ? DTYPES[t].name : "?"; }

int ft_dtype_from_name(const char *name, ft_dtype *out) {
    for (int i = 0; i < FT_DTYPE_COUNT; i++)
        if (strcmp(name, DTYPES[i].name) == 0) {
            *out = (ft_dtype)i;
            return 0;
        }
    return -1;
}

int64_t ft_numel(const ft_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t ft_nbytes(const ft_tensor *t) { return (size_t)ft_numel(t) * ft_dtype_size(t->dtype); }

ft_tensor ft_tensor_make(void *data, ft_dtype dt, ft_device dev, int ndim, const int64_t *shape) {
    ft_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = dt;
    t.device = dev;
    t.ndim = ndim;
    for (int i = 0; i < ndim && i < 4; i++) t.shape[i] = shape[i];
    return t;
}

ft_tensor ft_t1(void *data, ft_dtype dt, ft_device dev, int64_t d0) {
    int64_t s[1] = {d0};
    return ft_tensor_make(data, dt, dev, 1, s);
}

ft_tensor ft_t2(void *data, ft_dtype dt, ft_device dev, int64_t d0, int64_t d1) {
    int64_t s[2] = {d0, d1};
    return ft_tensor_make(data, dt, dev, 2, s);
}

ft_tensor ft_t3(void *data, ft_dtype dt, ft_device dev, int64_t d0, int64_t d1, int64_t d2) {
    int64_t s[3] = {d0, d1, d2};
    return ft_tensor_make(data, dt, dev, 3, s);
}

const char *ft_shape_str(const ft_tensor *t, char *buf, size_t n) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "[");
    for (int i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
    return buf;
}
