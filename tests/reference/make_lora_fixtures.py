#!/usr/bin/env python3
"""Golden fixtures for LoRA (PEFT) and QLoRA (bitsandbytes NF4), made on the CPU.

Run:  /work/venv/bin/python tests/reference/make_lora_fixtures.py [nf4|peft|merge|all]
Writes tests/fixtures/lora/. Versions: torch 2.15 (CPU), transformers 5.23, peft (venv),
bitsandbytes 0.50.2 (its CPU path: quantize_4bit is the 'default' torch kernel, the nested
8-bit absmax quantization is its native cquantize_blockwise_cpu_fp32). Deterministic (fixed seeds).
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


def nf4():
    import bitsandbytes.functional as F
    g = torch.Generator().manual_seed(1234)
    cases = {
        "c0": torch.randn(8, 100, generator=g),            # 800 = 12 blocks + 32 rest
        "c1": torch.randn(96, 200, generator=g) * 0.05,    # 300 blocks: two nested blocks, the last partial
        "c2": torch.randn(40, 64, generator=g),            # a zero block and exact midpoints below
        "c3": torch.randn(3, 7, generator=g) * 3,          # odd element count: padded last byte
    }
    c2 = cases["c2"]
    c2[5].zero_()
    code = F.get_4bit_type("nf4", device="cpu")
    mids = (code[:-1] + code[1:]) / 2
    c2[7, :15] = mids * 2.0  # block absmax 2 (set below) so scaled values hit the midpoints exactly
    c2[7, 15] = 2.0
    t = {"nf4_code": code.float().contiguous(), "dynamic_map": F.create_dynamic_map().float()}
    for k, w in cases.items():
        w = w.contiguous()
        q, s = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=False)
        qn, sn = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
        assert torch.equal(q, qn)
        t[k + ".w"] = w
        t[k + ".packed"] = q.reshape(-1).contiguous()
        t[k + ".absmax"] = s.absmax.float().contiguous()
        t[k + ".absmax_q"] = sn.absmax.contiguous()
        t[k + ".nested_absmax"] = sn.state2.absmax.float().contiguous()
        t[k + ".offset"] = sn.offset.reshape(1).float()
        t[k + ".dequant"] = F.dequantize_4bit(qn, sn).float().contiguous()
        t[k + ".dequant_plain"] = F.dequantize_4bit(q, s).float().contiguous()
    save_file(t, os.path.join(OUT, "nf4.safetensors"))
    print("nf4: wrote", len(t), "tensors")


IDS = [1, 17, 200, 5, 99, 42, 7, 128, 64, 3, 250, 11]


def logprobs(model, ids):
    x = torch.tensor([ids])
    logits = model(input_ids=x).logits.float()
    lp = torch.log_softmax(logits[0, :-1], dim=-1)
    return lp.gather(1, x[0, 1:].unsqueeze(1)).squeeze(1)


def randomize(pm, seed):
    """Non-zero A and B (B is zero after PEFT's init, which would hide any error in the B path)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_A" in n or "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def peft_fixtures():
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM
    expected = {"ids": IDS}
    grads = {}
    specs = {
        "peft_a": dict(r=4, lora_alpha=8, target_modules="all-linear"),
        "peft_b": dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], layers_to_transform=[1],
                       use_rslora=True),
    }
    for i, (name, kw) in enumerate(specs.items()):
        base = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32, attn_implementation="eager")
        pm = get_peft_model(base, LoraConfig(lora_dropout=0.0, task_type="CAUSAL_LM", **kw))
        randomize(pm, 100 + i)
        d = os.path.join(OUT, name)
        shutil.rmtree(d, ignore_errors=True)
        pm.save_pretrained(d)
        os.remove(os.path.join(d, "README.md"))
        # everything below from the adapter as reloaded from disk
        base = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32, attn_implementation="eager")
        pm = PeftModel.from_pretrained(base, d, is_trainable=True)
        lp = logprobs(pm, IDS)
        expected[name + ".logp"] = lp.tolist()
        loss = -lp.mean()
        loss.backward()
        expected[name + ".loss"] = loss.item()
        for n, p in pm.named_parameters():
            if p.grad is not None:
                grads[name + "/" + n.replace(".default", "")] = p.grad.detach().contiguous()
        if name == "peft_a":
            merged = pm.merge_and_unload()
            for n, p in merged.state_dict().items():
                if "layers" in n and n.endswith("proj.weight"):
                    grads["merged/" + n] = p.detach().contiguous()
    with open(os.path.join(OUT, "peft_expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    save_file(grads, os.path.join(OUT, "peft_grads.safetensors"))
    print("peft: wrote", len(grads), "tensors")


def check_ours(adapter_dir, expect_json):
    """Development check: an adapter written by finetune loads in PEFT; prints its log-probs next to
    the ones finetune computed (JSON list in expect_json)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32, attn_implementation="eager")
    pm = PeftModel.from_pretrained(base, adapter_dir)
    lp = logprobs(pm, IDS)
    ours = torch.tensor(json.load(open(expect_json)))
    print("max |peft - finetune| =", (lp - ours).abs().max().item())


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    os.makedirs(OUT, exist_ok=True)
    if what in ("nf4", "all"):
        nf4()
    if what in ("peft", "all"):
        peft_fixtures()
    if what == "check_ours":
        check_ours(sys.argv[2], sys.argv[3])
