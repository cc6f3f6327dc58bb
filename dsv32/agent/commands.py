"""`dsv32 agent ...`: evaluate a model on the search environment, build it, serve the scripted policy."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from dsv32.agent.context import parse_strategies


def register(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="verb")

    ev = verbs.add_parser("eval", help="accuracy of an OpenAI-compatible model per context strategy")
    ev.add_argument("--env", choices=["search"], default="search", help="the environment (default: search)")
    ev.add_argument("--strategies", default="all", help="`all` or a comma-separated list of: none, summary, "
                    "discard-75, discard-all, parallel-fewest-step")  # fmt: skip
    ev.add_argument(
        "--base-url", required=True, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1"
    )
    ev.add_argument("--model", required=True, help="model name sent with each request")
    ev.add_argument("--api-key", default=None, help="API key (default: $OPENAI_API_KEY, else 'EMPTY')")
    _env_args(ev)
    ev.add_argument("--env-path", default=None, help="load a saved environment (from `build-env`) instead")
    ev.add_argument("--limit", type=int, default=None, help="evaluate only the first N questions")
    ev.add_argument("--max-steps", type=int, default=50, help="step budget per question (default 50)")
    ev.add_argument(
        "--context-window", type=int, default=32768, help="context window in tokens (default 32768)"
    )
    ev.add_argument(
        "--threshold", type=float, default=0.8, help="share of the window that triggers a strategy"
    )
    ev.add_argument("--parallel-n", type=int, default=4, help="runs of parallel-fewest-step (default 4)")
    ev.add_argument("--concurrency", type=int, default=4, help="questions run at once (default 4)")
    ev.add_argument("--tokenizer", default=None, help="tokenizer.json (or its directory) for exact token "
                    "counts; default: an estimate of UTF-8 bytes / 4 of the encoded prompt")  # fmt: skip
    ev.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default 300)")
    ev.add_argument("--max-retries", type=int, default=4, help="retries per request on endpoint errors")
    ev.add_argument("--temperature", type=float, default=None, help="sampling temperature sent with requests")
    ev.add_argument("--max-tokens", type=int, default=None, help="max_tokens sent with requests")
    ev.add_argument("--out", default="runs/agent-eval", help="output directory (default runs/agent-eval)")
    ev.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    ev.set_defaults(func=run_eval)

    build = verbs.add_parser(
        "build-env", help="generate the search environment and save it as one SQLite file"
    )
    _env_args(build)
    build.add_argument("--out", required=True, help="output file, e.g. search.sqlite")
    build.set_defaults(func=run_build_env)

    serve = verbs.add_parser(
        "serve-scripted", help="serve the deterministic scripted search policy (for demos)"
    )
    serve.add_argument("--port", type=int, default=8011, help="port on 127.0.0.1 (default 8011)")
    serve.set_defaults(func=run_serve_scripted)


def _env_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--docs", type=int, default=10_000, help="documents in the corpus (default 10000)")
    p.add_argument("--questions", type=int, default=500, help="questions (default 500)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")


def _positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def run_eval(args: argparse.Namespace) -> int:
    from openai import OpenAI

    from dsv32.agent.context import TokenizerCounter
    from dsv32.agent.evaluate import EvalConfig, evaluate, format_table
    from dsv32.agent.search_env import SearchEnvironment

    strategies = parse_strategies(args.strategies)
    for noisy in ("httpx", "httpx2"):  # one INFO line per request drowns the report
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("--max-steps", "--context-window", "--parallel-n", "--concurrency", "--timeout", "--limit"):
        _positive(name, getattr(args, name[2:].replace("-", "_")))
    if not 0 < args.threshold <= 1:
        raise ValueError(f"--threshold must be in (0, 1], got {args.threshold}")
    counter = None
    if args.tokenizer:
        from dsv32.tokenizer import Tokenizer

        counter = TokenizerCounter(Tokenizer.load(args.tokenizer))
    start = time.perf_counter()
    env = (
        SearchEnvironment.load(args.env_path)
        if args.env_path
        else SearchEnvironment.build(args.docs, args.questions, args.seed)
    )
    built_s = time.perf_counter() - start
    questions = env.questions[: args.limit] if args.limit else env.questions
    client = OpenAI(
        base_url=args.base_url,
        api_key=args.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
        max_retries=0,  # the agent retries with its own backoff and records failures
        timeout=args.timeout,
    )
    request_kwargs = {}
    if args.temperature is not None:
        request_kwargs["temperature"] = args.temperature
    if args.max_tokens is not None:
        request_kwargs["max_tokens"] = args.max_tokens
    config = EvalConfig(
        strategies=tuple(strategies),
        max_steps=args.max_steps,
        context_window=args.context_window,
        threshold=args.threshold,
        parallel_n=args.parallel_n,
        concurrency=args.concurrency,
        max_retries=args.max_retries,
    )
    report = evaluate(
        env, client, args.model, config, args.out, questions=questions, token_counter=counter,
        request_kwargs=request_kwargs,
    )  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"search environment: {len(env.documents)} documents, {len(questions)} questions, {built_s:.1f} s"
        )
        print(format_table(report))
        print(f"report: {Path(args.out) / 'report.json'}  plot: {Path(args.out) / 'accuracy_vs_steps.png'}")
    return 0


def run_build_env(args: argparse.Namespace) -> int:
    from dsv32.agent.search_env import SearchEnvironment

    start = time.perf_counter()
    env = SearchEnvironment.build(args.docs, args.questions, args.seed)
    built_s = time.perf_counter() - start
    path = env.save(args.out)
    hops: dict[int, int] = {}
    for q in env.questions:
        hops[len(q.doc_ids)] = hops.get(len(q.doc_ids), 0) + 1
    print(f"built {len(env.documents)} documents, {len(env.questions)} questions in {built_s:.2f} s: {path}")
    print("questions by documents needed: " + ", ".join(f"{k}: {v}" for k, v in sorted(hops.items())))
    return 0


def run_serve_scripted(args: argparse.Namespace) -> int:
    from dsv32.agent.scripted import ScriptedServer
    from dsv32.agent.scripted_search import SearchPolicy

    server = ScriptedServer(SearchPolicy(), port=args.port).start()
    print(f"scripted search policy at {server.base_url} (model name: scripted); Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()
