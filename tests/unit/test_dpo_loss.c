/* dpo_loss: gradients by central finite differences for every loss type (with label smoothing,
 * the SFT term, saturated margins, ORPO near p = 1), metric definitions on a hand-made case, and
 * clear errors on bad configs and inputs. */
#include "dpo/dpo_loss.h"
#include "test.h"

#define N 7

static double loss_at(const dpo_config *cfg, const double *pc, const double *pr, const double *rc,
                      const double *rr, const int *nc, const int *nr) {
    double l = NAN;
    ft_error e;
    if (dpo_loss_forward(cfg, N, pc, pr, rc, rr, nc, nr, &l, NULL, NULL, NULL, &e)) fprintf(stderr, "%s\n", e.msg);
    return l;
}

static void fd_check(const dpo_config *cfg, ft_rng *r, double avg_scale, double ref_noise, const char *what) {
    double pc[N], pr[N], rc[N], rr[N], dpc[N], dpr[N], loss;
    int nc[N], nr[N];
    for (int i = 0; i < N; i++) {
        nc[i] = 1 + (int)(ft_rng_next(r) % 30);
        nr[i] = 1 + (int)(ft_rng_next(r) % 30);
        pc[i] = -(ft_rng_uniform(r) * avg_scale + 0.01) * nc[i];
        pr[i] = -(ft_rng_uniform(r) * avg_scale + 0.01) * nr[i];
        rc[i] = pc[i] + ref_noise * ft_rng_normal(r);
        rr[i] = pr[i] + ref_noise * ft_rng_normal(r);
    }
    ft_error e = {0};
    CHECK_MSG(dpo_loss_forward(cfg, N, pc, pr, rc, rr, nc, nr, &loss, dpc, dpr, NULL, &e) == FT_OK, "%s", e.msg);
    CHECK(isfinite(loss));
    for (int i = 0; i < N; i++) {
        for (int side = 0; side < 2; side++) {
            double *x = side ? pr : pc, g = side ? dpr[i] : dpc[i];
            const double h = 1e-5 * fmax(1.0, fabs(x[i])), x0 = x[i];
            x[i] = x0 + h;
            double lp = loss_at(cfg, pc, pr, rc, rr, nc, nr);
            x[i] = x0 - h;
            double lm = loss_at(cfg, pc, pr, rc, rr, nc, nr);
            x[i] = x0;
            double fd = (lp - lm) / (2 * h);
            CHECK_MSG(fabs(fd - g) <= 1e-6 + 1e-5 * fabs(g), "%s (%s): d/d%s[%d] = %.9g, finite difference %.9g", what,
                      dpo_loss_type_name(cfg->type), side ? "pr" : "pc", i, g, fd);
        }
    }
}

