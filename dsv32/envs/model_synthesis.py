"""Model-driven synthesis: an OpenAI-compatible model writes a new category (data, tools,
solution, verifier, mutations, baseline) as one Python module; that code runs ONLY inside
`dsv32.sandbox` and must pass the same gates as the builtin categories.

The module the model must write (see `PROMPT`) defines SCHEMA, build(db, rng), TOOLS (name,
description, JSON-schema parameters, first level), one `tool_<name>(db, **args)` per tool,
make_task(db, rng, level) -> params (with "instruction", "constraints", or None past the top
level), solve(call, params), verify(db, params, answer) -> [[name, ok, reason], ...],
mutate(db, params, answer, rng) -> [[breaks, answer], ...], baseline(call, params, rng).
`SandboxedCategory` adapts it to the `Category` interface: every entry point is one sandbox run
of `_HARNESS` (ours) over a copy of the database file; the database comes back from the sandbox
after write tools and solutions. The host, not the model's code, applies the gates. What is
trusted: the model's verifier defines correctness (the gates only check that it accepts the
solution and rejects the model's own single-constraint mutations).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import tempfile
from pathlib import Path

from dsv32.envs.categories.base import Category, Check, Mutation
from dsv32.envs.format import save_environment
from dsv32.envs.tools import MissingTool, Tool, ToolCall, ToolCaller, ToolError, ToolSpec
from dsv32.sandbox import SandboxLimits, run_python

logger = logging.getLogger(__name__)

PROMPT = """Write one Python 3 module (stdlib only) that defines a verifiable agent-task category about:
{topic}. Required names:
SCHEMA: str  (SQLite DDL)
def build(db, rng): insert varied rows using rng (random.Random)
TOOLS: list of {{"name", "description", "parameters" (JSON schema object),
        "level" (first level that needs it)}}
def tool_<name>(db, **args): one per tool; return JSON-able values; raise ValueError on bad input
def make_task(db, rng, level): params dict with "instruction" and "constraints" (list of names);
    None if level > max
