"""The code-interpreter tool: model-written Python run in `dsv32.sandbox` and reported as text.

Each call runs in a fresh temporary working directory in a child process with CPU-time, memory
(address space), file-size and wall-clock limits and no network (see `dsv32/sandbox.py` for which
mechanism isolates what on the current machine; `isolation` in each report names it). Output is
truncated by the sandbox to `max_output_chars` per stream. Nothing persists between calls: a
program that needs data must create it in the same call.

The tool itself never raises for a failing program: the exit code, the limit that killed it and
the captured streams are the result the model sees. The registry timeout is the sandbox's own
wall-clock limit plus a margin, so it only fires if the sandbox host side itself hangs.
"""

from __future__ import annotations

from dataclasses import replace

from dsv32.agent.tools import Tool, tool_from_function
from dsv32.sandbox import SandboxLimits, SandboxResult, run_python

DEFAULT_LIMITS = SandboxLimits(cpu_seconds=10.0, wall_seconds=20.0, memory_mb=1024, file_size_mb=16)


def format_result(result: SandboxResult) -> str:
    """The text the model sees for one execution."""
    if result.killed_reason:
        status = f"killed: {result.killed_reason} limit exceeded"
    elif result.timed_out:
        status = "killed: wall-clock limit exceeded"
    else:
        status = f"exit code {result.returncode}"
    parts = [f"[{status}; {result.duration_s:.2f} s]"]
    if result.stdout:
        parts.append("stdout:\n" + result.stdout.rstrip("\n"))
    if result.stderr:
        parts.append("stderr:\n" + result.stderr.rstrip("\n"))
    if not result.stdout and not result.stderr:
        parts.append("(no output)")
    if result.truncated:
        parts.append("[output truncated]")
    return "\n".join(parts)


def make_python_tool(limits: SandboxLimits = DEFAULT_LIMITS, margin_s: float = 10.0) -> Tool:
    """A `python(code)` tool running each call in the sandbox with `limits`."""

    def python(code: str) -> str:
        """Run a Python program in a sandbox and return its exit status, stdout and stderr.

        Args:
            code: the complete Python source to run
        """
        return format_result(run_python(code, limits=limits))

    tool = tool_from_function(python, timeout_s=limits.wall_seconds + margin_s)
    description = (
        f"{tool.description} Each call starts in an empty temporary directory, without network, "
        f"limited to {limits.cpu_seconds:g} s CPU, {limits.wall_seconds:g} s wall clock, "
        f"{limits.memory_mb} MB memory."
    )
    return replace(tool, description=description)
