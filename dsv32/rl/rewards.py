"""Rule-based rewards (SPEC section 3): outcome from a verifier, format, length penalty, and
language/format consistency.

    R = outcome * well_formed + w_format * (well_formed - 1) - w_length * length_penalty
        + w_consistency * (consistency - 1)

- outcome in [0, 1]: the task's verifier on the parsed final answer (a reasoning task's exact
  answer check, or an environment's grader); counted only when the completion is well formed.
- well_formed (0/1): every assistant turn parses in the DeepSeek-V3.2 format (`parse_completion`),
  ends with the end-of-sentence token (not cut off by the token limit), and in thinking mode has
  non-empty reasoning. A malformed completion loses w_format.
- length_penalty in [0, 1]: 0 up to `length_budget` sampled tokens, rising linearly to 1 at
  `length_limit` (and 1 beyond): the V3.2 preset sets a tight budget; the Speciale preset relaxes it.
- consistency in [0, 1]: the share of letters in the reasoning and answer written in the prompt's
  dominant script (Latin, CJK, or other), the paper's language-consistency reward made checkable
  without a model; in chat (non-thinking) mode a `<think>` block in the answer is a format
  inconsistency and scores 0.
What is left out: the rubric reward model for tasks without a checker (SPEC section 3); every task
here has a checker.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from dsv32.chat.parsing import ParsedMessage, ParseError, parse_completion
from dsv32.chat.tokens import THINK_END, THINK_START


@dataclass(frozen=True)
class RewardConfig:
    format_weight: float = 0.2
    length_penalty: bool = True
    length_budget: int = 96  # sampled tokens allowed without penalty
    length_limit: int = 160  # penalty reaches 1 here
    length_weight: float = 0.3
    consistency_weight: float = 0.1

    def __post_init__(self) -> None:
        if self.length_limit <= self.length_budget:
            raise ValueError(
                f"length_limit ({self.length_limit}) must exceed length_budget ({self.length_budget})"
            )
        for name in ("format_weight", "length_weight", "consistency_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class RewardBreakdown:
    total: float
    outcome: float
    well_formed: bool
    length_penalty: float
    consistency: float

    def to_json(self) -> dict:
        return asdict(self)


def script_of(ch: str) -> str | None:
    """'latin', 'cjk', 'other' for a letter; None for anything that is not a letter."""
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    if name.startswith("LATIN"):
        return "latin"
    if name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL")):
        return "cjk"
    return "other"


def language_consistency(prompt: str, response: str) -> float:
    """Share of the response's letters in the prompt's dominant script (1.0 if either has none)."""
    prompt_scripts = [s for s in map(script_of, prompt) if s]
    response_scripts = [s for s in map(script_of, response) if s]
    if not prompt_scripts or not response_scripts:
        return 1.0
    dominant = max(set(prompt_scripts), key=prompt_scripts.count)
    return sum(s == dominant for s in response_scripts) / len(response_scripts)


def length_penalty(n_tokens: int, config: RewardConfig) -> float:
    if not config.length_penalty or n_tokens <= config.length_budget:
        return 0.0
    return min(1.0, (n_tokens - config.length_budget) / (config.length_limit - config.length_budget))


def parse_turns(
    completions: Sequence[str], thinking: bool, tools: list[dict] | None = None
) -> tuple[list[ParsedMessage], bool]:
    """Parse each assistant turn; well-formed iff all parse, end with EOS and (thinking) reason."""
    parsed, ok = [], True
    for text in completions:
        message = parse_completion(text, tools=tools, thinking=thinking)
        if isinstance(message, ParseError):
            ok = False
            parsed.append(message.partial)
            continue
        if not message.saw_eos or (thinking and not (message.reasoning_content or "").strip()):
            ok = False
        parsed.append(message)
    return parsed, ok and bool(completions)


def score(
    prompt: str,
    completions: Sequence[str],
    n_tokens: int,
    outcome: Callable[[list[ParsedMessage]], float],
    config: RewardConfig,
    thinking: bool = True,
    tools: list[dict] | None = None,
) -> RewardBreakdown:
    """The reward of one sampled output: `completions` are its assistant turns' texts (one for a
    single-turn task), `n_tokens` its sampled-token count, `outcome(parsed turns)` the verifier."""
    parsed, well_formed = parse_turns(completions, thinking, tools)
    result = float(outcome(parsed)) if well_formed else 0.0
    if not 0.0 <= result <= 1.0:
        raise ValueError(f"a verifier must return an outcome in [0, 1], got {result}")
    response = " ".join((m.reasoning_content or "") + " " + m.content for m in parsed)
    consistency = language_consistency(prompt, response)
    if not thinking and any(THINK_START in t or THINK_END in t for t in completions):
        consistency = 0.0
    penalty = length_penalty(n_tokens, config)
    total = (
        result
        + config.format_weight * (float(well_formed) - 1.0)
        - config.length_weight * penalty
        + config.consistency_weight * (consistency - 1.0)
    )
    return RewardBreakdown(total, result, well_formed, penalty, consistency)
