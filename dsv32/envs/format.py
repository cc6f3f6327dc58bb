"""The on-disk environment format (version 1), with validated loading.

An environment directory holds:
    manifest.json   {"format_version": 1, "env_id", "category", "seed", "description", "source",
                     "tools": [ToolSpec json], "tool_additions": [{"level", "tool", "reason"}],
                     "n_tasks", "db_sha256", "code_sha256"?}
    db.sqlite       the database (schema + rows), never written after synthesis
    tasks.jsonl     one Task per line
    code.py         (model-made categories only) tools, solution and verifier source, run only
                    inside the sandbox
Writes go to a temporary sibling directory that is renamed into place, so a crash never leaves a
half-written environment. `load_environment` checks the version, every field's type, the database
digest, and that every task's tools exist, and raises `EnvFormatError` naming the file and field.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dsv32.envs.tools import ToolSpec

FORMAT_VERSION = 1


class EnvFormatError(ValueError):
    """An environment directory that does not follow the format."""


@dataclass
class Task:
    task_id: str
    env_id: str
    category: str
    level: int
    instruction: str
    params: dict  # the task's constraints in structured form (for solution, verifier, baseline)
    tools: list[str]  # the toolset the task is posed with
    answer_format: str
    gates: dict = field(default_factory=dict)  # what the synthesis gates measured

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(data: dict, where: str) -> Task:
        expect = {
            "task_id": str,
            "env_id": str,
            "category": str,
            "level": int,
            "instruction": str,
            "params": dict,
            "tools": list,
            "answer_format": str,
        }
        _check_fields(data, expect, where)
        return Task(**{k: data[k] for k in expect}, gates=dict(data.get("gates", {})))


@dataclass
class Environment:
    env_id: str
    category: str
    seed: int
    description: str
    tools: list[ToolSpec]
    tool_additions: list[dict]
    tasks: list[Task]
    path: Path | None = None
    source: str = "builtin"
    code: str | None = None  # model-made categories: source of tools, solution and verifier

    @property
    def db_path(self) -> Path:
        if self.path is None:
            raise ValueError(f"environment {self.env_id} has not been saved")
        return self.path / "db.sqlite"

    def task(self, task_id: str) -> Task:
        for task in self.tasks:
            if task.task_id == task_id:
                return task
        raise KeyError(
            f"environment {self.env_id} has no task {task_id!r}; it has {[t.task_id for t in self.tasks]}"
        )


def _check_fields(data: object, expect: dict[str, type], where: str) -> None:
    if not isinstance(data, dict):
        raise EnvFormatError(f"{where}: expected a JSON object, got {type(data).__name__}")
    for key, kind in expect.items():
        if key not in data:
            raise EnvFormatError(f"{where}: missing field {key!r}")
        if not isinstance(data[key], kind) or (kind is int and isinstance(data[key], bool)):
            raise EnvFormatError(
                f"{where}: field {key!r} must be {kind.__name__}, got {type(data[key]).__name__}"
            )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_environment(env: Environment, db: sqlite3.Connection, out_dir: str | Path) -> Path:
    """Write `env` (with the database `db`) to `out_dir`/<env_id>, atomically; returns the path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / env.env_id
    tmp = Path(tempfile.mkdtemp(prefix=f".{env.env_id}.", dir=out_dir))
    try:
        disk = sqlite3.connect(tmp / "db.sqlite")
        with disk:
            db.backup(disk)
        disk.execute("VACUUM")
        disk.close()
        with open(tmp / "tasks.jsonl", "w", encoding="utf-8") as fh:
            for task in env.tasks:
                fh.write(json.dumps(task.to_json(), sort_keys=True) + "\n")
        manifest = {
            "format_version": FORMAT_VERSION,
            "env_id": env.env_id,
            "category": env.category,
            "seed": env.seed,
            "description": env.description,
            "source": env.source,
            "tools": [spec.to_json() for spec in env.tools],
            "tool_additions": env.tool_additions,
            "n_tasks": len(env.tasks),
            "db_sha256": _sha256(tmp / "db.sqlite"),
        }
        if env.code is not None:
            (tmp / "code.py").write_text(env.code, encoding="utf-8")
            manifest["code_sha256"] = _sha256(tmp / "code.py")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    env.path = final
    return final


def load_environment(path: str | Path) -> Environment:
    """Load and validate an environment directory."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"environment directory {str(path)!r} does not exist")
    for name in ("manifest.json", "db.sqlite", "tasks.jsonl"):
        if not (path / name).is_file():
            raise EnvFormatError(f"{path}: missing {name} (not an environment directory?)")
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EnvFormatError(f"{path / 'manifest.json'}: not valid JSON ({err})") from None
    where = str(path / "manifest.json")
    _check_fields(manifest, {"format_version": int}, where)
    if manifest["format_version"] != FORMAT_VERSION:
        raise EnvFormatError(
            f"{where}: format_version {manifest['format_version']}, expected {FORMAT_VERSION}"
        )
    expect = {
        "env_id": str,
        "category": str,
        "seed": int,
        "description": str,
        "source": str,
        "tools": list,
        "tool_additions": list,
        "n_tasks": int,
        "db_sha256": str,
    }
    _check_fields(manifest, expect, where)
    tools = []
    for i, spec in enumerate(manifest["tools"]):
        _check_fields(spec, {"name": str, "description": str, "parameters": dict}, f"{where}: tools[{i}]")
        tools.append(ToolSpec.from_json(spec))
    if _sha256(path / "db.sqlite") != manifest["db_sha256"]:
        raise EnvFormatError(f"{path / 'db.sqlite'}: digest does not match manifest (corrupt or edited)")
    tasks = []
    for lineno, line in enumerate((path / "tasks.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        at = f"{path / 'tasks.jsonl'}:{lineno}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise EnvFormatError(f"{at}: not valid JSON ({err.msg})") from None
        task = Task.from_json(data, at)
        unknown = [t for t in task.tools if t not in {s.name for s in tools}]
        if unknown or task.env_id != manifest["env_id"]:
            raise EnvFormatError(
                f"{at}: task names tools {unknown} or env {task.env_id!r} not in the manifest"
            )
        tasks.append(task)
    if len(tasks) != manifest["n_tasks"]:
        raise EnvFormatError(f"{where}: n_tasks is {manifest['n_tasks']} but tasks.jsonl has {len(tasks)}")
    code = None
    if "code_sha256" in manifest:
        code_path = path / "code.py"
        if not code_path.is_file() or _sha256(code_path) != manifest["code_sha256"]:
            raise EnvFormatError(f"{code_path}: missing or digest does not match manifest")
        code = code_path.read_text(encoding="utf-8")
    return Environment(
        env_id=manifest["env_id"],
        category=manifest["category"],
        seed=manifest["seed"],
        description=manifest["description"],
        tools=tools,
        tool_additions=manifest["tool_additions"],
        tasks=tasks,
        path=path,
        source=manifest["source"],
        code=code,
    )


def list_environments(root: str | Path) -> list[Path]:
    root = Path(root)
    if (root / "manifest.json").is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"environment directory {str(root)!r} does not exist")
    return sorted(p for p in root.iterdir() if (p / "manifest.json").is_file())