int main(void) {
    ft_rng r;
    ft_rng_seed(&r, 42);
    dpo_config cfg;
    for (int t = 0; t < DPO_N_LOSS_TYPES; t++) {
        dpo_config_default(&cfg, (dpo_loss_type)t);
        fd_check(&cfg, &r, 2.0, 3.0, "default");
        cfg.beta = 0.5;
        if (t != DPO_IPO && t != DPO_HINGE && t != DPO_ORPO) cfg.label_smoothing = 0.2;
        cfg.sft_weight = 0.3;
        fd_check(&cfg, &r, 1.0, 5.0, "beta 0.5, smoothing, sft term");
    }
    dpo_config_default(&cfg, DPO_SIGMOID);
    cfg.beta = 1.0;
    fd_check(&cfg, &r, 2.0, 400.0, "saturated");
    dpo_config_default(&cfg, DPO_ORPO);
    fd_check(&cfg, &r, 0.02, 0.0, "orpo, p near 1");

    /* hand-made case: the DPO metrics TRL logs, and the sigmoid loss -log s(beta * delta) */
    {
        double pc[2] = {-10, -20}, pr[2] = {-12, -15}, rc[2] = {-11, -19}, rr[2] = {-11, -16}, loss, dpc[2], dpr[2];
        int nc[2] = {5, 10}, nr[2] = {4, 6};
        dpo_metrics m;
        ft_error e;
        dpo_config_default(&cfg, DPO_SIGMOID);
        CHECK(dpo_loss_forward(&cfg, 2, pc, pr, rc, rr, nc, nr, &loss, dpc, dpr, &m, &e) == FT_OK);
        /* pair 0: delta = (1) - (-1) = 2; pair 1: delta = (-1) - (1) = -2 */
        double l0 = log1p(exp(-0.2)), l1 = log1p(exp(0.2));
        CHECK_CLOSE(loss, (l0 + l1) / 2, 1e-12);
        CHECK_CLOSE(m.rewards_chosen, 0.1 * (1 + -1) / 2, 1e-12);
        CHECK_CLOSE(m.rewards_rejected, 0.1 * (-1 + 1) / 2, 1e-12);
        CHECK_CLOSE(m.rewards_accuracies, 0.5, 1e-12);
        CHECK_CLOSE(m.rewards_margins, 0.1 * (2 - 2) / 2, 1e-12);
        CHECK_CLOSE(m.logps_chosen, -15, 1e-12);
        CHECK_CLOSE(m.logps_rejected, -13.5, 1e-12);
        CHECK(m.n_pairs == 2);
        CHECK(dpc[0] < 0 && dpr[0] > 0 && fabs(dpc[0] + dpr[0]) < 1e-15);
        /* SimPO and ORPO are reference-free: NULL reference arrays are fine, metrics use averages */
        dpo_config_default(&cfg, DPO_SIMPO);
        CHECK(dpo_loss_forward(&cfg, 2, pc, pr, NULL, NULL, nc, nr, &loss, dpc, dpr, &m, &e) == FT_OK);
        CHECK_CLOSE(m.logps_chosen, (-2.0 + -2.0) / 2, 1e-12);
        CHECK_CLOSE(m.rewards_rejected, 0.1 * (-3.0 + -2.5) / 2, 1e-12);
        dpo_config_default(&cfg, DPO_SIGMOID);
        CHECK(dpo_loss_forward(&cfg, 2, pc, pr, NULL, NULL, nc, nr, &loss, dpc, dpr, &m, &e) != FT_OK);
    }

    /* defaults */
    dpo_config_default(&cfg, DPO_SIGMOID);
    CHECK(cfg.beta == 0.1 && cfg.label_smoothing == 0 && cfg.sft_weight == 0);
    dpo_config_h2o(&cfg, DPO_SIMPO);
    CHECK(cfg.beta == 0.2 && cfg.simpo_gamma == 1.0);
    dpo_config_default(&cfg, DPO_ORPO);
    CHECK(cfg.sft_weight == 1.0 && !dpo_needs_reference(DPO_ORPO) && dpo_needs_reference(DPO_IPO));

    /* names */
    dpo_loss_type t;
    ft_error e = {0};
    CHECK(dpo_loss_type_parse("IPO", &t, &e) == FT_OK && t == DPO_IPO);
    CHECK(dpo_loss_type_parse("cdpo", &t, &e) == FT_OK && t == DPO_SIGMOID);
    CHECK(dpo_loss_type_parse("kto", &t, &e) == FT_EINPUT && strstr(e.msg, "\"kto\""));
    for (int i = 0; i < DPO_N_LOSS_TYPES; i++)
        CHECK(dpo_loss_type_parse(dpo_loss_type_name((dpo_loss_type)i), &t, &e) == FT_OK && (int)t == i);

    /* bad configs and inputs: clear errors, no crash */
    double pc[1] = {-3}, pr[1] = {-4}, rc[1] = {-3}, rr[1] = {-4}, loss;
    int nc[1] = {3}, nr[1] = {2}, bad_n[1] = {-1};
    dpo_config_default(&cfg, DPO_ROBUST);
    cfg.label_smoothing = 0.5;
    CHECK(dpo_loss_forward(&cfg, 1, pc, pr, rc, rr, nc, nr, &loss, NULL, NULL, NULL, &e) == FT_EINPUT &&
          strstr(e.msg, "label_smoothing"));
    dpo_config_default(&cfg, DPO_SIGMOID);
    cfg.beta = 0;
    CHECK(dpo_loss_forward(&cfg, 1, pc, pr, rc, rr, nc, nr, &loss, NULL, NULL, NULL, &e) == FT_EINPUT &&
          strstr(e.msg, "beta"));
    cfg.beta = NAN;
    CHECK(dpo_config_check(&cfg, &e) == FT_EINPUT);
    dpo_config_default(&cfg, DPO_SIGMOID);
    cfg.sft_weight = -1;
    CHECK(dpo_config_check(&cfg, &e) == FT_EINPUT && strstr(e.msg, "sft_weight"));
    dpo_config_default(&cfg, DPO_SIGMOID);
    CHECK(dpo_loss_forward(&cfg, 0, pc, pr, rc, rr, nc, nr, &loss, NULL, NULL, NULL, &e) == FT_EINPUT);
    CHECK(dpo_loss_forward(&cfg, 1, pc, pr, rc, rr, bad_n, nr, &loss, NULL, NULL, NULL, &e) == FT_EINPUT &&
          strstr(e.msg, "pair 0"));
    double pos[1] = {0.5};
    CHECK(dpo_loss_forward(&cfg, 1, pos, pr, rc, rr, nc, nr, &loss, NULL, NULL, NULL, &e) == FT_EINPUT &&
          strstr(e.msg, "positive"));
    /* zero-token completions are clamped to 1 like TRL (IPO), not a division by zero */
    int zero[1] = {0};
    dpo_config_default(&cfg, DPO_IPO);
    CHECK(dpo_loss_forward(&cfg, 1, pc, pr, rc, rr, zero, zero, &loss, NULL, NULL, NULL, &e) == FT_OK && isfinite(loss));
    /* ORPO with an average log-prob of exactly 0 stays finite */
    double z0[1] = {0.0};
    double g1[1], g2[1];
    dpo_config_default(&cfg, DPO_ORPO);
    CHECK(dpo_loss_forward(&cfg, 1, z0, pr, NULL, NULL, nc, nr, &loss, g1, g2, NULL, &e) == FT_OK && isfinite(loss) &&
          isfinite(g1[0]) && isfinite(g2[0]));
    TEST_DONE();
}
