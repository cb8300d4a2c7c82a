#!/usr/bin/env python3
"""Golden fixtures for sequence classification (transformers' *ForSequenceClassification, PEFT SEQ_CLS).

Run:  /work/venv/bin/python tests/reference/make_cls_fixtures.py [all|check_ours ADAPTER_OR_MODEL LOGITS.json]
Writes tests/fixtures/cls/. Versions: torch 2.15 (CPU), transformers 5.25, peft 0.22. Deterministic.

- llama_cls/, qwen2_cls/: AutoModelForSequenceClassification from the tiny causal fixtures (llama-gqa with 3
  labels, qwen2-bias with 1 label = regression), score randomised, saved with save_pretrained.
- expected.json: the two test sequences, their logits from transformers on a right-padded batch (pad id 0
  never inside a sequence, so the pooled token is each sequence's last), the losses below.
- grads.safetensors: gradients of the loss w.r.t. every parameter: llama = mean cross-entropy over the labels,
  qwen2 = mean squared error (transformers' own loss for problem_type single_label / regression).
- peft_cls/: a PEFT LoRA adapter (task_type SEQ_CLS, all-linear, r 4) on llama_cls with A, B and the score
  copy (modules_to_save) randomised; its logits, loss and the gradients of A, B and score under
  PeftModel.from_pretrained(..., is_trainable=True); merged/ weights from merge_and_unload.
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "cls")
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)

SEQS = [[1, 17, 200, 5, 99, 42, 7, 128, 64, 3, 250, 11], [1, 33, 8, 150, 77, 2]]
LABELS = [2, 0]
TARGETS = [0.75, -1.5]


def batch():
    L = max(len(s) for s in SEQS)
    ids = torch.zeros(len(SEQS), L, dtype=torch.long)
    mask = torch.zeros(len(SEQS), L, dtype=torch.long)
    for i, s in enumerate(SEQS):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def make_cls(src, dst, num_labels, seed, **kw):
    from transformers import AutoModelForSequenceClassification
    m = AutoModelForSequenceClassification.from_pretrained(os.path.join(MODELS, src), num_labels=num_labels,
                                                           dtype=torch.float32, attn_implementation="eager", **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.score.weight.copy_(torch.randn(m.score.weight.shape, generator=g) * 0.5)
    m.config.pad_token_id = 0
    d = os.path.join(OUT, dst)
    shutil.rmtree(d, ignore_errors=True)
    m.save_pretrained(d)
    return d


def load_cls(d):
    from transformers import AutoModelForSequenceClassification
    return AutoModelForSequenceClassification.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")


def main():
    from peft import LoraConfig, PeftModel, get_peft_model
    os.makedirs(OUT, exist_ok=True)
    ids, mask = batch()
    exp = {"seqs": SEQS, "labels": LABELS, "targets": TARGETS}
    grads = {}
    d_llama = make_cls("llama-gqa", "llama_cls", 3, 7, id2label={0: "winner_model_a", 1: "winner_model_b", 2: "winner_tie"},
                       label2id={"winner_model_a": 0, "winner_model_b": 1, "winner_tie": 2})
    d_qwen = make_cls("qwen2-bias", "qwen2_cls", 1, 8, problem_type="regression")
    for name, d in (("llama", d_llama), ("qwen2", d_qwen)):
        m = load_cls(d)
        if name == "llama":
            out = m(input_ids=ids, attention_mask=mask, labels=torch.tensor(LABELS))
        else:
            out = m(input_ids=ids, attention_mask=mask, labels=torch.tensor(TARGETS))
        exp[name + ".logits"] = out.logits.detach().reshape(-1).tolist()
        exp[name + ".loss"] = out.loss.item()
        out.loss.backward()
        for n, p in m.named_parameters():
            grads[name + "/" + n] = p.grad.detach().contiguous()
    # PEFT SEQ_CLS adapter on the llama classifier
    base = load_cls(d_llama)
    pm = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                         task_type="SEQ_CLS"))
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if p.requires_grad:  # lora_A, lora_B and the trainable copy of score
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    d = os.path.join(OUT, "peft_cls")
    shutil.rmtree(d, ignore_errors=True)
    pm.save_pretrained(d)
    os.remove(os.path.join(d, "README.md"))
    cfgp = os.path.join(d, "adapter_config.json")  # no machine path in a committed file
    c = json.load(open(cfgp))
    c["base_model_name_or_path"] = "tests/fixtures/cls/llama_cls"
    with open(cfgp, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
    pm = PeftModel.from_pretrained(load_cls(d_llama), d, is_trainable=True)
    out = pm(input_ids=ids, attention_mask=mask, labels=torch.tensor(LABELS))
    exp["peft.logits"] = out.logits.detach().reshape(-1).tolist()
    exp["peft.loss"] = out.loss.item()
    out.loss.backward()
    for n, p in pm.named_parameters():
        if p.grad is not None:
            # PEFT's file names: the adapter name and modules_to_save dropped
            grads["peft/" + n.replace(".default", "").replace(".modules_to_save", "")] = p.grad.detach().contiguous()
    merged = pm.merge_and_unload()
    for n, p in merged.state_dict().items():
        grads["merged/" + n] = p.detach().contiguous()
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1)
    save_file(grads, os.path.join(OUT, "grads.safetensors"))
    print("wrote", len(grads), "tensors;", sorted(k for k in grads if k.startswith("peft/"))[:3], "...")


def check_ours(path, logits_json, adapter_base=None):
    """A model dir (or, with adapter_base, a PEFT adapter dir on that base) written by finetune: transformers'
    (PEFT's) logits on the test sequences next to finetune's (a JSON list)."""
    ids, mask = batch()
    if adapter_base:
        from peft import PeftModel
        m = PeftModel.from_pretrained(load_cls(adapter_base), path)
    else:
        m = load_cls(path)
    with torch.no_grad():
        lg = m(input_ids=ids, attention_mask=mask).logits.reshape(-1)
    ours = torch.tensor(json.load(open(logits_json)))
    diff = (lg - ours).abs().max().item()
    print("max |reference - finetune| =", diff)
    sys.exit(0 if diff < 1e-4 else 1)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what == "all":
        main()
    elif what == "check_ours":
        check_ours(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
