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


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    os.makedirs(OUT, exist_ok=True)
    if what in ("nf4", "all"):
        nf4()
