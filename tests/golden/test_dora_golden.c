/* DoRA against PEFT 0.21 (tests/fixtures/lora/dora_*, made by tests/reference/make_dora_fixtures.py on the
 * CPU): a DoRA adapter written by PEFT loads here and gives PEFT's log-probs; the gradients of A, B and the
 * magnitudes of the mean cross-entropy equal PEFT's loss.backward(); a new DoRA adapter's magnitudes are
 * PEFT's init (||W|| per row); an adapter we write reads back identically with use_dora true and the
 * magnitude keys PEFT writes; `finetune merge` of the DoRA adapter equals PEFT's merge_and_unload
 * ((m / ||W + sBA||) (W + sBA) per row) within 1e-5; QLoRA + DoRA (NF4 base) gives the log-probs and
 * gradients of DoRA on a model holding the dequantized NF4 weights. FT_DORA_KEEP=dir keeps our written adapter and its log-probs (dir/logp.json)
 * for the by-hand PEFT check (make_dora_fixtures.py check_ours dir dir/logp.json). */
#include <cjson/cJSON.h>
#include <unistd.h>

#include "finetune/cli/cli.h"
#include "finetune/io/safetensors.h"
#include "lora/lora.h"
#include "lora/nf4.h"
#include "test.h"

static char base_dir[1024], fix[1024];
static cJSON *expected;
static st_file *ref;
static int ids[64], n_ids;

static void die(const ft_error *e) {
    fprintf(stderr, "%s\n", e->msg);
    exit(1);
}

static void check_logp(ft_model *m, const char *what, float *lp) {
    ft_error e = {0};
    if (model_score(m, ids, n_ids, lp, &e)) die(&e);
    const cJSON *ex = cJSON_GetObjectItem(expected, "logp");
    CHECK(cJSON_GetArraySize(ex) == n_ids - 1);
    double worst = 0;
    for (int i = 0; i < n_ids - 1; i++) worst = fmax(worst, fabs(lp[i] - cJSON_GetArrayItem(ex, i)->valuedouble));
    CHECK_MSG(worst < 1e-4, "%s: log-probs differ from PEFT's by %g", what, worst);
    fprintf(stderr, "%s: max |logp - PEFT| = %.3g\n", what, worst);
}

/* compare a backend fp32 tensor with fixture tensor key, relative to its largest entry */
static int compare(ft_backend *b, const ft_tensor *t, const char *key, double tol) {
    const st_tensor_info *r = st_find(ref, key);
    CHECK_MSG(r != NULL, "fixture has no %s", key);
    if (!r) return 0;
    size_t cnt = (size_t)ft_numel(t);
    CHECK_MSG(r->nbytes == cnt * 4, "%s: %zu bytes in the fixture, %zu elements here", key, r->nbytes, cnt);
    if (r->nbytes != cnt * 4) return 0;
    float *h = malloc(cnt * 4);
    b->download(b, h, t->data, cnt * 4);
    const float *x = r->data;
    double worst = 0, scale = 0;
    for (size_t j = 0; j < cnt; j++) scale = fmax(scale, fabs(x[j]));
    for (size_t j = 0; j < cnt; j++) worst = fmax(worst, fabs(h[j] - x[j]));
    free(h);
    CHECK_MSG(worst <= tol * fmax(1.0, scale), "%s differs from PEFT's by %g (max |ref| %g)", key, worst, scale);
    return worst <= tol * fmax(1.0, scale);
}

static int frozen(const char *name, void *ctx) {
    (void)name, (void)ctx;
    return 0;
}

static void train_step(ft_model *m, lora_adapter *a, float *lp) {
    ft_error e = {0};
    if (lora_grads_create(a, &e)) die(&e);
    int32_t pos[64], doc[64], tg[64];
    float dl[64];
    for (int i = 0; i < n_ids; i++) {
        pos[i] = i;
        doc[i] = 0;
        tg[i] = i + 1 < n_ids ? ids[i + 1] : -1;
        dl[i] = i + 1 < n_ids ? -1.0f / (float)(n_ids - 1) : 0.0f;
    }
    ft_weights g = {0};
    if (grads_create(m, frozen, NULL, &g, &e)) die(&e);
    if (model_forward_train(m, n_ids, ids, pos, doc, tg, lp, &e) || model_backward(m, dl, &g, &e)) die(&e);
    grads_free(m, &g);
}

static double max_rel(ft_backend *b, const ft_tensor *x, const ft_tensor *y) {
    size_t n = (size_t)ft_numel(x);
    float *h = malloc(n * 8);
    b->download(b, h, x->data, n * 4);
    b->download(b, h + n, y->data, n * 4);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(h[n + i])), worst = fmax(worst, fabs(h[i] - h[n + i]));
    free(h);
    return worst / fmax(scale, 1e-30);
}

