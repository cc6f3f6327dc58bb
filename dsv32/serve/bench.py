"""`dsv32 bench server`: a bounded load test of the HTTP server on loopback.

Side by side in one run, each against a server started in-process on 127.0.0.1 (uvicorn in a
thread; the load clients run in the main thread, so both share this process):
- `engine`: the checkpoint (or a tiny random one) on dsv32's continuous-batching engine;
- `replay`: the same HTTP, encoding and parsing path over the replay backend (scripted tokens, no
  model), which shows what the server itself costs.
The engine decodes up to `max_batch` requests together (default: `clients`, at most 32).
Each is driven by 1 client and by `clients` concurrent streaming clients (official `openai`
async client), every request bounded by `max_tokens`. Reported per row: requests, errors,
completion tokens/s over the wall time, p50/p99 time to first token, p50 latency. Ratios:
throughput with `clients` clients over 1 client (what batching buys) for each backend.
The table is printed; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

# Heavy imports (torch, uvicorn, openai) stay inside the functions: the bench registry imports this
# module just to list it.


def _measure(state: Any, clients: int, max_tokens: int, requests_per_client: int) -> dict[str, dict]:
    from dsv32.serve.loadtest import run_load
    from dsv32.serve.server import running_server

    rows = {}
    with running_server(state) as url:
        run_load(url, state.model_name, 1, max_tokens=2)  # warm-up (first-call costs)
        for n in sorted({1, clients}):
            result = run_load(
                url, state.model_name, n, max_tokens=max_tokens, requests_per_client=requests_per_client
            )
            rows[str(n)] = result.summary()
            if result.errors:
                rows[str(n)]["first_error"] = result.error_messages[0]
    return rows


def run_server_benchmark(
    checkpoint: str | Path | None = None,
    clients: int = 32,
    max_tokens: int = 32,
    requests_per_client: int = 1,
    backends: tuple[str, ...] = ("engine", "replay"),
    max_batch: int | None = None,
) -> dict[str, Any]:
    """Measure and return {backend: {clients: summary}, ratios, all_completed}."""
    from dsv32.chat.tokens import EOS
    from dsv32.serve.loading import load_server_state
    from dsv32.serve.replay import ReplayBackend
    from dsv32.serve.state import ServerState
    from dsv32.serve.tiny import make_tiny_checkpoint

    if clients < 1 or max_tokens < 1 or requests_per_client < 1:
        raise ValueError("clients, max_tokens and requests_per_client must be positive")
    max_batch = max_batch or min(clients, 32)
    results: dict[str, Any] = {"clients": clients, "max_tokens": max_tokens, "max_batch": max_batch}
    with tempfile.TemporaryDirectory(prefix="dsv32-bench-server-") as tmp:
        directory = Path(checkpoint) if checkpoint else make_tiny_checkpoint(Path(tmp) / "tiny")
        results["checkpoint"] = str(checkpoint) if checkpoint else "tiny preset, random weights"
        state = load_server_state(directory, model_name="bench", engine_options={"max_batch": max_batch})
        if "engine" in backends:
            results["engine"] = _measure(state, clients, max_tokens, requests_per_client)
        if "replay" in backends:
            words = "lorem ipsum " * max_tokens
            tokenizer = state.tokenizer

            def script(prompt: str) -> str:
                return words + EOS

            replay = ServerState(
                ReplayBackend(tokenizer, script, state.backend.context_length), tokenizer, "bench"
            )
            results["replay"] = _measure(replay, clients, max_tokens, requests_per_client)
    ratios = {}
    completed = True
    for name in backends:
        rows = results[name]
        ratios[f"{name}_throughput_{clients}_vs_1"] = round(
            rows[str(clients)]["tokens_per_s"] / max(rows["1"]["tokens_per_s"], 1e-9), 2
        )
        completed = completed and all(r["errors"] == 0 for r in rows.values())
    results["ratios"] = ratios
    results["all_completed"] = completed
    return results


def format_table(results: dict[str, Any]) -> str:
    header = (
        "| backend | clients | requests | errors | tokens/s | TTFT p50 ms | TTFT p99 ms | latency p50 ms |"
    )
    lines = [header, "|" + "---|" * 8]
    for name in ("engine", "replay"):
        for n, row in results.get(name, {}).items():
            lines.append(
                f"| {name} | {n} | {row['requests']} | {row['errors']} | {row['tokens_per_s']} | "
                f"{row['ttft_p50_ms']} | {row['ttft_p99_ms']} | {row['latency_p50_ms']} |"
            )
    lines.append("")
    lines += [f"{k}: {v}" for k, v in results["ratios"].items()]
    return "\n".join(lines)


def main(
    checkpoint: str | None = None,
    clients: int = 32,
    max_tokens: int = 32,
    max_batch: int | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Run, print the table and, last, one JSON line; return the results (also written to out/server.json)."""
    results = run_server_benchmark(checkpoint, clients=clients, max_tokens=max_tokens, max_batch=max_batch)
    if out is not None:
        from dsv32.config import atomic_write_text

        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out) / "server.json", json.dumps({"server": results}, indent=2) + "\n")
    print(format_table(results))
    print(json.dumps({"server": results}))
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `dsv32 bench server`."""
    parser.add_argument("--checkpoint", default=None, help="checkpoint to serve (default: a tiny random one)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent streaming clients (default: 32)")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per request (default: 32)")
    parser.add_argument(
        "--max-batch", type=int, default=None, help="engine batch (default: clients, at most 32)"
    )
    parser.add_argument("--out", default=None, help="directory for server.json")


def run(args: argparse.Namespace) -> int:
    """`dsv32 bench server`: exit status 1 when any request failed."""
    results = main(args.checkpoint, args.clients, args.max_tokens, args.max_batch, args.out)
    return 0 if results["all_completed"] else 1
