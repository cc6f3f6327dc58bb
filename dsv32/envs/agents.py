"""Reference agents for the pass@k gate: the programmatic baseline (default) or any
OpenAI-compatible chat model with tool calling.

An agent's `run(episode, rng)` interacts only through the episode (its tools) and returns the
final answer, which the caller grades. `pass_at_k` is the unbiased estimator of Chen et al. (2021):
1 - C(n - c, k) / C(n, k) for c successes in n samples.
"""

from __future__ import annotations

import json
import logging
import random
from math import comb
from typing import Any, Protocol

from dsv32.envs.episode import Episode
from dsv32.envs.tools import ToolError

logger = logging.getLogger(__name__)


def pass_at_k(n: int, c: int, k: int) -> float:
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass@k needs 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


class ReferenceAgent(Protocol):
    name: str

    def run(self, episode: Episode, rng: random.Random) -> Any: ...


class ProgrammaticBaseline:
    """The category's randomized greedy policy (see `categories.base`); it reads the task's
    structured constraints instead of parsing the instruction text, and calls tools like an agent."""

    name = "baseline"

    def run(self, episode: Episode, rng: random.Random) -> Any:
        try:
            return episode.category.baseline(episode.caller, episode.task.params, rng)
        except (ToolError, LookupError, ValueError, TypeError) as err:
            logger.debug("baseline attempt failed: %s", err)
            return None


class OpenAIAgent:
    """A tool-calling loop against an OpenAI-compatible endpoint (`openai` client). Assistant
    messages keep `reasoning_content` so servers that expect it within a tool-using turn get it."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "none",
        max_turns: int = 16,
        temperature: float = 0.7,
        timeout: float = 60.0,
    ):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
        self.model, self.max_turns, self.temperature = model, max_turns, temperature
        self.name = f"openai:{model}"

    def run(self, episode: Episode, rng: random.Random) -> Any:
        start = episode.reset()
        messages, tools = list(start["messages"]), start["tools"]
        for _ in range(self.max_turns):
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                tools=tools,
                temperature=self.temperature,
                seed=rng.randrange(2**31),
            )
            msg = reply.choices[0].message
            entry: dict = {"role": "assistant", "content": msg.content or ""}
            reasoning = getattr(msg, "reasoning_content", None) or (msg.model_extra or {}).get(
                "reasoning_content"
            )
            if reasoning:
                entry["reasoning_content"] = reasoning
            if not msg.tool_calls:
                return msg.content or ""
            entry["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in msg.tool_calls
            ]
            messages.append(entry)
            for call in entry["tool_calls"]:
                result = episode.step(call)
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": result["content"]})
        logger.debug("agent %s ran out of turns", self.name)
        return None


def make_agent(spec: str | None, model: str | None = None, api_key: str = "none") -> ReferenceAgent:
    """`None`/"baseline" -> ProgrammaticBaseline; an http(s) URL -> OpenAIAgent(url, model)."""
    if spec in (None, "", "baseline"):
        return ProgrammaticBaseline()
    if spec.startswith(("http://", "https://")):
        if not model:
            raise ValueError("a model reference agent needs --agent-model NAME")
        return OpenAIAgent(spec, model, api_key)
    raise ValueError(f"reference agent must be 'baseline' or an http(s) URL, got {spec!r}")


def answer_text(answer: Any) -> str:
    return answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
