"""Fixtures for dpo/dpo_loss: losses, gradients and metrics computed by TRL's own code.

    /work/venv/bin/python tests/reference/make_dpo_fixtures.py   # writes tests/fixtures/dpo/losses.json

Nothing is re-implemented here: for the DPO family (sigmoid/cDPO, robust, ipo, hinge, and the "sft"
term) the script calls DPOTrainer._compute_loss itself on a trainer object that skips __init__, with a
stand-in model whose per-token log-probs sum to the chosen/rejected sequence log-probs and precomputed
reference log-probs (the precompute_ref_log_probs path). SimPO calls CPOTrainer.cpo_loss and ORPO calls
ORPOTrainer.odds_ratio_loss; the way each trainer combines them with its NLL term is quoted below.
Gradients are torch autograd in float64. Versions: trl 1.16, torch 2.15 (CPU).
"""
import json
import os
import types
from collections import defaultdict

import torch
import trl
from trl.trainer.dpo_trainer import DPOTrainer
from trl.experimental.cpo.cpo_trainer import CPOTrainer
from trl.experimental.orpo.orpo_trainer import ORPOTrainer

torch.set_default_dtype(torch.float64)
OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "dpo", "losses.json")


class Accel:
    device = torch.device("cpu")

    def gather_for_metrics(self, x):
        return x

    def gather(self, x):
        return x

    def unwrap_model(self, m):
        return m


class FakeModel:
    """Returns per-token log-probs (zero at prompt/padding, as the fused LM head does for label -100)."""

    training = True

    def __init__(self, per_token):
        self.per_token = per_token

    def __call__(self, **kw):
        pt = self.per_token
        return types.SimpleNamespace(
            log_probs=pt,
            entropy=torch.zeros_like(pt),
            mean_logits=torch.zeros_like(pt),
            is_top1=torch.zeros_like(pt, dtype=torch.bool),
        )


def make_pairs(g, n, avg_scale=2.0, ref_noise=3.0):
    nc = torch.randint(1, 40, (n,), generator=g)
    nr = torch.randint(1, 40, (n,), generator=g)
    pc = -(torch.rand(n, generator=g) * avg_scale + 0.02) * nc
    pr = -(torch.rand(n, generator=g) * avg_scale + 0.02) * nr
    rc = pc + torch.randn(n, generator=g) * ref_noise
    rr = pr + torch.randn(n, generator=g) * ref_noise
    return pc, pr, rc, rr, nc, nr


