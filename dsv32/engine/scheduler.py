"""Continuous batching over the paged cache: requests join and leave between steps.

Thread-safe API (what a server builds on; all methods may be called from any thread):

    engine = Engine(model, max_batch=16, n_pages=..., tokenizer=tok)   # tokenizer: optional
    engine.start()                       # optional: run steps in a background thread
    handle = engine.submit(prompt_ids, SamplingParams(...), keep_open=False, record=None)
    for event in handle.stream(): ...    # TokenEvent per token, the last one has finish_reason
    async for event in handle.astream(): ...   # the same from asyncio (needs engine.start())
    handle.cancel()                      # frees the cache pages before it returns
    handle.force(ids)                    # insert tokens (e.g. a tool result) at the next step
    handle.extend(ids, params)           # keep_open requests: after a segment ends, add forced
                                         # tokens and generate a new segment with `params`
    handle.close()                       # keep_open requests: free the slot, finish the record
    handle.result() -> Completion        # waits for the end (of the request or segment)

Without `start()`, `stream()`/`result()` drive the engine themselves by calling `step()`.

One step: admit waiting requests while slots and pages allow (pages for prompt + max_tokens are
reserved on admission, so a running request never runs out); feed prefill chunks of the requests
with more than one unfed token (new prompts, forced insertions), FIFO, up to `prefill_chunk` tokens
in all (equal-length chunks of several requests run as one batched forward); decode ONE token for
every other running request in one batch; sample each request whose last fed token produced
logits; emit events; finish or pause requests. A keep_open request pauses at the end of a segment
and keeps its cache for `extend`. Every fed token's MoE routing and every completion token's
sampling data go into the request's `SequenceRecord` (`handle.record`).

Lifetime: the engine holds a request only while it is waiting, running or paused. A finished request
(length, stop, cancel, error, or `close()` of a keep_open one) is dropped from the engine and its pages
are freed in the same step, so a long-running server holds no per-request state beyond its live
requests (`request_ids()`); the record lives on only in the caller's handle and completion. A paused
keep_open request is held until `close()` (or `cancel()`). `record=False` (or `Engine(records=False)`
as the default for every request) keeps only tokens and log-probabilities, not the per-token MoE
routing and kept vocabulary sets that RL replay needs, and a step in which no request wants routing
does not collect it.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
from collections.abc import Callable

import torch

from dsv32.engine.cache import CacheFullError, CacheSpec, PagedCache
from dsv32.engine.handles import (  # noqa: F401  (TokenEvent, Completion: part of this API)
    FINISHED,
    PAUSED,
    RUNNING,
    WAITING,
    Completion,
    RequestHandle,
    TokenEvent,
    _Request,
    _safe_prefix,
)
from dsv32.engine.records import SequenceRecord
from dsv32.engine.runner import ModelRunner
from dsv32.engine.sampling import SamplingParams, sample_batch
from dsv32.model.transformer import DeepseekV32ForCausalLM

log = logging.getLogger(__name__)


class Engine:
    """Continuous-batching generation engine (see module docstring)."""

    def __init__(
        self,
        model: DeepseekV32ForCausalLM,
        *,
        max_batch: int = 16,
        n_pages: int | None = None,
        page_size: int = 64,
        max_seq_len: int | None = None,
        cache_spec: CacheSpec | None = None,
        attention: str = "sparse",
        prefill_chunk: int = 512,
        tokenizer=None,
        seed: int = 0,
        records: bool = True,
    ):
        config = model.config
        self.model, self.config, self.tokenizer = model.eval(), config, tokenizer
        self.max_batch = max_batch
        self.records = records  # default of submit(record=None)
        self.max_seq_len = min(max_seq_len or config.max_position_embeddings, config.max_position_embeddings)
        if n_pages is None:
            n_pages = max_batch * -(-self.max_seq_len // page_size)
        self.cache = PagedCache(config, n_pages, page_size, cache_spec, model.device)
        self.runner = ModelRunner(model, self.cache, attention, prefill_chunk)
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._requests: dict[str, _Request] = {}
        self._order: list[str] = []  # admission order (FIFO)
        self._ids = itertools.count()
        self._rng = random.Random(seed)
        self._thread: threading.Thread | None = None
        self._stop_thread = False

    # ---- submission -------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams | None = None, *, keep_open: bool = False,
               request_id: str | None = None, record: bool | None = None) -> RequestHandle:  # fmt: skip
        """Queue a request. `record`: keep the RL details (routing, kept sets) in its record; None
        takes the engine's `records` default."""
        params = (params or SamplingParams()).validate(self.config.vocab_size)
        prompt_ids = [int(t) for t in prompt_ids]
        if not prompt_ids:
            raise ValueError("prompt must contain at least one token")
        if any(not 0 <= t < self.config.vocab_size for t in prompt_ids):
            raise ValueError(f"prompt token ids must lie in [0, {self.config.vocab_size})")
        if len(prompt_ids) >= self.max_seq_len:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens does not fit the context of "
                             f"{self.max_seq_len} tokens (at least one must be generated)")  # fmt: skip
        if params.stop and self.tokenizer is None:
            raise ValueError("stop strings need an engine with a tokenizer")
        need = self.cache.pages_for(min(self.max_seq_len, len(prompt_ids) + params.max_tokens))
        if need > self.cache.n_pages:
            raise ValueError(f"request needs {need} cache pages, the cache has {self.cache.n_pages}")
        with self._lock:
            rid = request_id or f"req-{next(self._ids)}"
            if rid in self._requests:
                raise ValueError(f"request id {rid!r} is already in use")
            seed = params.seed if params.seed is not None else self._rng.randrange(2**62)
            detailed = self.records if record is None else bool(record)
            record = SequenceRecord(list(prompt_ids), self.config.moe_layers, detailed=detailed)
            generator = torch.Generator().manual_seed(seed)
            req = _Request(rid, params, list(prompt_ids), record, keep_open, generator)
            req.segment_start = len(prompt_ids)
            self._init_penalty_state(req)
            self._requests[rid] = req
            self._order.append(rid)
            self._wake.notify_all()
        return RequestHandle(self, req)

    def _init_penalty_state(self, req: _Request) -> None:
        if req.params.has_penalties and req.counts is None:
            v = self.config.vocab_size
            req.counts = torch.zeros(v, dtype=torch.long)
            req.seen = torch.zeros(v, dtype=torch.bool)
            req.seen[torch.tensor(req.tokens)] = True

    def cancel(self, request_id: str) -> None:
        """Stop a request now: its pages are free when this returns (unknown/finished ids: no-op)."""
        with self._lock:
            req = self._requests.get(request_id)
            if req is None or req.state == FINISHED:
                return
            self._finish(req, "cancelled", emit=True, final=True)

    def force(self, request_id: str, token_ids: list[int]) -> None:
        """Append forced tokens (context, not actions) to a running or waiting request."""
        with self._lock:
            req = self._get(request_id, (WAITING, RUNNING))
            self._append_forced(req, token_ids)

    def extend(self, request_id: str, token_ids: list[int], params: SamplingParams | None = None) -> None:
        """Resume a paused keep_open request: forced tokens, then a new segment under `params`."""
        with self._lock:
            req = self._get(request_id, (PAUSED,))
            if params is not None:
                req.params = params.validate(self.config.vocab_size)
                self._init_penalty_state(req)
            if req.params.stop and self.tokenizer is None:
                raise ValueError("stop strings need an engine with a tokenizer")
            self._append_forced(req, token_ids)
            req.n_segment, req.text, req.finish_reason = 0, "", None
            req.segment_start = len(req.tokens)
            req.segment_done.clear()
            try:
                self.cache.reserve(req.id, min(self.max_seq_len, len(req.tokens) + req.params.max_tokens))
            except CacheFullError:
                self._finish(req, "cache_full", emit=True, final=True)
                return
            req.state = RUNNING
            self._wake.notify_all()

    def close(self, request_id: str) -> None:
        """Finish a keep_open request and free its pages."""
        with self._lock:
            req = self._requests.get(request_id)
            if req is not None and req.state != FINISHED:
                self._finish(req, req.finish_reason or "stop", emit=False, final=True)

    def _get(self, request_id: str, states: tuple[str, ...]) -> _Request:
        req = self._requests.get(request_id)
        if req is None:
            raise ValueError(f"unknown request id {request_id!r}")
        if req.state not in states:
            raise ValueError(f"request {request_id!r} is {req.state}; expected one of {states}")
        return req

    def _append_forced(self, req: _Request, token_ids: list[int]) -> None:
        ids = [int(t) for t in token_ids]
        if any(not 0 <= t < self.config.vocab_size for t in ids):
            raise ValueError(f"forced token ids must lie in [0, {self.config.vocab_size})")
        if len(req.tokens) + len(ids) >= self.max_seq_len:
            raise ValueError(f"forcing {len(ids)} tokens would exceed the context of {self.max_seq_len}")
        if req.state == RUNNING:
            self.cache.reserve(
                req.id, min(self.max_seq_len, len(req.tokens) + len(ids) + req.params.max_tokens)
            )
        req.tokens.extend(ids)
        req.record.add_forced(ids)
        if req.seen is not None and ids:
            req.seen[torch.tensor(ids)] = True
        for t in ids:
            req.events.put(TokenEvent(req.id, t, self._piece(t), forced=True))

    # ---- the step loop ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def request_ids(self) -> list[str]:
        """Ids of the requests the engine holds (waiting, running or paused), in admission order."""
        with self._lock:
            return list(self._order)

    def has_work(self) -> bool:
        with self._lock:
            return any(r.state in (WAITING, RUNNING) for r in self._requests.values())

    def step(self) -> int:
        """Run one scheduling step; returns the number of tokens fed through the model."""
        with self._lock:
            self._admit()
            active = [self._requests[r] for r in self._order if self._requests[r].state == RUNNING]
            # Prefill: chunks of waiting tokens, FIFO over requests, up to `prefill_chunk` tokens in
            # all per step; chunks of equal length run as one batched forward.
            budget, chunks = self.runner.prefill_chunk, []
            for r in active:
                if budget == 0:
                    break
                if len(r.tokens) - r.n_fed > 1:
                    chunks.append((r, r.tokens[r.n_fed : r.n_fed + budget]))
                    budget -= len(chunks[-1][1])
            decode = [r for r in active if len(r.tokens) - r.n_fed == 1][: self.max_batch]
            fed, ready = 0, []
            for length in sorted({len(c) for _, c in chunks}, reverse=True):
                group = [(r, c) for r, c in chunks if len(c) == length]
                out = self.runner.prefill_batch([r.id for r, _ in group], [c for _, c in group],
                                                [r.n_fed for r, _ in group],
                                                routing=any(r.record.detailed for r, _ in group))  # fmt: skip
                for i, (r, _) in enumerate(group):
                    r.n_fed += length
                    r.record.add_routing(None if out.routing is None else out.routing[i])
                    fed += length
                    if r.n_fed == len(r.tokens):
                        ready.append((r, out.logits[i]))
            if decode:
                out = self.runner.decode([r.id for r in decode], [r.tokens[-1] for r in decode],
                                         [r.n_fed for r in decode],
                                         routing=any(r.record.detailed for r in decode))  # fmt: skip
                for i, r in enumerate(decode):
                    r.n_fed += 1
                    r.record.add_routing(None if out.routing is None else out.routing[i])
                    ready.append((r, out.logits[i]))
                fed += len(decode)
            if ready:
                self._sample(ready)
            return fed

    def _admit(self) -> None:
        running = sum(1 for r in self._requests.values() if r.state in (RUNNING, PAUSED))
        for rid in self._order:
            req = self._requests[rid]
            if req.state != WAITING:
                continue
            if running >= self.max_batch:
                break
            try:
                self.cache.reserve(rid, min(self.max_seq_len, len(req.tokens) + req.params.max_tokens))
            except CacheFullError:
                break  # FIFO: wait for pages to come back
            req.state = RUNNING
            running += 1

    def _sample(self, ready: list[tuple[_Request, torch.Tensor]]) -> None:
        reqs = [r for r, _ in ready]
        logits = torch.stack([lg for _, lg in ready])
        params, generators = [r.params for r in reqs], [r.generator for r in reqs]
        rows = sample_batch(logits, params, generators, [r.counts for r in reqs], [r.seen for r in reqs])
        for req, row in zip(reqs, rows):
            p = req.params
            req.tokens.append(row.token_id)
            req.n_segment += 1
            req.record.add_sampled(row.token_id, row.logprob, p.temperature, row.kept_ids)
            if req.counts is not None:
                req.counts[row.token_id] += 1
                req.seen[row.token_id] = True
            reason = None
            stops = set(p.stop_token_ids) | (set() if p.ignore_eos else {self.config.eos_token_id})
            if row.token_id in stops:
                reason = "stop"
            text = self._segment_text(req)
            if p.stop:
                hit = min((i for i in (text.find(s) for s in p.stop) if i >= 0), default=-1)
                if hit >= 0:
                    text, reason = text[:hit], "stop"
            if reason is None and (req.n_segment >= p.max_tokens or len(req.tokens) >= self.max_seq_len):
                reason = "length"
            delta = ""
            visible = text if reason is not None else _safe_prefix(text, p.stop)
            if visible.startswith(req.text):
                delta, req.text = visible[len(req.text) :], visible
            event = TokenEvent(req.id, row.token_id, delta, False, row.logprob if p.logprobs else None,
                               row.top_logprobs, None)  # fmt: skip
            req.all_text += delta
            if reason is None:
                req.events.put(event)
            else:
                event.finish_reason = reason
                req.events.put(event)
                self._finish(req, reason, emit=False, final=not req.keep_open)

    def _segment_text(self, req: _Request) -> str:
        return self._decode(req.tokens[req.segment_start :])

    def _piece(self, token: int) -> str:
        return self._decode([token])

    def _decode(self, ids: list[int]) -> str:
        # Models may have more embedding rows than the tokenizer has ids: those decode to nothing.
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode([t for t in ids if t < self.tokenizer.vocab_size])

    def _finish(self, req: _Request, reason: str, *, emit: bool, final: bool) -> None:
        req.finish_reason = reason
        if emit:
            req.events.put(TokenEvent(req.id, None, "", finish_reason=reason))
        if final:
            req.state = FINISHED
            self.cache.free(req.id)
            self._requests.pop(req.id, None)
            self._order = [r for r in self._order if r != req.id]
        else:
            req.state = PAUSED
        req.segment_done.set()

    def _completion(self, req: _Request) -> Completion:
        with self._lock:
            return Completion(req.id, req.record.prompt_ids, list(req.record.token_ids), req.all_text,
                              req.finish_reason, req.record)  # fmt: skip

    # ---- background thread ------------------------------------------------------------------
    def start(self) -> None:
        """Run `step()` in a daemon thread whenever there is work (idempotent)."""
        with self._lock:
            if self.running:
                return
            self._stop_thread = False
            self._thread = threading.Thread(target=self._loop, name="dsv32-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stop_thread = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stop_thread and not self.has_work():
                    self._wake.wait()
                if self._stop_thread:
                    return
            try:
                if self.step() == 0:  # nothing could run (e.g. waiting for pages): do not spin
                    with self._lock:
                        self._wake.wait(timeout=0.01)
            except Exception:  # a failed step must not leave streams waiting forever
                log.exception("engine step failed; cancelling all requests")
                with self._lock:
                    for req in list(self._requests.values()):
                        if req.state != FINISHED:
                            self._finish(req, "error", emit=True, final=True)

    # ---- convenience ------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams] | None = None,
                 on_event: Callable[[TokenEvent], None] | None = None) -> list[Completion]:  # fmt: skip
        """Submit all prompts, run to completion, return their completions in order."""
        plist = params if isinstance(params, list) else [params] * len(prompts)
        handles = [self.submit(p, sp) for p, sp in zip(prompts, plist)]
        if not self.running:
            while self.has_work():
                self.step()
        results = []
        for h in handles:
            for event in h.stream():
                if on_event is not None:
                    on_event(event)
            results.append(self._completion(h._req))
        return results
