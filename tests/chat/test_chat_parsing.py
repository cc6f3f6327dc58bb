"""Completion parsing: fixture completions, hand-written errors, and property-based round trips."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import assistant_messages, garbage

from dsv32.chat.encoding import encode_messages
from dsv32.chat.parsing import ParsedMessage, ParseError, StreamingParser, parse_completion

USER = {"role": "user", "content": "question"}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "number"}, "tag": {"type": "string"}},
                "required": ["a"],
            },
        },
    }
]


def completion_of(message, thinking=True, history=(USER,)):
    """The text the model writes for `message`: the full encoding minus the prompt before it."""
    mode = "thinking" if thinking else "chat"
    prompt = encode_messages(list(history), mode)
    full = encode_messages([*history, message], mode)
    assert full.startswith(prompt)
    return full[len(prompt) :]


def same_message(parsed, message, thinking=True):
    assert isinstance(parsed, ParsedMessage), parsed
    assert parsed.content == (message.get("content") or "")
    assert parsed.reasoning_content == ((message.get("reasoning_content") or "") if thinking else None)
    expected_calls = [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls", [])
    ]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed.tool_calls] == (
        expected_calls
    )
    assert all(
        c["type"] == "function" and isinstance(c["function"]["arguments"], str) for c in parsed.tool_calls
    )
    assert parsed.saw_eos


def stream(text, cuts, **kwargs):
    """Feed `text` split at `cuts`; return the concatenated deltas and the result."""
    parser = StreamingParser(**kwargs)
    pieces, last = [], 0
    for cut in sorted(set(c % (len(text) + 1) for c in cuts)) + [len(text)]:
        pieces.append(text[last:cut])
        last = cut
    reasoning, content, calls, errors = "", "", [], []
    for delta in [parser.feed(p) for p in pieces] + [parser.finish()]:
        reasoning += delta.reasoning_content
        content += delta.content
        calls += delta.tool_calls
        errors += [delta.error] if delta.error else []
    return (reasoning, content, calls, errors), parser.result()


def test_fixture_completions_parse_back(fixture_conversation):
    messages, _ = fixture_conversation
    tools = messages[0]["tools"]
    for index in (2, 4, 7, 9, 12):  # the assistant messages of the current-turn rendering
        text = completion_of(messages[index], history=messages[:index])
        same_message(parse_completion(text, tools=tools), messages[index])


def test_completion_without_eos_is_accepted():
    parsed = parse_completion("think</think>answer")
    assert parsed == ParsedMessage(content="answer", reasoning_content="think", saw_eos=False)
    assert parse_completion("answer", thinking=False) == ParsedMessage(content="answer")


def test_string_false_parameters_are_json_checked_against_the_schema():
    call = (
        '\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="add">\n'
        '<｜DSML｜parameter name="a" string="false">{a}</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="tag" string="true">x y</｜DSML｜parameter>\n'
        "</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>"
    )
    ok = parse_completion("r</think>" + call.format(a="2"), tools=TOOLS)
    assert json.loads(ok.tool_calls[0]["function"]["arguments"]) == {"a": 2, "tag": "x y"}
    wrong_type = parse_completion("r</think>" + call.format(a='"two"'), tools=TOOLS)
    assert isinstance(wrong_type, ParseError)
    assert "arguments of tool 'add'.a: expected integer, got string" in wrong_type.reason
    not_json = parse_completion("r</think>" + call.format(a="[1,"), tools=TOOLS)
    assert isinstance(not_json, ParseError) and "'a' is not valid JSON" in not_json.reason
    without_tools = parse_completion("r</think>" + call.format(a='"two"'))
    assert json.loads(without_tools.tool_calls[0]["function"]["arguments"])["a"] == "two"
    unknown = parse_completion("r</think>" + call.format(a="1").replace('"add"', '"sub"'), tools=TOOLS)
    assert isinstance(unknown, ParseError) and "unknown tool 'sub' (tools: add)" in unknown.reason
    missing = call.format(a="1").replace(
        '<｜DSML｜parameter name="a" string="false">1</｜DSML｜parameter>\n', ""
    )
    result = parse_completion("r</think>" + missing, tools=TOOLS)
    assert isinstance(result, ParseError) and "missing required property 'a'" in result.reason


@pytest.mark.parametrize(
    "text, needle, position",
    [
        ("cut off mid-thought", "ended inside the reasoning", 19),
        ("r</think>a<think>b", "unexpected '<think>' in the content", 10),
        ("r</think>a<｜end▁of▁sentence｜>more", "after the end-of-sentence token", 29),
        ("r<｜DSML｜function_calls>", "unexpected '｜DSML｜' in the reasoning", 2),
        (
            "r</think>\n\n<｜DSML｜function_calls>\n</｜DSML｜function_calls>",
            "no invoke",
            34,
        ),  # 9 + len("\n\n<｜DSML｜function_calls>\n")
        (
            'r</think>\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="f">\n',
            "ended inside the tool calls",
            33,
        ),
        ("r</think>\n\n<｜DSML｜function_calls>\n<｜DSML｜oops", "expected '<｜DSML｜invoke'", 34),
        (
            'r</think>\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="f">\n'
            '<｜DSML｜parameter name="k" string="maybe">v</｜DSML｜parameter>',
            'string must be "true" or "false"',
            None,
        ),
        (
            'r</think>\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="f">\n\n</｜DSML｜invoke>\n'
            "</｜DSML｜function_calls>trailing",
            "unexpected text after the tool calls",
            None,
        ),
    ],
)
def test_malformed_completions_give_error_values(text, needle, position):
    result = parse_completion(text)
    assert isinstance(result, ParseError), result
    assert needle in result.reason
    if position is not None:
        assert result.position == position


def test_error_keeps_what_was_parsed_before_it():
    result = parse_completion("long reasoning that was cut")
    assert isinstance(result, ParseError)
    assert result.partial.reasoning_content == "long reasoning that was cut"
    assert "character 27" in str(result)


def test_streaming_releases_text_before_markers_are_complete():
    parser = StreamingParser()
    assert parser.feed("abc</th").reasoning_content == "abc"  # "</th" is held back
    delta = parser.feed("ink>hello\n\n<｜DS")
    assert (delta.reasoning_content, delta.content) == ("", "hello")
    delta = parser.feed('ML｜function_calls>\n<｜DSML｜invoke name="f">\n\n</｜DSML｜invoke>')
    assert [c["function"]["name"] for c in delta.tool_calls] == ["f"]
    parser.feed("\n</｜DSML｜function_calls><｜end▁of▁sentence｜>")
    assert not parser.finish()
    assert parser.result().tool_calls[0]["function"]["arguments"] == "{}"


@settings(max_examples=150, deadline=None)
@given(message=assistant_messages(thinking=True), cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_encode_then_parse_round_trips_in_thinking_mode(message, cuts):
    text = completion_of(message)
    parsed = parse_completion(text)
    same_message(parsed, message)
    (reasoning, content, calls, errors), streamed = stream(text, cuts)
    assert streamed == parsed and not errors
    assert (reasoning, content, calls) == (parsed.reasoning_content, parsed.content, parsed.tool_calls)


@settings(max_examples=80, deadline=None)
@given(message=assistant_messages(thinking=False), cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_encode_then_parse_round_trips_in_chat_mode(message, cuts):
    text = completion_of(message, thinking=False)
    parsed = parse_completion(text, thinking=False)
    same_message(parsed, message, thinking=False)
    (_, content, calls, _), streamed = stream(text, cuts, thinking=False)
    assert streamed == parsed and (content, calls) == (parsed.content, parsed.tool_calls)


@settings(max_examples=300, deadline=None)
@given(text=garbage, thinking=st.booleans(), cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_garbage_never_raises_and_chunking_never_changes_the_result(text, thinking, cuts):
    result = parse_completion(text, thinking=thinking, tools=TOOLS)
    assert isinstance(result, (ParsedMessage, ParseError))
    (reasoning, content, calls, errors), streamed = stream(text, cuts, thinking=thinking, tools=TOOLS)
    assert streamed == result
    final = result.partial if isinstance(result, ParseError) else result
    assert (reasoning, content, calls) == (final.reasoning_content or "", final.content, final.tool_calls)
    assert errors == ([result] if isinstance(result, ParseError) else [])


def test_parsed_message_as_openai_dict():
    text = '</think>hi\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="f">\n\n</｜DSML｜invoke>\n'
    text += "</｜DSML｜function_calls>"
    parsed = parse_completion(text, make_id=lambda i: f"id{i}")
    assert parsed.to_openai() == {
        "role": "assistant",
        "content": "hi",
        "reasoning_content": "",
        "tool_calls": [{"id": "id0", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    assert parse_completion("hi", thinking=False).to_openai() == {"role": "assistant", "content": "hi"}