def solve(call, params): answer using only call(name, **args) and logic
def verify(db, params, answer): [[constraint, ok, reason], ...]; never raise on malformed answers
def mutate(db, params, answer, rng): >= 5 [[constraint, wrong_answer]], each breaking exactly that constraint
def baseline(call, params, rng): a weaker randomized attempt
Reply with the module in one ```python block."""

_HARNESS = r"""
import json, random, sqlite3, sys
req = json.load(open("request.json"))
import code as m
db = sqlite3.connect("db.sqlite", isolation_level=None)
calls = []
def call(name, **args):
    if name not in req.get("toolset", []):
        raise LookupError("@@missing:" + name)
    result = getattr(m, "tool_" + name)(db, **args)
    calls.append([name, args, result])
    return result
op, out = req["op"], {}
try:
    if op == "build":
        db.executescript(m.SCHEMA); m.build(db, random.Random(req["seed"]))
    elif op == "tools":
        out["tools"] = m.TOOLS
    elif op == "task":
        out["params"] = m.make_task(db, random.Random(req["seed"]), req["level"])
    elif op == "tool":
        out["result"] = getattr(m, "tool_" + req["name"])(db, **req["args"])
    elif op in ("solve", "baseline"):
        fn = m.solve if op == "solve" else (lambda c, p: m.baseline(c, p, random.Random(req["seed"])))
        out["answer"] = fn(call, req["params"])
    elif op == "verify":
        out["checks"] = m.verify(db, req["params"], req["answer"])
    elif op == "mutate":
        out["mutations"] = m.mutate(db, req["params"], req["answer"], random.Random(req["seed"]))
except LookupError as err:
    if str(err).startswith("@@missing:"):
        out["missing"] = str(err)[10:]
    else:
        out["error"] = repr(err)
except Exception as err:
    out["error"] = repr(err)
out["calls"] = calls
db.close()
json.dump(out, open("response.json", "w"), default=str)
"""

LIMITS = SandboxLimits(cpu_seconds=5, wall_seconds=15, memory_mb=512, site_packages=False)


class SandboxedCategory(Category):
    """A category whose code came from a model; every call runs in the sandbox."""

    uses_sandbox = True
    max_level = 5

    def __init__(self, code: str, name: str = "model"):
        self.code, self.name, self.summary = code, name, name.replace("_", " ")
        self.answer_format = "JSON as the instruction asks"
        specs = self._run("tools", None)["tools"]
        self.specs = [ToolSpec(t["name"], t["description"], t["parameters"], False) for t in specs]
        self.base_tools = tuple(t["name"] for t in specs if int(t.get("level", 1)) <= 1)
        self._db_path: Path | None = None

    @staticmethod
    def from_env(env) -> SandboxedCategory:
        return SandboxedCategory(env.code, env.category)

    def _run(self, op: str, db: sqlite3.Connection | None, write_back: bool = False, **req) -> dict:
        with tempfile.TemporaryDirectory(prefix="dsv32-model-") as wd:
            wd = Path(wd)
            if db is not None:
                disk = sqlite3.connect(wd / "db.sqlite")
                db.backup(disk)
                disk.close()
            (wd / "request.json").write_text(json.dumps(dict(req, op=op), default=str))
            result = run_python(_HARNESS, workdir=wd, files={"code.py": self.code}, limits=LIMITS)
            response = wd / "response.json"
            if not response.is_file():
                raise ToolError(
                    f"model code failed in the sandbox ({result.killed_reason or 'crash'}): {result.stderr[-300:]}"  # noqa: E501
                )
            out = json.loads(response.read_text())
            if write_back and db is not None and (wd / "db.sqlite").is_file():
                disk = sqlite3.connect(wd / "db.sqlite")
                disk.backup(db)
                disk.close()
        if "missing" in out:
            raise MissingTool(out["missing"])
        return out

    def library(self) -> list[Tool]:
        def make(spec: ToolSpec) -> Tool:
            def fn(ctx, **args):
                out = self._run("tool", ctx.db, write_back=True, name=spec.name, args=args)
                if "error" in out:
                    raise ToolError(f"tool {spec.name!r} failed: {out['error']}")
                return out["result"]

            return Tool(spec, fn)

        return [make(s) for s in self.specs]

    def build_database(self, db, rng):
        out = self._run("build", db, write_back=True, seed=rng.randrange(2**31))
        if "error" in out:
            raise ValueError(f"model build() failed: {out['error']}")
        return f"model-written category: {self.summary}"

    def _task(self, db, rng, level):
        out = self._run("task", db, seed=rng.randrange(2**31), level=level)
        params = out.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("instruction"), str):
            return None
        return dict(params, level=level, constraints=list(params.get("constraints", [])))

    def initial_task(self, db, rng):
        return self._task(db, rng, 1)

    def harden(self, db, params, rng):
        return self._task(db, rng, params["level"] + 1) if params["level"] < self.max_level else None

    def instruction(self, params):
        return params["instruction"]

    def _agent_run(self, op: str, call: ToolCaller, params: dict, seed: int = 0):
        out = self._run(op, call.ctx.db, write_back=True, params=params, toolset=call.toolset, seed=seed)
        for name, args, result in out.get("calls", []):
            call.calls.append(ToolCall(name, args, result, None, f"I call {name} for the next step."))
        return None if "error" in out else out.get("answer")

    def solve(self, call, params):
        return self._agent_run("solve", call, params)

    def baseline(self, call, params, rng):
        return self._agent_run("baseline", call, params, rng.randrange(2**31))

    def verify(self, initial, final, params, answer):
        out = self._run("verify", final, params=params, answer=answer)
        checks = out.get("checks")
        if "error" in out or not isinstance(checks, list):
            return [Check("answer_format", False, f"verifier error: {out.get('error', 'no checks')}")]
        return [
            Check(str(c[0]), bool(c[1]), str(c[2])) for c in checks if isinstance(c, list) and len(c) == 3
        ]

    def mutations(self, initial, params, answer, rng):
        out = self._run("mutate", initial, params=params, answer=answer, seed=rng.randrange(2**31))
        return [
            Mutation(str(m[0]), m[1]) for m in out.get("mutations", []) if isinstance(m, list) and len(m) == 2
        ]


def extract_code(text: str) -> str:
    blocks = re.findall(r"```(?:python)?\n(.*?)```", text or "", re.S)
    if not blocks:
        raise ValueError("the synthesizer's reply has no ```python code block")
    return max(blocks, key=len)


def ask_model(base_url: str, model: str, topic: str, api_key: str = "none") -> str:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=api_key, timeout=120, max_retries=0)
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT.format(topic=topic)}]
    )
    return extract_code(reply.choices[0].message.content)


def synthesize_with_model(
    base_url: str,
    model: str,
    out_dir: str | Path,
    topic: str = "library book lending",
    n_envs: int = 1,
    seed: int = 0,
    k: int = 4,
) -> dict:
    """Ask the model for a category, then run the synthesis loop and gates on `n_envs` environments."""
    from dsv32.envs.synthesis import SynthOptions, env_seed, synthesize_environment

    code = ask_model(base_url, model, topic)
    name = "model_" + re.sub(r"[^a-z0-9]+", "_", topic.lower()).strip("_")[:40]
    category = SandboxedCategory(code, name)
    records, n_tasks, paths = [], 0, []
    for i in range(n_envs):
        env_id = f"{name}-{i:05d}"
        env, db, recs = synthesize_environment(
            category, env_id, env_seed(seed, name, i), options=SynthOptions(k=k, retries=0)
        )
        env.source, env.code = "model", code
        paths.append(str(save_environment(env, db, out_dir)))
        records += recs
        n_tasks += len(env.tasks)
    return {"category": name, "n_envs": n_envs, "n_tasks": n_tasks, "envs": paths, "records": records}
