"""OpenAI-style chat messages checked and normalised for encoding.

`normalize_conversation` turns a list of message dicts (roles system, developer, user, assistant,
tool) into frozen `Message` records, raising `EncodingError` that names the message for anything
the encoding cannot represent faithfully: unknown roles, missing or mistyped fields, tools outside
a system/developer message, bad tool schemas, tool-call arguments that are not a JSON object,
tool results with no call before them, more results than calls, or results cut short by a later
message. A conversation may END with fewer results than calls: that is a valid prefix which an
incremental encoding continues.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dsv32.chat.errors import EncodingError
from dsv32.chat.schema import schema_problem

ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class Message:
    role: str
    content: str = ""
    reasoning_content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    functions: tuple[dict[str, Any], ...] = ()  # the `function` part of each OpenAI tool
    response_format: Any = None
    tool_call_id: str | None = None


def _where(index: int, role: str) -> str:
    return f"message {index} ({role})"


def _text(value: Any, where: str, *, allow_none: bool) -> str:
    """Content as a string; a list of OpenAI text parts is joined in order."""
    if value is None:
        if allow_none:
            return ""
        raise EncodingError(f"{where}: content is required (a string)")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        pieces = []
        for i, part in enumerate(value):
            if not (
                isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            ):
                raise EncodingError(f"{where}: content part {i} must be {{'type': 'text', 'text': str}}")
            pieces.append(part["text"])
        return "".join(pieces)
    raise EncodingError(
        f"{where}: content must be a string or a list of text parts, got {type(value).__name__}"
    )


def _check_name(name: Any, what: str) -> str:
    # A double quote would end the DSML name attribute early and could not be parsed back.
    if not isinstance(name, str) or not name or '"' in name:
        raise EncodingError(f"{what}: expected a non-empty string without double quotes, got {name!r}")
    return name


def normalize_function(tool: Any, where: str) -> dict[str, Any]:
    """The `function` dict of one OpenAI tool, checked."""
    if not isinstance(tool, dict) or not isinstance(tool.get("function"), dict):
        raise EncodingError(f"{where}: expected {{'type': 'function', 'function': {{...}}}}, got {tool!r}")
    if tool.get("type", "function") != "function":
        raise EncodingError(f"{where}: unsupported tool type {tool.get('type')!r} (expected 'function')")
    function = tool["function"]
    _check_name(function.get("name"), f"{where}.function.name")
    if "description" in function and not isinstance(function["description"], str):
        raise EncodingError(f"{where}.function.description: expected a string")
    if "parameters" in function:
        problem = schema_problem(function["parameters"], f"{where}.function.parameters")
        if problem:
            raise EncodingError(f"bad tool schema: {problem}")
    return function


def _tool_call(raw: Any, where: str) -> ToolCall:
    if not isinstance(raw, dict) or not isinstance(raw.get("function"), dict):
        raise EncodingError(f"{where}: expected {{'type': 'function', 'function': {{'name', 'arguments'}}}}")
    if raw.get("type", "function") != "function":
        raise EncodingError(f"{where}: unsupported tool call type {raw.get('type')!r}")
    name = _check_name(raw["function"].get("name"), f"{where}.function.name")
    arguments = raw["function"].get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as err:
            raise EncodingError(f"{where}.function.arguments: not valid JSON ({err})") from None
    if not isinstance(arguments, dict):
        raise EncodingError(
            f"{where}.function.arguments: expected a JSON object, got {type(arguments).__name__}"
        )
    for key in arguments:
        _check_name(key, f"{where}.function.arguments key")
    call_id = raw.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise EncodingError(f"{where}.id: expected a string")
    return ToolCall(name=name, arguments=arguments, id=call_id)


def normalize_message(raw: Any, index: int) -> Message:
    """One message dict as a `Message`; does not look at its neighbours."""
    if not isinstance(raw, dict):
        raise EncodingError(f"message {index}: expected a dict with a 'role', got {type(raw).__name__}")
    role = raw.get("role")
    if role not in ROLES:
        raise EncodingError(f"message {index}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
    where = _where(index, role)
    if raw.get("tools") and role not in ("system", "developer"):
        raise EncodingError(f"{where}: tools may ride only on a system or developer message")
    if raw.get("response_format") and role not in ("system", "developer"):
        raise EncodingError(f"{where}: response_format may ride only on a system or developer message")
    tools = raw.get("tools") or []
    if not isinstance(tools, list):
        raise EncodingError(f"{where}: tools must be a list")
    functions = tuple(normalize_function(t, f"{where} tools[{i}]") for i, t in enumerate(tools))
    content = _text(raw.get("content"), where, allow_none=role in ("system", "assistant"))
    if role == "developer" and not content:
        raise EncodingError(f"{where}: content must be a non-empty string")
    reasoning = raw.get("reasoning_content")
    if reasoning is not None and (role != "assistant" or not isinstance(reasoning, str)):
        raise EncodingError(f"{where}: reasoning_content must be a string on an assistant message")
    raw_calls = raw.get("tool_calls") or []
    if raw_calls and role != "assistant":
        raise EncodingError(f"{where}: only assistant messages carry tool_calls")
    if not isinstance(raw_calls, list):
        raise EncodingError(f"{where}: tool_calls must be a list")
    calls = tuple(_tool_call(c, f"{where} tool_calls[{i}]") for i, c in enumerate(raw_calls))
    call_id = raw.get("tool_call_id")
    if call_id is not None and not isinstance(call_id, str):
        raise EncodingError(f"{where}: tool_call_id must be a string")
    return Message(
        role=role,
        content=content,
        reasoning_content=reasoning,
        tool_calls=calls,
        functions=functions,
        response_format=raw.get("response_format") or None,
        tool_call_id=call_id,
    )


def _check_tool_results(messages: list[Message]) -> None:
    """Tool results follow an assistant's tool calls, at most one per call, matched by order."""
    calls: tuple[ToolCall, ...] = ()
    caller = -1
    seen = 0
    for index, msg in enumerate(messages):
        if msg.role == "tool":
            if caller < 0:
                raise EncodingError(
                    f"{_where(index, 'tool')}: a tool result with no assistant tool call before it"
                )
            if seen >= len(calls):
                raise EncodingError(
                    f"{_where(index, 'tool')}: more tool results than the {len(calls)} tool call(s) "
                    f"of message {caller}"
                )
            expected = calls[seen].id
            if msg.tool_call_id is not None and expected is not None and msg.tool_call_id != expected:
                ids = [c.id for c in calls]
                reason = "is out of order" if msg.tool_call_id in ids else "matches no call"
                raise EncodingError(
                    f"{_where(index, 'tool')}: tool_call_id {msg.tool_call_id!r} {reason}; results follow "
                    f"the calls of message {caller} in order, expected {expected!r}"
                )
            seen += 1
            continue
        if caller >= 0 and seen < len(calls):
            raise EncodingError(
                f"{_where(index, msg.role)}: message {caller} made {len(calls)} tool call(s) but only "
                f"{seen} tool result(s) follow it"
            )
        calls, seen = msg.tool_calls, 0
        caller = index if msg.role == "assistant" and msg.tool_calls else -1


def normalize_conversation(messages: Any) -> list[Message]:
    """Check and normalise a whole conversation (see the module docstring for the rules)."""
    if not isinstance(messages, (list, tuple)):
        raise EncodingError(f"messages: expected a list of message dicts, got {type(messages).__name__}")
    normalized = [m if isinstance(m, Message) else normalize_message(m, i) for i, m in enumerate(messages)]
    _check_tool_results(normalized)
    return normalized
