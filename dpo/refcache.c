/* refcache: see refcache.h. The whole file is read at open (16 bytes per pair), validated record by
 * record, and the values kept in memory; appends go straight to the file with an fsync each. */
#include "dpo/refcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define MAGIC "FTREFLP1"
#define VERSION 1u
#define TAG_CHUNK 0x4B4E4843u /* "CHNK" */
#define TAG_DONE 0x454E4F44u  /* "DONE" */
#define KEY_MAX (1u << 20)

struct refc_cache {
    char *path;
    int fd;
    int64_t n_pairs, done;
    int complete, broken;
    refc_state state;
    double *vals; /* n_pairs x 2 */
    char note[1536];
};

/* ---- little-endian helpers ---- */
static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static void put_f64(unsigned char *p, double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    put_u64(p, u);
}
static double get_f64(const unsigned char *p) {
    uint64_t u = get_u64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
}
static uint32_t crc(const unsigned char *p, size_t n) {
    uLong c = crc32(0L, Z_NULL, 0);
    while (n > 0) { /* zlib takes uInt lengths */
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, k);
        p += k;
        n -= k;
    }
    return (uint32_t)c;
}

static int write_all(int fd, const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- key comparison: name the fields that differ ---- */
static const char *key_field(const char *key, const char *name, size_t name_len, size_t *vlen) {
    const char *p = key;
    while (*p) {
        const char *eol = strchr(p, '\n');
        if (!eol) eol = p + strlen(p);
        if ((size_t)(eol - p) > name_len && !strncmp(p, name, name_len) && p[name_len] == '=') {
            *vlen = (size_t)(eol - p) - name_len - 1;
            return p + name_len + 1;
        }
        p = *eol ? eol + 1 : eol;
    }
    return NULL;
}

static void append_diff(char *out, size_t cap, const char *name, size_t nl, const char *a, size_t al, const char *b,
                        size_t bl) {
    size_t used = strlen(out);
    if (used + 8 >= cap) return;
    snprintf(out + used, cap - used, "%s%.*s: %.*s -> %.*s", used ? "; " : "", (int)(nl > 64 ? 64 : nl), name,
             (int)(al > 40 ? 40 : al), a ? a : "(none)", (int)(bl > 40 ? 40 : bl), b ? b : "(none)");
}

/* Fields of old and new keys whose values differ, as "name: old -> new; ..." */
static void key_diff(const char *old_key, const char *new_key, char *out, size_t cap) {
    out[0] = 0;
    for (int pass = 0; pass < 2; pass++) {
        const char *src = pass ? old_key : new_key, *other = pass ? new_key : old_key, *p = src;
        while (*p) {
            const char *eol = strchr(p, '\n');
            if (!eol) eol = p + strlen(p);
            const char *eq = memchr(p, '=', (size_t)(eol - p));
            size_t nl = eq ? (size_t)(eq - p) : (size_t)(eol - p), vl = eq ? (size_t)(eol - eq - 1) : 0, ol = 0;
            const char *v = eq ? eq + 1 : "", *ov = key_field(other, p, nl, &ol);
            if (pass == 0 && (!ov || ol != vl || strncmp(ov, v, vl)))
                append_diff(out, cap, p, nl, ov, ov ? ol : 6, v, vl);
            else if (pass == 1 && !ov)
                append_diff(out, cap, p, nl, v, vl, NULL, 6);
            p = *eol ? eol + 1 : eol;
        }
    }
    if (!out[0]) snprintf(out, cap, "the key changed");
}

/* ---- open ---- */
static int write_fresh(refc_cache *c, const char *key, ft_error *e) {
    size_t kl = strlen(key), hl = 8 + 4 + 4 + 8 + kl + 4;
    unsigned char *h = malloc(hl);
    if (!h) return ft_fail(e, FT_ENOMEM, "%s: out of memory for the header", c->path);
    memcpy(h, MAGIC, 8);
    put_u32(h + 8, VERSION);
    put_u32(h + 12, (uint32_t)kl);
    put_u64(h + 16, (uint64_t)c->n_pairs);
    memcpy(h + 24, key, kl);
    put_u32(h + 24 + kl, crc(h, 24 + kl));
    int rc = ft_write_file_atomic(c->path, h, hl, e);
    free(h);
    c->done = 0;
    c->complete = 0;
    return rc;
}

/* Parse an existing file into c; returns the byte length of the valid prefix, or 0 when the file
 * must be started afresh (c->note says why). */
static size_t parse(refc_cache *c, const unsigned char *b, size_t n, const char *key) {
    if (n < 28 || memcmp(b, MAGIC, 8)) {
        snprintf(c->note, sizeof c->note,
                 "%s is not a reference log-prob cache or its header is damaged; recomputing", c->path);
        return 0;
    }
    uint32_t ver = get_u32(b + 8), kl = get_u32(b + 12);
    uint64_t np = get_u64(b + 16);
    if (ver != VERSION || kl > KEY_MAX || n < 28 + (size_t)kl || get_u32(b + 24 + kl) != crc(b, 24 + (size_t)kl)) {
        snprintf(c->note, sizeof c->note,
                 "%s: the cache header is damaged or of another version (%u); recomputing", c->path, ver);
        return 0;
    }
    size_t skl = strlen(key);
    if (kl != skl || memcmp(b + 24, key, kl)) {
        char *old = malloc((size_t)kl + 1), diff[1024];
        if (!old) return 0;
        memcpy(old, b + 24, kl);
        old[kl] = 0;
        key_diff(old, key, diff, sizeof diff);
        free(old);
        snprintf(c->note, sizeof c->note,
                 "reference log-probs in %s were computed for a different model/data/template (%s); recomputing",
                 c->path, diff);
        return 0;
    }
    if ((int64_t)np != c->n_pairs) {
        snprintf(c->note, sizeof c->note,
                 "reference log-probs in %s were computed for %" PRIu64 " pairs, the data now has %" PRId64
                 "; recomputing",
                 c->path, np, c->n_pairs);
        return 0;
    }
    size_t off = 28 + kl;
    while (off < n) {
        size_t left = n - off;
        if (left < 4) break;
        uint32_t tag = get_u32(b + off);
        if (tag == TAG_DONE) {
            if (left < 16) break;
            if (get_u32(b + off + 12) != crc(b + off, 12) || (int64_t)get_u64(b + off + 4) != c->n_pairs ||
                c->done != c->n_pairs) {
                snprintf(c->note, sizeof c->note, "%s: the end record at byte %zu is damaged; it is dropped", c->path,
                         off);
                break;
            }
            c->complete = 1;
            off += 16;
            if (off < n)
                snprintf(c->note, sizeof c->note, "%s: %zu stray bytes after the end record dropped", c->path, n - off);
            break;
        }
        if (tag != TAG_CHUNK) {
            snprintf(c->note, sizeof c->note,
                     "%s: unreadable record at byte %zu; pairs from %" PRId64 " on are recomputed", c->path, off,
                     c->done);
            break;
        }
        if (left < 16) goto torn;
        uint64_t first = get_u64(b + off + 4), count = get_u32(b + off + 12);
        if ((int64_t)first != c->done || count == 0 || count > (uint64_t)(c->n_pairs - c->done)) {
            snprintf(c->note, sizeof c->note,
                     "%s: the chunk at byte %zu claims pairs %" PRIu64 "..+%" PRIu64 " but %" PRId64
                     " are done; pairs from %" PRId64 " on are recomputed",
                     c->path, off, first, count, c->done, c->done);
            break;
        }
        size_t rl = 16 + (size_t)count * 16 + 4;
        if (left < rl) goto torn;
        if (get_u32(b + off + rl - 4) != crc(b + off, rl - 4)) {
            snprintf(c->note, sizeof c->note,
                     "%s: the chunk at byte %zu (pairs %" PRIu64 "..%" PRIu64
                     ") failed its CRC32 check; pairs from %" PRIu64 " on are recomputed",
                     c->path, off, first, first + count - 1, first);
            break;
        }
        for (uint64_t j = 0; j < 2 * count; j++) c->vals[2 * first + j] = get_f64(b + off + 16 + 8 * j);
        c->done += (int64_t)count;
        off += rl;
        continue;
    torn:
        snprintf(c->note, sizeof c->note,
                 "%s: the last chunk was cut short (interrupted pass); resuming at pair %" PRId64, c->path, c->done);
        break;
    }
    return off;
}

int refc_open(const char *path, const char *key, int64_t n_pairs, refc_cache **out, ft_error *e) {
    *out = NULL;
    if (!key || strlen(key) > KEY_MAX) return ft_fail(e, FT_EINTERNAL, "%s: cache key missing or too long", path);
    if (n_pairs <= 0 || (uint64_t)n_pairs > (UINT64_MAX / 16) / 2)
        return ft_fail(e, FT_EINPUT, "%s: %" PRId64 " preference pairs: need at least one", path, n_pairs);
    refc_cache *c = ft_xcalloc(1, sizeof *c);
    c->path = ft_xstrdup(path);
    c->fd = -1;
    c->n_pairs = n_pairs;
    c->vals = malloc((size_t)n_pairs * 2 * sizeof(double));
    if (!c->vals) {
        refc_close(c);
        return ft_fail(e, FT_ENOMEM, "%s: out of memory for %" PRId64 " pairs", path, n_pairs);
    }
    int rc = FT_OK;
    if (!ft_file_exists(path)) {
        c->state = REFC_NEW;
        rc = write_fresh(c, key, e);
    } else {
        char *buf = NULL;
        size_t len = 0;
        rc = ft_read_file(path, &buf, &len, e);
        if (rc) {
            refc_close(c);
            return rc;
        }
        size_t valid = parse(c, (const unsigned char *)buf, len, key);
        if (valid == 0) {
            c->state = REFC_INVALIDATED;
            c->done = 0;
            rc = write_fresh(c, key, e);
        } else {
            c->state = c->complete ? REFC_COMPLETE : c->done > 0 ? REFC_RESUMED : REFC_NEW;
            /* the damaged tail goes by rewriting the valid prefix beside and renaming, not in place */
            if (valid < len && (rc = ft_write_file_atomic(path, buf, valid, e)))
                ft_error_prefix(e, "%s: cannot cut the damaged tail at byte %zu", path, valid);
        }
        free(buf);
    }
    if (!rc && !c->complete) {
        c->fd = open(path, O_WRONLY | O_APPEND);
        if (c->fd < 0) rc = ft_fail(e, FT_EIO, "%s: cannot open for appending: %s", path, strerror(errno));
    }
    if (rc) {
        refc_close(c);
        return rc;
    }
    *out = c;
    return FT_OK;
}

int refc_append(refc_cache *c, int64_t first, int64_t count, const double *values, ft_error *e) {
    if (c->broken) return ft_fail(e, FT_EIO, "%s: an earlier write failed; reopen the cache", c->path);
    if (c->complete || c->fd < 0) return ft_fail(e, FT_EINTERNAL, "%s: the cache is complete; nothing to append", c->path);
    if (first != c->done)
        return ft_fail(e, FT_EINTERNAL, "%s: append at pair %" PRId64 " but the pass is at pair %" PRId64, c->path,
                       first, c->done);
    if (count <= 0 || count > c->n_pairs - c->done || count > (int64_t)(UINT32_MAX / 16))
        return ft_fail(e, FT_EINTERNAL, "%s: append of %" PRId64 " pairs at %" PRId64 " (of %" PRId64 ")", c->path,
                       count, first, c->n_pairs);
    for (int64_t j = 0; j < 2 * count; j++)
        if (!isfinite(values[j]))
            return ft_fail(e, FT_EINPUT, "%s: reference %s log-prob of pair %" PRId64 " is %g (not finite)", c->path,
                           j % 2 ? "rejected" : "chosen", first + j / 2, values[j]);
    size_t rl = 16 + (size_t)count * 16 + 4;
    unsigned char *r = malloc(rl);
    if (!r) return ft_fail(e, FT_ENOMEM, "%s: out of memory for a chunk of %" PRId64 " pairs", c->path, count);
    put_u32(r, TAG_CHUNK);
    put_u64(r + 4, (uint64_t)first);
    put_u32(r + 12, (uint32_t)count);
    for (int64_t j = 0; j < 2 * count; j++) put_f64(r + 16 + 8 * j, values[j]);
    put_u32(r + rl - 4, crc(r, rl - 4));
    int bad = write_all(c->fd, r, rl) || fsync(c->fd);
    free(r);
    if (bad) {
        c->broken = 1; /* a partial record may be on disk: the next open drops it */
        return ft_fail(e, FT_EIO, "%s: writing pairs %" PRId64 "..%" PRId64 " failed: %s", c->path, first,
                       first + count - 1, strerror(errno));
    }
    memcpy(c->vals + 2 * first, values, (size_t)count * 2 * sizeof(double));
    c->done += count;
    return FT_OK;
}

int refc_complete(refc_cache *c, ft_error *e) {
    if (c->complete) return FT_OK;
    if (c->broken) return ft_fail(e, FT_EIO, "%s: an earlier write failed; reopen the cache", c->path);
    if (c->done != c->n_pairs)
        return ft_fail(e, FT_EINTERNAL, "%s: only %" PRId64 " of %" PRId64 " pairs computed", c->path, c->done,
                       c->n_pairs);
    unsigned char r[16];
    put_u32(r, TAG_DONE);
    put_u64(r + 4, (uint64_t)c->n_pairs);
    put_u32(r + 12, crc(r, 12));
    if (write_all(c->fd, r, sizeof r) || fsync(c->fd)) {
        c->broken = 1;
        return ft_fail(e, FT_EIO, "%s: writing the end record failed: %s", c->path, strerror(errno));
    }
    c->complete = 1;
    return FT_OK;
}

int refc_get(const refc_cache *c, int64_t i, double *ref_chosen, double *ref_rejected, ft_error *e) {
    if (i < 0 || i >= c->done)
        return ft_fail(e, FT_EINTERNAL, "%s: pair %" PRId64 " has no reference log-probs (%" PRId64 " of %" PRId64
                       " computed)", c->path, i, c->done, c->n_pairs);
    *ref_chosen = c->vals[2 * i];
    *ref_rejected = c->vals[2 * i + 1];
    return FT_OK;
}

void refc_close(refc_cache *c) {
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    free(c->vals);
    free(c->path);
    free(c);
}

int64_t refc_done(const refc_cache *c) { return c->done; }
int64_t refc_n_pairs(const refc_cache *c) { return c->n_pairs; }
int refc_is_complete(const refc_cache *c) { return c->complete; }
refc_state refc_status(const refc_cache *c) { return c->state; }
const char *refc_note(const refc_cache *c) { return c->note; }

/* ---- keys ---- */
void refc_key_init(refc_key *k) {
    k->s = ft_xstrdup("");
    k->len = 0;
}

void refc_key_free(refc_key *k) {
    free(k->s);
    k->s = NULL;
    k->len = 0;
}

int refc_key_add(refc_key *k, const char *name, const char *value, ft_error *e) {
    if (!name || !*name || strpbrk(name, "=\n"))
        return ft_fail(e, FT_EINTERNAL, "cache key field name \"%s\" is empty or has '=' or a newline", name ? name : "");
    if (!value) value = "";
    if (strchr(value, '\n')) return ft_fail(e, FT_EINTERNAL, "cache key field %s: value has a newline", name);
    size_t add = strlen(name) + 1 + strlen(value) + 1;
    k->s = ft_xrealloc(k->s, k->len + add + 1);
    k->len += (size_t)snprintf(k->s + k->len, add + 1, "%s%s=%s", k->len ? "\n" : "", name, value);
    return FT_OK;
}

int refc_key_add_int(refc_key *k, const char *name, int64_t v, ft_error *e) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return refc_key_add(k, name, buf, e);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

#define WHOLE_MAX (64ull << 20)
#define EDGE (4ull << 20)

/* CRC32 of bytes [off, off+n) of f */
static int crc_range(FILE *f, const char *path, uint64_t off, uint64_t n, uint32_t *out, ft_error *e) {
    unsigned char buf[1 << 14];
    if (fseeko(f, (off_t)off, SEEK_SET)) return ft_fail(e, FT_EIO, "%s: seek failed: %s", path, strerror(errno));
    uLong c = crc32(0L, Z_NULL, 0);
    while (n > 0) {
        size_t want = n > sizeof buf ? sizeof buf : (size_t)n, got = fread(buf, 1, want, f);
        if (got != want) return ft_fail(e, FT_EIO, "%s: short read while fingerprinting", path);
        c = crc32(c, buf, (uInt)got);
        n -= got;
    }
    *out = (uint32_t)c;
    return FT_OK;
}

static int fingerprint(uint64_t *h, const char *path, ft_error *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return ft_fail(e, FT_EINPUT, "%s: cannot open to fingerprint: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st)) {
        fclose(f);
        return ft_fail(e, FT_EIO, "%s: stat failed: %s", path, strerror(errno));
    }
    uint64_t size = (uint64_t)st.st_size;
    uint32_t c1 = 0, c2 = 0;
    int rc = crc_range(f, path, 0, size <= WHOLE_MAX ? size : EDGE, &c1, e);
    if (!rc && size > WHOLE_MAX) rc = crc_range(f, path, size - EDGE, EDGE, &c2, e);
    fclose(f);
    if (rc) return rc;
    *h = fnv(*h, &size, sizeof size);
    *h = fnv(*h, &c1, sizeof c1);
    *h = fnv(*h, &c2, sizeof c2);
    return FT_OK;
}

static int add_hash(refc_key *k, const char *name, uint64_t h, ft_error *e) {
    char buf[24];
    snprintf(buf, sizeof buf, "%016" PRIx64, h);
    return refc_key_add(k, name, buf, e);
}

int refc_key_add_files(refc_key *k, const char *name, const char *const *paths, int n, ft_error *e) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < n; i++) {
        int rc = fingerprint(&h, paths[i], e);
        if (rc) return rc;
    }
    return add_hash(k, name, h, e);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

int refc_key_add_model_dir(refc_key *k, const char *name, const char *dir, ft_error *e) {
    struct stat sb;
    if (stat(dir, &sb) == 0 && S_ISREG(sb.st_mode)) return refc_key_add_files(k, name, &dir, 1, e); /* a .gguf */
    DIR *d = opendir(dir);
    if (!d) return ft_fail(e, FT_EINPUT, "%s: cannot read the model directory: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0, rc = FT_OK;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *f = de->d_name;
        if (strcmp(f, "config.json") && !ends_with(f, ".safetensors") && !ends_with(f, ".safetensors.index.json"))
            continue;
        if (n == cap) names = ft_xrealloc(names, (size_t)(cap = cap ? 2 * cap : 8) * sizeof *names);
        names[n++] = ft_xstrdup(f);
    }
    closedir(d);
    if (n == 0) rc = ft_fail(e, FT_EINPUT, "%s: no config.json or *.safetensors to fingerprint", dir);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < n && !rc; i++) {
        char *p = ft_path_join(dir, names[i]);
        h = fnv(h, names[i], strlen(names[i]) + 1); /* shard names matter, the directory's does not */
        rc = fingerprint(&h, p, e);
        free(p);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc ? rc : add_hash(k, name, h, e);
}
