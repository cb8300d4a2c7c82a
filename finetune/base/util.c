
#include "finetune/base/util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int ft_fail(ft_error *e, int code, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
        e->sys_errno = 0;
    }
    return code;
}

int ft_fail_sys(ft_error *e, int err, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        size_t n = strlen(e->msg);
        snprintf(e->msg + n, sizeof e->msg - n, ": %s", strerror(err));
        e->code = FT_EIO;
        e->sys_errno = err;
    }
    return FT_EIO;
}

int ft_error_no_space(const ft_error *e) {
    return e && e->code != FT_OK && (e->sys_errno == ENOSPC
#ifdef EDQUOT
                                     || e->sys_errno == EDQUOT
#endif
                                    );
}

int ft_error_append(ft_error *e, const char *fmt, ...) {
    if (!e) return FT_EINTERNAL;
    size_t n = strnlen(e->msg, sizeof e->msg);
    if (n + 1 < sizeof e->msg) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg + n, sizeof e->msg - n, fmt, ap);
        va_end(ap);
    }
    return e->code;
}

int ft_error_prefix(ft_error *e, const char *fmt, ...) {
    if (!e) return FT_EINTERNAL;
    char prefix[1024], old[sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    size_t pl = strnlen(prefix, sizeof prefix);
    memcpy(e->msg, prefix, pl);
    snprintf(e->msg + pl, sizeof e->msg - pl, ": %.*s", (int)(sizeof e->msg - pl - 3), old);
    return e->code;
}

static void oom(size_t n) {
    fprintf(stderr, "finetune: out of host memory allocating %zu bytes\n", n);
    exit(FT_ENOMEM);
}

void *ft_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *ft_xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size);
    return p;
}

void *ft_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *ft_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = ft_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

int ft_read_file(const char *path, char **out, size_t *out_len, ft_error *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return ft_fail(e, FT_EINPUT, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return ft_fail(e, FT_ENOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (len + 1 >= cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return ft_fail(e, FT_ENOMEM, "%s: out of memory", path);
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - 1 - len, f);
        len += n;
        if (n == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return ft_fail(e, FT_EIO, "%s: read error", path);
    }
    buf[len] = 0;
    *out = buf;
    if (out_len) *out_len = len;
    return FT_OK;
}

/* ---------- the test-only fault hook (FT_FAULT, see util.h) ---------- */

/* The byte limit FT_FAULT=enospc:SUBSTR[:BYTES] puts on path, or -1 when none applies. */
static int64_t fault_enospc_limit(const char *path) {
    const char *f = getenv("FT_FAULT");
    if (!f || strncmp(f, "enospc:", 7) != 0 || !path) return -1;
    f += 7;
    const char *colon = strchr(f, ':');
    char sub[256];
    size_t n = colon ? (size_t)(colon - f) : strlen(f);
    if (n == 0 || n >= sizeof sub) return -1;
    memcpy(sub, f, n);
    sub[n] = 0;
    if (!strstr(path, sub)) return -1;
    return colon ? (int64_t)strtoll(colon + 1, NULL, 10) : 0;
}

void ft_fault_point(const char *name) {
    const char *f = getenv("FT_FAULT");
    if (!f || strncmp(f, "kill:", 5) != 0) return;
    f += 5;
    size_t n = strlen(name);
    if (strncmp(f, name, n) != 0 || (f[n] != 0 && f[n] != ':')) return;
    long want = f[n] == ':' ? strtol(f + n + 1, NULL, 10) : 1;
    static long hits;
    if (++hits != want) return;
    fprintf(stderr, "FT_FAULT: SIGKILL at %s (hit %ld)\n", name, hits);
    raise(SIGKILL);
}

static int write_all_real(int fd, const char *p, size_t n, int64_t off) {
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
        ssize_t w = off >= 0 ? pwrite(fd, p, chunk, (off_t)off) : write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (w == 0) { /* no progress and no error: treat as a full disk rather than spin */
            errno = ENOSPC;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        if (off >= 0) off += w;
    }
    return 0;
}

int ft_write_all(int fd, const void *buf, size_t n, int64_t off, const char *path) {
    int64_t limit = fault_enospc_limit(path);
    if (limit >= 0) {
        int64_t pos = off >= 0 ? off : (int64_t)lseek(fd, 0, SEEK_CUR);
        if (pos + (int64_t)n > limit) {
            size_t room = pos < limit ? (size_t)(limit - pos) : 0;
            if (room && write_all_real(fd, buf, room, off) != 0) return -1;
            errno = ENOSPC;
            return -1;
        }
    }
    return write_all_real(fd, buf, n, off);
}

/* best effort: makes a rename in dir durable (some filesystems refuse fsync on a directory) */
static void fsync_dir_of(const char *path) {
    char *d = ft_xstrdup(path);
    char *slash = strrchr(d, '/');
    if (slash == d) slash[1] = 0;
    else if (slash) *slash = 0;
    int fd = open(slash ? d : ".", O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(d);
}

int ft_write_file_atomic(const char *path, const void *data, size_t len, ft_error *e) {
    size_t n = strlen(path) + 32;
    char *tmp = ft_xmalloc(n);
    snprintf(tmp, n, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int rc = ft_fail_sys(e, errno, "%s: cannot create", tmp);
        free(tmp);
        return rc;
    }
    int rc = FT_OK;
    if (ft_write_all(fd, data, len, -1, tmp) != 0) rc = ft_fail_sys(e, errno, "%s: write failed", tmp);
    if (rc == FT_OK && fsync(fd) != 0) rc = ft_fail_sys(e, errno, "%s: fsync failed", tmp);
    if (close(fd) != 0 && rc == FT_OK) rc = ft_fail_sys(e, errno, "%s: close failed", tmp);
    if (rc == FT_OK && rename(tmp, path) != 0) rc = ft_fail_sys(e, errno, "%s: rename to %s failed", tmp, path);
    if (rc == FT_OK)
        fsync_dir_of(path);
    else
        unlink(tmp);
    free(tmp);
    return rc;
}

/* "NAME.tmp.PID" / "NAME.tmp-PID" -> PID (> 0), else 0. */
static long tmp_name_pid(const char *name) {
    size_t n = strlen(name), i = n;
    while (i > 0 && name[i - 1] >= '0' && name[i - 1] <= '9') i--;
    if (i == n || i < 5 || strncmp(name + i - 5, ".tmp", 4) != 0 || (name[i - 1] != '.' && name[i - 1] != '-')) return 0;
    if (n - i > 9) return 0;
    return strtol(name + i, NULL, 10);
}

int ft_remove_stale_tmp(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    size_t pl = prefix ? strlen(prefix) : 0;
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (pl && strncmp(de->d_name, prefix, pl) != 0) continue;
        long pid = tmp_name_pid(de->d_name);
        if (pid <= 0 || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno == EPERM) continue;
        char *p = ft_path_join(dir, de->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            DIR *sd = opendir(p);
            struct dirent *se;
            while (sd && (se = readdir(sd)) != NULL) {
                if (!strcmp(se->d_name, ".") || !strcmp(se->d_name, "..")) continue;
                char *q = ft_path_join(p, se->d_name);
                unlink(q);
                free(q);
            }
            if (sd) closedir(sd);
            if (rmdir(p) == 0) removed++;
        } else if (unlink(p) == 0) {
            removed++;
        }
        free(p);
    }
    closedir(d);
    return removed;
}

int ft_mkdir_p(const char *path, ft_error *e) {
    char *p = ft_xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s == '/') {
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                int rc = ft_fail_sys(e, errno, "%s: cannot create directory", p);
                free(p);
                return rc;
            }
            *s = '/';
        }
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        int rc = ft_fail_sys(e, errno, "%s: cannot create directory", p);
        free(p);
        return rc;
    }
    free(p);
    return FT_OK;
}

