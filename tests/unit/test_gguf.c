/* gguf + ggml_types: read a GGUF file written by gguf-py (tests/reference/make_gguf_fixtures.py):
 * every metadata value type, and every tensor type dequantized bit-exactly as gguf-py's
 * gguf.quants.dequantize (ggml's reference); hand-built files with each kind of corruption (and
 * every truncation) are errors naming the file, never a crash. FT_GGUF_SEEDS=DIR writes the
 * hand-built images there (the seed corpus of tests/fuzz/fuzz_gguf.c). */
#include "finetune/io/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/io/ggml_types.h"
#include "test.h"

/* ---- a tiny GGUF builder ---- */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

typedef struct {
    uint32_t version, align, tensor_type, ndims;
    uint64_t ne0, ne1, offset;
    int dup_key, big_str, data_short, nested;
} spec;

/* magic, version, 1 tensor, 4 kvs (alignment, a string, an array, a float), the tensor's info,
 * padding, 64 bytes of F32 data (4 x 4) */
static buf build(spec s) {
    buf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, s.version);
    put_u64(&b, 1);
    put_u64(&b, 4);
    put_str(&b, "general.alignment");
    put_u32(&b, GGUF_VT_UINT32);
    put_u32(&b, s.align);
    put_str(&b, s.dup_key ? "general.alignment" : "general.name");
    put_u32(&b, GGUF_VT_STRING);
    if (s.big_str) {
        put_u64(&b, (uint64_t)1 << 40);
    } else
        put_str(&b, "tiny");
    put_str(&b, "tokenizer.ggml.tokens");
    put_u32(&b, GGUF_VT_ARRAY);
    put_u32(&b, s.nested ? GGUF_VT_ARRAY : GGUF_VT_STRING);
    put_u64(&b, 2);
    put_str(&b, "a");
    put_str(&b, "bc");
    put_str(&b, "llama.rope.freq_base");
    put_u32(&b, GGUF_VT_FLOAT32);
    float fb = 10000.0f;
    put(&b, &fb, 4);
    put_str(&b, "w");
    put_u32(&b, s.ndims);
    put_u64(&b, s.ne0);
    if (s.ndims > 1) put_u64(&b, s.ne1);
    put_u32(&b, s.tensor_type);
    put_u64(&b, s.offset);
    while (b.n % 32) put(&b, "", 1);
    float data[16];
    for (int i = 0; i < 16; i++) data[i] = (float)i;
    put(&b, data, s.data_short ? 60 : 64);
    return b;
}

static spec good(void) { return (spec){3, 32, GGML_TYPE_F32, 2, 4, 4, 0, 0, 0, 0, 0}; }

static int expect_error(spec s, const char *needle, const char *seed_name) {
    buf b = build(s);
    const char *dir = getenv("FT_GGUF_SEEDS");
    if (dir && seed_name) {
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, seed_name);
        FILE *f = fopen(p, "wb");
        if (f) {
            fwrite(b.p, 1, b.n, f);
            fclose(f);
        }
    }
    gguf_file *g = NULL;
    ft_error e = {0};
    int rc = gguf_open_memory(b.p, b.n, "bad.gguf", &g, &e);
    free(b.p);
    if (!needle) {
        CHECK_MSG(rc == 0, "%s", e.msg);
        gguf_close(g);
        return rc;
    }
    CHECK_MSG(rc == FT_EINPUT && g == NULL, "expected an error containing '%s'", needle);
    CHECK_MSG(strstr(e.msg, needle) && strstr(e.msg, "bad.gguf"), "message '%s' lacks '%s'", e.msg, needle);
    return rc;
}

