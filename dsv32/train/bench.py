"""Training-step speed variants on this machine, each pair side by side in one run.

- `compare_precision`: fp32 vs `torch.autocast(dtype=bfloat16)`.
- `compare_output_head`: a loss on a few tokens per row (long-context answers) with the output head
  applied to every position vs only to the supervised ones (`forward(logits_at=)`).
- `compare_value_padding`: one layer's MHA-form SDPA with V at its own width (dv < dn + dr, which
  sends PyTorch's CPU SDPA to its unfused math path) vs V zero-padded to the Q/K width (its flash
  kernel), as `MLA.mha` does.
- `compare_sparse_form`: sparse (DSA) training steps with the selection attended in absorbed form
  (`sparse_impl="masked"`) vs as an SDPA mask in MHA form (`"mha"`).

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


def _step_seconds(model, ids: torch.Tensor, bf16: bool, attention: str, mask=None, logits_at=None,
                  sparse_impl: str = "auto"):  # fmt: skip
    """(seconds, loss) of one forward + backward."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(ids, attention=attention, logits_at=logits_at, sparse_impl=sparse_impl)
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


def compare_value_padding(preset_name: str = "small", seq_len: int = 2048, repeats: int = 3) -> dict:
    """Causal SDPA forward + backward at one layer's MHA shapes, V unpadded vs padded (outputs and
    gradients agree; returned as their largest difference)."""
    config = preset(preset_name)
    h, dv = config.num_attention_heads, config.v_head_dim
    dqk = config.qk_nope_head_dim + config.qk_rope_head_dim
    if dv >= dqk:
        raise ValueError(f"preset {preset_name!r} has v_head_dim {dv} >= q/k width {dqk}: nothing to pad")
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, h, seq_len, dqk, generator=gen, requires_grad=True) for _ in range(2))
    v = torch.randn(1, h, seq_len, dv, generator=gen, requires_grad=True)

    def step(pad: bool):
        for x in (q, k, v):
            x.grad = None
        start = time.perf_counter()
        value = torch.nn.functional.pad(v, (0, dqk - dv)) if pad else v
        out = torch.nn.functional.scaled_dot_product_attention(q, k, value, is_causal=True)[..., :dv]
        out.square().sum().backward()
        return time.perf_counter() - start, [out.detach()] + [x.grad for x in (q, k, v)]

    plain, padded = _alternate(repeats, lambda: step(False), lambda: step(True))
    t_plain, t_padded = statistics.median(t for t, _ in plain), statistics.median(t for t, _ in padded)
    diff = max(float((a - b).abs().max()) for a, b in zip(plain[-1][1], padded[-1][1]))
    return {
        "preset": preset_name, "seq_len": seq_len, "heads": h, "qk_width": dqk, "v_width": dv,
        "threads": torch.get_num_threads(), "unpadded_seconds": t_plain, "padded_seconds": t_padded,
        "speedup": t_plain / t_padded, "max_abs_difference": diff,
    }  # fmt: skip


def compare_sparse_form(preset_name: str = "small", seq_len: int = 2048, batch_size: int = 1,
                        repeats: int = 3) -> dict:  # fmt: skip
    """Sparse-attention training step (forward + backward, LM loss) in absorbed vs MHA form."""
    config = preset(preset_name)
    if seq_len <= config.index_topk:
        raise ValueError(f"seq_len must exceed the preset's index_topk {config.index_topk} to be sparse")
    model = build_model(config, seed=0)
    ids = _random_ids(config, batch_size, seq_len)
    absorbed, mha = _alternate(
        repeats,
        lambda: _step_seconds(model, ids, False, "sparse", sparse_impl="masked"),
        lambda: _step_seconds(model, ids, False, "sparse", sparse_impl="mha"),
    )
    t_abs, t_mha = statistics.median(t for t, _ in absorbed), statistics.median(t for t, _ in mha)
    return {
        **_run_facts(preset_name, seq_len, batch_size, "sparse"),
        "absorbed_seconds": t_abs,
        "mha_seconds": t_mha,
        "speedup": t_abs / t_mha,
        "loss_absorbed": absorbed[-1][1],
        "loss_mha": mha[-1][1],
    }
