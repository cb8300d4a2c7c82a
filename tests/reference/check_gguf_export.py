#!/usr/bin/env python3
"""Check `finetune export-gguf` with gguf-py (llama.cpp's own GGUF package), independently of our reader.

  /work/venv/bin/pip install gguf numpy safetensors transformers
  /work/venv/bin/python tests/reference/check_gguf_export.py build/finetune

It builds two models in a temp dir: tiny-random-llama with the Llama-2 tokenizer (SentencePiece-style BPE) and a
byte-level one (`finetune init`, GQA, tied embeddings, bf16) with the SmolLM tokenizer and SmolLM2's chat
template; exports each with --type f16, bf16, q8_0 and q4_0; and reads every file with gguf.GGUFReader:

- tensors: the HF weights (safetensors read here with numpy), Q/K permuted by llama.cpp's formula
  (reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2)), converted by gguf.quants.quantize with
  convert_hf_to_gguf's type rule (1-D and *_norm.weight F32; rows not a multiple of 32: QuantError -> F16) must be
  the file's bytes exactly (F16, BF16, Q8_0, Q4_0 alike), with ggml's dims;
- metadata: the llama.* keys from config.json; tokens and token types as gguf-py's LlamaHfVocab (llama) or
  convert_hf_to_gguf's get_vocab_base logic (gpt2) find them through transformers' tokenizer; merges, special ids,
  add_bos and the chat template as gguf-py's SpecialVocab reads them; the llama scores are -(rank of the merge
  making the token), recomputed here from tokenizer.json (convert_hf_to_gguf writes -1000 everywhere without a
  tokenizer.model; see finetune/io/gguf_export.h); eot = the template's end-of-turn token;
- --adapter: tests/fixtures/lora/peft_a on llama-gqa, against PEFT's merge_and_unload weights in
  tests/fixtures/lora/peft_grads.safetensors ("merged/..."), rounded to f16 (within one f16 step: ours are within
  1e-6 of PEFT's in fp32).
Prints one line per file and "ok" at the end; any difference raises."""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGUFReader, GGMLQuantizationType as Q
from gguf.quants import quantize, dequantize, QuantError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
A = os.path.join(ROOT, "tests", "fixtures", "assets")
FT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "finetune"))
TYPES = {"f16": (Q.F16, 1), "bf16": (Q.BF16, 32), "q8_0": (Q.Q8_0, 7), "q4_0": (Q.Q4_0, 2)}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        raw = data[a:b]
        dt = v["dtype"]
        if dt == "F32":
            x = np.frombuffer(raw, "<f4")
        elif dt == "F16":
            x = np.frombuffer(raw, "<f2").astype(np.float32)
        elif dt == "BF16":
            x = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: {k} is {dt}")
        out[k] = x.reshape(v["shape"])
    return out


def permute(w, n_head):  # convert_hf_to_gguf's LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GG = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
      "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
      "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def gguf_name(hf):
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if hf in top:
        return top[hf]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", hf)
    return f"blk.{m[1]}.{GG[m[2]]}.{m[3]}"


def expected_bytes(name, x, qtype):
    """convert_hf_to_gguf's choice of type and gguf-py's bytes for it."""
    if x.ndim <= 1 or name.endswith("_norm.weight"):
        return Q.F32, x.astype(np.float32).tobytes()
    try:
        return qtype, quantize(x.astype(np.float32), qtype).tobytes()
    except QuantError:
        return Q.F16, quantize(x.astype(np.float32), Q.F16).tobytes()


