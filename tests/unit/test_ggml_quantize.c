/* ggml_quantize: Q8_0 and Q4_0 bytes equal gguf-py's gguf.quants.quantize on the same fp32 values
 * (tests/fixtures/gguf_export, made by tests/reference/make_gguf_export_fixtures.py), and the blocks
 * dequantize (ggml_types) back within each format's step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/io/ggml_quantize.h"
#include "finetune/io/ggml_types.h"
#include "tests/test.h"

static void *slurp(const char *rel, size_t *n) {
    char p[1024];
    t_src(rel, p, sizeof p);
    FILE *f = fopen(p, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", p);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc((size_t)len + 1);
    if (fread(b, 1, (size_t)len, f) != (size_t)len) exit(1);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void check_type(const float *x, int64_t n, int type, const char *fixture) {
    size_t nb;
    uint8_t *want = slurp(fixture, &nb);
    size_t bytes = (size_t)(n / 32) * ggml_type_size(type);
    CHECK(nb == bytes);
    uint8_t *got = calloc(1, bytes);
    int rc = type == GGML_TYPE_Q8_0 ? ggml_quantize_q8_0(x, got, n) : ggml_quantize_q4_0(x, got, n);
    CHECK(rc == 0);
    size_t bad = 0, first = (size_t)-1;
    for (size_t i = 0; i < bytes && i < nb; i++)
        if (got[i] != want[i]) {
            if (first == (size_t)-1) first = i;
            bad++;
        }
    if (bad) fprintf(stderr, "%s: %zu bytes differ, first at %zu (block %zu)\n", fixture, bad, first,
                     first / ggml_type_size(type));
    CHECK(bad == 0);
    /* round trip: within half a step (Q8_0: d/2; Q4_0: one step d at the clipped end) */
    float *back = malloc((size_t)n * sizeof(float));
    CHECK(ggml_dequantize(type, got, back, n) == 0);
    int far = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[b * 32 + i]));
        float step = type == GGML_TYPE_Q8_0 ? amax / 127 : amax / 8;
        for (int i = 0; i < 32; i++)
            if (fabsf(back[b * 32 + i] - x[b * 32 + i]) > step * 1.01f + 1e-30f) far++;
    }
    CHECK(far == 0);
    free(back);
    free(got);
    free(want);
}

int main(void) {
    size_t nx;
    float *x = slurp("tests/fixtures/gguf_export/quant_input.f32", &nx);
    int64_t n = (int64_t)(nx / sizeof(float));
    CHECK(n > 0 && n % 32 == 0);
    check_type(x, n, GGML_TYPE_Q8_0, "tests/fixtures/gguf_export/quant_q8_0.bin");
    check_type(x, n, GGML_TYPE_Q4_0, "tests/fixtures/gguf_export/quant_q4_0.bin");
    uint8_t buf[64];
    CHECK(ggml_quantize_q8_0(x, buf, 31) == -1); /* not a whole block */
    CHECK(ggml_quantize_q4_0(x, buf, 33) == -1);
    free(x);
    TEST_DONE();
}
