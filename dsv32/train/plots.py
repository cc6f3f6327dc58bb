"""PNG plots of a recipe run (matplotlib, Agg backend): losses per stage, indexer recall over the
warm-up, and accuracy per task for each evaluated model."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x] if path.exists() else []


def _series(records: list[dict], kind: str, key: str) -> tuple[list[int], list[float]]:
    picked = [r for r in records if r.get("kind") == kind and key in r]
    return [r["step"] for r in picked], [r[key] for r in picked]


def plot_recipe(out_dir: Path, stage_dirs: dict[str, Path], results: dict[str, dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = []
    metrics = {name: read_metrics(d) for name, d in stage_dirs.items()}

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(*_series(metrics.get("pretrain", []), "train", "lm_loss"), label="dense pretraining")
    axes[0].set(title="dense pretraining", xlabel="step", ylabel="LM loss")
    axes[1].plot(*_series(metrics.get("warmup", []), "train", "indexer_kl"), label="warm-up")
    axes[1].set(title="indexer warm-up (dense attention)", xlabel="step", ylabel="indexer KL", yscale="log")
    for name, label in (("sparse", "sparse after warm-up"), ("sparse_no_warmup", "sparse, no warm-up")):
        axes[2].plot(*_series(metrics.get(name, []), "train", "lm_loss"), label=label)
    axes[2].set(title="sparse training", xlabel="step", ylabel="LM loss")
    for ax in axes:
        ax.legend() if ax.get_legend_handles_labels()[0] else None
    fig.tight_layout()
    path = out_dir / "losses.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, label in (("warmup", "warm-up"), ("sparse", "sparse (after warm-up)"),
                        ("sparse_no_warmup", "sparse (no warm-up)")):  # fmt: skip
        steps, recall = _series(metrics.get(name, []), "recall", "recall")
        if steps:
            ax.plot(steps, recall, marker="o", label=label)
    steps, oracle = _series(metrics.get("warmup", []), "recall", "oracle_recall")
    if steps:
        ax.plot(steps, oracle, "k--", label="oracle (top-k of the attention itself)")
    ax.set(
        title="indexer recall (dense attention mass in top-k)", xlabel="step", ylabel="recall", ylim=(0, 1.02)
    )
    ax.legend()
    fig.tight_layout()
    path = out_dir / "recall.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    if results:
        labels = list(results)
        tasks = sorted({(t, n) for r in results.values() for t, by in r["accuracy"].items() for n in by})
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks)), 4))
        width = 0.8 / len(labels)
        for i, label in enumerate(labels):
            values = [100 * results[label]["accuracy"].get(t, {}).get(n, 0.0) for t, n in tasks]
            ax.bar([j + i * width for j in range(len(tasks))], values, width, label=label)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], [f"{t}\n@{n}" for t, n in tasks])
        ax.set(title="exact-match accuracy", ylabel="%", ylim=(0, 100))
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / "accuracy.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
