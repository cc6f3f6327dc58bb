"""The tool-use loop: an OpenAI-compatible chat model, a tool registry and a context strategy.

One *step* is one chat-completion request. A reply with tool calls has them executed (in parallel
when there are several) and their results appended; a reply without tool calls is the final
answer. The run also ends when the step budget is spent, when the prompt no longer fits the
context window, or when the endpoint keeps failing.

Thinking across tool calls (SPEC section 5): each assistant message keeps the model's
`reasoning_content`. On the wire it is sent back for assistant messages after the last user message
(the current turn) and dropped from every earlier one; the agent's own record keeps it all.

Endpoint errors (connection errors, timeouts, HTTP 408/409/429/5xx, malformed replies) are retried
with exponential backoff; after `max_retries` retries, or at once for other HTTP errors (400: the
request itself is wrong), the run ends with status `endpoint_error` and the error is recorded.

Context: before each step the prompt is counted; above `threshold x context_window` the strategy
compacts it (a *reset*); a prompt still at or above the window ends the run (`context_exhausted`).
`parallel-fewest-step` runs N independent trajectories without compaction, each with
`max_steps // N` steps, and keeps the answer of the answered run with the fewest steps; its
reported steps and tokens are the sums over all N runs. Run i sends `seed = base + i` (base: the
agent's `seed`, else 0) so that a server honouring the OpenAI `seed` field samples differently.

Token counts use `token_counter` (default `ByteCounter`, an estimate; pass a `TokenizerCounter`
for exact counts). With `trajectory_path`, `run` writes the JSONL trajectory: a `start` record,
one `step` record per request (assistant message, counted prompt tokens, server usage, latency,
attempts, per-tool timings and the tool messages), `reset` records (tokens and messages before and
after, the kept conversation), `failure` records and an `end` record with the final messages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsv32.agent.context import (
    SUMMARY_REQUEST,
    ByteCounter,
    ContextStrategy,
    Message,
    ParallelFewestStep,
    TokenCounter,
    make_strategy,
)
from dsv32.agent.tools import ToolCall, ToolRegistry
from dsv32.agent.trajectory import write_jsonl

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 429}


class EndpointFailure(RuntimeError):
    """The endpoint failed after all retries (or with a non-retryable error)."""

    def __init__(self, message: str, attempts: int):
        super().__init__(message)
        self.attempts = attempts


@dataclass
class RunResult:
    """Outcome of one agent run (or of the selection among parallel runs)."""

    status: str  # answered | step_budget | context_exhausted | endpoint_error
    answer: str | None
    steps: int
    prompt_tokens: int
    completion_tokens: int
    resets: int
    messages: list[Message]
    error: str | None = None
    runs: list[RunResult] = field(default_factory=list)  # parallel-fewest-step: every run
    trajectory_path: Path | None = None


def wire_messages(messages: Sequence[Message]) -> list[Message]:
    """Messages as sent: `reasoning_content` kept only on assistant messages after the last user one."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    out = []
    for i, m in enumerate(messages):
        m = {k: v for k, v in m.items() if v is not None or k == "content"}
        if m.get("role") == "assistant" and i < last_user:
            m.pop("reasoning_content", None)
        out.append(m)
    return out


def _retryable(err: Exception) -> bool:
    import openai

    if isinstance(err, (openai.APIConnectionError, openai.APITimeoutError, TimeoutError, ConnectionError)):
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code in RETRYABLE_STATUS or err.status_code >= 500
    return isinstance(err, _MalformedReply)


class _MalformedReply(ValueError):
    pass


def _assistant_message(response: Any, step: int) -> Message:
    """The reply as an assistant message dict (content, reasoning_content, tool_calls)."""
    choices = getattr(response, "choices", None)
    if not choices:
        raise _MalformedReply("the endpoint returned no choices")
    msg = choices[0].message
    extra = getattr(msg, "model_extra", None) or {}
    reasoning = getattr(msg, "reasoning_content", None) or extra.get("reasoning_content")
    out: Message = {"role": "assistant", "content": msg.content}
    if reasoning:
        out["reasoning_content"] = reasoning
    calls = []
    for j, call in enumerate(msg.tool_calls or []):
        fn = call.function
        calls.append(
            {
                "id": call.id or f"call_{step}_{j}",
                "type": "function",
                "function": {"name": fn.name, "arguments": fn.arguments or "{}"},
            }
        )
    if calls:
        out["tool_calls"] = calls
    return out


