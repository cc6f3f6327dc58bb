"""The `dsv32` command: `dsv32 <group> <verb> [flags]`.

Thin by design: each group lives in its own module exposing `register(parser)`, which adds the
group's verbs, each verb setting `func` (called with the parsed namespace). A group's module is
imported only when that group is used, so `dsv32 envs ...` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# group name -> (module with register(parser), one-line help)
GROUPS: dict[str, tuple[str, str]] = {
    "model": ("dsv32.model.commands", "inspect model configs: parameters, cache bytes, FLOPs"),
    "envs": ("dsv32.envs.commands", "environment synthesis: synth, show, stats, trajectories, mcp"),
    "data": ("dsv32.data.commands", "stdlib corpus, tokenizer training, token shards, long-context samples"),
    "agent": ("dsv32.agent.commands", "tool-use agent: search-environment eval per context strategy"),
    "serve": ("dsv32.serve.commands", "OpenAI-compatible server on a checkpoint (chat page at /)"),
    "chat": ("dsv32.serve.chat_command", "chat with a checkpoint in the terminal (streams reasoning apart)"),
    "train": ("dsv32.train.commands", "pretrain, dsa-warmup, dsa-sparse stages; the headline recipe"),
    "eval": ("dsv32.evaluate.commands", "checkpoints side by side: long-context tasks, held-out pass@1"),
    "demo": ("dsv32.demo.commands", "the whole recipe end to end on a preset, resumable, with a report"),
    "generate": ("dsv32.engine.commands", "stream a completion from a checkpoint (DSA engine, paged cache)"),
    "bench": ("dsv32.bench.commands", "side-by-side benchmarks: attention cost curve, engine throughput"),
}


class UsageError(Exception):
    """Bad command-line input; printed as one line without a traceback."""


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsv32", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    groups = "\n".join(f"  {name:10s} {text}" for name, (_, text) in GROUPS.items())
    parser.add_argument("group", help=f"one of:\n{groups}", choices=sorted(GROUPS), metavar="group")
    parser.formatter_class = argparse.RawTextHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in ("-v", "--verbose") for a in argv)
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not argv or argv[0] not in GROUPS:
        _top_parser().parse_args(argv or ["--help"])
        return 2
    group, rest = argv[0], argv[1:]
    module_name, text = GROUPS[group]
    parser = argparse.ArgumentParser(prog=f"dsv32 {group}", description=text)
    importlib.import_module(module_name).register(parser)
    args = parser.parse_args(rest)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except (UsageError, ValueError, FileNotFoundError) as err:
        print(f"dsv32 {group}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
