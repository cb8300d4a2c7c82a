/* finetune merge against PEFT's merge_and_unload (tests/fixtures/lora/peft_grads.safetensors "merged/..."
 * from tests/reference/make_lora_fixtures.py: adapter peft_a, r=4 all-linear, on llama-gqa, fp32):
 * - every merged linear within 1e-6 of PEFT's, every other tensor equal to the base's;
 * - sharded output (--max-shard-bytes) reads back the same; --dtype bf16 is the fp32 merge rounded;
 * - a bitsandbytes 4-bit base (tests/fixtures/lora/bnb4/f32) is dequantized first: merged = dequant + PEFT's
 *   delta (merged - base), and the output has no quant-state tensors;
 * - bad input (unknown peft_type, r <= 0, shapes or targets that do not fit the base, an --out that is
 *   not empty) exits 2 and writes nothing. */
#include <unistd.h>

#include "../test.h"
#include "finetune/cli/cli.h"
#include "finetune/io/safetensors.h"
#include "finetune/base/util.h"
#include "lora/lora.h"

static char base[512], adapter[512], fix[512], bnb[512];

static int run_merge(const char *b, const char *a, const char *out, const char *extra1, const char *extra2) {
    char *argv[12] = {"merge", "--base", (char *)b, "--adapter", (char *)a, "--out", (char *)out};
    int n = 7;
    if (extra1) argv[n++] = (char *)extra1;
    if (extra2) argv[n++] = (char *)extra2;
    argv[n] = NULL;
    return cmd_merge(n, argv);
}

static void rm_rf(const char *p) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", p);
}

static float *read_all(const st_model *m, const char *name, size_t *n) {
    const st_tensor_info *t = st_model_find(m, name);
    if (!t) return NULL;
    *n = 1;
    for (int d = 0; d < t->ndim; d++) *n *= (size_t)t->shape[d];
    float *v = malloc(*n * sizeof(float));
    ft_error e;
    if (st_read_f32(t, v, *n, &e)) {
        free(v);
        return NULL;
    }
    return v;
}

/* out vs PEFT (fp32 merge). bnb: the base is bitsandbytes' 4-bit one. tol_bf16: compare after bf16 rounding. */
static void check_merged(const char *out, int from_bnb, int bf16) {
    st_model *o = NULL, *f = NULL, *bm = NULL, *q = NULL;
    ft_error e;
    char p[600];
    snprintf(p, sizeof p, "%s/peft_grads.safetensors", fix);
    CHECK(st_model_open(out, &o, &e) == 0);
    CHECK(st_model_open(p, &f, &e) == 0);
    CHECK(st_model_open(base, &bm, &e) == 0);
    if (from_bnb) CHECK(st_model_open(bnb, &q, &e) == 0);
    if (!o || !f || !bm || (from_bnb && !q)) return;
    CHECK_MSG(st_model_count(o) == st_model_count(bm), "%zu tensors, the base has %zu", st_model_count(o),
              st_model_count(bm));
    int nm = 0;
    for (size_t i = 0; i < st_model_count(bm); i++) {
        const char *name = st_model_at(bm, i)->name;
        char key[300];
        snprintf(key, sizeof key, "merged/%s", name);
        size_t n = 0, nb = 0, nr = 0;
        float *got = read_all(o, name, &n), *b0 = read_all(bm, name, &nb), *ref = read_all(f, key, &nr);
        CHECK_MSG(got && n == nb, "%s missing or wrong size in the merged model", name);
        CHECK(st_model_find(o, name) && st_model_find(o, name)->dtype == (bf16 ? FT_BF16 : FT_F32));
        if (got && n == nb) {
            float *start = b0; /* what the merge starts from: the base, or its 4-bit dequantization */
            float *dq = NULL;
            if (from_bnb && st_model_find(q, name)->dtype == FT_U8) {
                const st_tensor_info *t = st_model_find(bm, name);
                dq = malloc(n * sizeof(float));
                CHECK(lora_bnb4_dequant(q, name, t->shape[0], t->shape[1], dq, bnb, &e) == 0);
                start = dq;
            } else if (from_bnb) {
                dq = read_all(q, name, &nb);
                start = dq;
            }
            double worst = 0;
            for (size_t k = 0; k < n; k++) {
                double want = ref ? (double)start[k] + ((double)ref[k] - (double)b0[k]) : start[k];
                if (bf16) want = ft_bf16_to_f32(ft_f32_to_bf16((float)want));
                double d = fabs(got[k] - want) / fmax(1.0, fabs(want));
                if (d > worst) worst = d;
            }
            double tol = bf16 ? 8e-3 : ref ? 1e-6 : 0;
            CHECK_MSG(worst <= tol, "%s: max rel diff %g vs PEFT's merge (tol %g)", name, worst, tol);
            nm += ref != NULL;
            free(dq);
        }
        free(got);
        free(b0);
        free(ref);
    }
    CHECK(nm == 14);
    for (size_t i = 0; i < st_model_count(o); i++) CHECK(!lora_is_bnb4_aux(st_model_at(o, i)->name));
    st_model_close(o);
    st_model_close(f);
    st_model_close(bm);
    if (q) st_model_close(q);
}

