/* dpo_loss: see dpo_loss.h. Each per-pair loss is written as l(z) of one scalar z
 * whose derivative dz/dpc, dz/dpr is simple, so forward and gradient stay side by side. */
#include "dpo/dpo_loss.h"

#include <math.h>
#include <string.h>
#include <strings.h>

/* log(sigmoid(x)) without overflow for large |x| */
static double log_sigmoid(double x) {
    return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x));
}

static double sigmoid(double x) {
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double t = exp(x);
    return t / (1.0 + t);
}

/* log(1 - exp(x)) for x < 0, split at -ln 2 to avoid cancellation */
static double log1mexp(double x) {
    return x < -0.6931471805599453 ? log1p(-exp(x)) : log(-expm1(x));
}

static const char *const NAMES[DPO_N_LOSS_TYPES] = {"sigmoid", "robust", "ipo", "hinge", "simpo", "orpo"};

const char *dpo_loss_type_name(dpo_loss_type t) {
    return (unsigned)t < DPO_N_LOSS_TYPES ? NAMES[t] : "?";
}

int dpo_loss_type_parse(const char *name, dpo_loss_type *out, ft_error *e) {
    if (!name) return ft_fail(e, FT_EINPUT, "DPO loss type missing");
    for (int i = 0; i < DPO_N_LOSS_TYPES; i++)
        if (!strcasecmp(name, NAMES[i])) {
            *out = (dpo_loss_type)i;
            return FT_OK;
        }
    if (!strcasecmp(name, "dpo") || !strcasecmp(name, "cdpo")) {
        *out = DPO_SIGMOID;
        return FT_OK;
    }
    return ft_fail(e, FT_EINPUT,
                   "unknown DPO loss type \"%s\": expected sigmoid, robust, ipo, hinge, simpo or orpo", name);
}

int dpo_needs_reference(dpo_loss_type t) { return t != DPO_SIMPO && t != DPO_ORPO; }

void dpo_config_default(dpo_config *c, dpo_loss_type type) {
    memset(c, 0, sizeof *c);
    c->type = type;
    c->beta = 0.1;         /* DPOConfig.beta, CPOConfig.beta, ORPOConfig.beta */
    c->simpo_gamma = 0.5;  /* CPOConfig.simpo_gamma */
    c->sft_weight = type == DPO_ORPO ? 1.0 : 0.0;
}

void dpo_config_h2o(dpo_config *c, dpo_loss_type type) {
    dpo_config_default(c, type);
    c->beta = 0.2;        /* ConfigDPOTraining.beta */
    c->simpo_gamma = 1.0; /* ConfigDPOTraining.simpo_gamma */
}

int dpo_config_check(const dpo_config *c, ft_error *e) {
    if ((unsigned)c->type >= DPO_N_LOSS_TYPES) return ft_fail(e, FT_EINPUT, "DPO loss type %d unknown", (int)c->type);
    if (!(c->beta > 0) || !isfinite(c->beta))
        return ft_fail(e, FT_EINPUT, "beta = %g: must be a finite number > 0", c->beta);
    if (!(c->label_smoothing >= 0 && c->label_smoothing < 1))
        return ft_fail(e, FT_EINPUT, "label_smoothing = %g: must be in [0, 1)", c->label_smoothing);
    if (c->type == DPO_ROBUST && !(c->label_smoothing < 0.5))
        return ft_fail(e, FT_EINPUT, "label_smoothing = %g: the robust loss needs it in [0, 0.5)",
                       c->label_smoothing);
    if (!isfinite(c->simpo_gamma)) return ft_fail(e, FT_EINPUT, "simpo_gamma = %g: must be finite", c->simpo_gamma);
    if (!(c->sft_weight >= 0) || !isfinite(c->sft_weight))
        return ft_fail(e, FT_EINPUT, "sft_weight = %g: must be a finite number >= 0", c->sft_weight);
    return FT_OK;
}

/* Smoothed logistic loss -(1-eps) log s(z) - eps log s(-z) and its derivative. */
static double smoothed_logistic(double z, double eps, double *dz) {
    *dz = -(1 - eps) * sigmoid(-z) + eps * sigmoid(z);
    return -(1 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z);
}

