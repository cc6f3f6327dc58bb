"""The chat encoding: the official fixture byte for byte, hand-written expectations, typed errors."""

import json

import pytest

from dsv32.chat.encoding import encode_continuation, encode_messages, render_segments
from dsv32.chat.errors import EncodingError
from dsv32.chat.tokens import ASSISTANT, BOS, EOS, SPECIAL_TOKENS, THINK_END, THINK_START, USER

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def call(name, arguments, call_id=None):
    out = {"type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
    if call_id:
        out["id"] = call_id
    return out


def test_fixture_is_reproduced_byte_for_byte(fixture_conversation):
    messages, expected = fixture_conversation
    assert encode_messages(messages, thinking_mode="thinking", drop_thinking=True) == expected


def test_tools_keyword_matches_tools_on_the_system_message(fixture_conversation):
    messages, expected = fixture_conversation
    tools = messages[0].pop("tools")
    assert encode_messages(messages, "thinking", tools=tools) == expected


def test_special_tokens_start_with_bos_and_eos():
    assert SPECIAL_TOKENS[:2] == ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"]
    assert len(set(SPECIAL_TOKENS)) == len(SPECIAL_TOKENS)


def test_thinking_single_turn_prompt_opens_thinking():
    text = encode_messages([{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}])
    assert text == f"{BOS}S{USER}hi{ASSISTANT}{THINK_START}"


def test_chat_mode_closes_thinking_and_drops_reasoning():
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b", "reasoning_content": "hidden"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d", "reasoning_content": "also hidden"},
    ]
    text = encode_messages(messages, thinking_mode="chat")
    assert text == f"{BOS}{USER}a{ASSISTANT}{THINK_END}b{EOS}{USER}c{ASSISTANT}{THINK_END}d{EOS}"


def test_several_user_turns_keep_only_the_last_reasoning():
    messages = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "reasoning_content": "r1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2", "reasoning_content": "r2"},
    ]
    text = encode_messages(messages)
    assert text == (
        f"{BOS}{USER}q1{ASSISTANT}{THINK_END}a1{EOS}{USER}q2{ASSISTANT}{THINK_START}r2{THINK_END}a2{EOS}"
    )
    kept = encode_messages(messages, drop_thinking=False)
    assert kept == (
        f"{BOS}{USER}q1{ASSISTANT}{THINK_START}r1{THINK_END}a1{EOS}"
        f"{USER}q2{ASSISTANT}{THINK_START}r2{THINK_END}a2{EOS}"
    )


def test_non_string_arguments_are_json_with_string_false():
    args = {"n": 3, "x": 1.5, "ok": True, "none": None, "list": [1, "é"], "obj": {"k": "日本"}, "s": "naïve"}
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "reasoning_content": "r", "tool_calls": [call("f", args)]},
    ]
    text = encode_messages(messages)
    expected_params = [
        '<｜DSML｜parameter name="n" string="false">3</｜DSML｜parameter>',
        '<｜DSML｜parameter name="x" string="false">1.5</｜DSML｜parameter>',
        '<｜DSML｜parameter name="ok" string="false">true</｜DSML｜parameter>',
        '<｜DSML｜parameter name="none" string="false">null</｜DSML｜parameter>',
        '<｜DSML｜parameter name="list" string="false">[1, "é"]</｜DSML｜parameter>',
        '<｜DSML｜parameter name="obj" string="false">{"k": "日本"}</｜DSML｜parameter>',
        '<｜DSML｜parameter name="s" string="true">naïve</｜DSML｜parameter>',
    ]
    block = (
        '<｜DSML｜function_calls>\n<｜DSML｜invoke name="f">\n'
        + "\n".join(expected_params)
        + "\n</｜DSML｜invoke>\n</｜DSML｜function_calls>"
    )
    assert text.endswith(f"{THINK_START}r{THINK_END}\n\n{block}{EOS}")
    # arguments may also be given as a dict instead of a JSON string
    dict_call = {"type": "function", "function": {"name": "f", "arguments": args}}
    messages[1]["tool_calls"] = [dict_call]
    assert encode_messages(messages) == text


def test_tool_results_close_with_think_in_the_current_turn_only():
    messages = [
        {"role": "user", "content": "u"},
        {"role": "assistant", "reasoning_content": "r", "tool_calls": [call("f", {}), call("g", {"a": 1})]},
        {"role": "tool", "content": "one"},
        {"role": "tool", "content": "two"},
    ]
    text = encode_messages(messages)
    assert text.endswith(
        f"{EOS}\n\n<function_results>\n<result>one</result>\n<result>two</result>\n</function_results>\n\n{THINK_START}"
    )
    assert '<｜DSML｜invoke name="f">\n\n</｜DSML｜invoke>' in text  # no arguments: an empty line
    assert encode_messages(messages, "chat").endswith(f"</function_results>\n\n{THINK_END}")


def test_developer_role_wraps_tools_and_message_in_the_user_template():
    messages = [{"role": "developer", "content": "find X", "tools": [WEATHER_TOOL]}]
    text = encode_messages(messages)
    assert text.startswith(f"{BOS}{USER}\n\n## Tools\n\n")
    assert '{"name": "get_weather", "description": "Weather for a city"' in text
    assert text.endswith(f"</functions>\n\n\n# The user's message is: find X{ASSISTANT}{THINK_START}")


