"""`dsv32 train sft`, `grpo`, `post-recipe` and `post-ablations` (verbs added to the train
group by `register_verbs(subparsers)`)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from dsv32.rl.compaction import TRAINING_STRATEGIES


def save_final(model, tokenizer, out: Path) -> None:
    """The final weights, config and tokenizer written into the run directory `out`, file by file
    (each atomically), so the metrics and checkpoints the run keeps there survive; `save_checkpoint`
    alone would replace the whole directory."""
    from dsv32.checkpoint import save_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    staged = save_checkpoint(model, model.config, out.with_name(f".{out.name}.final"))
    tokenizer.save(staged / "tokenizer.json")
    for entry in staged.iterdir():
        os.replace(entry, out / entry.name)
    staged.rmdir()


def _sft(args: argparse.Namespace) -> int:
    from dsv32.rl.recipe import load_init
    from dsv32.rl.sft import SFTConfig, run_sft
    from dsv32.rl.sft_data import cold_start_mix, read_jsonl
    from dsv32.train.distributed import init_distributed, shutdown

    model, tok = load_init(args.init)
    examples = read_jsonl(args.data) if args.data else cold_start_mix(args.examples, args.seed)
    cfg = SFTConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    out = Path(args.out)
    ctx = init_distributed("cpu")
    hist = run_sft(model, tok, examples, cfg, out / "sft_metrics.jsonl", ctx=ctx)
    if ctx.is_main:
        save_final(model, tok, out)
        print(json.dumps(hist[-1]))
    shutdown(ctx)
    return 0


def _task_mix_args(args: argparse.Namespace) -> dict:
    """GRPORunConfig fields from --task-mix / --env-dir / --env-levels / --max-turns /
    --context-strategy / --context-budget."""
    out: dict = {"max_turns": args.max_turns, **_context_args(args)}
    if args.env_dir:
        out["env_dir"] = args.env_dir
        out["env_levels"] = tuple(int(v) for v in args.env_levels.split(","))
    mix = args.task_mix or ("reasoning=1,calc=1,env=1" if args.env_dir else None)
    if mix:
        try:
            out["task_mix"] = {k.strip(): float(v) for k, v in (part.split("=") for part in mix.split(","))}
        except ValueError:
            raise SystemExit(f"--task-mix: expected KIND=WEIGHT[,KIND=WEIGHT...], got {mix!r}") from None
    return out


def _context_args(args: argparse.Namespace) -> dict:
    strategy = getattr(args, "context_strategy", "none")
    budget = getattr(args, "context_budget", None)
    if strategy == "none":
        return {}
    if budget is None:
        raise SystemExit(f"--context-strategy {strategy} needs --context-budget (tokens)")
    return {"context_strategy": strategy, "context_budget": budget}


def _grpo(args: argparse.Namespace) -> int:
    from dsv32.rl.grpo import run_grpo
    from dsv32.rl.presets import ablation, grpo_preset
    from dsv32.rl.recipe import load_init
    from dsv32.train.distributed import init_distributed, shutdown

    cfg = grpo_preset(
        args.preset,
        steps=args.steps,
        prompts_per_step=args.prompts,
        group_size=args.group,
        max_new_tokens=args.max_new_tokens,
        lr=args.lr,
        mu=args.mu,
        seed=args.seed,
        **_task_mix_args(args),
    )  # before loading: bad options fail fast
    model, tok = load_init(args.init)
    cfg = ablation(cfg, args.ablation)
    ctx = init_distributed("cpu")
    out = Path(args.out)
    hist = run_grpo(model, tok, cfg, ctx, out / "grpo_metrics.jsonl", run_dir=out, save_every=args.save_every)
    if ctx.is_main:
        save_final(model, tok, out)
        print(json.dumps(hist[-1]))
    shutdown(ctx)
    return 0


def _recipe(args: argparse.Namespace) -> int:
    from dsv32.rl.recipe import run_recipe

    result = run_recipe(args.out, args.size, args.init, args.preset, args.seed, args.env_dir)
    print(json.dumps({k: result[k] for k in ("pass_at_1_sft", "pass_at_1_grpo", "seconds")}))
    return 0


def _ablations(args: argparse.Namespace) -> int:
    from dsv32.rl.ablations import RUNS, make_sft_checkpoint, run_ablations

    runs = [r.strip() for r in args.runs.split(",") if r.strip()] if args.runs else list(RUNS)
    out = Path(args.out)
    sft = Path(args.sft) if args.sft else make_sft_checkpoint(out / "sft", args.size, args.seed)
    summary = run_ablations(sft, out, args.size, args.steps, runs, args.seed)
    rows = {name: {"accuracy": r["accuracy"], "output_length": r["output_length"], **r["final"]}
            for name, r in summary["runs"].items()}  # fmt: skip
    print(json.dumps(rows))
    return 0


def register_verbs(sub) -> None:
    p = sub.add_parser(
        "sft", help="cold-start SFT, loss on assistant tokens only (torchrun for several processes)"
    )
    p.add_argument(
        "--init", required=True, help="checkpoint or training run (latest checkpoint), with tokenizer.json"
    )
    p.add_argument("--data", help="SFT JSONL (default: generate the cold-start mix)")
    p.add_argument("--examples", type=int, default=2000)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_sft)
    p = sub.add_parser("grpo", help="GRPO with the DeepSeek-V3.2 fixes (torchrun for several processes)")
    p.add_argument(
        "--init", required=True, help="checkpoint or training run (latest checkpoint), with tokenizer.json"
    )
    # Names spelled out so the parser needs no torch; a test holds them to rl.presets' VARIANTS and
    # ABLATIONS (and --runs below to rl.ablations.RUNS).
    p.add_argument("--preset", default="v3.2", choices=("v3.2", "speciale"))
    p.add_argument(
        "--ablation",
        default="none",
        choices=("none", "no-unbiased-kl", "no-opsm", "no-keep-mask", "no-keep-routing"),
    )
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate (constant)")
    p.add_argument("--mu", type=int, default=1, help="updates per rollout batch (> 1: stale rollouts)")
    p.add_argument("--max-turns", type=int, default=3, help="assistant turns per tool episode")
    p.add_argument(
        "--task-mix", default=None, help="e.g. reasoning=0.4,calc=0.3,env=0.3 (default: reasoning=1,calc=1)"
    )
    p.add_argument("--env-dir", default=None, help="synthesized environments (dsv32 envs synth) for kind env")
    p.add_argument("--env-levels", default="1,2,3", help="levels of the environment tasks trained on")
    p.add_argument(
        "--context-strategy",
        default="none",
        choices=TRAINING_STRATEGIES,
        help="context management inside calc/env episodes: compact and continue as a new sequence",
    )
    p.add_argument(
        "--context-budget",
        type=int,
        default=None,
        help="tokens of an episode's sequence above which --context-strategy compacts it",
    )
    p.add_argument(
        "--save-every", type=int, default=10, help="checkpoint every N steps (0: never); --out resumes"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run directory (resumes if it has checkpoints)")
    p.set_defaults(func=_grpo)
    p = sub.add_parser("post-recipe", help="SFT then GRPO with pass@1 before and after")
    p.add_argument("--size", default="tiny", choices=("tiny", "small"))
    p.add_argument(
        "--init", help="pretrained checkpoint or training run (latest checkpoint), with tokenizer.json"
    )
    p.add_argument("--preset", default="v3.2", choices=("v3.2", "speciale"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env-dir", default=None, help="synthesized environments to add to SFT, GRPO and pass@1")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_recipe)
    p = sub.add_parser(
        "post-ablations", help="GRPO presets and ablations from one SFT checkpoint, with curves"
    )
    p.add_argument("--sft", help="SFT checkpoint with tokenizer.json (default: run the cold-start SFT first)")
    p.add_argument("--size", default="tiny", choices=("tiny", "small"))
    p.add_argument("--steps", type=int, help="GRPO steps per run (default: the size's)")
    p.add_argument(
        "--runs", help="comma-separated subset of v3.2,speciale,no-unbiased-kl,no-opsm,opsm-mu4,no-keep-mask"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_ablations)


def register(parser: argparse.ArgumentParser) -> None:
    """Standalone group (for use before the verbs are hooked into `dsv32 train`)."""
    register_verbs(parser.add_subparsers(title="verbs", metavar="verb"))
