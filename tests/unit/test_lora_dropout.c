/* LoRA dropout: the backend dropout op (splitmix64 key = the published SplitMix64 test vector, inverted
 * scaling, keep rate, seed determinism, in place) and the adapter gradients with dropout > 0 checked by
 * central finite differences of the training loss (the masks are fixed by m->step_seed, so the loss is a
 * smooth function of A and B); dropout changes the gradients, is off outside training, and a new
 * step_seed draws new masks. */
#include <math.h>

#include "lora/lora.h"
#include "test.h"

static void test_op(ft_backend *b) {
    /* splitmix64 seeded with 1234567: first output 6457827717110365317 (the reference generator's vector) */
    CHECK(ft_dropout_key(1234567) == 6457827717110365317ULL);
    enum { N = 200000 };
    ft_error e;
    ft_tensor x, y, z;
    int64_t n = N;
    if (ft_backend_tensor(b, FT_F32, 1, &n, &x, &e) || ft_backend_tensor(b, FT_F32, 1, &n, &y, &e) ||
        ft_backend_tensor(b, FT_F32, 1, &n, &z, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
    float *hx = malloc(N * 4), *hy = malloc(N * 4), *hz = malloc(N * 4);
    for (int i = 0; i < N; i++) hx[i] = 0.5f + (float)(i % 97) * 0.013f; /* never 0 */
    b->upload(b, x.data, hx, N * 4);
    const float p = 0.3f, scale = 1.0f / (1.0f - p);
    b->dropout(b, &x, &y, p, 42);
    b->download(b, hy, y.data, N * 4);
    int kept = 0, exact = 1;
    for (int i = 0; i < N; i++) {
        if (hy[i] != 0) {
            kept++;
            if (hy[i] != hx[i] * scale) exact = 0;
        }
    }
    CHECK_MSG(fabs((double)kept / N - (1 - p)) < 0.01, "keep rate %g, want %g", (double)kept / N, 1 - (double)p);
    CHECK_MSG(exact, "kept values are x * (1/(1-p))");
    /* same seed: same output; another seed: another mask */
    b->dropout(b, &x, &z, p, 42);
    b->download(b, hz, z.data, N * 4);
    CHECK(memcmp(hy, hz, N * 4) == 0);
    b->dropout(b, &x, &z, p, 43);
    b->download(b, hz, z.data, N * 4);
    int same = 0;
    for (int i = 0; i < N; i++) same += (hy[i] != 0) == (hz[i] != 0);
    CHECK_MSG(same < N * 0.7, "seeds 42 and 43 agree on %d of %d mask bits (independent: ~58%%)", same, N);
    /* the mask is independent of position in a larger tensor's prefix: element i depends on (seed, i) only */
    int64_t half = N / 2;
    ft_tensor xh = ft_t1(x.data, FT_F32, b->device, half), zh = ft_t1(z.data, FT_F32, b->device, half);
    b->dropout(b, &xh, &zh, p, 42);
    b->download(b, hz, z.data, (size_t)half * 4);
    CHECK(memcmp(hy, hz, (size_t)half * 4) == 0);
    /* in place */
    b->copy(b, z.data, x.data, N * 4);
    b->dropout(b, &z, &z, p, 42);
    b->download(b, hz, z.data, N * 4);
    CHECK(memcmp(hy, hz, N * 4) == 0);
    /* p = 0 keeps everything unchanged */
    b->dropout(b, &x, &z, 0.0f, 42);
    b->download(b, hz, z.data, N * 4);
    CHECK(memcmp(hx, hz, N * 4) == 0);
    free(hx), free(hy), free(hz);
    b->free(b, x.data), b->free(b, y.data), b->free(b, z.data);
}

enum { T = 24 };
static int32_t ids[T], pos[T], doc[T], tg[T];
static float dlogp[T];

/* training loss sum_t dlogp[t] * logp[t] (dropout active: model_forward_train) */
static double train_loss(ft_model *m) {
    float lp[T];
    ft_error e;
    if (model_forward_train(m, T, ids, pos, doc, tg, lp, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
    double s = 0;
    for (int t = 0; t < T; t++) s += (double)dlogp[t] * lp[t];
    return s;
}

static void grads(ft_model *m, lora_adapter *a, ft_weights *g) {
    ft_error e;
    for (size_t k = 0; k < (size_t)a->num_layers * FT_LIN_COUNT; k++)
        if (a->gA[k].data) {
            a->b->zero(a->b, a->gA[k].data, ft_nbytes(&a->gA[k]));
            a->b->zero(a->b, a->gB[k].data, ft_nbytes(&a->gB[k]));
        }
    train_loss(m);
    if (model_backward(m, dlogp, g, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
}

static int frozen(const char *name, void *ctx) {
    (void)name, (void)ctx;
    return 0;
}

static float get(const ft_tensor *t, int64_t i) { return ((float *)t->data)[i]; }

int main(void) {
    ft_error e = {0};
    ft_backend *b = ft_backend_cpu_create();
    test_op(b);

    char base[1024];
    t_src("tests/fixtures/models/llama-gqa", base, sizeof base);
    ft_model *m;
    if (model_load(base, b, &m, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    lora_cfg c = {0};
    c.r = 4;
    c.alpha = 8;
    c.dropout = 0.4f;
    CHECK(lora_parse_targets("\"all-linear\"", &c, "test", &e) == FT_OK);
    lora_adapter *a = NULL;
    if (lora_create(m, &c, 11, &a, &e) || lora_grads_create(a, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    /* B = 0 would leave A's gradient 0: give B values so every path carries signal */
    ft_rng rng;
    ft_rng_seed(&rng, 99);
    for (size_t k = 0; k < (size_t)a->num_layers * FT_LIN_COUNT; k++)
        if (a->B[k].data)
            for (int64_t i = 0; i < ft_numel(&a->B[k]); i++)
                ((float *)a->B[k].data)[i] = (2 * ft_rng_uniform(&rng) - 1) * 0.3f;
    lora_attach(a, m);
    ft_weights g = {0};
    if (grads_create(m, frozen, NULL, &g, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    int ntok = 0;
    for (int t = 0; t < T; t++) {
        int s0 = t < 11 ? 0 : 11;
        ids[t] = (int32_t)((t * 37 + 5) % 250 + 3);
        pos[t] = t - s0;
        doc[t] = s0;
    }
    for (int t = 0; t < T; t++) {
        tg[t] = (t == 10 || t == T - 1) ? -1 : ids[t + 1];
        ntok += tg[t] >= 0;
    }
    for (int t = 0; t < T; t++) dlogp[t] = tg[t] >= 0 ? -1.0f / (float)ntok : 0.0f;

    m->step_seed = 0x5eed;
    grads(m, a, &g);
    /* keep the analytic gradients of a few matrices: layer 0 (its gradient crosses layer 1's adapters' masked
     * input-gradient path) and layer 1 */
    struct {
        int layer;
        ft_linear w;
        int isB;
    } pick[] = {{0, FT_LIN_Q, 0}, {0, FT_LIN_V, 1}, {0, FT_LIN_DOWN, 0}, {0, FT_LIN_UP, 1},
                {1, FT_LIN_O, 0}, {1, FT_LIN_GATE, 1}, {1, FT_LIN_K, 0}, {1, FT_LIN_DOWN, 1}};
    int npick = (int)(sizeof pick / sizeof pick[0]);
    double max_err = 0, max_g = 0;
    float saved_g[8][6];
    int64_t saved_i[8][6];
    for (int p = 0; p < npick; p++) {
        size_t k = (size_t)pick[p].layer * FT_LIN_COUNT + pick[p].w;
        ft_tensor *G = pick[p].isB ? &a->gB[k] : &a->gA[k];
        for (int j = 0; j < 6; j++) {
            saved_i[p][j] = (int64_t)(ft_rng_uniform(&rng) * (float)ft_numel(G)) % ft_numel(G);
            saved_g[p][j] = get(G, saved_i[p][j]);
        }
    }
    const float eps = 1e-2f;
    for (int p = 0; p < npick; p++) {
        size_t k = (size_t)pick[p].layer * FT_LIN_COUNT + pick[p].w;
        float *W = pick[p].isB ? a->B[k].data : a->A[k].data;
        for (int j = 0; j < 6; j++) {
            int64_t i = saved_i[p][j];
            float w0 = W[i];
            W[i] = w0 + eps;
            double lp = train_loss(m);
            W[i] = w0 - eps;
            double lm = train_loss(m);
            W[i] = w0;
            double fd = (lp - lm) / (2.0 * eps), an = saved_g[p][j];
            double err = fabs(fd - an);
            if (err > max_err) max_err = err;
            if (fabs(an) > max_g) max_g = fabs(an);
            CHECK_MSG(err <= 2e-4 + 2e-2 * fabs(fd), "layer %d %s %s[%lld]: analytic %.6g, finite difference %.6g",
                      pick[p].layer, FT_LINEAR_NAMES[pick[p].w], pick[p].isB ? "B" : "A", (long long)i, an, fd);
        }
    }
    printf("dropout p=0.4: finite differences vs analytic: max |err| %.3g (largest gradient %.3g)\n", max_err, max_g);
    CHECK(max_g > 1e-3); /* the check is not vacuous */

    /* dropout matters: without it (p = 0) the same parameters give other gradients and another loss */
    double l_drop = train_loss(m);
    a->cfg.dropout = 0;
    double l_nodrop = train_loss(m);
    grads(m, a, &g);
    int differ = 0;
    for (int p = 0; p < npick; p++) {
        size_t k = (size_t)pick[p].layer * FT_LIN_COUNT + pick[p].w;
        ft_tensor *G = pick[p].isB ? &a->gB[k] : &a->gA[k];
        for (int j = 0; j < 6; j++) differ += fabsf(get(G, saved_i[p][j]) - saved_g[p][j]) > 1e-5f;
    }
    CHECK_MSG(differ > npick * 3, "only %d of %d gradients change when dropout is switched off", differ, npick * 6);
    CHECK_MSG(fabs(l_drop - l_nodrop) > 1e-5, "loss with dropout %.8g, without %.8g", l_drop, l_nodrop);
    a->cfg.dropout = 0.4f;
    /* another step_seed: other masks, another loss; the same one again: the same loss, bit for bit */
    m->step_seed = 0x5eee;
    double l_other = train_loss(m);
    CHECK_MSG(l_other != l_drop, "a new step_seed drew the same masks (loss %.9g)", l_other);
    m->step_seed = 0x5eed;
    CHECK(train_loss(m) == l_drop);
    /* outside training (model_forward, generation, evaluation) dropout is off */
    float lp1[T], lp2[T];
    CHECK(model_forward(m, T, ids, pos, doc, tg, lp1, &e) == FT_OK);
    a->cfg.dropout = 0;
    CHECK(model_forward(m, T, ids, pos, doc, tg, lp2, &e) == FT_OK);
    CHECK(memcmp(lp1, lp2, sizeof lp1) == 0);

    grads_free(m, &g);
    lora_free(a);
    lora_cfg_free(&c);
    model_free(m);
    b->destroy(b);
    TEST_DONE();
}
