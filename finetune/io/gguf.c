/* gguf: see gguf.h. The whole header is parsed through one bounds-checked cursor; nothing is
 * read past the end of the image, every count is checked against what is left before anything is
 * allocated for it. */
#include "finetune/io/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "finetune/io/ggml_types.h"

struct gguf_file {
    char *name;
    void *map; /* NULL for gguf_open_memory */
    size_t map_len;
    const uint8_t *buf;
    size_t len;
    uint32_t version;
    uint32_t alignment;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;
    gguf_tensor *tensors;
    uint64_t data_start;
};

typedef struct {
    const uint8_t *p;
    size_t len, pos;
    const char *name;
    ft_error *e;
} cursor;

static int cur_need(cursor *c, uint64_t n, const char *what) {
    if (n > c->len - c->pos)
        return ft_fail(c->e, FT_EINPUT, "%s: truncated GGUF: %s needs %llu bytes at offset %zu, the file has %zu",
                       c->name, what, (unsigned long long)n, c->pos, c->len);
    return FT_OK;
}

static int cur_u32(cursor *c, uint32_t *v, const char *what) {
    if (cur_need(c, 4, what)) return c->e ? c->e->code : FT_EINPUT;
    const uint8_t *p = c->p + c->pos;
    *v = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    c->pos += 4;
    return FT_OK;
}

static uint64_t rd_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static int cur_u64(cursor *c, uint64_t *v, const char *what) {
    if (cur_need(c, 8, what)) return FT_EINPUT;
    *v = rd_u64(c->p + c->pos);
    c->pos += 8;
    return FT_OK;
}

/* A string: u64 length then bytes; returns a pointer into the image. */
static int cur_str(cursor *c, const char **s, uint64_t *n, const char *what) {
    if (cur_u64(c, n, what)) return FT_EINPUT;
    if (*n > c->len - c->pos)
        return ft_fail(c->e, FT_EINPUT, "%s: corrupt GGUF: %s has length %llu at offset %zu, past the end of the file (%zu bytes)",
                       c->name, what, (unsigned long long)*n, c->pos - 8, c->len);
    *s = (const char *)(c->p + c->pos);
    c->pos += (size_t)*n;
    return FT_OK;
}

static const size_t VT_SIZE[GGUF_VT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static const char *VT_NAME[GGUF_VT_COUNT] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                              "string", "array", "u64", "i64", "f64"};

const char *gguf_type_name(int vtype) {
    return vtype >= 0 && vtype < GGUF_VT_COUNT ? VT_NAME[vtype] : "?";
}

static char *dup_n(const char *s, uint64_t n) {
    char *r = ft_xmalloc((size_t)n + 1);
    memcpy(r, s, (size_t)n);
    r[n] = 0;
    return r;
}

static int parse_kv(cursor *c, gguf_kv *kv, uint64_t idx) {
    const char *ks;
    uint64_t kn;
    char what[96];
    snprintf(what, sizeof what, "key %llu", (unsigned long long)idx);
    if (cur_str(c, &ks, &kn, what)) return FT_EINPUT;
    if (kn == 0) return ft_fail(c->e, FT_EINPUT, "%s: corrupt GGUF: key %llu is empty", c->name, (unsigned long long)idx);
    if (memchr(ks, 0, (size_t)kn))
        return ft_fail(c->e, FT_EINPUT, "%s: corrupt GGUF: key %llu contains a NUL byte", c->name, (unsigned long long)idx);
    kv->key = dup_n(ks, kn);
    uint32_t t;
    if (cur_u32(c, &t, kv->key)) return FT_EINPUT;
    if (t >= GGUF_VT_COUNT)
        return ft_fail(c->e, FT_EINPUT, "%s: corrupt GGUF: key '%s' has unknown value type %u", c->name, kv->key, t);
    kv->type = kv->elem_type = (int)t;
    kv->n = 1;
    if (t == GGUF_VT_ARRAY) {
        uint32_t et;
        if (cur_u32(c, &et, kv->key) || cur_u64(c, &kv->n, kv->key)) return FT_EINPUT;
        if (et >= GGUF_VT_COUNT)
            return ft_fail(c->e, FT_EINPUT, "%s: corrupt GGUF: array '%s' has unknown element type %u", c->name, kv->key, et);
        if (et == GGUF_VT_ARRAY)
            return ft_fail(c->e, FT_EINPUT, "%s: unsupported GGUF: '%s' is an array of arrays", c->name, kv->key);
        kv->elem_type = (int)et;
    }
    if (kv->elem_type == GGUF_VT_STRING) {
        /* each string takes at least its 8-byte length */
        if (kv->n > (c->len - c->pos) / 8)
            return ft_fail(c->e, FT_EINPUT, "%s: corrupt GGUF: '%s' claims %llu strings, more than the file holds",
                           c->name, kv->key, (unsigned long long)kv->n);
        kv->strs = ft_xmalloc(sizeof(char *) * (size_t)(kv->n ? kv->n : 1));
        uint64_t *lens = ft_xmalloc(sizeof(uint64_t) * (size_t)(kv->n ? kv->n : 1));
        kv->str_lens = lens;
        for (uint64_t i = 0; i < kv->n; i++)
            if (cur_str(c, &kv->strs[i], &lens[i], kv->key)) return FT_EINPUT;
        kv->data = NULL;
        return FT_OK;
    }
    uint64_t bytes;
    if (!ft_mul_ok(kv->n, VT_SIZE[kv->elem_type], &bytes) || bytes > c->len - c->pos)
        return ft_fail(c->e, FT_EINPUT, "%s: corrupt GGUF: '%s' (%llu x %s) runs past the end of the file",
                       c->name, kv->key, (unsigned long long)kv->n, VT_NAME[kv->elem_type]);
    kv->data = c->p + c->pos;
    c->pos += (size_t)bytes;
    return FT_OK;
}