/* An adapter dir: peft_a's weights with a changed config (sed-like replace of one JSON fragment). */
static void bad_adapter(const char *dir, const char *from, const char *to) {
    rm_rf(dir);
    char cmd[2000];
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' && cp '%s/adapter_model.safetensors' '%s/' && sed 's/%s/%s/' '%s/adapter_config.json' > "
             "'%s/adapter_config.json'",
             dir, adapter, dir, from, to, adapter, dir);
    CHECK(system(cmd) == 0);
}

int main(void) {
    t_src("tests/fixtures/models/llama-gqa", base, sizeof base);
    t_src("tests/fixtures/lora/peft_a", adapter, sizeof adapter);
    t_src("tests/fixtures/lora", fix, sizeof fix);
    t_src("tests/fixtures/lora/bnb4/f32", bnb, sizeof bnb);
    char out[128];
    long pid = (long)getpid();

    snprintf(out, sizeof out, "merge_golden_%ld", pid);
    CHECK(run_merge(base, adapter, out, NULL, NULL) == 0);
    check_merged(out, 0, 0);
    char p[300];
    snprintf(p, sizeof p, "%s/config.json", out);
    CHECK(ft_file_exists(p));
    snprintf(p, sizeof p, "%s/generation_config.json", out);
    CHECK(ft_file_exists(p));
    /* a non-empty --out is refused and left alone */
    CHECK(run_merge(base, adapter, out, NULL, NULL) == FT_EINPUT);
    rm_rf(out);

    /* sharded like save_pretrained */
    CHECK(run_merge(base, adapter, out, "--max-shard-bytes", "40000") == 0);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", out);
    CHECK_MSG(ft_file_exists(p), "no shard index");
    check_merged(out, 0, 0);
    rm_rf(out);

    CHECK(run_merge(base, adapter, out, "--dtype", "bf16") == 0);
    check_merged(out, 0, 1);
    rm_rf(out);

    /* a 4-bit base, dequantized first */
    CHECK(run_merge(bnb, adapter, out, NULL, NULL) == 0);
    check_merged(out, 1, 0);
    rm_rf(out);

    /* bad input: exit 2, nothing written */
    char bad[128];
    snprintf(bad, sizeof bad, "merge_golden_bad_%ld", pid);
    struct {
        const char *from, *to;
    } cases[] = {
        {"\"peft_type\": \"LORA\"", "\"peft_type\": \"IA3\""},
        {"\"r\": 4", "\"r\": 0"},
        {"\"r\": 4", "\"r\": -2"},
        {"\"r\": 4", "\"r\": 8"},                             /* A/B shapes no longer fit */
        {"\"model.layers.0.mlp.down_proj\",", ""}, /* a tensor for a module the config does not target */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bad_adapter(bad, cases[i].from, cases[i].to);
        CHECK_MSG(run_merge(base, bad, out, NULL, NULL) == FT_EINPUT, "case %zu accepted", i);
        CHECK_MSG(!ft_file_exists(out), "case %zu wrote %s", i, out);
    }
    rm_rf(bad);
    /* an adapter for another model's shapes */
    char other[512];
    t_src("tests/fixtures/models/llama-hd12", other, sizeof other);
    CHECK(run_merge(other, adapter, out, NULL, NULL) == FT_EINPUT);
    CHECK(!ft_file_exists(out));
    TEST_DONE();
}
