"""The DSML tool-call block: rendering tool calls, and reading them back one invoke at a time.

Format (SPEC section 5), one invoke per call and one parameter line per argument:

    <｜DSML｜function_calls>
    <｜DSML｜invoke name="NAME">
    <｜DSML｜parameter name="KEY" string="true">raw string</｜DSML｜parameter>
    <｜DSML｜parameter name="KEY" string="false">JSON value</｜DSML｜parameter>
    </｜DSML｜invoke>
    </｜DSML｜function_calls>

A call without arguments has an empty line between its invoke tags. `read_invoke` is written for
streaming: it reads from a position in a buffer that may end anywhere and raises `NeedMore` when
the buffer ends before the invoke does, or `Malformed` (with the offending position) when the text
cannot be a well-formed invoke whatever follows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dsv32.chat.templates import to_json
from dsv32.chat.tokens import (
    ASSISTANT,
    BOS,
    DSML,
    EOS,
    FUNCTION_CALLS_END,
    FUNCTION_CALLS_START,
    INVOKE_END,
    INVOKE_START,
    PARAMETER_END,
    PARAMETER_START,
    THINK_END,
    THINK_START,
    USER,
)

# Strings that may never appear inside generated text, names or parameter values.
RESERVED = (BOS, EOS, USER, ASSISTANT, THINK_START, THINK_END, DSML)


def render_parameter(key: str, value: Any) -> str:
    """One parameter line: a string raw with string="true", any other value as JSON."""
    if isinstance(value, str):
        return f'{PARAMETER_START} name="{key}" string="true">{value}{PARAMETER_END}'
    return f'{PARAMETER_START} name="{key}" string="false">{to_json(value)}{PARAMETER_END}'


def render_tool_calls(calls: list[tuple[str, dict[str, Any]]]) -> str:
    """The function-calls block for (name, arguments) pairs, without the blank line before it."""
    invokes = []
    for name, arguments in calls:
        params = "\n".join(render_parameter(k, v) for k, v in arguments.items())
        invokes.append(f'{INVOKE_START} name="{name}">\n{params}\n{INVOKE_END}')
    return f"{FUNCTION_CALLS_START}\n" + "\n".join(invokes) + f"\n{FUNCTION_CALLS_END}"


class NeedMore(Exception):
    """The buffer ended before the construct did; feed more text."""


class Malformed(Exception):
    """The text cannot be a well-formed tool-call block."""

    def __init__(self, reason: str, at: int):
        super().__init__(reason)
        self.reason = reason
        self.at = at


@dataclass(frozen=True)
class RawCall:
    """An invoke as written: name and (key, raw value, is_string) triples, in order."""

    name: str
    params: tuple[tuple[str, str, bool], ...]


def scan_markers(buf: str, markers: tuple[str, ...], final: bool) -> tuple[int, str | None]:
    """Earliest decided marker in buf: (position, marker), or (safe length, None) to wait.

    A marker occurrence is decided only when no marker could still begin at or before it once
    more text arrives; until then the text from the first possible start is held back.
    """
    pos, found = len(buf), None
    for marker in markers:
        at = buf.find(marker)
        if at >= 0 and (at < pos or (at == pos and found is not None and len(marker) > len(found))):
            pos, found = at, marker
    if not final:
        longest = max(len(m) for m in markers)
        for start in range(max(0, len(buf) - longest + 1), min(pos + 1, len(buf))):
            tail = buf[start:]
            if any(len(m) > len(tail) and m.startswith(tail) for m in markers):
                return start, None
    return pos, found


def _expect(buf: str, i: int, literal: str) -> int:
    if buf.startswith(literal, i):
        return i + len(literal)
    if literal.startswith(buf[i:]):
        raise NeedMore
    raise Malformed(f"expected {literal!r}", i)


def peek(buf: str, i: int, literal: str) -> bool:
    """Whether `literal` starts at i; NeedMore when the buffer ends inside a possible match."""
    if buf.startswith(literal, i):
        return True
    if len(buf) - i < len(literal) and literal.startswith(buf[i:]):
        raise NeedMore
    return False


def _read_name(buf: str, i: int, what: str) -> tuple[str, int]:
    end = buf.find('"', i)
    if end < 0:
        if any(c in buf[i:] for c in "\n<>"):
            raise Malformed(f"malformed {what}", i)
        raise NeedMore
    name = buf[i:end]
    if not name or any(c in name for c in "\n<>"):
        raise Malformed(f"malformed {what}", i)
    return name, end + 1


def read_invoke(buf: str, i: int) -> tuple[RawCall, int]:
    """Read `<｜DSML｜invoke name="...">...</｜DSML｜invoke>` starting at i; return it and the end."""
    i = _expect(buf, i, f'{INVOKE_START} name="')
    name, i = _read_name(buf, i, "tool name")
    i = _expect(buf, i, ">\n")
    params: list[tuple[str, str, bool]] = []
    if peek(buf, i, f"\n{INVOKE_END}"):
        return RawCall(name, ()), i + len(INVOKE_END) + 1
    while True:
        i = _expect(buf, i, f'{PARAMETER_START} name="')
        key, i = _read_name(buf, i, f"parameter name of tool {name!r}")
        i = _expect(buf, i, ' string="')
        if peek(buf, i, 'true">'):
            is_string, i = True, i + 6
        elif peek(buf, i, 'false">'):
            is_string, i = False, i + 7
        else:
            raise Malformed(f'parameter {key!r} of tool {name!r}: string must be "true" or "false"', i)
        # The value runs to the closing tag; a reserved token before it is an error.
        length, marker = scan_markers(buf[i:], (PARAMETER_END, *RESERVED), final=False)
        if marker is None:
            raise NeedMore
        if marker != PARAMETER_END:
            reason = f"parameter {key!r} of tool {name!r}: unexpected {marker!r} in the value"
            raise Malformed(reason, i + length)
        value, end = buf[i : i + length], i + length
        params.append((key, value, is_string))
        i = _expect(buf, end + len(PARAMETER_END), "\n")
        if peek(buf, i, INVOKE_END):
            return RawCall(name, tuple(params)), i + len(INVOKE_END)


def decode_arguments(call: RawCall) -> dict[str, Any]:
    """Arguments as a dict: string="false" values parsed as JSON. Raises ValueError with the reason."""
    arguments: dict[str, Any] = {}
    for key, value, is_string in call.params:
        if key in arguments:
            raise ValueError(f"tool {call.name!r}: parameter {key!r} given twice")
        if is_string:
            arguments[key] = value
            continue
        try:
            arguments[key] = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"tool {call.name!r}: parameter {key!r} is not valid JSON ({err.msg})") from None
    return arguments
