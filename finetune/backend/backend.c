#include "finetune/backend/backend.h"

#include <string.h>

int ft_backend_create(const char *name, ft_backend **out, ft_error *e) {
    if (!name || strcmp(name, "auto") == 0) {
        if (ft_backend_cuda_available()) return ft_backend_cuda_create(out, e);
        *out = ft_backend_cpu_create();
        return FT_OK;
    }
    if (strcmp(name, "cpu") == 0) {
        *out = ft_backend_cpu_create();
        return FT_OK;
    }
    if (strcmp(name, "cuda") == 0) return ft_backend_cuda_create(out, e);
    return ft_fail(e, FT_EINPUT, "device=%s: unknown device (expected auto, cpu or cuda)", name);
}

int ft_backend_tensor(ft_backend *b, ft_dtype dt, int ndim, const int64_t *shape, ft_tensor *out, ft_error *e) {
    *out = ft_tensor_make(NULL, dt, b->device, ndim, shape);
    size_t n = ft_nbytes(out);
    out->data = b->alloc(b, n);
    if (!out->data && n > 0) {
        char s[64];
        return ft_fail(e, FT_ENOMEM, "out of %s memory allocating a %s tensor of shape %s (%zu bytes)", b->name,
                       ft_dtype_name(dt), ft_shape_str(out, s, sizeof s), n);
    }
    return FT_OK;
}
