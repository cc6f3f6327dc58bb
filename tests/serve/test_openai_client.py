"""The server through the official `openai` client, on a live uvicorn server on 127.0.0.1 (replay backend)."""

import json

import openai
import pytest
from serve_support import (
    FINAL_ANSWER,
    FINAL_REASONING,
    HELLO_ANSWER,
    HELLO_REASONING,
    MODEL,
    TOOL_REASONING,
    WEATHER_TOOL,
    make_state,
    script,
)

from dsv32.chat.encoding import encode_messages
from dsv32.chat.tokens import EOS, FUNCTION_CALLS_START, THINK_END
from dsv32.serve.chat_plan import FORCED_CALL_PREFIX
from dsv32.serve.replay import ReplayBackend
from dsv32.serve.server import running_server

HELLO = [{"role": "user", "content": "hello"}]
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(tokenizer):
    state = make_state(tokenizer, script)
    with running_server(state) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
        yield client, state.backend, tokenizer


def test_models_lists_the_served_model(server):
    client, backend, _ = server
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_thinking_splits_reasoning_and_counts_tokens(server):
    client, backend, tokenizer = server
    resp = client.chat.completions.create(model=MODEL, messages=HELLO, extra_body={"thinking": True})
    msg = resp.choices[0].message
    assert msg.content == HELLO_ANSWER
    assert msg.reasoning_content == HELLO_REASONING
    assert resp.choices[0].finish_reason == "stop"
    # The prompt is exactly the official encoding in thinking mode.
    assert tokenizer.decode(backend.prompts[-1]) == encode_messages(HELLO, thinking_mode="thinking")
    completion = tokenizer.encode(HELLO_REASONING + THINK_END + HELLO_ANSWER + EOS)
    assert resp.usage.completion_tokens == len(completion)
    assert resp.usage.prompt_tokens == len(backend.prompts[-1])
    assert resp.usage.completion_tokens_details.reasoning_tokens == len(tokenizer.encode(HELLO_REASONING)) + 1


def test_chat_mode_via_chat_template_kwargs(server):
    client, backend, tokenizer = server
    resp = client.chat.completions.create(
        model=MODEL, messages=HELLO, extra_body={"chat_template_kwargs": {"thinking": False}}
    )
    assert resp.choices[0].message.content == HELLO_ANSWER
    assert getattr(resp.choices[0].message, "reasoning_content", None) is None
    assert tokenizer.decode(backend.prompts[-1]) == encode_messages(HELLO, thinking_mode="chat")


def test_streaming_deltas_add_up_to_the_whole_answer(server):
    client, _, _ = server
    stream = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"thinking": True},
    )
    kinds, reasoning, content, finish, usage = [], "", "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if getattr(delta, "reasoning_content", None):
            reasoning += delta.reasoning_content
            kinds.append("r")
        if delta.content:
            content += delta.content
            kinds.append("c")
        finish = chunk.choices[0].finish_reason or finish
    assert (reasoning, content, finish) == (HELLO_REASONING, HELLO_ANSWER, "stop")
    assert kinds == sorted(kinds, reverse=True) and "r" in kinds and "c" in kinds  # reasoning first
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_tool_call_round_trip_passes_reasoning_back_within_the_turn(server):
    client, backend, tokenizer = server
    first = client.chat.completions.create(
        model=MODEL, messages=WEATHER, tools=[WEATHER_TOOL], extra_body={"thinking": True}
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.reasoning_content == TOOL_REASONING
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 2}
    assistant = {
        "role": "assistant",
        "content": choice.message.content or "",
        "reasoning_content": choice.message.reasoning_content,
        "tool_calls": [call.model_dump()],
    }
    messages = [*WEATHER, assistant, {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}]
    second = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL], extra_body={"thinking": True}
    )
    assert second.choices[0].message.content == FINAL_ANSWER
    assert second.choices[0].message.reasoning_content == FINAL_REASONING
    prompt = tokenizer.decode(backend.prompts[-1])
    assert prompt == encode_messages(messages, thinking_mode="thinking", tools=[WEATHER_TOOL])
    assert TOOL_REASONING + THINK_END in prompt  # the turn's reasoning went back to the model


