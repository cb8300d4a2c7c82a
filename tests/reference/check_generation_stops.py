"""transformers' generate() on a finetune SFT output stops at the end-of-turn token it was trained on.

Issue 15: a fine-tuned chat model must stop where training stopped. This fine-tunes the real chat model
(SmolLM2-135M-Instruct, the shared GGUF) for two steps with `finetune sft` on real alpaca rows, with its own
chatml template (--template auto), loads the output dir in transformers, and checks that
generation_config.json lists <|im_end|> among its eos ids and that greedy generate() ends the answer with
it well before max_new_tokens. Optional: CI has no Python; run it by hand when the writer changes.

    /work/venv/bin/python tests/reference/check_generation_stops.py build/finetune [../shared/assets]
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ft = os.path.abspath(sys.argv[1])
assets = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "../../../shared/assets"))
src = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
gguf = os.path.join(assets, "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")

with tempfile.TemporaryDirectory() as t:
    recipe = {
        "model": gguf,
        "data": os.path.join(src, "tests/fixtures/assets/datasets/alpaca.jsonl"),
        "format": "alpaca",
        "output_dir": os.path.join(t, "sft"),
        "max_length": 192, "batch_size": 2, "max_steps": 2, "lr": 1e-5, "eval_fraction": 0,
        "save_every": 0, "log_every": 1, "device": "cpu", "seed": 1,
    }
    with open(os.path.join(t, "r.json"), "w") as f:
        json.dump(recipe, f)
    subprocess.run([ft, "sft", os.path.join(t, "r.json")], check=True, capture_output=True)
    out = os.path.join(t, "sft")
    tok = AutoTokenizer.from_pretrained(out)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    gen = json.load(open(os.path.join(out, "generation_config.json")))
    eos = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    assert im_end in eos, f"generation_config.json eos_token_id {eos} lacks <|im_end|> ({im_end})"
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        g = model.generate(ids, max_new_tokens=64, do_sample=False)
    new = g[0, ids.shape[1]:].tolist()
    text = tok.decode(new)
    assert new[-1] in eos and len(new) < 64, f"generate() did not stop at <|im_end|>: {new} {text!r}"
    print(f"ok: eos ids {eos}; {len(new)} new tokens, ending with {tok.convert_ids_to_tokens(new[-1])}: {text!r}")
