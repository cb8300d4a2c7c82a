#!/usr/bin/env python3
"""Reference 4-bit checkpoints written by transformers + bitsandbytes on the CPU.

Run:  /work/venv/bin/python tests/reference/make_bnb_fixtures.py [make|check OURS_DIR|logits DIR]
make: quantizes tests/fixtures/models/llama-gqa with BitsAndBytesConfig(load_in_4bit, nf4, double quant)
and save_pretrained's it into tests/fixtures/lora/bnb4/{f32,bf16} (compute dtype float32 / bfloat16;
the bf16 one is also loaded with dtype=bfloat16, so its other tensors are bf16), plus logits.json
(the logits of the reloaded 4-bit models on a fixed input, for `check`).
check OURS_DIR: loads a checkpoint written by `finetune quantize` with transformers + bitsandbytes and
prints the max |logits - reference logits| (the matching reference is chosen by its torch dtype).
Versions: torch 2.15 (CPU), transformers 5.23, bitsandbytes 0.50.2.
"""
import json
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "lora", "bnb4")
BASE = os.path.join(ROOT, "tests", "fixtures", "models", "llama-gqa")
IDS = [1, 17, 200, 5, 99, 42, 7, 128, 64, 3, 250, 11]
torch.set_num_threads(2)

VARIANTS = {"f32": torch.float32, "bf16": torch.bfloat16}


def logits_of(d, dtype):
    from transformers import AutoModelForCausalLM
    import bitsandbytes as bnb
    m = AutoModelForCausalLM.from_pretrained(d, dtype=dtype, attn_implementation="eager")
    # bitsandbytes 0.50.2 repacks 4-bit weights for its AVX-512 CPU kernel on the first forward, which fails
    # for in_features < 64 (llama-gqa's 32); its plain dequantize + matmul path is used instead.
    for mod in m.modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            mod.support_avx512bf16_for_cpu = False
    with torch.no_grad():
        return m(input_ids=torch.tensor([IDS])).logits[0].float()


def make():
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    os.makedirs(OUT, exist_ok=True)
    ref = {"ids": IDS}
    for name, dt in VARIANTS.items():
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dt)
        m = AutoModelForCausalLM.from_pretrained(BASE, dtype=dt, quantization_config=q, device_map="cpu",
                                                 attn_implementation="eager")
        d = os.path.join(OUT, name)
        shutil.rmtree(d, ignore_errors=True)
        m.save_pretrained(d)
        ref[name] = logits_of(d, dt).tolist()
        print(name, "->", d, sorted(os.listdir(d)))
    with open(os.path.join(OUT, "logits.json"), "w") as f:
        json.dump(ref, f)


def check(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    name = "bf16" if cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16" else "f32"
    ref = torch.tensor(json.load(open(os.path.join(OUT, "logits.json")))[name])
    got = logits_of(d, VARIANTS[name])
    print(f"{d}: loaded 4-bit with transformers+bitsandbytes; max |logits - bnb's ({name})| =",
          (got - ref).abs().max().item())


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "make"
    if what == "make":
        make()
    elif what == "check":
        check(sys.argv[2])
