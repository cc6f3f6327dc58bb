"""`ReplayBackend`: a deterministic `Backend` streaming scripted completions, for HTTP tests and benchmarks.

It is a test double, not a model: `script(prompt_text)` returns the completion text for a prompt,
which is tokenised and streamed one token per step (after `token_delay_s`), honouring what a real
engine honours: `max_tokens` ("length"), `stop_token_ids` (the stop token is the last one yielded,
"stop"), `banned_token_ids` (such tokens are skipped, as an engine would never sample them) and
cancellation ("abort"; the slot is freed at once). When the script runs out the request ends with
"stop", as if the engine had hit the end-of-sentence token. Log-probabilities are a fixed function
of the position (`-0.1 * (1 + i % 5)`), with `k` alternatives `(id + j) % vocab` at lower values,
so tests can check that they travel through the server unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from dsv32.serve.backend import Backend, BackendStats, GenerationStep, SamplingParams, TokenOutput
from dsv32.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class ReplayBackend(Backend):
    def __init__(
        self,
        tokenizer: Tokenizer,
        script: Callable[[str], str],
        context_length: int = 4096,
        token_delay_s: float = 0.0,
    ):
        self.tokenizer = tokenizer
        self.script = script
        self.context_length = context_length
        self.token_delay_s = token_delay_s
        self.running: set[str] = set()
        self.cancelled: list[str] = []
        self.finished: dict[str, str] = {}
        self.prompts: list[list[int]] = []
        self.params: list[SamplingParams] = []

    @staticmethod
    def logprob_at(position: int) -> float:
        return -0.1 * (1 + position % 5)

    def _token(self, token_id: int, position: int, k: int | None) -> TokenOutput:
        if k is None:
            return TokenOutput(token_id)
        lp = self.logprob_at(position)
        vocab = self.tokenizer.vocab_size
        alternatives = [(token_id, lp)] + [((token_id + j) % vocab, lp - j) for j in range(1, k)]
        return TokenOutput(token_id, lp, tuple(alternatives[:k]))

    async def generate(
        self, request_id: str, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[GenerationStep]:
        if len(prompt_ids) + 1 > self.context_length:
            raise ValueError(
                f"prompt of {len(prompt_ids)} tokens does not fit the context {self.context_length}"
            )
        self.prompts.append(list(prompt_ids))
        self.params.append(params)
        text = self.script(self.tokenizer.decode(prompt_ids))
        ids = [i for i in self.tokenizer.encode(text) if i not in params.banned_token_ids]
        limit = min(params.max_tokens, self.context_length - len(prompt_ids))
        self.running.add(request_id)
        reason = "abort"
        try:
            for position, token_id in enumerate(ids):
                if request_id not in self.running:
                    break
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                else:
                    await asyncio.sleep(0)
                out = self._token(token_id, position, params.logprobs)
                if token_id in params.stop_token_ids:
                    reason = "stop"
                elif position + 1 >= limit:
                    reason = "length"
                else:
                    yield GenerationStep((out,))
                    continue
                yield GenerationStep((out,), reason)
                return
            else:
                reason = "stop"
                yield GenerationStep((), "stop")
                return
            yield GenerationStep((), "abort")
        finally:
            if request_id in self.running:
                self.running.discard(request_id)
                if reason == "abort":
                    self.cancelled.append(request_id)
            self.finished[request_id] = reason

    def cancel(self, request_id: str) -> None:
        if request_id in self.running:
            self.running.discard(request_id)
            self.cancelled.append(request_id)

    def stats(self) -> BackendStats:
        return BackendStats(running=len(self.running), waiting=0)
