"""Fixed texts of the DeepSeek-V3.2 encoding: the tools section and the response-format section.

These strings are part of the wire format: the tools section must match the official encoding
byte for byte (checked against `fixtures/dsv32-encoding`), so they are kept verbatim here and
nowhere else.
"""

from __future__ import annotations

import json
from typing import Any

from dsv32.chat.tokens import (
    FUNCTION_CALLS_END,
    FUNCTION_CALLS_START,
    FUNCTION_RESULTS_END,
    FUNCTION_RESULTS_START,
    INVOKE_END,
    INVOKE_START,
    PARAMETER_END,
    PARAMETER_START,
    THINK_END,
    THINK_START,
)

_TOOLS_SECTION = (
    "## Tools\n\n"
    "You have access to a set of tools you can use to answer the user's question.\n"
    f'You can invoke functions by writing a "{FUNCTION_CALLS_START}" block like the following as part of '
    "your reply to the user:\n"
    f"{FUNCTION_CALLS_START}\n"
    f'{INVOKE_START} name="$FUNCTION_NAME">\n'
    f'{PARAMETER_START} name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE{PARAMETER_END}\n'
    "...\n"
    f"{INVOKE_END}\n"
    f'{INVOKE_START} name="$FUNCTION_NAME2">\n'
    "...\n"
    f"{INVOKE_END}\n"
    f"{FUNCTION_CALLS_END}\n\n"
    "String and scalar parameters should be specified as is without any escaping or quotes, while lists "
    'and objects should use JSON format. The "string" attribute should be set to "true" for string type '
    'parameters and "false" for other types (numbers, booleans, arrays, objects).\n\n'
    "If the thinking_mode is enabled, then after function results you should strongly consider outputting "
    "a thinking block. Here is an example:\n\n"
    f"{FUNCTION_CALLS_START}\n...\n{FUNCTION_CALLS_END}\n\n"
    f"{FUNCTION_RESULTS_START}\n...\n{FUNCTION_RESULTS_END}\n\n"
    f"{THINK_START}...thinking about results{THINK_END}\n\n"
    "Here are the functions available in JSONSchema format:\n"
    "<functions>\n"
    "{schemas}\n"
    "</functions>\n"
)

_RESPONSE_FORMAT_SECTION = (
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n{schema}"
)


def to_json(value: Any) -> str:
    """JSON as the encoding writes it: `json.dumps` defaults, non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False)


def tools_section(functions: list[dict[str, Any]]) -> str:
    """The tools section for OpenAI `tool["function"]` dicts, one JSON object per line."""
    return _TOOLS_SECTION.replace("{schemas}", "\n".join(to_json(f) for f in functions))


def response_format_section(response_format: Any) -> str:
    """The response-format section; the whole `response_format` value is written as JSON."""
    return _RESPONSE_FORMAT_SECTION.replace("{schema}", to_json(response_format))
