/* dpo_loss: the preference losses of the DPO family, on per-pair sequence log-probs.
 *
 * Contract: for each pair i the caller gives the policy log-probs summed over the
 * completion tokens of the chosen and rejected reply (pc[i], pr[i]), the reference
 * ones (rc[i], rr[i]; ignored, may be NULL, for the reference-free SimPO and ORPO)
 * and the completion token counts (nc[i], nr[i]; prompt tokens never count).
 * dpo_loss_forward returns the MEAN loss over the pairs and its gradient with
 * respect to pc[i] and pr[i] (dpc, dpr: may be NULL). The trainer spreads dpc[i]
 * to every chosen completion token's log-prob (d loss / d logp_t = dpc[i]); for
 * the length-averaged losses (IPO, SimPO, ORPO) the 1/n factor is already in dpc.
 * Formulas are TRL 1.16's (DPOTrainer._compute_loss, CPOTrainer.cpo_loss for
 * SimPO, ORPOTrainer.odds_ratio_loss for ORPO); see docs/dpo.md. Metrics use
 * TRL's names and are means over the pairs, as TRL logs them. Pure host code,
 * double precision; no allocation. Errors (FT_EINPUT) name the pair and field. */
#ifndef FT_DPO_LOSS_H
#define FT_DPO_LOSS_H

#include "finetune/base/util.h"

typedef enum dpo_loss_type {
    DPO_SIGMOID = 0, /* DPO; with label_smoothing > 0 it is cDPO */
    DPO_ROBUST,      /* robust DPO (unbiased under label noise) */
    DPO_IPO,         /* IPO, log-ratios averaged per completion token (as TRL) */
    DPO_HINGE,       /* SLiC hinge */
    DPO_SIMPO,       /* SimPO: reference-free, average log-probs, margin gamma */
    DPO_ORPO,        /* ORPO: NLL on chosen + beta * odds-ratio term; reference-free */
    DPO_N_LOSS_TYPES
} dpo_loss_type;

typedef struct dpo_config {
    dpo_loss_type type;
    double beta;            /* TRL default 0.1 (H2O LLM Studio 0.2); IPO's tau; ORPO's lambda */
    double label_smoothing; /* epsilon for sigmoid (cDPO), robust (< 0.5) and SimPO; default 0 */
    double simpo_gamma;     /* SimPO target reward margin; TRL CPOConfig 0.5, H2O 1.0 */
    /* Weight of the SFT term -sum_i pc[i] / sum_i nc[i] (token mean of the chosen completions'
     * NLL over the batch): TRL DPO's "sft" loss type / CPO's cpo_alpha. Defaults to 1 for ORPO
     * (the L_SFT of its formula), 0 otherwise. See docs/dpo.md for ORPO's prompt tokens. */
    double sft_weight;
} dpo_config;

typedef struct dpo_metrics {
    /* TRL's logged names: rewards/chosen, rewards/rejected, rewards/accuracies,
     * rewards/margins, logps/chosen, logps/rejected. For the DPO family the rewards are
     * beta * (policy - reference) summed log-probs and logps are the summed policy
     * log-probs; for SimPO and ORPO (as TRL's CPO/ORPO trainers) rewards are
     * beta * average log-probs and logps are the average log-probs. */
    double rewards_chosen, rewards_rejected, rewards_accuracies, rewards_margins;
    double logps_chosen, logps_rejected;
    double nll_loss;       /* the SFT term before its weight (0 when sft_weight == 0) */
    double log_odds_ratio; /* ORPO: mean log sigmoid(log odds); 0 otherwise */
    double log_odds_chosen;/* ORPO: mean log odds; 0 otherwise */
    int n_pairs;
} dpo_metrics;

/* TRL's defaults for a loss type (beta 0.1, label_smoothing 0, simpo_gamma 0.5,
 * sft_weight 1 for ORPO else 0). */
void dpo_config_default(dpo_config *c, dpo_loss_type type);
/* H2O LLM Studio's defaults (beta 0.2, simpo_gamma 1.0, no label smoothing). */
void dpo_config_h2o(dpo_config *c, dpo_loss_type type);
/* Validate ranges (beta > 0, 0 <= label_smoothing < 1, < 0.5 for robust, sft_weight >= 0). */
int dpo_config_check(const dpo_config *c, ft_error *e);

/* "sigmoid", "robust", "ipo", "hinge", "simpo", "orpo" (aliases "dpo", "cdpo"). */
int dpo_loss_type_parse(const char *name, dpo_loss_type *out, ft_error *e);
const char *dpo_loss_type_name(dpo_loss_type t);
/* 1 when the loss needs reference log-probs (all but SimPO and ORPO). */
int dpo_needs_reference(dpo_loss_type t);

/* Mean loss over n_pairs and its gradient w.r.t. pc and pr; metrics may be NULL.
 * nc/nr < 1 are treated as 1 (TRL clamps); negative counts are an error. */
int dpo_loss_forward(const dpo_config *cfg, int n_pairs, const double *pc, const double *pr,
                     const double *rc, const double *rr, const int *nc, const int *nr,
                     double *loss, double *dpc, double *dpr, dpo_metrics *metrics, ft_error *e);

#endif
