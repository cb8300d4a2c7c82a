/* arena: a bump allocator over one backend allocation, for per-step activations.
 *
 * Reserve once (arena_reserve grows the block only when a step needs more
 * than ever before), take pieces with arena_tensor, and arena_reset at the
 * start of each step: no allocation in the hot loop. */
#ifndef FT_ARENA_H
#define FT_ARENA_H

#include "finetune/backend/backend.h"

typedef struct ft_arena {
    ft_backend *b;
    char *base;
    size_t cap, used, high;
} ft_arena;

void arena_init(ft_arena *a, ft_backend *b);
/* Make sure at least `bytes` are available after a reset (reallocates, losing contents). */
int arena_reserve(ft_arena *a, size_t bytes, ft_error *e);
void arena_reset(ft_arena *a);
/* A tensor carved from the arena (256-byte aligned). FT_ENOMEM when the reservation is too small. */
int arena_tensor(ft_arena *a, ft_dtype dt, int ndim, const int64_t *shape, ft_tensor *out, ft_error *e);
void arena_free(ft_arena *a);

#endif