class Agent:
    """Runs tasks against `client.chat.completions.create` with `tools` and a context strategy."""

    def __init__(
        self,
        client: Any,
        model: str,
        tools: ToolRegistry,
        strategy: ContextStrategy | str = "none",
        max_steps: int = 50,
        context_window: int = 32768,
        *,
        threshold: float = 0.8,
        token_counter: TokenCounter | None = None,
        system_prompt: str | None = None,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        request_kwargs: dict[str, Any] | None = None,
        seed: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if context_window < 1:
            raise ValueError(f"context_window must be >= 1, got {context_window}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.client, self.model, self.tools = client, model, tools
        self.strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
        self.max_steps, self.context_window, self.threshold = max_steps, context_window, threshold
        self.counter = token_counter or ByteCounter()
        self.system_prompt = system_prompt
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.request_kwargs = dict(request_kwargs or {})
        self.seed = seed
        self.sleep = sleep

    # ---- public -------------------------------------------------------------------------------

    def run(self, task: str | Sequence[Message], trajectory_path: str | Path | None = None) -> RunResult:
        """Run one task (a user message, or a conversation ending in a user message)."""
        messages = self._initial_messages(task)
        records: list[dict[str, Any]] = [
            {
                "event": "start",
                "time": time.time(),
                "model": self.model,
                "strategy": self.strategy.name,
                "max_steps": self.max_steps,
                "context_window": self.context_window,
                "threshold": self.threshold,
                "counter": self.counter.name,
                "tools": self.tools.schemas(),
                "messages": messages,
            }
        ]
        try:
            if isinstance(self.strategy, ParallelFewestStep):
                result = self._run_parallel(messages, records)
            else:
                result = self._run_once(messages, self.max_steps, self.seed, 0, records)
        finally:
            if trajectory_path is not None:
                write_jsonl(trajectory_path, records)
        result.trajectory_path = Path(trajectory_path) if trajectory_path is not None else None
        return result

    # ---- internals ----------------------------------------------------------------------------

    def _initial_messages(self, task: str | Sequence[Message]) -> list[Message]:
        if isinstance(task, str):
            messages = [{"role": "user", "content": task}]
        else:
            messages = [dict(m) for m in task]
        if not messages or messages[-1].get("role") != "user":
            raise ValueError("task: expected a string or a conversation whose last message is a user message")
        if self.system_prompt and messages[0].get("role") != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def _run_parallel(self, messages: list[Message], records: list[dict[str, Any]]) -> RunResult:
        n = self.strategy.n  # type: ignore[attr-defined]
        per_run = max(1, self.max_steps // n)
        run_records: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        base_seed = self.seed if self.seed is not None else 0

        def one(i: int) -> RunResult:
            return self._run_once([dict(m) for m in messages], per_run, base_seed + i, i, run_records[i])

        with ThreadPoolExecutor(max_workers=n) as pool:
            runs = list(pool.map(one, range(n)))
        for r in run_records:
            records.extend(r)
        answered = [(r.steps, i) for i, r in enumerate(runs) if r.status == "answered"]
        chosen = runs[min(answered)[1]] if answered else runs[0]
        records.append({"event": "select", "chosen_run": runs.index(chosen), "answered_runs": len(answered)})
        return RunResult(
            status=chosen.status,
            answer=chosen.answer,
            steps=sum(r.steps for r in runs),
            prompt_tokens=sum(r.prompt_tokens for r in runs),
            completion_tokens=sum(r.completion_tokens for r in runs),
            resets=0,
            messages=chosen.messages,
            error=chosen.error,
            runs=runs,
        )

    def _complete(
        self, messages: list[Message], with_tools: bool, seed: int | None
    ) -> tuple[Any, int, float]:
        """One request with retries -> (response, attempts, latency of the successful attempt)."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": wire_messages(messages),
            **self.request_kwargs,
        }
        if with_tools and self.tools.tools:
            kwargs["tools"] = self.tools.schemas()
        if seed is not None:
            kwargs["seed"] = seed
        for attempt in range(self.max_retries + 1):
            start = time.perf_counter()
            try:
                response = self.client.chat.completions.create(**kwargs)
                _assistant_message(response, 0)  # validate the shape inside the retry loop
                return response, attempt + 1, time.perf_counter() - start
            except Exception as err:  # noqa: BLE001 - classified below
                if not _retryable(err):
                    raise EndpointFailure(f"{type(err).__name__}: {err}", attempt + 1) from err
                if attempt == self.max_retries:
                    raise EndpointFailure(
                        f"gave up after {attempt + 1} attempts; last error {type(err).__name__}: {err}",
                        attempt + 1,
                    ) from err
                delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
                log.warning("endpoint error (%s), retry %d in %.2f s", type(err).__name__, attempt + 1, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _summarize(self, messages: list[Message], seed: int | None, stats: dict[str, int]) -> str:
        request = list(messages) + [{"role": "user", "content": SUMMARY_REQUEST}]
        response, _, _ = self._complete(request, with_tools=False, seed=seed)
        stats["prompt_tokens"] += self.counter.count(request)
        usage = getattr(response, "usage", None)
        stats["completion_tokens"] += getattr(usage, "completion_tokens", 0) or 0
        return _assistant_message(response, 0)["content"] or ""

    def _run_once(
        self,
        messages: list[Message],
        max_steps: int,
        seed: int | None,
        run: int,
        records: list[dict[str, Any]],
    ) -> RunResult:
        schemas = self.tools.schemas()
        stats = {"prompt_tokens": 0, "completion_tokens": 0}
        steps, resets, status, answer, error = 0, 0, "step_budget", None, None
        limit = self.threshold * self.context_window
        while steps < max_steps:
            n_tokens = self.counter.count(messages, schemas)
            if n_tokens > limit:
                before = len(messages)
                try:
                    compacted = self.strategy.compact(messages, lambda m: self._summarize(m, seed, stats))
                except EndpointFailure as err:
                    status, error = "endpoint_error", str(err)
                    records.append({"event": "failure", "run": run, "step": steps, "error": error})
                    break
                if compacted is not None:
                    messages = compacted
                    resets += 1
                    after_tokens = self.counter.count(messages, schemas)
                    records.append(
                        {
                            "event": "reset",
                            "run": run,
                            "step": steps,
                            "strategy": self.strategy.name,
                            "tokens_before": n_tokens,
                            "tokens_after": after_tokens,
                            "messages_before": before,
                            "messages_after": len(messages),
                            "messages": messages,
                        }
                    )
                    n_tokens = after_tokens
            if n_tokens >= self.context_window:
                status = "context_exhausted"
                break
            try:
                response, attempts, latency = self._complete(messages, with_tools=True, seed=seed)
            except EndpointFailure as err:
                status, error = "endpoint_error", str(err)
                records.append(
                    {"event": "failure", "run": run, "step": steps, "error": error, "attempts": err.attempts}
                )
                break
            steps += 1
            assistant = _assistant_message(response, steps)
            messages.append(assistant)
            usage = getattr(response, "usage", None)
            usage_dict = usage.model_dump() if hasattr(usage, "model_dump") else None
            stats["prompt_tokens"] += n_tokens
            stats["completion_tokens"] += getattr(usage, "completion_tokens", 0) or 0
            calls = [
                ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
                for c in assistant.get("tool_calls", [])
            ]
            results = self.tools.execute_many(calls)
            tool_messages = [
                {"role": "tool", "tool_call_id": r.call_id, "content": r.content} for r in results
            ]
            messages.extend(tool_messages)
            records.append(
                {
                    "event": "step",
                    "run": run,
                    "step": steps,
                    "prompt_tokens": n_tokens,
                    "usage": usage_dict,
                    "latency_s": round(latency, 6),
                    "attempts": attempts,
                    "assistant": assistant,
                    "tool_results": [r.record() for r in results],
                    "tool_messages": tool_messages,
                }
            )
            if not calls:
                status, answer = "answered", assistant.get("content") or ""
                break
        result = RunResult(
            status, answer, steps, stats["prompt_tokens"], stats["completion_tokens"], resets, messages, error
        )
        records.append(
            {
                "event": "end",
                "run": run,
                "status": status,
                "answer": answer,
                "steps": steps,
                "prompt_tokens": stats["prompt_tokens"],
                "completion_tokens": stats["completion_tokens"],
                "resets": resets,
                "error": error,
                "messages": messages,
            }
        )
        return result