int dpo_loss_forward(const dpo_config *cfg, int n_pairs, const double *pc, const double *pr,
                     const double *rc, const double *rr, const int *nc, const int *nr,
                     double *loss, double *dpc, double *dpr, dpo_metrics *metrics, ft_error *e) {
    int rc_ = dpo_config_check(cfg, e);
    if (rc_) return rc_;
    if (n_pairs <= 0) return ft_fail(e, FT_EINPUT, "DPO loss: %d pairs (need at least one)", n_pairs);
    if (!pc || !pr || !nc || !nr || !loss) return ft_fail(e, FT_EINTERNAL, "DPO loss: NULL input array");
    const int need_ref = dpo_needs_reference(cfg->type);
    if (need_ref && (!rc || !rr))
        return ft_fail(e, FT_EINTERNAL, "DPO loss %s needs reference log-probs (rc, rr are NULL)",
                       dpo_loss_type_name(cfg->type));
    for (int i = 0; i < n_pairs; i++) {
        if (nc[i] < 0 || nr[i] < 0)
            return ft_fail(e, FT_EINPUT, "DPO loss: pair %d has a negative completion token count (chosen %d, rejected %d)",
                           i, nc[i], nr[i]);
        if (pc[i] > 1e-6 || pr[i] > 1e-6)
            return ft_fail(e, FT_EINPUT, "DPO loss: pair %d has a positive policy log-prob (chosen %g, rejected %g)",
                           i, pc[i], pr[i]);
    }

    const double beta = cfg->beta, eps = cfg->label_smoothing, N = n_pairs;
    double sum_loss = 0, rch = 0, rrej = 0, acc = 0, lpc = 0, lpr = 0, lor = 0, lodds = 0;
    for (int i = 0; i < n_pairs; i++) {
        const double n_c = nc[i] < 1 ? 1.0 : nc[i], n_r = nr[i] < 1 ? 1.0 : nr[i];
        double l = 0, gc = 0, gr = 0; /* per-pair loss and d l / d pc[i], d l / d pr[i] */
        double rew_c, rew_r, lp_c, lp_r;
        if (need_ref) {
            const double lc = pc[i] - rc[i], lr = pr[i] - rr[i], delta = lc - lr, z = beta * delta;
            double dz = 0;
            switch (cfg->type) {
            case DPO_SIGMOID:
                l = smoothed_logistic(z, eps, &dz);
                break;
            case DPO_ROBUST: /* [-(1-eps) log s(z) + eps log s(-z)] / (1 - 2 eps) */
                l = (-(1 - eps) * log_sigmoid(z) + eps * log_sigmoid(-z)) / (1 - 2 * eps);
                dz = (-(1 - eps) * sigmoid(-z) - eps * sigmoid(z)) / (1 - 2 * eps);
                break;
            case DPO_HINGE: /* relu(1 - z); torch's relu has gradient 0 at 0 */
                l = 1 - z > 0 ? 1 - z : 0;
                dz = 1 - z > 0 ? -1 : 0;
                break;
            default: break;
            }
            gc = dz * beta;
            gr = -dz * beta;
            if (cfg->type == DPO_IPO) { /* (lc/n_c - lr/n_r - 1/(2 beta))^2 */
                const double d = lc / n_c - lr / n_r - 1 / (2 * beta);
                l = d * d;
                gc = 2 * d / n_c;
                gr = -2 * d / n_r;
            }
            rew_c = beta * lc;
            rew_r = beta * lr;
            lp_c = pc[i];
            lp_r = pr[i];
        } else {
            const double ac = pc[i] / n_c, ar = pr[i] / n_r; /* average log-probs */
            if (cfg->type == DPO_SIMPO) {
                const double z = beta * ((ac - ar) - cfg->simpo_gamma / beta);
                double dz;
                l = smoothed_logistic(z, eps, &dz);
                gc = dz * beta / n_c;
                gr = -dz * beta / n_r;
            } else { /* ORPO: -beta * log s(log_odds); log odds = log(p/(1-p)) of the averages */
                /* an average of exactly 0 (every token certain) makes log(1-p) = -inf: keep it just below */
                const double xc = ac < -1e-10 ? ac : -1e-10, xr = ar < -1e-10 ? ar : -1e-10;
                const double lo = (xc - xr) - (log1mexp(xc) - log1mexp(xr));
                const double ls = log_sigmoid(lo);
                l = -beta * ls;
                const double dlo = -beta * sigmoid(-lo);
                /* d log1mexp(x)/dx = -1/expm1(-x) */
                gc = dlo * (1 + 1 / expm1(-xc)) / n_c;
                gr = -dlo * (1 + 1 / expm1(-xr)) / n_r;
                lor += ls;
                lodds += lo;
            }
            rew_c = beta * ac;
            rew_r = beta * ar;
            lp_c = ac;
            lp_r = ar;
        }
        sum_loss += l;
        if (dpc) dpc[i] = gc / N;
        if (dpr) dpr[i] = gr / N;
        rch += rew_c;
        rrej += rew_r;
        acc += rew_c > rew_r ? 1.0 : 0.0;
        lpc += lp_c;
        lpr += lp_r;
    }
    double total = sum_loss / N, nll = 0;
    if (cfg->sft_weight > 0) { /* token mean of -logp over all chosen completion tokens */
        double sp = 0, sn = 0;
        for (int i = 0; i < n_pairs; i++) {
            sp += pc[i];
            sn += nc[i];
        }
        if (sn < 1) sn = 1;
        nll = -sp / sn;
        total += cfg->sft_weight * nll;
        if (dpc)
            for (int i = 0; i < n_pairs; i++) dpc[i] += -cfg->sft_weight / sn;
    }
    *loss = total;
    if (metrics) {
        memset(metrics, 0, sizeof *metrics);
        metrics->n_pairs = n_pairs;
        metrics->rewards_chosen = rch / N;
        metrics->rewards_rejected = rrej / N;
        metrics->rewards_accuracies = acc / N;
        metrics->rewards_margins = (rch - rrej) / N;
        metrics->logps_chosen = lpc / N;
        metrics->logps_rejected = lpr / N;
        metrics->nll_loss = nll;
        metrics->log_odds_ratio = lor / N;
        metrics->log_odds_chosen = lodds / N;
    }
    return FT_OK;
}
