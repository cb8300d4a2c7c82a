/* Whole-model backward against transformers' loss.backward() (fixtures from
 * tests/reference/make_model_fixtures.py): HF labels (unshifted, -100 masked), mean cross-entropy over
 * unmasked tokens; every parameter's gradient within 1e-4 of the largest reference magnitude. */
#include <cjson/cJSON.h>

#include "finetune/model/model.h"
#include "finetune/io/safetensors.h"
#include "grad_check.h"

static const char *MODELS[] = {"llama-gqa",         "mistral-swa",        "llama-tied",        "llama-hd12",
                               "llama-rope-linear", "llama-rope-dynamic", "llama-rope-llama3", "qwen2-bias",
                               "llama-bias"};

static void run_model(const char *name, ft_backend *b) {
    char dir[1024], buf[1024], path[1200];
    snprintf(buf, sizeof buf, "tests/fixtures/models/%s", name);
    t_src(buf, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/expected.json", dir);
    char *text = NULL;
    ft_error e = {0};
    CHECK_MSG(ft_read_file(path, &text, NULL, &e) == 0, "%s", e.msg);
    if (!text) return;
    cJSON *exp = cJSON_Parse(text);
    free(text);
    const cJSON *train = cJSON_GetObjectItem(exp, "train");
    const cJSON *jids = cJSON_GetObjectItem(train, "ids"), *jlab = cJSON_GetObjectItem(train, "labels");
    int T = cJSON_GetArraySize(jids);
    int32_t *ids = ft_xmalloc((size_t)T * 4), *pos = ft_xmalloc((size_t)T * 4), *doc = ft_xcalloc((size_t)T, 4),
            *tg = ft_xmalloc((size_t)T * 4);
    float *logp = ft_xmalloc((size_t)T * 4), *dlogp = ft_xcalloc((size_t)T, 4);
    int n_trained = 0;
    for (int t = 0; t < T; t++) {
        ids[t] = cJSON_GetArrayItem(jids, t)->valueint;
        pos[t] = t;
        int next = t + 1 < T ? cJSON_GetArrayItem(jlab, t + 1)->valueint : -100;
        tg[t] = next == -100 ? -1 : next;
        n_trained += tg[t] >= 0;
    }
    ft_model *m = NULL;
    ft_weights g = {0};
    CHECK_MSG(model_load(dir, b, &m, &e) == 0, "%s: %s", name, e.msg);
    CHECK_MSG(m && grads_create(m, NULL, NULL, &g, &e) == 0, "%s: %s", name, e.msg);
    CHECK_MSG(m && model_forward_train(m, T, ids, pos, doc, tg, logp, &e) == 0, "%s: %s", name, e.msg);
    double loss = 0;
    for (int t = 0; t < T; t++)
        if (tg[t] >= 0) {
            loss -= logp[t];
            dlogp[t] = -1.0f / (float)n_trained;
        }
    loss /= n_trained;
    CHECK_CLOSE(loss, cJSON_GetObjectItem(train, "loss")->valuedouble, 1e-5);
    CHECK_MSG(m && model_backward(m, dlogp, &g, &e) == 0, "%s: %s", name, e.msg);

    snprintf(path, sizeof path, "%s/grads.safetensors", dir);
    st_file *ref = NULL;
    CHECK_MSG(st_open(path, &ref, &e) == 0, "%s", e.msg);
    int n = 0;
    ft_param *p = m ? weights_params(&m->cfg, &g, &n) : NULL;
    CHECK_MSG(ref && (size_t)n == st_count(ref), "%s: %d gradients, reference has %zu", name, n,
              ref ? st_count(ref) : 0);
    t_check_grads(b, ref, p, n, 1e-4, name);
    free(p);
    st_close(ref);
    if (m) grads_free(m, &g);
    model_free(m);
    cJSON_Delete(exp);
    free(ids), free(pos), free(doc), free(tg), free(logp), free(dlogp);
}

int main(void) {
    ft_backend *b = ft_backend_cpu_create();
    for (size_t i = 0; i < sizeof MODELS / sizeof MODELS[0]; i++) run_model(MODELS[i], b);
    b->destroy(b);
    TEST_DONE();
}
