"""Bad input over raw HTTP, a fuzz of request bodies, client disconnects, /health and /metrics."""

import json
import re
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_support import HELLO_ANSWER, MODEL, make_state, script

from dsv32.serve.server import running_server

GOOD = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20}
ERROR_STATUSES = {400, 404, 413, 422}


@pytest.fixture(scope="module")
def live(tokenizer):
    state = make_state(tokenizer, script)
    with running_server(state) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client, state


def _is_openai_error(resp: httpx.Response) -> bool:
    body = resp.json()
    return set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    "body, status, code",
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"[1, 2]", 422, "invalid_value"),
        (json.dumps({**GOOD, "messages": "hi"}).encode(), 422, "invalid_value"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "messages"}).encode(), 422, "invalid_value"),
        (json.dumps({**GOOD, "n": 0}).encode(), 422, "invalid_value"),
        (json.dumps({**GOOD, "max_tokens": "5"}).encode(), 422, "invalid_value"),
        (json.dumps({**GOOD, "model": "other"}).encode(), 404, "model_not_found"),
        (json.dumps({**GOOD, "max_tokens": 10**6}).encode(), 413, "context_length_exceeded"),
        (json.dumps({**GOOD, "messages": [{"role": "wizard", "content": "x"}]}).encode(), 400, None),
        (json.dumps({**GOOD, "messages": [{"role": "assistant", "content": "x"}]}).encode(), 400, None),
        (json.dumps({**GOOD, "tool_choice": "required"}).encode(), 400, None),
        (b'{"model": "' + b"x" * 70000 + b'"}', 413, "request_too_large"),
    ],
)
def test_bad_bodies_get_the_right_status_and_shape(live, body, status, code):
    client, _ = live
    resp = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    assert _is_openai_error(resp)
    assert resp.json()["error"]["code"] == code


def test_tool_result_matching_no_call_is_a_400_naming_the_message(live):
    client, _ = live
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_zzz", "content": "sunny"},
    ]  # fmt: skip
    resp = client.post("/v1/chat/completions", json={**GOOD, "messages": messages})
    assert resp.status_code == 400 and _is_openai_error(resp)
    assert (
        "message 2 (tool)" in resp.json()["error"]["message"]
        and "call_zzz" in resp.json()["error"]["message"]
    )


def test_unknown_route_and_method_are_openai_errors(live):
    client, _ = live
    assert client.get("/v1/nothing").status_code == 404 and _is_openai_error(client.get("/v1/nothing"))
    resp = client.get("/v1/chat/completions")
    assert resp.status_code == 405 and _is_openai_error(resp)
    assert client.get("/v1/models/other").status_code == 404


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["model", "messages", "max_tokens", "temperature", "top_p", "n", "stop", "stream", "tools", "tool_choice",
     "logprobs", "top_logprobs", "seed", "thinking", "chat_template_kwargs", "response_format", "prompt"]
)  # fmt: skip


@st.composite
def bad_bodies(draw):
    """A valid request with some fields replaced by random JSON, or random bytes, or random JSON."""
    kind = draw(st.sampled_from(["mutate", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    body = dict(GOOD)
    for field in draw(st.lists(FIELDS, min_size=1, max_size=3)):
        body[field] = draw(JSON)
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    return json.dumps(body).encode()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bad_bodies(), endpoint=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
def test_fuzzed_bodies_never_crash_the_server(live, body, endpoint):
    client, _ = live
    resp = client.post(endpoint, content=body, headers={"content-type": "application/json"})
    assert resp.status_code in ERROR_STATUSES | {200}, (resp.status_code, resp.text, body)
    if resp.status_code != 200:
        assert _is_openai_error(resp)
    # After every bad body a good request still works.
    good = client.post("/v1/chat/completions", json=GOOD)
    assert good.status_code == 200 and good.json()["choices"][0]["message"]["content"] == HELLO_ANSWER


def _wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def slow(tokenizer):
    state = make_state(tokenizer, script, token_delay_s=0.02)
    with running_server(state) as url:
        yield url, state


def test_client_disconnect_mid_stream_frees_the_slot(slow):
    url, state = slow
    backend = state.backend
    body = {
        **GOOD,
        "messages": [{"role": "user", "content": "say something long"}],
        "stream": True,
        "max_tokens": 500,
    }
    with (
        httpx.Client(base_url=url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as r,
    ):
        lines = r.iter_lines()
        seen = [next(lines) for _ in range(12)]
        assert any('"delta":{"content":"' in line for line in seen), seen
        assert len(backend.running) == 1
    assert _wait_until(lambda: not backend.running), "the engine request outlived its client"
    assert len(backend.cancelled) == 1
    assert _wait_until(lambda: state.metrics.cancelled == 1)
    # The slot is free and the server still answers.
    resp = httpx.post(f"{url}/v1/chat/completions", json=GOOD, timeout=30)
    assert resp.status_code == 200


def test_client_disconnect_without_streaming_frees_the_slot(slow):
    url, state = slow
    body = {**GOOD, "messages": [{"role": "user", "content": "say something long"}], "max_tokens": 500}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json=body, timeout=0.3)
    assert _wait_until(lambda: not state.backend.running)
    assert len(state.backend.cancelled) == 1
    # 300 tokens at 20 ms would take 6 s: the request was stopped, not finished.
    assert state.backend.finished[next(iter(state.backend.finished))] == "abort"


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


def test_health_and_metrics_count_what_happened(tokenizer):
    state = make_state(tokenizer, script)
    with running_server(state) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/health").json() == {"status": "ok", "running": 0, "waiting": 0}
        for _ in range(3):
            assert client.post("/v1/chat/completions", json=GOOD).status_code == 200
        assert client.post("/v1/chat/completions", json={**GOOD, "model": "x"}).status_code == 404
        text = client.get("/metrics").text
    assert _metric(text, 'dsv32_requests_total{endpoint="chat",status="200"}') == 3
    assert _metric(text, 'dsv32_requests_total{endpoint="chat",status="404"}') == 1
    completion = len(state.tokenizer.encode(HELLO_ANSWER + "<｜end▁of▁sentence｜>"))
    assert _metric(text, "dsv32_generation_tokens_total") == 3 * completion
    assert _metric(text, "dsv32_time_to_first_token_seconds_count") == 3
    assert _metric(text, 'dsv32_time_to_first_token_seconds_bucket{le="+Inf"}') == 3
    assert _metric(text, "dsv32_request_duration_seconds_count") == 3
    assert _metric(text, "dsv32_requests_in_flight") == 0
