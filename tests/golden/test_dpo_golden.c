/* dpo_loss against TRL 1.16's own loss code (tests/reference/make_dpo_fixtures.py): for every loss
 * type on random pairs, the mean loss, its autograd gradient w.r.t. the policy log-probs and TRL's
 * logged metrics agree within 1e-6 relative. */
#include <cjson/cJSON.h>

#include "dpo/dpo_loss.h"
#include "test.h"

#define MAXP 64

static int read_arr(const cJSON *o, const char *key, double *out) {
    const cJSON *a = cJSON_GetObjectItem(o, key);
    int n = cJSON_GetArraySize(a);
    if (n > MAXP) n = MAXP;
    for (int i = 0; i < n; i++) out[i] = cJSON_GetArrayItem(a, i)->valuedouble;
    return n;
}

int main(void) {
    char path[1024];
    t_src("tests/fixtures/dpo/losses.json", path, sizeof path);
    char *text = NULL;
    ft_error e = {0};
    if (ft_read_file(path, &text, NULL, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    CHECK(root != NULL);
    const cJSON *cases = cJSON_GetObjectItem(root, "cases"), *c;
    int seen[DPO_N_LOSS_TYPES] = {0};
    cJSON_ArrayForEach(c, cases) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        dpo_config cfg;
        dpo_loss_type t;
        CHECK(dpo_loss_type_parse(cJSON_GetObjectItem(c, "type")->valuestring, &t, &e) == FT_OK);
        dpo_config_default(&cfg, t);
        cfg.beta = cJSON_GetObjectItem(c, "beta")->valuedouble;
        cfg.label_smoothing = cJSON_GetObjectItem(c, "label_smoothing")->valuedouble;
        cfg.simpo_gamma = cJSON_GetObjectItem(c, "simpo_gamma")->valuedouble;
        cfg.sft_weight = cJSON_GetObjectItem(c, "sft_weight")->valuedouble;
        seen[t]++;
        double pc[MAXP], pr[MAXP], rc[MAXP], rr[MAXP], ncd[MAXP], nrd[MAXP], gc[MAXP], gr[MAXP];
        int n = read_arr(c, "pc", pc);
        read_arr(c, "pr", pr);
        read_arr(c, "rc", rc);
        read_arr(c, "rr", rr);
        read_arr(c, "nc", ncd);
        read_arr(c, "nr", nrd);
        read_arr(c, "dpc", gc);
        read_arr(c, "dpr", gr);
        int nc[MAXP], nr[MAXP];
        for (int i = 0; i < n; i++) {
            nc[i] = (int)ncd[i];
            nr[i] = (int)nrd[i];
        }
        double loss, dpc[MAXP], dpr[MAXP];
        dpo_metrics m;
        int rc_ = dpo_loss_forward(&cfg, n, pc, pr, rc, rr, nc, nr, &loss, dpc, dpr, &m, &e);
        CHECK_MSG(rc_ == FT_OK, "%s: %s", name, e.msg);
        const double tol = 1e-6;
        fprintf(stderr, "%-28s loss %.10g (TRL %.10g)\n", name, loss, cJSON_GetObjectItem(c, "loss")->valuedouble);
        CHECK_CLOSE(loss, cJSON_GetObjectItem(c, "loss")->valuedouble, tol);
        /* gradients are O(1/n_pairs): compare relative to the largest one of the case */
        double gmax = 0;
        for (int i = 0; i < n; i++) gmax = fmax(gmax, fmax(fabs(gc[i]), fabs(gr[i])));
        for (int i = 0; i < n; i++) {
            CHECK_MSG(fabs(dpc[i] - gc[i]) <= tol * fmax(fabs(gc[i]), 1e-3 * gmax), "%s: dpc[%d] = %.10g, TRL %.10g",
                      name, i, dpc[i], gc[i]);
            CHECK_MSG(fabs(dpr[i] - gr[i]) <= tol * fmax(fabs(gr[i]), 1e-3 * gmax), "%s: dpr[%d] = %.10g, TRL %.10g",
                      name, i, dpr[i], gr[i]);
        }
        const cJSON *jm = cJSON_GetObjectItem(c, "metrics");
        struct {
            const char *key;
            double v;
        } mv[] = {{"rewards/chosen", m.rewards_chosen},     {"rewards/rejected", m.rewards_rejected},
                  {"rewards/accuracies", m.rewards_accuracies}, {"rewards/margins", m.rewards_margins},
                  {"logps/chosen", m.logps_chosen},         {"logps/rejected", m.logps_rejected},
                  {"nll_loss", m.nll_loss},                 {"log_odds_ratio", m.log_odds_ratio},
                  {"log_odds_chosen", m.log_odds_chosen}};
        for (size_t k = 0; k < sizeof mv / sizeof mv[0]; k++) {
            const cJSON *v = cJSON_GetObjectItem(jm, mv[k].key);
            if (!v) continue;
            CHECK_MSG(fabs(mv[k].v - v->valuedouble) <= tol * fmax(1.0, fabs(v->valuedouble)), "%s: %s = %.10g, TRL %.10g",
                      name, mv[k].key, mv[k].v, v->valuedouble);
        }
    }
    for (int t = 0; t < DPO_N_LOSS_TYPES; t++) CHECK_MSG(seen[t] > 0, "no fixture for loss %s", dpo_loss_type_name(t));
    cJSON_Delete(root);
    TEST_DONE();
}
