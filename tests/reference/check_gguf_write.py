#!/usr/bin/env python3
"""Read the file test_gguf_write builds with gguf-py's GGUFReader and check it (the writer's layout as gguf-py
sees it, independent of our reader).

  GGUF_WRITE_KEEP=/tmp/gw.gguf build/test_gguf_write
  /tmp/venv/bin/python tests/reference/check_gguf_write.py /tmp/gw.gguf   (venv: pip install gguf numpy)"""
import sys
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

r = GGUFReader(sys.argv[1])
f = {k: v.contents() for k, v in r.fields.items()}
assert f["GGUF.version"] == 3 and f["general.alignment"] == 32, f
assert f["general.architecture"] == "llama" and f["llama.block_count"] == 2 and f["test.neg"] == -7
assert f["llama.rope.freq_base"] == 10000.0 and f["tokenizer.ggml.add_bos_token"] is True
assert f["tokenizer.ggml.tokens"] == ["<s>", "a b", "\u0120x"], f["tokenizer.ggml.tokens"]
assert f["tokenizer.ggml.token_type"] == [3, 1, 1] and f["tokenizer.ggml.scores"] == [0.0, -1.5, -2.0]
t = {x.name: x for x in r.tensors}
assert list(dequantize(t["a"].data, t["a"].tensor_type).ravel()) == [1, 2, 3]
assert list(dequantize(t["b"].data, t["b"].tensor_type).ravel()) == [1, 2, -2, 0, 0.5]
q = np.array([(i - 30) / 7 for i in range(64)], np.float32)
c = dequantize(t["c"].data, t["c"].tensor_type).ravel()
assert t["c"].tensor_type.name == "Q8_0" and np.abs(c - q).max() <= np.abs(q).max() / 127
assert all(x.data_offset % 32 == 0 for x in r.tensors)
print("ok:", sys.argv[1], len(r.fields), "fields,", len(r.tensors), "tensors")
