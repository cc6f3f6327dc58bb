"""Synthesized-environment tasks for GRPO and pass@1.

The tasks stored under a directory of environments written by `dsv32 envs synth`; each attempt runs
as an `Episode` (tool calls against a private copy of the environment's database, graded by the
task's verifier).

Tasks split train / held-out by a hash of the task id (1 in 8 held out, as the calculator tasks do),
so the two sets never share a task. Environments may be shared between the sets: a held-out task
can live in an environment whose other tasks were trained on.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from dsv32.envs.episode import Episode
from dsv32.envs.format import Environment, load_environment

SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class EnvTask:
    env_dir: str
    task_id: str
    level: int
    category: str

    @property
    def split(self) -> str:
        bucket = int(hashlib.sha256(self.task_id.encode()).hexdigest()[:8], 16) % 8
        return "heldout" if bucket == 0 else "train"

    def episode(self) -> Episode:
        """A fresh attempt (its own database copy); close it when done."""
        return Episode.from_env(_environment(self.env_dir), self.task_id)


@functools.lru_cache(maxsize=512)
def _environment(env_dir: str) -> Environment:
    return load_environment(env_dir)


def env_tasks(root: str | Path, split: str = "train", levels: tuple[int, ...] = (1, 2, 3)) -> list[EnvTask]:
    """Every task of `split` at one of `levels` in the environments directly under `root`, in a
    stable order (environment directory name, then the environment's task order)."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"environment root {str(root)!r} is not a directory")
    dirs = sorted(p for p in root.iterdir() if (p / "manifest.json").is_file())
    if not dirs:
        raise ValueError(
            f"{root}: no environments (directories with manifest.json); make some with `dsv32 envs synth`"
        )
    out = []
    for path in dirs:
        env = _environment(str(path))
        for task in env.tasks:
            ref = EnvTask(str(path), task.task_id, task.level, env.category)
            if task.level in levels and ref.split == split:
                out.append(ref)
    return out
