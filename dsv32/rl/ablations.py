"""GRPO presets and ablations from one SFT checkpoint, with per-step curves (SPEC section 4).

Runs (each starts from the same SFT weights, the same seed and therefore the same task plan):
- `v3.2`: all four fixes, length penalty on;
- `speciale`: all four fixes, length penalty off (relaxed length);
- `no-unbiased-kl`: v3.2 with the plain k3 KL estimate;
- `no-opsm`: v3.2 without off-policy sequence masking, with stale rollouts (mu = 4 updates per batch);
- `opsm-mu4`: its control, v3.2 with the same stale rollouts (mu = 4) and OPSM on;
- `no-keep-mask`: v3.2 sampling with top_p = 0.9 but without the keep sampling mask.
Each run writes its `grpo_metrics.jsonl`; then pass@1 and mean output length on held-out reasoning and
calculator tasks (greedy) give the accuracy vs output-length point of each run. Curves (one PNG per
metric, one line per run): reward (mean over the task kinds of the step), KL, |r - 1| before the
first update, OPSM-masked fraction, response length; plus `tradeoff.png` (pass@1 vs length).
`summary.json` holds the final and mean values per run and the v3.2 vs speciale trade-off.

Length budget: the presets' budget (64 tokens, penalty 1 at 128) is written for the `small` size's
96-token outputs; at a size whose max_new_tokens is below it the penalty could never fire, so the
driver scales it to the run: budget = max_new_tokens / 2, limit = max_new_tokens (only v3.2 and the
ablations use it; speciale has the penalty off). At the `tiny` size a 1.3M-parameter model trained
for seconds shows how the switches move the curves (|r - 1|, OPSM fraction, KL), not which preset
learns the tasks better: its pass@1 numbers are noise-level.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from dsv32.checkpoint import save_checkpoint
from dsv32.data.io import atomic_write, atomic_write_text
from dsv32.rl.evaluate import heldout_tasks, pass_at_1
from dsv32.rl.grpo import TASK_KINDS, GRPORunConfig, run_grpo
from dsv32.rl.presets import ablation, grpo_preset
from dsv32.rl.recipe import SIZES, fresh_model, load_init, sft_config

log = logging.getLogger(__name__)

# Per-size scale of the ablation runs. The tiny scale keeps groups small, outputs short and the mix
# to reasoning tasks to finish in minutes on a shared 2-core CPU; `small` is the headline scale
# (mixed reasoning and calculator tool episodes).
SCALES = {
    "tiny": dict(steps=3, prompts=2, group=4, max_new=24, eval_r=8, eval_c=2, task_mix={"reasoning": 1.0}),
    "small": dict(
        steps=30,
        prompts=8,
        group=8,
        max_new=96,
        eval_r=64,
        eval_c=24,
        task_mix={"reasoning": 0.5, "calc": 0.5},
    ),
}

# name -> (preset variant, ablation, updates per rollout batch mu)
RUNS: dict[str, tuple[str, str, int]] = {
    "v3.2": ("v3.2", "none", 1),
    "speciale": ("speciale", "none", 1),
    "no-unbiased-kl": ("v3.2", "no-unbiased-kl", 1),
    "no-opsm": ("v3.2", "no-opsm", 4),
    "opsm-mu4": ("v3.2", "none", 4),
    "no-keep-mask": ("v3.2", "no-keep-mask", 1),
}
CURVES = {
    "reward": "reward (mean over task kinds)",
    "kl": "KL estimate per action token",
    "abs_ratio_dev_before_update": "|r - 1| before the first update",
    "opsm_masked_fraction": "OPSM-masked fraction of sequences",
    "opsm_would_mask_fraction": "fraction meeting the OPSM criterion (masked only with OPSM on)",
    "length": "response length (sampled tokens)",
}


def run_config(name: str, steps: int, size: str = "tiny", seed: int = 0) -> GRPORunConfig:
    """The GRPO config of one named run at `size` (see the module docstring)."""
    if name not in RUNS:
        raise ValueError(f"ablation run must be one of {sorted(RUNS)}, got {name!r}")
    if size not in SCALES:
        raise ValueError(f"size must be one of {sorted(SCALES)}, got {size!r}")
    s = SCALES[size]
    variant, which, mu = RUNS[name]
    cfg = grpo_preset(
        variant,
        steps=steps,
        mu=mu,
        prompts_per_step=s["prompts"],
        group_size=s["group"],
        max_new_tokens=s["max_new"],
        task_mix=dict(s["task_mix"]),
        seed=seed,
    )
    if cfg.reward.length_budget >= cfg.max_new_tokens:
        budget = max(1, cfg.max_new_tokens // 2)
        reward = dataclasses.replace(cfg.reward, length_budget=budget, length_limit=cfg.max_new_tokens)
        cfg = dataclasses.replace(cfg, reward=reward)
    return ablation(cfg, which)


def step_curves(history: list[dict]) -> dict[str, list[float]]:
    """Per-step series of the CURVES metrics from `run_grpo`'s records."""
    out: dict[str, list[float]] = {key: [] for key in CURVES}
    for rec in history:
        rewards = [rec[f"reward/{k}"] for k in TASK_KINDS if f"reward/{k}" in rec]
        lengths = [rec[f"length/{k}"] for k in TASK_KINDS if f"length/{k}" in rec]
        out["reward"].append(sum(rewards) / len(rewards))
        out["length"].append(sum(lengths) / len(lengths))
        for key in ("kl", "abs_ratio_dev_before_update", "opsm_masked_fraction", "opsm_would_mask_fraction"):
            out[key].append(float(rec[key]))
    return out


