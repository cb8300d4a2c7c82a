/* lora_merge: an adapter folded into its base, tensor by tensor (see the header). */
#define _GNU_SOURCE
#include "lora/lora_merge.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int lora_merge_linear_name(const char *name, int num_layers, int *layer, ft_linear *which) {
    const char *pre = "model.layers.";
    if (strncmp(name, pre, strlen(pre)) != 0) return 0;
    char *end;
    long l = strtol(name + strlen(pre), &end, 10);
    if (end == name + strlen(pre) || *end != '.' || l < 0 || l >= num_layers) return 0;
    for (int w = 0; w < FT_LIN_COUNT; w++) {
        size_t k = strlen(FT_LINEAR_NAMES[w]);
        if (strncmp(end + 1, FT_LINEAR_NAMES[w], k) == 0 && strcmp(end + 1 + k, ".weight") == 0) {
            *layer = (int)l;
            *which = (ft_linear)w;
            return 1;
        }
    }
    return 0;
}

static int is_float(ft_dtype dt) { return dt == FT_F32 || dt == FT_F16 || dt == FT_BF16; }

int lora_merge_check(const st_model *st, const ft_config *cfg, const lora_adapter *ad, const char *base,
                     const char *adapter, int64_t *biggest, ft_error *e) {
    *biggest = 0;
    for (size_t i = 0; i < st_model_count(st); i++) {
        const st_tensor_info *t = st_model_at(st, i);
        int l;
        ft_linear which;
        if (lora_is_bnb4_aux(t->name)) continue;
        int lin = lora_merge_linear_name(t->name, cfg->num_layers, &l, &which);
        int64_t n = 1;
        if (lin) {
            int64_t ro, co;
            lora_linear_shape(cfg, which, &ro, &co);
            if (t->dtype != FT_U8 && (t->ndim != 2 || t->shape[0] != ro || t->shape[1] != co))
                return ft_fail(e, FT_EINPUT, "%s: tensor %s has the wrong shape for the config ([%lld, %lld] expected)",
                               base, t->name, (long long)ro, (long long)co);
            n = ro * co;
        } else {
            for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
        }
        if (!is_float(t->dtype) && !(lin && t->dtype == FT_U8))
            return ft_fail(e, FT_EINPUT, "%s: tensor %s is %s; only F32/F16/BF16 tensors (and bitsandbytes 4-bit "
                           "linear weights) can be read", base, t->name, ft_dtype_name(t->dtype));
        if (n > *biggest) *biggest = n;
    }
    if (!ad) return FT_OK;
    char name[160];
    for (int l = 0; l < cfg->num_layers; l++)
        for (int k = 0; k < FT_LIN_COUNT; k++) {
            if (!ad->A[(size_t)l * FT_LIN_COUNT + k].data) continue;
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, FT_LINEAR_NAMES[k]);
            if (!st_model_find(st, name))
                return ft_fail(e, FT_EINPUT, "%s: the adapter %s adapts %s, which the base does not have", base,
                               adapter, name);
        }
    return FT_OK;
}

void lora_merge_scratch_free(lora_merge_scratch *s) {
    free(s->a);
    free(s->b);
    free(s->row);
    memset(s, 0, sizeof *s);
}

/* Give the kernel back the pages of a tensor we are done with: a mmapped checkpoint would otherwise stay
 * resident (and count in RSS) as it is read through. The pages stay in the page cache. */
static void drop_pages(const void *p, size_t n) {
    if (!p || !n) return;
    long ps = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(ps - 1), end = ((uintptr_t)p + n + (uintptr_t)ps - 1) & ~(uintptr_t)(ps - 1);
    madvise((void *)a, end - a, MADV_DONTNEED);
}

/* W [out, in] += scaling * B [out, r] A [r, in], in fp32 (row by row: one row of B A at a time). */
static void add_delta(float *W, const float *A, const float *B, int64_t out, int64_t in, int r, float scaling,
                      float *row) {
    for (int64_t i = 0; i < out; i++) {
        memset(row, 0, (size_t)in * sizeof(float));
        for (int k = 0; k < r; k++) {
            float bik = B[i * r + k];
            const float *a = A + (int64_t)k * in;
            for (int64_t j = 0; j < in; j++) row[j] += bik * a[j];
        }
        float *w = W + i * in;
        for (int64_t j = 0; j < in; j++) w[j] += scaling * row[j];
    }
}

int lora_merge_read(const st_model *st, const ft_config *cfg, const lora_adapter *ad, const st_tensor_info *t,
                    float *buf, lora_merge_scratch *s, const char *base, int *merged, ft_error *e) {
    *merged = 0;
    int l = -1;
    ft_linear which = FT_LIN_Q;
    int lin = lora_merge_linear_name(t->name, cfg->num_layers, &l, &which);
    int64_t n = 1, ro = 0, co = 0;
    if (lin) {
        lora_linear_shape(cfg, which, &ro, &co);
        n = ro * co;
    } else {
        for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    }
    int rc = t->dtype == FT_U8 ? lora_bnb4_dequant(st, t->name, ro, co, buf, base, e) : st_read_f32(t, buf, (size_t)n, e);
    drop_pages(t->data, t->nbytes);
    if (rc || !lin || !ad) return rc;
    size_t k = (size_t)l * FT_LIN_COUNT + which;
    if (!ad->A[k].data) return FT_OK;
    ft_backend *b = ad->b;
    size_t na = (size_t)ft_numel(&ad->A[k]), nb = (size_t)ft_numel(&ad->B[k]);
    s->a = ft_xrealloc(s->a, na * sizeof(float));
    s->b = ft_xrealloc(s->b, (nb > (size_t)ro ? nb : (size_t)ro) * sizeof(float));
    s->row = ft_xrealloc(s->row, (size_t)co * sizeof(float));
    b->download(b, s->a, ad->A[k].data, na * sizeof(float));
    b->download(b, s->b, ad->B[k].data, nb * sizeof(float));
    add_delta(buf, s->a, s->b, ro, co, ad->cfg.r, ad->scaling, s->row);
    if (ad->mag[k].data) { /* DoRA (PEFT's merge): W' = (m / ||W + sBA||) (W + sBA) per output row */
        b->download(b, s->b, ad->mag[k].data, (size_t)ro * sizeof(float));
        for (int64_t r = 0; r < ro; r++) {
            float *wr = buf + r * co;
            double ss = 0;
            for (int64_t j = 0; j < co; j++) ss += (double)wr[j] * wr[j];
            float f = s->b[r] / (float)sqrt(ss);
            for (int64_t j = 0; j < co; j++) wr[j] *= f;
        }
    }
    *merged = 1;
    return FT_OK;
}

char *lora_adapter_chat_template(const char *adapter) {
    char *p = ft_path_join(adapter, "tokenizer_config.json"), *text = NULL, *r = NULL;
    ft_error e;
    if (ft_file_exists(p) && ft_read_file(p, &text, NULL, &e) == FT_OK) {
        cJSON *j = cJSON_Parse(text);
        const cJSON *t = cJSON_GetObjectItem(j, "chat_template");
        if (cJSON_IsString(t)) r = ft_xstrdup(t->valuestring);
        cJSON_Delete(j);
    }
    free(text);
    free(p);
    return r;
}