/* QLoRA + DoRA against DoRA on the dequantized base: same log-probs and A/B/magnitude gradients */
static void check_qlora(ft_backend *b) {
    ft_error e = {0};
    char p[1100];
    snprintf(p, sizeof p, "%s/dora_a", fix);
    ft_model *mq = NULL, *md = NULL;
    lora_adapter *aq = NULL, *ad = NULL;
    if (model_load_ex(base_dir, b, 1, &mq, &e) || lora_load(p, mq, &aq, &e) ||
        lora_quantize_base(aq, mq, base_dir, &e))
        die(&e);
    lora_attach(aq, mq);
    if (model_load(base_dir, b, &md, &e) || lora_load(p, md, &ad, &e)) die(&e);
    for (int l = 0; l < md->cfg.num_layers; l++)
        for (int w = 0; w < FT_LIN_COUNT; w++) {
            size_t k = (size_t)l * FT_LIN_COUNT + w;
            b->nf4_dequant(b, &aq->qpacked[k], &aq->qabsmax[k], NF4_BLOCK, model_linear_weight(&md->w.layers[l], w));
        }
    lora_attach(ad, md);
    float lq[64], ld[64];
    train_step(mq, aq, lq);
    train_step(md, ad, ld);
    double worst = 0;
    for (int i = 0; i < n_ids - 1; i++) worst = fmax(worst, fabs(lq[i] - ld[i]));
    CHECK_MSG(worst < 1e-5, "QLoRA+DoRA log-probs differ from DoRA on the dequantized base by %g", worst);
    ft_param *wq, *gq, *wd, *gd;
    int nq, nd;
    lora_params(aq, &wq, &gq, &nq);
    lora_params(ad, &wd, &gd, &nd);
    CHECK(nq == nd && nq == 18);
    double gw = 0;
    for (int i = 0; i < nq && nq == nd; i++) gw = fmax(gw, max_rel(b, gq[i].t, gd[i].t));
    CHECK_MSG(gw < 1e-4, "QLoRA+DoRA gradients differ from DoRA on the dequantized base by %g (relative)", gw);
    fprintf(stderr, "QLoRA+DoRA vs DoRA on the dequantized base: logp %.3g, gradients %.3g (relative)\n", worst, gw);
    free(wq), free(gq), free(wd), free(gd);
    lora_free(aq), lora_free(ad);
    model_free(mq), model_free(md);
}

static void check_grads(ft_model *m, lora_adapter *a) {
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
    if (grads_create(m, frozen, NULL, &g, &e)) die(&e); /* the base is frozen: no gradient memory */
    if (model_forward_train(m, n_ids, ids, pos, doc, tg, lp, &e) || model_backward(m, dl, &g, &e)) die(&e);
    grads_free(m, &g);
    ft_param *w, *gp;
    int n, good = 0, mags = 0;
    lora_params(a, &w, &gp, &n);
    for (int i = 0; i < n; i++) {
        char k[200];
        int is_mag = strstr(gp[i].name, "magnitude") != NULL; /* PEFT's parameter name ends in .weight */
        snprintf(k, sizeof k, "grad/%s%s", gp[i].name, is_mag ? ".weight" : "");
        good += compare(a->b, gp[i].t, k, 1e-4);
        mags += is_mag;
    }
    CHECK(n == 3 * 2 * 3 && mags == 6); /* q, v, down in 2 layers: A, B, magnitude each */
    fprintf(stderr, "%d of %d DoRA gradients (%d magnitudes) match PEFT\n", good, n, mags);
    free(w);
    free(gp);
}

