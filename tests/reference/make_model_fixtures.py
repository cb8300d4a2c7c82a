#!/usr/bin/env python3
"""Golden fixtures for the model forward/backward/optimizer, made with transformers on the CPU.

Run:  /work/venv/bin/python tests/reference/make_model_fixtures.py
Writes tests/fixtures/models/<name>/{config.json, generation_config.json, model.safetensors,
expected.json, grads.safetensors} for tiny random models, expected.json only for the real
checkpoint tiny-random-llama (tests/fixtures/assets/models), and llama-gqa/after_adamw.safetensors. Deterministic (fixed seeds,
float32, CPU, eager attention). See tests/reference/README.md for what each fixture means.
"""
import json
import math
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, GenerationConfig, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "models")
ASSET_LLAMA = os.path.join(ROOT, "tests", "fixtures", "assets", "models", "tiny-random-llama")

torch.set_num_threads(2)
transformers.utils.logging.disable_progress_bar()
torch.use_deterministic_algorithms(True)

BASE = dict(vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=64, rms_norm_eps=1e-5,
            max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def cfg(**kw):
    d = dict(BASE)
    d.update(kw)
    return d


# name -> (model class, config class, config kwargs)
MODELS = {
    "llama-gqa": (LlamaForCausalLM, LlamaConfig, cfg(tie_word_embeddings=False)),
    "mistral-swa": (MistralForCausalLM, MistralConfig, cfg(sliding_window=4, tie_word_embeddings=False)),
    "llama-tied": (LlamaForCausalLM, LlamaConfig, cfg(tie_word_embeddings=True)),
    "llama-hd12": (LlamaForCausalLM, LlamaConfig, cfg(hidden_size=48, intermediate_size=64,
                                                       tie_word_embeddings=False)),
    "llama-rope-linear": (LlamaForCausalLM, LlamaConfig,
                          cfg(rope_scaling={"rope_type": "linear", "factor": 2.0})),
    # max_position_embeddings (8) < test lengths (12, 16) so the dynamic branch triggers.
    "llama-rope-dynamic": (LlamaForCausalLM, LlamaConfig,
                           cfg(max_position_embeddings=8,
                               rope_scaling={"rope_type": "dynamic", "factor": 2.0})),
    "llama-rope-llama3": (LlamaForCausalLM, LlamaConfig,
                          cfg(rope_theta=500000.0,
                              rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 16})),
    "qwen2-bias": (Qwen2ForCausalLM, Qwen2Config, cfg(tie_word_embeddings=False)),
    # Llama's attention_bias puts a bias on o_proj too (Qwen2's does not).
    "llama-bias": (LlamaForCausalLM, LlamaConfig, cfg(attention_bias=True, tie_word_embeddings=False)),
}

# Case lengths: case 0 is the long one so logits_first is a meaningful row; length 1 -> no logprobs.
CASE_LENS = [12, 1, 5, 16]
PACKED_LENS = [(5, 7), (9, 7)]
GEN_PROMPT_LENS = [3, 10]
MAX_NEW = 8
TRAIN_LEN = 12
TRAIN_MASK = [0, 1, 2, 3, 8]  # positions set to -100 in labels (prompt + one hole)


def f9(x):
    """Float list with 9 significant digits: exact round trip for float32, half the JSON size."""
    return [float(f"{v:.9g}") for v in x.tolist()]


