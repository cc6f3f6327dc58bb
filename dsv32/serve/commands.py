"""`dsv32 serve --checkpoint DIR [--host] [--port]`: the OpenAI-compatible server on a checkpoint."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="checkpoint directory (config.json, weights, tokenizer.json)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--max-batch", type=int, default=None, help="most requests decoded together")


def register(parser: argparse.ArgumentParser) -> None:
    add_model_flags(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--model-name", default=None, help="served model id (default: the directory name)")
    parser.add_argument(
        "--thinking",
        action="store_true",
        help="thinking mode when a request does not say (default: chat mode)",
    )
    parser.set_defaults(func=serve)


def engine_options(args: argparse.Namespace) -> dict:
    return {"max_batch": args.max_batch} if args.max_batch else {}


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from dsv32.serve.loading import load_server_state
    from dsv32.serve.server import uvicorn_config

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    state = load_server_state(
        args.checkpoint,
        model_name=args.model_name,
        device=args.device,
        default_thinking=args.thinking,
        engine_options=engine_options(args),
    )
    print(f"serving {state.model_name!r} on http://{args.host}:{args.port} (chat page at /, API at /v1)")
    uvicorn.Server(uvicorn_config(state, args.host, args.port, log_level="info")).run()
    return 0
