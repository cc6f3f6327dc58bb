"""One choice of a chat completion or a text completion, from engine tokens to client-facing pieces.

`run_chat_choice` streams `ChoiceEvent`s for one choice of a planned chat request: token ids are
detokenised incrementally (`IncrementalDetokenizer`), fed to the chat format's `StreamingParser`
(reasoning, content, tool calls), the content is cut at the first stop string (the engine request
is then closed, freeing its slot), and the last event carries the finish reason and token counts.
The forced tool-call text of `tool_choice` required/named is handled here (see chat_plan.py).

Malformed model output (a `ParseError` from the parser) does not fail the request: from the error
on, the remaining raw text is returned as content, and the final event carries `parse_error` with
the reason. Finish reasons: "tool_calls" when calls were parsed and nothing went wrong, "stop" (end
token or stop string), "length".

`run_text_choice` does the same for /v1/completions without the chat parser: raw text, stop
strings on it, and logprobs in the legacy `completions` format.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from dsv32.chat.parsing import StreamDelta, StreamingParser
from dsv32.chat.tokens import THINK_END
from dsv32.serve.backend import Backend, GenerationStep, SamplingParams, TokenOutput
from dsv32.serve.chat_plan import ChatPlan
from dsv32.serve.detokenize import IncrementalDetokenizer, StopMatcher, token_bytes
from dsv32.tokenizer import Tokenizer


@dataclass
class ChoiceEvent:
    reasoning: str = ""
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    parse_error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    first_token: bool = False  # this event carries the choice's first generated token

    def has_delta(self) -> bool:
        return bool(self.reasoning or self.content or self.tool_calls or self.logprobs)


def chat_logprob_entry(tokenizer: Tokenizer, out: TokenOutput) -> dict[str, Any]:
    """OpenAI chat `logprobs.content[i]`: token, logprob, bytes and the top alternatives."""

    def one(token_id: int, logprob: float) -> dict[str, Any]:
        raw = token_bytes(tokenizer, token_id)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

    entry = one(out.token_id, out.logprob if out.logprob is not None else 0.0)
    entry["top_logprobs"] = [one(t, lp) for t, lp in out.top_logprobs]
    return entry


async def _steps(
    backend: Backend, request_id: str, prompt: list[int], params: SamplingParams
) -> AsyncIterator[GenerationStep]:
    """The backend's stream, closed (and the request cancelled) however the consumer stops."""
    try:
        async with contextlib.aclosing(backend.generate(request_id, prompt, params)) as stream:
            async for step in stream:
                yield step
    finally:
        backend.cancel(request_id)


class _ChatState:
    """Parser + stop matcher + fallback to raw text after a parse error."""

    def __init__(self, tokenizer: Tokenizer, plan: ChatPlan, id_prefix: str):
        self.thinking = plan.thinking
        self.parser = StreamingParser(
            tools=plan.parser_tools, thinking=plan.thinking, make_id=lambda i: f"call_{id_prefix}_{i}"
        )
        self.stopper = StopMatcher(plan.stops)
        self.text = ""  # everything fed to the parser (forced text included)
        self.error: str | None = None
        self.calls = 0
        self.reasoning_len = 0
        self.content_len = 0

    def _fallback_start(self, position: int) -> int:
        """Where raw text resumes after an error: just after the last text the parser released."""
        if self.calls:
            return position
        end = self.text.find(THINK_END) if self.thinking else -1
        if self.thinking and (end < 0 or end >= position):
            return self.reasoning_len
        return (end + len(THINK_END) if end >= 0 else 0) + self.content_len

    def take(self, delta: StreamDelta, event: ChoiceEvent, final: bool, truncated: bool) -> None:
        event.reasoning += delta.reasoning_content
        self.reasoning_len += len(delta.reasoning_content)
        self.content_len += len(delta.content)
        self._content(delta.content, event)
        event.tool_calls.extend(delta.tool_calls)
        self.calls += len(delta.tool_calls)
        if delta.error is not None:
            rest = self.text[self._fallback_start(delta.error.position) :]
            in_reasoning = self.thinking and THINK_END not in self.text
            if final and truncated and in_reasoning:
                event.reasoning += rest  # cut off by the token limit while reasoning: not malformed
            else:
                if not (final and truncated):
                    self.error = str(delta.error)
                self._content(rest, event)

    def _content(self, text: str, event: ChoiceEvent) -> None:
        event.content += self.stopper.feed(text)

    def feed(self, text: str, event: ChoiceEvent) -> None:
        self.text += text
        if self.error is not None:
            self._content(text, event)
        else:
            self.take(self.parser.feed(text), event, final=False, truncated=False)

    def finish(self, event: ChoiceEvent, truncated: bool) -> None:
        if self.error is None:
            self.take(self.parser.finish(), event, final=True, truncated=truncated)
        event.content += self.stopper.flush()


