"""Turn a demo run directory into `report.md` and a self-contained `report.html`.

The demo writes one JSON file per finished stage (`stages/<name>.json`). This module reads them,
draws the plots with matplotlib (PNG files beside the report; the HTML embeds them as base64 so it
opens anywhere on its own) and writes one summary table. A plot whose data is missing is left out
with a line saying so, never drawn empty.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsv32.config import atomic_write_text

log = logging.getLogger(__name__)


def load_stage_results(run_dir: Path) -> dict[str, dict]:
    results = {}
    for path in sorted((run_dir / "stages").glob("*.json")):
        try:
            results[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"stage result {path} is not valid JSON: {err}") from err
    return results


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    ax.grid(alpha=0.3)
    return plt, fig, ax


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_loss_per_stage(results: dict, path: Path) -> Path | None:
    curves = {name: r["loss_curve"] for name, r in results.items() if r.get("loss_curve")}
    if not curves:
        return None
    plt, fig, ax = _figure()
    for name, curve in curves.items():
        steps, losses = zip(*curve)
        ax.plot(steps, losses, label=name)
    ax.set(xlabel="step", ylabel="loss", title="Training loss per stage")
    ax.legend()
    return _save(plt, fig, path)


def plot_indexer_recall(results: dict, path: Path) -> Path | None:
    curve = results.get("dsa_warmup", {}).get("recall_curve")
    if not curve:
        return None
    plt, fig, ax = _figure()
    steps, recall = zip(*curve)
    ax.plot(steps, recall, marker="o")
    ax.set(
        xlabel="warm-up step",
        ylabel="indexer recall",
        title="Dense attention mass inside the top-k",
        ylim=(0, 1),
    )
    return _save(plt, fig, path)


def plot_long_context(results: dict, path: Path) -> Path | None:
    table = results.get("long_context_eval", {}).get("accuracy")  # {model: {task: {length: acc}}}
    if not table:
        return None
    plt, fig, ax = _figure()
    for model, tasks in table.items():
        for task, by_len in tasks.items():
            lengths = sorted(by_len, key=int)
            ax.plot(
                [int(x) for x in lengths], [by_len[x] for x in lengths], marker="o", label=f"{model}: {task}"
            )
    ax.set(
        xlabel="context length (tokens)",
        ylabel="exact-match accuracy",
        title="Dense vs sparse",
        ylim=(-0.02, 1.02),
    )
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_attention_cost(results: dict, path: Path) -> Path | None:
    bench = results.get("attention_cost", {})
    rows = bench.get("rows")  # [{"phase", "context", "dense_ms", "dsa_ms"}]
    if not rows:
        return None
    plt, fig, ax = _figure()
    for phase in sorted({r["phase"] for r in rows}):
        sel = sorted((r for r in rows if r["phase"] == phase), key=lambda r: r["context"])
        ctx = [r["context"] for r in sel]
        ax.plot(ctx, [r["dense_ms"] for r in sel], marker="o", label=f"{phase}: dense")
        ax.plot(ctx, [r["dsa_ms"] for r in sel], marker="s", linestyle="--", label=f"{phase}: DSA")
    ax.set(xscale="log", yscale="log", xlabel="context length", ylabel="ms per token", title="Attention cost")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_rl_rewards(results: dict, path: Path) -> Path | None:
    curves = results.get("grpo", {}).get("reward_curves")  # {task_type: [[step, reward], ...]}
    if not curves:
        return None
    plt, fig, ax = _figure()
    for task, curve in curves.items():
        steps, rewards = zip(*curve)
        ax.plot(steps, rewards, label=task)
    ax.set(xlabel="GRPO step", ylabel="mean reward", title="RL reward per task type")
    ax.legend()
    return _save(plt, fig, path)


def plot_strategies(results: dict, path: Path) -> Path | None:
    table = results.get("agent_eval", {}).get("accuracy")  # {env: {strategy: accuracy}}
    if not table:
        return None
    plt, fig, ax = _figure()
    envs = list(table)
    strategies = sorted({s for env in table.values() for s in env})
    width = 0.8 / max(1, len(envs))
    for i, env in enumerate(envs):
        xs = [j + i * width for j in range(len(strategies))]
        ax.bar(xs, [table[env].get(s, 0.0) for s in strategies], width=width, label=env)
    ax.set_xticks([j + width * (len(envs) - 1) / 2 for j in range(len(strategies))], strategies, fontsize=8)
    ax.set(ylabel="accuracy", title="Agent accuracy per context strategy", ylim=(0, 1))
    ax.legend()
    return _save(plt, fig, path)


def plot_env_stats(results: dict, path: Path) -> Path | None:
    per_category = results.get("env_synthesis", {}).get("tasks_per_category")
    if not per_category:
        return None
    plt, fig, ax = _figure()
    names = sorted(per_category)
    ax.barh(names, [per_category[n] for n in names])
    ax.set(xlabel="verified tasks", title="Synthesized environments: tasks per category")
    return _save(plt, fig, path)


PLOTS: list[tuple[str, str, Callable[[dict, Path], Path | None]]] = [
    ("loss", "Loss per stage", plot_loss_per_stage),
    ("indexer_recall", "Indexer recall during the dense warm-up", plot_indexer_recall),
    ("long_context", "Dense vs sparse accuracy per context length", plot_long_context),
    ("attention_cost", "Attention cost curves", plot_attention_cost),
    ("rl_rewards", "RL reward curves", plot_rl_rewards),
    ("strategies", "Accuracy per context strategy", plot_strategies),
    ("env_stats", "Environment statistics", plot_env_stats),
]


def summary_rows(results: dict[str, dict]) -> list[tuple[str, str, str]]:
    """(stage, seconds, headline) for each finished stage, in run order."""
    rows = []
    for name, r in sorted(results.items(), key=lambda kv: kv[1].get("order", 0)):
        rows.append((name, f"{r.get('seconds', 0):.1f}", str(r.get("headline", ""))))
    return rows


def write_report(run_dir: str | Path, title: str = "dsv32 demo report") -> dict[str, Path]:
    """Write report.md, report.html and the plot PNGs into run_dir. Returns their paths."""
    run_dir = Path(run_dir)
    results = load_stage_results(run_dir)
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, Path | None]] = []
    for key, caption, draw in PLOTS:
        try:
            figures.append((caption, draw(results, plot_dir / f"{key}.png")))
        except (KeyError, TypeError, ValueError) as err:  # malformed stage data: report it, keep going
            log.warning("plot %s skipped: %s", key, err)
            figures.append((caption, None))
    rows = summary_rows(results)

    md = [f"# {title}", "", "| stage | seconds | result |", "|---|---:|---|"]
    md += [f"| {name} | {secs} | {headline} |" for name, secs, headline in rows]
    for caption, path in figures:
        md += ["", f"## {caption}", ""]
        md.append(f"![{caption}](plots/{path.name})" if path else "_no data for this plot in this run_")
    atomic_write_text(run_dir / "report.md", "\n".join(md) + "\n")

    body = [f"<h1>{html.escape(title)}</h1>", "<table><tr><th>stage</th><th>seconds</th><th>result</th></tr>"]
    body += [
        f"<tr><td>{html.escape(n)}</td><td>{s}</td><td>{html.escape(h)}</td></tr>" for n, s, h in rows
    ] + ["</table>"]
    for caption, path in figures:
        body.append(f"<h2>{html.escape(caption)}</h2>")
        if path:
            data = base64.b64encode(path.read_bytes()).decode()
            body.append(f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">')
        else:
            body.append("<p><em>no data for this plot in this run</em></p>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}"
        "img{max-width:100%}"
    )
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )
    atomic_write_text(run_dir / "report.html", page)
    return {"md": run_dir / "report.md", "html": run_dir / "report.html", "plots": plot_dir}


def stage_result_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
