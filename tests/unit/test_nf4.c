/* NF4 quantization against bitsandbytes: packed bytes, absmax, double-quantized absmax, nested absmax
 * and offset must EQUAL what bitsandbytes 0.50.2 wrote (tests/fixtures/lora/nf4.safetensors, made by
 * tests/reference/make_lora_fixtures.py); dequantized values likewise. */
#include <stdint.h>

#include "finetune/io/safetensors.h"
#include "lora/nf4.h"
#include "test.h"

static const st_tensor_info *get(st_file *f, const char *name) {
    const st_tensor_info *t = st_find(f, name);
    if (!t) {
        fprintf(stderr, "fixture tensor %s missing\n", name);
        exit(1);
    }
    return t;
}

static int count_diff_u8(const uint8_t *a, const uint8_t *b, size_t n) {
    int d = 0;
    for (size_t i = 0; i < n; i++) d += a[i] != b[i];
    return d;
}

static int count_diff_f32(const float *a, const float *b, size_t n) {
    int d = 0;
    for (size_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], 4) != 0;
    return d;
}

int main(void) {
    char path[1024];
    st_file *f = NULL;
    ft_error e = {0};
    if (st_open(t_src("tests/fixtures/lora/nf4.safetensors", path, sizeof path), &f, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    float map[256];
    nf4_dynamic_map(map);
    const st_tensor_info *dm = get(f, "dynamic_map"), *code = get(f, "nf4_code");
    CHECK_MSG(count_diff_f32(map, dm->data, 256) == 0, "dynamic map differs from bitsandbytes' create_dynamic_map");
    CHECK(count_diff_f32(NF4_CODE, code->data, 16) == 0);

    const char *cases[] = {"c0", "c1", "c2", "c3"};
    for (int c = 0; c < 4; c++) {
        char name[64];
#define T(suffix) (snprintf(name, sizeof name, "%s.%s", cases[c], suffix), get(f, name))
        const st_tensor_info *w = T("w"), *pk = T("packed"), *am = T("absmax"), *amq = T("absmax_q"),
                             *na = T("nested_absmax"), *off = T("offset"), *dq = T("dequant"),
                             *dqp = T("dequant_plain");
        int64_t rows = w->shape[0], cols = w->shape[1], n = rows * cols, nb = (n + 63) / 64;
        uint8_t *packed = malloc((size_t)(n + 1) / 2);
        float *absmax = malloc((size_t)nb * 4), *out = malloc((size_t)n * 4);
        nf4_quantize(w->data, n, 64, packed, absmax);
        CHECK_MSG(count_diff_u8(packed, pk->data, (size_t)(n + 1) / 2) == 0, "%s: packed bytes differ", cases[c]);
        CHECK_MSG(count_diff_f32(absmax, am->data, (size_t)nb) == 0, "%s: absmax differs", cases[c]);
        nf4_dequantize(packed, absmax, n, 64, out);
        CHECK_MSG(count_diff_f32(out, dqp->data, (size_t)n) == 0, "%s: plain dequantization differs", cases[c]);

        nf4_weight q;
        CHECK(nf4_weight_quantize(w->data, rows, cols, &q, &e) == 0);
        CHECK_MSG(count_diff_u8(q.absmax_q, amq->data, (size_t)nb) == 0, "%s: double-quantized absmax differs (%d of %lld)",
                  cases[c], count_diff_u8(q.absmax_q, amq->data, (size_t)nb), (long long)nb);
        CHECK_MSG(count_diff_f32(q.nested, na->data, (size_t)na->shape[0]) == 0, "%s: nested absmax differs", cases[c]);
        CHECK_MSG(memcmp(&q.offset, off->data, 4) == 0, "%s: offset %.9g vs %.9g", cases[c], q.offset,
                  *(const float *)off->data);
        nf4_dequantize(q.packed, q.absmax, n, 64, out);
        CHECK_MSG(count_diff_f32(out, dq->data, (size_t)n) == 0, "%s: dequantization (double-quantized) differs",
                  cases[c]);
        char *js = nf4_quant_state_json(&q, "float32");
        CHECK(strstr(js, "\"quant_type\": \"nf4\"") && strstr(js, "\"nested_offset\": "));
        free(js);
        nf4_weight_free(&q);
        free(packed);
        free(absmax);
        free(out);
    }
    st_close(f);
    TEST_DONE();
}
