"""The gates every kept task passes.

1. The solution solves it: it returns an answer and the verifier accepts that answer on the
   database the solution left behind.
2. The verifier is specific: at least `MIN_MUTATIONS` mutated candidates, each breaking one named
   constraint, are all rejected, each with its named constraint among the failed checks.
3. pass@k of the reference agent is non-zero: n = k attempts, each a fresh episode.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass, field

from dsv32.envs.agents import ReferenceAgent, pass_at_k
from dsv32.envs.categories.base import Category, grade_answer
from dsv32.envs.episode import Episode, memory_copy
from dsv32.envs.format import Task
from dsv32.envs.tools import SandboxRunner

MIN_MUTATIONS = 5


@dataclass
class GateReport:
    solved: bool = False
    mutations: int = 0
    mutations_rejected: int = 0
    mutation_failures: list[str] = field(default_factory=list)
    attempts: int = 0
    successes: int = 0
    k: int = 0
    reason: str = ""

    @property
    def pass_at_k(self) -> float:
        return pass_at_k(self.attempts, self.successes, min(self.k, self.attempts)) if self.attempts else 0.0

    @property
    def kept(self) -> bool:
        return not self.reason

    def to_json(self) -> dict:
        return {
            "mutations_rejected": self.mutations_rejected,
            "attempts": self.attempts,
            "successes": self.successes,
            "k": self.k,
            "pass_at_k": round(self.pass_at_k, 4),
        }


def check_solution_and_mutations(
    category: Category, pristine: sqlite3.Connection, solved: sqlite3.Connection, params: dict, answer, rng
) -> GateReport:
    report = GateReport()
    if answer is None:
        report.reason = "solution found no answer"
        return report
    grade = grade_answer(category, pristine, solved, params, answer)
    report.solved = grade.passed
    if not grade.passed:
        report.reason = f"verifier rejects the solution: {grade.reasons[:2]}"
        return report
    for mutation in category.mutations(pristine, params, answer, rng):
        report.mutations += 1
        final = memory_copy(solved)
        for sql, args in mutation.sql:
            final.execute(sql, args)
        result = grade_answer(category, pristine, final, params, mutation.answer)
        final.close()
        if not result.passed and mutation.breaks in result.failed():
            report.mutations_rejected += 1
        else:
            report.mutation_failures.append(mutation.breaks)
    if report.mutation_failures:
        report.reason = f"verifier accepts or misreads mutations breaking {report.mutation_failures}"
    elif report.mutations_rejected < MIN_MUTATIONS:
        report.reason = f"only {report.mutations_rejected} single-constraint mutations (need {MIN_MUTATIONS})"
    return report


def check_pass_at_k(
    report: GateReport,
    category: Category,
    pristine: sqlite3.Connection,
    task: Task,
    agent: ReferenceAgent,
    k: int,
    rng: random.Random,
    runner: SandboxRunner | None = None,
) -> GateReport:
    report.k = k
    for _ in range(k):
        episode = Episode(category, pristine, task, runner)
        answer = agent.run(episode, random.Random(rng.randrange(2**63)))
        report.attempts += 1
        report.successes += int(answer is not None and episode.grade(answer).passed)
        episode.close()
    if report.successes == 0 and not report.reason:
        report.reason = f"pass@{k} of the reference agent is 0"
    return report
