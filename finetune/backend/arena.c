#include "finetune/backend/arena.h"

#define ARENA_ALIGN 256

void arena_init(ft_arena *a, ft_backend *b) {
    a->b = b;
    a->base = NULL;
    a->cap = a->used = a->high = 0;
}

int arena_reserve(ft_arena *a, size_t bytes, ft_error *e) {
    if (bytes <= a->cap) return FT_OK;
    if (a->base) a->b->free(a->b, a->base);
    a->base = a->b->alloc(a->b, bytes);
    a->cap = a->base ? bytes : 0;
    a->used = 0;
    if (!a->base)
        return ft_fail(e, FT_ENOMEM, "out of %s memory reserving %.1f MiB of activations", a->b->name,
                       (double)bytes / (1 << 20));
    return FT_OK;
}

void arena_reset(ft_arena *a) { a->used = 0; }

int arena_tensor(ft_arena *a, ft_dtype dt, int ndim, const int64_t *shape, ft_tensor *out, ft_error *e) {
    *out = ft_tensor_make(NULL, dt, a->b->device, ndim, shape);
    size_t n = (ft_nbytes(out) + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (a->used + n > a->cap)
        return ft_fail(e, FT_EINTERNAL, "activation arena too small: %zu of %zu bytes used, %zu more needed",
                       a->used, a->cap, n);
    out->data = a->base + a->used;
    a->used += n;
    if (a->used > a->high) a->high = a->used;
    return FT_OK;
}

void arena_free(ft_arena *a) {
    if (a->base) a->b->free(a->b, a->base);
    a->base = NULL;
    a->cap = a->used = 0;
}
