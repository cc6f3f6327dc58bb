"""`dsv32 generate --checkpoint DIR --prompt TEXT`: stream a completion from a checkpoint."""

from __future__ import annotations

import argparse
import json
import sys

from dsv32.cli import UsageError


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (weights, config.json, "
                        "tokenizer.json)")  # fmt: skip
    parser.add_argument("--prompt", required=True, help="prompt text")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt as one user turn (chat format)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--min-p", type=float, default=0.0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--attention", choices=("sparse", "dense"), default="sparse")
    parser.add_argument("--max-seq-len", type=int, default=None, help="context limit (default: the model's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    parser.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from dsv32.engine.generate import encode_prompt, load_engine, stream_text
    from dsv32.engine.sampling import SamplingParams

    params = SamplingParams(
        max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        min_p=args.min_p, repetition_penalty=args.repetition_penalty, stop=tuple(args.stop), seed=args.seed,
    )  # fmt: skip
    if args.max_seq_len is not None and args.max_seq_len < 2:
        raise UsageError(f"--max-seq-len must be >= 2, got {args.max_seq_len}")
    engine, tokenizer = load_engine(args.checkpoint, max_batch=1, max_seq_len=args.max_seq_len,
                                    attention=args.attention)  # fmt: skip
    params.validate(engine.config.vocab_size)
    prompt_ids = encode_prompt(tokenizer, args.prompt, chat=args.chat)
    if len(prompt_ids) >= engine.max_seq_len:
        raise UsageError(
            f"prompt is {len(prompt_ids)} tokens, longer than the context of {engine.max_seq_len} "
            "(at least one token must be generated)"
        )
    for piece in stream_text(engine, prompt_ids, params):
        if isinstance(piece, str):
            if not args.json:
                sys.stdout.write(piece)
                sys.stdout.flush()
            continue
        if args.json:
            print(json.dumps({"prompt_tokens": len(prompt_ids), "completion_tokens": len(piece.token_ids),
                              "text": piece.text, "token_ids": piece.token_ids,
                              "finish_reason": piece.finish_reason}))  # fmt: skip
        else:
            sys.stdout.write(f"\n[{len(piece.token_ids)} tokens, finish: {piece.finish_reason}]\n")
    return 0
