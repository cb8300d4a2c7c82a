#!/usr/bin/env python3
"""Check that transformers loads what `finetune convert FILE.gguf OUT_DIR` wrote, as the GGUF itself.

Run:  /work/venv/bin/python tests/reference/check_gguf_convert.py OUT_DIR
OUT_DIR converted from the SmolLM2 GGUF of tests/fixtures/gguf_model/smollm2.json. Loads it with
AutoModelForCausalLM / AutoTokenizer (no gguf_file: a plain HF dir) and compares with that fixture (made
by transformers from the GGUF): log-probs within 1e-4, the 16 greedy tokens, the tokenizer's ids of every
fixture text, and the chat template's rendering of the France prompt. Prints 'ok' or exits 1.
tests/cli/gguf_model.sh runs it when FT_PYTHON names a Python with transformers.
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
fx = json.load(open(os.path.join(ROOT, "tests", "fixtures", "gguf_model", "smollm2.json")))
out = sys.argv[1]
torch.set_num_threads(2)
transformers.utils.logging.disable_progress_bar()
model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(out)
bad = []
seq = fx["logprobs"]["ids"]
with torch.no_grad():
    lp = torch.log_softmax(model(torch.tensor([seq])).logits[0].double(), dim=-1)
worst = max(abs(float(lp[i, seq[i + 1]]) - r) / max(1.0, abs(r)) for i, r in enumerate(fx["logprobs"]["logprobs"]))
if worst > 1e-4:
    bad.append("log-probs: worst relative error %.3g" % worst)
g = fx["greedy"]
with torch.no_grad():
    o = model.generate(torch.tensor([g["prompt_ids"]]), max_new_tokens=len(g["ids"]), do_sample=False,
                       eos_token_id=None, pad_token_id=tok.pad_token_id)
if [int(x) for x in o[0, len(g["prompt_ids"]):]] != g["ids"]:
    bad.append("greedy tokens differ")
for t in fx["tokenize"]:
    if tok(t["text"], add_special_tokens=True)["input_ids"] != t["original"]:
        bad.append("tokenizer ids differ for %r" % t["text"][:40])
msgs = [{"role": "user", "content": "What is the capital of France?"}]
if tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) != fx["tokenize"][0]["text"]:
    bad.append("chat template renders differently")
print("\n".join(bad) if bad else "ok (log-probs worst relative error %.3g)" % worst)
sys.exit(1 if bad else 0)