def make_sft_checkpoint(out_dir: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Cold-start SFT as in the recipe (fresh preset model, BPE on the SFT text) into `out_dir`."""
    from dsv32.rl.sft import run_sft
    from dsv32.rl.sft_data import cold_start_mix

    examples = cold_start_mix(SIZES[size]["examples"], seed)
    model, tokenizer = fresh_model(size, examples, seed)
    out = Path(out_dir)
    # save_checkpoint replaces the directory, so the metrics are written beside it and moved in after
    metrics = out.with_name(f".{out.name}.sft_metrics.jsonl")
    metrics.unlink(missing_ok=True)
    run_sft(model, tokenizer, examples, sft_config(size, seed), metrics)
    save_checkpoint(model, model.config, out)
    tokenizer.save(out / "tokenizer.json")
    metrics.replace(out / "sft_metrics.jsonl")
    torch.set_grad_enabled(True)
    return out


def run_ablations(
    sft_dir: str | Path,
    out_dir: str | Path,
    size: str = "tiny",
    steps: int | None = None,
    runs: list[str] | None = None,
    seed: int = 0,
) -> dict:
    names = list(RUNS) if runs is None else runs
    for name in names:
        if name not in RUNS:
            raise ValueError(f"unknown ablation run {name!r}; choose from {sorted(RUNS)}")
    if size not in SCALES:
        raise ValueError(f"size must be one of {sorted(SCALES)}, got {size!r}")
    s = SCALES[size]
    steps = steps if steps is not None else s["steps"]
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    heldout_r, heldout_c = heldout_tasks(s["eval_r"], s["eval_c"], seed)
    results: dict[str, dict] = {}
    for name in names:
        start = time.perf_counter()
        cfg = run_config(name, steps, size, seed)
        model, tokenizer = load_init(sft_dir)
        metrics = out / name / "grpo_metrics.jsonl"
        metrics.unlink(missing_ok=True)
        history = run_grpo(model, tokenizer, cfg, metrics_path=metrics)
        heldout = pass_at_1(model, tokenizer, heldout_r, heldout_c, max_new_tokens=s["max_new"])
        torch.set_grad_enabled(True)
        curves = step_curves(history)
        results[name] = {
            "variant": RUNS[name][0],
            "ablation": RUNS[name][1],
            "curves": curves,
            "final": {key: values[-1] for key, values in curves.items()},
            "mean": {key: sum(values) / len(values) for key, values in curves.items()},
            "heldout": heldout,
            "accuracy": _accuracy(heldout),
            "output_length": _length(heldout),
            "config": {
                "mu": cfg.mu,
                "top_p": cfg.top_p,
                "loss": cfg.loss.to_dict(),
                "reward": cfg.reward.__dict__,
            },
            "seconds": round(time.perf_counter() - start, 1),
        }
        log.info("ablation %s: %s", name, results[name]["final"])
    summary = {"size": size, "steps": steps, "seed": seed, "sft": str(sft_dir), "runs": results}
    if "v3.2" in results and "speciale" in results:
        summary["tradeoff"] = {
            name: {"accuracy": results[name]["accuracy"], "output_length": results[name]["output_length"]}
            for name in ("v3.2", "speciale")
        }
    summary["plots"] = plot_curves(results, out)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _accuracy(heldout: dict) -> float:
    """Mean pass@1 over the held-out task kinds evaluated."""
    scores = [heldout[k] for k in TASK_KINDS if k in heldout]
    return sum(scores) / len(scores)


def _length(heldout: dict) -> float:
    lengths = [heldout[f"length/{k}"] for k in TASK_KINDS if f"length/{k}" in heldout]
    return sum(lengths) / len(lengths)


def plot_curves(results: dict[str, dict], out: Path) -> list[str]:
    """One PNG per curve (a line per run) and the accuracy vs length scatter; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for key, title in CURVES.items():
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for name, res in results.items():
            ys = res["curves"][key]
            ax.plot(range(len(ys)), ys, marker="o", markersize=3, label=name)
        ax.set_xlabel("GRPO step")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        written.append(_save(fig, out / f"{key}.png"))
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for name, res in results.items():
        ax.scatter(res["output_length"], res["accuracy"], label=name)
    ax.set_xlabel("held-out output length (tokens)")
    ax.set_ylabel("held-out pass@1")
    ax.legend(fontsize=7)
    written.append(_save(fig, out / "tradeoff.png"))
    plt.close(fig)
    return written


def _save(fig, path: Path) -> str:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    return path.name
