/* DPO's shared-prompt layout (dpo_batch.h) against TRL's layout on the tiny models (CPU): the batch
 * structure (positions, doc_start, exclusions, targets, token counts), and through the whole model the
 * per-pair log-prob sums and lengths, the losses (sigmoid, IPO, SimPO) and TRL's metrics, the
 * reference log-probs of a separate reference model, and every parameter's gradient, all equal within
 * fp32 summation tolerance. Models: GQA, biases, Qwen2, Mistral's sliding window (window 4: the short
 * pairs share, the longer fall back to two sequences) and dynamic RoPE (max_position_embeddings 8: pairs
 * beyond it fall back). Pairs include a one-token prompt, an empty prompt and one-token replies. */
#include "dpo/dpo_batch.h"
#include "finetune/model/model.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { NP = 9, NLOSS = 3 };
static const int SHAPES[NP][3] = {{5, 4, 6}, {1, 3, 2}, {9, 1, 1}, {0, 3, 3}, {2, 6, 1},
                                  {3, 2, 5}, {1, 1, 1}, {12, 7, 9}, {2, 1, 1}}; /* prompt, chosen, rejected */

static int32_t *rand_ids(ft_rng *r, int n) {
    int32_t *v = ft_xmalloc((size_t)(n ? n : 1) * 4);
    for (int i = 0; i < n; i++) v[i] = 3 + (int32_t)(ft_rng_next(r) % 253);
    return v;
}

/* What one run over all pairs in one layout gives. */
typedef struct result {
    double pc[NP], pr[NP], ref_c[NP], ref_r[NP];
    int nc[NP], nr[NP];
    double loss[NLOSS];
    dpo_metrics mt[NLOSS];
    long tokens;
    float **grads; /* per parameter, host copies */
} result;

/* Per-pair sums of one forward over batches b (model_forward_excl). */
static void sums(ft_model *m, const ds_batch *b, int nb, double *pc, double *pr, int *nc, int *nr, int train) {
    ft_error e = {0};
    for (int i = 0; i < nb; i++) {
        float *logp = ft_xmalloc((size_t)b[i].n_tokens * 4);
        int rc = train ? model_forward_train_excl(m, b[i].n_tokens, b[i].ids, b[i].pos, b[i].doc_start, b[i].excl_start,
                                                  b[i].excl_end, b[i].targets, logp, &e)
                       : model_forward_excl(m, b[i].n_tokens, b[i].ids, b[i].pos, b[i].doc_start, b[i].excl_start,
                                            b[i].excl_end, b[i].targets, logp, &e);
        CHECK_MSG(rc == 0, "forward: %s", e.msg);
        int pair[2 * NP], kc[2 * NP], kr[2 * NP];
        double sc[2 * NP], sr[2 * NP];
        int k = dpo_gather(&b[i], logp, pair, sc, sr, kc, kr);
        for (int j = 0; j < k; j++) {
            pc[pair[j]] = sc[j], pr[pair[j]] = sr[j];
            nc[pair[j]] = kc[j], nr[pair[j]] = kr[j];
        }
        free(logp);
    }
}