int main(void) {
    char p[1024];
    ft_error e = {0};
    t_src("tests/fixtures/models/llama-gqa", base_dir, sizeof base_dir);
    t_src("tests/fixtures/lora", fix, sizeof fix);
    snprintf(p, sizeof p, "%s/dora_expected.json", fix);
    char *text;
    if (ft_read_file(p, &text, NULL, &e)) die(&e);
    expected = cJSON_Parse(text);
    free(text);
    const cJSON *jid = cJSON_GetObjectItem(expected, "ids");
    n_ids = cJSON_GetArraySize(jid);
    for (int i = 0; i < n_ids; i++) ids[i] = cJSON_GetArrayItem(jid, i)->valueint;
    snprintf(p, sizeof p, "%s/dora_grads.safetensors", fix);
    if (st_open(p, &ref, &e)) die(&e);
    ft_backend *b = ft_backend_cpu_create();
    float lp[64];

    /* 1. PEFT's adapter: log-probs and gradients */
    ft_model *m;
    lora_adapter *a;
    if (model_load(base_dir, b, &m, &e)) die(&e);
    snprintf(p, sizeof p, "%s/dora_a", fix);
    if (lora_load(p, m, &a, &e)) die(&e);
    CHECK(a->cfg.use_dora == 1);
    lora_attach(a, m);
    check_logp(m, "PEFT's DoRA adapter", lp);
    check_grads(m, a);

    /* 2. written by us, read back: same log-probs; use_dora and the magnitude keys as PEFT writes them */
    const char *keep = getenv("FT_DORA_KEEP");
    char tmp[] = "/tmp/ft_dora_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL);
    const char *dir = keep && *keep ? keep : tmp;
    CHECK(lora_save(a, dir, base_dir, &e) == 0);
    lora_free(a);
    model_free(m);
    if (model_load(base_dir, b, &m, &e)) die(&e);
    if (lora_load(dir, m, &a, &e)) die(&e);
    lora_attach(a, m);
    check_logp(m, "our DoRA adapter, reloaded", lp);
    st_file *ours = NULL, *theirs = NULL;
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    CHECK(st_open(p, &ours, &e) == 0);
    snprintf(p, sizeof p, "%s/dora_a/adapter_model.safetensors", fix);
    CHECK(st_open(p, &theirs, &e) == 0);
    CHECK(ours && theirs && st_count(ours) == st_count(theirs));
    for (size_t i = 0; ours && theirs && i < st_count(theirs); i++)
        CHECK_MSG(st_find(ours, st_at(theirs, i)->name) != NULL, "we do not write %s", st_at(theirs, i)->name);
    if (ours) st_close(ours);
    if (theirs) st_close(theirs);
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    CHECK(ft_read_file(p, &text, NULL, &e) == 0);
    cJSON *jc = cJSON_Parse(text);
    free(text);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(jc, "use_dora")));
    cJSON_Delete(jc);
    if (keep && *keep) {
        snprintf(p, sizeof p, "%s/logp.json", dir);
        FILE *f = fopen(p, "w");
        CHECK(f != NULL);
        for (int i = 0; f && i < n_ids - 1; i++) fprintf(f, "%s%.9g", i ? ", " : "[", lp[i]);
        if (f) fprintf(f, "]\n"), fclose(f);
    } else {
        snprintf(p, sizeof p, "rm -rf '%s'", tmp);
        CHECK(system(p) == 0);
    }
    lora_free(a);

    /* 3. a new DoRA adapter: magnitudes = ||W|| per row, PEFT's init */
    lora_cfg cfg = {.r = 4, .alpha = 8, .use_dora = 1};
    CHECK(lora_parse_targets("[\"q_proj\", \"v_proj\", \"down_proj\"]", &cfg, "test", &e) == 0);
    if (lora_create(m, &cfg, 7, &a, &e)) die(&e);
    ft_param *w, *gp;
    int n, inits = 0;
    lora_params(a, &w, &gp, &n);
    for (int i = 0; i < n; i++)
        if (strstr(w[i].name, "magnitude")) {
            snprintf(p, sizeof p, "init/%s.weight", w[i].name);
            inits += compare(b, w[i].t, p, 1e-6);
        }
    CHECK(inits == 6);
    free(w);
    free(gp);
    /* training DoRA with dropout is refused with a clear error */
    a->cfg.dropout = 0.1f;
    CHECK(lora_grads_create(a, &e) == FT_EINPUT && strstr(e.msg, "use_dora"));
    lora_free(a);
    lora_cfg_free(&cfg);
    model_free(m);

    /* 4. merge: every adapted linear as PEFT's merge_and_unload, within 1e-5 of its largest entry */
    char out[] = "/tmp/ft_dora_merge_XXXXXX";
    CHECK(mkdtemp(out) != NULL);
    rmdir(out); /* merge wants a new (or empty) directory */
    snprintf(p, sizeof p, "%s/dora_a", fix);
    char *argv[] = {"merge", "--base", base_dir, "--adapter", p, "--out", out, NULL};
    CHECK(cmd_merge(7, argv) == 0);
    st_model *mm = NULL;
    CHECK(st_model_open(out, &mm, &e) == 0);
    int merged = 0;
    for (size_t i = 0; mm && i < st_count(ref); i++) {
        const st_tensor_info *r = st_at(ref, i);
        if (strncmp(r->name, "merged/", 7) != 0) continue;
        const st_tensor_info *t = st_model_find(mm, r->name + 7);
        CHECK_MSG(t && t->dtype == FT_F32 && t->nbytes == r->nbytes, "%s missing or wrong in the merge", r->name + 7);
        if (!t || t->nbytes != r->nbytes) continue;
        const float *x = r->data, *y = t->data;
        double worst = 0, scale = 0;
        for (size_t j = 0; j < r->nbytes / 4; j++) scale = fmax(scale, fabs(x[j])), worst = fmax(worst, fabs(x[j] - y[j]));
        CHECK_MSG(worst <= 1e-5 * scale, "%s: merge differs from PEFT's by %g (max %g)", r->name + 7, worst, scale);
        merged++;
    }
    CHECK(merged == 14); /* 7 linears x 2 layers: adapted and not */
    if (mm) st_model_close(mm);
    snprintf(p, sizeof p, "rm -rf '%s'", out);
    CHECK(system(p) == 0);

    check_qlora(b);

    st_close(ref);
    cJSON_Delete(expected);
    b->destroy(b);
    TEST_DONE();
}