static void test_hand_built(void) {
    /* the good one, then each corruption */
    buf b = build(good());
    gguf_file *g = NULL;
    ft_error e = {0};
    CHECK_MSG(gguf_open_memory(b.p, b.n, "tiny.gguf", &g, &e) == 0, "%s", e.msg);
    if (g) {
        CHECK(gguf_tensor_count(g) == 1 && gguf_kv_count(g) == 4);
        const gguf_tensor *t = gguf_find_tensor(g, "w");
        CHECK(t && t->ne[0] == 4 && t->ne[1] == 4 && t->nbytes == 64 && t->n_dims == 2);
        float out[16];
        CHECK(t && gguf_read_f32(g, t, out, 16, &e) == 0 && out[5] == 5.0f);
        CHECK(t && gguf_read_f32(g, t, out, 15, &e) == FT_EINPUT && strstr(e.msg, "'w'"));
        const gguf_kv *kv = NULL;
        CHECK(gguf_get_arr(g, "tokenizer.ggml.tokens", &kv, &e) == 0 && kv->n == 2);
        const char *s;
        uint64_t n;
        CHECK(kv && gguf_kv_str(kv, 1, &s, &n) == 0 && n == 2 && memcmp(s, "bc", 2) == 0);
        double fb;
        CHECK(gguf_get_float(g, "llama.rope.freq_base", &fb, &e) == 0 && fb == 10000.0);
        int64_t iv;
        CHECK(gguf_get_int(g, "llama.rope.freq_base", &iv, &e) == FT_EINPUT && strstr(e.msg, "f32"));
        CHECK(gguf_get_int(g, "nope", &iv, &e) == FT_EINPUT && strstr(e.msg, "'nope'"));
        gguf_close(g);
    }
    /* every truncation of the good file fails cleanly */
    int bad = 0;
    for (size_t n = 0; n < b.n; n++) {
        gguf_file *h = NULL;
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, b.p, n);
        if (gguf_open_memory(copy, n, "cut.gguf", &h, &e) == 0) bad++;
        gguf_close(h);
        free(copy);
    }
    CHECK_MSG(bad == 0, "%d truncations were accepted", bad);
    free(b.p);

    expect_error(good(), NULL, "good.gguf");
    spec s = good();
    s.version = 2;
    expect_error(s, NULL, "v2.gguf");
    s = good();
    s.version = 7;
    expect_error(s, "version 7", "version.gguf");
    s = good();
    s.align = 24;
    expect_error(s, "power of two", "align.gguf");
    s = good();
    s.dup_key = 1;
    expect_error(s, "duplicate key", NULL);
    s = good();
    s.big_str = 1;
    expect_error(s, "past the end", NULL);
    s = good();
    s.nested = 1;
    expect_error(s, "array of arrays", NULL);
    s = good();
    s.ndims = 5;
    expect_error(s, "dims", NULL);
    s = good();
    s.tensor_type = 4; /* removed Q4_2 */
    expect_error(s, "unknown type", NULL);
    s = good();
    s.tensor_type = GGML_TYPE_Q8_0; /* 4 is not a multiple of 32 */
    expect_error(s, "block size", "q8.gguf");
    s = good();
    s.offset = 16;
    expect_error(s, "alignment", NULL);
    s = good();
    s.offset = 32;
    expect_error(s, "runs past the end", NULL);
    s = good();
    s.data_short = 1;
    expect_error(s, "runs past the end", NULL);
    s = good();
    s.ne1 = (uint64_t)1 << 62;
    expect_error(s, "overflows", NULL);

    buf m = {0};
    put(&m, "GGML....", 8);
    gguf_file *h = NULL;
    CHECK(gguf_open_memory(m.p, m.n, "m.gguf", &h, &e) == FT_EINPUT && strstr(e.msg, "magic"));
    free(m.p);
    CHECK(gguf_open("/nonexistent/x.gguf", &h, &e) != 0 && strstr(e.msg, "/nonexistent/x.gguf"));
}

