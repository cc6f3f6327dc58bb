"""The synthesis loop for one environment (SPEC §6, steps 1-5).

1. Generate the category's data from the environment seed into an in-memory SQLite database.
2. Start with the category's base toolset.
3. Pose the simple level-1 task (structured constraints + instruction).
4. Climb the ladder: each step `harden`s the previous task (more constraints, entities, steps);
   the solution and verifier are driven by the task's constraint list, so they update with it.
   The solution runs against the current toolset; if it needs a tool the toolset lacks
   (`MissingTool`), the tool is added from the category's library and the addition is recorded.
5. Gate every candidate (gates.py); a task whose solution fails is regenerated up to `retries`
   times; kept tasks carry their gate measurements. Every candidate (kept or not) is returned as
   a record for the statistics and difficulty tables.
"""

from __future__ import annotations

import hashlib
import logging
import random
import sqlite3
from dataclasses import dataclass

from dsv32.envs.agents import ProgrammaticBaseline, ReferenceAgent
from dsv32.envs.categories.base import Category, apply_setup
from dsv32.envs.episode import memory_copy
from dsv32.envs.format import Environment, Task
from dsv32.envs.gates import GateReport, check_pass_at_k, check_solution_and_mutations
from dsv32.envs.tools import MissingTool, SandboxRunner, Tool, ToolCaller, ToolContext, ToolError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthOptions:
    k: int = 4  # reference-agent attempts per candidate task (pass@k with n = k)
    retries: int = 2  # regenerations of a candidate whose solution or verifier fails


def env_seed(seed: int, category: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}/{category}/{index}".encode()).hexdigest()
    return int(digest[:12], 16)


def solve_with_tool_addition(
    category: Category,
    db: sqlite3.Connection,
    library: dict[str, Tool],
    toolset: list[str],
    additions: list[dict],
    params: dict,
    runner: SandboxRunner,
) -> tuple[object, sqlite3.Connection, ToolCaller]:
    """Run the solution on a copy of `db`, adding library tools to `toolset` when it needs them."""
    while True:
        solved = memory_copy(db)
        apply_setup(solved, params)
        caller = ToolCaller(library, toolset, ToolContext(solved, runner))
        try:
            return category.solve(caller, params), solved, caller
        except MissingTool as missing:
            solved.close()
            toolset.append(missing.name)
            reason = f"the level-{params['level']} solution needs {missing.name!r}, which the toolset lacked"
            additions.append({"level": params["level"], "tool": missing.name, "reason": reason})
        except ToolError as err:  # the solution misused a tool: no answer, the gate rejects it
            logger.debug("solution failed: %s", err)
            return None, solved, caller


def synthesize_environment(
    category: Category,
    env_id: str,
    seed: int,
    agent: ReferenceAgent | None = None,
    options: SynthOptions = SynthOptions(),
    runner: SandboxRunner | None = None,
) -> tuple[Environment, sqlite3.Connection, list[dict]]:
    """Build one environment; returns it (unsaved), its database and one record per candidate task."""
    agent = agent or ProgrammaticBaseline()
    runner = runner or getattr(category, "runner", None) or SandboxRunner()
    rng = random.Random(seed)
    db = sqlite3.connect(":memory:", check_same_thread=False)
    description = category.build_database(db, rng)
    db.commit()
    library = {t.spec.name: t for t in category.library()}
    toolset, additions, tasks, records = list(category.base_tools), [], [], []
    previous, params = None, category.initial_task(db, rng)
    while params is not None:
        report = GateReport(reason="no candidate")
        for attempt in range(options.retries + 1):
            answer, solved, _ = solve_with_tool_addition(
                category, db, library, toolset, additions, params, runner
            )
            report = check_solution_and_mutations(category, db, solved, params, answer, rng)
            solved.close()
            if report.kept or attempt == options.retries:
                break
            regenerated = category.harden(db, previous, rng) if previous else category.initial_task(db, rng)
            if regenerated is None:
                break
            params = regenerated
        level = params["level"]
        task = Task(
            f"{env_id}-L{level}",
            env_id,
            category.name,
            level,
            category.instruction(params),
            params,
            list(toolset),
            category.answer_format,
        )
        if report.solved and report.kept:
            check_pass_at_k(report, category, db, task, agent, options.k, rng, runner)
        records.append(
            {
                "env_id": env_id,
                "category": category.name,
                "level": level,
                "kept": report.kept,
                "reason": report.reason,
                "attempts": report.attempts,
                "successes": report.successes,
                "mutations_rejected": report.mutations_rejected,
            }
        )
        if report.kept:
            task.gates = report.to_json()
            tasks.append(task)
        if not report.solved:
            break  # a harder version of an unsolvable task is unsolvable too
        previous, params = params, category.harden(db, params, rng)
    specs = [library[name].spec for name in toolset]
    env = Environment(env_id, category.name, seed, description, specs, additions, tasks)
    return env, db, records
