"""Request-side types of the engine: streamed events, completions, and the caller's handle.

`RequestHandle` is what `Engine.submit` returns (see `dsv32.engine.scheduler` for the API); the
events reach it through a thread-safe queue per request.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from dsv32.engine.records import SequenceRecord
from dsv32.engine.sampling import SamplingParams

if TYPE_CHECKING:
    from dsv32.engine.scheduler import Engine

WAITING, RUNNING, PAUSED, FINISHED = "waiting", "running", "paused", "finished"


@dataclass
class TokenEvent:
    """One streamed token (or a bare end-of-segment event with token_id None)."""

    request_id: str
    token_id: int | None
    text: str = ""  # decoded text delta (needs a tokenizer); stop strings are cut from it
    forced: bool = False
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "cache_full" on the last event


@dataclass
class Completion:
    request_id: str
    prompt_ids: list[int]
    token_ids: list[int]  # every token after the prompt, sampled and forced
    text: str
    finish_reason: str | None
    record: SequenceRecord


@dataclass
class _Request:
    id: str
    params: SamplingParams
    tokens: list[int]  # prompt + completion
    record: SequenceRecord
    keep_open: bool
    generator: torch.Generator
    state: str = WAITING
    n_fed: int = 0
    n_segment: int = 0  # sampled tokens in the current segment
    segment_start: int = 0  # index into tokens where the current segment's output starts
    text: str = ""  # emitted text of the current segment
    all_text: str = ""
    finish_reason: str | None = None
    counts: torch.Tensor | None = None  # generated-token counts (penalties)
    seen: torch.Tensor | None = None  # prompt + output ids (repetition penalty)
    events: queue.Queue = field(default_factory=queue.Queue)
    segment_done: threading.Event = field(default_factory=threading.Event)


def _safe_prefix(text: str, stops: tuple[str, ...]) -> str:
    """The part of `text` that can be emitted now: not an incomplete UTF-8 character at the end,
    and not a suffix that could still grow into a stop string."""
    text = text.rstrip("\ufffd")
    hold = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                hold = max(hold, n)
                break
    return text[: len(text) - hold]


class RequestHandle:
    """The caller's side of one request (see module docstring)."""

    def __init__(self, engine: Engine, request: _Request):
        self._engine, self._req = engine, request
        self.request_id = request.id

    def stream(self, timeout: float | None = None) -> Iterator[TokenEvent]:
        """Events until the current segment ends (the last one carries `finish_reason`)."""
        while True:
            event = self._next(timeout)
            yield event
            if event.finish_reason is not None:
                return

    async def astream(self):
        """`stream()` for asyncio code; requires `engine.start()` (a background step thread)."""
        if not self._engine.running:
            raise RuntimeError("astream needs the engine's background thread: call engine.start() first")
        while True:
            event = await asyncio.to_thread(self._req.events.get)
            yield event
            if event.finish_reason is not None:
                return

    def _next(self, timeout: float | None) -> TokenEvent:
        while True:
            try:
                return self._req.events.get_nowait()
            except queue.Empty:
                pass
            if self._engine.running:
                return self._req.events.get(timeout=timeout)
            self._engine.step()

    def result(self) -> Completion:
        """Drain this segment's events and return the request's state so far."""
        for _ in self.stream():
            pass
        return self._engine._completion(self._req)

    def completion(self) -> Completion:
        """The request's state so far, without waiting."""
        return self._engine._completion(self._req)

    def cancel(self) -> None:
        self._engine.cancel(self.request_id)

    def force(self, token_ids: list[int]) -> None:
        self._engine.force(self.request_id, token_ids)

    def extend(self, token_ids: list[int], params: SamplingParams | None = None) -> None:
        self._engine.extend(self.request_id, token_ids, params)

    def close(self) -> None:
        self._engine.close(self.request_id)

    @property
    def record(self) -> SequenceRecord:
        return self._req.record
