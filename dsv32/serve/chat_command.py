"""`dsv32 chat --checkpoint DIR`: chat with a checkpoint in the terminal (streams; reasoning apart)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dsv32.serve.commands import add_model_flags, engine_options


def register(parser: argparse.ArgumentParser) -> None:
    add_model_flags(parser)
    parser.add_argument("--no-thinking", action="store_true", help="chat mode (no reasoning) from the start")
    parser.add_argument("--tools", default=None, help="JSON file with a list of OpenAI tool definitions")
    parser.add_argument("--max-tokens", type=int, default=256, help="token limit per answer (default: 256)")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default: 0.7)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed")
    parser.set_defaults(func=chat)


def read_tools(path: str | None) -> list | None:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--tools file not found: {file}")
    try:
        tools = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"--tools {file}: not valid JSON ({err})") from None
    if not isinstance(tools, list):
        raise ValueError(f"--tools {file}: expected a JSON list of tools, got {type(tools).__name__}")
    return tools


def chat(args: argparse.Namespace) -> int:
    from dsv32.serve.loading import load_server_state
    from dsv32.serve.terminal import TerminalChat

    if args.max_tokens < 1:
        raise ValueError(f"--max-tokens must be positive, got {args.max_tokens}")
    tools = read_tools(args.tools)
    state = load_server_state(args.checkpoint, device=args.device, engine_options=engine_options(args))
    options = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    if args.seed is not None:
        options["seed"] = args.seed
    terminal = TerminalChat(
        state,
        sys.stdout,
        thinking=not args.no_thinking,
        tools=tools,
        options=options,
        color=sys.stdout.isatty(),
    )
    print(f"chatting with {state.model_name!r}; /new, /thinking on|off, /exit")
    return terminal.run(iter(sys.stdin.readline, ""))