def init_weights(model, seed):
    """Larger-than-default random weights so logits are far from flat and errors show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def reset_rope(model):
    """Dynamic RoPE in transformers keeps state (grown inv_freq) across forward calls; reset it so
    every fixture row is computed as if the model were freshly loaded."""
    for m in model.modules():
        if hasattr(m, "original_inv_freq") and hasattr(m, "max_seq_len_cached"):
            m.register_buffer("inv_freq", m.original_inv_freq.clone(), persistent=False)
            m.max_seq_len_cached = m.original_max_seq_len


def load(path, attn="eager", **over):
    m = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn, dtype=torch.float32, **over)
    m.eval()
    return m


@torch.no_grad()
def logits_of(model, ids):
    reset_rope(model)
    x = torch.tensor([ids], dtype=torch.long)
    return model(input_ids=x, use_cache=False).logits[0].float()


def logprobs_of(logits, ids):
    lp = torch.log_softmax(logits.double(), dim=-1)  # double so the reference adds no rounding of its own
    return [lp[i, ids[i + 1]].item() for i in range(len(ids) - 1)]


@torch.no_grad()
def greedy(model, prompt, max_new, use_cache):
    """HF generate, greedy; eos disabled so it always emits max_new tokens."""
    reset_rope(model)
    gc = GenerationConfig(do_sample=False, max_new_tokens=max_new, min_new_tokens=0, eos_token_id=None,
                          pad_token_id=0, bos_token_id=None, use_cache=use_cache,
                          temperature=None, top_p=None, top_k=None)
    x = torch.tensor([prompt], dtype=torch.long)
    # transformers 5 fills None fields of the passed GenerationConfig from the model's own
    # generation_config (eos 2 there), so eos must be removed on the model too.
    model.generation_config.eos_token_id = None
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=gc)
    new = out[0, len(prompt):].tolist()
    assert len(new) == max_new, f"generate stopped early: {new}"
    return new


@torch.no_grad()
def greedy_manual(model, prompt, max_new):
    """Argmax of a full recompute each step (no KV cache): the definition we test against."""
    ids = list(prompt)
    for _ in range(max_new):
        ids.append(int(torch.argmax(logits_of(model, ids)[-1]).item()))
    return ids[len(prompt):]


def rand_ids(g, n, vocab):
    return torch.randint(0, vocab, (n,), generator=g).tolist()


def make_expected(model, vocab, seed, notes):
    g = torch.Generator().manual_seed(seed)
    exp = {"cases": [], "packed": [], "generate": []}
    for n in CASE_LENS:
        ids = rand_ids(g, n, vocab)
        lg = logits_of(model, ids)
        exp["cases"].append({"ids": ids, "logprobs": f9(torch.tensor(logprobs_of(lg, ids)))})
    lp0 = exp["cases"][0]["logprobs"]
    assert len(set(lp0)) == len(lp0), "logprobs suspiciously identical"
    exp["logits_first"] = f9(logits_of(model, exp["cases"][0]["ids"])[-1])
    for la, lb in PACKED_LENS:
        a, b = rand_ids(g, la, vocab), rand_ids(g, lb, vocab)
        lp = logprobs_of(logits_of(model, a), a) + logprobs_of(logits_of(model, b), b)
        exp["packed"].append({"ids": a + b, "doc_lens": [la, lb], "logprobs": f9(torch.tensor(lp))})
    for n in GEN_PROMPT_LENS:
        prompt = rand_ids(g, n, vocab)
        out = greedy(model, prompt, MAX_NEW, use_cache=True)
        manual = greedy_manual(model, prompt, MAX_NEW)
        nocache = greedy(model, prompt, MAX_NEW, use_cache=False)
        assert nocache == manual, (nocache, manual)
        row = {"prompt": prompt, "max_new": MAX_NEW, "output": manual}
        if out != manual:
            # Only expected for dynamic RoPE: the KV cache holds keys rotated with older frequencies.
            row["output_hf_kv_cache"] = out
            notes.append(f"generate prompt len {n}: HF generate with KV cache {out} != full-recompute greedy {manual}")
        exp["generate"].append(row)
    return exp


def check_sdpa(path, exp, notes):
    """eager must not be special: sdpa gives the same logits."""
    m = load(path, attn="sdpa")
    eager = load(path, attn="eager")
    worst = 0.0
    for c in exp["cases"]:
        worst = max(worst, (logits_of(m, c["ids"]) - logits_of(eager, c["ids"])).abs().max().item())
    assert worst < 1e-5, f"{path}: sdpa vs eager max |diff| {worst}"
    notes.append(f"sdpa vs eager max |logit diff| = {worst:.2e}")


def make_train(model, vocab, seed):
    g = torch.Generator().manual_seed(seed + 1000)
    ids = rand_ids(g, TRAIN_LEN, vocab)
    labels = [(-100 if i in TRAIN_MASK else t) for i, t in enumerate(ids)]
    return ids, labels


def loss_and_grads(model, ids, labels):
    reset_rope(model)
    model.zero_grad(set_to_none=True)
    out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]), use_cache=False)
    out.loss.backward()
    grads = {n: p.grad.detach().clone().contiguous() for n, p in model.named_parameters()}
    # Independent check of HF's loss convention: mean over unmasked shifted targets.
    with torch.no_grad():
        lp = logprobs_of(out.logits[0].detach(), ids)
        keep = [i for i in range(len(ids) - 1) if labels[i + 1] != -100]
        manual = -sum(lp[i] for i in keep) / len(keep)
        assert abs(manual - out.loss.item()) < 1e-5, (manual, out.loss.item())
    return out.loss.item(), grads


def adamw_fixture(path, ids, labels):
    """Plain PyTorch loop: AdamW, decay on 2-D weights only, clip to 1.0, same batch each step."""
    model = load(path)
    model.train()  # dropout is 0 in these configs, so train() == eval() numerically
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    hp = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"], foreach=False)
    x, y = torch.tensor([ids]), torch.tensor([labels])
    losses, norms = [], []
    for _ in range(10):
        opt.zero_grad(set_to_none=True)
        reset_rope(model)
        loss = model(input_ids=x, labels=y, use_cache=False).loss
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item())
        opt.step()
        losses.append(loss.item())
    sd = {n: p.detach().clone().contiguous() for n, p in model.named_parameters()}
    save_file(sd, os.path.join(OUT, "llama-gqa", "after_adamw.safetensors"), metadata={"format": "pt"})
    assert losses[-1] < losses[0], losses
    return dict(hp, no_decay="norm weights and biases (all 1-D parameters)", grad_clip=1.0, steps=10,
                batch={"ids": [ids], "labels": [labels]}, losses=f9(torch.tensor(losses)),
                grad_norms_before_clip=f9(torch.tensor(norms)))


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")


def sanity_variants(name, path, exp, notes):
    """Show that the feature under test actually changes the outputs."""
    c = max(exp["cases"], key=lambda c: len(c["ids"]))
    ref = logits_of(load(path), c["ids"])
    if name == "mistral-swa":
        alt = load(path, sliding_window=None)
    elif name.startswith("llama-rope-"):
        alt = load(path, rope_parameters={"rope_type": "default", "rope_theta": load(path).config.rope_parameters["rope_theta"]})
    else:
        return
    d = (ref - logits_of(alt, c["ids"])).abs().max().item()
    assert d > 1e-3, f"{name}: feature has no effect (max diff {d})"
    notes.append(f"feature check: max |logit diff| vs plain variant at len {len(c['ids'])} = {d:.3g}")
    if name == "mistral-swa":
        # Positions < window must be unaffected by the window.
        early = (ref[:4] - logits_of(alt, c["ids"])[:4]).abs().max().item()
        assert early < 1e-5, early
        notes.append(f"first 4 positions unaffected by window (diff {early:.1e})")
    if name == "llama-rope-dynamic":
        short = min((c for c in exp["cases"] if len(c["ids"]) > 1), key=lambda c: len(c["ids"]))
        d2 = (logits_of(load(path), short["ids"]) - logits_of(alt, short["ids"])).abs().max().item()
        assert d2 < 1e-5, d2
        notes.append(f"len {len(short['ids'])} <= max_position_embeddings: same as unscaled (diff {d2:.1e})")


def main():
    os.makedirs(OUT, exist_ok=True)
    report = {}
    for i, (name, (cls, ccls, kw)) in enumerate(MODELS.items()):
        torch.manual_seed(1234 + i)
        d = os.path.join(OUT, name)
        shutil.rmtree(d, ignore_errors=True)
        config = ccls(**kw)
        config._attn_implementation = "eager"
        model = cls(config).float()
        init_weights(model, 1234 + i)
        model.save_pretrained(d)
        # Every number below comes from the model reloaded from disk: the fixture is what is saved.
        model = load(d)
        notes = []
        exp = make_expected(model, kw["vocab_size"], 100 + i, notes)
        check_sdpa(d, exp, notes)
        sanity_variants(name, d, exp, notes)
        ids, labels = make_train(model, kw["vocab_size"], 100 + i)
        loss, grads = loss_and_grads(model, ids, labels)
        save_file(grads, os.path.join(d, "grads.safetensors"), metadata={"format": "pt"})
        exp["train"] = {"ids": ids, "labels": labels, "loss": float(f"{loss:.9g}")}
        if name == "llama-gqa":
            exp["adamw"] = adamw_fixture(d, ids, labels)
        write_json(os.path.join(d, "expected.json"), exp)
        report[name] = notes

    # The real Hub checkpoint: expected outputs only (its weights are in tests/fixtures/assets/models).
    if os.path.isdir(ASSET_LLAMA):
        d = os.path.join(OUT, "tiny-random-llama")
        os.makedirs(d, exist_ok=True)
        model = load(ASSET_LLAMA)
        notes = []
        exp = make_expected(model, model.config.vocab_size, 999, notes)
        check_sdpa(ASSET_LLAMA, exp, notes)
        write_json(os.path.join(d, "expected.json"), exp)
        report["tiny-random-llama"] = notes
    else:
        print(f"warning: {ASSET_LLAMA} missing, tiny-random-llama expected.json not regenerated", file=sys.stderr)

    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    for k, v in report.items():
        print(k)
        for n in v:
            print("   ", n)


if __name__ == "__main__":
    main()
