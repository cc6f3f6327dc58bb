"""Synthesis at scale: many environments in worker processes, then statistics.

Environment i gets category `categories[i % len(categories)]` and seed `env_seed(seed, category, i)`,
so the output depends only on (seed, n_envs, categories, k), never on worker count or scheduling.
Each worker builds and saves whole environments (atomic directory writes) and returns one record
per candidate task; the parent shows a progress bar, writes `summary.json` and `candidates.jsonl`,
and renders the per-category/level statistics and the difficulty table (stats.py).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from pathlib import Path

from dsv32.data.io import atomic_write_jsonl, atomic_write_text
from dsv32.envs.agents import make_agent
from dsv32.envs.categories import category_names, get_category
from dsv32.envs.format import save_environment
from dsv32.envs.synthesis import SynthOptions, env_seed, synthesize_environment
from dsv32.envs.tools import SandboxRunner

logger = logging.getLogger(__name__)


def plan(n_envs: int, categories: list[str], seed: int) -> list[tuple[str, str, int]]:
    """(env_id, category, env seed) for each environment, round-robin over categories."""
    if n_envs < 1:
        raise ValueError(f"--n-envs must be >= 1, got {n_envs}")
    unknown = [c for c in categories if c not in category_names()]
    if unknown or not categories:
        raise ValueError(f"unknown categories {unknown}; known: {category_names()}")
    out = []
    for i in range(n_envs):
        cat = categories[i % len(categories)]
        out.append((f"{cat}-{i:05d}", cat, env_seed(seed, cat, i)))
    return out


def _build_one(job: tuple) -> dict:
    env_id, cat_name, seed, out_dir, k, agent_spec, agent_model = job
    category = get_category(cat_name)
    agent = make_agent(agent_spec, agent_model)
    runner = getattr(category, "runner", None) or SandboxRunner()
    records = []
    for attempt in range(3):  # data that admits no gated task is regenerated from a derived seed
        env_s = seed if attempt == 0 else env_seed(seed, cat_name, attempt)
        env, db, tried = synthesize_environment(category, env_id, env_s, agent, SynthOptions(k=k), runner)
        records += tried
        if env.tasks:
            break
        db.close()
    path = save_environment(env, db, out_dir)
    db.close()
    manifest = json.loads((path / "manifest.json").read_text())
    return {
        "env_id": env_id,
        "category": cat_name,
        "n_tasks": len(env.tasks),
        "db_sha256": manifest["db_sha256"],
        "tool_additions": env.tool_additions,
        "records": records,
        "sandbox_runs": runner.runs,
    }


def run_jobs(jobs: list[tuple], workers: int) -> Iterator[dict]:
    if workers <= 1:
        yield from map(_build_one, jobs)
        return
    # fork: workers inherit the imported package, so they start instantly
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(workers) as pool:
        yield from pool.imap_unordered(_build_one, jobs, chunksize=2)


def synthesize_many(
    out_dir: str | Path,
    n_envs: int,
    seed: int = 0,
    workers: int | None = None,
    k: int = 4,
    categories: list[str] | None = None,
    agent: str | None = None,
    agent_model: str | None = None,
    progress: bool = True,
) -> dict:
    """Synthesize `n_envs` environments into `out_dir`; returns the summary (also saved)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    categories = categories or category_names()
    workers = workers or min(os.cpu_count() or 1, 2)
    jobs = [
        (env_id, cat, s, str(out_dir), k, agent, agent_model)
        for env_id, cat, s in plan(n_envs, categories, seed)
    ]
    start = time.monotonic()
    results = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="env", desc="synthesizing", dynamic_ncols=True)
    tasks = 0
    for result in run_jobs(jobs, workers):
        results.append(result)
        tasks += result["n_tasks"]
        if bar is not None:
            bar.update(1)
            bar.set_postfix(tasks=tasks)
    if bar is not None:
        bar.close()
    elapsed = time.monotonic() - start
    results.sort(key=lambda r: r["env_id"])
    records = [rec for r in results for rec in r["records"]]
    atomic_write_jsonl(out_dir / "candidates.jsonl", records, sort_keys=True)
    summary = {
        "n_envs": len(results),
        "n_tasks": sum(r["n_tasks"] for r in results),
        "distinct_databases": len({r["db_sha256"] for r in results}),
        "envs_with_tasks": sum(1 for r in results if r["n_tasks"]),
        "seed": seed,
        "k": k,
        "workers": workers,
        "agent": agent or "baseline",
        "categories": categories,
        "seconds": round(elapsed, 1),
        "sandbox_runs": sum(r["sandbox_runs"] for r in results),
        "tool_additions": sum(len(r["tool_additions"]) for r in results),
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1))
    logger.info(
        "synthesized %d environments, %d tasks in %.1fs", summary["n_envs"], summary["n_tasks"], elapsed
    )
    return summary


def load_candidates(out_dir: str | Path) -> list[dict]:
    path = Path(out_dir) / "candidates.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `dsv32 envs synth --out {out_dir}` first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
