/* libFuzzer target: arbitrary bytes as a safetensors file. Every tensor the
 * parser accepts must lie inside the buffer and be readable. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/io/safetensors.h"

static volatile uint8_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file *f = NULL;
    ft_error e;
    if (st_open_memory(data, size, "fuzz.safetensors", &f, &e) != 0) return 0;
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor_info *t = st_at(f, i);
        const uint8_t *p = t->data;
        if (p < data || p + t->nbytes > data + size) abort(); /* accepted bytes outside the file */
        for (size_t k = 0; k < t->nbytes; k++) sink ^= p[k]; /* ASan checks every byte */
        if (st_find(f, t->name) != t) abort();
        size_t es = ft_dtype_size(t->dtype);
        size_t n = t->nbytes / es;
        if (n <= (1u << 16) && (t->dtype == FT_F32 || t->dtype == FT_F16 || t->dtype == FT_BF16)) {
            float *dst = malloc((n ? n : 1) * sizeof *dst);
            if (st_read_f32(t, dst, n, &e) != 0) abort();
            free(dst);
        }
    }
    for (size_t i = 0; i < st_metadata_count(f); i++) {
        const char *k, *v;
        st_metadata_at(f, i, &k, &v);
        if (!k || !v || !st_metadata(f, k)) abort();
    }
    st_close(f);
    return 0;
}
