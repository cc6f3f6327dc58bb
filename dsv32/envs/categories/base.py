"""What a task category provides, and the grading wrapper that makes verifiers crash-proof.

A category generates a database from a seed, owns a library of tools (some in the initial toolset,
others added by the synthesis loop when a harder task needs them), and poses tasks as structured
`params` whose "constraints" list grows with the level. For a task it supplies:
- `solve`: tool calls plus logic (search/backtracking), returning the answer (and writing through
  write tools where the task asks for changes);
- `verify`: one `Check` per constraint over the answer and the final database, accepting any
  valid answer rather than comparing with a stored one;
- `mutations`: answers (or database edits) that each break exactly one named constraint;
- `baseline`: the programmatic reference agent, a randomized greedy policy without backtracking
  that attends to each constraint with probability `ATTENTION`, so its success falls as
  constraints and entities are added (a weak agent forgetting requirements).
"""

from __future__ import annotations

import abc
import json
import random
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from dsv32.envs.tools import Tool, ToolCaller

ATTENTION = 0.85  # probability that the baseline honours any one constraint


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    reason: str


@dataclass
class Mutation:
    """A wrong candidate: an answer and optional SQL applied to the solved database."""

    breaks: str
    answer: Any
    sql: list[tuple[str, tuple]] = field(default_factory=list)


@dataclass
class Grade:
    reward: float
    passed: bool
    reasons: list[str]
    checks: list[Check]

    def failed(self) -> set[str]:
        return {c.name for c in self.checks if not c.ok}


class AnswerError(ValueError):
    """A malformed answer (wrong JSON shape); graded 0 with this message."""


def parse_json_answer(answer: Any) -> Any:
    if isinstance(answer, (bytes, bytearray)):
        answer = answer.decode("utf-8", errors="replace")
    if isinstance(answer, str):
        text = answer.strip()
        if text.startswith("```"):  # tolerate a fenced block
            text = text.strip("`").removeprefix("json").strip()
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise AnswerError(f"answer is not valid JSON ({err.msg} at char {err.pos})") from None
    return answer


def need(obj: Any, key: str, kind: type | tuple[type, ...], where: str = "answer") -> Any:
    """obj[key] with its type checked (bool is not accepted as a number)."""
    if not isinstance(obj, dict):
        raise AnswerError(f"{where} must be a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise AnswerError(f"{where} is missing {key!r}")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise AnswerError(f"{where}[{key!r}] must be {names}, got {type(value).__name__}")
    return value


def str_list(obj: Any, key: str, where: str) -> list[str]:
    values = need(obj, key, list, where)
    if not all(isinstance(v, str) for v in values):
        raise AnswerError(f"{where}[{key!r}] must be a list of strings")
    return values


def rows(db: sqlite3.Connection, sql: str, args: tuple = ()) -> list[dict]:
    cur = db.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def check(checks: list[Check], name: str, ok: bool, reason: str) -> bool:
    checks.append(Check(name, bool(ok), "ok" if ok else reason))
    return bool(ok)


class Category(abc.ABC):
    name = ""
    summary = ""
    max_level = 4
    answer_format = ""
    base_tools: tuple[str, ...] = ()
    uses_sandbox = False  # tools run code in the sandbox (slower; fewer baseline runs)

    def system_prompt(self) -> str:
        return (
            f"You are an agent working in a {self.summary} environment. Use the tools to look up "
            "everything you need; do not invent names or numbers. When done, reply with the final "
            f"answer only. Answer format: {self.answer_format}"
        )

    @abc.abstractmethod
    def library(self) -> list[Tool]: ...

    @abc.abstractmethod
    def build_database(self, db: sqlite3.Connection, rng: random.Random) -> str:
        """Create tables and rows; return a one-line description of the data."""
        ...

    @abc.abstractmethod
    def initial_task(self, db: sqlite3.Connection, rng: random.Random) -> dict | None: ...

    @abc.abstractmethod
    def harden(self, db: sqlite3.Connection, params: dict, rng: random.Random) -> dict | None: ...

    @abc.abstractmethod
    def instruction(self, params: dict) -> str: ...

    @abc.abstractmethod
    def solve(self, call: ToolCaller, params: dict) -> Any: ...

    @abc.abstractmethod
    def verify(
        self, initial: sqlite3.Connection, final: sqlite3.Connection, params: dict, answer: Any
    ) -> list[Check]: ...

    @abc.abstractmethod
    def mutations(
        self, initial: sqlite3.Connection, params: dict, answer: Any, rng: random.Random
    ) -> list[Mutation]: ...

    @abc.abstractmethod
    def baseline(self, call: ToolCaller, params: dict, rng: random.Random) -> Any: ...


def grade_answer(
    category: Category, initial: sqlite3.Connection, final: sqlite3.Connection, params: dict, answer: Any
) -> Grade:
    """Run the verifier; any malformed answer or verifier exception becomes reward 0 with a reason."""
    try:
        checks = category.verify(initial, final, params, answer)
    except AnswerError as err:
        checks = [Check("answer_format", False, str(err))]
    except Exception as err:  # noqa: BLE001 - a verifier must never crash on an answer
        checks = [Check("answer_format", False, f"answer could not be checked: {type(err).__name__}: {err}")]
    if not checks:
        checks = [Check("answer_format", False, "verifier produced no checks")]
    passed = all(c.ok for c in checks)
    reasons = [f"{c.name}: {c.reason}" for c in checks if not c.ok] or ["all constraints satisfied"]
    return Grade(1.0 if passed else 0.0, passed, reasons, checks)


def apply_setup(db: sqlite3.Connection, params: dict) -> None:
    """Task-specific starting state (e.g. an injected bug): SQL run on an episode's fresh copy."""
    for sql, args in params.get("setup", []):
        db.execute(sql, tuple(args))


def attends(rng: random.Random, params: dict) -> set[str]:
    """The constraints a baseline attempt honours this time."""
    return {c for c in params["constraints"] if rng.random() < ATTENTION}
