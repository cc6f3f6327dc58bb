"""The code-interpreter tool on top of the sandbox: limits are enforced and reported, host survives."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dsv32.agent.code_tool import make_python_tool
from dsv32.agent.tools import ToolCall, ToolRegistry
from dsv32.sandbox import SandboxLimits

LIMITS = SandboxLimits(cpu_seconds=1.0, wall_seconds=4.0, memory_mb=256, file_size_mb=1, site_packages=False)


def _call(registry: ToolRegistry, code: str):
    return registry.execute(ToolCall("c", "python", json.dumps({"code": code})))


def test_schema_and_normal_run():
    tool = make_python_tool(LIMITS)
    assert tool.parameters["required"] == ["code"]
    assert "1 s CPU" in tool.description and "256 MB memory" in tool.description
    result = _call(
        ToolRegistry.from_functions([tool]), "print(sum(range(10)))\nimport sys; print('e', file=sys.stderr)"
    )
    assert result.ok
    assert result.content.startswith("[exit code 0;")
    assert "stdout:\n45" in result.content and "stderr:\ne" in result.content


def test_limits_kill_and_host_survives(tmp_path):
    registry = ToolRegistry.from_functions([make_python_tool(LIMITS)])
    outside = tmp_path / "escape.txt"
    loop = _call(registry, "while True:\n    pass")
    bomb = _call(registry, "x = bytearray(2 * 1024**3)\nprint(len(x))")
    write = _call(registry, f"open({str(outside)!r}, 'w').write('x')")
    failing = _call(registry, "raise SystemExit(3)")
    # the tool call itself succeeds (the report is the result); the programs were stopped
    assert all(r.ok for r in (loop, bomb, write, failing))
    assert "killed: cpu-time" in loop.content or "killed: wall-clock" in loop.content
    assert "killed: memory" in bomb.content and "2147483648" not in bomb.content
    assert not outside.exists()
    assert "exit code 0" not in write.content and "Error" in write.content
    assert failing.content.startswith("[exit code 3;")
    # the host process is alive and still usable afterwards
    assert _call(registry, "print('alive')").content.split("stdout:\n")[1].startswith("alive")
    assert os.getpid() > 0 and Path.cwd().exists()
