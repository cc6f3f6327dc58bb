"""`dsv32 bench <name>`: the registry of benchmarks.

Adding a benchmark is one line in `BENCHMARKS`: name -> (module, help). The module provides
`add_arguments(parser)` and `run(args) -> int`, and keeps heavy imports inside its functions so
that listing the benchmarks stays cheap.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS: dict[str, tuple[str, str]] = {
    "attention": ("dsv32.bench.attention", "DSA vs dense MLA per-token cost at the official attention shape"),
    "engine": ("dsv32.bench.engine", "engine tokens/s vs transformers' generate on the small preset"),
    "server": ("dsv32.serve.bench", "HTTP server under concurrent streaming clients: tokens/s, TTFT p50/p99"),
    "grpo-trl": ("dsv32.bench.grpo_trl", "one GRPO optimisation step vs TRL GRPOTrainer; loss agreement"),
}


def register(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="benchmark")
    for name, (module_name, text) in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        sub = verbs.add_parser(name, help=text, description=text)
        module.add_arguments(sub)
        sub.set_defaults(func=module.run)
    _register_all(verbs)


def run_all(args: argparse.Namespace) -> int:
    """Run every registered benchmark (with `--quick` where it has one), each into `out/<name>`,
    collect the JSON line each prints last, and write `results.json` and `results.md`."""
    import contextlib
    import io
    import json
    from pathlib import Path

    from dsv32.config import atomic_write_text

    out = Path(args.out)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; expected names from {sorted(BENCHMARKS)}")
    results: dict[str, dict] = {}
    for name in names:
        module = importlib.import_module(BENCHMARKS[name][0])
        sub = argparse.ArgumentParser(prog=f"dsv32 bench {name}")
        module.add_arguments(sub)
        argv = ["--out", str(out / name)]
        if args.quick and any("--quick" in a.option_strings for a in sub._actions):
            argv.append("--quick")
        captured = io.StringIO()
        try:
            with contextlib.redirect_stdout(captured):
                code = module.run(sub.parse_args(argv))
            lines = [x for x in captured.getvalue().splitlines() if x.startswith("{")]
            results[name] = {
                "status": "ok" if not code else f"exit {code}",
                **(json.loads(lines[-1]) if lines else {}),
            }
        except Exception as err:  # one failing benchmark must not lose the others' results
            results[name] = {"status": f"failed: {type(err).__name__}: {err}"}
        print(captured.getvalue(), end="")
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    md = ["| benchmark | status | results |", "|---|---|---|"]
    for name, r in results.items():
        flat = {k: v for k, v in r.items() if k != "status"}
        md.append(f"| {name} | {r['status']} | `{json.dumps(flat, default=str)[:400]}` |")
    atomic_write_text(out / "results.md", "\n".join(md) + "\n")
    print(json.dumps({name: r["status"] for name, r in results.items()}))
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


def _register_all(verbs) -> None:
    sub = verbs.add_parser("all", help="every benchmark in one run; results.json and results.md")
    sub.add_argument("--out", default="bench_results", help="directory (one folder per benchmark)")
    sub.add_argument("--quick", action="store_true", help="pass --quick to benchmarks that have it")
    sub.add_argument("--only", default=None, help="comma-separated benchmark names")
    sub.set_defaults(func=run_all)
