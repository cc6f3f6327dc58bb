"""POST /v1/completions: raw-text generation (no chat template, no parser).

The prompt is tokenised as is (special-token strings in it, BOS included, become their ids; none
are added) or given as token ids. A batch of prompts gives `len(prompts) * n` choices, choice
`p * n + i` being the i-th sample of prompt p. `logprobs: k` returns the legacy format
(`tokens`, `token_logprobs`, `top_logprobs` as {token: logprob}, `text_offset`). `echo` prepends
the prompt text (its tokens get no logprobs: the engine does not score prompts).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from dsv32.chat.tokens import EOS
from dsv32.serve.backend import TokenOutput
from dsv32.serve.chat_plan import fit_max_tokens, sampling_params, single_token_id
from dsv32.serve.detokenize import token_bytes
from dsv32.serve.generation import TextEvent, run_text_choice
from dsv32.serve.protocol import CompletionRequest, bad_request
from dsv32.serve.state import ServerState
from dsv32.serve.streaming import merge_streams, sse

MAX_CHOICES = 64


class _LegacyLogprobs:
    def __init__(self, state: ServerState, offset: int):
        self.state = state
        self.offset = offset
        self.data: dict[str, list] = {
            "tokens": [],
            "token_logprobs": [],
            "top_logprobs": [],
            "text_offset": [],
        }

    def add(self, tokens: list[TokenOutput]) -> dict[str, list]:
        start = {k: len(v) for k, v in self.data.items()}
        for t in tokens:
            text = token_bytes(self.state.tokenizer, t.token_id).decode("utf-8", errors="replace")
            self.data["tokens"].append(text)
            self.data["token_logprobs"].append(t.logprob)
            top = {}
            for alt, lp in t.top_logprobs:
                top[token_bytes(self.state.tokenizer, alt).decode("utf-8", errors="replace")] = lp
            self.data["top_logprobs"].append(top)
            self.data["text_offset"].append(self.offset)
            self.offset += len(text)
        return {k: v[start[k] :] for k, v in self.data.items()}


def plan_completion(state: ServerState, req: CompletionRequest) -> list[tuple[list[int], str, Any]]:
    """Per prompt: (token ids, prompt text, sampling params); APIError for bad prompts."""
    prompts = req.prompts()
    if len(prompts) * req.n > MAX_CHOICES:
        raise bad_request(f"at most {MAX_CHOICES} choices (prompts x n) per request", "n")
    vocab = state.tokenizer.vocab_size
    eos = single_token_id(state.tokenizer, EOS)
    planned = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            ids = state.tokenizer.encode(prompt)
            text = prompt
        else:
            if any(not 0 <= t < vocab for t in prompt):
                raise bad_request(f"prompt {i}: token ids must be in [0, {vocab})", "prompt")
            ids = list(prompt)
            text = state.tokenizer.decode(ids)
        if not ids:
            raise bad_request(f"prompt {i} is empty", "prompt")
        max_tokens = fit_max_tokens(req.max_tokens, len(ids), state.backend.context_length)
        params = sampling_params(req, max_tokens, req.logprobs, (eos,) if eos is not None else ())
        planned.append((ids, text, params))
    return planned


def _streams(state: ServerState, req: CompletionRequest, planned: list, request_id: str) -> list:
    streams = []
    for p, (ids, _, params) in enumerate(planned):
        for i in range(req.n):
            if params.seed is not None and i:
                params_i = type(params)(**{**params.__dict__, "seed": params.seed + i})
            else:
                params_i = params
            streams.append(
                run_text_choice(
                    state.backend,
                    state.tokenizer,
                    ids,
                    params_i,
                    req.stop_list(),
                    f"{request_id}-{p * req.n + i}",
                )
            )
    return streams


async def completion_events(
    state: ServerState, req: CompletionRequest, planned: list, request_id: str, started: float
) -> AsyncIterator[tuple[int, TextEvent]]:
    first_seen = False
    async for index, event in merge_streams(_streams(state, req, planned, request_id)):
        if event.first_token and not first_seen:
            first_seen = True
            state.metrics.first_token(time.monotonic() - started)
        yield index, event


def _usage(state: ServerState, req: CompletionRequest, planned: list, completion: int) -> dict[str, int]:
    prompt = sum(len(ids) for ids, _, _ in planned)
    state.metrics.tokens(prompt, completion)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def completion_response(
    state: ServerState, req: CompletionRequest, planned: list, request_id: str, started: float
) -> dict[str, Any]:
    total = len(planned) * req.n
    texts = [planned[i // req.n][1] if req.echo else "" for i in range(total)]
    logprobs = [_LegacyLogprobs(state, len(texts[i])) for i in range(total)]
    finish: list[str | None] = [None] * total
    completion = 0
    async for index, event in completion_events(state, req, planned, request_id, started):
        texts[index] += event.text
        logprobs[index].add(event.tokens)
        if event.finish_reason is not None:
            finish[index] = event.finish_reason
            completion += event.completion_tokens
    choices = [
        {
            "index": i,
            "text": texts[i],
            "logprobs": logprobs[i].data if req.logprobs is not None else None,
            "finish_reason": finish[i],
        }
        for i in range(total)
    ]
    return {
        "id": request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": state.model_name,
        "system_fingerprint": state.fingerprint,
        "choices": choices,
        "usage": _usage(state, req, planned, completion),
    }


async def completion_stream(
    state: ServerState, req: CompletionRequest, planned: list, request_id: str, started: float
) -> AsyncIterator[str]:
    base = {
        "id": request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": state.model_name,
    }
    total = len(planned) * req.n
    logprobs = [_LegacyLogprobs(state, 0) for _ in range(total)]
    if req.echo:
        for i in range(total):
            text = planned[i // req.n][1]
            logprobs[i].offset = len(text)
            yield sse(
                {**base, "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": None}]}
            )
    completion = 0
    async for index, event in completion_events(state, req, planned, request_id, started):
        lp = logprobs[index].add(event.tokens) if req.logprobs is not None else None
        if event.finish_reason is not None:
            completion += event.completion_tokens
        if event.text or event.finish_reason is not None or (lp and lp["tokens"]):
            choice = {
                "index": index,
                "text": event.text,
                "logprobs": lp,
                "finish_reason": event.finish_reason,
            }
            yield sse({**base, "choices": [choice]})
    usage = _usage(state, req, planned, completion)
    if req.include_usage():
        yield sse({**base, "choices": [], "usage": usage})
