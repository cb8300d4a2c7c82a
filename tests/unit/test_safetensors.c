/* safetensors: read files written by the Python library (tests/reference/make_ckpt_fixtures.py),
 * write byte-identical files, sharded checkpoints both ways, and every corruption is an error. */
#include "finetune/io/safetensors.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

static char tmpdir[] = "/tmp/ft_st_XXXXXX";

static char *fixture(const char *rel) {
    static char buf[8][512];
    static int k = 0;
    char r[300];
    snprintf(r, sizeof r, "tests/fixtures/ckpt/%s", rel);
    k = (k + 1) % 8;
    return (char *)t_src(r, buf[k], sizeof buf[k]);
}

static char *tmp(const char *name) { return ft_path_join(tmpdir, name); }

static int read_all(const char *path, char **buf, size_t *len) {
    ft_error e;
    return ft_read_file(path, buf, len, &e);
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(p, 1, n, f) == n);
    fclose(f);
}

static int files_equal(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int eq = read_all(a, &x, &nx) == 0 && read_all(b, &y, &ny) == 0 && nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return eq;
}

static double elem(const st_tensor_info *t, size_t i) {
    const unsigned char *p = (const unsigned char *)t->data + i * ft_dtype_size(t->dtype);
    switch (t->dtype) {
    case FT_F32: { float v; memcpy(&v, p, 4); return v; }
    case FT_F64: { double v; memcpy(&v, p, 8); return v; }
    case FT_F16: { uint16_t v; memcpy(&v, p, 2); return ft_f16_to_f32(v); }
    case FT_BF16: { uint16_t v; memcpy(&v, p, 2); return ft_bf16_to_f32(v); }
    case FT_I64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    case FT_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case FT_I16: { int16_t v; memcpy(&v, p, 2); return v; }
    case FT_I8: return (int8_t)p[0];
    default: return p[0];
    }
}

/* The formulas of make_ckpt_fixtures.py: value i = i * scale + offset. */
static void check_arange(const st_model *m, const char *name, ft_dtype dt, int ndim, const int64_t *shape,
                         double scale, double offset) {
    const st_tensor_info *t = st_model_find(m, name);
    CHECK_MSG(t != NULL, "tensor %s missing", name);
    if (!t) return;
    CHECK_MSG(t->dtype == dt, "%s dtype %s", name, ft_dtype_name(t->dtype));
    CHECK_MSG(t->ndim == ndim, "%s ndim %d", name, t->ndim);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        CHECK(t->shape[i] == shape[i]);
        n *= (size_t)shape[i];
    }
    CHECK(t->nbytes == n * ft_dtype_size(dt));
    for (size_t i = 0; i < n; i++) CHECK_CLOSE(elem(t, i), i * scale + offset, 0);
}

