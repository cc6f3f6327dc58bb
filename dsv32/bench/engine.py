"""`dsv32 bench engine`: tokens/s of dsv32's engine vs transformers' `generate`, same weights.

The `small` preset (seeded random weights) is written with `save_checkpoint` and loaded twice: by
`dsv32.checkpoint.load_model` for the engine (DSA attention, paged bf16-latent/FP8-key cache,
continuous batching) and by `transformers.DeepseekV32ForCausalLM.from_pretrained` (its own DSA port,
dynamic KV cache). Both decode greedily with the same weight dtype (`--dtype`, fp32 by default; bf16
uses the bf16 matmul units where the CPU has them) on the same prompts, measured alternately:
- decode tokens/s at batch B = B (N - 1) / (t(N new tokens) - t(1 new token)), which removes the
  prefill from the decode rate;
- prefill tokens/s = prompt tokens / t(1 new token) at batch 1 on a longer prompt.
Greedy agreement between the two is reported (the two DSA implementations differ in float detail,
and bf16/FP8 cache rounding can flip near-ties).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from dsv32.bench.common import format_table, save_figure, set_threads
from dsv32.data.io import atomic_write_json

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batches", default="1,16", help="decode batch sizes (default 1,16)")
    p.add_argument("--prompt-len", type=int, default=64, help="decode prompts' length (default 64)")
    p.add_argument(
        "--new-tokens", type=int, default=None, help="decoded tokens per request (default 32, quick 8)"
    )
    p.add_argument(
        "--prefill-len", type=int, default=None, help="prefill prompt length (default 1024, quick 256)"
    )
    p.add_argument("--reps", type=int, default=None, help="repetitions (median; default 3, quick 1)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--preset", default="small")
    p.add_argument(
        "--dtype", choices=("float32", "bfloat16"), default="float32", help="weight dtype of both sides"
    )
    p.add_argument("--out", default="bench_results/engine", help="directory for the PNG and JSON")


def _timed(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise ValueError("dsv32 bench engine needs the `transformers` package") from None
    from dsv32.bench.common import parse_lengths
    from dsv32.checkpoint import load_model, save_checkpoint
    from dsv32.config import preset
    from dsv32.engine.sampling import SamplingParams
    from dsv32.engine.scheduler import Engine
    from dsv32.model.transformer import build_model

    batches = parse_lengths(args.batches, "--batches")
    new_tokens = args.new_tokens or (8 if args.quick else 32)
    prefill_len = args.prefill_len or (256 if args.quick else 1024)
    reps = args.reps or (1 if args.quick else 3)
    if new_tokens < 2 or args.prompt_len < 1 or reps < 1:
        raise ValueError("--new-tokens must be >= 2, --prompt-len and --reps >= 1")
    threads = set_threads(args.threads)
    config = preset(args.preset)
    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        directory = save_checkpoint(build_model(config, seed=0), config, Path(tmp) / "ckpt")
        ours = load_model(directory, dtype=dtype)
        hf = transformers.DeepseekV32ForCausalLM.from_pretrained(str(directory), dtype=dtype).eval()
    max_len = max(prefill_len, args.prompt_len) + new_tokens + 1
    engine = Engine(ours, max_batch=max(batches), max_seq_len=max_len, page_size=64, prefill_chunk=512)
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(2, config.vocab_size, (max(batches), args.prompt_len), generator=g)
    long_prompt = torch.randint(2, config.vocab_size, (1, prefill_len), generator=g)

    def ours_run(ids: torch.Tensor, n: int) -> list[list[int]]:
        params = SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)
        return [c.token_ids for c in engine.generate(ids.tolist(), params)]

    def hf_run(ids: torch.Tensor, n: int) -> list[list[int]]:
        with torch.no_grad():
            out = hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=config.eos_token_id,
            )
        return out[:, ids.shape[1] :].tolist()

    rows, agreement = [], {}
    for b in batches:
        ids = prompts[:b]
        t = {}
        for name, fn in (("ours", ours_run), ("hf", hf_run)):
            t[name, "n"] = _timed(lambda fn=fn, ids=ids: fn(ids, new_tokens), reps)
            t[name, "1"] = _timed(lambda fn=fn, ids=ids: fn(ids, 1), reps)
        ours_tps = b * (new_tokens - 1) / max(t["ours", "n"] - t["ours", "1"], 1e-9)
        hf_tps = b * (new_tokens - 1) / max(t["hf", "n"] - t["hf", "1"], 1e-9)
        rows.append(["decode", b, ours_tps, hf_tps, ours_tps / hf_tps])
        a, h = ours_run(ids, new_tokens), hf_run(ids, new_tokens)
        agreement[str(b)] = sum(x == y for ra, rh in zip(a, h) for x, y in zip(ra, rh)) / (b * new_tokens)
        log.info("decode batch %d: engine %.1f tok/s, transformers %.1f tok/s", b, ours_tps, hf_tps)
    t_ours = _timed(lambda: ours_run(long_prompt, 1), reps)
    t_hf = _timed(lambda: hf_run(long_prompt, 1), reps)
    rows.append(["prefill", 1, prefill_len / t_ours, prefill_len / t_hf, t_hf / t_ours])
    result = {
        "decode_speedup": {str(r[1]): round(r[4], 3) for r in rows if r[0] == "decode"},
        "prefill_speedup": round(rows[-1][4], 3),
        "decode_tokens_per_s": {
            str(r[1]): {"engine": round(r[2], 2), "transformers": round(r[3], 2)}
            for r in rows
            if r[0] == "decode"
        },
        "prefill_tokens_per_s": {"engine": round(rows[-1][2], 2), "transformers": round(rows[-1][3], 2)},
        "greedy_agreement": agreement,
        "preset": args.preset,
        "dtype": args.dtype,
        "prompt_len": args.prompt_len,
        "new_tokens": new_tokens,
        "prefill_len": prefill_len,
        "threads": threads,
        "reps": reps,
        "transformers": transformers.__version__,
    }
    print(format_table(["phase", "batch", "engine tok/s", "transformers tok/s", "speedup"], rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "engine.json", result)
    _plot(rows, out / "engine.png", args.dtype)
    print(f"wrote {out / 'engine.png'} and {out / 'engine.json'}")
    print(json.dumps(result))
    return 0


def _plot(rows, path: Path, dtype: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r[0]} b={r[1]}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([i - 0.2 for i in x], [r[2] for r in rows], width=0.4, label="dsv32 engine")
    ax.bar([i + 0.2 for i in x], [r[3] for r in rows], width=0.4, label="transformers generate")
    for i, r in zip(x, rows):
        ax.annotate(f"{r[4]:.2f}x", (i, max(r[2], r[3])), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(list(x), labels)
    ax.set_yscale("log")
    ax.set_ylabel("tokens / s")
    ax.set_title(f"small preset, greedy, {dtype} weights")
    ax.legend()
    save_figure(fig, path)
    plt.close(fig)