static void run(ft_model *m, ft_model *ref, const ds_pref_example *pairs, const dpo_layout *lay, result *out) {
    ft_error e = {0};
    int order[NP], nb, np = 0;
    for (int i = 0; i < NP; i++) order[i] = NP - 1 - i; /* not the pairs' own order */
    ds_batch *b;
    dpo_build_batches(pairs, order, NP, 4, lay, &b, &nb); /* 4 + 4 + 1 pairs */
    out->tokens = 0;
    for (int i = 0; i < nb; i++) out->tokens += b[i].n_tokens;
    sums(ref, b, nb, out->ref_c, out->ref_r, out->nc, out->nr, 0); /* the reference model's pass */
    ft_weights g = {0};
    CHECK_MSG(grads_create(m, NULL, NULL, &g, &e) == 0, "%s", e.msg);
    dpo_config cfg[NLOSS];
    dpo_config_default(&cfg[0], DPO_SIGMOID);
    dpo_config_default(&cfg[1], DPO_IPO);
    dpo_config_default(&cfg[2], DPO_SIMPO);
    memset(out->loss, 0, sizeof out->loss);
    for (int i = 0; i < nb; i++) {
        float *logp = ft_xmalloc((size_t)b[i].n_tokens * 4), *dlogp = ft_xmalloc((size_t)b[i].n_tokens * 4);
        CHECK_MSG(model_forward_train_excl(m, b[i].n_tokens, b[i].ids, b[i].pos, b[i].doc_start, b[i].excl_start,
                                           b[i].excl_end, b[i].targets, logp, &e) == 0,
                  "%s", e.msg);
        double w = (double)(b[i].n_samples / 2) / NP;
        for (int l = NLOSS - 1; l >= 0; l--) { /* sigmoid last: its dlogp drives the backward */
            dpo_metrics mt;
            int ref_free = !dpo_needs_reference(cfg[l].type);
            CHECK_MSG(dpo_batch_loss(&cfg[l], &b[i], logp, ref_free ? NULL : out->ref_c, ref_free ? NULL : out->ref_r,
                                     w, dlogp, &out->loss[l], &mt, &e) == 0,
                      "%s", e.msg);
            if (i == 0) memset(&out->mt[l], 0, sizeof out->mt[l]);
            out->mt[l].rewards_chosen += w * mt.rewards_chosen;
            out->mt[l].rewards_rejected += w * mt.rewards_rejected;
            out->mt[l].rewards_accuracies += w * mt.rewards_accuracies;
            out->mt[l].rewards_margins += w * mt.rewards_margins;
            out->mt[l].logps_chosen += w * mt.logps_chosen;
            out->mt[l].logps_rejected += w * mt.logps_rejected;
        }
        CHECK_MSG(model_backward(m, dlogp, &g, &e) == 0, "%s", e.msg);
        free(logp);
        free(dlogp);
    }
    sums(m, b, nb, out->pc, out->pr, out->nc, out->nr, 1);
    ft_param *p = weights_params(&m->cfg, &g, &np);
    out->grads = ft_xcalloc((size_t)np, sizeof *out->grads);
    for (int i = 0; i < np; i++) {
        if (!p[i].t->data) continue;
        size_t n = (size_t)ft_numel(p[i].t);
        out->grads[i] = ft_xmalloc(n * 4);
        m->b->download(m->b, out->grads[i], p[i].t->data, n * 4);
    }
    free(p);
    grads_free(m, &g);
    ds_batches_free(b, nb);
}

/* Layout checks on the batch itself: each shared pair's copy token and exclusions as documented. */
static void check_structure(const ds_pref_example *pairs, const dpo_layout *lay) {
    int order[NP], nb;
    for (int i = 0; i < NP; i++) order[i] = i;
    ds_batch *b;
    dpo_build_batches(pairs, order, NP, NP, lay, &b, &nb);
    CHECK(nb == 1 && b->n_samples == 2 * NP);
    long trl = 0, want = 0;
    int t = 0;
    for (int i = 0; i < NP; i++) {
        const ds_pref_example *p = &pairs[i];
        int P = p->n_prompt, C = p->n_chosen, R = p->n_rejected, span = P + C + 1 + R;
        int shared = lay->shared && P > 0 && (lay->span_limit <= 0 || span <= lay->span_limit);
        trl += 2 * P + C + R;
        want += shared ? span : 2 * P + C + R;
        if (!lay->shared) continue; /* TRL's layout: every chosen sequence, then every rejected one */
        if (!shared) { /* its two sequences, side by side */
            CHECK(b->doc_start[t] == t && b->doc_start[t + P + C] == t + P + C);
            t += 2 * P + C + R;
            continue;
        }
        int s = t, dup = s + P + C;
        CHECK(b->ids[dup] == p->prompt[P - 1] && b->pos[dup] == P - 1 && b->targets[dup] == p->rejected[0]);
        CHECK(b->targets[s + P - 1] == p->chosen[0] && b->targets[dup - 1] == -1 && b->targets[s + span - 1] == -1);
        for (int k = 0; k < span; k++) {
            CHECK(b->doc_start[s + k] == s);
            int excl = k >= P + C;
            CHECK(b->excl_start[s + k] == (excl ? s + P - 1 : 0) && b->excl_end[s + k] == (excl ? s + P + C : 0));
            CHECK(b->sample[s + k] == 2 * i + excl);
            if (k > P + C) CHECK(b->pos[s + k] == P + k - (P + C + 1) && b->ids[s + k] == p->rejected[k - P - C - 1]);
        }
        t += span;
    }
    CHECK(want == b->n_tokens && (!lay->shared || t == b->n_tokens));
    if (!lay->shared) CHECK(b->n_tokens == trl && !b->excl_start);
    ds_batches_free(b, nb);
}

