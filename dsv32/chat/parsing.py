"""Completion text to an assistant message, in one shot or as a stream of deltas.

A completion (what the model writes after the prompt) has the shape
`{reasoning}</think>{content}` + optionally `\\n\\n` + a DSML function-calls block, then the
end-of-sentence token or the end of the text (engines often strip the stop token). In chat mode
there is no reasoning part. `StreamingParser` reads it as a left-to-right state machine
(reasoning -> content -> tool calls -> after the block -> done): text is released as a delta as
soon as no marker can start inside it, a tool call is released when its invoke closes and its
arguments check out, and nothing is ever released twice, so the deltas of any chunking add up to
the one-shot result. `parse_completion` is the same machine fed the whole text.

Errors are values: a `ParseError` names the reason and the character offset, and carries what was
parsed before it (`partial`), e.g. the reasoning of a completion cut off by a token limit.
Rejected: reserved tokens (BOS, EOS mid-text, `<｜User｜>`, `<｜Assistant｜>`, `<think>`, `</think>`
or a DSML tag) inside reasoning, content or parameter values; a block that is not exactly the
encoder's format; text after the block or after EOS; a `string="false"` value that is not JSON;
and, when `tools` are given, an unknown tool or arguments that fail the tool's JSON schema
(subset in `dsv32.chat.schema`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dsv32.chat.dsml import RESERVED, Malformed, NeedMore, decode_arguments, peek, read_invoke, scan_markers
from dsv32.chat.messages import normalize_function
from dsv32.chat.schema import value_problem
from dsv32.chat.tokens import EOS, FUNCTION_CALLS_END, FUNCTION_CALLS_START, INVOKE_START, THINK_END

TOOL_CALLS_OPEN = "\n\n" + FUNCTION_CALLS_START
_LONGEST_RESERVED = max(len(t) for t in RESERVED)


@dataclass(frozen=True)
class ParsedMessage:
    """An assistant message; `reasoning_content` is None in chat mode."""

    content: str
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    saw_eos: bool = False  # the completion ended with the end-of-sentence token

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI chat message dict (DeepSeek's `reasoning_content` included when present)."""
        out: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning_content is not None:
            out["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        return out


@dataclass(frozen=True)
class ParseError:
    """Why a completion is malformed, where (character offset), and what was parsed before it."""

    reason: str
    position: int
    partial: ParsedMessage

    def __str__(self) -> str:
        return f"malformed completion at character {self.position}: {self.reason}"


@dataclass
class StreamDelta:
    """What one `feed` released: new reasoning and content text, completed tool calls, an error."""

    reasoning_content: str = ""
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    error: ParseError | None = None

    def __bool__(self) -> bool:
        return bool(self.reasoning_content or self.content or self.tool_calls or self.error)


class StreamingParser:
    """Incremental parser of one completion; see the module docstring.

    `feed(chunk)` and `finish()` return a `StreamDelta`; `result()` (after `finish`) returns the
    `ParsedMessage` or `ParseError`. `tools` are OpenAI tool dicts; `make_id(i)` names the i-th call.
    """

    def __init__(
        self,
        tools: list[dict[str, Any]] | None = None,
        thinking: bool = True,
        make_id: Callable[[int], str] | None = None,
    ):
        self._schemas: dict[str, Any] | None = None
        if tools is not None:
            functions = [normalize_function(t, f"tools[{i}]") for i, t in enumerate(tools)]
            self._schemas = {f["name"]: f.get("parameters", {}) for f in functions}
        self._thinking = thinking
        self._make_id = make_id or (lambda i: f"call_{i}")
        self._state = "reasoning" if thinking else "content"
        self._buf = ""
        self._offset = 0  # completion offset of self._buf[0]
        self._reasoning: list[str] = []
        self._content: list[str] = []
        self._calls: list[dict[str, Any]] = []
        self._saw_eos = False
        self._error: ParseError | None = None
        self._finished = False
        self._calls_seen = 0  # how much of the calls buffer was already searched for a tag

    # -- public -------------------------------------------------------------------------------
    def feed(self, chunk: str) -> StreamDelta:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        if not isinstance(chunk, str):
            return self._fail(f"expected text, got {type(chunk).__name__}", self._offset, StreamDelta())
        if self._state == "error":
            return StreamDelta()  # the error was reported once; later text is ignored
        self._buf += chunk
        return self._advance(final=False)

    def finish(self) -> StreamDelta:
        if self._finished:
            return StreamDelta()
        self._finished = True
        return self._advance(final=True)

    def result(self) -> ParsedMessage | ParseError:
        if not self._finished:
            raise RuntimeError("result() before finish()")
        return self._error or self._message()

    # -- internals ----------------------------------------------------------------------------
    def _message(self) -> ParsedMessage:
        return ParsedMessage(
            content="".join(self._content),
            reasoning_content="".join(self._reasoning) if self._thinking else None,
            tool_calls=list(self._calls),
            saw_eos=self._saw_eos,
        )

    def _fail(self, reason: str, position: int, delta: StreamDelta) -> StreamDelta:
        self._error = ParseError(reason, position, self._message())
        self._state = "error"
        delta.error = self._error
        return delta

    def _consume(self, n: int) -> None:
        self._buf = self._buf[n:]
        self._offset += n

    def _advance(self, final: bool) -> StreamDelta:
        delta = StreamDelta()
        try:
            while self._state != "error":
                step = getattr(self, f"_step_{self._state}")(delta, final)
                if not step:
                    break
        except Malformed as err:
            return self._fail(err.reason, self._offset + err.at, delta)
        except NeedMore:
            if final:
                return self._fail("completion ended inside the tool calls", self._offset, delta)
        return delta

    def _text_step(self, delta: StreamDelta, final: bool, part: str, ends: tuple[str, ...]) -> str | None:
        """Release text of `part` up to the next decided marker; return that marker (or None)."""
        markers = ends + tuple(t for t in RESERVED if t not in ends)
        pos, marker = scan_markers(self._buf, markers, final)
        text = self._buf[:pos]
        if text and part == "reasoning":
            self._reasoning.append(text)
            delta.reasoning_content += text
        elif text:
            self._content.append(text)
            delta.content += text
        self._consume(pos)
        if marker is not None and marker not in ends:
            raise Malformed(f"unexpected {marker!r} in the {part}", 0)
        return marker

    def _step_reasoning(self, delta: StreamDelta, final: bool) -> bool:
        marker = self._text_step(delta, final, "reasoning", (THINK_END,))
        if marker == THINK_END:
            self._consume(len(THINK_END))
            self._state = "content"
            return True
        if final:
            raise Malformed(f"completion ended inside the reasoning (no {THINK_END!r})", 0)
        return False

    def _step_content(self, delta: StreamDelta, final: bool) -> bool:
        marker = self._text_step(delta, final, "content", (EOS, TOOL_CALLS_OPEN))
        if marker == EOS:
            self._consume(len(EOS))
            self._saw_eos = True
            self._state = "done"
            return True
        if marker == TOOL_CALLS_OPEN:
            self._consume(len(TOOL_CALLS_OPEN))
            self._state = "calls"
            return True
        return False

    def _step_calls(self, delta: StreamDelta, final: bool) -> bool:
        # An invoke is re-read from its start, so only try again once new text holds a reserved
        # token (every DSML tag holds one): linear work for long arguments. A malformed invoke is
        # then reported at the next tag or at finish, with the same final result.
        window = self._buf[max(0, self._calls_seen - _LONGEST_RESERVED + 1) :]
        if not final and not any(token in window for token in RESERVED):
            self._calls_seen = len(self._buf)
            return False
        self._calls_seen = len(self._buf)
        # Between invokes: "\n" then another invoke or the end of the block.
        if not peek(self._buf, 0, "\n"):
            raise Malformed("expected a newline after a DSML tag", 0)
        i = 1
        if peek(self._buf, i, FUNCTION_CALLS_END):
            if not self._calls:
                raise Malformed("a function-calls block with no invoke", i)
            self._consume(i + len(FUNCTION_CALLS_END))
            self._state = "after_calls"
            return True
        if not peek(self._buf, i, INVOKE_START):
            raise Malformed(f"expected {INVOKE_START!r} or {FUNCTION_CALLS_END!r}", i)
        raw, end = read_invoke(self._buf, i)
        call = self._checked_call(raw, i)
        self._calls.append(call)
        delta.tool_calls.append(call)
        self._consume(end)
        self._calls_seen = 0
        return True

    def _checked_call(self, raw: Any, at: int) -> dict[str, Any]:
        try:
            arguments = decode_arguments(raw)
        except ValueError as err:
            raise Malformed(str(err), at) from None
        if self._schemas is not None:
            if raw.name not in self._schemas:
                known = ", ".join(sorted(self._schemas)) or "none"
                raise Malformed(f"unknown tool {raw.name!r} (tools: {known})", at)
            problem = value_problem(arguments, self._schemas[raw.name], f"arguments of tool {raw.name!r}")
            if problem:
                raise Malformed(problem, at)
        return {
            "id": self._make_id(len(self._calls)),
            "type": "function",
            "function": {"name": raw.name, "arguments": json.dumps(arguments, ensure_ascii=False)},
        }

    def _step_after_calls(self, delta: StreamDelta, final: bool) -> bool:
        if not self._buf:
            return False
        if peek(self._buf, 0, EOS):
            self._consume(len(EOS))
            self._saw_eos = True
            self._state = "done"
            return True
        raise Malformed("unexpected text after the tool calls", 0)

    def _step_done(self, delta: StreamDelta, final: bool) -> bool:
        if self._buf:
            raise Malformed("unexpected text after the end-of-sentence token", 0)
        return False


def parse_completion(
    text: str,
    tools: list[dict[str, Any]] | None = None,
    thinking: bool = True,
    make_id: Callable[[int], str] | None = None,
) -> ParsedMessage | ParseError:
    """Parse a whole completion; never raises for any text (bad `tools` raise EncodingError)."""
    parser = StreamingParser(tools=tools, thinking=thinking, make_id=make_id)
    parser.feed(text)
    parser.finish()
    return parser.result()
