"""A bounded load test of a running server with the official `openai` async client.

`run_load(base_url, model, clients, requests_per_client, ...)` starts `clients` concurrent
streaming chat clients, each sending `requests_per_client` requests one after another, and
measures per request: time to first token (request sent -> first chunk carrying generated text,
reasoning or a tool call), end-to-end latency, and completion tokens (from the stream's usage
chunk). Throughput is total completion tokens / wall time of the whole run. Every request is
bounded by `max_tokens` and a client timeout; failures are counted, not raised.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadResult:
    clients: int
    requests: int
    errors: int
    wall_s: float
    completion_tokens: int
    ttft_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def percentile(self, values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]

    def summary(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "requests": self.requests,
            "errors": self.errors,
            "wall_s": round(self.wall_s, 3),
            "completion_tokens": self.completion_tokens,
            "tokens_per_s": round(self.tokens_per_s, 2),
            "ttft_p50_ms": round(1000 * self.percentile(self.ttft_s, 50), 2),
            "ttft_p99_ms": round(1000 * self.percentile(self.ttft_s, 99), 2),
            "latency_p50_ms": round(
                1000 * (statistics.median(self.latency_s) if self.latency_s else float("nan")), 2
            ),
        }


async def _one_request(client: Any, model: str, messages: list[dict], max_tokens: int, extra: dict) -> tuple:
    started = time.perf_counter()
    first = None
    tokens = 0
    stream = await client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        temperature=extra["temperature"],
        seed=extra["seed"],
        extra_body={"thinking": extra["thinking"]},
    )
    async for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            delta = choice.delta
            if first is None and (
                delta.content or getattr(delta, "reasoning_content", None) or delta.tool_calls
            ):
                first = time.perf_counter() - started
    latency = time.perf_counter() - started
    return (first if first is not None else latency), latency, tokens


async def run_load_async(
    base_url: str,
    model: str,
    clients: int,
    requests_per_client: int = 1,
    max_tokens: int = 32,
    prompt: str = "Tell me about the weather.",
    thinking: bool = False,
    timeout_s: float = 300.0,
    temperature: float = 1.0,
) -> LoadResult:
    import openai  # the client is an optional dependency of the serve extra

    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=timeout_s)
    result = LoadResult(
        clients=clients, requests=clients * requests_per_client, errors=0, wall_s=0.0, completion_tokens=0
    )
    extra = {"thinking": thinking, "temperature": temperature, "seed": 0}

    async def worker(index: int) -> None:
        messages = [{"role": "user", "content": f"{prompt} (client {index})"}]
        for _ in range(requests_per_client):
            try:
                ttft, latency, tokens = await _one_request(client, model, messages, max_tokens, extra)
            except Exception as err:  # counted and reported: a load test must not stop at the first failure
                result.errors += 1
                result.error_messages.append(f"{type(err).__name__}: {err}")
                continue
            result.ttft_s.append(ttft)
            result.latency_s.append(latency)
            result.completion_tokens += tokens

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(i) for i in range(clients)))
    finally:
        result.wall_s = time.perf_counter() - started
        await client.close()
    return result


def run_load(base_url: str, model: str, clients: int, **kwargs: Any) -> LoadResult:
    return asyncio.run(run_load_async(base_url, model, clients, **kwargs))
