/* LoRA against PEFT (tests/fixtures/lora, made by tests/reference/make_lora_fixtures.py on the CPU):
 * adapters written by PEFT load here and give PEFT's log-probs; LoRA A/B gradients of the mean
 * cross-entropy equal PEFT's loss.backward() (dropout 0); an adapter we write reads back identically
 * and carries PEFT 0.21's adapter_config.json keys. */
#include <cjson/cJSON.h>
#include <unistd.h>

#include "finetune/io/safetensors.h"
#include "lora/lora.h"
#include "test.h"

static char base_dir[1024], fix[1024];
static cJSON *expected;
static st_file *grads;
static int ids[64], n_ids;

static void die(const ft_error *e) {
    fprintf(stderr, "%s\n", e->msg);
    exit(1);
}

static void check_logp(ft_model *m, const char *name) {
    float lp[64];
    ft_error e = {0};
    if (model_score(m, ids, n_ids, lp, &e)) die(&e);
    char k[64];
    snprintf(k, sizeof k, "%s.logp", name);
    const cJSON *ex = cJSON_GetObjectItem(expected, k);
    CHECK(cJSON_GetArraySize(ex) == n_ids - 1);
    double worst = 0;
    for (int i = 0; i < n_ids - 1; i++) worst = fmax(worst, fabs(lp[i] - cJSON_GetArrayItem(ex, i)->valuedouble));
    CHECK_MSG(worst < 1e-4, "%s: log-probs differ from PEFT's by %g", name, worst);
    fprintf(stderr, "%s: max |logp - PEFT| = %.3g\n", name, worst);
}

static void check_grads(ft_model *m, lora_adapter *a, const char *name) {
    ft_error e = {0};
    if (lora_grads_create(a, &e)) die(&e);
    int32_t pos[64], doc[64], tg[64];
    float lp[64], dl[64];
    for (int i = 0; i < n_ids; i++) {
        pos[i] = i;
        doc[i] = 0;
        tg[i] = i + 1 < n_ids ? ids[i + 1] : -1;
        dl[i] = i + 1 < n_ids ? -1.0f / (float)(n_ids - 1) : 0.0f;
    }
    ft_weights g = {0};
    if (grads_create(m, NULL, NULL, &g, &e)) die(&e); /* base grads exist but are not compared */
    grads_free(m, &g);
    if (grads_create(m, (int (*)(const char *, void *))NULL, NULL, &g, &e)) die(&e);
    if (model_forward_train(m, n_ids, ids, pos, doc, tg, lp, &e) || model_backward(m, dl, &g, &e)) die(&e);
    grads_free(m, &g);
    ft_param *w, *gp;
    int n;
    lora_params(a, &w, &gp, &n);
    int compared = 0;
    for (int i = 0; i < n; i++) {
        char k[200];
        snprintf(k, sizeof k, "%s/%s", name, gp[i].name);
        const st_tensor_info *t = st_find(grads, k);
        CHECK_MSG(t != NULL, "fixture has no %s", k);
        if (!t) continue;
        size_t cnt = (size_t)ft_numel(gp[i].t);
        float *h = malloc(cnt * 4);
        a->b->download(a->b, h, gp[i].t->data, cnt * 4);
        const float *ref = t->data;
        double worst = 0, scale = 0;
        for (size_t j = 0; j < cnt; j++) scale = fmax(scale, fabs(ref[j]));
        for (size_t j = 0; j < cnt; j++) worst = fmax(worst, fabs(h[j] - ref[j]));
        CHECK_MSG(worst <= 1e-4 * fmax(1.0, scale), "%s: gradient differs from PEFT's by %g (max |g| %g)", k, worst,
                  scale);
        compared++;
        free(h);
    }
    CHECK(compared == n && n > 0);
    fprintf(stderr, "%s: %d LoRA gradients match PEFT\n", name, compared);
    free(w);
    free(gp);
}

int main(void) {
    char p[1024];
    ft_error e = {0};
    t_src("tests/fixtures/models/llama-gqa", base_dir, sizeof base_dir);
    t_src("tests/fixtures/lora", fix, sizeof fix);
    snprintf(p, sizeof p, "%s/peft_expected.json", fix);
    char *text;
    if (ft_read_file(p, &text, NULL, &e)) die(&e);
    expected = cJSON_Parse(text);
    free(text);
    const cJSON *jid = cJSON_GetObjectItem(expected, "ids");
    n_ids = cJSON_GetArraySize(jid);
    for (int i = 0; i < n_ids; i++) ids[i] = cJSON_GetArrayItem(jid, i)->valueint;
    snprintf(p, sizeof p, "%s/peft_grads.safetensors", fix);
    if (st_open(p, &grads, &e)) die(&e);

    ft_backend *b = ft_backend_cpu_create();
    const char *names[2] = {"peft_a", "peft_b"};
    for (int k = 0; k < 2; k++) {
        ft_model *m;
        lora_adapter *a;
        if (model_load(base_dir, b, &m, &e)) die(&e);
        snprintf(p, sizeof p, "%s/%s", fix, names[k]);
        if (lora_load(p, m, &a, &e)) die(&e);
        lora_attach(a, m);
        check_logp(m, names[k]);
        check_grads(m, a, names[k]);
        if (k == 0) { /* write it back, read it again: same numbers, PEFT's config keys */
            char tmp[] = "/tmp/ft_peft_XXXXXX";
            CHECK(mkdtemp(tmp) != NULL);
            CHECK(lora_save(a, tmp, base_dir, &e) == 0);
            lora_free(a);
            model_free(m);
            if (model_load(base_dir, b, &m, &e)) die(&e);
            if (lora_load(tmp, m, &a, &e)) die(&e);
            lora_attach(a, m);
            check_logp(m, names[k]);
            char *ours, *theirs;
            snprintf(p, sizeof p, "%s/adapter_config.json", tmp);
            CHECK(ft_read_file(p, &ours, NULL, &e) == 0);
            snprintf(p, sizeof p, "%s/%s/adapter_config.json", fix, names[k]);
            CHECK(ft_read_file(p, &theirs, NULL, &e) == 0);
            cJSON *jo = cJSON_Parse(ours), *jt = cJSON_Parse(theirs);
            CHECK(jo && jt && cJSON_GetArraySize(jo) == cJSON_GetArraySize(jt));
            for (cJSON *it = jt ? jt->child : NULL; it; it = it->next)
                CHECK_MSG(cJSON_GetObjectItem(jo, it->string) != NULL, "our adapter_config.json lacks %s", it->string);
            const char *same[] = {"r", "lora_alpha", "lora_dropout", "peft_type", "task_type", "use_rslora",
                                  "use_dora", "bias", "target_modules", "layers_to_transform", "inference_mode"};
            for (size_t i = 0; i < sizeof same / sizeof *same; i++)
                CHECK_MSG(cJSON_Compare(cJSON_GetObjectItem(jo, same[i]), cJSON_GetObjectItem(jt, same[i]), 1),
                          "adapter_config.json %s differs from PEFT's", same[i]);
            cJSON_Delete(jo);
            cJSON_Delete(jt);
            free(ours);
            free(theirs);
            snprintf(p, sizeof p, "rm -rf '%s'", tmp);
            CHECK(system(p) == 0);
        }
        lora_free(a);
        model_free(m);
    }
    st_close(grads);
    cJSON_Delete(expected);
    b->destroy(b);
    TEST_DONE();
}
