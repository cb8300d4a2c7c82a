#!/usr/bin/env python3
"""Fixtures for tests/unit/test_ggml_quantize.c: fp32 inputs and gguf-py's Q8_0 / Q4_0 bytes for them.

  python3 -m venv /tmp/venv && /tmp/venv/bin/pip install gguf numpy
  /tmp/venv/bin/python tests/reference/make_gguf_export_fixtures.py

Writes tests/fixtures/gguf_export/quant_input.f32 (raw little-endian fp32), quant_q8_0.bin and
quant_q4_0.bin (gguf.quants.quantize's output bytes). The input mixes normal values, exact ties
(x * id landing on .5), zero blocks, blocks whose largest magnitude is negative or appears twice with
both signs, tiny and large values, so rounding and the choice of the scale are exercised."""
import os
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize

out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "gguf_export")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(15)
blocks = []
blocks.append(rng.standard_normal((40, 32)).astype(np.float32))           # ordinary weights
blocks.append((rng.standard_normal((8, 32)) * 1e-3).astype(np.float32))   # small
blocks.append((rng.standard_normal((4, 32)) * 300).astype(np.float32))    # large
blocks.append(np.zeros((2, 32), np.float32))                              # all zero
b = np.arange(-16, 16, dtype=np.float32).reshape(1, 32) / 2                 # ties for both formats
blocks.append(b)
blocks.append((-b).copy())
t = rng.integers(-127, 128, (4, 32)).astype(np.float32); t[:, 0] = 127      # q8 exact and half steps
blocks.append(t); blocks.append(t + 0.5)
m = rng.standard_normal((4, 32)).astype(np.float32); m[:, 3] = -5; m[:, 9] = 5  # |max| twice, -first
blocks.append(m)
m2 = m.copy(); m2[:, 3] = 5; m2[:, 9] = -5
blocks.append(m2)
blocks.append(rng.uniform(-1, 1, (8, 32)).astype(np.float32) ** 3)
# Q4_0 in fp32: x * id = 3.4999998 (fp32) + 8.5 rounds to 12.0 in fp32 (q = 12), where a double sum truncates to 11
# (a block of bf16 weights from `finetune init` that an fp64 quantizer got wrong)
blocks.append(np.array([[-0.02956375, -0.01871871, 0.01747733, 0.00597038, -0.01231526, 0.00605482, -0.01156505,
                         -0.00451077, 0.00377313, -0.04256275, 0.01961067, -0.01650936, -0.03750188, 0.03459819,
                         0.00310468, 0.02124517, 0.02619368, 0.02993177, -0.01102946, -0.0183344, -0.03991985,
                         -0.01831808, 0.00764628, -0.00567115, -0.03614675, 0.01535855, 0.04278563, 0.00829908,
                         -0.00150343, -0.00273029, -0.02730631, 0.02419445]], np.float32))
blocks.append(-blocks[-1])
x = np.concatenate(blocks).reshape(-1, 64)  # rows of 64: two blocks a row
x.astype("<f4").tofile(os.path.join(out, "quant_input.f32"))
for name, q in (("q8_0", T.Q8_0), ("q4_0", T.Q4_0)):
    quantize(x, q).tofile(os.path.join(out, f"quant_{name}.bin"))
print(x.size, "values")
