/* Our CPU forward pass against transformers (fixtures from tests/reference/make_model_fixtures.py):
 * per-token log-probs of single sequences, two samples packed into one row, and greedy generation. */
#include <cjson/cJSON.h>

#include "finetune/model/model.h"
#include "test.h"

static const char *MODELS[] = {"llama-gqa",          "mistral-swa",       "llama-tied",
                               "llama-hd12",         "llama-rope-linear", "llama-rope-dynamic",
                               "llama-rope-llama3",  "qwen2-bias",        "llama-bias",
                               "tiny-random-llama"};

static int32_t *int_array(const cJSON *a, int *n) {
    *n = cJSON_GetArraySize(a);
    int32_t *v = ft_xmalloc((size_t)(*n ? *n : 1) * sizeof *v);
    for (int i = 0; i < *n; i++) v[i] = (int32_t)cJSON_GetArrayItem(a, i)->valuedouble;
    return v;
}

/* |ours - ref| <= 1e-4 * max(1, |ref|) for every element */
static void check_logprobs(const char *model, const char *what, const float *ours, const cJSON *ref, int n) {
    CHECK_MSG(cJSON_GetArraySize(ref) == n, "%s %s: %d log-probs, reference has %d", model, what, n,
              cJSON_GetArraySize(ref));
    double worst = 0;
    for (int i = 0; i < n && i < cJSON_GetArraySize(ref); i++) {
        double r = cJSON_GetArrayItem(ref, i)->valuedouble;
        double err = fabs(ours[i] - r) / fmax(1.0, fabs(r));
        if (err > worst) worst = err;
    }
    CHECK_MSG(worst <= 1e-4, "%s %s: worst relative error %.3g", model, what, worst);
}

static void run_model(const char *name, ft_backend *b) {
    char exp_path[1024], dir[1024], buf[1024];
    snprintf(buf, sizeof buf, "tests/fixtures/models/%s", name);
    t_src(buf, dir, sizeof dir);
    snprintf(exp_path, sizeof exp_path, "%s/expected.json", dir);
    t_fixture_model(name, dir, sizeof dir);
    char *text = NULL;
    ft_error e = {0};
    CHECK_MSG(ft_read_file(exp_path, &text, NULL, &e) == 0, "%s", e.msg);
    if (!text) return;
    cJSON *exp = cJSON_Parse(text);
    free(text);
    ft_model *m = NULL;
    int rc = model_load(dir, b, &m, &e);
    CHECK_MSG(rc == 0, "%s: %s", name, e.msg);
    if (rc) {
        cJSON_Delete(exp);
        return;
    }

    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(exp, "cases")) {
        int n;
        int32_t *ids = int_array(cJSON_GetObjectItem(c, "ids"), &n);
        float *lp = ft_xcalloc((size_t)n + 1, sizeof(float));
        CHECK_MSG(model_score(m, ids, n, lp, &e) == 0, "%s: %s", name, e.msg);
        check_logprobs(name, "case", lp, cJSON_GetObjectItem(c, "logprobs"), n > 0 ? n - 1 : 0);
        free(ids);
        free(lp);
    }

    /* Packed: samples back to back in one flat row, positions restarting, attention confined. */
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(exp, "packed")) {
        int n, nd;
        int32_t *ids = int_array(cJSON_GetObjectItem(c, "ids"), &n);
        int32_t *lens = int_array(cJSON_GetObjectItem(c, "doc_lens"), &nd);
        int32_t *pos = ft_xmalloc((size_t)n * 4), *doc = ft_xmalloc((size_t)n * 4), *tg = ft_xmalloc((size_t)n * 4);
        float *lp = ft_xmalloc((size_t)n * 4), *flat = ft_xmalloc((size_t)n * 4);
        int t = 0, nf = 0;
        for (int d = 0; d < nd; d++) {
            int start = t;
            for (int j = 0; j < lens[d]; j++, t++) {
                pos[t] = j;
                doc[t] = start;
                tg[t] = j + 1 < lens[d] ? ids[t + 1] : -1;
            }
        }
        CHECK(t == n);
        CHECK_MSG(model_forward(m, n, ids, pos, doc, tg, lp, &e) == 0, "%s: %s", name, e.msg);
        for (int i = 0; i < n; i++)
            if (tg[i] >= 0) flat[nf++] = lp[i];
        check_logprobs(name, "packed", flat, cJSON_GetObjectItem(c, "logprobs"), nf);
        free(ids), free(lens), free(pos), free(doc), free(tg), free(lp), free(flat);
    }

    cJSON_ArrayForEach(c, cJSON_GetObjectItem(exp, "generate")) {
        int n, nref;
        int32_t *prompt = int_array(cJSON_GetObjectItem(c, "prompt"), &n);
        int32_t *ref = int_array(cJSON_GetObjectItem(c, "output"), &nref);
        int max_new = cJSON_GetObjectItem(c, "max_new")->valueint, n_out = 0;
        int32_t *out = ft_xcalloc((size_t)max_new + 1, sizeof *out);
        ft_sample_opts o = {.greedy = 1, .stop_at_eos = 0};
        CHECK_MSG(model_generate(m, prompt, n, max_new, &o, out, &n_out, NULL, NULL, &e) == 0, "%s: %s", name, e.msg);
        int same = n_out == nref;
        for (int i = 0; same && i < n_out; i++) same = out[i] == ref[i];
        CHECK_MSG(same, "%s: greedy generation differs from transformers' generate", name);
        /* a stop token (a template's end of turn): the output ends right after its first occurrence */
        int k = nref > 3 ? 3 : nref - 1, first = 0; /* where it must stop: ref[k] or EOS, whichever comes first */
        while (k >= 0 && ref[first] != ref[k] && ref[first] != m->cfg.eos_token_id) first++;
        if (k >= 0) {
            ft_sample_opts so = {.greedy = 1, .stop_at_eos = 1, .has_stop_id = 1, .stop_id = ref[k]};
            CHECK_MSG(model_generate(m, prompt, n, max_new, &so, out, &n_out, NULL, NULL, &e) == 0, "%s: %s", name,
                      e.msg);
            CHECK_MSG(n_out == first + 1 && out[n_out - 1] == ref[first], "%s: stop_id %d: %d tokens, want %d", name,
                      ref[k], n_out, first + 1);
        }
        free(prompt), free(ref), free(out);
    }
    model_free(m);
    cJSON_Delete(exp);
}

int main(void) {
    ft_backend *b = ft_backend_cpu_create();
    for (size_t i = 0; i < sizeof MODELS / sizeof MODELS[0]; i++) run_model(MODELS[i], b);
    b->destroy(b);
    TEST_DONE();
}
