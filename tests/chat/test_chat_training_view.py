"""Training view: ids decode to the encoding, and the loss mask covers exactly the assistant text."""

import pytest
from hypothesis import given, settings
from strategies import assistant_messages

from dsv32.chat.encoding import encode_messages
from dsv32.chat.errors import EncodingError
from dsv32.chat.parsing import ParsedMessage, parse_completion
from dsv32.chat.tokens import ASSISTANT, BOS, EOS, SPECIAL_TOKENS, THINK_END, THINK_START, USER
from dsv32.chat.training_view import render_training_view, turn_views
from dsv32.tokenizer import train_bpe


class CharTokenizer:
    """Special tokens are single ids (their list index); every other character is its own id."""

    OFFSET = 1000

    def encode(self, text):
        ids, i = [], 0
        while i < len(text):
            for index, token in enumerate(SPECIAL_TOKENS):
                if text.startswith(token, i):
                    ids.append(index)
                    i += len(token)
                    break
            else:
                ids.append(self.OFFSET + ord(text[i]))
                i += 1
        return ids

    def decode(self, ids):
        return "".join(SPECIAL_TOKENS[i] if i < self.OFFSET else chr(i - self.OFFSET) for i in ids)


@pytest.fixture(scope="module")
def bpe(request):
    fixture_text = (request.path.parent / "fixtures" / "test_output.txt").read_text(encoding="utf-8")
    return train_bpe([fixture_text, "hello world " * 20, "日本語のテキスト " * 5], vocab_size=420)


def runs(view, decode):
    """Maximal runs of equal mask value, decoded: [(text, flag), ...]."""
    out = []
    for token, flag in zip(view.token_ids, view.loss_mask):
        if out and out[-1][1] == flag:
            out[-1][0].append(token)
        else:
            out.append(([token], flag))
    return [(decode(ids), flag) for ids, flag in out]


def assistant_indices(messages):
    return [i for i, m in enumerate(messages) if m["role"] == "assistant"]


@pytest.mark.parametrize("tokenizer_name", ["chars", "bpe"])
def test_fixture_view_decodes_to_the_encoding_and_masks_exactly_the_assistant_parts(
    fixture_conversation, bpe, tokenizer_name
):
    messages, expected = fixture_conversation
    tokenizer = CharTokenizer() if tokenizer_name == "chars" else bpe
    view = render_training_view(messages, tokenizer)
    assert view.text == expected
    assert len(view.token_ids) == len(view.loss_mask)
    assert tokenizer.decode(view.token_ids) == expected
    # every boundary sits next to a special token here, so run-wise ids equal whole-text ids
    assert view.token_ids == list(tokenizer.encode(expected))
    pieces = runs(view, tokenizer.decode)
    trained = [text for text, flag in pieces if flag]
    # The fixture's assistant messages are 2, 4, 7 (turn 1: reasoning dropped) and 9, 12 (turn 2).
    assert len(trained) == 5
    for text, index in zip(trained, assistant_indices(messages)):
        current = index > 7
        parsed = parse_completion(text, tools=messages[0]["tools"], thinking=current)
        assert isinstance(parsed, ParsedMessage) and parsed.saw_eos
        assert parsed.content == (messages[index].get("content") or "")
        assert parsed.reasoning_content == (messages[index]["reasoning_content"] if current else None)
        assert len(parsed.tool_calls) == len(messages[index].get("tool_calls", []))
    context = [text for text, flag in pieces if not flag]
    # context runs end with the generation prompt that the model continues from
    assert all(text.endswith((THINK_START, THINK_END)) for text in context)
    assert context[0].startswith(BOS) and context[0].endswith(f"{ASSISTANT}{THINK_END}")
    assert "User is asking about tomorrow's weather" not in view.text  # dropped, so never trained
    assert not any("<function_results>" in text or USER in text for text in trained)