static int cmp_off(const void *a, const void *b) {
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int parse(gguf_file *f, ft_error *e) {
    cursor c = {f->buf, f->len, 0, f->name, e};
    if (f->len < 4 || memcmp(f->buf, "GGUF", 4) != 0)
        return ft_fail(e, FT_EINPUT, "%s: not a GGUF file (no 'GGUF' magic at the start)", f->name);
    c.pos = 4;
    if (cur_u32(&c, &f->version, "version")) return FT_EINPUT;
    if (f->version != 2 && f->version != 3)
        return ft_fail(e, FT_EINPUT, "%s: unsupported GGUF version %u (2 and 3 are read)", f->name, f->version);
    if (cur_u64(&c, &f->n_tensors, "tensor count") || cur_u64(&c, &f->n_kv, "metadata count")) return FT_EINPUT;
    /* a key-value takes at least 8 + 1 + 4 + 1 bytes, a tensor info 8 + 1 + 4 + 8 + 4 + 8 */
    if (f->n_kv > (f->len - c.pos) / 14)
        return ft_fail(e, FT_EINPUT, "%s: corrupt GGUF: %llu metadata entries cannot fit in %zu bytes", f->name,
                       (unsigned long long)f->n_kv, f->len);
    if (f->n_tensors > (f->len - c.pos) / 33)
        return ft_fail(e, FT_EINPUT, "%s: corrupt GGUF: %llu tensors cannot fit in %zu bytes", f->name,
                       (unsigned long long)f->n_tensors, f->len);
    f->kv = ft_xcalloc((size_t)(f->n_kv ? f->n_kv : 1), sizeof(gguf_kv));
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        if (parse_kv(&c, &f->kv[i], i)) {
            f->n_kv = i + 1; /* free what was parsed */
            return FT_EINPUT;
        }
        for (uint64_t j = 0; j < i; j++)
            if (strcmp(f->kv[j].key, f->kv[i].key) == 0) {
                f->n_kv = i + 1;
                return ft_fail(e, FT_EINPUT, "%s: corrupt GGUF: duplicate key '%s'", f->name, f->kv[i].key);
            }
        if (strcmp(f->kv[i].key, "general.alignment") == 0) {
            const gguf_kv *kv = &f->kv[i];
            if (kv->type != GGUF_VT_UINT32) {
                f->n_kv = i + 1;
                return ft_fail(e, FT_EINPUT, "%s: corrupt GGUF: general.alignment is a %s, not a u32", f->name, VT_NAME[kv->type]);
            }
            int64_t a;
            gguf_kv_int(kv, 0, &a);
            if (a == 0 || (a & (a - 1)) != 0) {
                f->n_kv = i + 1;
                return ft_fail(e, FT_EINPUT, "%s: corrupt GGUF: general.alignment %lld is not a power of two", f->name, (long long)a);
            }
            f->alignment = (uint32_t)a;
        }
    }
    f->tensors = ft_xcalloc((size_t)(f->n_tensors ? f->n_tensors : 1), sizeof(gguf_tensor));
    uint64_t nt = f->n_tensors;
    f->n_tensors = 0;
    for (uint64_t i = 0; i < nt; i++) {
        gguf_tensor *t = &f->tensors[i];
        const char *s;
        uint64_t n;
        char what[64];
        snprintf(what, sizeof what, "tensor %llu's name", (unsigned long long)i);
        if (cur_str(&c, &s, &n, what)) return FT_EINPUT;
        if (n == 0 || memchr(s, 0, (size_t)n))
            return ft_fail(e, FT_EINPUT, "%s: corrupt GGUF: tensor %llu has an empty name or one with a NUL byte", f->name,
                           (unsigned long long)i);
        t->name = dup_n(s, n);
        f->n_tensors = i + 1;
        uint32_t nd, type;
        if (cur_u32(&c, &nd, t->name)) return FT_EINPUT;
        if (nd < 1 || nd > GGUF_MAX_DIMS)
            return ft_fail(e, FT_EINPUT, "%s: corrupt GGUF: tensor '%s' has %u dims (1 to %d allowed)", f->name, t->name, nd, GGUF_MAX_DIMS);
        t->n_dims = (int)nd;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++)
            if (cur_u64(&c, &t->ne[d], t->name)) return FT_EINPUT;
        if (cur_u32(&c, &type, t->name) || cur_u64(&c, &t->offset, t->name)) return FT_EINPUT;
        t->type = (int)type;
        if (type >= GGML_TYPE_COUNT || ggml_blck_size((int)type) == 0)
            return ft_fail(e, FT_EINPUT, "%s: corrupt GGUF: tensor '%s' has unknown type %u", f->name, t->name, type);
        t->n_elems = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++)
            if (!ft_mul_ok(t->n_elems, t->ne[d], &t->n_elems) || (t->ne[d] > INT64_MAX))
                return ft_fail(e, FT_EINPUT, "%s: corrupt GGUF: tensor '%s': element count overflows", f->name, t->name);
        if (t->ne[0] % (uint64_t)ggml_blck_size(t->type))
            return ft_fail(e, FT_EINPUT, "%s: corrupt GGUF: tensor '%s': first dim %llu is not a multiple of %s's block size %d",
                           f->name, t->name, (unsigned long long)t->ne[0], ggml_type_name(t->type), ggml_blck_size(t->type));
        if (ggml_nbytes(t->type, t->n_elems, &t->nbytes))
            return ft_fail(e, FT_EINPUT, "%s: corrupt GGUF: tensor '%s': byte size overflows", f->name, t->name);
        if (t->offset % f->alignment)
            return ft_fail(e, FT_EINPUT, "%s: corrupt GGUF: tensor '%s': offset %llu is not a multiple of the alignment %u",
                           f->name, t->name, (unsigned long long)t->offset, f->alignment);
        for (uint64_t j = 0; j < i; j++)
            if (strcmp(f->tensors[j].name, t->name) == 0)
                return ft_fail(e, FT_EINPUT, "%s: corrupt GGUF: duplicate tensor '%s'", f->name, t->name);
    }
    uint64_t ds = ((uint64_t)c.pos + f->alignment - 1) / f->alignment * f->alignment;
    if (nt > 0 && ds > f->len)
        return ft_fail(e, FT_EINPUT, "%s: truncated GGUF: the data section would start at %llu, past the end (%zu bytes)",
                       f->name, (unsigned long long)ds, f->len);
    f->data_start = ds;
    uint64_t avail = f->len > ds ? f->len - ds : 0;
    gguf_tensor **order = ft_xmalloc(sizeof(gguf_tensor *) * (size_t)(nt ? nt : 1));
    for (uint64_t i = 0; i < nt; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset > avail || t->nbytes > avail - t->offset) {
            free(order);
            return ft_fail(e, FT_EINPUT, "%s: truncated GGUF: tensor '%s' (%s, %llu bytes at data offset %llu) runs past the end of the file (%llu data bytes)",
                           f->name, t->name, ggml_type_name(t->type), (unsigned long long)t->nbytes,
                           (unsigned long long)t->offset, (unsigned long long)avail);
        }
        t->data = f->buf + ds + t->offset;
        order[i] = t;
    }
    qsort(order, (size_t)nt, sizeof *order, cmp_off);
    for (uint64_t i = 1; i < nt; i++)
        if (order[i - 1]->offset + order[i - 1]->nbytes > order[i]->offset) {
            int rc = ft_fail(e, FT_EINPUT, "%s: corrupt GGUF: tensors '%s' and '%s' overlap", f->name, order[i - 1]->name, order[i]->name);
            free(order);
            return rc;
        }
    free(order);
    return FT_OK;
}

