"""Tools: functions over an environment's SQLite database, each described by a JSON schema.

A tool is `fn(ctx, **arguments) -> JSON-able value`, where `ctx` gives the database connection and
a sandbox runner (code tools run generated code only through `dsv32.sandbox`). Arguments are
checked against the schema before the function runs (required keys, unknown keys, JSON types,
enums), so a mistyped call fails with a message naming the tool, the argument and what was expected.
`ToolCaller` is what solutions, baseline agents and episodes call tools through: it enforces the
task's toolset, records every call (for expert trajectories), and raises `MissingTool` when a
solution needs a tool from the category's library that the toolset does not have yet; the
synthesis loop catches that and adds the tool.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dsv32.sandbox import SandboxLimits, SandboxResult, run_command, run_python

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


class ToolError(Exception):
    """A tool call that cannot run: unknown tool, bad arguments, or a tool-level failure."""


class MissingTool(ToolError):
    """The category library has this tool but the current toolset does not."""

    def __init__(self, name: str):
        super().__init__(f"tool {name!r} is not in this environment's toolset")
        self.name = name


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict  # JSON schema of an object
    writes: bool = False

    def openai(self) -> dict:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "writes": self.writes,
        }

    @staticmethod
    def from_json(data: dict) -> ToolSpec:
        return ToolSpec(
            data["name"], data["description"], data["parameters"], bool(data.get("writes", False))
        )


@dataclass(frozen=True)
class Tool:
    spec: ToolSpec
    fn: Callable[..., Any]


def tool(name: str, description: str, writes: bool = False, /, **properties: dict) -> Callable:
    """Decorator: build a `Tool` from a function and its parameter schemas (a key whose schema has
    "optional": True is not required). The first three are positional so any argument name works."""

    def wrap(fn: Callable) -> Tool:
        props = {k: {kk: vv for kk, vv in v.items() if kk != "optional"} for k, v in properties.items()}
        required = [k for k, v in properties.items() if not v.get("optional")]
        schema = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
        return Tool(ToolSpec(name, description, schema, writes), fn)

    return wrap


def S(desc: str, **extra) -> dict:  # noqa: N802 - schema shorthands read like types
    return {"type": "string", "description": desc, **extra}


def I(desc: str, **extra) -> dict:  # noqa: N802, E743
    return {"type": "integer", "description": desc, **extra}


def N(desc: str, **extra) -> dict:  # noqa: N802
    return {"type": "number", "description": desc, **extra}


def A(desc: str, items: dict, **extra) -> dict:  # noqa: N802
    return {"type": "array", "description": desc, "items": items, **extra}


def _type_ok(value: Any, schema: dict) -> bool:
    kinds = schema.get("type")
    if kinds is None:
        return True
    for kind in [kinds] if isinstance(kinds, str) else kinds:
        if kind == "null" and value is None:
            return True
        allowed = _JSON_TYPES.get(kind, ())
        if isinstance(value, bool) and kind in ("integer", "number"):
            continue
        if isinstance(value, allowed):
            return True
    return False


def validate_value(value: Any, schema: dict, where: str) -> None:
    if not _type_ok(value, schema):
        raise ToolError(
            f"{where} must be of type {schema.get('type')}, got {type(value).__name__} {value!r:.60}"
        )
    if "enum" in schema and value not in schema["enum"]:
        raise ToolError(f"{where} must be one of {schema['enum']}, got {value!r:.60}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate_value(item, schema["items"], f"{where}[{i}]")
    if isinstance(value, dict) and "properties" in schema:
        validate_arguments(value, schema, where)


def validate_arguments(arguments: Any, schema: dict, where: str) -> None:
    if not isinstance(arguments, dict):
        raise ToolError(f"{where}: arguments must be a JSON object, got {type(arguments).__name__}")
    props = schema.get("properties", {})
    missing = [k for k in schema.get("required", []) if k not in arguments]
    if missing:
        raise ToolError(f"{where}: missing required argument(s) {missing}; expected {sorted(props)}")
    unknown = [k for k in arguments if k not in props]
    if unknown and schema.get("additionalProperties") is False:
        raise ToolError(f"{where}: unknown argument(s) {unknown}; expected {sorted(props)}")
    for key, value in arguments.items():
        if key in props:
            validate_value(value, props[key], f"{where}: argument {key!r}")


def parse_arguments(raw: Any, tool_name: str) -> dict:
    """Arguments as an object, or as the JSON string OpenAI-style tool calls carry."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as err:
            raise ToolError(
                f"tool {tool_name!r}: arguments are not valid JSON ({err.msg} at {err.pos})"
            ) from None
    if not isinstance(raw, dict):
        raise ToolError(f"tool {tool_name!r}: arguments must be a JSON object, got {type(raw).__name__}")
    return raw


class SandboxRunner:
    """Runs code for tools in `dsv32.sandbox`, memoising results by content (tests and scripts
    over fixed files are deterministic, so equal inputs give equal results)."""

    def __init__(self, limits: SandboxLimits | None = None, cache: bool = True):
        self.limits = limits or SandboxLimits(cpu_seconds=5, wall_seconds=10, site_packages=False)
        self.cache: dict[str, SandboxResult] | None = {} if cache else None
        self.runs = 0

    def _key(self, *parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def python(self, code: str, files: dict[str, str]) -> SandboxResult:
        key = self._key("py", code, files)
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        self.runs += 1
        result = run_python(code, files=files, limits=self.limits)
        if self.cache is not None:
            self.cache[key] = result
        return result

    def command(self, argv: list[str], files: dict[str, str], workdir) -> SandboxResult:
        key = self._key("cmd", argv, files)
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        self.runs += 1
        result = run_command(argv, workdir=workdir, limits=self.limits)
        if self.cache is not None:
            self.cache[key] = result
        return result


@dataclass
class ToolContext:
    db: sqlite3.Connection
    sandbox: SandboxRunner = field(default_factory=SandboxRunner)


@dataclass
class ToolCall:
    name: str
    arguments: dict
    result: Any
    error: str | None = None
    thought: str = ""


class ToolCaller:
    """Calls tools of one toolset on one database; records calls and the reasoning before them."""

    def __init__(self, library: dict[str, Tool], toolset: list[str], ctx: ToolContext):
        self.library, self.toolset, self.ctx = library, list(toolset), ctx
        self.calls: list[ToolCall] = []
        self._thought: list[str] = []

    def note(self, text: str) -> None:
        """Reasoning that precedes the next tool call (rendered into expert trajectories)."""
        self._thought.append(text)

    def __call__(self, tool_name: str, /, **arguments: Any) -> Any:
        return self.call(tool_name, arguments)

    def call(self, name: str, arguments: Any) -> Any:
        if name not in self.toolset:
            if name in self.library:
                raise MissingTool(name)
            raise ToolError(f"unknown tool {name!r}; available: {sorted(self.toolset)}")
        spec = self.library[name].spec
        arguments = parse_arguments(arguments, name)
        validate_arguments(arguments, spec.parameters, f"tool {name!r}")
        thought, self._thought = " ".join(self._thought), []
        try:
            result = self.library[name].fn(self.ctx, **arguments)
        except ToolError as err:
            self.calls.append(ToolCall(name, arguments, None, str(err), thought))
            raise
        self.calls.append(ToolCall(name, arguments, result, None, thought))
        return result