static void test_python_file(void) {
    st_model *m = NULL;
    ft_error e = {0};
    int rc = st_model_open(fixture("all_dtypes.safetensors"), &m, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc) return;
    CHECK(st_model_count(m) == 17);
    CHECK(st_model_metadata(m, "format") && strcmp(st_model_metadata(m, "format"), "pt") == 0);
    CHECK(st_model_metadata(m, "nope") == NULL);
    check_arange(m, "f32", FT_F32, 3, (int64_t[]){2, 3, 4}, 0.5, -3.0);
    check_arange(m, "f16", FT_F16, 2, (int64_t[]){2, 3}, 0.25, -1.0);
    check_arange(m, "bf16", FT_BF16, 1, (int64_t[]){8}, 2.0, -8.0);
    check_arange(m, "f64", FT_F64, 1, (int64_t[]){5}, 0.125, 1.0);
    check_arange(m, "i64", FT_I64, 1, (int64_t[]){4}, -1000000000000.0, 7);
    check_arange(m, "i32", FT_I32, 1, (int64_t[]){3}, -70000, 1);
    check_arange(m, "i16", FT_I16, 1, (int64_t[]){4}, -300, 2);
    check_arange(m, "i8", FT_I8, 1, (int64_t[]){5}, -3, 1);
    check_arange(m, "u8", FT_U8, 1, (int64_t[]){6}, 40, 0);
    check_arange(m, "model.layers.0.mlp.up_proj.weight", FT_F32, 4, (int64_t[]){2, 2, 2, 1}, 1, 0);
    const st_tensor_info *b = st_model_find(m, "bool");
    CHECK(b && b->dtype == FT_BOOL && b->ndim == 1 && b->shape[0] == 7);
    for (int i = 0; b && i < 7; i++) CHECK(((const uint8_t *)b->data)[i] == (i % 3 == 0));
    const st_tensor_info *s = st_model_find(m, "scalar");
    CHECK(s && s->ndim == 0 && s->nbytes == 4 && elem(s, 0) == 2.5);
    const st_tensor_info *z = st_model_find(m, "empty");
    CHECK(z && z->ndim == 2 && z->shape[0] == 0 && z->shape[1] == 3 && z->nbytes == 0);
    /* iteration is sorted by name */
    for (size_t i = 1; i < st_model_count(m); i++)
        CHECK(strcmp(st_model_at(m, i - 1)->name, st_model_at(m, i)->name) < 0);
    CHECK(st_model_at(m, 17) == NULL);

    /* fp16 / bf16 -> fp32 against torch's .float() */
    const char *half[2] = {"f16_rand", "bf16_rand"};
    for (int h = 0; h < 2; h++) {
        char ref[64];
        snprintf(ref, sizeof ref, "%s_f32", half[h]);
        float got[64], want[64];
        CHECK_MSG(st_model_read_f32(m, half[h], got, 64, &e) == 0, "%s", e.msg);
        CHECK_MSG(st_model_read_f32(m, ref, want, 64, &e) == 0, "%s", e.msg);
        for (int i = 0; i < 64; i++) CHECK_MSG(memcmp(&got[i], &want[i], 4) == 0, "%s[%d]: %g vs %g", half[h], i, got[i], want[i]);
    }
    float f[24];
    CHECK(st_model_read_f32(m, "f32", f, 24, &e) == 0 && f[23] == 23 * 0.5f - 3);
    CHECK(st_model_read_f32(m, "f32", f, 23, &e) == FT_EINPUT && strstr(e.msg, "'f32'") && strstr(e.msg, "24"));
    CHECK(st_model_read_f32(m, "i32", f, 3, &e) == FT_EINPUT && strstr(e.msg, "'i32'"));
    CHECK(st_model_read_f32(m, "absent", f, 3, &e) == FT_EINPUT && strstr(e.msg, "'absent'"));
    st_model_close(m);
}

/* Write the Python file's tensors (declared in reverse order) and compare bytes. */
static void test_byte_identical(void) {
    st_file *f = NULL;
    ft_error e = {0};
    const char *src = fixture("all_dtypes.safetensors");
    CHECK_MSG(st_open(src, &f, &e) == 0, "%s", e.msg);
    if (!f) return;
    char *out = tmp("ours.safetensors");
    st_writer *w = NULL;
    CHECK_MSG(st_writer_open(out, &w, &e) == 0, "%s", e.msg);
    CHECK(st_writer_metadata(w, "format", "pt", &e) == 0);
    for (size_t i = st_count(f); i-- > 0;) {
        const st_tensor_info *t = st_at(f, i);
        CHECK_MSG(st_writer_declare(w, t->name, t->dtype, t->ndim, t->shape, &e) == 0, "%s", e.msg);
    }
    CHECK(st_writer_declare(w, "f32", FT_F32, 1, (int64_t[]){1}, &e) != 0); /* twice */
    CHECK(!ft_file_exists(out)); /* not visible before finish */
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor_info *t = st_at(f, i);
        CHECK_MSG(st_writer_write(w, t->name, t->data, &e) == 0, "%s", e.msg);
    }
    CHECK(st_writer_write(w, "undeclared", "", &e) != 0);
    CHECK(st_writer_declare(w, "late", FT_F32, 1, (int64_t[]){1}, &e) != 0);
    CHECK_MSG(st_writer_finish(w, &e) == 0, "%s", e.msg);
    CHECK_MSG(files_equal(out, src), "%s differs from the Python-written %s", out, src);
    st_close(f);
    unlink(out);
    free(out);
}