static void free_contents(gguf_file *f) {
    if (f->kv)
        for (uint64_t i = 0; i < f->n_kv; i++) {
            free((void *)f->kv[i].key);
            free((void *)f->kv[i].strs);
            free((void *)f->kv[i].str_lens);
        }
    free(f->kv);
    if (f->tensors)
        for (uint64_t i = 0; i < f->n_tensors; i++) free((void *)f->tensors[i].name);
    free(f->tensors);
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    free_contents(f);
    if (f->map) munmap(f->map, f->map_len);
    free(f->name);
    free(f);
}

int gguf_open_memory(const void *buf, size_t len, const char *name, gguf_file **out, ft_error *e) {
    *out = NULL;
    gguf_file *f = ft_xcalloc(1, sizeof *f);
    f->name = ft_xstrdup(name ? name : "<memory>");
    f->buf = buf;
    f->len = len;
    if (parse(f, e)) {
        gguf_close(f);
        return FT_EINPUT;
    }
    *out = f;
    return FT_OK;
}

int gguf_open(const char *path, gguf_file **out, ft_error *e) {
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ft_fail_sys(e, errno, "%s: cannot open GGUF file", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return ft_fail_sys(e, err, "%s: cannot stat", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ft_fail(e, FT_EINPUT, "%s: not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int err = errno;
            close(fd);
            return ft_fail_sys(e, err, "%s: cannot mmap", path);
        }
    }
    close(fd);
    gguf_file *f = ft_xcalloc(1, sizeof *f);
    f->name = ft_xstrdup(path);
    f->map = map;
    f->map_len = len;
    f->buf = map ? map : (const uint8_t *)"";
    f->len = len;
    if (parse(f, e)) {
        gguf_close(f);
        return FT_EINPUT;
    }
    *out = f;
    return FT_OK;
}

const char *gguf_name(const gguf_file *f) { return f->name; }
uint32_t gguf_version(const gguf_file *f) { return f->version; }
uint32_t gguf_alignment(const gguf_file *f) { return f->alignment; }
size_t gguf_kv_count(const gguf_file *f) { return (size_t)f->n_kv; }
const gguf_kv *gguf_kv_at(const gguf_file *f, size_t i) { return i < f->n_kv ? &f->kv[i] : NULL; }

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (strcmp(f->kv[i].key, key) == 0) return &f->kv[i];
    return NULL;
}

