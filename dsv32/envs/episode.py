"""Episodes: one agent attempt at one task on a private copy of the environment's database.

`reset()` returns the system prompt, the tools (OpenAI function schemas) and the user message;
`step(tool_call)` runs one tool call and returns an OpenAI-style tool message (errors become an
`{"error": ...}` result so the agent can recover); `grade(answer)` runs the verifier against the
pristine database and this episode's final database and returns a reward in [0, 1] with reasons.
Every episode copies the database into its own in-memory SQLite connection, so writes never
leak between episodes or into the stored environment, and episodes can run in parallel threads.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from dsv32.envs.categories import get_category
from dsv32.envs.categories.base import Category, Grade, apply_setup, grade_answer
from dsv32.envs.format import Environment, Task, load_environment
from dsv32.envs.tools import SandboxRunner, ToolCaller, ToolContext, ToolError


def memory_copy(source: sqlite3.Connection) -> sqlite3.Connection:
    """An in-memory copy in autocommit mode (an open transaction on the source would stall
    the backup, so copies never hold one)."""
    if source.in_transaction:
        source.commit()
    copy = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    source.backup(copy)
    return copy


def open_readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)


class Episode:
    def __init__(
        self,
        category: Category,
        pristine: sqlite3.Connection,
        task: Task,
        runner: SandboxRunner | None = None,
    ):
        self.category, self.pristine, self.task = category, pristine, task
        self.db = memory_copy(pristine)
        apply_setup(self.db, task.params)
        library = {t.spec.name: t for t in category.library()}
        self.caller = ToolCaller(
            library, task.tools, ToolContext(self.db, runner or SandboxRunner(cache=False))
        )
        self._lock = threading.Lock()
        self._n_calls = 0
        self._owns_pristine = False  # from_env opened it, so close() closes it too

    @staticmethod
    def from_env(env: Environment | str | Path, task_id: str | None = None) -> Episode:
        """An episode for a stored environment (`task_id` defaults to its first task)."""
        env = env if isinstance(env, Environment) else load_environment(env)
        if not env.tasks:
            raise ValueError(f"environment {env.env_id} has no tasks")
        task = env.task(task_id) if task_id is not None else env.tasks[0]
        category = get_category(env.category, env)
        episode = Episode(category, open_readonly(env.db_path), task)
        episode._owns_pristine = True
        return episode

    def tools(self) -> list[dict]:
        return [self.caller.library[name].spec.openai() for name in self.task.tools]

    def reset(self) -> dict:
        system = self.category.system_prompt()
        return {
            "system": system,
            "tools": self.tools(),
            "user": self.task.instruction,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": self.task.instruction},
            ],
        }

    def call(self, name: str, arguments: Any) -> Any:
        """Run a tool and return its raw result (raises ToolError)."""
        with self._lock:
            return self.caller.call(name, arguments)

    def step(self, tool_call: dict) -> dict:
        """`tool_call` is {"name", "arguments"} or OpenAI's {"id", "function": {"name", "arguments"}}."""
        self._n_calls += 1
        call_id = tool_call.get("id", f"call_{self._n_calls}") if isinstance(tool_call, dict) else None
        fn = tool_call.get("function", tool_call) if isinstance(tool_call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            result, ok = {"error": f"a tool call needs a string 'name'; got {tool_call!r:.200}"}, False
            name = None
        else:
            name = fn["name"]
            try:
                result, ok = self.call(name, fn.get("arguments", {})), True
            except ToolError as err:
                result, ok = {"error": str(err)}, False
        content = json.dumps(result, ensure_ascii=False, default=str)
        return {"role": "tool", "tool_call_id": call_id, "name": name, "content": content, "ok": ok}

    def grade(self, answer: Any) -> Grade:
        with self._lock:
            return grade_answer(self.category, self.pristine, self.db, self.task.params, answer)

    def close(self) -> None:
        self.db.close()
        if self._owns_pristine:
            self.pristine.close()
