"""`dsv32 demo`: run the whole recipe end to end on a preset and write the report."""

from __future__ import annotations

import argparse
from pathlib import Path

from dsv32.demo.runner import RunContext, run_stages


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["tiny", "small"], default="tiny", help="model and data sizes")
    parser.add_argument("--out", default="runs/demo", help="run directory (a rerun skips finished stages)")
    parser.add_argument(
        "--only", default=None, help="comma-separated stage names to run (others must be done)"
    )
    parser.add_argument("--force", action="store_true", help="rerun the selected stages even if finished")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from dsv32.demo.stages import STAGES
    from dsv32.report import write_report

    out = Path(args.out)
    ctx = RunContext(out_dir=out, preset=args.preset, seed=args.seed)
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    run_stages(STAGES, ctx, only=only, force=args.force)
    paths = write_report(out, title=f"dsv32 demo ({args.preset})")
    print(f"report: {paths['md']}  {paths['html']}")
    return 0