int gguf_kv_int(const gguf_kv *kv, uint64_t i, int64_t *out) {
    if (!kv || i >= kv->n || !kv->data) return -1;
    const uint8_t *p = kv->data + i * VT_SIZE[kv->elem_type];
    switch (kv->elem_type) {
    case GGUF_VT_UINT8: *out = p[0]; return 0;
    case GGUF_VT_BOOL: *out = p[0] != 0; return 0;
    case GGUF_VT_INT8: *out = (int8_t)p[0]; return 0;
    case GGUF_VT_UINT16: *out = (uint16_t)(p[0] | (p[1] << 8)); return 0;
    case GGUF_VT_INT16: *out = (int16_t)(uint16_t)(p[0] | (p[1] << 8)); return 0;
    case GGUF_VT_UINT32: *out = (uint32_t)rd_u64((const uint8_t[8]){p[0], p[1], p[2], p[3], 0, 0, 0, 0}); return 0;
    case GGUF_VT_INT32: *out = (int32_t)(uint32_t)rd_u64((const uint8_t[8]){p[0], p[1], p[2], p[3], 0, 0, 0, 0}); return 0;
    case GGUF_VT_UINT64: {
        uint64_t v = rd_u64(p);
        if (v > INT64_MAX) return -1;
        *out = (int64_t)v;
        return 0;
    }
    case GGUF_VT_INT64: *out = (int64_t)rd_u64(p); return 0;
    default: return -1;
    }
}

int gguf_kv_float(const gguf_kv *kv, uint64_t i, double *out) {
    if (!kv || i >= kv->n || !kv->data) return -1;
    const uint8_t *p = kv->data + i * VT_SIZE[kv->elem_type];
    if (kv->elem_type == GGUF_VT_FLOAT32) {
        float v;
        memcpy(&v, p, 4);
        *out = v;
        return 0;
    }
    if (kv->elem_type == GGUF_VT_FLOAT64) {
        memcpy(out, p, 8);
        return 0;
    }
    if (kv->elem_type == GGUF_VT_BOOL) return -1;
    int64_t v;
    if (gguf_kv_int(kv, i, &v)) return -1;
    *out = (double)v;
    return 0;
}

int gguf_kv_str(const gguf_kv *kv, uint64_t i, const char **s, uint64_t *len) {
    if (!kv || kv->elem_type != GGUF_VT_STRING || i >= kv->n) return -1;
    *s = kv->strs[i];
    *len = kv->str_lens[i];
    return 0;
}