static void close_rel(const char *what, const char *model, int i, double a, double b, double tol) {
    CHECK_MSG(fabs(a - b) <= tol * fmax(1.0, fabs(b)), "%s %s [%d]: shared %.9g, TRL layout %.9g", model, what, i, a,
              b);
}

static void compare(const char *name, ft_model *m, const result *s, const result *r) {
    for (int i = 0; i < NP; i++) {
        close_rel("policy chosen log-prob sum", name, i, s->pc[i], r->pc[i], 2e-5);
        close_rel("policy rejected log-prob sum", name, i, s->pr[i], r->pr[i], 2e-5);
        close_rel("reference chosen log-prob sum", name, i, s->ref_c[i], r->ref_c[i], 2e-5);
        close_rel("reference rejected log-prob sum", name, i, s->ref_r[i], r->ref_r[i], 2e-5);
        int np0 = SHAPES[i][0] == 0; /* without a prompt nothing predicts a reply's first token (as TRL) */
        CHECK_MSG(s->nc[i] == r->nc[i] && s->nr[i] == r->nr[i] && s->nc[i] == SHAPES[i][1] - np0 &&
                      s->nr[i] == SHAPES[i][2] - np0,
                  "%s pair %d: completion lengths %d/%d vs %d/%d", name, i, s->nc[i], s->nr[i], r->nc[i], r->nr[i]);
    }
    for (int l = 0; l < NLOSS; l++) {
        close_rel("loss", name, l, s->loss[l], r->loss[l], 1e-5);
        close_rel("rewards/chosen", name, l, s->mt[l].rewards_chosen, r->mt[l].rewards_chosen, 1e-5);
        close_rel("rewards/rejected", name, l, s->mt[l].rewards_rejected, r->mt[l].rewards_rejected, 1e-5);
        close_rel("rewards/accuracies", name, l, s->mt[l].rewards_accuracies, r->mt[l].rewards_accuracies, 1e-12);
        close_rel("rewards/margins", name, l, s->mt[l].rewards_margins, r->mt[l].rewards_margins, 1e-5);
        close_rel("logps/chosen", name, l, s->mt[l].logps_chosen, r->mt[l].logps_chosen, 1e-5);
        close_rel("logps/rejected", name, l, s->mt[l].logps_rejected, r->mt[l].logps_rejected, 1e-5);
    }
    ft_weights g = {0};
    weights_shape(&m->cfg, m->b->device, &g);
    int np = 0;
    ft_param *p = weights_params(&m->cfg, &g, &np);
    for (int i = 0; i < np; i++) {
        CHECK_MSG(!s->grads[i] == !r->grads[i], "%s %s: gradient in one layout only", name, p[i].name);
        if (!s->grads[i]) continue;
        int64_t n = ft_numel(p[i].t);
        double mx = 0, err = 0;
        for (int64_t k = 0; k < n; k++) mx = fmax(mx, fabs(r->grads[i][k]));
        for (int64_t k = 0; k < n; k++) err = fmax(err, fabs((double)s->grads[i][k] - r->grads[i][k]));
        CHECK_MSG(err <= 2e-5 * mx + 1e-9 && mx > 0, "%s gradient %s: max |shared - TRL| %.3g (max |g| %.3g)", name,
                  p[i].name, err, mx);
    }
    free(p);
    free(g.layers); /* weights_shape's layer array (the tensors have no data) */
}

