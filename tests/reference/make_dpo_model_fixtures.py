"""DPO on a whole model: gradients of TRL's sigmoid DPO loss w.r.t. every parameter of the
llama-gqa fixture model, for three preference pairs with fixed reference log-probs.

Writes tests/fixtures/dpo_model/{pairs.json, grads.safetensors}. The policy log-probs are TRL's:
the sum of log-softmax over completion tokens only (prompt tokens masked), each sequence run alone.
Loss: mean over pairs of -logsigmoid(beta * ((pc - rc) - (pr - rr))), TRL's DPOTrainer "sigmoid".
Run: /work/venv/bin/python tests/reference/make_dpo_model_fixtures.py"""
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "..", "fixtures", "models", "llama-gqa")
OUT = os.path.join(HERE, "..", "fixtures", "dpo_model")
BETA = 0.1

torch.manual_seed(7)
model = AutoModelForCausalLM.from_pretrained(MODEL, attn_implementation="eager").float()
model.train()
vocab = model.config.vocab_size
pairs = []
for lp, lc, lr in [(5, 4, 6), (3, 7, 2), (8, 3, 5)]:
    rand = lambda n: torch.randint(3, vocab, (n,)).tolist()
    pairs.append({"prompt": rand(lp), "chosen": rand(lc), "rejected": rand(lr),
                  "ref_chosen": float(torch.randn(()) * 3 - 20), "ref_rejected": float(torch.randn(()) * 3 - 20)})


def completion_logp(prompt, completion):
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0, :-1]
    logp = F.log_softmax(logits.float(), dim=-1)
    targets = ids[0, 1:]
    token_logp = logp.gather(1, targets[:, None])[:, 0]
    return token_logp[len(prompt) - 1:].sum()  # predictions of the completion tokens only


losses = []
for p in pairs:
    pc = completion_logp(p["prompt"], p["chosen"])
    pr = completion_logp(p["prompt"], p["rejected"])
    p["policy_chosen"], p["policy_rejected"] = float(pc), float(pr)
    logits = BETA * ((pc - p["ref_chosen"]) - (pr - p["ref_rejected"]))
    losses.append(-F.logsigmoid(logits))
loss = torch.stack(losses).mean()
loss.backward()
os.makedirs(OUT, exist_ok=True)
save_file({n: q.grad.contiguous() for n, q in model.named_parameters()}, os.path.join(OUT, "grads.safetensors"),
          metadata={"format": "pt"})
with open(os.path.join(OUT, "pairs.json"), "w") as f:
    json.dump({"model": "llama-gqa", "loss_type": "sigmoid", "beta": BETA, "loss": float(loss), "pairs": pairs}, f,
              indent=1)
print("loss", float(loss))