static int get_scalar(const gguf_file *f, const char *key, const gguf_kv **kv, ft_error *e) {
    *kv = gguf_find_kv(f, key);
    if (!*kv) return ft_fail(e, FT_EINPUT, "%s: GGUF metadata has no '%s'", f->name, key);
    if ((*kv)->type == GGUF_VT_ARRAY)
        return ft_fail(e, FT_EINPUT, "%s: GGUF metadata '%s' is an array, a single value was expected", f->name, key);
    return FT_OK;
}

int gguf_get_int(const gguf_file *f, const char *key, int64_t *out, ft_error *e) {
    const gguf_kv *kv;
    if (get_scalar(f, key, &kv, e)) return FT_EINPUT;
    if (kv->type == GGUF_VT_BOOL || gguf_kv_int(kv, 0, out))
        return ft_fail(e, FT_EINPUT, "%s: GGUF metadata '%s' is a %s, an integer was expected", f->name, key, VT_NAME[kv->type]);
    return FT_OK;
}

int gguf_get_float(const gguf_file *f, const char *key, double *out, ft_error *e) {
    const gguf_kv *kv;
    if (get_scalar(f, key, &kv, e)) return FT_EINPUT;
    if (gguf_kv_float(kv, 0, out))
        return ft_fail(e, FT_EINPUT, "%s: GGUF metadata '%s' is a %s, a number was expected", f->name, key, VT_NAME[kv->type]);
    return FT_OK;
}

int gguf_get_bool(const gguf_file *f, const char *key, int *out, ft_error *e) {
    const gguf_kv *kv;
    if (get_scalar(f, key, &kv, e)) return FT_EINPUT;
    if (kv->type != GGUF_VT_BOOL)
        return ft_fail(e, FT_EINPUT, "%s: GGUF metadata '%s' is a %s, a bool was expected", f->name, key, VT_NAME[kv->type]);
    *out = kv->data[0] != 0;
    return FT_OK;
}

int gguf_get_str(const gguf_file *f, const char *key, char **out, ft_error *e) {
    const gguf_kv *kv;
    *out = NULL;
    if (get_scalar(f, key, &kv, e)) return FT_EINPUT;
    if (kv->type != GGUF_VT_STRING)
        return ft_fail(e, FT_EINPUT, "%s: GGUF metadata '%s' is a %s, a string was expected", f->name, key, VT_NAME[kv->type]);
    if (memchr(kv->strs[0], 0, (size_t)kv->str_lens[0]))
        return ft_fail(e, FT_EINPUT, "%s: GGUF metadata '%s' contains a NUL byte", f->name, key);
    *out = dup_n(kv->strs[0], kv->str_lens[0]);
    return FT_OK;
}

int gguf_get_arr(const gguf_file *f, const char *key, const gguf_kv **out, ft_error *e) {
    *out = gguf_find_kv(f, key);
    if (!*out) return ft_fail(e, FT_EINPUT, "%s: GGUF metadata has no '%s'", f->name, key);
    if ((*out)->type != GGUF_VT_ARRAY)
        return ft_fail(e, FT_EINPUT, "%s: GGUF metadata '%s' is a %s, an array was expected", f->name, key, VT_NAME[(*out)->type]);
    return FT_OK;
}

size_t gguf_tensor_count(const gguf_file *f) { return (size_t)f->n_tensors; }
const gguf_tensor *gguf_tensor_at(const gguf_file *f, size_t i) { return i < f->n_tensors ? &f->tensors[i] : NULL; }

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

int gguf_read_f32(const gguf_file *f, const gguf_tensor *t, float *dst, uint64_t n, ft_error *e) {
    if (n != t->n_elems)
        return ft_fail(e, FT_EINPUT, "%s: tensor '%s' has %llu elements, %llu expected", f->name, t->name,
                       (unsigned long long)t->n_elems, (unsigned long long)n);
    if (!ggml_can_dequantize(t->type))
        return ft_fail(e, FT_EINPUT, "%s: tensor '%s' is %s, which is not read (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K are)",
                       f->name, t->name, ggml_type_name(t->type));
    if (ggml_dequantize(t->type, t->data, dst, (int64_t)n))
        return ft_fail(e, FT_EINTERNAL, "%s: tensor '%s': dequantization failed", f->name, t->name);
    return FT_OK;
}

int gguf_is_gguf_path(const char *path) {
    size_t n = strlen(path);
    if (n >= 5 && strcmp(path + n - 5, ".gguf") == 0) return 1;
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    char m[4];
    ssize_t r = read(fd, m, 4);
    close(fd);
    return r == 4 && memcmp(m, "GGUF", 4) == 0;
}
