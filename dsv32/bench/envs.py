"""`dsv32 bench envs`: environment-synthesis throughput, one worker vs two side by side.

Synthesizes the same plan of `--n` environments (every category, same seed) with 1 and with
`--workers` processes, interleaved repetition by repetition, and reports environments/s, tasks/s
and the parallel speedup. The outputs of the two runs must be identical (same environments, same
tasks), which the benchmark checks, so the speedup never hides a change of work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from dsv32.bench.common import format_table
from dsv32.data.io import atomic_write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=None, help="environments per run (default 100, quick 20)")
    p.add_argument("--workers", type=int, default=2, help="processes for the parallel side (default 2)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="20 environments, one repetition")
    p.add_argument("--out", default="bench_results/envs", help="directory for results.json")


def run(args: argparse.Namespace) -> int:
    from dsv32.envs.pipeline import load_candidates, synthesize_many

    n = args.n or (20 if args.quick else 100)
    reps = args.reps or (1 if args.quick else 3)
    if n < 1 or reps < 1 or args.workers < 2:
        raise ValueError("--n and --reps must be >= 1 and --workers >= 2")
    seconds: dict[int, list[float]] = {1: [], args.workers: []}
    outputs: dict[int, list[dict]] = {}
    summary: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(reps):
            for workers in seconds:
                out = Path(tmp) / f"w{workers}-r{rep}"
                start = time.perf_counter()
                summary = synthesize_many(out, n, seed=args.seed, workers=workers, progress=False)
                seconds[workers].append(time.perf_counter() - start)
                outputs[workers] = load_candidates(out)
    if outputs[1] != outputs[args.workers]:
        raise RuntimeError("1-worker and parallel synthesis produced different candidates")
    tasks = summary["n_tasks"]
    med = {w: statistics.median(s) for w, s in seconds.items()}
    rows = [[w, med[w], n / med[w], tasks / med[w]] for w in seconds]
    print(format_table(["workers", "seconds (median)", "envs/s", "tasks/s"], rows))
    result = {
        "envs": n,
        "tasks": tasks,
        "envs_per_s": {str(w): round(n / t, 2) for w, t in med.items()},
        "tasks_per_s": {str(w): round(tasks / t, 2) for w, t in med.items()},
        "parallel_speedup": round(med[1] / med[args.workers], 2),
        "reps": reps,
    }
    atomic_write_json(Path(args.out) / "results.json", result)
    print(json.dumps(result))
    return 0
