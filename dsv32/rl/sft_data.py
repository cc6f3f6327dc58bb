"""Offline SFT data for the cold start (SPEC section 3), as conversations in the DeepSeek-V3.2 format.

Sources:
- reasoning: a verifiable task (`dsv32.rl.tasks`) answered with its worked solution as
  `reasoning_content` (rendered inside `<think>`) and the exact answer as content;
- reasoning, non-thinking variant: the same tasks in chat mode, answer only;
- agentic: calculator-tool trajectories (`dsv32.rl.tool_tasks`), in thinking mode with reasoning
  before the call and after the result, and in chat mode without reasoning;
- agentic, environments: expert trajectories of synthesized environments (`dsv32.envs`), from the
  category's own solution run through a recording tool caller, with its notes as reasoning.

The cold-start mix follows SPEC section 3: reasoning data (no tools) and agentic data (tools) are
told apart by the system prompt, so one model learns both and, from the thinking-mode agentic
examples, to reason between tool calls. Each example is `{"messages", "thinking_mode", "source"}`;
`write_jsonl`/`read_jsonl` store them (atomic write, validated read).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dsv32.data.io import atomic_write_jsonl
from dsv32.rl.tasks import ReasoningTask, generate_tasks
from dsv32.rl.tool_tasks import CalcTask, expert_messages, generate_calc_tasks

REASONING_SYSTEM = "Think step by step, then give the final answer only."
DEFAULT_MIX = {"reasoning": 0.45, "reasoning_chat": 0.15, "agentic": 0.25, "agentic_chat": 0.15}


def reasoning_messages(task: ReasoningTask, thinking: bool) -> list[dict]:
    answer: dict[str, Any] = {"role": "assistant", "content": task.answer}
    if thinking:
        answer["reasoning_content"] = task.reasoning
    return [
        {"role": "system", "content": REASONING_SYSTEM},
        {"role": "user", "content": task.prompt},
        answer,
    ]


def example(messages: list[dict], thinking: bool, source: str) -> dict:
    return {"messages": messages, "thinking_mode": "thinking" if thinking else "chat", "source": source}


def cold_start_mix(
    n: int, seed: int, mix: dict[str, float] | None = None, difficulties: tuple[int, ...] = (1, 2)
) -> list[dict]:
    """n training-split examples drawn in the proportions of `mix` (keys of DEFAULT_MIX), shuffled."""
    mix = dict(DEFAULT_MIX if mix is None else mix)
    unknown = set(mix) - set(DEFAULT_MIX)
    if unknown or not mix or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(
            f"mix must weight some of {sorted(DEFAULT_MIX)} with non-negative numbers, got {mix}"
        )
    total = sum(mix.values())
    counts = {k: int(round(n * w / total)) for k, w in mix.items()}
    counts[max(counts, key=counts.get)] += n - sum(counts.values())
    n_reason = counts.get("reasoning", 0) + counts.get("reasoning_chat", 0)
    n_agent = counts.get("agentic", 0) + counts.get("agentic_chat", 0)
    reasoning = generate_tasks(n_reason, seed, "train", difficulties=difficulties) if n_reason else []
    calc: list[CalcTask] = generate_calc_tasks(n_agent, seed + 1, "train") if n_agent else []
    out = []
    for i, task in enumerate(reasoning):
        thinking = i < counts.get("reasoning", 0)
        out.append(
            example(
                reasoning_messages(task, thinking), thinking, "reasoning" if thinking else "reasoning_chat"
            )
        )
    for i, ctask in enumerate(calc):
        thinking = i < counts.get("agentic", 0)
        out.append(
            example(expert_messages(ctask, thinking), thinking, "agentic" if thinking else "agentic_chat")
        )
    random.Random(seed).shuffle(out)
    return out


def env_expert_examples(
    env_dir: str | Path, thinking: bool = True, task_ids: set[str] | None = None
) -> list[dict]:
    """Expert trajectories of a stored synthesized environment: for each task, the category's
    solution is run on a fresh episode; every tool call it makes becomes an assistant tool-call
    message (its notes as reasoning in thinking mode) followed by the tool result, and the solution's
    answer becomes the final assistant message. Tasks whose answer fails the grader are skipped, and
    so are tasks not in `task_ids` when it is given (e.g. to keep held-out tasks out of SFT)."""
    from dsv32.envs.agents import answer_text
    from dsv32.envs.episode import Episode
    from dsv32.envs.format import load_environment

    env = load_environment(env_dir)
    out = []
    for task in env.tasks:
        if task_ids is not None and task.task_id not in task_ids:
            continue
        episode = Episode.from_env(env, task.task_id)
        try:
            start = episode.reset()
            answer = episode.category.solve(episode.caller, task.params)
            if not episode.grade(answer).passed:
                continue
            messages = [
                {"role": "system", "content": start["system"], "tools": start["tools"]},
                start["messages"][1],
            ]
            for n, call in enumerate(episode.caller.calls, start=1):
                call_msg: dict[str, Any] = {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": f"call_{n}",
                            "type": "function",
                            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                        }
                    ],
                }
                if thinking:
                    call_msg["reasoning_content"] = call.thought or f"call {call.name}."
                result = call.result if call.error is None else {"error": call.error}
                content = json.dumps(result, ensure_ascii=False, default=str)
                messages += [call_msg, {"role": "tool", "tool_call_id": f"call_{n}", "content": content}]
            final: dict[str, Any] = {"role": "assistant", "content": answer_text(answer)}
            if thinking:
                final["reasoning_content"] = "all constraints are checked."
            messages.append(final)
            out.append(example(messages, thinking, f"env:{env.category}:L{task.level}"))
        finally:
            episode.close()
    return out


def write_jsonl(path: str | Path, examples: Iterable[dict]) -> Path:
    return atomic_write_jsonl(path, examples, ensure_ascii=False)


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SFT data file {path} does not exist")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not valid JSON ({err})") from None
        if not isinstance(item, dict) or not isinstance(item.get("messages"), list):
            raise ValueError(f"{path}:{n}: expected an object with a 'messages' list")
        if item.get("thinking_mode", "thinking") not in ("thinking", "chat"):
            raise ValueError(f"{path}:{n}: thinking_mode must be 'thinking' or 'chat'")
        out.append(item)
    return out
