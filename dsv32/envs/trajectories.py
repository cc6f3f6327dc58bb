"""Expert trajectories: each task's solution replayed in a fresh episode and rendered as an
OpenAI-style conversation for SFT in DeepSeek-V3.2's thinking-with-tools format.

Messages: system (with the task's tools attached, as the chat encoder expects), user (the
instruction), then per tool call an assistant message whose `reasoning_content` is the
solution's note before that call and whose `tool_calls` hold the call, followed by the tool
message with the result; last an assistant message with reasoning and the final answer. A
trajectory is kept only if its replayed answer passes the verifier.
"""

from __future__ import annotations

import json
from pathlib import Path

from dsv32.data.io import atomic_write_lines
from dsv32.envs.categories import get_category
from dsv32.envs.categories.base import Category, apply_setup, grade_answer
from dsv32.envs.episode import memory_copy, open_readonly
from dsv32.envs.format import Task, load_environment
from dsv32.envs.tools import SandboxRunner, ToolCaller, ToolContext


def render_trajectory(
    category: Category, pristine, task: Task, runner: SandboxRunner | None = None
) -> dict | None:
    """{"task_id", "messages", "reward"} or None when the replayed solution does not pass."""
    db = memory_copy(pristine)
    apply_setup(db, task.params)
    library = {t.spec.name: t for t in category.library()}
    caller = ToolCaller(
        library, task.tools, ToolContext(db, runner or getattr(category, "runner", None) or SandboxRunner())
    )
    answer = category.solve(caller, task.params)
    grade = grade_answer(category, pristine, db, task.params, answer) if answer is not None else None
    db.close()
    if grade is None or not grade.passed:
        return None
    tools = [library[name].spec.openai() for name in task.tools]
    messages: list[dict] = [
        {"role": "system", "content": category.system_prompt(), "tools": tools},
        {"role": "user", "content": task.instruction},
    ]
    for i, call in enumerate(caller.calls):
        thought = call.thought or f"I call {call.name} to get what the next step needs."
        call_id = f"call_{i}"
        messages.append(
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": thought,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": call.name,
                            "arguments": json.dumps(call.arguments, ensure_ascii=False),
                        },
                    }
                ],
            }
        )
        result = call.result if call.error is None else {"error": call.error}
        messages.append(
            {
                "role": "tool",
                "tool_call_id": call_id,
                "content": json.dumps(result, ensure_ascii=False, default=str),
            }
        )
    final = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
    messages.append(
        {
            "role": "assistant",
            "reasoning_content": "I have everything the task asks for and every constraint holds, so I give the final answer.",  # noqa: E501
            "content": final,
        }
    )
    return {
        "task_id": task.task_id,
        "category": task.category,
        "level": task.level,
        "messages": messages,
        "reward": grade.reward,
    }


def write_trajectories(env_dirs: list[Path], output: Path) -> int:
    """Render every task of every environment; write JSONL atomically; returns the count."""
    n = 0

    def lines():
        nonlocal n
        for env_dir in env_dirs:
            env = load_environment(env_dir)
            category = get_category(env.category, env)
            pristine = open_readonly(env.db_path)
            for task in env.tasks:
                item = render_trajectory(category, pristine, task)
                if item is not None:
                    n += 1
                    yield json.dumps(item, ensure_ascii=False) + "\n"
            pristine.close()

    atomic_write_lines(output, lines())
    return n
