"""Messages to prompt text in the DeepSeek-V3.2 chat encoding (SPEC section 5).

Each message renders to one segment; the prompt is BOS followed by the segments in order:
- system: content, then `\\n\\n` + the tools section when it carries tools, then `\\n\\n` + the
  response-format section when it carries a response format;
- developer: the user template around `\\n\\n` + tools + `\\n\\n` + response format +
  `\\n\\n# The user's message is: {content}`;
- user: `<｜User｜>{content}<｜Assistant｜>`; developer and user then add `<think>` when thinking
  opens after them (thinking mode and the LAST user/developer message) and `</think>` otherwise;
- assistant: `{reasoning}</think>` (thinking mode and after the last user message only) +
  content + `\\n\\n` + the DSML function-calls block when it calls tools + `<｜end▁of▁sentence｜>`;
- tool: results of the previous assistant's calls, matched in order: the first opens
  `\\n\\n<function_results>`, each is `\\n<result>{content}</result>`, the last closes
  `\\n</function_results>\\n\\n` + `<think>` (when thinking opens) or `</think>`.

Reasoning dropping (`drop_thinking=True`, the official behaviour and the default): assistant
messages before the last user message render without their reasoning, so a multi-turn prompt
carries only the current turn's reasoning. `drop_thinking=False` is this project's extension for
training on whole transcripts: every turn renders as the current one does (each user message and
each block of tool results opens `<think>`, every assistant message keeps `{reasoning}</think>`).
The official reference accepts `drop_thinking=False` but renders the same text as with True.

Incremental encoding: `encode_continuation(context, new)` renders the new messages as they appear
in the full conversation `context + new`, so `encode(context + new)` is exactly the context part
followed by the continuation. When `new` holds no user/developer message (tool results and the
assistant's next step within a turn) the context part is `encode(context)` itself, so a client
may append to the prompt it already has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dsv32.chat.dsml import render_tool_calls
from dsv32.chat.errors import EncodingError
from dsv32.chat.messages import Message, normalize_conversation
from dsv32.chat.templates import response_format_section, tools_section
from dsv32.chat.tokens import (
    ASSISTANT,
    BOS,
    EOS,
    FUNCTION_RESULTS_END,
    FUNCTION_RESULTS_START,
    RESULT_END,
    RESULT_START,
    THINK_END,
    THINK_START,
    USER,
)

THINKING_MODES = ("thinking", "chat")
DEVELOPER_PREFIX = "\n\n# The user's message is: "


@dataclass(frozen=True)
class Segment:
    """A piece of the prompt: one message's rendering (or the BOS token, index -1)."""

    text: str
    role: str
    index: int

    @property
    def assistant_produced(self) -> bool:
        """True for text the model itself generates (an assistant message's whole rendering)."""
        return self.role == "assistant"


def _sections(msg: Message) -> str:
    text = ""
    if msg.functions:
        text += "\n\n" + tools_section(list(msg.functions))
    if msg.response_format is not None:
        text += "\n\n" + response_format_section(msg.response_format)
    return text


def _last_user_index(messages: list[Message]) -> int:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role in ("user", "developer"):
            return index
    return -1


def _render(messages: list[Message], index: int, thinking: bool, drop_thinking: bool) -> str:
    msg = messages[index]
    last_user = _last_user_index(messages)
    # Thinking "opens" after a prompt part when the model is to reason next: in thinking mode,
    # for the current turn, or for every turn when reasoning is retained.
    current = index >= last_user or not drop_thinking
    open_think = THINK_START if thinking and current else THINK_END
    if msg.role == "system":
        return msg.content + _sections(msg)
    if msg.role == "developer":
        return f"{USER}{_sections(msg)}{DEVELOPER_PREFIX}{msg.content}{ASSISTANT}{open_think}"
    if msg.role == "user":
        return f"{USER}{msg.content}{ASSISTANT}{open_think}"
    if msg.role == "tool":
        caller = index - 1
        while messages[caller].role == "tool":
            caller -= 1
        order = index - caller  # 1-based position among the caller's results
        text = "\n\n" + FUNCTION_RESULTS_START if order == 1 else ""
        text += f"\n{RESULT_START}{msg.content}{RESULT_END}"
        if order == len(messages[caller].tool_calls):
            text += f"\n{FUNCTION_RESULTS_END}\n\n{open_think}"
        return text
    # assistant
    reasoning = ""
    if thinking and (index > last_user or not drop_thinking):
        if index > last_user and not (msg.reasoning_content or msg.tool_calls):
            raise EncodingError(
                f"message {index} (assistant): in thinking mode an assistant message after the last user "
                "message needs reasoning_content or tool_calls"
            )
        reasoning = (msg.reasoning_content or "") + THINK_END
    calls = [(c.name, c.arguments) for c in msg.tool_calls]
    calls_text = "\n\n" + render_tool_calls(calls) if calls else ""
    return f"{reasoning}{msg.content}{calls_text}{EOS}"


