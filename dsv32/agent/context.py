"""Context management for long tool-use trajectories (SPEC section 6) and prompt token counting.

A *tool round* is an assistant message carrying `tool_calls` together with the `tool` messages that
answer it. Strategies only ever remove whole rounds, so the DeepSeek-V3.2 encoding (which matches
tool results to the preceding calls by order) stays valid. Every other message (system, user,
an assistant reply without tool calls) is never dropped by the discard strategies.

Strategies, applied by the agent when the prompt passes `threshold x context_window` tokens:
- `none`: nothing; the run ends when the prompt no longer fits the window.
- `summary`: the model summarises the trajectory so far; the conversation restarts from the
  messages up to the task's user message plus one user message carrying the summary.
- `discard-75`: drop the oldest max(1, floor(0.75 x n)) of the n tool rounds (of 1, 2, 3, 4 or 8
  rounds it keeps the newest 0, 1, 1, 1 or 2).
- `discard-all`: drop every tool round (system and user messages remain).
- `parallel-fewest-step`: no compaction; N independent runs, the answer of the run with the fewest
  steps wins (handled by the agent; here it only carries N).

Token counts come from a tokenizer over the DeepSeek-V3.2 encoding of the messages
(`TokenizerCounter`). `ByteCounter` is the fallback when no tokenizer is at hand: it counts UTF-8
bytes of the same encoded prompt divided by `bytes_per_token` (1.0 gives an exact byte-level
count; the default 4.0 approximates a BPE vocabulary on English text). It is an estimate, labelled
as such in trajectories (`counter` field).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Message = dict[str, Any]
SUMMARY_PREFIX = "Summary of the progress so far (earlier tool calls were removed to save context):"
SUMMARY_REQUEST = (
    "The context is nearly full. Summarise the progress on the task so far: every fact found that "
    "matters for the answer (with its source document), what has been ruled out, and what remains "
    "to be done. Do not call tools; reply with the summary only."
)


def is_tool_call(message: Message) -> bool:
    return message.get("role") == "assistant" and bool(message.get("tool_calls"))


def tool_rounds(messages: Sequence[Message]) -> list[list[int]]:
    """Index lists of the tool rounds: [assistant-with-calls, its tool results...] in order.

    Raises ValueError for a `tool` message that does not follow a tool-call assistant message.
    """
    rounds: list[list[int]] = []
    current: list[int] | None = None
    for i, m in enumerate(messages):
        role = m.get("role")
        if is_tool_call(m):
            current = [i]
            rounds.append(current)
        elif role == "tool":
            if current is None:
                raise ValueError(f"message {i}: a tool result without a preceding assistant tool call")
            current.append(i)
        else:
            current = None
    return rounds


def drop_rounds(messages: Sequence[Message], n_drop: int) -> list[Message]:
    """The messages without their oldest `n_drop` tool rounds."""
    rounds = tool_rounds(messages)
    dropped = {i for r in rounds[:n_drop] for i in r}
    return [m for i, m in enumerate(messages) if i not in dropped]


def task_prefix(messages: Sequence[Message]) -> list[Message]:
    """Messages up to and including the last user message that is not a context summary."""
    last = -1
    for i, m in enumerate(messages):
        if m.get("role") == "user" and not str(m.get("content") or "").startswith(SUMMARY_PREFIX):
            last = i
    if last < 0:
        raise ValueError("the conversation has no user message to restart from")
    return list(messages[: last + 1])


Summarizer = Callable[[list[Message]], str]


class ContextStrategy(Protocol):
    name: str

    def compact(self, messages: list[Message], summarize: Summarizer) -> list[Message] | None:
        """The compacted conversation, or None when this strategy cannot shrink it."""
        ...


@dataclass(frozen=True)
class NoCompaction:
    name: str = "none"

    def compact(self, messages: list[Message], summarize: Summarizer) -> list[Message] | None:
        return None


@dataclass(frozen=True)
class DiscardRounds:
    """Drop the oldest max(1, floor(fraction x n)) tool rounds (fraction 1.0 drops them all)."""

    fraction: float
    name: str = "discard"

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"discard fraction must be in (0, 1], got {self.fraction}")

    def compact(self, messages: list[Message], summarize: Summarizer) -> list[Message] | None:
        n = len(tool_rounds(messages))
        if n == 0:
            return None
        return drop_rounds(messages, max(1, math.floor(self.fraction * n + 1e-9)))


@dataclass(frozen=True)
class Summarize:
    """Ask the model for a summary, then restart from the task prefix plus the summary."""

    name: str = "summary"

    def compact(self, messages: list[Message], summarize: Summarizer) -> list[Message] | None:
        if not tool_rounds(messages):
            return None
        summary = summarize(list(messages)).strip()
        return task_prefix(messages) + [{"role": "user", "content": f"{SUMMARY_PREFIX}\n{summary}"}]


@dataclass(frozen=True)
class ParallelFewestStep:
    """N independent runs without compaction; the answer of the run with fewest steps is kept."""

    n: int = 4
    name: str = "parallel-fewest-step"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"parallel-fewest-step needs n >= 1, got {self.n}")

    def compact(self, messages: list[Message], summarize: Summarizer) -> list[Message] | None:
        return None


STRATEGY_NAMES = ("none", "summary", "discard-75", "discard-all", "parallel-fewest-step")


def make_strategy(name: str, parallel_n: int = 4) -> ContextStrategy:
    """Strategy by its name in STRATEGY_NAMES."""
    if name == "none":
        return NoCompaction()
    if name == "summary":
        return Summarize()
    if name == "discard-75":
        return DiscardRounds(0.75, name="discard-75")
    if name == "discard-all":
        return DiscardRounds(1.0, name="discard-all")
    if name == "parallel-fewest-step":
        return ParallelFewestStep(parallel_n)
    raise ValueError(f"unknown context strategy {name!r}; expected one of {', '.join(STRATEGY_NAMES)}")


def parse_strategies(text: str) -> list[str]:
    """Comma-separated names or `all` -> validated list of names."""
    names = (
        list(STRATEGY_NAMES) if text.strip() == "all" else [s.strip() for s in text.split(",") if s.strip()]
    )
    for name in names:
        make_strategy(name)
    if not names:
        raise ValueError(
            "--strategies: expected `all` or a comma-separated list of " + ", ".join(STRATEGY_NAMES)
        )
    return names


# ---- token counting -------------------------------------------------------------------------


def encode_prompt(messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None = None) -> str:
    """The DeepSeek-V3.2 thinking-mode prompt of the conversation, tools attached to the first message."""
    from dsv32.chat.encoding import encode_messages

    return encode_messages(list(messages), "thinking", True, tools=list(tools) if tools else None)


class TokenCounter(Protocol):
    name: str

    def count(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None = None) -> int: ...


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class TokenizerCounter:
    """Exact prompt length: len(tokenizer.encode(encoded prompt))."""

    tokenizer: Tokenizer
    name: str = "tokenizer"

    def count(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None = None) -> int:
        return len(self.tokenizer.encode(encode_prompt(messages, tools)))


@dataclass(frozen=True)
class ByteCounter:
    """Fallback estimate: ceil(UTF-8 bytes of the encoded prompt / bytes_per_token)."""

    bytes_per_token: float = 4.0

    def __post_init__(self) -> None:
        if self.bytes_per_token <= 0:
            raise ValueError(f"bytes_per_token must be positive, got {self.bytes_per_token}")

    @property
    def name(self) -> str:
        return f"estimate: utf-8 bytes/{self.bytes_per_token:g}"

    def count(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None = None) -> int:
        return math.ceil(len(encode_prompt(messages, tools).encode("utf-8")) / self.bytes_per_token)
