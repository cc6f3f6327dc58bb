"""`dsv32 envs ...`: synthesize, inspect, trajectories, difficulty, MCP server."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="verb")
    synth = sub.add_parser(
        "synth", help="synthesize environments (builtin categories or, with --synthesizer, a model)"
    )
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--n-envs", type=int, default=20)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=None, help="worker processes (default: min(cpus, 2))")
    synth.add_argument("--k", type=int, default=4, help="reference-agent attempts for the pass@k gate")
    synth.add_argument("--categories", default=None, help="comma-separated subset of categories")
    synth.add_argument("--agent", default=None, help="'baseline' (default) or an OpenAI-compatible base URL")
    synth.add_argument("--agent-model", default=None)
    synth.add_argument(
        "--synthesizer", default=None, help="OpenAI-compatible base URL of a model that writes a new category"
    )
    synth.add_argument("--model", default=None, help="model name for --synthesizer")
    synth.add_argument("--topic", default="library book lending", help="category topic for --synthesizer")
    synth.add_argument("--no-progress", action="store_true")
    synth.set_defaults(func=_synth)

    show = sub.add_parser("show", help="validate an environment directory and print its manifest and tasks")
    show.add_argument("--env", required=True)
    show.set_defaults(func=_show)

    stats = sub.add_parser("stats", help="print the statistics and difficulty tables of a synthesis output")
    stats.add_argument("--out", required=True)
    stats.set_defaults(func=_stats)

    traj = sub.add_parser("trajectories", help="write expert trajectories (OpenAI messages) as JSONL")
    traj.add_argument("--env", required=True, help="an environment directory or a synthesis output directory")
    traj.add_argument("--output", required=True, help="JSONL file to write")
    traj.set_defaults(func=_trajectories)

    mcp = sub.add_parser("mcp", help="serve an environment's tools over MCP (stdio)")
    mcp.add_argument("--env", required=True)
    mcp.add_argument("--task", default=None, help="task id whose toolset to serve (default: all tools)")
    mcp.set_defaults(func=_mcp)


def _synth(args) -> int:
    from dsv32.envs.stats import category_level_table, difficulty_table

    if args.synthesizer:
        from dsv32.envs.model_synthesis import synthesize_with_model

        if not args.model:
            raise ValueError("--synthesizer needs --model NAME")
        result = synthesize_with_model(
            args.synthesizer,
            args.model,
            args.out,
            topic=args.topic,
            n_envs=args.n_envs,
            seed=args.seed,
            k=args.k,
        )
        print(json.dumps(result, indent=1))
        return 0 if result["n_tasks"] else 1
    from dsv32.envs.pipeline import load_candidates, synthesize_many

    cats = [c.strip() for c in args.categories.split(",")] if args.categories else None
    summary = synthesize_many(
        args.out,
        args.n_envs,
        seed=args.seed,
        workers=args.workers,
        k=args.k,
        categories=cats,
        agent=args.agent,
        agent_model=args.agent_model,
        progress=not args.no_progress,
    )
    records = load_candidates(args.out)
    print(category_level_table(records))
    print()
    print(difficulty_table(records))
    print()
    print(json.dumps(summary))
    return 0


def _show(args) -> int:
    from dsv32.envs.format import load_environment

    env = load_environment(args.env)
    print(f"{env.env_id}  category={env.category}  seed={env.seed}  source={env.source}")
    print(f"  {env.description}")
    print(f"  tools: {', '.join(s.name for s in env.tools)}")
    for add in env.tool_additions:
        print(f"  added at L{add['level']}: {add['tool']} ({add['reason']})")
    for task in env.tasks:
        print(f"  [{task.task_id}] L{task.level} gates={task.gates}\n    {task.instruction}")
    return 0


def _stats(args) -> int:
    from dsv32.envs.pipeline import load_candidates
    from dsv32.envs.stats import category_level_table, difficulty_table

    records = load_candidates(args.out)
    print(category_level_table(records))
    print()
    print(difficulty_table(records))
    return 0


def _trajectories(args) -> int:
    from dsv32.envs.format import list_environments
    from dsv32.envs.trajectories import write_trajectories

    n = write_trajectories(list_environments(args.env), Path(args.output))
    print(f"wrote {n} trajectories to {args.output}")
    return 0


def _mcp(args) -> int:
    from dsv32.envs.mcp_server import serve_stdio

    serve_stdio(args.env, args.task)
    return 0
