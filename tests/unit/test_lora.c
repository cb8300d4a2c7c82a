/* LoRA: bad adapters are refused with errors naming the file and tensor; PEFT init (B = 0 leaves the model
 * unchanged, A within +-1/sqrt(in)); QLoRA's NF4 base through hooks equals the model with dequantized weights. */
#include <unistd.h>

#include "finetune/io/safetensors.h"
#include "lora/lora.h"
#include "lora/nf4.h"
#include "test.h"

static char base[1024], fix[1024];

static void write_text(const char *dir, const char *name, const char *text) {
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

/* copy peft_a's weights into dir and give it a config */
static void make_adapter(const char *dir, const char *config) {
    char cmd[3000];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/peft_a/adapter_model.safetensors' '%s/'", dir, fix, dir);
    if (system(cmd) != 0) exit(1);
    write_text(dir, "adapter_config.json", config);
}

static void expect_error(ft_model *m, const char *dir, const char *needle) {
    lora_adapter *a = NULL;
    ft_error e = {0};
    int rc = lora_load(dir, m, &a, &e);
    CHECK_MSG(rc == FT_EINPUT && strstr(e.msg, needle), "expected an error with '%s', got rc %d: %s", needle, rc,
              e.msg);
    lora_free(a);
}

static void logp_of(ft_model *m, float *lp) {
    int ids[10] = {1, 5, 9, 200, 31, 7, 77, 3, 120, 2};
    ft_error e;
    if (model_score(m, ids, 10, lp, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
}

int main(void) {
    ft_error e = {0};
    t_src("tests/fixtures/models/llama-gqa", base, sizeof base);
    t_src("tests/fixtures/lora", fix, sizeof fix);
    ft_backend *b = ft_backend_cpu_create();
    ft_model *m;
    if (model_load(base, b, &m, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    char tmp[] = "/tmp/ft_lora_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL);
    char d[1200];

    snprintf(d, sizeof d, "%s/ptype", tmp);
    make_adapter(d, "{\"peft_type\": \"IA3\", \"r\": 4, \"target_modules\": \"all-linear\"}");
    expect_error(m, d, "peft_type \"IA3\"");
    snprintf(d, sizeof d, "%s/r0", tmp);
    make_adapter(d, "{\"peft_type\": \"LORA\", \"r\": 0, \"lora_alpha\": 8, \"target_modules\": \"all-linear\"}");
    expect_error(m, d, "r = 0");
    snprintf(d, sizeof d, "%s/dora", tmp);
    make_adapter(d, "{\"peft_type\": \"LORA\", \"r\": 4, \"use_dora\": true, \"target_modules\": \"all-linear\"}");
    expect_error(m, d, "DoRA");
    snprintf(d, sizeof d, "%s/rank", tmp); /* config says r 2 but the file holds rank-4 matrices */
    make_adapter(d, "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 8, \"target_modules\": \"all-linear\"}");
    expect_error(m, d, "lora_A.weight has shape [4, 64] but the base model needs [2, 64]");
    snprintf(d, sizeof d, "%s/untargeted", tmp); /* the file adapts more modules than the config selects */
    make_adapter(d, "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"]}");
    expect_error(m, d, "do not select");
    snprintf(d, sizeof d, "%s/regex", tmp);
    make_adapter(d, "{\"peft_type\": \"LORA\", \"r\": 4, \"target_modules\": \".*proj\"}");
    expect_error(m, d, "regular expressions");
    { /* a base of another width: shapes do not fit */
        ft_model *m2;
        char b2[1024];
        t_src("tests/fixtures/models/llama-hd12", b2, sizeof b2);
        if (model_load(b2, b, &m2, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
        snprintf(d, sizeof d, "%s/peft_a", fix);
        expect_error(m2, d, "but the base model needs");
        model_free(m2);
    }

    /* fresh adapter: B = 0 gives the base's log-probs; A within PEFT's kaiming bound */
    float lp0[10], lp1[10];
    logp_of(m, lp0);
    lora_cfg c = {.r = 8, .alpha = 16, .targets = (1u << FT_LIN_COUNT) - 1, .all_linear = 1};
    lora_adapter *a;
    CHECK(lora_create(m, &c, 7, &a, &e) == 0);
    lora_attach(a, m);
    logp_of(m, lp1);
    for (int i = 0; i < 9; i++) CHECK(lp0[i] == lp1[i]);
    float *h = malloc((size_t)ft_nbytes(&a->A[FT_LIN_DOWN]));
    b->download(b, h, a->A[FT_LIN_DOWN].data, ft_nbytes(&a->A[FT_LIN_DOWN])); /* [8, 64]: bound 1/8 */
    float mx = 0;
    for (int64_t i = 0; i < ft_numel(&a->A[FT_LIN_DOWN]); i++) mx = fmaxf(mx, fabsf(h[i]));
    CHECK(mx <= 0.125f && mx > 0.1f);
    free(h);
    CHECK(a->scaling == 2.0f);
    lora_free(a);
    c.use_rslora = 1;
    c.r = 4;
    CHECK(lora_create(m, &c, 7, &a, &e) == 0);
    CHECK(a->scaling == 8.0f); /* 16 / sqrt(4) */
    lora_free(a);
    c.r = -1;
    CHECK(lora_create(m, &c, 7, &a, &e) == FT_EINPUT && strstr(e.msg, "r = -1"));

    /* QLoRA: NF4 base through the hook == full model holding the dequantized weights */
    st_model *st;
    CHECK(st_model_open(base, &st, &e) == 0);
    int n;
    ft_param *p = model_params(m, &n);
    for (int i = 0; i < n; i++) {
        const char *nm = p[i].name;
        if (!strstr(nm, "layers.") || !strstr(nm, "proj.weight")) continue;
        int64_t cnt = ft_numel(p[i].t);
        float *w = malloc((size_t)cnt * 4), *dq = malloc((size_t)cnt * 4);
        CHECK(st_model_read_f32(st, nm, w, (size_t)cnt, &e) == 0);
        nf4_weight q;
        CHECK(nf4_weight_quantize(w, p[i].t->shape[0], p[i].t->shape[1], &q, &e) == 0);
        nf4_dequantize(q.packed, q.absmax, cnt, 64, dq);
        b->upload(b, p[i].t->data, dq, (size_t)cnt * 4);
        nf4_weight_free(&q);
        free(w);
        free(dq);
    }
    free(p);
    st_model_close(st);
    m->hooks = (ft_linear_hooks){0};
    logp_of(m, lp0); /* dequantized reference */
    ft_model *mq;
    CHECK(model_load_ex(base, b, 1, &mq, &e) == 0);
    c.r = 4;
    c.use_rslora = 0;
    CHECK(lora_create(mq, &c, 7, &a, &e) == 0);
    CHECK(lora_quantize_base(a, mq, base, &e) == 0);
    lora_attach(a, mq);
    logp_of(mq, lp1);
    double worst = 0;
    for (int i = 0; i < 9; i++) worst = fmax(worst, fabs(lp0[i] - lp1[i]));
    CHECK_MSG(worst < 1e-5, "QLoRA log-probs differ from the dequantized model by %g", worst);
    lora_free(a);
    model_free(mq);
    model_free(m);
    snprintf(d, sizeof d, "rm -rf '%s'", tmp);
    CHECK(system(d) == 0);
    b->destroy(b);
    TEST_DONE();
}
