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
    int sys_errno; /* errno of the system call that failed (set by ft_fail_sys), 0 otherwise */
    char msg[2048];
} ft_error;

/* Fill e (if non-NULL) with a printf-style message and return code. */
int ft_fail(ft_error *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing message: "prefix: old message". Returns e->code. */
int ft_error_prefix(ft_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append to an existing message: "old message<suffix>". Returns e->code. */
int ft_error_append(ft_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A failed system call: the message gets ": <strerror(err)>" appended, the code is FT_EIO and
 * e->sys_errno = err, so a caller can tell a full disk from other failures (ft_error_no_space). */
int ft_fail_sys(ft_error *e, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* True when e is a full disk or an exhausted quota (ENOSPC, EDQUOT). */
int ft_error_no_space(const ft_error *e);

/* Allocation that exits the process on failure: only for small host-side
 * bookkeeping whose failure means the machine is unusable anyway. Large
 * buffers use plain malloc and report FT_ENOMEM. */
void *ft_xmalloc(size_t n);
void *ft_xcalloc(size_t n, size_t size);
void *ft_xrealloc(void *p, size_t n);
char *ft_xstrdup(const char *s);

/* A byte count: digits with an optional fraction and an optional binary unit K, M, G or T (each may be followed
 * by "iB" or "B", any case: "15GiB", "15g", "512MiB", "1.5G", "16106127360"). Returns 0, or -1 when s is not one
 * or the value does not fit a size_t. */
int ft_parse_bytes(const char *s, size_t *out);

/* Read a whole (small) file into a NUL-terminated buffer. */
int ft_read_file(const char *path, char **out, size_t *out_len, ft_error *e);

/* Write a file atomically: PATH.tmp.PID in the same dir, fsync, rename, fsync of the dir. On any
 * failure (a full disk included) the temp file is removed and PATH is untouched. */
int ft_write_file_atomic(const char *path, const void *data, size_t len, ft_error *e);

/* Write all n bytes to fd: at offset off (pwrite), or at the file position when off < 0 (write).
 * Retries short writes and EINTR; returns 0, or -1 with errno set. path names the file for the
 * fault hook below. Every writer of output files (atomic files, safetensors) goes through it. */
int ft_write_all(int fd, const void *buf, size_t n, int64_t off, const char *path);

/* Remove what killed writers left in dir: entries named NAME.tmp.PID or NAME.tmp-PID (a file, or a
 * flat directory of files) whose PID is not a running process, NAME starting with prefix (NULL or
 * "": any). Best effort; returns the number of entries removed. */
int ft_remove_stale_tmp(const char *dir, const char *prefix);

/* TEST-ONLY fault hook, driven by the environment variable FT_FAULT (unset: no effect, one getenv).
 * It exists so that tests can hit a full disk or a SIGKILL at an exact point:
 *   FT_FAULT=enospc:SUBSTR[:BYTES]  ft_write_all to a file whose path contains SUBSTR fails with
 *                                   errno ENOSPC once the file would pass BYTES bytes (default 0),
 *                                   after writing what fits, as a full disk does;
 *   FT_FAULT=kill:POINT[:N]         the N-th (default 1st) ft_fault_point(POINT) raises SIGKILL.
 * Points: train-mid-step (after a step's backward, before the update; once per step),
 * ckpt-mid-write (half the checkpoint's tensors written; once per checkpoint), ckpt-before-rename
 * (the checkpoint complete in its temp dir, not yet renamed), merge-mid-write (half the merged
 * tensors written). Never set it outside tests. */
void ft_fault_point(const char *name);

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