def test_response_format_section():
    schema = {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}}
    text = encode_messages(
        [{"role": "system", "content": "S", "response_format": schema}, {"role": "user", "content": "u"}]
    )
    expected = (
        "S\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n"
        + json.dumps(schema)
    )
    assert text == f"{BOS}{expected}{USER}u{ASSISTANT}{THINK_START}"


def test_continuation_within_a_turn_appends_to_the_previous_prompt(fixture_conversation):
    messages, expected = fixture_conversation
    # Split inside the last turn: after the assistant's tool calls, and between two tool results.
    for cut in (len(messages) - 3, len(messages) - 2, len(messages) - 1):
        context, new = messages[:cut], messages[cut:]
        assert encode_messages(context) + encode_continuation(context, new) == expected


def test_continuation_across_a_new_user_turn_is_the_suffix_of_the_full_encoding(fixture_conversation):
    messages, expected = fixture_conversation
    cut = 8  # the second user message starts the continuation
    continuation = encode_continuation(messages[:cut], messages[cut:])
    assert expected.endswith(continuation) and continuation.startswith(USER)
    prefix = "".join(s.text for s in render_segments(messages)[: cut + 1])  # BOS + the context's segments
    assert prefix + continuation == expected
    # the context alone still shows its (then current) reasoning; within the full conversation it is dropped
    assert "Now I know today is" in encode_messages(messages[:cut])
    assert "Now I know today is" not in prefix


@pytest.mark.parametrize(
    "messages, needle",
    [
        ([{"role": "tool", "content": "x"}], "no assistant tool call before it"),
        ([{"role": "user", "content": "u"}, {"role": "tool", "content": "x"}], "no assistant tool call"),
        (
            [
                {"role": "user", "content": "u"},
                {"role": "assistant", "reasoning_content": "r", "tool_calls": [call("f", {})]},
                {"role": "tool", "content": "1"},
                {"role": "tool", "content": "2"},
            ],
            "more tool results than the 1 tool call",
        ),
        (
            [
                {"role": "user", "content": "u"},
                {"role": "assistant", "reasoning_content": "r", "tool_calls": [call("f", {}), call("g", {})]},
                {"role": "tool", "content": "1"},
                {"role": "user", "content": "next"},
            ],
            "made 2 tool call(s) but only 1 tool result(s)",
        ),
        (
            [
                {"role": "user", "content": "u"},
                {"role": "assistant", "tool_calls": [call("f", {}, "call_a")], "reasoning_content": "r"},
                {"role": "tool", "content": "1", "tool_call_id": "call_zzz"},
            ],
            "'call_zzz' matches no call",
        ),
        (
            [{"role": "user", "content": "u"}, {"role": "assistant", "content": "no reasoning"}],
            "needs reasoning_content",
        ),
        ([{"role": "wizard", "content": "x"}], "unknown role 'wizard'"),
        (["not a dict"], "message 0: expected a dict"),
        ([{"role": "user"}], "content is required"),
        ([{"role": "user", "content": 5}], "content must be a string"),
        ([{"role": "developer", "content": ""}], "non-empty"),
        ([{"role": "user", "content": "u", "tools": [WEATHER_TOOL]}], "system or developer"),
        ([{"role": "system", "content": "s", "tools": [{"name": "x"}]}], "tools[0]"),
        (
            [
                {
                    "role": "system",
                    "content": "s",
                    "tools": [{"type": "function", "function": {"name": 'a"b'}}],
                }
            ],
            "without double quotes",
        ),
        (
            [
                {
                    "role": "system",
                    "tools": [
                        {"type": "function", "function": {"name": "f", "parameters": {"type": "bogus"}}}
                    ],
                }
            ],
            "bad tool schema",
        ),
        (
            [
                {"role": "user", "content": "u"},
                {
                    "role": "assistant",
                    "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{"}}],
                },
            ],
            "not valid JSON",
        ),
        (
            [
                {"role": "user", "content": "u"},
                {
                    "role": "assistant",
                    "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "[1]"}}],
                },
            ],
            "expected a JSON object",
        ),
        ("not a list", "expected a list"),
    ],
)
def test_malformed_conversations_raise_a_typed_error(messages, needle):
    with pytest.raises(EncodingError) as info:
        encode_messages(messages)
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_thinking_mode_is_rejected():
    with pytest.raises(EncodingError, match="thinking_mode"):
        encode_messages([{"role": "user", "content": "u"}], thinking_mode="deep")


def test_chat_mode_allows_an_assistant_without_reasoning():
    text = encode_messages([{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}], "chat")
    assert text == f"{BOS}{USER}u{ASSISTANT}{THINK_END}a{EOS}"


def test_tools_keyword_inserts_a_system_message_when_there_is_none():
    text = encode_messages([{"role": "user", "content": "u"}], tools=[WEATHER_TOOL])
    assert text.startswith(f"{BOS}\n\n## Tools\n\n") and text.endswith(
        f"</functions>\n{USER}u{ASSISTANT}{THINK_START}"
    )


def test_content_given_as_text_parts_is_joined():
    parts = [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]
    assert encode_messages([{"role": "user", "content": parts}]) == encode_messages(
        [{"role": "user", "content": "hello there"}]
    )
    with pytest.raises(EncodingError, match="content part 0"):
        encode_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])
