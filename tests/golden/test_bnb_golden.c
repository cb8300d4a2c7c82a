/* finetune quantize against transformers + bitsandbytes 0.50.2 (tests/fixtures/lora/bnb4, made by
 * tests/reference/make_bnb_fixtures.py on the CPU from tests/fixtures/models/llama-gqa):
 * - the same tensor names, dtypes and shapes as bitsandbytes' save_pretrained;
 * - compute dtype bf16: every tensor byte-identical (and so the whole model.safetensors);
 * - compute dtype fp32: packed weights, quantized absmax, quant maps and the other tensors byte-identical;
 *   nested_absmax and the JSON's nested_offset within 1e-6 relative (the offset is torch's float32
 *   mean(absmax), whose summation order lora/nf4.c emulates only approximately for some block counts);
 * - the quant_state JSON: the same keys and values; config.json's quantization_config equal. */
#include <cjson/cJSON.h>
#include <unistd.h>

#include "../test.h"
#include "finetune/cli/cli.h"
#include "finetune/io/safetensors.h"
#include "finetune/base/util.h"

static cJSON *read_json(const char *path) {
    char *text = NULL;
    ft_error e;
    if (ft_read_file(path, &text, NULL, &e)) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

static void check_variant(const char *base, const char *ref_dir, const char *dtype, int exact) {
    char out[256];
    snprintf(out, sizeof out, "bnb_golden_%s_%ld", dtype, (long)getpid());
    char *argv[] = {"quantize", (char *)base, "--out", out, "--dtype", (char *)dtype, NULL};
    int rc = cmd_quantize(6, argv);
    CHECK_MSG(rc == 0, "quantize %s failed", dtype);
    if (rc) return;
    st_model *a = NULL, *b = NULL;
    ft_error e;
    CHECK(st_model_open(out, &a, &e) == 0);
    CHECK(st_model_open(ref_dir, &b, &e) == 0);
    if (!a || !b) return;
    CHECK_MSG(st_model_count(a) == st_model_count(b), "%zu tensors vs bitsandbytes' %zu", st_model_count(a),
              st_model_count(b));
    int nq = 0;
    for (size_t i = 0; i < st_model_count(b); i++) {
        const st_tensor_info *y = st_model_at(b, i), *x = st_model_find(a, y->name);
        CHECK_MSG(x != NULL, "missing %s", y->name);
        if (!x) continue;
        /* fp32: the JSON's length follows the printed nested_offset, compared by value below */
        int qs = ends_with(y->name, ".quant_state.bitsandbytes__nf4"), same_len = qs && !exact;
        CHECK_MSG(x->dtype == y->dtype && x->ndim == y->ndim && (same_len || x->nbytes == y->nbytes),
                  "%s: dtype/shape differ", y->name);
        for (int d = 0; d < y->ndim && d < x->ndim && !same_len; d++) CHECK(x->shape[d] == y->shape[d]);
        if (x->nbytes != y->nbytes && !same_len) continue;
        if (qs) {
            nq++;
            char *js[2];
            const st_tensor_info *t[2] = {x, y};
            for (int k = 0; k < 2; k++) {
                js[k] = ft_xmalloc(t[k]->nbytes + 1);
                memcpy(js[k], t[k]->data, t[k]->nbytes);
                js[k][t[k]->nbytes] = 0;
            }
            cJSON *jx = cJSON_Parse(js[0]), *jy = cJSON_Parse(js[1]);
            CHECK_MSG(jx && jy && cJSON_GetArraySize(jx) == cJSON_GetArraySize(jy), "%s: %s vs %s", y->name, js[0],
                      js[1]);
            const cJSON *it;
            cJSON_ArrayForEach(it, jy) {
                const cJSON *o = cJSON_GetObjectItem(jx, it->string);
                CHECK_MSG(o != NULL, "%s: key %s missing", y->name, it->string);
                if (!o) continue;
                if (!strcmp(it->string, "nested_offset") && !exact)
                    CHECK_CLOSE(o->valuedouble, it->valuedouble, 1e-6);
                else
                    CHECK_MSG(cJSON_Compare(o, it, 1), "%s: %s differs: %s vs %s", y->name, it->string, js[0], js[1]);
            }
            if (exact) CHECK_MSG(strcmp(js[0], js[1]) == 0, "%s: %s vs %s", y->name, js[0], js[1]);
            cJSON_Delete(jx);
            cJSON_Delete(jy);
            free(js[0]);
            free(js[1]);
        } else if (ends_with(y->name, ".nested_absmax") && !exact) {
            const float *fx = x->data, *fy = y->data;
            for (size_t k = 0; k < y->nbytes / 4; k++) CHECK_CLOSE(fx[k], fy[k], 1e-6);
        } else {
            CHECK_MSG(memcmp(x->data, y->data, y->nbytes) == 0, "%s: bytes differ from bitsandbytes'", y->name);
        }
    }
    CHECK(nq == 14); /* 2 layers x 7 linears */
    st_model_close(a);
    st_model_close(b);
    if (exact) { /* the same tensors in the same layout: the same file */
        char pa[300], pb[300];
        snprintf(pa, sizeof pa, "%s/model.safetensors", out);
        snprintf(pb, sizeof pb, "%s/model.safetensors", ref_dir);
        char *da = NULL, *db = NULL;
        size_t la = 0, lb = 0;
        CHECK(ft_read_file(pa, &da, &la, &e) == 0 && ft_read_file(pb, &db, &lb, &e) == 0);
        CHECK_MSG(la == lb && da && db && memcmp(da, db, la) == 0, "%s differs from %s", pa, pb);
        free(da);
        free(db);
    }
    char ca[300], cb[300];
    snprintf(ca, sizeof ca, "%s/config.json", out);
    snprintf(cb, sizeof cb, "%s/config.json", ref_dir);
    cJSON *ja = read_json(ca), *jb = read_json(cb);
    CHECK(ja && jb);
    if (ja && jb) {
        const cJSON *qa = cJSON_GetObjectItem(ja, "quantization_config"), *qb = cJSON_GetObjectItem(jb, "quantization_config");
        CHECK_MSG(qa && qb && cJSON_Compare(qa, qb, 1), "quantization_config differs from bitsandbytes'");
        CHECK(cJSON_Compare(cJSON_GetObjectItem(ja, "torch_dtype"), cJSON_GetObjectItem(jb, "dtype"), 1));
    }
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", out);
}

int main(void) {
    char base[512], f32[512], bf16[512];
    t_src("tests/fixtures/models/llama-gqa", base, sizeof base);
    t_src("tests/fixtures/lora/bnb4/f32", f32, sizeof f32);
    t_src("tests/fixtures/lora/bnb4/bf16", bf16, sizeof bf16);
    check_variant(base, bf16, "bf16", 1);
    check_variant(base, f32, "fp32", 0);
    /* refusals: a 4-bit checkpoint is not quantized again; nothing is written */
    char *argv[] = {"quantize", f32, "--out", "bnb_golden_again", NULL};
    CHECK(cmd_quantize(4, argv) == FT_EINPUT);
    CHECK(!ft_file_exists("bnb_golden_again"));
    TEST_DONE();
}
