/* libFuzzer target: arbitrary bytes as a GGUF model file (io/gguf_model): whatever gguf_model_open accepts
 * must give a config.json our config parser takes or refuses with an error, a tokenizer.json the tokenizer
 * loader takes or refuses, and every tensor must read (dequantize, un-permute) without touching memory outside
 * its buffers. Seeds: tests/fuzz/corpus/fuzz_gguf_model (the small llama GGUF of tests/unit/test_gguf_roundtrip
 * written with FT_GGUF_SEEDS, plus fuzz_gguf's seeds). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/tokenizer/tokenizer.h"
#include "finetune/io/gguf_model.h"
#include "finetune/model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_model *m = NULL;
    ft_error e;
    if (gguf_model_open_memory(data, size, "fuzz.gguf", &m, &e) != 0) return 0;
    char *cj = NULL, *tj = NULL, *tc = NULL, *ct = NULL;
    if (gguf_model_config_json(m, &cj, &e) == 0) {
        ft_config c;
        (void)cfg_parse(cj, strlen(cj), "fuzz config", &c, &e);
    }
    if (gguf_model_tokenizer_json(m, &tj, &e) == 0 && gguf_model_tokenizer_config_json(m, &tc, &e) == 0) {
        ft_tokenizer *t = NULL;
        if (tok_load_texts(tj, strlen(tj), tc, strlen(tc), "fuzz tokenizer", &t, &e) == 0) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (tok_encode(t, "Hello 123 world", 15, 1, &ids, &n, &e) == 0) free(ids);
            tok_free(t);
        }
    }
    (void)gguf_model_chat_template(m, &ct, &e);
    for (size_t i = 0; i < gguf_model_count(m); i++) {
        const gguf_model_tensor *t = gguf_model_at(m, i);
        if (gguf_model_find(m, t->name) != t) abort();
        uint64_t n = t->t->n_elems;
        if (n > (1u << 22)) continue; /* bounded work per input */
        float *buf = malloc((size_t)(n ? n : 1) * sizeof(float));
        if (gguf_model_read_f32(m, t, buf, (size_t)n, &e) == 0 && t->unpermute_heads && t->ndim != 2) abort();
        free(buf);
    }
    free(cj), free(tj), free(tc), free(ct);
    gguf_model_close(m);
    return 0;
}
