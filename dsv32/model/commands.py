"""`dsv32 model info`: parameters, cache bytes and FLOPs of a preset or a config.json."""

from __future__ import annotations

import argparse
import json

from dsv32.config import PRESETS, ModelConfig, preset
from dsv32.model.accounting import model_info


def register(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="verb")
    info = verbs.add_parser("info", help="parameter, cache and FLOP accounting")
    source = info.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=sorted(PRESETS), help="a built-in config")
    source.add_argument("--config", help="path to a config.json (or a directory holding one)")
    info.add_argument("--seq-len", type=int, default=None, help="context length L (default: 131072, or "
                      "max_position_embeddings if smaller)")  # fmt: skip
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=run_info)


PARAM_ROWS = (
    "embeddings", "attention", "indexers", "dense_mlp", "routed_experts", "shared_experts", "gates", "norms",
    "total", "total_without_indexers", "activated", "activated_without_indexers",
)  # fmt: skip


def _fmt(n: float) -> str:
    return f"{n:,.0f}" if abs(n) >= 1 else f"{n:.3f}"


def run_info(args: argparse.Namespace) -> int:
    config = preset(args.preset) if args.preset else ModelConfig.from_json(args.config)
    seq_len = args.seq_len if args.seq_len is not None else min(131072, config.max_position_embeddings)
    if seq_len < 1:
        raise ValueError(f"--seq-len must be >= 1, got {seq_len}")
    info = model_info(config, seq_len)
    info["source"] = args.preset or args.config
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    p, cache, flops = info["params"], info["cache_bytes_per_token"], info["flops_per_token"]
    print(f"model: {info['source']}  ({config.num_hidden_layers} layers, {len(config.moe_layers)} MoE)")
    print("parameters (MTP layer excluded)")
    for key in PARAM_ROWS:
        print(f"  {key:28s} {_fmt(p[key]):>22s}")
    print("KV cache bytes per token")
    for key, value in cache.items():
        print(f"  {key:28s} {_fmt(value):>22s}")
    print(f"FLOPs per token at context {seq_len:,}")
    for key in ("decode_dense", "decode_dsa", "prefill_dense", "prefill_dsa", "decode_attention_dense",
                "decode_attention_dsa", "prefill_attention_dense", "prefill_attention_dsa"):  # fmt: skip
        print(f"  {key:28s} {flops[key]:>22.4g}")
    print(f"  {'DSA/dense decode':28s} {flops['decode_ratio_dsa_over_dense']:>22.3f}")
    print(f"  {'DSA/dense prefill':28s} {flops['prefill_ratio_dsa_over_dense']:>22.3f}")
    return 0
