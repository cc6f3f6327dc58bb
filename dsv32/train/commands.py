"""`dsv32 train ...`: the stages (pretrain, dsa-warmup, dsa-sparse), the headline recipe, and the
fp32-vs-bf16 step benchmark. Stage configs are JSON (flat, or recipe-style with `common` +
`stages`), with `--set key=value` overrides (dotted keys for nested fields) and a few explicit flags
that win over both."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FLAG_KEYS = (
    "steps",
    "lr",
    "seq_len",
    "batch_size",
    "grad_accum",
    "preset",
    "index_topk",
    "autocast",
    "parallel",
)


def cmd_stage(args: argparse.Namespace) -> int:
    from dsv32.train.config import load_stage_config
    from dsv32.train.runner import train_stage

    overrides = list(args.set or [])
    for key in FLAG_KEYS:
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    cfg = load_stage_config(args.config, args.stage, overrides)
    if args.stage != "pretrain" and args.init_from is None and not (Path(args.out) / "checkpoints").is_dir():
        raise ValueError(f"{args.stage} starts from a trained model: pass --init-from RUN_DIR")
    result = train_stage(cfg, args.out, init_from=args.init_from, device=args.device)
    last = result.metrics[-1] if result.metrics else {}
    summary = {
        "run_dir": str(result.run_dir),
        "checkpoint": str(result.checkpoint),
        "steps_run": len(result.metrics),
        **{k: last[k] for k in ("step", "loss", "lm_loss", "indexer_kl", "tokens_per_s", "mfu") if k in last},
        **({"val_loss": result.final_eval["val_loss"]} if result.final_eval else {}),
    }
    print(json.dumps(summary))
    return 0


def cmd_recipe(args: argparse.Namespace) -> int:
    from dsv32.train.recipe import run_recipe

    summary = run_recipe(args.recipe, args.out, args.set, ablation=not args.no_ablation)
    print((Path(args.out) / "results.md").read_text())
    print(
        json.dumps(
            {"results": str(Path(args.out) / "results.json"), "stage_seconds": summary["stage_seconds"]}
        )
    )
    return 0


def _print_comparison(header: tuple[str, ...], rows: list[tuple], verdict: str, result: dict) -> None:
    """A two-variant table (first column the variant, numbers after), a verdict line, then JSON."""
    print(f"{header[0]:16s}" + "".join(f" {h:>12s}" for h in header[1:]))
    for name, *values in rows:
        print(f"{name:16s}" + "".join(f" {v:12.4f}" for v in values))
    print(verdict)
    print(json.dumps(result))


def cmd_bench_precision(args: argparse.Namespace) -> int:
    from dsv32.train.bench import compare_precision

    r = compare_precision(args.preset, args.seq_len, args.batch_size, args.repeats, args.attention)
    rows = [("fp32", r["fp32_seconds"]), ("bf16", r["bf16_seconds"])]
    verdict = f"bf16 / fp32 = {r['bf16_over_fp32']:.2f} ({r['faster']} is faster)"
    _print_comparison(("precision", "seconds/step"), rows, verdict, r)
    return 0


def cmd_bench_head(args: argparse.Namespace) -> int:
    from dsv32.train.bench import compare_output_head

    r = compare_output_head(args.preset, args.seq_len, args.batch_size, args.supervised, args.repeats)
    rows = [
        ("all positions", r["all_positions_seconds"], r["loss_all_positions"]),
        ("supervised only", r["supervised_only_seconds"], r["loss_supervised_only"]),
    ]
    _print_comparison(("output head", "seconds/step", "loss"), rows, f"speedup {r['speedup']:.2f}x", r)
    return 0


def cmd_bench_kernels(args: argparse.Namespace) -> int:
    from dsv32.train.bench import compare_sparse_form, compare_value_padding

    pad = compare_value_padding(args.preset, args.seq_len, args.repeats)
    rows = [("V unpadded", pad["unpadded_seconds"]), ("V padded", pad["padded_seconds"])]
    verdict = f"speedup {pad['speedup']:.2f}x, largest difference {pad['max_abs_difference']:.2e}"
    _print_comparison(("SDPA fwd+bwd", "seconds"), rows, verdict, pad)
    form = compare_sparse_form(args.preset, args.seq_len, args.batch_size, args.repeats)
    rows = [("absorbed", form["absorbed_seconds"], form["loss_absorbed"]),
            ("MHA form", form["mha_seconds"], form["loss_mha"])]  # fmt: skip
    _print_comparison(("sparse step", "seconds/step", "loss"), rows, f"speedup {form['speedup']:.2f}x", form)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from dsv32.bench.common import parse_lengths
    from dsv32.train.probe import ProbeConfig, parse_curriculum, run_probe

    curriculum = parse_curriculum(args.curriculum) if args.curriculum else None
    eval_lens = parse_lengths(args.eval_lens, "--eval-lens") if args.eval_lens else None
    cfg = ProbeConfig(task=args.task, preset=args.preset, seq_len=args.seq_len, batch_size=args.batch_size,
                      steps=args.steps, lr=args.lr, initializer_range=args.init_range, tie_head=args.tie_head,
                      curriculum=curriculum, log_every=args.log_every, seed=args.seed,
                      max_files=args.max_files, eval_lens=eval_lens, split_digits=args.split_digits,
                      eval_samples=args.eval_samples, n_pairs=args.n_pairs, kv_queries=args.kv_queries,
                      model_overrides=_model_sets(args.model_set))  # fmt: skip
    print(f"{'step':>6s} {'context':>8s} {'answer loss':>12s} {'accuracy':>9s} {'exact':>7s} "
          f"{'p0':>6s} {'p1':>6s} {'p2':>6s} {'seconds':>8s}")  # fmt: skip

    def cell(r: dict, key: str, width: int, digits: int = 3) -> str:
        return f"{'-' if r.get(key) is None else format(r[key], f'.{digits}f'):>{width}s}"

    def show(r: dict) -> None:  # a training window, or a held-out length at the end ("eval")
        evaluated = "eval_seq_len" in r
        head = f"{'eval':>6s} {r['eval_seq_len']:8d}" if evaluated else f"{r['step']:6d} {r['seq_len']:8d}"
        cells = [cell(r, "loss", 12, 4), cell(r, "accuracy", 9), cell(r, "exact_match", 7)]
        cells += [cell(r, k, 6) for k in ("p0", "p1", "p2")] + [cell(r, "seconds", 8, 1)]
        print(head, *cells, flush=True)

    history = run_probe(cfg, args.cache_dir, progress=show)
    print(json.dumps({"config": vars(cfg), "history": history}))
    return 0


def _span(text: str) -> tuple[int, int]:
    from dsv32.bench.common import parse_lengths

    values = parse_lengths(text, "--span")
    if len(values) != 2:
        raise ValueError(f"--span must be MIN,MAX (two integers), got {text!r}")
    return values[0], values[1]


def _model_sets(texts: list[str]) -> dict:
    """`--model-set key=value` flags as a dict of ModelConfig changes (values parsed as JSON)."""
    from dsv32.train.config import parse_override

    out = {}
    for text in texts:
        path, value = parse_override(text)
        if len(path) != 1:
            raise ValueError(f"--model-set {text!r}: the key must be one ModelConfig field")
        out[path[0]] = value
    return out


def cmd_probe_induction(args: argparse.Namespace) -> int:
    from dsv32.train.induction_probe import InductionProbeConfig, run_induction_probe

    cfg = InductionProbeConfig(preset=args.preset, layers=args.layers or None,
                               archs=tuple(a.strip() for a in args.archs.split(",") if a.strip()),
                               n_symbols=args.symbols, span=_span(args.span), seq_len=args.seq_len,
                               batch_size=args.batch_size, steps=args.steps, lr=args.lr,
                               initializer_range=args.init_range, tie_head=args.tie_head,
                               yarn=not args.no_yarn, abs_positions=args.abs_positions,
                               reference_init_range=args.reference_init_range,
                               model_overrides=_model_sets(args.model_set), log_every=args.log_every,
                               seed=args.seed)  # fmt: skip
    print(f"{'step':>6s} " + " ".join(f"{a + ' copy loss':>22s} {'accuracy':>9s}" for a in cfg.archs))

    def show(r):
        cells = " ".join(f"{r[a]['copy_loss']:22.4f} {r[a]['copy_accuracy']:9.3f}" for a in cfg.archs)
        print(f"{r['step']:6d} {cells}", flush=True)

    result = run_induction_probe(cfg, progress=show)
    print(f"no-copy plateau ln({cfg.n_symbols}) = {result['plateau']}; first step 0.1 below it: "
          + ", ".join(f"{a} {s}" for a, s in result["escape_step"].items()))  # fmt: skip
    print(json.dumps({"config": vars(cfg), **result}))
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(title="verbs", metavar="verb")
    helps = {
        "pretrain": "dense pretraining (LM loss, MoE bias balancing)",
        "dsa-warmup": "indexer warm-up: dense attention, only indexers train (KL to the attention)",
        "dsa-sparse": "sparse training: top-k attention, LM loss + indexer KL over the selected set",
    }
    for stage, text in helps.items():
        p = sub.add_parser(stage, help=text)
        p.add_argument("--config", type=Path, default=None, help="JSON config (flat or recipe-style)")
        p.add_argument(
            "--out", type=Path, required=True, help="run directory (resumes if it has checkpoints)"
        )
        p.add_argument(
            "--init-from", type=Path, default=None, help="run or checkpoint directory to start from"
        )
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
        p.add_argument("--steps", type=int)
        p.add_argument("--lr", type=float)
        p.add_argument("--seq-len", type=int)
        p.add_argument("--batch-size", type=int, help="per rank and micro-batch")
        p.add_argument("--grad-accum", type=int)
        p.add_argument("--preset", choices=("tiny", "small", "deepseek-v3.2"))
        p.add_argument("--index-topk", type=int)
        p.add_argument("--autocast", choices=("none", "bf16"))
        p.add_argument("--parallel", choices=("ddp", "fsdp"), help="under torchrun")
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
        p.set_defaults(func=cmd_stage, stage=stage)

    p = sub.add_parser(
        "recipe", help="the headline experiment: pretrain, warm-up, sparse, ablation, eval, plots"
    )
    p.add_argument("--recipe", default="tiny", help="tiny, small, or a recipe JSON path")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, e.g. stages.pretrain.steps=50 or common.seq_len=512")  # fmt: skip
    p.add_argument("--no-ablation", action="store_true", help="skip the sparse run without warm-up")
    p.set_defaults(func=cmd_recipe)

    p = sub.add_parser("bench-precision", help="fp32 vs bf16 autocast training-step time, side by side")
    p.add_argument("--preset", default="small", choices=("tiny", "small"))
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--attention", default="dense", choices=("dense", "sparse"))
    p.set_defaults(func=cmd_bench_precision)

    p = sub.add_parser(
        "bench-head", help="loss on a few tokens per row: output head at every position vs those only"
    )
    p.add_argument("--preset", default="small", choices=("tiny", "small"))
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--supervised", type=int, default=8, help="supervised tokens per row")
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(func=cmd_bench_head)

    p = sub.add_parser(
        "bench-kernels", help="attention kernels in training: SDPA V padding, sparse absorbed vs MHA form"
    )
    p.add_argument("--preset", default="small", choices=("tiny", "small"))
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(func=cmd_bench_kernels)

    p = sub.add_parser("probe-retrieval", help="how fast one long-context task is learned (exact match)")
    p.add_argument("--task", default="passkey")
    p.add_argument("--n-pairs", type=int, default=2, help="kv_recall: key-value pairs per sample")
    p.add_argument(
        "--kv-queries",
        type=int,
        default=1,
        help="kv_recall: keys asked per training row, 1 to --n-pairs (held-out samples ask one)",
    )
    p.add_argument("--preset", default="small", choices=("tiny", "small"))
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--init-range", type=float, default=0.05, help="initializer_range of the fresh model")
    p.add_argument("--tie-head", action="store_true", help="tie_word_embeddings: the head is the embedding")
    p.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a ModelConfig change, e.g. kv_lora_rank=128 (repeatable)")  # fmt: skip
    p.add_argument(
        "--curriculum",
        default=None,
        help="phases SEQ_LENxBATCH:STEPS,... run in order (replaces --seq-len/--batch-size/--steps)",
    )
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default="runs/cache", help="tokenizer cache (trained on first use)")
    p.add_argument("--max-files", type=int, default=None, help="stdlib files for the tokenizer")
    p.add_argument("--split-digits", action="store_true", help="tokenizer with one digit per token")
    p.add_argument("--eval-lens", default=None, help="context lengths for a held-out exact match at the end")
    p.add_argument("--eval-samples", type=int, default=64, help="held-out samples per --eval-lens length")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("probe-induction", help="steps until copying forms: dsv32 vs a plain transformer")
    p.add_argument("--preset", default="small", choices=("tiny", "small"))
    p.add_argument("--layers", type=int, default=2, help="depth of both models (0: the preset's)")
    p.add_argument("--archs", default="dsv32,reference", help="comma-separated subset of dsv32,reference")
    p.add_argument("--symbols", type=int, default=64, help="alphabet of the random spans")
    p.add_argument("--span", default="8,32", help="MIN,MAX length of the random spans (default 8,32)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--init-range", type=float, default=0.05, help="initializer_range of the dsv32 model")
    p.add_argument("--tie-head", action="store_true", help="dsv32 model: output head tied to the embedding")
    p.add_argument("--no-yarn", action="store_true", help="dsv32 model: plain RoPE (no YaRN scaling)")
    p.add_argument("--abs-positions", action="store_true",
                   help="dsv32 model: add learned absolute positions (not in DeepSeek-V3.2)")  # fmt: skip
    p.add_argument(
        "--reference-init-range",
        type=float,
        default=None,
        help="reference model: Normal(0, this) for every matrix instead of PyTorch's defaults",
    )
    p.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                   help="dsv32 model: a ModelConfig change, e.g. kv_lora_rank=256 (repeatable)")  # fmt: skip
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_probe_induction)
    from dsv32.rl.commands import register_verbs  # post-training verbs: sft, grpo, post-recipe

    register_verbs(sub)