static void test_fixture(void) {
    char p[512];
    t_src("tests/fixtures/gguf/dequant.gguf", p, sizeof p);
    gguf_file *g = NULL;
    ft_error e = {0};
    CHECK_MSG(gguf_open(p, &g, &e) == 0, "%s", e.msg);
    if (!g) return;
    CHECK(gguf_version(g) == 3 && gguf_alignment(g) == 64);
    int64_t v;
    CHECK(gguf_get_int(g, "t.u8", &v, &e) == 0 && v == 200);
    CHECK(gguf_get_int(g, "t.i8", &v, &e) == 0 && v == -100);
    CHECK(gguf_get_int(g, "t.u16", &v, &e) == 0 && v == 60000);
    CHECK(gguf_get_int(g, "t.i16", &v, &e) == 0 && v == -30000);
    CHECK(gguf_get_int(g, "t.u32", &v, &e) == 0 && v == 4000000000LL);
    CHECK(gguf_get_int(g, "t.i32", &v, &e) == 0 && v == -2000000000LL);
    CHECK(gguf_get_int(g, "t.u64", &v, &e) == 0 && v == 10000000000LL);
    CHECK(gguf_get_int(g, "t.i64", &v, &e) == 0 && v == -10000000000LL);
    double d;
    CHECK(gguf_get_float(g, "t.f32", &d, &e) == 0 && d == 0.25);
    CHECK(gguf_get_float(g, "t.f64", &d, &e) == 0 && d == -1.5e-300);
    int bv = 0;
    CHECK(gguf_get_bool(g, "t.bool", &bv, &e) == 0 && bv == 1);
    char *s = NULL;
    CHECK(gguf_get_str(g, "t.str", &s, &e) == 0 && s && strcmp(s, "h\xc3\xa9llo") == 0);
    free(s);
    CHECK(gguf_get_str(g, "general.architecture", &s, &e) == 0 && s && strcmp(s, "test") == 0);
    free(s);
    const gguf_kv *kv;
    CHECK(gguf_get_arr(g, "t.arr_i32", &kv, &e) == 0 && kv->n == 3 && gguf_kv_int(kv, 1, &v) == 0 && v == -2);
    CHECK(gguf_get_arr(g, "t.arr_str", &kv, &e) == 0 && kv->n == 3);
    const char *str;
    uint64_t n;
    CHECK(gguf_kv_str(kv, 1, &str, &n) == 0 && n == 0);
    CHECK(gguf_kv_str(kv, 2, &str, &n) == 0 && n == 10 && memcmp(str, "<|im_end|>", 10) == 0);
    CHECK(gguf_get_bool(g, "t.u8", &bv, &e) == FT_EINPUT && strstr(e.msg, "t.u8") && strstr(e.msg, p));

    const char *types[] = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        char qn[32], rn[32];
        snprintf(qn, sizeof qn, "q.%s", types[i]);
        snprintf(rn, sizeof rn, "ref.%s", types[i]);
        const gguf_tensor *q = gguf_find_tensor(g, qn), *r = gguf_find_tensor(g, rn);
        CHECK_MSG(q && r, "%s missing", qn);
        if (!q || !r) continue;
        CHECK_MSG(strcmp(ggml_type_name(q->type), types[i]) == 0, "%s is %s", qn, ggml_type_name(q->type));
        CHECK(q->ne[0] == 512 && q->ne[1] == 2 && r->type == GGML_TYPE_F32 && q->n_elems == 1024);
        CHECK((uintptr_t)q->data % 64 == ((uintptr_t)gguf_tensor_at(g, 0)->data) % 64);
        float *a = malloc(1024 * 4), *b = malloc(1024 * 4);
        CHECK_MSG(gguf_read_f32(g, q, a, 1024, &e) == 0, "%s", e.msg);
        CHECK(gguf_read_f32(g, r, b, 1024, &e) == 0);
        int diff = 0;
        for (int k = 0; k < 1024; k++)
            if (memcmp(&a[k], &b[k], 4) != 0) diff++;
        CHECK_MSG(diff == 0, "%s: %d of 1024 values differ from gguf-py (e.g. %g vs %g)", types[i], diff, a[0], b[0]);
        free(a);
        free(b);
    }
    gguf_close(g);
    /* sizes as ggml has them */
    CHECK(ggml_type_size(GGML_TYPE_Q4_K) == 144 && ggml_blck_size(GGML_TYPE_Q4_K) == 256);
    CHECK(ggml_type_size(GGML_TYPE_Q6_K) == 210 && ggml_type_size(GGML_TYPE_Q8_0) == 34);
    CHECK(ggml_dequantize(GGML_TYPE_Q2_K, "", NULL, 256) == -1);
    CHECK(ggml_dequantize(GGML_TYPE_Q8_0, "", NULL, 31) == -1);
}

int main(void) {
    test_fixture();
    test_hand_built();
    TEST_DONE();
}
