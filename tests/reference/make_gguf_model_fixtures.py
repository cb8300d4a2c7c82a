#!/usr/bin/env python3
"""Fixtures for loading a GGUF model file (finetune/io/gguf_model), made with transformers' GGUF loader.

Run:  /work/venv/bin/python tests/reference/make_gguf_model_fixtures.py [FT_ASSETS]
Reads $FT_ASSETS/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf (FT_ASSETS default
../shared/assets), loads it with AutoModelForCausalLM.from_pretrained(dir, gguf_file=...) on the CPU in
fp32 (dequantized, q/k un-permuted by transformers) and writes tests/fixtures/gguf_model/smollm2.json:

- tensors: for every HF tensor, its shape, the float64 sum, and a position-weighted checksum
  sum_{r,c} x[r,c] * (r % 97 + 1) * (c % 89 + 1) (it changes when rows are permuted); for a few tensors
  the first 8 values of some rows ("rows": {row: [values]}), including rows across the q/k head halves.
- logprobs: log p(ids[i+1] | ids[..i]) of the chat-templated France prompt followed by the answer.
- greedy: the chatml prompt ids (template's default system turn) and the 16 greedy tokens after them.
- tokenize: ids of a few texts from transformers' GGUF tokenizer ("gguf_tf") and from the model's own
  tokenizer.json (tests/fixtures/assets/tokenizers/smollm-135m, the same vocabulary and merges;
  "original"). transformers ignores tokenizer.ggml.pre = "smollm" (llama.cpp and the original split
  digits one by one first); with this vocabulary, which has no multi-digit tokens, both give the same
  ids (the script says so when they differ).
"""
import json
import os
import sys

import torch
import transformers
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ASSETS = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("FT_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
MODEL_DIR = os.path.join(ASSETS, "models", "smollm2-135m-instruct")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf_model", "smollm2.json")

torch.set_num_threads(2)
transformers.utils.logging.disable_progress_bar()

model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, gguf_file=GGUF, dtype=torch.float32)
model.eval()
tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=GGUF)
orig = Tokenizer.from_file(os.path.join(ROOT, "tests", "fixtures", "assets", "tokenizers", "smollm-135m", "tokenizer.json"))


def checksum(t):
    x = t.detach().to(torch.float64)
    if x.dim() == 1:
        x = x[:, None]
    r = (torch.arange(x.shape[0], dtype=torch.float64) % 97 + 1)[:, None]
    c = (torch.arange(x.shape[1], dtype=torch.float64) % 89 + 1)[None, :]
    return float((x * r * c).sum())


sd = model.state_dict()
tensors = {}
ROWS = {
    "model.embed_tokens.weight": [0, 1, 2, 17, 9338, 49151],
    "model.layers.0.self_attn.q_proj.weight": [0, 1, 2, 31, 32, 33, 63, 64, 95, 96, 575],
    "model.layers.0.self_attn.k_proj.weight": [0, 1, 31, 32, 33, 64, 127, 128, 191],
    "model.layers.29.self_attn.k_proj.weight": [0, 1, 32, 65, 191],
    "model.layers.7.self_attn.v_proj.weight": [0, 5, 191],
    "model.layers.3.mlp.down_proj.weight": [0, 575],
    "model.layers.0.input_layernorm.weight": None,
    "model.norm.weight": None,
}
for name, t in sd.items():
    if name == "lm_head.weight" and model.config.tie_word_embeddings:
        continue
    e = {"shape": list(t.shape), "sum": float(t.to(torch.float64).sum()), "checksum": checksum(t)}
    if name in ROWS:
        if ROWS[name] is None:
            e["rows"] = {"0": [float(v) for v in t[:8]]}
        else:
            e["rows"] = {str(r): [float(v) for v in t[r, :8]] for r in ROWS[name]}
    tensors[name] = e

messages = [{"role": "user", "content": "What is the capital of France?"}]
prompt_ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "input_ids"):
    prompt_ids = prompt_ids["input_ids"]
prompt_ids = list(map(int, prompt_ids))
with torch.no_grad():
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=16, do_sample=False,
                         eos_token_id=None, pad_token_id=tok.pad_token_id)
greedy = [int(x) for x in out[0, len(prompt_ids):]]

seq = prompt_ids + greedy[:8]
with torch.no_grad():
    logits = model(torch.tensor([seq])).logits[0].to(torch.float64)
lp = torch.log_softmax(logits, dim=-1)
logprobs = [float(lp[i, seq[i + 1]]) for i in range(len(seq) - 1)]

rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
texts = [
    rendered,
    "Hello world! How are you today?",
    "The quick brown fox jumps over the lazy dog.\n\n  Indented line\twith a tab.",
    "Unicode: caf\u00e9, na\u00efve, \u65e5\u672c\u8a9e, emoji \U0001F600, math \u2200x\u2208\u211d.",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "In 2024 there were 366 days; pi is 3.14159.",
]
tokenize = []
for s in texts:
    a = [int(i) for i in tok(s, add_special_tokens=True)["input_ids"]]
    b = orig.encode(s, add_special_tokens=True).ids
    tokenize.append({"text": s, "gguf_tf": a, "original": b})
    if a != b:
        print("transformers' GGUF tokenizer and the original differ on %r" % s)

res = {
    "source": "transformers %s, torch %s: AutoModelForCausalLM.from_pretrained(dir, gguf_file=%r), fp32 CPU"
              % (transformers.__version__, torch.__version__, GGUF),
    "tensors": tensors,
    "logprobs": {"ids": seq, "logprobs": logprobs},
    "greedy": {"prompt_ids": prompt_ids, "ids": greedy, "text": tok.decode(greedy)},
    "tokenize": tokenize,
}
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as f:
    json.dump(res, f, indent=1)
    f.write("\n")
print("wrote", OUT, "greedy:", repr(tok.decode(greedy)))