static void test_roundtrip(void) {
    ft_error e = {0};
    char *out = tmp("rt.safetensors");
    st_writer *w = NULL;
    CHECK(st_writer_open(out, &w, &e) == 0);
    CHECK(st_writer_metadata(w, "format", "pt", &e) == 0);
    CHECK(st_writer_metadata(w, "quote\"and\\slash", "line\nbreak\ttab\x01 ünï", &e) == 0);
    unsigned char data[FT_DTYPE_COUNT][48];
    char names[FT_DTYPE_COUNT][32];
    for (int d = 0; d < FT_DTYPE_COUNT; d++) {
        for (int i = 0; i < 48; i++) data[d][i] = (unsigned char)(d * 31 + i * 7);
        if (d == FT_BOOL)
            for (int i = 0; i < 48; i++) data[d][i] &= 1;
        snprintf(names[d], sizeof names[d], "t.%s \"x\"", ft_dtype_name((ft_dtype)d));
        int64_t shape[2] = {2, (int64_t)(24 / ft_dtype_size((ft_dtype)d))};
        CHECK(st_writer_declare(w, names[d], (ft_dtype)d, 2, shape, &e) == 0);
    }
    for (int d = FT_DTYPE_COUNT; d-- > 0;) CHECK(st_writer_write(w, names[d], data[d], &e) == 0);
    CHECK_MSG(st_writer_finish(w, &e) == 0, "%s", e.msg);
    st_file *f = NULL;
    CHECK_MSG(st_open(out, &f, &e) == 0, "%s", e.msg);
    if (f) {
        CHECK(st_count(f) == FT_DTYPE_COUNT);
        CHECK(strcmp(st_metadata(f, "format"), "pt") == 0);
        const char *v = st_metadata(f, "quote\"and\\slash");
        CHECK(v && strcmp(v, "line\nbreak\ttab\x01 ünï") == 0);
        CHECK(st_metadata_count(f) == 2);
        for (int d = 0; d < FT_DTYPE_COUNT; d++) {
            const st_tensor_info *t = st_find(f, names[d]);
            CHECK_MSG(t && t->dtype == (ft_dtype)d && t->ndim == 2 && t->nbytes == 48 &&
                          memcmp(t->data, data[d], 48) == 0,
                      "dtype %s", ft_dtype_name((ft_dtype)d));
        }
        st_close(f);
    }
    /* a tensor declared but never written fails finish and leaves nothing */
    char *out2 = tmp("unfinished.safetensors");
    CHECK(st_writer_open(out2, &w, &e) == 0);
    CHECK(st_writer_declare(w, "a", FT_F32, 1, (int64_t[]){2}, &e) == 0);
    CHECK(st_writer_finish(w, &e) != 0 && strstr(e.msg, "'a'"));
    CHECK(!ft_file_exists(out2));
    /* abort leaves nothing either */
    CHECK(st_writer_open(out2, &w, &e) == 0);
    CHECK(st_writer_declare(w, "a", FT_F32, 1, (int64_t[]){2}, &e) == 0);
    CHECK(st_writer_write(w, "a", "12345678", &e) == 0);
    st_writer_abort(w);
    CHECK(!ft_file_exists(out2));
    DIR *dd = opendir(tmpdir);
    struct dirent *de;
    int stray = 0;
    while (dd && (de = readdir(dd)))
        if (strstr(de->d_name, ".tmp.")) stray++;
    if (dd) closedir(dd);
    CHECK(stray == 0);
    unlink(out);
    free(out);
    free(out2);
}

