"""The server's view of a generation engine: submit token ids + sampling parameters, stream tokens back.

The HTTP layer depends only on `Backend`: `generate(request_id, prompt_ids, params)` is an async
iterator of `GenerationStep`s (one or more new tokens each, with log-probabilities when asked) that
ends with a step carrying a `finish_reason`:
- "stop": a token of `params.stop_token_ids` was sampled; that token is the last one yielded;
- "length": `params.max_tokens` tokens were generated (or the context is full);
- "abort": the request was cancelled.
Closing the iterator early (a client that disconnects, a stop string found by the server) must
free the request's slot in the engine; `cancel(request_id)` does the same from outside.

`ReplayBackend` (replay.py) implements this for HTTP tests; `EngineBackend` (engine_backend.py)
adapts dsv32's continuous-batching engine.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

FINISH_REASONS = ("stop", "length", "abort")


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling; neutral values switch a filter off (top_k 0, top_p 1, min_p 0, penalties 0/1).

    `logprobs` None: no log-probabilities; k >= 0: the sampled token's log-probability and the k most
    likely alternatives, all from the distribution after temperature scaling and penalties.
    `banned_token_ids` never get sampled (used to keep a tool-call block out of `tool_choice="none"`).
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    banned_token_ids: tuple[int, ...] = ()
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or not 0 <= self.min_p <= 1 or self.repetition_penalty <= 0:
            raise ValueError("top_k must be >= 0, min_p in [0, 1], repetition_penalty > 0")
        if self.logprobs is not None and self.logprobs < 0:
            raise ValueError(f"logprobs must be None or >= 0, got {self.logprobs}")


@dataclass(frozen=True)
class TokenOutput:
    """One generated token; `logprob`/`top_logprobs` are None/() unless log-probabilities were asked."""

    token_id: int
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class GenerationStep:
    """New tokens of one request; the last step of a request has a `finish_reason`."""

    tokens: tuple[TokenOutput, ...] = ()
    finish_reason: str | None = None


@dataclass
class BackendStats:
    """Engine state for /metrics and /health."""

    running: int = 0
    waiting: int = 0
    healthy: bool = True
    extra: dict[str, float] = field(default_factory=dict)


class Backend(abc.ABC):
    """A generation engine as the server uses it (see the module docstring)."""

    #: the longest sequence (prompt + generation) one request may hold
    context_length: int

    @abc.abstractmethod
    def generate(
        self, request_id: str, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[GenerationStep]:
        """Stream the generation of one request; closing the iterator cancels it."""

    @abc.abstractmethod
    def cancel(self, request_id: str) -> None:
        """Stop a request and free its slot; unknown or finished ids are ignored."""

    def stats(self) -> BackendStats:
        return BackendStats()

    async def start(self) -> None:
        """Called once when the server starts (engine threads, warm-up)."""
        return None

    async def stop(self) -> None:
        """Called once when the server stops."""
        return None
