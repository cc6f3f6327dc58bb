"""A serving smoke test for the end-to-end demo: serve a checkpoint, chat through `openai`, stop.

`serving_smoke_test(checkpoint_dir)` starts the server in-process on 127.0.0.1 and a free port,
sends one chat completion and one streamed chat completion with the official `openai` client,
checks that both finished and that the streamed text equals the non-streamed one (same seed,
greedy), stops the server and returns what happened as a dict (JSON-serialisable).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dsv32.serve.loading import load_server_state
from dsv32.serve.server import running_server


def serving_smoke_test(
    checkpoint_dir: str | Path,
    prompt: str = "Hello! What can you do?",
    max_tokens: int = 24,
    thinking: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    import openai

    started = time.perf_counter()
    state = load_server_state(checkpoint_dir, device=device)
    messages = [{"role": "user", "content": prompt}]
    with running_server(state) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        models = [m.id for m in client.models.list().data]
        args = {"model": state.model_name, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0,
                "seed": 0, "extra_body": {"thinking": thinking}}  # fmt: skip
        resp = client.chat.completions.create(**args)
        streamed, chunks, finish = "", 0, None
        for chunk in client.chat.completions.create(**args, stream=True):
            chunks += 1
            for choice in chunk.choices:
                streamed += choice.delta.content or ""
                finish = choice.finish_reason or finish
    message = resp.choices[0].message
    return {
        "url": url,
        "models": models,
        "content": message.content,
        "reasoning_content": getattr(message, "reasoning_content", None),
        "finish_reason": resp.choices[0].finish_reason,
        "usage": resp.usage.model_dump() if resp.usage else None,
        "stream_chunks": chunks,
        "stream_finish_reason": finish,
        "stream_matches": streamed == (message.content or ""),
        "seconds": round(time.perf_counter() - started, 3),
    }