static void test_sharded(void) {
    ft_error e = {0};
    st_model *sh = NULL, *one = NULL;
    char dir[512];
    snprintf(dir, sizeof dir, "%s", fixture("sharded"));
    CHECK_MSG(st_model_open(dir, &sh, &e) == 0, "%s", e.msg);
    CHECK_MSG(st_model_open(fixture("sharded_single.safetensors"), &one, &e) == 0, "%s", e.msg);
    if (!sh || !one) return;
    CHECK(st_model_count(sh) == st_model_count(one) && st_model_count(sh) == 21);
    for (size_t i = 0; i < st_model_count(one); i++) {
        const st_tensor_info *a = st_model_at(one, i), *b = st_model_find(sh, a->name);
        CHECK_MSG(b && b->dtype == a->dtype && b->nbytes == a->nbytes && memcmp(a->data, b->data, a->nbytes) == 0,
                  "tensor %s", a->name);
    }
    CHECK(strcmp(st_model_metadata(sh, "format"), "pt") == 0);

    /* our sharded writer reproduces transformers' split, index and shard bytes */
    char *out = tmp("sharded_out");
    st_sharded *s = NULL;
    CHECK(st_sharded_open(out, NULL, 12000, &s, &e) == 0);
    CHECK(st_sharded_metadata(s, "format", "pt", &e) == 0);
    /* declaration order = state_dict order, which transformers' index does not record: use the order of the
       single file written from the same state_dict... which sorts. Take the Llama module order instead. */
    static const char *per_layer[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                                      "self_attn.o_proj.weight", "mlp.gate_proj.weight",    "mlp.up_proj.weight",
                                      "mlp.down_proj.weight",    "input_layernorm.weight",  "post_attention_layernorm.weight"};
    char names[32][96];
    int nn = 0;
    snprintf(names[nn++], 96, "model.embed_tokens.weight");
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < 9; k++) snprintf(names[nn++], 96, "model.layers.%d.%s", l, per_layer[k]);
    snprintf(names[nn++], 96, "model.norm.weight");
    snprintf(names[nn++], 96, "lm_head.weight");
    for (int i = 0; i < nn; i++) {
        const st_tensor_info *t = st_model_find(one, names[i]);
        CHECK_MSG(t != NULL, "%s", names[i]);
        if (t) CHECK(st_sharded_declare(s, t->name, t->dtype, t->ndim, t->shape, &e) == 0);
    }
    for (int i = nn; i-- > 0;) {
        const st_tensor_info *t = st_model_find(one, names[i]);
        if (t) CHECK(st_sharded_write(s, t->name, t->data, &e) == 0);
    }
    CHECK(st_sharded_num_shards(s) == 3);
    CHECK_MSG(st_sharded_finish(s, &e) == 0, "%s", e.msg);
    const char *files[] = {"model.safetensors.index.json", "model-00001-of-00003.safetensors",
                           "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"};
    for (int i = 0; i < 4; i++) {
        char *a = ft_path_join(out, files[i]), *b = ft_path_join(dir, files[i]);
        CHECK_MSG(files_equal(a, b), "%s differs from transformers' %s", a, b);
        unlink(a);
        free(a);
        free(b);
    }
    rmdir(out);
    free(out);

    /* one shard: plain model.safetensors, no index */
    out = tmp("single_out");
    CHECK(st_sharded_open(out, NULL, 0, &s, &e) == 0);
    CHECK(st_sharded_declare(s, "x", FT_F32, 1, (int64_t[]){2}, &e) == 0);
    CHECK(st_sharded_write(s, "x", "abcdefgh", &e) == 0);
    CHECK(st_sharded_finish(s, &e) == 0);
    st_model *m1 = NULL;
    CHECK_MSG(st_model_open(out, &m1, &e) == 0, "%s", e.msg);
    CHECK(m1 && st_model_count(m1) == 1);
    st_model_close(m1);
    char *p = ft_path_join(out, "model.safetensors");
    char *q = ft_path_join(out, "model.safetensors.index.json");
    CHECK(ft_file_exists(p) && !ft_file_exists(q));
    unlink(p);
    rmdir(out);
    free(p);
    free(q);
    free(out);
    st_model_close(sh);
    st_model_close(one);
}

static void test_tiny_llama(void) {
    char path[512];
    t_asset("models/tiny-random-llama/model.safetensors", path, sizeof path);
    if (!ft_file_exists(path)) {
        CHECK_MSG(0, "%s absent (a committed fixture)", path);
        return;
    }
    st_model *m = NULL;
    ft_error e = {0};
    CHECK_MSG(st_model_open(path, &m, &e) == 0, "%s", e.msg);
    if (!m) return;
    CHECK(st_model_count(m) == 21); /* embed, 2 x 9, norm, lm_head */
    const st_tensor_info *t = st_model_find(m, "model.embed_tokens.weight");
    CHECK(t && t->dtype == FT_F32 && t->ndim == 2 && t->shape[0] == 32000 && t->shape[1] == 16);
    t = st_model_find(m, "model.layers.1.mlp.down_proj.weight");
    CHECK(t && t->ndim == 2 && t->shape[0] == 16 && t->shape[1] == 64);
    float *buf = malloc(32000 * 16 * sizeof *buf);
    CHECK(st_model_read_f32(m, "lm_head.weight", buf, 32000 * 16, &e) == 0);
    free(buf);
    st_model_close(m);
    /* the directory form too */
    char dir[512];
    t_asset("models/tiny-random-llama", dir, sizeof dir);
    CHECK_MSG(st_model_open(dir, &m, &e) == 0, "%s", e.msg);
    st_model_close(m);
}

