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
