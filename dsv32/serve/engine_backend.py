"""`EngineBackend`: the server's `Backend` on dsv32's continuous-batching engine (`dsv32.engine`).

The engine steps in its own background thread (`Engine.start()`): each step admits waiting
requests, prefills one chunk and decodes one token for every running request. Its handles deliver
events through blocking queues, so each request here gets one pump thread (from a private pool,
sized for many concurrent requests) that reads `handle.stream()` and hands the events to the
request's asyncio queue with `call_soon_threadsafe`; the event loop never blocks on the engine.
`submit` and `cancel` take the engine's lock, which a step holds while the model runs, so they run
in the pool too. Closing a request's stream (client gone, stop string found) cancels it in the
engine, which frees its cache pages at once.

Mapping: the server's `SamplingParams` map one to one onto the engine's (logprobs k -> `logprobs`
+ `top_logprobs=k`); the engine's log-probabilities are those of its sampling distribution (after
temperature and top-k/top-p/min-p truncation). Finish reasons "stop"/"length" pass through,
"cancelled" becomes "abort", and "error"/"cache_full" raise `RuntimeError` (the server answers 500).
Left out: `banned_token_ids` (the engine has no logit bias; `tool_choice="none"` then relies on
the prompt without tools and on the parser rejecting any call), and the engine's stop strings
(the server cuts stop strings itself, on the parsed content).
`stats().waiting` counts submitted requests beyond `max_batch` (admission is FIFO); it is exact
unless the cache runs out of pages first.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dsv32.serve.backend import Backend, BackendStats, GenerationStep, SamplingParams, TokenOutput
from dsv32.tokenizer import Tokenizer

log = logging.getLogger(__name__)

FINISH_MAP = {"stop": "stop", "length": "length", "cancelled": "abort"}
_END = object()


class EngineBackend(Backend):
    def __init__(
        self,
        model: Any,
        tokenizer: Tokenizer,
        device: str = "cpu",
        max_batch: int = 16,
        max_concurrent: int = 256,
        **engine_kwargs: Any,
    ):
        from dsv32.engine.scheduler import Engine

        self.tokenizer = tokenizer
        self.max_batch = max_batch
        # The server detokenises and cuts stop strings itself: no tokenizer in the engine. It needs
        # no RL records (routing, kept sets) either; log-probs come with every token regardless.
        engine_kwargs.setdefault("records", False)
        self.engine = Engine(model, max_batch=max_batch, **engine_kwargs)
        self.context_length = self.engine.max_seq_len
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="dsv32-serve-pump")
        self._active: set[str] = set()
        self._lock = threading.Lock()
        self._started = False

    async def start(self) -> None:
        self.engine.start()
        self._started = True

    async def stop(self) -> None:
        # Cancel what is still running so that every pump thread sees its final event and ends.
        with self._lock:
            active = list(self._active)
        for request_id in active:
            self.engine.cancel(request_id)
        self.engine.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def engine_params(params: SamplingParams) -> Any:
        from dsv32.engine.sampling import SamplingParams as EngineParams

        return EngineParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            repetition_penalty=params.repetition_penalty,
            stop_token_ids=tuple(params.stop_token_ids),
            seed=params.seed,
            logprobs=params.logprobs is not None,
            top_logprobs=params.logprobs or 0,
        )

    def _pump(self, handle: Any, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        try:
            for event in handle.stream():
                loop.call_soon_threadsafe(queue.put_nowait, event)
        except BaseException as err:  # handed to the consumer
            loop.call_soon_threadsafe(queue.put_nowait, err)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    async def generate(
        self, request_id: str, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[GenerationStep]:
        loop = asyncio.get_running_loop()
        if not self.engine.running:
            raise RuntimeError("the engine is not running (the server did not start it, or it stopped)")
        engine_params = self.engine_params(params)
        handle = await loop.run_in_executor(
            self._pool, lambda: self.engine.submit(prompt_ids, engine_params, request_id=request_id)
        )
        with self._lock:
            self._active.add(request_id)
        queue: asyncio.Queue = asyncio.Queue()
        self._pool.submit(self._pump, handle, loop, queue)
        finished = False
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    raise RuntimeError(f"the engine stream of {request_id} ended without a finish reason")
                if isinstance(item, BaseException):
                    raise RuntimeError(f"engine stream of {request_id} failed: {item}") from item
                tokens: tuple[TokenOutput, ...] = ()
                if item.token_id is not None and not item.forced:
                    top = tuple((int(t), float(lp)) for t, lp in (item.top_logprobs or ()))
                    tokens = (TokenOutput(int(item.token_id), item.logprob, top if params.logprobs else ()),)
                reason = item.finish_reason
                if reason is None:
                    if tokens:
                        yield GenerationStep(tokens)
                    continue
                finished = True
                if reason not in FINISH_MAP:
                    raise RuntimeError(f"the engine ended request {request_id} with {reason!r}")
                yield GenerationStep(tokens, FINISH_MAP[reason])
                return
        finally:
            with self._lock:
                self._active.discard(request_id)
            if not finished:
                self._pool.submit(self.engine.cancel, request_id)

    def cancel(self, request_id: str) -> None:
        with self._lock:
            active = request_id in self._active
        if active:
            self._pool.submit(self.engine.cancel, request_id)

    def stats(self) -> BackendStats:
        with self._lock:
            active = len(self._active)
        healthy = self.engine.running or not self._started
        return BackendStats(
            running=min(active, self.max_batch), waiting=max(0, active - self.max_batch), healthy=healthy
        )