/* ---------------- corruptions ---------------- */

/* header text + n data bytes as a safetensors image */
static size_t make_image(unsigned char *buf, size_t cap, const char *header, size_t ndata) {
    size_t h = strlen(header);
    CHECK(8 + h + ndata <= cap);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    memset(buf + 8 + h, 0, ndata);
    return 8 + h + ndata;
}

static void expect_bad_image(const unsigned char *img, size_t len, const char *want) {
    st_file *f = NULL;
    ft_error e = {0};
    int rc = st_open_memory(img, len, "bad.safetensors", &f, &e);
    CHECK_MSG(rc == FT_EINPUT, "accepted (want error '%s')", want);
    CHECK_MSG(f == NULL, "file returned on error");
    CHECK_MSG(strstr(e.msg, want) != NULL, "error '%s' lacks '%s'", e.msg, want);
    CHECK_MSG(strstr(e.msg, "bad.safetensors") != NULL, "error '%s' does not name the file", e.msg);
    st_close(f);
}

static void expect_bad_header(const char *header, size_t ndata, const char *want) {
    static unsigned char img[4096];
    size_t n = make_image(img, sizeof img, header, ndata);
    expect_bad_image(img, n, want);
}

static void test_corrupt(void) {
    unsigned char img[4096];
    /* sanity: the good one parses */
    size_t n = make_image(img, sizeof img, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    st_file *f = NULL;
    ft_error e;
    CHECK(st_open_memory(img, n, "good", &f, &e) == 0);
    st_close(f);
    /* truncations of the good image, at every length */
    for (size_t k = 0; k < n; k++) {
        f = NULL;
        CHECK_MSG(st_open_memory(img, k, "trunc", &f, &e) == FT_EINPUT, "truncated at %zu accepted", k);
        st_close(f);
    }
    expect_bad_image(img, 5, "too short");
    img[7] = 0x10; /* header length way past the file */
    expect_bad_image(img, n, "header length");
    img[7] = 0;
    img[0] = (unsigned char)(img[0] + 12);
    expect_bad_image(img, n, "header length"); /* past the file by a little */

    expect_bad_header("not json at all", 0, "JSON");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",", 0, "JSON");
    expect_bad_header("[1,2,3]", 0, "JSON object");
    expect_bad_header("{\"a\":{}} x", 0, "trailing");
    expect_bad_header("{\"a\":[]}", 0, "'a'");
    expect_bad_header("{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, "unknown dtype 'F8_E4M3'");
    expect_bad_header("{\"a\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,2]}}", 2, "dtype");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "shape");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape[0]");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, "shape[0]");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, "5 dims");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "data_offsets");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "data_offsets");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "begin > end");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "outside the data");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[100,108]}}", 8, "outside the data");
    expect_bad_header("{\"model.layers.0.mlp.up_proj.weight\":{\"dtype\":\"F32\",\"shape\":[4,8],\"data_offsets\":[0,100]}}",
                      100, "tensor 'model.layers.0.mlp.up_proj.weight': data_offsets [0, 100] but shape [4, 8] of F32 needs 128 bytes");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8,
                      "overflows");
    expect_bad_header("{\"a\":{\"dtype\":\"F64\",\"shape\":[4503599627370496,2048],\"data_offsets\":[0,8]}}", 8,
                      "overflows");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                      12, "overlap");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                      16, "twice");
    expect_bad_header("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__");
    expect_bad_header("{\"__metadata__\":[]}", 0, "__metadata__");

    /* a real file cut short, through st_open */
    char *p = tmp("cut.safetensors");
    char *full = NULL;
    size_t flen = 0;
    CHECK(read_all(fixture("all_dtypes.safetensors"), &full, &flen) == 0);
    size_t cuts[] = {0, 3, 8, 100, flen - 1};
    for (int i = 0; i < 5; i++) {
        write_bytes(p, full, cuts[i]);
        st_file *g = NULL;
        int rc = st_open(p, &g, &e);
        CHECK_MSG(rc == FT_EINPUT && strstr(e.msg, p), "cut at %zu: rc %d %s", cuts[i], rc, e.msg);
        st_close(g);
    }
    free(full);
    unlink(p);
    free(p);
}

