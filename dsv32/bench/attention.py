"""`dsv32 bench attention`: the cost curve of DSA vs dense MLA at DeepSeek-V3.2's attention shape.

One attention layer (128 heads, 512 + 64 latent, indexer 64 x 128, top-k 2048), per-token time:
- decode: one new token at context L (dense: absorbed/MQA form; DSA: indexer over all L keys, then
  absorbed attention over the k selected latent rows);
- prefill: a block of `--block` queries at positions L-block..L-1, time divided by the block
  (dense: MHA form; DSA: indexer + absorbed sparse attention per query).
The dense side is the faster of PyTorch SDPA and a blocked matmul + online-softmax kernel, measured
at every length. Both sides report achieved GFLOP/s next to the measured matmul peak of the compute
dtype. Compute dtype "auto" takes bf16 or fp32, whichever multiplies faster here (CPUs without bf16
units run bf16 matmuls far slower than fp32); the indexer runs in the same dtype (no fast FP8/int8
matmul on CPU), so the FLOP ratio to compare with is the bf16-indexer one. Measurements of the two
sides are interleaved repetition by repetition, and each is the median over `--reps`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from dsv32.bench.common import (
    format_table,
    keep_freed_memory,
    matmul_peak,
    parse_lengths,
    save_figure,
    set_threads,
)
from dsv32.data.io import atomic_write_json

log = logging.getLogger(__name__)

DECODE_LENGTHS = "4096,8192,16384,32768,65536,131072"
PREFILL_LENGTHS = "4096,8192,16384,32768"
QUICK_DECODE, QUICK_PREFILL = "4096,16384", "4096,8192"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--decode-lengths", default=None, help=f"comma-separated contexts (default {DECODE_LENGTHS})"
    )
    p.add_argument(
        "--prefill-lengths", default=None, help=f"comma-separated contexts (default {PREFILL_LENGTHS})"
    )
    p.add_argument(
        "--quick", action="store_true", help=f"short run: decode {QUICK_DECODE}, prefill {QUICK_PREFILL}"
    )
    p.add_argument("--block", type=int, default=64, help="prefill queries per measurement (default 64)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per measurement (default 3, quick 1)")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--preset", default="deepseek-v3.2", help="config whose attention shape is measured")
    p.add_argument("--out", default="bench_results/attention", help="directory for the PNG and JSON")


def _choose_dtype(name: str) -> tuple[torch.dtype, dict[str, float]]:
    peaks = {"fp32": matmul_peak(torch.float32, 1024)}
    peaks["bf16"] = matmul_peak(torch.bfloat16, 512, reps=1)
    if name == "auto":
        name = "bf16" if peaks["bf16"] >= peaks["fp32"] else "fp32"
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[name], peaks


def run(args: argparse.Namespace) -> int:
    from dsv32.bench import attention_kernels as K
    from dsv32.config import preset

    default_decode = QUICK_DECODE if args.quick else DECODE_LENGTHS
    default_prefill = QUICK_PREFILL if args.quick else PREFILL_LENGTHS
    decode_lengths = parse_lengths(args.decode_lengths or default_decode, "--decode-lengths")
    prefill_lengths = parse_lengths(args.prefill_lengths or default_prefill, "--prefill-lengths")
    reps = args.reps or (1 if args.quick else 3)
    if reps < 1 or args.block < 1:
        raise ValueError("--reps and --block must be >= 1")
    threads = set_threads(args.threads)
    keeps_freed = keep_freed_memory()  # both sides time arithmetic, not page faults
    shape = K.AttentionShape.from_config(preset(args.preset))
    if min(prefill_lengths) < max(args.block, shape.topk) + args.block:
        raise ValueError(f"--prefill-lengths must be >= top-k + block = {shape.topk + args.block}")
    dtype, peaks = _choose_dtype(args.dtype)
    dtype_name = "bf16" if dtype == torch.bfloat16 else "fp32"
    peak = peaks[dtype_name]
    log.info(
        "compute dtype %s (matmul peak fp32 %.1f, bf16 %.1f GFLOP/s), %d threads",
        dtype_name,
        peaks["fp32"],
        peaks["bf16"],
        threads,
    )
    rows = []
    for phase, lengths in (("decode", decode_lengths), ("prefill", prefill_lengths)):
        for length in lengths:
            rows.append(_measure(K, shape, phase, length, args.block, dtype, reps))
            r = rows[-1]
            log.info(
                "%s L=%d: dense %.4g s/token, DSA %.4g s/token, ratio %.2f",
                phase,
                length,
                r["dense_s"],
                r["dsa_s"],
                r["ratio"],
            )
    result = _summarise(rows, dtype_name, peaks, peak, threads, reps, args, shape)
    result["allocator_keeps_freed_memory"] = keeps_freed
    _report(rows, result, Path(args.out), peak)
    return 0


def _measure(K, shape, phase: str, length: int, block: int, dtype, reps: int) -> dict:
    queries = 1 if phase == "decode" else block
    x = K.make_inputs(shape, length, queries, dtype, seed=length, with_mha=phase == "prefill")
    if phase == "decode":
        q = x["q_abs"][0]
        dense = {
            "sdpa": lambda: K.dense_decode_sdpa(q, x["kv"], shape.kv_rank, shape.scale),
            "blocked": lambda: K.dense_decode_blocked(q, x["kv"], shape.kv_rank, shape.scale),
        }
        dense_flops = shape.dense_absorbed_flops(length)
    else:
        args = (x["q_mha"], x["k_mha"], x["v_mha"], x["mask"], shape.scale)
        dense = {
            "sdpa": lambda: K.dense_prefill_sdpa(*args),
            "blocked": lambda: K.dense_prefill_blocked(*args),
        }
        dense_flops = sum(shape.dense_mha_flops(int(p) + 1) for p in x["positions"])
    dsa_flops = sum(shape.dsa_flops(int(p) + 1) for p in x["positions"])
    times = {name: [] for name in dense} | {"dsa": [], "indexer": []}
    for fn in list(dense.values()) + [lambda: K.dsa(x, shape)]:  # warm-up
        fn()
    for _ in range(reps):
        for name, fn in dense.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        _, indexer_s = K.dsa(x, shape)
        times["dsa"].append(time.perf_counter() - start)
        times["indexer"].append(indexer_s)
    med = {k: sorted(v)[len(v) // 2] / queries for k, v in times.items()}
    best = min(dense, key=lambda k: med[k])
    return {
        "phase": phase,
        "length": length,
        "queries": queries,
        "dense_sdpa_s": med["sdpa"],
        "dense_blocked_s": med["blocked"],
        "dense_impl": best,
        "dense_s": med[best],
        "dsa_s": med["dsa"],
        "indexer_s": med["indexer"],
        "ratio": med[best] / med["dsa"],
        "indexer_share": med["indexer"] / med["dsa"],
        "flop_ratio": dense_flops / dsa_flops,
        "dense_gflops": dense_flops / queries / med[best] / 1e9,
        "dsa_gflops": dsa_flops / queries / med["dsa"] / 1e9,
    }


def _summarise(rows, dtype_name, peaks, peak, threads, reps, args, shape) -> dict:
    by = {ph: {str(r["length"]): r for r in rows if r["phase"] == ph} for ph in ("decode", "prefill")}
    return {
        "decode_ratio": {k: round(r["ratio"], 3) for k, r in by["decode"].items()},
        "prefill_ratio": {k: round(r["ratio"], 3) for k, r in by["prefill"].items()},
        "decode_flop_ratio": {k: round(r["flop_ratio"], 3) for k, r in by["decode"].items()},
        "prefill_flop_ratio": {k: round(r["flop_ratio"], 3) for k, r in by["prefill"].items()},
        "decode_indexer_share": {k: round(r["indexer_share"], 3) for k, r in by["decode"].items()},
        "prefill_indexer_share": {k: round(r["indexer_share"], 3) for k, r in by["prefill"].items()},
        "compute_dtype": dtype_name,
        "matmul_peak_gflops": {k: round(v, 2) for k, v in peaks.items()},
        "threads": threads,
        "reps": reps,
        "prefill_block": args.block,
        "preset": args.preset,
        "shape": {
            "heads": shape.heads,
            "latent": shape.latent,
            "index_heads": shape.index_heads,
            "index_dim": shape.index_dim,
            "topk": shape.topk,
        },
        "rows": rows,
    }


def _report(rows, result, out: Path, peak: float) -> None:
    headers = [
        "phase",
        "L",
        "dense s/tok",
        "impl",
        "DSA s/tok",
        "ratio",
        "FLOP ratio",
        "indexer %",
        "dense GF/s",
        "DSA GF/s",
        "% peak d/DSA",
    ]
    table = [
        [
            r["phase"],
            r["length"],
            r["dense_s"],
            r["dense_impl"],
            r["dsa_s"],
            r["ratio"],
            r["flop_ratio"],
            100 * r["indexer_share"],
            r["dense_gflops"],
            r["dsa_gflops"],
            f"{100 * r['dense_gflops'] / peak:.0f}/{100 * r['dsa_gflops'] / peak:.0f}",
        ]
        for r in rows
    ]
    print(format_table(headers, table))
    print(
        f"compute dtype {result['compute_dtype']}; matmul peak {result['matmul_peak_gflops']} GFLOP/s; "
        f"{result['threads']} threads; median of {result['reps']}"
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "attention.json", result)
    _plot(rows, out / "attention.png")
    print(f"wrote {out / 'attention.png'} and {out / 'attention.json'}")
    summary = {k: v for k, v in result.items() if k != "rows"}
    print(json.dumps(summary))


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, phase in zip(axes, ("decode", "prefill")):
        rs = [r for r in rows if r["phase"] == phase]
        if not rs:
            ax.set_visible(False)
            continue
        lengths = [r["length"] for r in rs]
        ax.plot(lengths, [1e3 * r["dense_s"] for r in rs], "o-", label="dense MLA (best of SDPA/blocked)")
        ax.plot(lengths, [1e3 * r["dsa_s"] for r in rs], "s-", label="DSA (indexer + top-k)")
        ax.plot(lengths, [1e3 * r["indexer_s"] for r in rs], "^--", label="DSA: indexer part")
        for r in rs:
            ax.annotate(
                f"{r['ratio']:.1f}x",
                (r["length"], 1e3 * r["dsa_s"]),
                textcoords="offset points",
                xytext=(0, -12),
                ha="center",
                fontsize=8,
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length")
        ax.set_ylabel("ms per token (one layer)")
        ax.set_title(f"{phase}: dense / DSA time ratio annotated")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)
