"""`dsv32 chat`'s terminal loop on the replay backend: sections, tool calls and the turn's history."""

import io
import json

from serve_support import (
    FINAL_ANSWER,
    FINAL_REASONING,
    HELLO_ANSWER,
    HELLO_REASONING,
    TOOL_REASONING,
    WEATHER_TOOL,
    make_state,
    script,
)

from dsv32.chat.encoding import encode_messages
from dsv32.serve.terminal import TerminalChat


def test_reasoning_and_answer_are_shown_apart(tokenizer):
    out = io.StringIO()
    chat = TerminalChat(make_state(tokenizer, script), out, thinking=True)
    assert chat.run(iter(["hello\n"])) == 0
    text = out.getvalue()
    assert f"[reasoning]\n{HELLO_REASONING}\n[answer]\n{HELLO_ANSWER}\n" in text
    assert chat.messages[-1] == {
        "role": "assistant",
        "content": HELLO_ANSWER,
        "reasoning_content": HELLO_REASONING,
    }


def test_tool_call_is_shown_and_its_typed_result_continues_the_turn(tokenizer):
    out = io.StringIO()
    state = make_state(tokenizer, script)
    chat = TerminalChat(state, out, thinking=True, tools=[WEATHER_TOOL])
    chat.run(iter(["what is the weather in Paris?", "sunny, 21C", "/exit", "never read"]))
    text = out.getvalue()
    assert '[tool call] get_weather {"city": "Paris", "days": 2}' in text
    assert "result of get_weather> " in text
    assert f"[reasoning]\n{FINAL_REASONING}\n[answer]\n{FINAL_ANSWER}\n" in text
    roles = [m["role"] for m in chat.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert chat.messages[1]["reasoning_content"] == TOOL_REASONING
    assert json.loads(chat.messages[1]["tool_calls"][0]["function"]["arguments"]) == {
        "city": "Paris",
        "days": 2,
    }
    # The second request carried the first step's reasoning and the typed result.
    prompt = tokenizer.decode(state.backend.prompts[-1])
    assert prompt == encode_messages(chat.messages[:3], tools=[WEATHER_TOOL])


def test_commands_switch_mode_and_reset(tokenizer):
    out = io.StringIO()
    state = make_state(tokenizer, script)
    chat = TerminalChat(state, out, thinking=True)
    chat.run(iter(["/thinking off", "hello", "/new", "/bogus"]))
    assert chat.messages == []
    assert "[thinking off]" in out.getvalue() and "[commands:" in out.getvalue()
    assert "[reasoning]" not in out.getvalue() and HELLO_ANSWER in out.getvalue()
    assert tokenizer.decode(state.backend.prompts[-1]) == encode_messages(
        [{"role": "user", "content": "hello"}], thinking_mode="chat"
    )


def test_bad_request_is_reported_and_rolled_back(tokenizer):
    out = io.StringIO()
    chat = TerminalChat(make_state(tokenizer, script, context_length=8), out, thinking=True)
    chat.run(iter(["hello"]))
    assert "[error] the prompt is" in out.getvalue() and chat.messages == []