async def run_chat_choice(
    backend: Backend, tokenizer: Tokenizer, plan: ChatPlan, request_id: str, seed_offset: int = 0
) -> AsyncIterator[ChoiceEvent]:
    """Events of one choice; the last has `finish_reason` and the token counts."""
    params = plan.params
    if params.seed is not None and seed_offset:
        params = replace(params, seed=params.seed + seed_offset)
    state = _ChatState(tokenizer, plan, request_id.replace("-", "_"))
    detok = IncrementalDetokenizer(tokenizer)
    prompt = list(plan.prompt_ids)
    forced_ids = tokenizer.encode(plan.forced_text) if plan.forced_text else []
    generated: list[int] = []
    prompt_tokens = len(prompt)
    reasoning_tokens = 0
    first = True
    # Phase 1 of a forced call in thinking mode: generate up to `</think>`.
    two_phase = bool(forced_ids) and plan.thinking
    if forced_ids and not plan.thinking:
        state.feed(plan.forced_text, ChoiceEvent())
        prompt += forced_ids
        prompt_tokens += len(forced_ids)
    phase_params = (
        replace(params, stop_token_ids=(*params.stop_token_ids, plan.think_end_id)) if two_phase else params
    )
    finish = "stop"
    phase = 0
    while True:
        last_reason = None
        async for step in _steps(backend, f"{request_id}.{phase}", prompt, phase_params):
            event = ChoiceEvent(first_token=first and bool(step.tokens))
            first = first and not step.tokens
            ids = [t.token_id for t in step.tokens]
            for t in ids:
                if (
                    plan.thinking
                    and plan.think_end_id is not None
                    and not reasoning_tokens
                    and t == plan.think_end_id
                ):
                    reasoning_tokens = len(generated) + 1
                generated.append(t)
            if params.logprobs is not None:
                event.logprobs = [chat_logprob_entry(tokenizer, t) for t in step.tokens]
            text = detok.add(ids)
            if step.finish_reason is not None:
                text += detok.flush()
            if text:
                state.feed(text, event)
            last_reason = step.finish_reason
            if state.stopper.stopped:
                last_reason = "stop_string"
            if event.has_delta() or event.first_token:
                yield event
            if last_reason is not None:
                break
        if (
            two_phase
            and phase == 0
            and last_reason == "stop"
            and generated
            and generated[-1] == plan.think_end_id
        ):
            remaining = params.max_tokens - len(generated)
            phase = 1
            event = ChoiceEvent()
            state.feed(plan.forced_text, event)
            if event.has_delta():
                yield event
            if remaining < 1:
                finish = "length"
                break
            prompt = prompt + generated + forced_ids
            prompt_tokens += len(forced_ids)
            detok = IncrementalDetokenizer(tokenizer)
            phase_params = replace(params, max_tokens=remaining)
            continue
        finish = {"length": "length", None: "stop", "abort": "stop"}.get(last_reason, "stop")
        break
    final = ChoiceEvent()
    state.finish(final, truncated=finish == "length")
    if plan.thinking and not reasoning_tokens:
        reasoning_tokens = len(generated) if THINK_END not in state.text else 0
    final.finish_reason = "tool_calls" if state.calls and state.error is None and finish == "stop" else finish
    final.parse_error = state.error
    final.prompt_tokens = prompt_tokens
    final.completion_tokens = len(generated)
    final.reasoning_tokens = reasoning_tokens
    yield final


@dataclass
class TextEvent:
    text: str = ""
    tokens: list[TokenOutput] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int = 0
    first_token: bool = False


async def run_text_choice(
    backend: Backend,
    tokenizer: Tokenizer,
    prompt: list[int],
    params: SamplingParams,
    stops: list[str],
    request_id: str,
) -> AsyncIterator[TextEvent]:
    """Raw-text events of one /v1/completions choice; the stop token's text is not included."""
    detok = IncrementalDetokenizer(tokenizer)
    stopper = StopMatcher(stops)
    count = 0
    first = True
    reason = "stop"
    async for step in _steps(backend, request_id, prompt, params):
        tokens = list(step.tokens)
        count += len(tokens)
        if step.finish_reason == "stop" and tokens and tokens[-1].token_id in params.stop_token_ids:
            tokens = tokens[:-1]
        event = TextEvent(tokens=tokens, first_token=first and bool(step.tokens))
        first = first and not step.tokens
        text = detok.add([t.token_id for t in tokens])
        if step.finish_reason is not None:
            text += detok.flush()
        event.text = stopper.feed(text)
        if step.finish_reason is not None:
            event.text += stopper.flush()
            reason = "length" if step.finish_reason == "length" else "stop"
        if stopper.stopped:
            reason = "stop"
        if event.text or event.tokens or event.first_token:
            yield event
        if stopper.stopped or step.finish_reason is not None:
            break
    yield TextEvent(finish_reason=reason, completion_tokens=count)
