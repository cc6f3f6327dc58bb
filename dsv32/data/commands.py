"""`dsv32 data ...`: corpus statistics, tokenizer training, token shards, long-context samples."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _corpus(args: argparse.Namespace):
    from dsv32.data.corpus import load_stdlib_corpus

    return load_stdlib_corpus(val_fraction=args.val_fraction, max_files=args.max_files)


def cmd_corpus(args: argparse.Namespace) -> int:
    corpus = _corpus(args)
    out = {"root": str(corpus.root), "python": sys.version.split()[0], **corpus.stats()}
    print(json.dumps(out))
    return 0


def cmd_tokenizer(args: argparse.Namespace) -> int:
    from dsv32.tokenizer import train_bpe

    corpus = _corpus(args)
    start = time.perf_counter()
    tok = train_bpe(corpus.texts("train"), args.vocab_size, split_digits=args.split_digits)
    seconds = time.perf_counter() - start
    path = tok.save(args.out)
    val_bytes = sum(f.n_bytes for f in corpus.split_files("val"))
    val_tokens = sum(len(ids) for ids in tok.encode_batch(list(corpus.texts("val"))))
    out = {
        "path": str(path),
        "vocab_size": tok.vocab_size,
        "train_seconds": round(seconds, 2),
        "val_bytes_per_token": round(val_bytes / max(val_tokens, 1), 3),
        "fingerprint": tok.fingerprint()[:16],
    }
    print(json.dumps(out))
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    from dsv32.data.shards import corpus_shards
    from dsv32.tokenizer import Tokenizer

    tok = Tokenizer.load(args.tokenizer)
    corpus = _corpus(args)
    splits = ("train", "val") if args.split == "both" else (args.split,)
    for split in splits:
        start = time.perf_counter()
        shards = corpus_shards(args.cache, corpus, split, tok)
        out = {
            "split": split,
            "directory": str(shards.directory),
            "documents": shards.n_documents,
            "tokens": shards.n_tokens,
            "shards": len(shards.arrays),
            "seconds": round(time.perf_counter() - start, 2),
        }
        print(json.dumps(out))
    return 0


def cmd_longctx(args: argparse.Namespace) -> int:
    from dsv32.data.longctx import LongContextTasks, TaskOptions
    from dsv32.tokenizer import Tokenizer

    tok = Tokenizer.load(args.tokenizer)
    options = TaskOptions(n_pairs=args.n_pairs, n_hops=args.n_hops, n_chains=args.n_chains)
    tasks = LongContextTasks(tok, options=options)
    for sample in tasks.samples(args.task, args.context_len, args.n, args.seed):
        if args.show:
            print(sample.prompt + sample.answer)
        record = {
            "task": sample.task,
            "seed": sample.seed,
            "tokens": sample.n_tokens,
            "answer": sample.answer,
            "depths": [round(d, 3) for d in sample.meta["depths"]],
        }
        print(json.dumps(record))
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    from dsv32.data.longctx import TASKS

    sub = parser.add_subparsers(title="verbs", metavar="verb")

    def corpus_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--val-fraction", type=float, default=0.05, help="share of files in val")
        p.add_argument("--max-files", type=int, default=None, help="first N files by path")

    p = sub.add_parser("corpus", help="files and bytes per split of the stdlib corpus")
    corpus_flags(p)
    p.set_defaults(func=cmd_corpus)

    p = sub.add_parser("tokenizer", help="train a byte-level BPE on the stdlib train split and save it")
    corpus_flags(p)
    p.add_argument("--vocab-size", type=int, default=8192, help="ids including specials (default 8192)")
    p.add_argument("--split-digits", action="store_true", help="one digit per token (no multi-digit tokens)")
    p.add_argument("--out", type=Path, required=True, help="directory (or .json path) for tokenizer.json")
    p.set_defaults(func=cmd_tokenizer)

    p = sub.add_parser("shards", help="tokenise the stdlib corpus into cached memory-mapped shards")
    corpus_flags(p)
    p.add_argument("--tokenizer", type=Path, required=True, help="tokenizer.json or its directory")
    p.add_argument("--cache", type=Path, required=True, help="cache root; one subdirectory per input hash")
    p.add_argument("--split", choices=("train", "val", "both"), default="both")
    p.set_defaults(func=cmd_shards)

    p = sub.add_parser("longctx", help="generate long-context task samples (JSON lines; --show prints text)")
    p.add_argument("--tokenizer", type=Path, required=True, help="tokenizer.json or its directory")
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--context-len", type=int, default=2048, help="tokens per sample, answer and EOS included")
    p.add_argument("--n", type=int, default=1, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-pairs", type=int, default=8, help="kv_recall: key-value pairs")
    p.add_argument("--n-hops", type=int, default=3, help="var_track: links per chain")
    p.add_argument("--n-chains", type=int, default=2, help="var_track: chains (one queried)")
    p.add_argument("--show", action="store_true", help="print each prompt and answer")
    p.set_defaults(func=cmd_longctx)
