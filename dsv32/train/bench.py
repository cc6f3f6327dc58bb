"""Training-step speed variants on this machine, each pair side by side in one run.

- `compare_precision`: fp32 vs `torch.autocast(dtype=bfloat16)`.
- `compare_output_head`: a loss on a few tokens per row (long-context answers) with the output head
  applied to every position vs only to the supervised ones (`forward(logits_at=)`).

Each repeat times one forward + backward of the same batch in both variants, alternating, so both
see the same machine load; the medians are reported with their ratio. The optimizer step is left
out: it is the same either way.
"""

from __future__ import annotations

import statistics
import time

import torch

from dsv32.config import preset
from dsv32.model.transformer import build_model


def _step_seconds(model, ids: torch.Tensor, bf16: bool, attention: str, mask=None, logits_at=None):
    """(seconds, loss) of one forward + backward."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(ids, attention=attention, logits_at=logits_at)
        loss = model.lm_loss(out.logits, ids.roll(-1, 1), mask)
    loss.backward()
    return time.perf_counter() - start, float(loss.detach())


def _alternate(repeats: int, first, second) -> tuple[list, list]:
    """Run the two timed callables once each as warm-up, then `repeats` times alternating."""
    first(), second()
    a, b = [], []
    for _ in range(repeats):
        a.append(first())
        b.append(second())
    return a, b


def _run_facts(preset_name: str, seq_len: int, batch_size: int, attention: str) -> dict:
    return {"preset": preset_name, "seq_len": seq_len, "batch_size": batch_size, "attention": attention,
            "threads": torch.get_num_threads()}  # fmt: skip


def _random_ids(config, batch_size: int, seq_len: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, config.vocab_size, (batch_size, seq_len), generator=gen)


def compare_precision(
    preset_name: str = "small",
    seq_len: int = 512,
    batch_size: int = 1,
    repeats: int = 3,
    attention: str = "dense",
) -> dict:
    config = preset(preset_name)
    model = build_model(config, seed=0)
    ids = _random_ids(config, batch_size, seq_len)
    fp32, bf16 = _alternate(
        repeats,
        lambda: _step_seconds(model, ids, False, attention),
        lambda: _step_seconds(model, ids, True, attention),
    )
    t32, t16 = statistics.median(t for t, _ in fp32), statistics.median(t for t, _ in bf16)
    return {
        **_run_facts(preset_name, seq_len, batch_size, attention),
        "fp32_seconds": t32,
        "bf16_seconds": t16,
        "bf16_over_fp32": t16 / t32,
        "faster": "bf16" if t16 < t32 else "fp32",
    }


def compare_output_head(
    preset_name: str = "small",
    seq_len: int = 2048,
    batch_size: int = 1,
    supervised: int = 8,
    repeats: int = 3,
    attention: str = "dense",
) -> dict:
    """Full-vocabulary logits at every position vs at the `supervised` last positions of each row
    (the answer + EOS of a long-context task row). Also returns both losses, which must agree."""
    if not 1 <= supervised <= seq_len:
        raise ValueError(f"supervised must be in [1, seq_len={seq_len}], got {supervised}")
    config = preset(preset_name)
    model = build_model(config, seed=0)
    ids = _random_ids(config, batch_size, seq_len)
    mask = torch.zeros(batch_size, seq_len, dtype=torch.bool)
    mask[:, seq_len - supervised - 1 : seq_len - 1] = True  # targets ids[t + 1], inside the row
    full, picked = _alternate(
        repeats,
        lambda: _step_seconds(model, ids, False, attention, mask),
        lambda: _step_seconds(model, ids, False, attention, mask, logits_at=mask),
    )
    t_full, t_picked = statistics.median(t for t, _ in full), statistics.median(t for t, _ in picked)
    return {
        **_run_facts(preset_name, seq_len, batch_size, attention),
        "supervised_per_row": supervised,
        "all_positions_seconds": t_full,
        "supervised_only_seconds": t_picked,
        "speedup": t_full / t_picked,
        "loss_all_positions": full[-1][1],
        "loss_supervised_only": picked[-1][1],
    }