def trl_dpo(loss_types, loss_weights, beta, eps, pc, pr, rc, rr, nc, nr):
    """Run DPOTrainer._compute_loss on sequences laid out [chosen rows; rejected rows]."""
    n = pc.numel()
    P = 3  # prompt tokens
    T = P + int(max(nc.max(), nr.max()))
    counts = torch.cat([nc, nr])
    completion_mask = torch.zeros(2 * n, T, dtype=torch.long)
    for i, c in enumerate(counts.tolist()):
        completion_mask[i, P : P + c] = 1
    shift = completion_mask[:, 1:].to(torch.float64)
    pc_l = pc.clone().requires_grad_(True)
    pr_l = pr.clone().requires_grad_(True)
    seq = torch.cat([pc_l, pr_l])
    # every completion token carries seq/count, so the row sum is the sequence log-prob
    per_token = shift * (seq / counts.to(torch.float64)).unsqueeze(1)

    tr = DPOTrainer.__new__(DPOTrainer)
    tr.accelerator = Accel()
    tr.model = FakeModel(per_token)
    tr.aux_loss_enabled = False
    tr.ld_alpha = None
    tr.precompute_ref_logps = True
    tr.f_divergence_type = "reverse_kl"
    tr.loss_types = loss_types
    tr.loss_weights = loss_weights
    tr.beta = beta
    tr.label_smoothing = eps
    tr.use_weighting = False
    tr._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    tr._total_train_tokens = 0
    tr._tp_size = 1
    inputs = {
        "input_ids": torch.ones(2 * n, T, dtype=torch.long),
        "attention_mask": torch.ones(2 * n, T, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    loss = tr._compute_loss(tr.model, inputs, False)
    loss.backward()
    m = tr._metrics["train"]
    metrics = {k: m[k][-1] for k in ["rewards/chosen", "rewards/rejected", "rewards/accuracies",
                                     "rewards/margins", "logps/chosen", "logps/rejected"]}
    return loss.item(), pc_l.grad.tolist(), pr_l.grad.tolist(), metrics


def trl_cdpo(beta, eps, pc, pr, rc, rr, nc, nr):
    """cDPO: TRL 1.16's DPOTrainer 'sigmoid' no longer reads label_smoothing (only robust and exo_pair
    do). The cDPO formula lives on in CPOTrainer.cpo_loss(loss_type='sigmoid'):
        -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    with logits = chosen - rejected; fed the policy-minus-reference log-ratios it is DPO's cDPO exactly
    (TRL <= 0.x DPO 'sigmoid'). The metrics do not depend on label_smoothing: they come from the DPO run."""
    pc_l = pc.clone().requires_grad_(True)
    pr_l = pr.clone().requires_grad_(True)
    tr = CPOTrainer.__new__(CPOTrainer)
    tr.accelerator = Accel()
    tr.alpha, tr.loss_type, tr.beta, tr.label_smoothing, tr.simpo_gamma = 0.0, "sigmoid", beta, eps, 0.0
    losses, _, _ = tr.cpo_loss(pc_l - rc, pr_l - rr)
    loss = losses.mean()
    loss.backward()
    metrics = trl_dpo(["sigmoid"], [1.0], beta, 0.0, pc, pr, rc, rr, nc, nr)[3]
    return loss.item(), pc_l.grad.tolist(), pr_l.grad.tolist(), metrics


def trl_simpo(beta, eps, gamma, cpo_alpha, pc, pr, nc, nr):
    pc_l = pc.clone().requires_grad_(True)
    pr_l = pr.clone().requires_grad_(True)
    # CPOTrainer.concatenated_forward: get_batch_logps(average_log_prob=True) for simpo
    ac, ar = pc_l / nc, pr_l / nr
    tr = CPOTrainer.__new__(CPOTrainer)
    tr.accelerator = Accel()
    tr.alpha, tr.loss_type, tr.beta, tr.label_smoothing, tr.simpo_gamma = 0.0, "simpo", beta, eps, gamma
    losses, chosen_rewards, rejected_rewards = tr.cpo_loss(ac, ar)
    # CPOTrainer: nll_loss = cross_entropy_loss(all_logits[:len_chosen], labels[:len_chosen]) with the
    # prompt labels at -100, i.e. the token mean of -logp over the chosen completions;
    # loss = losses.mean() + self.cpo_alpha * policy_nll_loss
    nll = -pc_l.sum() / nc.sum()
    loss = losses.mean() + cpo_alpha * nll
    loss.backward()
    metrics = {
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).double().mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        "logps/chosen": ac.mean().item(),
        "logps/rejected": ar.mean().item(),
        "nll_loss": nll.item() if cpo_alpha else 0.0,
    }
    return loss.item(), pc_l.grad.tolist(), pr_l.grad.tolist(), metrics


def trl_orpo(beta, sft_weight, pc, pr, nc, nr):
    pc_l = pc.clone().requires_grad_(True)
    pr_l = pr.clone().requires_grad_(True)
    # ORPOTrainer.concatenated_forward: get_batch_logps(average_log_prob=True)
    ac, ar = pc_l / nc, pr_l / nr
    tr = ORPOTrainer.__new__(ORPOTrainer)
    tr.accelerator = Accel()
    tr.beta = beta
    losses, chosen_rewards, rejected_rewards, log_odds_ratio, log_odds_chosen = tr.odds_ratio_loss(ac, ar)
    # ORPOTrainer.get_batch_loss_metrics: loss = policy_nll_loss - losses.mean(). Its policy_nll_loss is
    # the chosen rows' cross-entropy over prompt AND completion; here the NLL term is the completion-only
    # token mean (our sft_weight term), which is what the C module computes (docs/dpo.md).
    nll = -pc_l.sum() / nc.sum()
    loss = sft_weight * nll - losses.mean()
    loss.backward()
    metrics = {
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).double().mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        "logps/chosen": ac.mean().item(),
        "logps/rejected": ar.mean().item(),
        "nll_loss": nll.item() if sft_weight else 0.0,
        "log_odds_ratio": log_odds_ratio.item(),
        "log_odds_chosen": log_odds_chosen.item(),
    }
    return loss.item(), pc_l.grad.tolist(), pr_l.grad.tolist(), metrics


