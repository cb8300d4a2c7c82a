/* gguf_write: an in-memory GGUF v3 builder (see the header). */
#include "finetune/io/gguf_write.h"

#include <stdlib.h>
#include <string.h>

#include "finetune/io/ggml_types.h"
#include "finetune/io/gguf.h"

typedef struct { uint8_t *p; size_t n, cap; } gw_buf;

static void buf_put(gw_buf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->n + n) c *= 2;
        b->p = ft_xrealloc(b->p, c);
        b->cap = c;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put_u32(gw_buf *b, uint32_t v) { buf_put(b, &v, 4); } /* little-endian host */
static void put_u64(gw_buf *b, uint64_t v) { buf_put(b, &v, 8); }
static void put_str(gw_buf *b, const char *s) {
    put_u64(b, strlen(s));
    buf_put(b, s, strlen(s));
}

struct gguf_writer {
    gw_buf kv, info, data;
    uint64_t n_kv, n_tensors;
    char **keys, **names;
};

gguf_writer *gguf_writer_new(void) {
    gguf_writer *w = ft_xcalloc(1, sizeof *w);
    return w;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    free(w->kv.p);
    free(w->info.p);
    free(w->data.p);
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    for (uint64_t i = 0; i < w->n_tensors; i++) free(w->names[i]);
    free(w->keys);
    free(w->names);
    free(w);
}

static int add_key(gguf_writer *w, const char *key, int type, ft_error *e) {
    if (!key || !*key) return ft_fail(e, FT_EINPUT, "gguf: empty key");
    if (!strcmp(key, "general.alignment")) return ft_fail(e, FT_EINPUT, "gguf: general.alignment is written by the writer");
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) return ft_fail(e, FT_EINPUT, "gguf: key %s added twice", key);
    w->keys = ft_xrealloc(w->keys, (size_t)(w->n_kv + 1) * sizeof *w->keys);
    w->keys[w->n_kv++] = ft_xstrdup(key);
    put_str(&w->kv, key);
    put_u32(&w->kv, (uint32_t)type);
    return FT_OK;
}

int gguf_writer_u32(gguf_writer *w, const char *key, uint32_t v, ft_error *e) {
    int rc = add_key(w, key, GGUF_VT_UINT32, e);
    if (!rc) put_u32(&w->kv, v);
    return rc;
}
int gguf_writer_i32(gguf_writer *w, const char *key, int32_t v, ft_error *e) {
    int rc = add_key(w, key, GGUF_VT_INT32, e);
    if (!rc) buf_put(&w->kv, &v, 4);
    return rc;
}
int gguf_writer_f32(gguf_writer *w, const char *key, float v, ft_error *e) {
    int rc = add_key(w, key, GGUF_VT_FLOAT32, e);
    if (!rc) buf_put(&w->kv, &v, 4);
    return rc;
}
int gguf_writer_bool(gguf_writer *w, const char *key, int v, ft_error *e) {
    int rc = add_key(w, key, GGUF_VT_BOOL, e);
    uint8_t b = v ? 1 : 0;
    if (!rc) buf_put(&w->kv, &b, 1);
    return rc;
}
int gguf_writer_str(gguf_writer *w, const char *key, const char *v, ft_error *e) {
    int rc = add_key(w, key, GGUF_VT_STRING, e);
    if (!rc) put_str(&w->kv, v);
    return rc;
}
int gguf_writer_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n, ft_error *e) {
    int rc = add_key(w, key, GGUF_VT_ARRAY, e);
    if (rc) return rc;
    put_u32(&w->kv, GGUF_VT_STRING);
    put_u64(&w->kv, n);
    for (uint64_t i = 0; i < n; i++) put_str(&w->kv, v[i]);
    return FT_OK;
}
int gguf_writer_arr_i32(gguf_writer *w, const char *key, const int32_t *v, uint64_t n, ft_error *e) {
    int rc = add_key(w, key, GGUF_VT_ARRAY, e);
    if (rc) return rc;
    put_u32(&w->kv, GGUF_VT_INT32);
    put_u64(&w->kv, n);
    buf_put(&w->kv, v, (size_t)n * 4);
    return FT_OK;
}
int gguf_writer_arr_f32(gguf_writer *w, const char *key, const float *v, uint64_t n, ft_error *e) {
    int rc = add_key(w, key, GGUF_VT_ARRAY, e);
    if (rc) return rc;
    put_u32(&w->kv, GGUF_VT_FLOAT32);
    put_u64(&w->kv, n);
    buf_put(&w->kv, v, (size_t)n * 4);
    return FT_OK;
}

static void pad_to(gw_buf *b, size_t align) {
    static const uint8_t z[GGUF_DEFAULT_ALIGNMENT] = {0};
    size_t r = b->n % align;
    if (r) buf_put(b, z, align - r);
}

int gguf_writer_tensor(gguf_writer *w, const char *name, int type, int n_dims, const uint64_t *ne,
                       const void *data, ft_error *e) {
    if (!name || !*name) return ft_fail(e, FT_EINPUT, "gguf: tensor with an empty name");
    for (uint64_t i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->names[i], name)) return ft_fail(e, FT_EINPUT, "gguf: tensor %s added twice", name);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) return ft_fail(e, FT_EINPUT, "gguf: tensor %s has %d dims", name, n_dims);
    uint64_t n = 1;
    for (int d = 0; d < n_dims; d++) {
        if (!ne[d] || n > UINT64_MAX / ne[d]) return ft_fail(e, FT_EINPUT, "gguf: tensor %s: bad dims", name);
        n *= ne[d];
    }
    int bs = ggml_blck_size(type);
    uint64_t nbytes;
    if (bs <= 0 || ne[0] % (uint64_t)bs || ggml_nbytes(type, n, &nbytes))
        return ft_fail(e, FT_EINPUT, "gguf: tensor %s: type %s needs the first dim (%llu) to be a multiple of %d",
                       name, ggml_type_name(type), (unsigned long long)ne[0], bs);
    w->names = ft_xrealloc(w->names, (size_t)(w->n_tensors + 1) * sizeof *w->names);
    w->names[w->n_tensors++] = ft_xstrdup(name);
    pad_to(&w->data, GGUF_DEFAULT_ALIGNMENT);
    put_str(&w->info, name);
    put_u32(&w->info, (uint32_t)n_dims);
    for (int d = 0; d < n_dims; d++) put_u64(&w->info, ne[d]);
    put_u32(&w->info, (uint32_t)type);
    put_u64(&w->info, w->data.n);
    buf_put(&w->data, data, (size_t)nbytes);
    return FT_OK;
}

int gguf_writer_finish(gguf_writer *w, const char *path, ft_error *e) {
    gw_buf f = {0};
    buf_put(&f, "GGUF", 4);
    put_u32(&f, 3);
    put_u64(&f, w->n_tensors);
    put_u64(&f, w->n_kv + 1);
    put_str(&f, "general.alignment");
    put_u32(&f, GGUF_VT_UINT32);
    put_u32(&f, GGUF_DEFAULT_ALIGNMENT);
    buf_put(&f, w->kv.p, w->kv.n);
    buf_put(&f, w->info.p, w->info.n);
    pad_to(&f, GGUF_DEFAULT_ALIGNMENT);
    buf_put(&f, w->data.p, w->data.n);
    pad_to(&f, GGUF_DEFAULT_ALIGNMENT);
    int rc = ft_write_file_atomic(path, f.p, f.n, e);
    free(f.p);
    return rc;
}
