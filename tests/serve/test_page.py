"""The chat page at `/` in headless Chromium, driven over the DevTools protocol: a tool-call turn."""

import json
import shutil

import pytest
from cdp_pipe import Browser
from serve_support import (
    FINAL_ANSWER,
    FINAL_REASONING,
    MODEL,
    TOOL_REASONING,
    WEATHER_TOOL,
    make_state,
    script,
)

from dsv32.chat.encoding import encode_messages
from dsv32.serve.server import running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_page_is_served_with_the_model_name(tokenizer):
    import httpx

    with running_server(make_state(tokenizer, script)) as url:
        page = httpx.get(f"{url}/").text
    assert f'<meta name="dsv32-model" content="{MODEL}">' in page and 'id="send"' in page


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (.ci/run installs it)")
def test_chat_page_streams_reasoning_shows_tool_calls_and_sends_results(tokenizer):
    state = make_state(tokenizer, script, token_delay_s=0.002)
    with running_server(state) as url:
        browser = Browser(CHROMIUM)
        try:
            browser.open(f"{url}/")
            browser.wait_for("document.body && document.body.dataset.state === 'idle'")
            assert browser.evaluate("document.getElementById('model').textContent") == MODEL
            browser.evaluate(
                f"document.getElementById('tools').value = {json.dumps(json.dumps([WEATHER_TOOL]))};"
                "document.getElementById('prompt').value = 'What is the weather in Paris?';"
                "document.getElementById('send').click(); true"
            )
            browser.wait_for("document.querySelector('.tool-call') && document.body.dataset.state === 'idle'")
            first = browser.evaluate(
                "(() => { const m = document.querySelectorAll('.msg.assistant')[0];"
                " return {reasoning: m.querySelector('.reasoning-text').textContent,"
                " call: m.querySelector('.tool-call .call').textContent, finish: m.dataset.finish}; })()"
            )
            assert first == {
                "reasoning": TOOL_REASONING,
                "call": 'get_weather({"city": "Paris", "days": 2})',
                "finish": "tool_calls",
            }
            browser.evaluate(
                "document.querySelector('.tool-result').value = 'sunny, 21C';"
                "document.querySelector('.send-results').click(); true"
            )
            browser.wait_for(
                "document.querySelectorAll('.msg.assistant').length === 2"
                " && document.body.dataset.state === 'idle'"
            )
            second = browser.evaluate(
                "(() => { const m = document.querySelectorAll('.msg.assistant')[1];"
                " const r = m.querySelector('details.reasoning');"
                " return {reasoning: r.textContent, open: r.open,"
                " content: m.querySelector('.content').textContent,"
                " errors: document.querySelectorAll('.error').length}; })()"
            )
        finally:
            browser.close()
    assert second == {
        "reasoning": "reasoning" + FINAL_REASONING,
        "open": False,
        "content": FINAL_ANSWER,
        "errors": 0,
    }
    # The page sent the turn's reasoning and the typed result back, as the encoding expects.
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "reasoning_content": TOOL_REASONING, "tool_calls": [
            {"id": "x", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 2}'}}]},
        {"role": "tool", "content": "sunny, 21C"},
    ]  # fmt: skip
    expected = encode_messages(messages, thinking_mode="thinking", tools=[WEATHER_TOOL])
    assert tokenizer.decode(state.backend.prompts[-1]) == expected
