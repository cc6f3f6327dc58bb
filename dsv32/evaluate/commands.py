"""`dsv32 eval ...`: checkpoints side by side, on long-context tasks or on held-out post-training
tasks (pass@1)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _labels(args: argparse.Namespace) -> list[str]:
    labels = args.label or [Path(c).name for c in args.checkpoint]
    if len(labels) != len(args.checkpoint):
        raise ValueError(f"got {len(labels)} --label values for {len(args.checkpoint)} --checkpoint values")
    if len(set(labels)) != len(labels):
        raise ValueError(f"checkpoint labels must differ, got {labels}; name them with --label")
    return labels


def cmd_pass_at_1(args: argparse.Namespace) -> int:
    from dsv32.bench.common import format_table
    from dsv32.data.io import atomic_write_json
    from dsv32.rl.env_tasks import env_tasks
    from dsv32.rl.evaluate import heldout_tasks, pass_at_1
    from dsv32.rl.recipe import load_init

    labels = _labels(args)
    if min(args.reasoning, args.calc, args.env) < 0 or args.max_new_tokens < 1:
        raise ValueError("--reasoning, --calc and --env must be >= 0 and --max-new-tokens >= 1")
    reasoning, calc = heldout_tasks(args.reasoning, args.calc, args.seed)
    env = env_tasks(args.env_dir, "heldout")[: args.env] if args.env_dir else []
    if not (reasoning or calc or env):
        raise ValueError("nothing to evaluate: give --reasoning or --calc > 0, or --env-dir")
    results = {}
    for label, checkpoint in zip(labels, args.checkpoint):
        model, tokenizer = load_init(checkpoint)
        results[label] = pass_at_1(
            model, tokenizer, reasoning, calc, args.max_new_tokens, attention=args.attention, env=env
        )
    metrics = list(dict.fromkeys(k for r in results.values() for k in r))
    print(format_table(["metric", *labels], [[k, *(results[x].get(k, "") for x in labels)] for k in metrics]))
    if args.json:
        atomic_write_json(args.json, results)
        print(f"wrote {args.json}")
    print(json.dumps(results))
    return 0


def cmd_long_context(args: argparse.Namespace) -> int:
    from dsv32.data.io import atomic_write_json
    from dsv32.evaluate.longctx import EvalSettings, compare_table, evaluate_checkpoint

    labels = _labels(args)
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
        atomic_write_json(args.json, results)
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

    p = sub.add_parser(
        "pass-at-1", help="greedy pass@1 on the post-training recipe's held-out tasks, side by side"
    )
    p.add_argument(
        "--checkpoint", action="append", required=True,
        help="checkpoint or run directory with tokenizer.json (repeat)",
    )  # fmt: skip
    p.add_argument("--label", action="append", help="column name per checkpoint (repeat)")
    p.add_argument("--reasoning", type=int, default=128, help="held-out reasoning tasks (default 128)")
    p.add_argument("--calc", type=int, default=24, help="held-out calculator episodes (default 24)")
    p.add_argument("--env-dir", default=None, help="synthesized environments: also their held-out tasks")
    p.add_argument("--env", type=int, default=24, help="held-out environment tasks (default 24)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="per turn (default 96, the recipe's)")
    p.add_argument("--attention", choices=("dense", "sparse"), default="dense")
    p.add_argument("--seed", type=int, default=0, help="the recipe's seed (held-out sets depend on it)")
    p.add_argument("--json", type=Path, default=None, help="also write all results as JSON")
    p.set_defaults(func=cmd_pass_at_1)
