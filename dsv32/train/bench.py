"""fp32 vs bf16 autocast training-step speed on this machine, side by side in one run.

Each repeat times one forward + backward of the same batch in fp32 and then under
`torch.autocast(dtype=bfloat16)`, alternating, so both see the same machine load; the median of
each is reported with the ratio bf16 / fp32 (below 1 means bf16 is faster). The optimizer step is
left out: it runs in fp32 either way.
"""

from __future__ import annotations

import statistics
import time

import torch

from dsv32.config import preset
from dsv32.model.transformer import build_model


def _step_seconds(model, ids: torch.Tensor, bf16: bool, attention: str) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(ids, attention=attention)
        loss = model.lm_loss(out.logits, ids.roll(-1, 1))
    loss.backward()
    return time.perf_counter() - start


def compare_precision(
    preset_name: str = "small",
    seq_len: int = 512,
    batch_size: int = 1,
    repeats: int = 3,
    attention: str = "dense",
) -> dict:
    config = preset(preset_name)
    model = build_model(config, seed=0)
    ids = torch.randint(
        0, config.vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0)
    )
    _step_seconds(model, ids, False, attention)  # warm-up of both paths
    _step_seconds(model, ids, True, attention)
    fp32, bf16 = [], []
    for _ in range(repeats):
        fp32.append(_step_seconds(model, ids, False, attention))
        bf16.append(_step_seconds(model, ids, True, attention))
    t32, t16 = statistics.median(fp32), statistics.median(bf16)
    return {
        "preset": preset_name,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "attention": attention,
        "threads": torch.get_num_threads(),
        "fp32_seconds": t32,
        "bf16_seconds": t16,
        "bf16_over_fp32": t16 / t32,
        "faster": "bf16" if t16 < t32 else "fp32",
    }
