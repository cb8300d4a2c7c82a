#!/usr/bin/env python3
"""Golden fixtures for DoRA (PEFT use_dora=True), made on the CPU.

Run:  /work/venv/bin/python tests/reference/make_dora_fixtures.py [check_ours ADAPTER_DIR LOGP_JSON]
Writes tests/fixtures/lora/dora_a/ (a PEFT DoRA adapter on tests/fixtures/models/llama-gqa: r 4, alpha 8,
q/v/down_proj, non-zero A, B and magnitudes, dropout 0), dora_expected.json (log-probs, loss) and
dora_grads.safetensors (d loss / d A, B, magnitude from loss.backward(), loss = -mean log-prob; and the
merge_and_unload weights under merged/). Versions: torch 2.15 (CPU), transformers 5.23, peft 0.21.
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "lora")
BASE = os.path.join(ROOT, "tests", "fixtures", "models", "llama-gqa")
torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)

IDS = [1, 17, 200, 5, 99, 42, 7, 128, 64, 3, 250, 11]


def logprobs(model, ids):
    x = torch.tensor([ids])
    logits = model(input_ids=x).logits.float()
    lp = torch.log_softmax(logits[0, :-1], dim=-1)
    return lp.gather(1, x[0, 1:].unsqueeze(1)).squeeze(1)


def load_base():
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32, attn_implementation="eager")


def make():
    from peft import LoraConfig, PeftModel, get_peft_model
    pm = get_peft_model(load_base(), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, use_dora=True,
                                                target_modules=["q_proj", "v_proj", "down_proj"],
                                                task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(321)
    init_mag = {}
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_A" in n or "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            elif "lora_magnitude_vector" in n:
                init_mag[n] = p.detach().clone()  # PEFT's init: ||W|| per output row (B = 0)
                p.mul_(1 + 0.3 * torch.randn(p.shape, generator=g))
    d = os.path.join(OUT, "dora_a")
    shutil.rmtree(d, ignore_errors=True)
    pm.save_pretrained(d)
    os.remove(os.path.join(d, "README.md"))
    # everything below from the adapter as reloaded from disk
    pm = PeftModel.from_pretrained(load_base(), d, is_trainable=True)
    lp = logprobs(pm, IDS)
    loss = -lp.mean()
    loss.backward()
    out = {}
    for n, p in pm.named_parameters():
        if p.grad is not None:
            out["grad/" + n.replace(".default", "")] = p.grad.detach().contiguous()
    for n, v in init_mag.items():
        out["init/" + n.replace(".default", "")] = v.contiguous()
    merged = pm.merge_and_unload()
    for n, p in merged.state_dict().items():
        if "layers" in n and n.endswith("proj.weight"):
            out["merged/" + n] = p.detach().contiguous()
    with open(os.path.join(OUT, "dora_expected.json"), "w") as f:
        json.dump({"ids": IDS, "logp": lp.tolist(), "loss": loss.item()}, f, indent=1)
    save_file(out, os.path.join(OUT, "dora_grads.safetensors"))
    print("dora: wrote", len(out), "tensors")


def check_ours(adapter_dir, expect_json):
    """Development check: an adapter written by finetune loads in PEFT and gives finetune's log-probs."""
    from peft import PeftModel
    pm = PeftModel.from_pretrained(load_base(), adapter_dir)
    lp = logprobs(pm, IDS)
    ours = torch.tensor(json.load(open(expect_json)))
    print("max |peft - finetune| =", (lp - ours).abs().max().item())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "check_ours":
        check_ours(sys.argv[2], sys.argv[3])
    else:
        make()
