/* DPO through the whole model against transformers + TRL's sigmoid loss
 * (tests/reference/make_dpo_model_fixtures.py): the pair layout (prompt masked, [chosen; rejected]
 * packed), the per-pair log-prob sums, the loss, and every parameter's gradient. Run once with all
 * pairs in one micro-batch and once split over two accumulated micro-batches (same step loss), each in
 * TRL's layout and in the shared-prompt layout (dpo.shared_prompt: the prompt computed once per pair). */
#include <cjson/cJSON.h>

#include "dpo/dpo_batch.h"
#include "finetune/model/model.h"
#include "finetune/io/safetensors.h"
#include "grad_check.h"

static int32_t *ints(const cJSON *a, int *n) {
    *n = cJSON_GetArraySize(a);
    int32_t *v = ft_xmalloc((size_t)*n * 4 + 4);
    for (int i = 0; i < *n; i++) v[i] = cJSON_GetArrayItem(a, i)->valueint;
    return v;
}

static void run(const cJSON *fx, int per, const dpo_layout *lay, ft_backend *b) {
    char dir[1024], path[1200];
    ft_error e = {0};
    t_src("tests/fixtures/models/llama-gqa", dir, sizeof dir);
    const cJSON *jp = cJSON_GetObjectItem(fx, "pairs");
    int n = cJSON_GetArraySize(jp);
    ds_pref_example *pairs = ft_xcalloc((size_t)n, sizeof *pairs);
    double *ref_c = ft_xmalloc((size_t)n * 8), *ref_r = ft_xmalloc((size_t)n * 8);
    int order[16];
    for (int i = 0; i < n; i++) {
        const cJSON *p = cJSON_GetArrayItem(jp, i);
        pairs[i].prompt = ints(cJSON_GetObjectItem(p, "prompt"), &pairs[i].n_prompt);
        pairs[i].chosen = ints(cJSON_GetObjectItem(p, "chosen"), &pairs[i].n_chosen);
        pairs[i].rejected = ints(cJSON_GetObjectItem(p, "rejected"), &pairs[i].n_rejected);
        ref_c[i] = cJSON_GetObjectItem(p, "ref_chosen")->valuedouble;
        ref_r[i] = cJSON_GetObjectItem(p, "ref_rejected")->valuedouble;
        order[i] = i;
    }
    dpo_config cfg;
    dpo_config_default(&cfg, DPO_SIGMOID);
    cfg.beta = cJSON_GetObjectItem(fx, "beta")->valuedouble;
    ds_batch *batches;
    int nb;
    dpo_build_batches(pairs, order, n, per, lay, &batches, &nb);
    ft_model *m = NULL;
    ft_weights g = {0};
    CHECK_MSG(model_load(dir, b, &m, &e) == 0, "%s", e.msg);
    CHECK_MSG(m && grads_create(m, NULL, NULL, &g, &e) == 0, "%s", e.msg);
    double loss = 0;
    for (int i = 0; m && i < nb; i++) {
        ds_batch *bt = &batches[i];
        float *logp = ft_xmalloc((size_t)bt->n_tokens * 4), *dlogp = ft_xmalloc((size_t)bt->n_tokens * 4);
        CHECK(model_forward_train_excl(m, bt->n_tokens, bt->ids, bt->pos, bt->doc_start, bt->excl_start, bt->excl_end,
                                       bt->targets, logp, &e) == 0);
        CHECK(!lay == !bt->excl_start); /* the shared layout is in use (the fixture's pairs all have prompts) */
        /* per-pair policy log-probs equal transformers' (each sequence run alone there) */
        int pair[32], nc[32], nr[32];
        double pc[32], pr[32];
        int k = dpo_gather(bt, logp, pair, pc, pr, nc, nr);
        for (int j = 0; j < k; j++) {
            const cJSON *p = cJSON_GetArrayItem(jp, pair[j]);
            CHECK_CLOSE(pc[j], cJSON_GetObjectItem(p, "policy_chosen")->valuedouble, 1e-5);
            CHECK_CLOSE(pr[j], cJSON_GetObjectItem(p, "policy_rejected")->valuedouble, 1e-5);
            CHECK(nc[j] == pairs[pair[j]].n_chosen && nr[j] == pairs[pair[j]].n_rejected);
        }
        double w = (double)(bt->n_samples / 2) / n;
        CHECK_MSG(dpo_batch_loss(&cfg, bt, logp, ref_c, ref_r, w, dlogp, &loss, NULL, &e) == 0, "%s", e.msg);
        CHECK(model_backward(m, dlogp, &g, &e) == 0);
        free(logp);
        free(dlogp);
    }
    CHECK_CLOSE(loss, cJSON_GetObjectItem(fx, "loss")->valuedouble, 1e-5);

    t_src("tests/fixtures/dpo_model/grads.safetensors", path, sizeof path);
    st_file *ref = NULL;
    CHECK_MSG(st_open(path, &ref, &e) == 0, "%s", e.msg);
    int np = 0;
    ft_param *p = m ? weights_params(&m->cfg, &g, &np) : NULL;
    char label[32];
    snprintf(label, sizeof label, "per=%d%s", per, lay ? " shared prompt" : "");
    t_check_grads(b, ref, p, np, 1e-4, label);
    free(p);
    st_close(ref);
    ds_batches_free(batches, nb);
    if (m) grads_free(m, &g);
    model_free(m);
    for (int i = 0; i < n; i++) ds_pref_example_free(&pairs[i]);
    free(pairs);
    free(ref_c);
    free(ref_r);
}

int main(void) {
    char path[1024];
    char *text = NULL;
    ft_error e = {0};
    if (ft_read_file(t_src("tests/fixtures/dpo_model/pairs.json", path, sizeof path), &text, NULL, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    cJSON *fx = cJSON_Parse(text);
    free(text);
    ft_backend *b = ft_backend_cpu_create();
    const dpo_layout shared = {1, 0};
    for (int k = 0; k < 2; k++) {
        run(fx, 3, k ? &shared : NULL, b); /* all pairs in one micro-batch */
        run(fx, 2, k ? &shared : NULL, b); /* two micro-batches accumulated into one step */
    }
    b->destroy(b);
    cJSON_Delete(fx);
    TEST_DONE();
}
