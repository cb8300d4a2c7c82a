#!/usr/bin/env python3
"""Fixture for a SentencePiece-style GGUF vocabulary (tokenizer.ggml.model "llama") read as a tokenizer.

Run:  FT_BIN=build/finetune /work/venv/bin/python tests/reference/make_gguf_spm_fixtures.py
Writes the GGUF that tests/unit/test_gguf_roundtrip.c also writes (`finetune export-gguf --type f16` of
tiny-random-llama with the Llama-2 tokenizer from tests/fixtures/assets), loads its tokenizer with
transformers (AutoTokenizer.from_pretrained(dir, gguf_file=...): tokens, scores, merges rebuilt from the
scores by generate_merges, Metaspace, byte fallback, BOS added) and records the ids of a few texts in
tests/fixtures/gguf_model/spm_ids.json, with the original tokenizer.json's ids beside them.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import transformers
from tokenizers import Tokenizer
from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
A = os.path.join(ROOT, "tests", "fixtures", "assets")
FT = os.environ.get("FT_BIN", os.path.join(ROOT, "build", "finetune"))
TEXTS = [
    "Hello world! How are you?",
    "  two spaces, caf\u00e9 \u65e5\u672c 12345\nnew line",
    "<s>[INST] What is the capital of France? [/INST]",
    "Ends with a space ",
    "tabs\tand \u2581 a literal lower one eighth block, emoji \U0001F600",
]
transformers.utils.logging.disable_progress_bar()
with tempfile.TemporaryDirectory() as tmp:
    m = os.path.join(tmp, "m")
    shutil.copytree(os.path.join(A, "models", "tiny-random-llama"), m)
    for f in os.listdir(os.path.join(A, "tokenizers", "llama-2")):
        shutil.copy(os.path.join(A, "tokenizers", "llama-2", f), m)
    subprocess.run([FT, "export-gguf", m, "--type", "f16", "-o", os.path.join(tmp, "spm.gguf")], check=True)
    tok = AutoTokenizer.from_pretrained(tmp, gguf_file="spm.gguf")
    orig = Tokenizer.from_file(os.path.join(A, "tokenizers", "llama-2", "tokenizer.json"))
    out = {"source": "transformers %s AutoTokenizer(gguf_file=) of finetune export-gguf's file" % transformers.__version__,
           "texts": [{"text": t, "gguf_tf": [int(i) for i in tok(t)["input_ids"]], "original": orig.encode(t).ids}
                     for t in TEXTS]}
for t in out["texts"]:
    if t["gguf_tf"] != t["original"]:
        print("transformers' GGUF tokenizer differs from the original on %r" % t["text"])
path = os.path.join(ROOT, "tests", "fixtures", "gguf_model", "spm_ids.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print("wrote", path)