static void free_result(result *r, ft_model *m) {
    ft_weights g = {0};
    weights_shape(&m->cfg, m->b->device, &g);
    int np = 0;
    free(weights_params(&m->cfg, &g, &np));
    free(g.layers);
    for (int i = 0; i < np; i++) free(r->grads[i]);
    free(r->grads);
}

int main(void) {
    ft_backend *b = ft_backend_cpu_create();
    ft_rng rng;
    ft_rng_seed(&rng, 7);
    ds_pref_example pairs[NP];
    memset(pairs, 0, sizeof pairs);
    for (int i = 0; i < NP; i++) {
        pairs[i].n_prompt = SHAPES[i][0], pairs[i].n_chosen = SHAPES[i][1], pairs[i].n_rejected = SHAPES[i][2];
        pairs[i].prompt = rand_ids(&rng, SHAPES[i][0]);
        pairs[i].chosen = rand_ids(&rng, SHAPES[i][1]);
        pairs[i].rejected = rand_ids(&rng, SHAPES[i][2]);
    }
    const dpo_layout trl = {0, 0};
    check_structure(pairs, &trl);
    const dpo_layout all = {1, 0}, lim = {1, 12};
    check_structure(pairs, &all);
    check_structure(pairs, &lim);

    static const char *MODELS[] = {"llama-gqa", "llama-bias", "qwen2-bias", "mistral-swa", "llama-rope-dynamic"};
    char dir[1024], rdir[1024];
    ft_error e = {0};
    ft_model *ref = NULL;
    CHECK_MSG(model_load(t_src("tests/fixtures/models/llama-hd12", rdir, sizeof rdir), b, &ref, &e) == 0, "%s",
              e.msg);
    for (size_t k = 0; ref && k < sizeof MODELS / sizeof *MODELS; k++) {
        char rel[128];
        snprintf(rel, sizeof rel, "tests/fixtures/models/%s", MODELS[k]);
        ft_model *m = NULL;
        CHECK_MSG(model_load(t_src(rel, dir, sizeof dir), b, &m, &e) == 0, "%s", e.msg);
        if (!m) continue;
        dpo_layout sh = {1, dpo_shared_span_limit(&m->cfg, 0)};
        sh.span_limit = dpo_shared_span_limit(&ref->cfg, sh.span_limit);
        int n_shared = 0;
        for (int i = 0; i < NP; i++) {
            int span = SHAPES[i][0] + SHAPES[i][1] + 1 + SHAPES[i][2];
            n_shared += SHAPES[i][0] > 0 && (sh.span_limit <= 0 || span <= sh.span_limit);
        }
        check_structure(pairs, &sh);
        result rs, rt;
        run(m, ref, pairs, &sh, &rs);
        run(m, ref, pairs, &trl, &rt);
        compare(MODELS[k], m, &rs, &rt);
        CHECK(n_shared > 0 && rs.tokens <= rt.tokens); /* every model has pairs that share */
        fprintf(stderr, "%s: %d of %d pairs shared (span limit %d), %ld tokens vs %ld in TRL's layout\n", MODELS[k],
                n_shared, NP, sh.span_limit, rs.tokens, rt.tokens);
        free_result(&rs, m);
        free_result(&rt, m);
        model_free(m);
    }
    model_free(ref);
    for (int i = 0; i < NP; i++) ds_pref_example_free(&pairs[i]);
    b->destroy(b);
    TEST_DONE();
}
