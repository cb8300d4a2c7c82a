"""Make the end-to-end SFT fixture under tests/fixtures/sft/ (run with /work/venv/bin/python).

A few OpenOrca rows are rendered with the danube template, tokenized with a tiny BPE tokenizer
(trained here with HF `tokenizers` on those rows, vocab <= 256 so that it fits the llama-gqa
fixture model), the loss mask is the answer plus its closing </s> (a token trains when any of
its characters lies there), and a plain PyTorch loop trains tests/fixtures/models/llama-gqa:
every optimizer step sees all examples (batch 1, grad_accum = number of examples), the loss is
the cross-entropy summed over trained tokens / trained tokens of the step, AdamW (weight decay
on matrices only), transformers' cosine schedule with warmup, clip_grad_norm_. It writes
  tokenizer/tokenizer.json, data.jsonl, recipe.json (what `finetune sft` runs),
  expected.json (loss and grad norm per step), expected_weights.safetensors (final weights).
tests/golden/test_sft_golden.c runs `finetune sft` on the recipe and compares.
"""
import json
import os

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaForCausalLM, get_cosine_schedule_with_warmup

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "sft")
MODEL = os.path.join(HERE, "..", "fixtures", "models", "llama-gqa")
os.makedirs(os.path.join(OUT, "tokenizer"), exist_ok=True)

ROWS = [
    ("", "What is 6 plus 3?", "6 plus 3 is 9."),
    ("Be brief.", "Name a red fruit.", "An apple."),
    ("", "What is the capital of Peru?", "Lima is."),
    ("", "Is ice cold?", "Yes, ice is cold."),
    ("Answer in one word.", "Sky color?", "Blue."),
]
STEPS, LR, WD, WARMUP, CLIP = 4, 3e-3, 0.01, 1, 1.0


def render(sys, q, a):
    """danube: <|system|>{sys}</s> <|prompt|>{q}</s><|answer|>{a}</s>; trained span = a + </s>."""
    pre = (f"<|system|>{sys}</s>" if sys else "") + f"<|prompt|>{q}</s><|answer|>"
    return pre + a + "</s>", len(pre)


texts = [render(*r) for r in ROWS]
tok = Tokenizer(models.BPE(unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
tok.train_from_iterator([t for t, _ in texts] * 3, trainer)
assert tok.get_vocab_size() <= 256
tok.save(os.path.join(OUT, "tokenizer", "tokenizer.json"))
with open(os.path.join(OUT, "tokenizer", "tokenizer_config.json"), "w") as f:
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": 64,
               "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=2)

with open(os.path.join(OUT, "data.jsonl"), "w") as f:
    for i, (s, q, a) in enumerate(ROWS):
        f.write(json.dumps({"id": str(i), "system_prompt": s, "question": q, "response": a}) + "\n")

examples = []
for text, start in texts:
    enc = tok.encode(text, add_special_tokens=False)
    ids = enc.ids
    trained = [any(start <= c < len(text) for c in range(b, e)) for b, e in enc.offsets]
    labels = [ids[t + 1] if trained[t + 1] else -100 for t in range(len(ids) - 1)] + [-100]
    assert len(ids) <= 64
    examples.append((torch.tensor([ids]), torch.tensor([labels])))

torch.manual_seed(0)
model = LlamaForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
model.train()
params = [(n, p) for n, p in model.named_parameters()]
opt = torch.optim.AdamW([{"params": [p for _, p in params if p.ndim >= 2], "weight_decay": WD},
                         {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0}],
                        lr=LR, betas=(0.9, 0.999), eps=1e-8)
sched = get_cosine_schedule_with_warmup(opt, WARMUP, STEPS)
n_tok = sum(int((l != -100).sum()) for _, l in examples)
losses, norms = [], []
for step in range(STEPS):
    opt.zero_grad()
    total = 0.0
    for ids, labels in examples:
        logits = model(input_ids=ids).logits[0]
        lp = torch.log_softmax(logits.float(), -1)
        m = labels[0] != -100
        loss = -(lp[m].gather(1, labels[0][m].unsqueeze(1))).sum() / n_tok
        loss.backward()
        total += loss.item()
    norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP).item())
    opt.step()
    sched.step()
    losses.append(total)

save_file({n: p.detach().contiguous() for n, p in params}, os.path.join(OUT, "expected_weights.safetensors"))
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump({"steps": STEPS, "loss": losses, "grad_norm": norms, "trained_tokens": n_tok,
               "ids": [e[0][0].tolist() for e in examples]}, f, indent=1)
recipe = f"""// Made by tests/reference/make_sft_fixtures.py: a few steps of finetune sft on llama-gqa that a PyTorch loop reproduces.
{{
  "model": "../models/llama-gqa", "tokenizer": "tokenizer", "data": "data.jsonl", "format": "openorca",
  "template": "danube", "max_length": 64, "packing": false, "batch_size": 1, "grad_accum": {len(ROWS)},
  "epochs": {STEPS}, "lr": {LR}, "schedule": "cosine", "warmup_steps": {WARMUP}, "weight_decay": {WD},
  "grad_clip": {CLIP}, "loss_normalization": "tokens", "save_every": 0, "keep_last": 1, "log_every": 1,
  "device": "cpu", "seed": 1
}}
"""
with open(os.path.join(OUT, "recipe.json"), "w") as f:
    f.write(recipe)
print("losses", losses, "norms", norms, "trained tokens", n_tok)
