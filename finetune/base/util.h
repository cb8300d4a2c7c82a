/* util: error reporting and small helpers shared by every module.
 *
 * Contract: a function that can fail returns an int status (FT_OK = 0) and
 * fills an ft_error with one message naming the file, line, tensor or key and
 * what was expected. The CLI prints that message once and exits with the code
 * (FT_EINPUT = 2 for bad user input). No module calls abort() on user input. */
#ifndef FT_UTIL_H
#define FT_UTIL_H

#include <stddef.h>
#include <stdint.h>

enum {
    FT_OK = 0,
    FT_EINTERNAL = 1, /* a bug or an unexpected system failure */
    FT_EINPUT = 2,    /* bad user input: file, recipe, flag, data */
    FT_EIO = 3,       /* reading or writing failed */
    FT_ENOMEM = 4,    /* out of (host or device) memory */
    FT_EDEVICE = 5,   /* no or unsupported accelerator */
};

typedef struct ft_error {
    int code;
    char msg[2048];
} ft_error;

/* Fill e (if non-NULL) with a printf-style message and return code. */
int ft_fail(ft_error *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing message: "prefix: old message". Returns e->code. */
int ft_error_prefix(ft_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Allocation that exits the process on failure: only for small host-side
 * bookkeeping whose failure means the machine is unusable anyway. Large
 * buffers use plain malloc and report FT_ENOMEM. */
void *ft_xmalloc(size_t n);
void *ft_xcalloc(size_t n, size_t size);
void *ft_xrealloc(void *p, size_t n);
char *ft_xstrdup(const char *s);

/* Read a whole (small) file into a NUL-terminated buffer. */
int ft_read_file(const char *path, char **out, size_t *out_len, ft_error *e);

/* Write a file atomically: temp file in the same dir, fsync, rename. */
int ft_write_file_atomic(const char *path, const void *data, size_t len, ft_error *e);

/* mkdir -p */
int ft_mkdir_p(const char *path, ft_error *e);

/* path join into a fresh heap string */
char *ft_path_join(const char *dir, const char *name);

int ft_file_exists(const char *path);

/* Overflow-checked size arithmetic: return 0 on overflow. */
static inline int ft_mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* Monotonic time in seconds. */
double ft_now(void);

/* Deterministic RNG (xoshiro256**), serialisable for exact resume. */
typedef struct ft_rng {
    uint64_t s[4];
} ft_rng;
void ft_rng_seed(ft_rng *r, uint64_t seed);
uint64_t ft_rng_next(ft_rng *r);
float ft_rng_uniform(ft_rng *r); /* [0, 1) */
float ft_rng_normal(ft_rng *r);  /* N(0, 1) */

/* fp16 / bf16 conversions (round to nearest even). */
float ft_f16_to_f32(uint16_t h);
uint16_t ft_f32_to_f16(float f);
float ft_bf16_to_f32(uint16_t h);
uint16_t ft_f32_to_bf16(float f);

#endif
