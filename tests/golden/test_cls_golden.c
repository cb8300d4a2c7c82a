/* Sequence classification against transformers and PEFT (tests/fixtures/cls, made by
 * tests/reference/make_cls_fixtures.py on the CPU): LlamaForSequenceClassification and
 * Qwen2ForSequenceClassification checkpoints give transformers' logits on a right-padded batch (ours: the same
 * two sequences packed back to back, pooled at each one's last token); the gradients of transformers' own loss
 * (cross-entropy over 3 labels; MSE for the 1-label regression) through train/cls_loss match loss.backward()
 * for every parameter; a PEFT SEQ_CLS adapter (LoRA on all linears, score in modules_to_save) loads and gives
 * PEFT's logits and the gradients of A, B and score; an adapter we write back reads identically and says
 * SEQ_CLS; finetune merge of it equals PEFT's merge_and_unload (on the classifier and on the causal base); a causal LM loaded as a classifier gets a new score of std initializer_range; finite differences
 * check the head's and the decoder's gradients through the pooling. */
#include <cjson/cJSON.h>
#include <unistd.h>

#include "finetune/cli/cli.h"
#include "finetune/io/safetensors.h"
#include "finetune/train/cls_loss.h"
#include "grad_check.h"
#include "lora/lora.h"
#include "test.h"

static cJSON *expected;
static st_file *ref;
static int32_t ids[64], pos[64], doc[64], rows[4];
static int T, S;
static int labels[4];
static float targets[4];

static void die(const ft_error *e) {
    fprintf(stderr, "%s\n", e->msg);
    exit(1);
}

static void check_logits(ft_model *m, const char *name) {
    float lg[16];
    ft_error e = {0};
    if (model_forward_cls(m, T, ids, pos, doc, S, rows, lg, &e)) die(&e);
    char k[64];
    snprintf(k, sizeof k, "%s.logits", name);
    const cJSON *ex = cJSON_GetObjectItem(expected, k);
    int NL = m->cfg.num_labels;
    CHECK(cJSON_GetArraySize(ex) == S * NL);
    double worst = 0;
    for (int i = 0; i < S * NL; i++) worst = fmax(worst, fabs(lg[i] - cJSON_GetArrayItem(ex, i)->valuedouble));
    CHECK_MSG(worst < 1e-4, "%s: logits differ from transformers' by %g", name, worst);
    fprintf(stderr, "%s: max |logits - transformers| = %.3g\n", name, worst);
}

/* transformers' loss on the batch (mean over samples) and dL/dlogits through cls_loss */
static double loss_of(const ft_model *m, const float *lg, float *dlg) {
    int NL = m->cfg.num_labels;
    double loss = 0;
    for (int i = 0; i < S * NL && dlg; i++) dlg[i] = 0;
    for (int s = 0; s < S; s++) {
        if (NL == 1) {
            loss += cls_mse(lg[s], targets[s], 1.0 / S, dlg ? &dlg[s] : NULL) / S;
        } else {
            float p[8] = {0};
            p[labels[s]] = 1;
            loss += cls_ce(lg + s * NL, p, NL, 0.0, 1.0 / S, dlg ? dlg + s * NL : NULL, NULL, NULL) / S;
        }
    }
    return loss;
}

static double forward_loss(ft_model *m) {
    float lg[16];
    ft_error e = {0};
    if (model_forward_cls(m, T, ids, pos, doc, S, rows, lg, &e)) die(&e);
    return loss_of(m, lg, NULL);
}

/* forward + backward; g must exist (zeroed). Returns the loss. */
static double train_step(ft_model *m, ft_weights *g) {
    float lg[16], dlg[16];
    ft_error e = {0};
    if (model_forward_train_cls(m, T, ids, pos, doc, S, rows, lg, &e)) die(&e);
    double loss = loss_of(m, lg, dlg);
    if (model_backward_cls(m, dlg, g, &e)) die(&e);
    return loss;
}

