"""Evaluate a chat model on the search environment under each context strategy.

For every strategy and question one agent run is made with the full step budget; its trajectory is
written to `out/trajectories/<strategy>/<qid>.jsonl`. Reported per strategy: accuracy, mean steps,
mean prompt/completion tokens, mean context resets and the count of each end status.

Accuracy against step budget (the paper's figure) is derived from those runs rather than by
rerunning: a run under budget B is the prefix of the full run up to step B (the budget only ends
the loop), so it is correct iff the full run answered correctly within B steps. For
`parallel-fewest-step` with N runs, budget B means B // N steps per run (the x axis is total steps
over all runs): among the runs that answered within B // N steps, the one with the fewest steps is
graded. This holds exactly for a deterministic policy and in distribution for a sampled one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dsv32.agent.context import TokenCounter, make_strategy
from dsv32.agent.loop import Agent, RunResult
from dsv32.agent.search_env import Question, SearchEnvironment
from dsv32.agent.trajectory import write_jsonl
from dsv32.data.io import atomic_write, atomic_write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    strategies: tuple[str, ...]
    max_steps: int = 50
    context_window: int = 32768
    threshold: float = 0.8
    parallel_n: int = 4
    concurrency: int = 4
    max_retries: int = 4
    budgets: tuple[int, ...] = ()  # empty: eight evenly spaced budgets up to max_steps

    def budget_points(self) -> list[int]:
        if self.budgets:
            return sorted(set(self.budgets))
        return sorted({max(1, round(self.max_steps * i / 8)) for i in range(1, 9)})


def question_record(env: SearchEnvironment, q: Question, strategy: str, result: RunResult) -> dict[str, Any]:
    record = {
        "qid": q.qid,
        "strategy": strategy,
        "hops": len(q.doc_ids) - 1,
        "gold": q.answer,
        "answer": result.answer,
        "correct": env.grade(result.answer, q),
        "status": result.status,
        "steps": result.steps,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "resets": result.resets,
        "error": result.error,
    }
    if result.runs:
        record["runs"] = [
            {"status": r.status, "steps": r.steps, "correct": env.grade(r.answer, q)} for r in result.runs
        ]
    return record


def correct_within(record: dict[str, Any], budget: int, parallel_n: int) -> bool:
    """Whether the run counts as correct under a total step budget (see the module docstring)."""
    if "runs" not in record:
        return bool(record["correct"]) and record["steps"] <= budget
    per_run = budget // parallel_n
    done = [
        (r["steps"], i)
        for i, r in enumerate(record["runs"])
        if r["status"] == "answered" and r["steps"] <= per_run
    ]
    return bool(done) and bool(record["runs"][min(done)[1]]["correct"])


def summarize(records: Sequence[dict[str, Any]], config: EvalConfig) -> dict[str, Any]:
    n = len(records)
    if n == 0:
        raise ValueError("no results to summarise")
    return {
        "n": n,
        "accuracy": sum(r["correct"] for r in records) / n,
        "mean_steps": sum(r["steps"] for r in records) / n,
        "mean_prompt_tokens": sum(r["prompt_tokens"] for r in records) / n,
        "mean_completion_tokens": sum(r["completion_tokens"] for r in records) / n,
        "mean_resets": sum(r["resets"] for r in records) / n,
        "statuses": dict(sorted(Counter(r["status"] for r in records).items())),
        "accuracy_by_budget": {
            str(b): sum(correct_within(r, b, config.parallel_n) for r in records) / n
            for b in config.budget_points()
        },
    }


def evaluate(
    env: SearchEnvironment,
    client: Any,
    model: str,
    config: EvalConfig,
    out_dir: str | Path,
    *,
    questions: Sequence[Question] | None = None,
    token_counter: TokenCounter | None = None,
    request_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every strategy on the questions; write results, report.json and the plot into out_dir."""
    out = Path(out_dir)
    questions = list(env.questions if questions is None else questions)
    if not questions:
        raise ValueError("no questions to evaluate")
    tools = env.tools()
    all_records: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "env": env.meta,
        "model": model,
        "config": asdict(config),
        "counter": (token_counter.name if token_counter else "estimate: utf-8 bytes/4"),
        "strategies": {},
    }
    for name in config.strategies:
        strategy = make_strategy(name, parallel_n=config.parallel_n)

        def run_one(q: Question, name: str = name, strategy: Any = strategy) -> dict[str, Any]:
            agent = Agent(
                client,
                model,
                tools,
                strategy,
                config.max_steps,
                config.context_window,
                threshold=config.threshold,
                token_counter=token_counter,
                system_prompt=env.system_prompt,
                max_retries=config.max_retries,
                request_kwargs=request_kwargs,
            )
            result = agent.run(q.text, trajectory_path=out / "trajectories" / name / f"{q.qid}.jsonl")
            return question_record(env, q, name, result)

        with ThreadPoolExecutor(max_workers=max(1, config.concurrency)) as pool:
            records = list(pool.map(run_one, questions))
        all_records += records
        report["strategies"][name] = summarize(records, config)
        log.info("%s: accuracy %.3f", name, report["strategies"][name]["accuracy"])
    write_jsonl(out / "results.jsonl", all_records)
    atomic_write_json(out / "report.json", report, ensure_ascii=False)
    plot_accuracy_vs_budget(report, out / "accuracy_vs_steps.png")
    return report


def plot_accuracy_vs_budget(report: dict[str, Any], path: str | Path) -> Path:
    """PNG of accuracy against step budget, one line per strategy (written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, stats in report["strategies"].items():
        points = sorted((int(b), acc) for b, acc in stats["accuracy_by_budget"].items())
        ax.plot([b for b, _ in points], [100 * a for _, a in points], marker="o", label=name)
    cfg = report["config"]
    ax.set_xlabel("step budget (total steps; parallel-fewest-step: summed over its runs)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"{report['model']}: search, context window {cfg['context_window']} tokens", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of the per-strategy summary."""
    header = f"{'strategy':22s} {'accuracy':>8s} {'steps':>7s} {'prompt tok':>11s} {'resets':>7s}  statuses"
    lines = [header, "-" * len(header)]
    for name, s in report["strategies"].items():
        statuses = ", ".join(f"{k} {v}" for k, v in s["statuses"].items())
        lines.append(
            f"{name:22s} {100 * s['accuracy']:7.1f}% {s['mean_steps']:7.2f} {s['mean_prompt_tokens']:11.0f} "
            f"{s['mean_resets']:7.2f}  {statuses}"
        )
    return "\n".join(lines)