/* Copy the sharded fixture into a temp dir, then break it. */
static char *copy_sharded(const char *name) {
    char *d = tmp(name);
    mkdir(d, 0755);
    const char *files[] = {"model.safetensors.index.json", "model-00001-of-00003.safetensors",
                           "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "config.json"};
    for (int i = 0; i < 5; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "sharded/%s", files[i]);
        char *buf = NULL;
        size_t n = 0;
        CHECK(read_all(fixture(rel), &buf, &n) == 0);
        char *dst = ft_path_join(d, files[i]);
        write_bytes(dst, buf, n);
        free(dst);
        free(buf);
    }
    return d;
}

static void rm_dir(const char *d) {
    DIR *dd = opendir(d);
    struct dirent *de;
    while (dd && (de = readdir(dd))) {
        if (de->d_name[0] == '.') continue;
        char *p = ft_path_join(d, de->d_name);
        unlink(p);
        free(p);
    }
    if (dd) closedir(dd);
    rmdir(d);
}

static void expect_model_error(const char *dir, const char *want) {
    st_model *m = NULL;
    ft_error e = {0};
    int rc = st_model_open(dir, &m, &e);
    CHECK_MSG(rc == FT_EINPUT && m == NULL, "%s opened (want error '%s')", dir, want);
    CHECK_MSG(strstr(e.msg, want) != NULL, "error '%s' lacks '%s'", e.msg, want);
    st_model_close(m);
}

static void test_model_errors(void) {
    /* missing shard */
    char *d = copy_sharded("miss");
    char *p = ft_path_join(d, "model-00002-of-00003.safetensors");
    unlink(p);
    free(p);
    expect_model_error(d, "shard 'model-00002-of-00003.safetensors'");
    expect_model_error(d, "missing");
    rm_dir(d);
    free(d);

    /* index names a tensor that its shard lacks */
    d = copy_sharded("absent");
    p = ft_path_join(d, "model.safetensors.index.json");
    char *text = NULL;
    size_t n = 0;
    CHECK(read_all(p, &text, &n) == 0);
    char *at = strstr(text, "\"model.norm.weight\"");
    CHECK(at != NULL);
    if (at) memcpy(at + 1, "model.XXXX", 10);
    write_bytes(p, text, n);
    free(text);
    free(p);
    expect_model_error(d, "'model.XXXX.weight'");
    rm_dir(d);
    free(d);

    /* shard name with a path in it */
    d = copy_sharded("escape");
    p = ft_path_join(d, "model.safetensors.index.json");
    const char *idx = "{\"weight_map\":{\"a\":\"../../etc/passwd\"}}";
    write_bytes(p, idx, strlen(idx));
    free(p);
    expect_model_error(d, "not a plain file name");
    idx = "{\"metadata\":{}}";
    p = ft_path_join(d, "model.safetensors.index.json");
    write_bytes(p, idx, strlen(idx));
    free(p);
    expect_model_error(d, "weight_map");
    idx = "{\"weight_map\":";
    p = ft_path_join(d, "model.safetensors.index.json");
    write_bytes(p, idx, strlen(idx));
    free(p);
    expect_model_error(d, "JSON");
    rm_dir(d);
    free(d);

    /* pickle only */
    d = tmp("pickle");
    mkdir(d, 0755);
    p = ft_path_join(d, "pytorch_model.bin");
    write_bytes(p, "PK\003\004", 4);
    expect_model_error(d, "pickle");
    expect_model_error(d, "safe_serialization=True");
    expect_model_error(p, "pickle");
    unlink(p);
    free(p);
    expect_model_error(d, "no model.safetensors");
    rmdir(d);
    free(d);
    expect_model_error("/nonexistent/ckpt", "/nonexistent/ckpt");
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_python_file();
    test_byte_identical();
    test_roundtrip();
    test_sharded();
    test_tiny_llama();
    test_corrupt();
    test_model_errors();
    rmdir(tmpdir);
    TEST_DONE();
}