/* every parameter's gradient against the fixture's "<prefix>/<name>" */
static void check_model_grads(ft_model *m, ft_weights *g, const char *prefix) {
    int n = 0;
    ft_param *p = weights_params(&m->cfg, g, &n);
    for (int i = 0; i < n; i++) {
        char k[200];
        snprintf(k, sizeof k, "%s/%s", prefix, p[i].name);
        snprintf(p[i].name, sizeof p[i].name, "%s", k);
    }
    t_check_grads(m->b, ref, p, n, 1e-4, prefix);
    fprintf(stderr, "%s: %d parameter gradients compared with transformers'\n", prefix, n);
    free(p);
}

/* central differences of the loss in one element of w against the analytic gradient gw */
static void fd_check(ft_model *m, ft_tensor *w, ft_tensor *gw, int64_t idx, const char *what) {
    float v, gv;
    m->b->download(m->b, &v, (float *)w->data + idx, 4);
    m->b->download(m->b, &gv, (float *)gw->data + idx, 4);
    float h = 1e-2f * fmaxf(1.0f, fabsf(v));
    float vp = v + h, vm = v - h;
    m->b->upload(m->b, (float *)w->data + idx, &vp, 4);
    double lp = forward_loss(m);
    m->b->upload(m->b, (float *)w->data + idx, &vm, 4);
    double lm = forward_loss(m);
    m->b->upload(m->b, (float *)w->data + idx, &v, 4);
    double fd = (lp - lm) / (2.0 * h);
    CHECK_MSG(fabs(fd - gv) <= 2e-3 * fmax(1e-2, fabs(fd)) + 1e-4, "%s[%lld]: finite difference %.6g, gradient %.6g",
              what, (long long)idx, fd, gv);
}

