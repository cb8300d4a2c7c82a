/* gguf_write: a file built with the writer reads back through gguf_open (every value type we write, F32, F16
 * and Q8_0 tensors, offsets aligned), duplicate keys/tensors and bad block multiples are errors, and no
 * temp file is left beside the output. GGUF_WRITE_KEEP=PATH also writes the file there (for gguf-py's
 * GGUFReader: tests/reference/check_gguf_write.py). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "finetune/io/ggml_quantize.h"
#include "finetune/io/ggml_types.h"
#include "finetune/io/gguf.h"
#include "finetune/io/gguf_write.h"
#include "tests/test.h"

static uint8_t qb[68];

static int build(const char *path, ft_error *e) {
    gguf_writer *w = gguf_writer_new();
    int rc = gguf_writer_str(w, "general.architecture", "llama", e);
    if (!rc) rc = gguf_writer_u32(w, "llama.block_count", 2, e);
    if (!rc) rc = gguf_writer_f32(w, "llama.rope.freq_base", 10000.0f, e);
    if (!rc) rc = gguf_writer_bool(w, "tokenizer.ggml.add_bos_token", 1, e);
    if (!rc) rc = gguf_writer_i32(w, "test.neg", -7, e);
    const char *toks[3] = {"<s>", "a b", "\xc4\xa0x"};
    int32_t tt[3] = {3, 1, 1};
    float sc[3] = {0, -1.5f, -2};
    if (!rc) rc = gguf_writer_arr_str(w, "tokenizer.ggml.tokens", toks, 3, e);
    if (!rc) rc = gguf_writer_arr_i32(w, "tokenizer.ggml.token_type", tt, 3, e);
    if (!rc) rc = gguf_writer_arr_f32(w, "tokenizer.ggml.scores", sc, 3, e);
    float a[3] = {1, 2, 3}, q[64];
    for (int i = 0; i < 64; i++) q[i] = (float)(i - 30) / 7;
    uint16_t h[5] = {0x3c00, 0x4000, 0xc000, 0, 0x3800};
    ggml_quantize_q8_0(q, qb, 64);
    uint64_t ne1[1] = {3}, ne2[2] = {5, 1}, ne3[2] = {32, 2};
    if (!rc) rc = gguf_writer_tensor(w, "a", GGML_TYPE_F32, 1, ne1, a, e);
    if (!rc) rc = gguf_writer_tensor(w, "b", GGML_TYPE_F16, 2, ne2, h, e);
    if (!rc) rc = gguf_writer_tensor(w, "c", GGML_TYPE_Q8_0, 2, ne3, qb, e);
    if (!rc) rc = gguf_writer_finish(w, path, e);
    gguf_writer_free(w);
    return rc;
}

int main(void) {
    ft_error e = {0};
    char dir[] = "/tmp/test_gguf_write.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/out.gguf", dir);
    CHECK(build(path, &e) == FT_OK);
    const char *keep = getenv("GGUF_WRITE_KEEP");
    if (keep) CHECK(build(keep, &e) == FT_OK);
    gguf_file *f = NULL;
    int rc = gguf_open(path, &f, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    CHECK(rc == FT_OK);
    if (f) {
        CHECK(gguf_version(f) == 3 && gguf_alignment(f) == 32);
        CHECK(gguf_kv_count(f) == 9);
        CHECK(!strcmp(gguf_kv_at(f, 0)->key, "general.alignment"));
        char *s = NULL;
        CHECK(gguf_get_str(f, "general.architecture", &s, &e) == FT_OK && s && !strcmp(s, "llama"));
        free(s);
        int64_t v;
        double d;
        int b;
        CHECK(gguf_get_int(f, "llama.block_count", &v, &e) == FT_OK && v == 2);
        CHECK(gguf_get_int(f, "test.neg", &v, &e) == FT_OK && v == -7);
        CHECK(gguf_get_float(f, "llama.rope.freq_base", &d, &e) == FT_OK && d == 10000.0);
        CHECK(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b, &e) == FT_OK && b == 1);
        const gguf_kv *kv;
        CHECK(gguf_get_arr(f, "tokenizer.ggml.tokens", &kv, &e) == FT_OK && kv->n == 3);
        const char *ts;
        uint64_t tl;
        CHECK(gguf_kv_str(kv, 2, &ts, &tl) == 0 && tl == 3 && !memcmp(ts, "\xc4\xa0x", 3));
        CHECK(gguf_get_arr(f, "tokenizer.ggml.token_type", &kv, &e) == FT_OK && gguf_kv_int(kv, 0, &v) == 0 && v == 3);
        CHECK(gguf_get_arr(f, "tokenizer.ggml.scores", &kv, &e) == FT_OK && gguf_kv_float(kv, 1, &d) == 0 && d == -1.5);
        CHECK(gguf_tensor_count(f) == 3);
        const gguf_tensor *t = gguf_find_tensor(f, "b");
        CHECK(t && t->type == GGML_TYPE_F16 && t->n_dims == 2 && t->ne[0] == 5 && t->offset % 32 == 0);
        float out[64];
        CHECK(t && gguf_read_f32(f, t, out, 5, &e) == FT_OK && out[0] == 1 && out[1] == 2 && out[2] == -2 && out[4] == 0.5f);
        t = gguf_find_tensor(f, "a");
        CHECK(t && gguf_read_f32(f, t, out, 3, &e) == FT_OK && out[2] == 3);
        t = gguf_find_tensor(f, "c");
        CHECK(t && t->type == GGML_TYPE_Q8_0 && t->offset % 32 == 0 && t->nbytes == 68 && !memcmp(t->data, qb, 68));
        gguf_close(f);
    }
    /* errors */
    gguf_writer *w = gguf_writer_new();
    CHECK(gguf_writer_u32(w, "k", 1, &e) == FT_OK);
    CHECK(gguf_writer_u32(w, "k", 2, &e) == FT_EINPUT && strstr(e.msg, "k added twice"));
    uint64_t ne[1] = {31};
    uint8_t z[64] = {0};
    CHECK(gguf_writer_tensor(w, "q", GGML_TYPE_Q8_0, 1, ne, z, &e) == FT_EINPUT && strstr(e.msg, "multiple of 32"));
    ne[0] = 4;
    CHECK(gguf_writer_tensor(w, "q", GGML_TYPE_F32, 1, ne, z, &e) == FT_OK);
    CHECK(gguf_writer_tensor(w, "q", GGML_TYPE_F32, 1, ne, z, &e) == FT_EINPUT);
    gguf_writer_free(w);
    /* only out.gguf in the dir: no temp left */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "test \"$(ls -A %s)\" = out.gguf", dir);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    TEST_DONE();
}
