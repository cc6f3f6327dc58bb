"""POST /v1/chat/completions: the response object and the SSE chunk stream.

Shapes follow OpenAI's chat completions with DeepSeek's `reasoning_content`: on the message of a
thinking-mode answer and as `delta.reasoning_content` while streaming (reasoning deltas come
before content deltas). A tool call is sent as one `delta.tool_calls` entry once its invoke is
complete and checked (name, id and the whole JSON arguments at once). `usage` carries
`completion_tokens_details.reasoning_tokens`. Logprobs cover every generated token, reasoning
included. `parallel_tool_calls` is accepted but not enforced (the DSML block may hold several
invokes). Non-standard: `choices[i].parse_error` when the model's output was malformed (the text
from the error on is then returned as content).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from dsv32.serve.chat_plan import ChatPlan
from dsv32.serve.generation import ChoiceEvent, run_chat_choice
from dsv32.serve.state import ServerState
from dsv32.serve.streaming import merge_streams, sse


def _usage(finals: list[ChoiceEvent]) -> dict[str, Any]:
    prompt = finals[0].prompt_tokens if finals else 0
    completion = sum(f.completion_tokens for f in finals)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": sum(f.reasoning_tokens for f in finals)},
    }


def _streams(state: ServerState, plan: ChatPlan, request_id: str, n: int) -> list[AsyncIterator[ChoiceEvent]]:
    return [
        run_chat_choice(state.backend, state.tokenizer, plan, f"{request_id}-{i}", seed_offset=i)
        for i in range(n)
    ]


async def chat_response(state: ServerState, plan: ChatPlan, request_id: str, n: int, started: float) -> dict:
    """The whole `chat.completion` object (all choices generated concurrently)."""
    parts: list[dict[str, Any]] = [
        {"reasoning": "", "content": "", "tool_calls": [], "logprobs": [], "final": None} for _ in range(n)
    ]
    first_seen = False
    async for index, event in merge_streams(_streams(state, plan, request_id, n)):
        part = parts[index]
        if event.first_token and not first_seen:
            first_seen = True
            state.metrics.first_token(time.monotonic() - started)
        part["reasoning"] += event.reasoning
        part["content"] += event.content
        part["tool_calls"] += event.tool_calls
        part["logprobs"] += event.logprobs
        if event.finish_reason is not None:
            part["final"] = event
    finals = [p["final"] for p in parts]
    choices = []
    for index, part in enumerate(parts):
        final = part["final"]
        message: dict[str, Any] = {"role": "assistant", "content": part["content"]}
        if part["tool_calls"]:
            message["tool_calls"] = part["tool_calls"]
            message["content"] = part["content"] or None
        if plan.thinking:
            message["reasoning_content"] = part["reasoning"]
        choice: dict[str, Any] = {
            "index": index,
            "message": message,
            "logprobs": {"content": part["logprobs"]} if plan.params.logprobs is not None else None,
            "finish_reason": final.finish_reason,
        }
        if final.parse_error:
            choice["parse_error"] = final.parse_error
        choices.append(choice)
    usage = _usage(finals)
    state.metrics.tokens(usage["prompt_tokens"], usage["completion_tokens"])
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": state.model_name,
        "system_fingerprint": state.fingerprint,
        "choices": choices,
        "usage": usage,
    }


async def chat_stream(
    state: ServerState, plan: ChatPlan, request_id: str, n: int, started: float, include_usage: bool
) -> AsyncIterator[str]:
    """SSE chunks of a streamed chat completion (without the final [DONE]; the caller adds it)."""
    created = int(time.time())
    base = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": state.model_name,
        "system_fingerprint": state.fingerprint,
    }

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {
            "index": index,
            "delta": delta,
            "logprobs": extra.pop("logprobs", None),
            "finish_reason": finish,
        }
        choice.update(extra)
        return sse({**base, "choices": [choice]})

    for index in range(n):
        yield chunk(index, {"role": "assistant", "content": ""})
    finals: list[ChoiceEvent] = []
    call_counts = [0] * n
    first_seen = False
    async for index, event in merge_streams(_streams(state, plan, request_id, n)):
        if event.first_token and not first_seen:
            first_seen = True
            state.metrics.first_token(time.monotonic() - started)
        delta: dict[str, Any] = {}
        if event.reasoning:
            delta["reasoning_content"] = event.reasoning
        if event.content:
            delta["content"] = event.content
        if event.tool_calls:
            delta["tool_calls"] = []
            for call in event.tool_calls:
                delta["tool_calls"].append({"index": call_counts[index], **call})
                call_counts[index] += 1
        logprobs = {"content": event.logprobs} if event.logprobs else None
        if delta or logprobs:
            yield chunk(index, delta, logprobs=logprobs)
        if event.finish_reason is not None:
            finals.append(event)
            extra = {"parse_error": event.parse_error} if event.parse_error else {}
            yield chunk(index, {}, event.finish_reason, **extra)
    usage = _usage(finals)
    state.metrics.tokens(usage["prompt_tokens"], usage["completion_tokens"])
    if include_usage:
        yield sse({**base, "choices": [], "usage": usage})
