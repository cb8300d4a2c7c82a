/* Activation offload and the CPU's precision rules: training with offload_activations (saved layer inputs
 * in alloc_host memory, copied back before each layer's recomputation) gives log-probs and gradients
 * bit-identical to keeping them on the device (a fixture model, packed batch); a 16-bit compute dtype on the
 * CPU backend is refused with FT_EINPUT, and the model stays usable in fp32. */
#include "finetune/backend/backend.h"
#include "finetune/model/model.h"
#include "test.h"

enum { T = 30 };

static float *run(ft_model *m, float *logp, int *ntot) {
    ft_error e;
    ft_weights g;
    int32_t ids[T], pos[T], doc[T], tg[T];
    float dl[T];
    for (int t = 0; t < T; t++) {
        int s0 = t < 17 ? 0 : 17;
        ids[t] = (t * 13 + 5) % m->cfg.vocab_size;
        pos[t] = t - s0;
        doc[t] = s0;
    }
    for (int t = 0; t < T; t++) {
        tg[t] = t == 16 || t == T - 1 ? -1 : ids[t + 1];
        dl[t] = tg[t] >= 0 ? -0.05f : 0.0f;
    }
    if (grads_create(m, NULL, NULL, &g, &e) || model_forward_train(m, T, ids, pos, doc, tg, logp, &e) ||
        model_backward(m, dl, &g, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
    int n = 0;
    ft_param *p = weights_params(&m->cfg, &g, &n);
    size_t tot = 0;
    for (int i = 0; i < n; i++) tot += (size_t)ft_numel(p[i].t);
    float *out = malloc(tot * 4), *w = out;
    for (int i = 0; i < n; i++) {
        memcpy(w, p[i].t->data, ft_nbytes(p[i].t));
        w += ft_numel(p[i].t);
    }
    free(p);
    grads_free(m, &g);
    *ntot = (int)tot;
    return out;
}

int main(void) {
    ft_backend *b = ft_backend_cpu_create();
    char dir[1024];
    t_src("tests/fixtures/models/llama-bias", dir, sizeof dir);
    ft_error e;
    ft_model *m = NULL;
    if (model_load(dir, b, &m, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    CHECK(model_set_precision(m, FT_BF16, NULL, NULL, &e) == FT_EINPUT);
    CHECK(strstr(e.msg, "device=cuda") != NULL);
    CHECK(m->compute == FT_F32);
    CHECK(model_set_precision(m, FT_F32, NULL, NULL, &e) == FT_OK);
    float lp1[T], lp2[T];
    int n1 = 0, n2 = 0;
    float *g1 = run(m, lp1, &n1);
    m->offload_activations = 1;
    float *g2 = run(m, lp2, &n2);
    CHECK(n1 == n2 && n1 > 0);
    CHECK(memcmp(lp1, lp2, sizeof lp1) == 0);
    CHECK(memcmp(g1, g2, (size_t)n1 * 4) == 0);
    /* and the gradients are not trivially zero */
    double s = 0;
    for (int i = 0; i < n1; i++) s += fabs(g1[i]);
    CHECK(s > 0);
    free(g1);
    free(g2);
    model_free(m);
    b->destroy(b);
    TEST_DONE();
}
