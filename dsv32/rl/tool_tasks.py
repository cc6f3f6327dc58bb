"""A calculator tool environment: short agentic tasks (the paper's code-interpreter family at toy
scale) with the same episode interface as `dsv32.envs.episode.Episode` (`reset`, `step`, `grade`).

The model must call `calculate(expression)` and answer with the number the tool returns; the tool
evaluates integer +, -, * expressions (parsed with `ast`, nothing else is accepted). Levels:
1 = a + b (two digits), 2 = a * b (two digits), 3 = a * b + c (three digits); none is solvable by
a small model without the tool, all are by calling it, so the tasks measure tool use.

Expert trajectories (`expert_messages`) call the tool once with the exact expression and answer
with its result; in thinking mode they reason before the call and after the result (reasoning
between tool calls), in chat mode they do not.
"""

from __future__ import annotations

import ast
import hashlib
import json
import operator
import random
from dataclasses import dataclass
from typing import Any

SYSTEM = "You can use tools. Call calculate for arithmetic, then reply with the number only."
TOOL = {
    "type": "function",
    "function": {
        "name": "calculate",
        "description": "Evaluate an integer expression with + - *.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "e.g. 12*34+5"}},
            "required": ["expression"],
        },
    },
}
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


class CalculatorError(ValueError):
    pass


def evaluate(expression: str) -> int:
    """Evaluate an integer +, -, * expression; anything else raises CalculatorError."""
    if not isinstance(expression, str) or len(expression) > 64:
        raise CalculatorError("expression must be a string of at most 64 characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise CalculatorError(f"cannot parse {expression!r}") from None

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise CalculatorError(f"unsupported expression {expression!r}: only integers, +, - and *")

    return walk(tree.body)


@dataclass(frozen=True)
class CalcTask:
    level: int
    expression: str

    @property
    def answer(self) -> str:
        return str(evaluate(self.expression))

    @property
    def prompt(self) -> str:
        return f"Compute {self.expression.replace('*', ' * ').replace('+', ' + ')}."

    @property
    def split(self) -> str:
        return (
            "heldout" if int(hashlib.sha256(self.prompt.encode()).hexdigest()[:8], 16) % 8 == 0 else "train"
        )


def make_calc_task(rng: random.Random, level: int) -> CalcTask:
    if level == 1:
        return CalcTask(1, f"{rng.randrange(10, 100)}+{rng.randrange(10, 100)}")
    if level == 2:
        return CalcTask(2, f"{rng.randrange(10, 100)}*{rng.randrange(10, 100)}")
    if level == 3:
        return CalcTask(3, f"{rng.randrange(10, 100)}*{rng.randrange(10, 100)}+{rng.randrange(100, 1000)}")
    raise ValueError(f"calculator task level must be 1, 2 or 3, got {level}")


def generate_calc_tasks(
    n: int, seed: int, split: str = "train", levels: tuple[int, ...] = (1, 2, 3)
) -> list[CalcTask]:
    rng, out, seen = random.Random(seed), [], set()
    while len(out) < n:
        task = make_calc_task(rng, levels[len(out) % len(levels)])
        if task.split == split and task.expression not in seen:
            seen.add(task.expression)
            out.append(task)
    return out


@dataclass
class CalcGrade:
    reward: float
    passed: bool
    reasons: list[str]


class CalcEpisode:
    """One attempt at a calculator task (reset/step/grade like `dsv32.envs.episode.Episode`)."""

    def __init__(self, task: CalcTask):
        self.task = task
        self.calls = 0

    def reset(self) -> dict:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": self.task.prompt}]
        return {"system": SYSTEM, "tools": [TOOL], "user": self.task.prompt, "messages": messages}

    def step(self, tool_call: dict) -> dict:
        self.calls += 1
        fn = tool_call.get("function", tool_call)
        args = fn.get("arguments", {})
        try:
            args = json.loads(args) if isinstance(args, str) else args
            if fn.get("name") != "calculate" or not isinstance(args, dict):
                raise CalculatorError(f"unknown tool {fn.get('name')!r}; available: ['calculate']")
            content, ok = str(evaluate(args.get("expression"))), True
        except (CalculatorError, json.JSONDecodeError) as err:
            content, ok = json.dumps({"error": str(err)}), False
        call_id = tool_call.get("id", f"call_{self.calls}")
        return {"role": "tool", "tool_call_id": call_id, "name": fn.get("name"), "content": content, "ok": ok}

    def grade(self, answer: Any) -> CalcGrade:
        ok = isinstance(answer, str) and answer.strip() == self.task.answer
        return CalcGrade(float(ok), ok, ["correct" if ok else f"expected {self.task.answer}"])

    def close(self) -> None:
        pass


def expert_messages(task: CalcTask, thinking: bool) -> list[dict]:
    """system, user, assistant tool call, tool result, assistant answer."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "calculate", "arguments": json.dumps({"expression": task.expression})},
    }
    first: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": [call]}
    final: dict[str, Any] = {"role": "assistant", "content": task.answer}
    if thinking:
        first["reasoning_content"] = f"use calculate on {task.expression}."
        final["reasoning_content"] = f"the tool says {task.answer}."
    return [
        {"role": "system", "content": SYSTEM, "tools": [TOOL]},
        {"role": "user", "content": task.prompt},
        first,
        {"role": "tool", "tool_call_id": "call_1", "content": task.answer},
        final,
    ]
