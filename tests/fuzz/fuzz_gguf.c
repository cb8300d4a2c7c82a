/* libFuzzer target: arbitrary bytes as a GGUF file. Everything the parser accepts must lie inside
 * the buffer: every string and array of the metadata, every tensor's data, and each tensor of a
 * type we dequantize must dequantize. Seeds: tests/fuzz/corpus/fuzz_gguf (hand-built files from
 * tests/unit/test_gguf.c with FT_GGUF_SEEDS, and a cut of the gguf-py fixture). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/io/ggml_types.h"
#include "finetune/io/gguf.h"

static volatile uint8_t sink;

static void inside(const void *p, uint64_t n, const uint8_t *data, size_t size) {
    const uint8_t *q = p;
    if (n == 0) return;
    if (q < data || q > data + size || n > (uint64_t)(data + size - q)) abort();
    for (uint64_t k = 0; k < n; k++) sink ^= q[k];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file *f = NULL;
    ft_error e;
    if (gguf_open_memory(data, size, "fuzz.gguf", &f, &e) != 0) return 0;
    for (size_t i = 0; i < gguf_kv_count(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        if (gguf_find_kv(f, kv->key) != kv) abort();
        for (uint64_t j = 0; j < kv->n; j++) {
            const char *s;
            uint64_t n;
            int64_t iv;
            double dv;
            if (gguf_kv_str(kv, j, &s, &n) == 0) inside(s, n, data, size);
            (void)gguf_kv_int(kv, j, &iv);
            (void)gguf_kv_float(kv, j, &dv);
        }
    }
    for (size_t i = 0; i < gguf_tensor_count(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        inside(t->data, t->nbytes, data, size);
        if (gguf_find_tensor(f, t->name) != t) abort();
        if (ggml_can_dequantize(t->type) && t->n_elems <= (1u << 16)) {
            float *dst = malloc((size_t)(t->n_elems ? t->n_elems : 1) * sizeof *dst);
            if (gguf_read_f32(f, t, dst, t->n_elems, &e) != 0) abort();
            free(dst);
        }
    }
    gguf_close(f);
    return 0;
}