int main(void) {
    char fix[1024], p[1200];
    ft_error e = {0};
    t_src("tests/fixtures/cls", fix, sizeof fix);
    snprintf(p, sizeof p, "%s/expected.json", fix);
    char *text;
    if (ft_read_file(p, &text, NULL, &e)) die(&e);
    expected = cJSON_Parse(text);
    free(text);
    const cJSON *seqs = cJSON_GetObjectItem(expected, "seqs");
    S = cJSON_GetArraySize(seqs);
    for (int s = 0; s < S; s++) {
        const cJSON *q = cJSON_GetArrayItem(seqs, s);
        int start = T;
        for (int i = 0; i < cJSON_GetArraySize(q); i++, T++) {
            ids[T] = cJSON_GetArrayItem(q, i)->valueint;
            pos[T] = i;
            doc[T] = start;
        }
        rows[s] = T - 1;
        labels[s] = cJSON_GetArrayItem(cJSON_GetObjectItem(expected, "labels"), s)->valueint;
        targets[s] = (float)cJSON_GetArrayItem(cJSON_GetObjectItem(expected, "targets"), s)->valuedouble;
    }
    snprintf(p, sizeof p, "%s/grads.safetensors", fix);
    if (st_open(p, &ref, &e)) die(&e);
    ft_backend *b = ft_backend_cpu_create();

    /* full models: logits, loss, every gradient; finite differences through the pooling */
    const char *names[2] = {"llama", "qwen2"};
    for (int k = 0; k < 2; k++) {
        ft_model *m;
        snprintf(p, sizeof p, "%s/%s_cls", fix, names[k]);
        if (model_load(p, b, &m, &e)) die(&e);
        CHECK(m->cfg.num_labels == (k == 0 ? 3 : 1));
        CHECK(k != 0 || strcmp(m->cfg.labels[2], "winner_tie") == 0);
        CHECK(k != 1 || strcmp(m->cfg.problem_type, "regression") == 0);
        check_logits(m, names[k]);
        ft_weights g = {0};
        if (grads_create(m, NULL, NULL, &g, &e)) die(&e);
        double loss = train_step(m, &g);
        snprintf(p, sizeof p, "%s.loss", names[k]);
        CHECK_CLOSE(loss, cJSON_GetObjectItem(expected, p)->valuedouble, 1e-5);
        check_model_grads(m, &g, names[k]);
        for (int i = 0; i < 3; i++) fd_check(m, &m->w.score, &g.score, i * 7 % ft_numel(&m->w.score), "score");
        fd_check(m, &m->w.norm, &g.norm, 5, "model.norm");
        fd_check(m, &m->w.layers[0].wv, &g.layers[0].wv, 17, "layers.0.v_proj");
        fd_check(m, &m->w.layers[1].wd, &g.layers[1].wd, 40, "layers.1.down_proj");
        grads_free(m, &g);
        if (k == 0) { /* written back: transformers' config keys, and the same logits */
            char tmp[] = "/tmp/ft_cls_XXXXXX";
            CHECK(mkdtemp(tmp) != NULL);
            CHECK(model_save(m, tmp, FT_F32, &e) == 0);
            ft_config c;
            CHECK(cfg_load(tmp, &c, &e) == 0);
            CHECK(strcmp(c.architecture, "LlamaForSequenceClassification") == 0 && c.num_labels == 3);
            CHECK(strcmp(c.labels[1], "winner_model_b") == 0 && c.pad_token_id == 0);
            model_free(m);
            if (model_load(tmp, b, &m, &e)) die(&e);
            check_logits(m, names[k]);
            snprintf(p, sizeof p, "rm -rf '%s'", tmp);
            CHECK(system(p) == 0);
        }
        model_free(m);
    }

    /* a causal LM as a classifier: no lm_head, score ~ N(0, initializer_range) */
    {
        ft_model *m;
        char base[1024];
        t_src("tests/fixtures/models/llama-gqa", base, sizeof base);
        const char *lab[2] = {"neg", "pos"};
        ft_cls_load o = {.num_labels = 2, .labels = lab, .seed = 3};
        if (model_load_cls(base, b, 0, FT_F32, &o, &m, &e)) die(&e);
        CHECK(m->cfg.num_labels == 2 && m->w.lm_head.data == NULL && m->w.score.shape[0] == 2);
        int64_t n = ft_numel(&m->w.score);
        float *h = malloc((size_t)n * 4);
        b->download(b, h, m->w.score.data, (size_t)n * 4);
        double ss = 0;
        for (int64_t i = 0; i < n; i++) ss += (double)h[i] * h[i];
        double sd = sqrt(ss / n);
        CHECK_MSG(sd > 0.015 && sd < 0.025, "new score's std %g, want about 0.02", sd);
        free(h);
        model_free(m);
        const char *lab3[3] = {"a", "b", "tie"};
        o.num_labels = 3;
        o.labels = lab3;
        snprintf(p, sizeof p, "%s/llama_cls", fix);
        CHECK(model_load_cls(p, b, 0, FT_F32, &o, &m, &e) == FT_EINPUT); /* 3 labels, but named otherwise */
        CHECK(strstr(e.msg, "label 0") != NULL);
        o.num_labels = 2;
        CHECK(model_load_cls(p, b, 0, FT_F32, &o, &m, &e) == FT_EINPUT && strstr(e.msg, "3 labels") != NULL);
    }

    /* PEFT SEQ_CLS adapter */
    {
        ft_model *m;
        lora_adapter *a;
        snprintf(p, sizeof p, "%s/llama_cls", fix);
        if (model_load(p, b, &m, &e)) die(&e);
        snprintf(p, sizeof p, "%s/peft_cls", fix);
        if (lora_load(p, m, &a, &e)) die(&e);
        lora_attach(a, m);
        check_logits(m, "peft");
        if (lora_grads_create(a, &e)) die(&e);
        ft_weights g = {0};
        int score_only(const char *name, void *ctx);
        if (grads_create(m, score_only, NULL, &g, &e)) die(&e);
        double loss = train_step(m, &g);
        CHECK_CLOSE(loss, cJSON_GetObjectItem(expected, "peft.loss")->valuedouble, 1e-5);
        ft_param *w, *gp;
        int n;
        lora_params(a, &w, &gp, &n);
        for (int i = 0; i < n; i++) {
            char k[200];
            snprintf(k, sizeof k, "peft/%s", gp[i].name);
            snprintf(gp[i].name, sizeof gp[i].name, "%s", k);
        }
        t_check_grads(b, ref, gp, n, 1e-4, "peft");
        ft_param sp = {"peft/base_model.model.score.weight", &g.score};
        t_check_grads(b, ref, &sp, 1, 1e-4, "peft");
        fprintf(stderr, "peft: %d LoRA gradients and score's match PEFT\n", n);
        fd_check(m, &a->A[1 * FT_LIN_COUNT + FT_LIN_UP], &a->gA[1 * FT_LIN_COUNT + FT_LIN_UP], 9, "lora_A up_proj.1");
        free(w);
        free(gp);
        grads_free(m, &g);
        /* written back: SEQ_CLS with the head, same logits after a reload */
        char tmp[] = "/tmp/ft_clsa_XXXXXX";
        CHECK(mkdtemp(tmp) != NULL);
        CHECK(lora_save(a, tmp, "base", &e) == 0);
        lora_free(a);
        model_free(m);
        t_src( /* a causal base refuses the head */ "tests/fixtures/models/llama-gqa", p, sizeof p);
        if (model_load(p, b, &m, &e)) die(&e);
        CHECK(lora_load(tmp, m, &a, &e) == FT_EINPUT && strstr(e.msg, "SEQ_CLS") != NULL);
        model_free(m);
        snprintf(p, sizeof p, "%s/llama_cls", fix);
        if (model_load(p, b, &m, &e)) die(&e);
        if (lora_load(tmp, m, &a, &e)) die(&e);
        lora_attach(a, m);
        check_logits(m, "peft");
        snprintf(p, sizeof p, "%s/adapter_config.json", tmp);
        char *cfgtext = NULL;
        CHECK(ft_read_file(p, &cfgtext, NULL, &e) == 0);
        cJSON *j = cJSON_Parse(cfgtext);
        CHECK(j && strcmp(cJSON_GetObjectItem(j, "task_type")->valuestring, "SEQ_CLS") == 0);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(j, "modules_to_save")) == 3);
        cJSON_Delete(j);
        free(cfgtext);
        snprintf(p, sizeof p, "rm -rf '%s'", tmp);
        CHECK(system(p) == 0);
        lora_free(a);
        model_free(m);
    }
    /* finetune merge of the SEQ_CLS adapter = PEFT's merge_and_unload, on the classifier base and on the causal
     * LM it was made from (whose lm_head is left out and the adapter's head put in) */
    for (int k = 0; k < 2; k++) {
        char basedir[1024], ad[1024], tmp[] = "/tmp/ft_clsm_XXXXXX", out[1100];
        if (k == 0)
            snprintf(basedir, sizeof basedir, "%s/llama_cls", fix);
        else
            t_src("tests/fixtures/models/llama-gqa", basedir, sizeof basedir);
        snprintf(ad, sizeof ad, "%s/peft_cls", fix);
        CHECK(mkdtemp(tmp) != NULL);
        snprintf(out, sizeof out, "%s/m", tmp);
        char *argv[] = {"merge", "--base", basedir, "--adapter", ad, "--out", out, "--dtype", "fp32", NULL};
        CHECK(cmd_merge(9, argv) == 0);
        ft_model *m;
        if (model_load(out, b, &m, &e)) die(&e);
        CHECK(m->cfg.num_labels == 3 && m->w.lm_head.data == NULL);
        int n = 0;
        ft_param *pp = model_params(m, &n);
        for (int i = 0; i < n; i++) {
            char key[200];
            snprintf(key, sizeof key, "merged/%s", pp[i].name);
            snprintf(pp[i].name, sizeof pp[i].name, "%s", key);
        }
        t_check_grads(b, ref, pp, n, 1e-6, k ? "merge onto the causal base" : "merge");
        free(pp);
        check_logits(m, "peft");
        model_free(m);
        snprintf(p, sizeof p, "rm -rf '%s'", tmp);
        CHECK(system(p) == 0);
    }
    st_close(ref);
    cJSON_Delete(expected);
    b->destroy(b);
    TEST_DONE();
}

int score_only(const char *name, void *ctx) {
    (void)ctx;
    return strcmp(name, "score.weight") == 0;
}