def _with_tools(messages: list[Any], tools: Any, response_format: Any) -> list[Any]:
    """Attach `tools`/`response_format` to a leading system message (inserted when absent)."""
    if tools is None and response_format is None:
        return list(messages)
    first = messages[0] if messages else None
    if isinstance(first, dict) and first.get("role") == "system":
        if (tools and first.get("tools")) or (response_format and first.get("response_format")):
            raise EncodingError("tools/response_format given both as arguments and on the system message")
        merged = dict(first)
        if tools is not None:
            merged["tools"] = tools
        if response_format is not None:
            merged["response_format"] = response_format
        return [merged, *messages[1:]]
    system = {"role": "system", "content": "", "tools": tools, "response_format": response_format}
    return [system, *messages]


def render_segments(
    messages: list[Any],
    thinking_mode: str = "thinking",
    drop_thinking: bool = True,
    *,
    start: int = 0,
    add_bos: bool = True,
) -> list[Segment]:
    """Segments of messages[start:], rendered within the whole conversation `messages`."""
    if thinking_mode not in THINKING_MODES:
        raise EncodingError(f"thinking_mode: expected 'thinking' or 'chat', got {thinking_mode!r}")
    normalized = normalize_conversation(messages)
    if not 0 <= start <= len(normalized):
        raise EncodingError(f"start: {start} is outside the {len(normalized)} messages")
    thinking = thinking_mode == "thinking"
    segments = [Segment(BOS, "bos", -1)] if add_bos and start == 0 else []
    for index in range(start, len(normalized)):
        text = _render(normalized, index, thinking, drop_thinking)
        segments.append(Segment(text, normalized[index].role, index))
    return segments


def encode_messages(
    messages: list[Any],
    thinking_mode: str = "thinking",
    drop_thinking: bool = True,
    *,
    tools: list[dict[str, Any]] | None = None,
    response_format: Any = None,
    context: list[Any] | None = None,
    add_bos: bool = True,
) -> str:
    """The prompt text for OpenAI-style `messages` (see the module docstring for the format).

    `tools`/`response_format` given here ride on a leading system message (one with empty content
    is inserted when the conversation has none). With `context`, only `messages` are rendered, as
    they appear after `context` (no BOS): see `encode_continuation`. A conversation that ends with
    a user message or the last of a block of tool results ends with the generation prompt.
    """
    for name, value in (("messages", messages), ("context", context or [])):
        if not isinstance(value, (list, tuple)):
            raise EncodingError(f"{name}: expected a list of message dicts, got {type(value).__name__}")
    context = list(context or [])
    full = _with_tools(context + list(messages), tools, response_format)
    start = len(full) - len(messages)
    if context:
        return "".join(s.text for s in render_segments(full, thinking_mode, drop_thinking, start=start))
    return "".join(s.text for s in render_segments(full, thinking_mode, drop_thinking, add_bos=add_bos))


def encode_continuation(
    context: list[Any],
    messages: list[Any],
    thinking_mode: str = "thinking",
    drop_thinking: bool = True,
) -> str:
    """The text that `messages` add after `context`: `encode(context + messages)` ends with it."""
    return encode_messages(messages, thinking_mode, drop_thinking, context=list(context) or None)