char *ft_path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = ft_xmalloc(n);
    size_t dl = strlen(dir);
    if (dl > 0 && dir[dl - 1] == '/')
        snprintf(s, n, "%s%s", dir, name);
    else
        snprintf(s, n, "%s/%s", dir, name);
    return s;
}

int ft_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

double ft_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void ft_rng_seed(ft_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ft_rng_next(ft_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float ft_rng_uniform(ft_rng *r) { return (float)(ft_rng_next(r) >> 40) * (1.0f / 16777216.0f); }

float ft_rng_normal(ft_rng *r) {
    float u1 = ft_rng_uniform(r), u2 = ft_rng_uniform(r);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}

float ft_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t ft_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffff;
    if (absx >= 0x7f800000) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000 ? 0x200 : 0));
    if (absx >= 0x477ff000) return (uint16_t)(sign | 0x7c00); /* overflow -> inf */
    if (absx < 0x38800000) { /* subnormal or zero in half */
        if (absx < 0x33000000) return (uint16_t)sign;
        uint32_t man = (absx & 0x7fffff) | 0x800000;
        int shift = 126 - (int)(absx >> 23); /* 14..24 */
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((absx - 0x38000000) >> 13);
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)(sign | half);
}

float ft_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t ft_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    uint32_t lsb = (x >> 16) & 1;
    x += 0x7fff + lsb;
    return (uint16_t)(x >> 16);
}

int ft_parse_bytes(const char *s, size_t *out) {
    if (!s) return -1;
    while (isspace((unsigned char)*s)) s++;
    if (!isdigit((unsigned char)*s)) return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0)) return -1;
    while (isspace((unsigned char)*end)) end++;
    double mul = 1;
    switch (tolower((unsigned char)*end)) {
    case 'k': mul = 1024.0; break;
    case 'm': mul = 1024.0 * 1024; break;
    case 'g': mul = 1024.0 * 1024 * 1024; break;
    case 't': mul = 1024.0 * 1024 * 1024 * 1024; break;
    case 'b': case 0: break;
    default: return -1;
    }
    if (mul > 1) {
        end++;
        if (tolower((unsigned char)end[0]) == 'i' && tolower((unsigned char)end[1]) == 'b') end += 2;
        else if (tolower((unsigned char)end[0]) == 'b') end++;
    } else if (tolower((unsigned char)*end) == 'b') {
        end++;
    }
    while (isspace((unsigned char)*end)) end++;
    if (*end) return -1;
    double bytes = v * mul;
    if (bytes >= (double)SIZE_MAX) return -1;
    *out = (size_t)bytes;
    return 0;
}