def test_streamed_tool_call_arrives_whole(server):
    client, _, _ = server
    stream = client.chat.completions.create(model=MODEL, messages=WEATHER, tools=[WEATHER_TOOL], stream=True)
    calls, finish, content = [], None, ""
    for chunk in stream:
        for choice in chunk.choices:
            calls += choice.delta.tool_calls or []
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and content == ""
    assert [(c.index, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        (0, "get_weather", {"city": "Paris", "days": 2})
    ]


def test_named_tool_choice_forces_the_call_after_the_reasoning(server):
    client, backend, tokenizer = server
    choice = {"type": "function", "function": {"name": "get_weather"}}
    # The script answers "hello" in plain text; forcing makes it a call anyway.
    resp = client.chat.completions.create(
        model=MODEL, messages=HELLO, tools=[WEATHER_TOOL], tool_choice=choice, extra_body={"thinking": True}
    )
    msg = resp.choices[0].message
    assert msg.reasoning_content == HELLO_REASONING
    assert [c.function.name for c in msg.tool_calls] == ["get_weather"]
    assert resp.choices[0].finish_reason == "tool_calls"
    phase1, phase2 = backend.prompts[-2:]
    think_end = tokenizer.encode(THINK_END)[0]
    assert think_end in backend.params[-2].stop_token_ids
    forced = f'{FORCED_CALL_PREFIX}get_weather">\n'
    assert tokenizer.decode(phase2) == tokenizer.decode(phase1) + HELLO_REASONING + THINK_END + forced


def test_required_tool_choice_in_chat_mode_prefills_the_block(server):
    client, backend, tokenizer = server
    resp = client.chat.completions.create(
        model=MODEL, messages=HELLO, tools=[WEATHER_TOOL], tool_choice="required"
    )
    assert resp.choices[0].finish_reason == "tool_calls"
    assert resp.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert tokenizer.decode(backend.prompts[-1]).endswith("<｜Assistant｜></think>" + FORCED_CALL_PREFIX)
    assert resp.usage.prompt_tokens == len(backend.prompts[-1])


def test_tool_choice_none_hides_tools_and_bans_the_call_token(server):
    client, backend, tokenizer = server
    resp = client.chat.completions.create(
        model=MODEL, messages=HELLO, tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert resp.choices[0].message.content == HELLO_ANSWER
    assert "## Tools" not in tokenizer.decode(backend.prompts[-1])
    assert backend.params[-1].banned_token_ids == tuple(tokenizer.encode(FUNCTION_CALLS_START))


def test_logprobs_cover_every_generated_token(server):
    client, _, tokenizer = server
    resp = client.chat.completions.create(
        model=MODEL, messages=HELLO, logprobs=True, top_logprobs=2, extra_body={"thinking": True}
    )
    entries = resp.choices[0].logprobs.content
    assert len(entries) == resp.usage.completion_tokens
    assert [e.logprob for e in entries] == pytest.approx(
        [ReplayBackend.logprob_at(i) for i in range(len(entries))]
    )
    assert all(len(e.top_logprobs) == 2 and e.top_logprobs[0].token == e.token for e in entries)
    raw = b"".join(bytes(e.bytes) for e in entries).decode()
    assert raw == HELLO_REASONING + THINK_END + HELLO_ANSWER + EOS


def test_n_choices_get_consecutive_seeds(server):
    client, backend, _ = server
    resp = client.chat.completions.create(model=MODEL, messages=HELLO, n=3, seed=7)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert all(c.message.content == HELLO_ANSWER for c in resp.choices)
    assert sorted(p.seed for p in backend.params[-3:]) == [7, 8, 9]


def test_stop_string_cuts_the_content_and_frees_the_slot(server):
    client, backend, _ = server
    before = len(backend.cancelled)
    resp = client.chat.completions.create(model=MODEL, messages=HELLO, stop=["!"])
    assert resp.choices[0].message.content == "Hello there"
    assert resp.choices[0].finish_reason == "stop"
    assert len(backend.cancelled) == before + 1  # the engine request was closed at the stop string


def test_max_tokens_gives_length(server):
    client, _, tokenizer = server
    resp = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3)
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 3
    assert resp.choices[0].message.content == tokenizer.decode(tokenizer.encode(HELLO_ANSWER)[:3])


def test_text_completions_plain_streamed_and_with_logprobs(server):
    client, _, tokenizer = server
    prompt = encode_messages(HELLO, thinking_mode="chat")
    resp = client.completions.create(model=MODEL, prompt=prompt, max_tokens=50, logprobs=1, echo=False)
    assert resp.choices[0].text == HELLO_ANSWER  # the end token's text is not part of it
    assert resp.choices[0].finish_reason == "stop"
    assert "".join(resp.choices[0].logprobs.tokens) == HELLO_ANSWER
    assert resp.usage.completion_tokens == len(tokenizer.encode(HELLO_ANSWER + EOS))
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model=MODEL, prompt=prompt, max_tokens=50, stream=True)
    )
    assert streamed == HELLO_ANSWER
    echoed = client.completions.create(
        model=MODEL, prompt=[tokenizer.encode(prompt)], max_tokens=4, echo=True
    )
    assert echoed.choices[0].text.startswith(prompt) and echoed.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    "kwargs, error, param",
    [
        ({"model": "nope"}, openai.NotFoundError, "model"),
        ({"max_tokens": 0}, openai.UnprocessableEntityError, "max_tokens"),
        ({"temperature": "hot"}, openai.UnprocessableEntityError, "temperature"),
        ({"messages": [{"role": "tool", "content": "x"}]}, openai.BadRequestError, "messages"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "banana"}}}]},
         openai.BadRequestError, "tools.0"),
        ({"tool_choice": {"type": "function", "function": {"name": "missing"}}}, openai.BadRequestError,
         "tool_choice"),
        ({"messages": [{"role": "user", "content": "x " * 6000}]}, openai.APIStatusError, "messages"),
    ],
)  # fmt: skip
def test_bad_requests_get_openai_errors(server, kwargs, error, param):
    client, _, _ = server
    args = {"model": MODEL, "messages": HELLO, "tools": [WEATHER_TOOL], **kwargs}
    with pytest.raises(error) as info:
        client.chat.completions.create(**args)
    body = info.value.body
    assert set(body) == {"message", "type", "param", "code"} and body["param"] == param
    assert body["message"]
    if param == "messages" and "x " in str(kwargs):
        assert info.value.status_code == 413 and body["code"] == "context_length_exceeded"