def check_tensors(r, cfg, st, qtype, tensors=None):
    t = {x.name: x for x in r.tensors}
    want = set()
    for hf, x in st.items():
        if cfg.get("tie_word_embeddings") and hf == "lm_head.weight":
            continue
        name = gguf_name(hf)
        want.add(name)
        if ".attn_q." in name:
            x = permute(x, cfg["num_attention_heads"])
        elif ".attn_k." in name:
            x = permute(x, cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
        typ, b = expected_bytes(name, x, qtype)
        g = t[name]
        assert g.tensor_type == typ, (name, g.tensor_type, typ)
        assert list(g.shape) == list(reversed(x.shape)), (name, g.shape, x.shape)
        assert bytes(g.data.tobytes()) == b, f"{name}: bytes differ from gguf-py's {typ.name}"
    assert set(t) == want, (set(t) ^ want)


def get_vocab_base(tok_dir, vocab_size):  # convert_hf_to_gguf's TextModel.get_vocab_base, for gpt2 vocabularies
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    reverse = {i: t for t, i in tokenizer.vocab.items()}
    added = tokenizer.get_added_vocab()
    dec = tokenizer.added_tokens_decoder
    toks, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            toks.append(f"[PAD{i}]"); types.append(5)
            continue
        tok = reverse[i]
        if tok in added:
            special = dec[i].special or tok.startswith("<|") and tok.endswith("|>")
            if not special:
                tok = tok.replace("\u2581", " ")
            types.append(3 if special else 4)
        else:
            types.append(1)
        toks.append(tok)
    return toks, types


def check_metadata(r, model, cfg, ftype, tok_kind, eot):
    f = {k: v.contents() for k, v in r.fields.items()}
    assert f["GGUF.version"] == 3 and f["general.architecture"] == "llama" and f["general.type"] == "model"
    assert f["general.file_type"] == ftype and f["general.quantization_version"] == 2
    assert f["general.name"] == os.path.basename(model)
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    exp = {"llama.block_count": cfg["num_hidden_layers"], "llama.context_length": cfg["max_position_embeddings"],
           "llama.embedding_length": cfg["hidden_size"], "llama.feed_forward_length": cfg["intermediate_size"],
           "llama.attention.head_count": heads, "llama.attention.head_count_kv": kv,
           "llama.vocab_size": cfg["vocab_size"], "llama.rope.dimension_count": cfg["hidden_size"] // heads}
    for k, v in exp.items():
        assert f[k] == v, (k, f[k], v)
    assert np.float32(f["llama.rope.freq_base"]) == np.float32(cfg["rope_theta"])
    assert np.float32(f["llama.attention.layer_norm_rms_epsilon"]) == np.float32(cfg["rms_norm_eps"])
    n = cfg["vocab_size"]
    sv = gguf.SpecialVocab(model, load_merges=tok_kind == "gpt2", n_vocab=n)
    tj = json.load(open(os.path.join(model, "tokenizer.json")))
    if tok_kind == "llama":
        v = gguf.LlamaHfVocab(gguf.Path(model) if hasattr(gguf, "Path") else __import__("pathlib").Path(model))
        toks, types = [], []
        for text, _score, typ in v.all_tokens():
            toks.append(text.decode("utf-8")); types.append(int(typ))
        assert f["tokenizer.ggml.model"] == "llama" and f["tokenizer.ggml.pre"] == "default"
        rank = {}
        for i, m in enumerate(tj["model"]["merges"]):
            rank.setdefault("".join(m) if isinstance(m, list) else m.replace(" ", ""), i + 1)
        vocab = tj["model"]["vocab"]
        scores = [0.0] * n
        for t, i in vocab.items():
            if t in rank and types[i] == 1:
                scores[i] = -float(rank[t])
        assert f["tokenizer.ggml.scores"] == scores
        assert "tokenizer.ggml.merges" not in f
    else:
        toks, types = get_vocab_base(model, n)
        assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "smollm"
        assert f["tokenizer.ggml.merges"] == sv.merges
        assert "tokenizer.ggml.scores" not in f
    assert f["tokenizer.ggml.tokens"] == toks
    assert f["tokenizer.ggml.token_type"] == types
    for typ, tid in sv.special_token_ids.items():
        assert f[f"tokenizer.ggml.{typ}_token_id"] == tid, (typ, tid)
    for typ, val in sv.add_special_token.items():
        assert f[f"tokenizer.ggml.add_{typ}_token"] == val, (typ, val)
    assert f["tokenizer.chat_template"] == sv.chat_template
    assert f.get("tokenizer.ggml.eot_token_id") == eot, (f.get("tokenizer.ggml.eot_token_id"), eot)


def export(model, typ, out, adapter=None):
    cmd = [FT, "export-gguf", model, "--type", typ, "-o", out] + (["--adapter", adapter] if adapter else [])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main():
    tmp = tempfile.mkdtemp(prefix="check_gguf_export.")
    try:
        tl = os.path.join(tmp, "tl")
        shutil.copytree(os.path.join(A, "models", "tiny-random-llama"), tl)
        for fn in os.listdir(os.path.join(A, "tokenizers", "llama-2")):
            shutil.copy(os.path.join(A, "tokenizers", "llama-2", fn), tl)
        sm = os.path.join(tmp, "sm")
        cfgp = os.path.join(tmp, "smol.json")
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152,
                   "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
                   "rope_theta": 100000.0, "tie_word_embeddings": True, "bos_token_id": 0, "eos_token_id": 0,
                   "torch_dtype": "bfloat16"}, open(cfgp, "w"))
        subprocess.run([FT, "init", "--config", cfgp, "--out", sm, "--seed", "3"], check=True, stdout=subprocess.DEVNULL)
        for fn in os.listdir(os.path.join(A, "tokenizers", "smollm-135m")):
            shutil.copy(os.path.join(A, "tokenizers", "smollm-135m", fn), sm)
        shutil.copy(os.path.join(ROOT, "tests", "fixtures", "templates", "jinja",
                                 "HuggingFaceTB-SmolLM2-135M-Instruct.jinja"), os.path.join(sm, "chat_template.jinja"))
        for model, kind, eot in ((tl, "llama", None), (sm, "gpt2", 2)):
            cfg = json.load(open(os.path.join(model, "config.json")))
            st = read_safetensors(os.path.join(model, "model.safetensors"))
            for typ, (qtype, ftype) in TYPES.items():
                out = os.path.join(tmp, f"{os.path.basename(model)}-{typ}.gguf")
                export(model, typ, out)
                r = GGUFReader(out)
                check_metadata(r, model, cfg, ftype, kind, eot)
                check_tensors(r, cfg, st, qtype)
                print(f"ok: {os.path.basename(model)} ({kind} tokenizer) --type {typ}: {len(r.fields)} fields, "
                      f"{len(r.tensors)} tensors equal to gguf-py's")
        # --adapter against PEFT's merge
        gqa = os.path.join(tmp, "gqa")
        os.makedirs(gqa)
        src = os.path.join(ROOT, "tests", "fixtures", "models", "llama-gqa")
        for fn in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(src, fn), gqa)
        vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{i:02X}>": i + 3 for i in range(250)}}
        json.dump({"added_tokens": [{"id": i, "content": c, "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])],
                   "decoder": {"type": "Sequence", "decoders": []},
                   "model": {"type": "BPE", "byte_fallback": True, "vocab": vocab, "merges": []}},
                  open(os.path.join(gqa, "tokenizer.json"), "w"))
        out = os.path.join(tmp, "gqa-adapter-f16.gguf")
        export(gqa, "f16", out, os.path.join(ROOT, "tests", "fixtures", "lora", "peft_a"))
        r = GGUFReader(out)
        t = {x.name: x for x in r.tensors}
        merged = read_safetensors(os.path.join(ROOT, "tests", "fixtures", "lora", "peft_grads.safetensors"))
        cfg = json.load(open(os.path.join(gqa, "config.json")))
        n = 0
        for k, x in merged.items():
            if not k.startswith("merged/") or not k.endswith("_proj.weight"):
                continue
            name = gguf_name(k[len("merged/"):])
            if ".attn_q." in name:
                x = permute(x, cfg["num_attention_heads"])
            elif ".attn_k." in name:
                x = permute(x, cfg["num_key_value_heads"])
            g = dequantize(t[name].data, t[name].tensor_type).reshape(x.shape)
            want = x.astype(np.float16).astype(np.float32)
            assert np.all(np.abs(g - want) <= np.abs(want) * 2 ** -10 + 1e-7), name
            n += 1
        assert n == 14, n
        print(f"ok: llama-gqa --adapter peft_a --type f16: {n} merged linears equal PEFT's merge_and_unload (f16)")
        print("ok")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
