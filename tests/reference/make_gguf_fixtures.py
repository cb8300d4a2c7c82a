#!/usr/bin/env python3
"""GGUF reader fixtures, written by gguf-py (the `gguf` package of llama.cpp) on the CPU.

Run:  python3 -m venv /tmp/venv-gguf && /tmp/venv-gguf/bin/pip install gguf numpy
      /tmp/venv-gguf/bin/python tests/reference/make_gguf_fixtures.py
Writes tests/fixtures/gguf/dequant.gguf: for each type T of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0,
Q5_1, Q4_K, Q5_K, Q6_K a tensor "q.T" (2 x 512 elements: random block bytes whose fp16 scales are
set to finite random values) and "ref.T", the F32 tensor gguf.quants.dequantize gives for it (ggml's
reference dequantization); plus one metadata key of every value type ("t.u8", ..., "t.arr_str"),
general.alignment = 64, for test_gguf.c. Versions: gguf 0.19.0, numpy 2.4.6.
"""
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "fixtures", "gguf")
rng = np.random.default_rng(1234)

# fp16 field offsets inside each block type's bytes
F16_FIELDS = {Q.Q8_0: [0], Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2],
              Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}
ROWS, COLS = 2, 512


def block_bytes(t):
    bs, ts = gguf.GGML_QUANT_SIZES[t]
    nb = ROWS * COLS // bs
    raw = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
    for off in F16_FIELDS[t]:
        vals = (rng.standard_normal(nb) * 0.05).astype(np.float16)
        raw[:, off:off + 2] = vals.view(np.uint8).reshape(nb, 2)
    return raw.reshape(ROWS, COLS // bs * ts)


def main():
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "dequant.gguf")
    w = gguf.GGUFWriter(path, arch="test")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_uint64("t.u64", 10000000000)
    w.add_int64("t.i64", -10000000000)
    w.add_float32("t.f32", 0.25)
    w.add_float64("t.f64", -1.5e-300)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_str", ["a", "", "<|im_end|>"])
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    w.add_tensor("q.F32", x)
    w.add_tensor("ref.F32", x)
    h = x.astype(np.float16)
    w.add_tensor("q.F16", h)
    w.add_tensor("ref.F16", h.astype(np.float32))
    bf = (x.view(np.uint32) >> 16).astype(np.uint16)
    w.add_tensor("q.BF16", bf.view(np.uint8).reshape(ROWS, COLS * 2), raw_dtype=Q.BF16)
    w.add_tensor("ref.BF16", (bf.astype(np.uint32) << 16).view(np.float32))
    for t in F16_FIELDS:
        raw = block_bytes(t)
        ref = dequantize(raw, t).astype(np.float32)
        assert ref.shape == (ROWS, COLS), ref.shape
        w.add_tensor("q." + t.name, raw, raw_dtype=t)
        w.add_tensor("ref." + t.name, ref)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