def main():
    g = torch.Generator().manual_seed(1234)
    cases = []

    def add(name, typ, beta, eps, gamma, sftw, data, res):
        pc, pr, rc, rr, nc, nr = data
        loss, dpc, dpr, metrics = res
        cases.append({
            "name": name, "type": typ, "beta": beta, "label_smoothing": eps, "simpo_gamma": gamma,
            "sft_weight": sftw, "pc": pc.tolist(), "pr": pr.tolist(), "rc": rc.tolist(), "rr": rr.tolist(),
            "nc": nc.tolist(), "nr": nr.tolist(), "loss": loss, "dpc": dpc, "dpr": dpr, "metrics": metrics,
        })

    for typ in ["sigmoid", "robust", "ipo", "hinge"]:
        for beta, eps in [(0.1, 0.0), (0.5, 0.1), (0.05, 0.3)]:
            if typ in ("ipo", "hinge") and eps:
                eps = 0.0  # label smoothing does not enter these losses
            data = make_pairs(g, 8)
            if typ == "sigmoid" and eps:
                res = trl_cdpo(beta, eps, *data)
            else:
                res = trl_dpo([typ], [1.0], beta, eps, *data)
            add(f"{typ}_b{beta}_e{eps}", typ, beta, eps, 0.0, 0.0, data, res)
    # the "sft" term of TRL's DPO (loss_type=["sigmoid","sft"], weights [1, w]) = our sft_weight
    data = make_pairs(g, 8)
    add("sigmoid_sft0.7", "sigmoid", 0.1, 0.0, 0.0, 0.7, data, trl_dpo(["sigmoid", "sft"], [1.0, 0.7], 0.1, 0.0, *data))
    # large margins: saturated sigmoid
    data = make_pairs(g, 6, ref_noise=300.0)
    add("sigmoid_saturated", "sigmoid", 0.5, 0.0, 0.0, 0.0, data, trl_dpo(["sigmoid"], [1.0], 0.5, 0.0, *data))

    for beta, eps, gamma, alpha in [(2.0, 0.0, 0.5, 0.0), (0.1, 0.0, 0.5, 1.0), (2.5, 0.1, 1.0, 0.0)]:
        data = make_pairs(g, 8)
        pc, pr, rc, rr, nc, nr = data
        add(f"simpo_b{beta}_g{gamma}_e{eps}_a{alpha}", "simpo", beta, eps, gamma, alpha, data,
            trl_simpo(beta, eps, gamma, alpha, pc, pr, nc, nr))
    for beta, sftw, scale in [(0.1, 1.0, 2.0), (0.2, 0.0, 0.3), (1.0, 1.0, 0.05)]:
        data = make_pairs(g, 8, avg_scale=scale)  # small scale: averages near 0, log(-expm1) branch
        pc, pr, rc, rr, nc, nr = data
        add(f"orpo_b{beta}_w{sftw}_s{scale}", "orpo", beta, 0.0, 0.0, sftw, data, trl_orpo(beta, sftw, pc, pr, nc, nr))

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"trl_version": trl.__version__, "torch_version": torch.__version__, "cases": cases}, f,
                  indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
