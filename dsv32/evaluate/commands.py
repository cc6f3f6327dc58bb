"""`dsv32 eval ...`: long-context evaluation of checkpoints side by side."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_long_context(args: argparse.Namespace) -> int:
    from dsv32.evaluate.longctx import EvalSettings, compare_table, evaluate_checkpoint, write_json

    labels = args.label or [Path(c).name for c in args.checkpoint]
    if len(labels) != len(args.checkpoint):
        raise ValueError(f"got {len(labels)} --label values for {len(args.checkpoint)} --checkpoint values")
    attentions = args.attention or ["auto"] * len(args.checkpoint)
    if len(attentions) == 1:
        attentions = attentions * len(args.checkpoint)
    if len(attentions) != len(args.checkpoint):
        raise ValueError("give one --attention for all checkpoints or one per checkpoint")
    settings = EvalSettings(
        context_lens=args.context_len, tasks=args.task, n_samples=args.n, val_rows=args.val_rows,
        batch_size=args.batch_size, index_topk=args.index_topk, needle=args.needle,
    )  # fmt: skip
    results = {
        label: evaluate_checkpoint(ckpt, attention, settings)
        for label, ckpt, attention in zip(labels, args.checkpoint, attentions)
    }
    print(compare_table(results))
    if args.json:
        write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    from dsv32.data.longctx import TASKS

    sub = parser.add_subparsers(title="verbs", metavar="verb")
    p = sub.add_parser("long-context", help="exact match per task and length, val loss, indexer recall")
    p.add_argument(
        "--checkpoint", action="append", required=True, help="run or checkpoint directory (repeat)"
    )
    p.add_argument("--label", action="append", help="column name per checkpoint (repeat)")
    p.add_argument(
        "--attention", action="append", choices=("auto", "dense", "sparse"),
        help="per checkpoint, or once for all (auto: sparse for dsa-sparse checkpoints)",
    )  # fmt: skip
    p.add_argument("--context-len", type=int, action="append", help="sample length in tokens (repeat)")
    p.add_argument("--task", action="append", choices=TASKS, help="tasks (default: the run's)")
    p.add_argument("--n", type=int, default=None, help="samples per task and length")
    p.add_argument("--val-rows", type=int, default=None, help="validation rows for the loss")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--index-topk", type=int, default=None, help="sparse top-k (default: checkpoint's)")
    p.add_argument(
        "--needle", action="store_true",
        help="per layer: is the needle in the top-k where the answer is read, and the best head's mass on it",
    )  # fmt: skip
    p.add_argument("--json", type=Path, default=None, help="also write all results as JSON")
    p.set_defaults(func=cmd_long_context)
