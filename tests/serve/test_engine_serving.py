"""The server on the real engine: a tiny random checkpoint served end to end on 127.0.0.1."""

import io
import sys
import time

import httpx
import openai
import pytest
import torch

from dsv32.chat.encoding import encode_messages
from dsv32.checkpoint import load_model
from dsv32.cli import main
from dsv32.engine.cache import CacheSpec
from dsv32.serve.loading import load_server_state
from dsv32.serve.loadtest import run_load
from dsv32.serve.server import running_server
from dsv32.serve.smoke import serving_smoke_test
from dsv32.serve.tiny import make_tiny_checkpoint

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def live(checkpoint):
    # Exact (fp32) cache so that greedy decoding can be held to the model's full forward.
    state = load_server_state(checkpoint, engine_options={"max_batch": 4, "cache_spec": CacheSpec.exact()})
    with running_server(state) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        yield client, state, url


def _greedy_reference(model, ids: list[int], steps: int, eos: int) -> list[int]:
    out = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids + out]), attention="sparse").logits[0, -1]
            out.append(int(logits.argmax()))
            if out[-1] == eos:
                break
    return out


def test_greedy_completion_equals_the_full_forward_argmax(live, checkpoint):
    client, state, _ = live
    prompt = state.tokenizer.encode(encode_messages(HELLO, thinking_mode="chat"))
    resp = client.completions.create(
        model=state.model_name, prompt=prompt, max_tokens=12, temperature=0, logprobs=0
    )
    model = load_model(checkpoint)
    expected = _greedy_reference(model, prompt, 12, state.tokenizer.eos_id)
    vocab = state.tokenizer.vocab_size  # ids past the tokenizer (the model has 512 rows) have no text
    text = state.tokenizer.decode([t for t in expected if t != state.tokenizer.eos_id and t < vocab])
    assert resp.choices[0].text == text
    assert resp.usage.completion_tokens == len(expected)


def test_seeded_sampling_is_reproducible_and_streaming_matches(live):
    client, state, _ = live
    args = {"model": state.model_name, "messages": HELLO, "max_tokens": 10, "seed": 123, "temperature": 1.0}
    first = client.chat.completions.create(**args, logprobs=True)
    second = client.chat.completions.create(**args)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert len(first.choices[0].logprobs.content) == first.usage.completion_tokens
    assert all(e.logprob <= 0 for e in first.choices[0].logprobs.content)
    chunks = client.chat.completions.create(**args, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == first.choices[0].message.content


def test_n_choices_use_distinct_seeds(live):
    client, state, _ = live
    resp = client.chat.completions.create(model=state.model_name, messages=HELLO, max_tokens=8, seed=5, n=2)
    single = client.chat.completions.create(model=state.model_name, messages=HELLO, max_tokens=8, seed=6)
    assert resp.choices[1].message.content == single.choices[0].message.content


def test_disconnect_mid_stream_frees_the_engine_slot(live):
    _, state, url = live
    body = {
        "model": state.model_name,
        "messages": HELLO,
        "max_tokens": 900,
        "stream": True,
        "temperature": 1.0,
        "seed": 11,  # fixed: an unseeded sample could end early (EOS) and leave nothing to cancel
    }
    with (
        httpx.Client(base_url=url, timeout=60) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as r,
    ):
        lines = r.iter_lines()
        assert any('"delta":{"content":"' in next(lines) for _ in range(12))
        assert state.backend.engine.has_work()
    deadline = time.monotonic() + 10
    while state.backend.engine.has_work() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not state.backend.engine.has_work(), "the engine request outlived its client"
    assert state.backend.stats().running == 0


def test_eight_concurrent_streaming_clients_all_complete(live):
    _, state, url = live
    result = run_load(url, state.model_name, 8, max_tokens=6)
    assert result.errors == 0, result.error_messages
    assert len(result.ttft_s) == 8 and 8 <= result.completion_tokens <= 48


def test_serving_smoke_helper(checkpoint):
    report = serving_smoke_test(checkpoint, max_tokens=6)
    assert report["models"] == [checkpoint.name]
    assert (
        report["finish_reason"] in ("stop", "length")
        and report["stream_finish_reason"] == report["finish_reason"]
    )
    assert report["stream_matches"] and report["usage"]["completion_tokens"] <= 6


def test_chat_command_streams_in_the_terminal(checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n/exit\n"))
    code = main(["chat", "--checkpoint", str(checkpoint), "--max-tokens", "4", "--seed", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("you> ") == 2 and "[reasoning]" in out and "[stopped at the token limit]" in out


def test_forced_tool_call_on_an_untrained_model_is_answered_not_crashed(live):
    client, state, _ = live
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    for thinking in (False, True):
        resp = client.chat.completions.create(
            model=state.model_name, messages=HELLO, tools=[tool], max_tokens=6, seed=0,
            tool_choice={"type": "function", "function": {"name": "f"}}, extra_body={"thinking": thinking},
        )  # fmt: skip
        choice = resp.choices[0]
        # Noise cannot close the forced invoke in 6 tokens: cut off (length) or reported as malformed.
        assert choice.finish_reason in ("length", "stop") and not choice.message.tool_calls
        assert choice.finish_reason == "length" or getattr(choice, "parse_error", None)
    assert client.chat.completions.create(model=state.model_name, messages=HELLO, max_tokens=2).choices


def test_dsv32_serve_command_in_a_subprocess(checkpoint):
    import signal
    import subprocess

    from dsv32.serve.server import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "dsv32.cli", "serve", "--checkpoint", str(checkpoint), "--port", str(port),
           "--model-name", "tiny-served", "--max-batch", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "dsv32 serve did not come up"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny-served"]
        resp = client.chat.completions.create(model="tiny-served", messages=HELLO, max_tokens=3)
        assert resp.usage.completion_tokens <= 3
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode in (0, 130), out  # 130: Ctrl+C, re-raised after a clean shutdown
    assert "Application shutdown complete" in out
    assert f"serving 'tiny-served' on http://127.0.0.1:{port}" in out
