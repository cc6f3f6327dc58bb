"""Context management inside training episodes: when to compact an episode's conversation, with
which `dsv32.agent.context` strategy, and where the summary text comes from.

`ContextConfig(strategy, budget)`: after a turn's tool results, when the episode's current token
sequence is longer than `budget` tokens and the episode will take another turn, the conversation is
compacted and the episode continues from the encoded compacted messages as a new sequence (see
`dsv32.rl.rollout`). The measure is the sequence itself (prompt + sampled + forced ids), not a
re-encoding of the messages: that is the context the next turn is conditioned on.

Strategies: `none` (today's episodes), `summary`, `discard-75`, `discard-all`. The evaluation-time
baseline `parallel-fewest-step` is not a compaction (it selects among independent runs; a GRPO group
already is G independent runs) and is rejected here.

The summary is extractive and deterministic (`tool_log_summary`): one line per tool call with its
arguments and result, in call order, the lines of an earlier summary carried over. Sampling it from
the policy would add a sampled turn whose tokens need their own records and credit; the extractive
summary keeps the new segment's prompt a function of the episode so far (pure context, no loss)
while keeping every fact the tools returned, which is what the agent's summary request asks for.
What it leaves out: the model's reasoning and its own words about what remains to be done.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from dsv32.agent.context import (
    STRATEGY_NAMES,
    SUMMARY_PREFIX,
    ContextStrategy,
    Message,
    make_strategy,
    tool_rounds,
)

TRAINING_STRATEGIES = ("none", "summary", "discard-75", "discard-all")
RESULT_CHARS = 200  # a summary line keeps this much of a tool result


@dataclass(frozen=True)
class ContextConfig:
    """Compact an episode's conversation with `strategy` once its sequence passes `budget` tokens."""

    strategy: str = "none"
    budget: int = 0  # tokens; ignored by "none"

    def __post_init__(self) -> None:
        if self.strategy not in TRAINING_STRATEGIES:
            if self.strategy in STRATEGY_NAMES:
                raise ValueError(
                    f"context strategy {self.strategy!r} selects among independent runs at evaluation "
                    f"time and does not compact; expected one of {', '.join(TRAINING_STRATEGIES)}"
                )
            make_strategy(self.strategy)  # raises the unknown-name error
        if self.strategy != "none" and (not isinstance(self.budget, int) or self.budget < 1):
            raise ValueError(
                f"context budget must be an integer >= 1 token with strategy {self.strategy!r}, "
                f"got {self.budget!r}"
            )

    @property
    def enabled(self) -> bool:
        return self.strategy != "none"

    def make(self) -> ContextStrategy:
        return make_strategy(self.strategy)

    def check_prompt(self, n_prompt: int) -> None:
        """A budget below the episode's prompt would compact before the first turn could help."""
        if self.enabled and self.budget < n_prompt:
            raise ValueError(
                f"context budget of {self.budget} tokens is below the episode's prompt of {n_prompt} "
                f"tokens; expected a budget >= the prompt size"
            )


def _arguments(arguments: object) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, ensure_ascii=False, sort_keys=True)


def _clip(text: str) -> str:
    return text if len(text) <= RESULT_CHARS else text[: RESULT_CHARS - 3] + "..."


def _summary_lines(message: Message) -> list[str]:
    """The lines of an earlier summary (a user message opening with SUMMARY_PREFIX), else none."""
    content = str(message.get("content") or "")
    if message.get("role") != "user" or not content.startswith(SUMMARY_PREFIX):
        return []
    return [line for line in content[len(SUMMARY_PREFIX) :].splitlines() if line.strip()]


def tool_log_summary(messages: Sequence[Message]) -> str:
    """Every tool call of the conversation with its result, one `- name(arguments) -> result` line
    each (results clipped to RESULT_CHARS characters), in order; the lines of an earlier summary are
    carried over, so facts survive repeated compactions."""
    calls_at = {rnd[0]: rnd for rnd in tool_rounds(messages)}
    lines = []
    for i, message in enumerate(messages):
        lines += _summary_lines(message)
        if i not in calls_at:
            continue
        results = [messages[j] for j in calls_at[i][1:]]
        for call, result in zip(message["tool_calls"], results):
            fn = call.get("function", call)
            content = _clip(str(result.get("content") or ""))
            lines.append(f"- {fn.get('name')}({_arguments(fn.get('arguments', {}))}) -> {content}")
    return "\n".join(lines) if lines else "- no tool calls yet"


def compact(messages: list[Message], strategy: ContextStrategy) -> list[Message] | None:
    """The compacted conversation (None when the strategy cannot shrink it)."""
    return strategy.compact(list(messages), tool_log_summary)