def test_prompt_supplied_think_token_is_not_trained():
    messages = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "reasoning_content": "add", "content": "4"},
    ]
    tok = CharTokenizer()
    view = render_training_view(messages, tok)
    trained = tok.decode([t for t, m in zip(view.token_ids, view.loss_mask) if m])
    untrained = tok.decode([t for t, m in zip(view.token_ids, view.loss_mask) if not m])
    assert trained == f"add{THINK_END}4{EOS}"
    assert untrained == f"{BOS}{USER}2+2?{ASSISTANT}{THINK_START}"
    assert view.trained_tokens == len("add") + 1 + 1 + 1


def test_keeping_reasoning_trains_on_every_turns_reasoning():
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "reasoning_content": "r1", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "reasoning_content": "r2", "content": "d"},
    ]
    tok = CharTokenizer()
    dropped = render_training_view(messages, tok)
    kept = render_training_view(messages, tok, drop_thinking=False)
    trained = lambda v: tok.decode([t for t, m in zip(v.token_ids, v.loss_mask) if m])  # noqa: E731
    assert trained(dropped) == f"b{EOS}r2{THINK_END}d{EOS}"
    assert trained(kept) == f"r1{THINK_END}b{EOS}r2{THINK_END}d{EOS}"
    assert kept.text == encode_messages(messages, drop_thinking=False)


def test_turn_views_train_each_turn_in_its_inference_format(fixture_conversation):
    messages, expected = fixture_conversation
    tok = CharTokenizer()
    first, second = turn_views(messages, tok)
    assert first.text == encode_messages(messages[:8])  # turn one as it was current: reasoning kept
    assert "User is asking about tomorrow's weather" in tok.decode(
        [t for t, m in zip(first.token_ids, first.loss_mask) if m]
    )
    assert second.text == expected
    second_trained = tok.decode([t for t, m in zip(second.token_ids, second.loss_mask) if m])
    assert second_trained.startswith("User is now asking") and "Based on the forecast" not in second_trained


def test_chat_mode_masks_content_and_tool_calls_only():
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "u"},
        {
            "role": "assistant",
            "content": "ok",
            "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "res"},
        {"role": "assistant", "content": "done"},
    ]
    tok = CharTokenizer()
    view = render_training_view(messages, tok, thinking_mode="chat")
    pieces = runs(view, tok.decode)
    assert [t for t, f in pieces if f] == [
        'ok\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="f">\n\n</｜DSML｜invoke>\n'
        f"</｜DSML｜function_calls>{EOS}",
        f"done{EOS}",
    ]
    assert [t for t, f in pieces if not f][
        1
    ] == f"\n\n<function_results>\n<result>res</result>\n</function_results>\n\n{THINK_END}"


def test_bad_tokenizer_and_bad_conversation_are_rejected():
    class AddsBos(CharTokenizer):
        def encode(self, text):
            return [0] + super().encode(text)

    with pytest.raises(ValueError, match="one id each"):
        render_training_view([{"role": "user", "content": "u"}], AddsBos())
    with pytest.raises(EncodingError, match="no assistant tool call"):
        render_training_view([{"role": "tool", "content": "x"}], CharTokenizer())


@settings(max_examples=60, deadline=None)
@given(first=assistant_messages(thinking=True), last=assistant_messages(thinking=True))
def test_random_tool_turns_mask_exactly_the_assistant_messages(first, last):
    messages = [{"role": "user", "content": "q"}, first]
    messages += [{"role": "tool", "content": f"result {i}"} for i in range(len(first.get("tool_calls", [])))]
    if first.get("tool_calls"):
        messages.append(last)
    tok = CharTokenizer()
    view = render_training_view(messages, tok)
    assert tok.decode(view.token_ids) == view.text == encode_messages(messages)
    trained = [text for text, flag in runs(view, tok.decode) if flag]
    assert len(trained) == len(assistant_indices(messages))
    for text, index in zip(trained, assistant_indices(messages)):
        parsed = parse_completion(text)
        assert parsed.reasoning_content == messages[index]["reasoning_content"]
        assert parsed.content == messages[index]["content"]
        assert [c["function"]["name"] for c in parsed.tool_calls] == [
            c["function"]["name"] for c in messages[index].get("tool_calls", [])
        ]
