"""Loss-scale trajectory of PyTorch's GradScaler update (torch._amp_update_scale_, what GradScaler.update
calls) for a fixed pseudo-random pattern of overflow steps; tests/unit/test_lossscale.c replays it.
Run: /work/venv/bin/python tests/reference/make_lossscale_fixture.py > tests/fixtures/precision/lossscale.txt
Format: a header line "init growth_interval", then one line per step: found_inf scale_after good_steps_after."""
import random

import torch

init, interval = 65536.0, 5
rng = random.Random(7)
scale = torch.full((1,), init)
tracker = torch.zeros((1,), dtype=torch.int32)
print(f"{init:.1f} {interval}")
for step in range(120):
    # overflow bursts early (like the first fp16 steps), then rare
    found = 1 if (step < 4 or rng.random() < 0.08) else 0
    torch._amp_update_scale_(scale, tracker, torch.full((1,), float(found)), 2.0, 0.5, interval)
    print(found, f"{scale.item():.1f}", tracker.item())
