"""Shared pieces of the server tests: a scripted 'model' (the completion depends on the last user
message) and a ready-to-serve state on the replay backend."""

from __future__ import annotations

from collections.abc import Callable

from dsv32.chat.tokens import ASSISTANT, EOS, THINK_END, USER
from dsv32.serve.chat_plan import FORCED_CALL_PREFIX
from dsv32.serve.replay import ReplayBackend
from dsv32.serve.state import ServerState

MODEL = "dsv32-test"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
WEATHER_CALL = (
    '\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">\n'
    '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
    '<｜DSML｜parameter name="days" string="false">2</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n</｜DSML｜function_calls>" + EOS
)


def make_state(
    tokenizer,
    script: Callable[[str], str],
    token_delay_s: float = 0.0,
    context_length: int = 4096,
    default_thinking: bool = False,
) -> ServerState:
    backend = ReplayBackend(tokenizer, script, context_length=context_length, token_delay_s=token_delay_s)
    return ServerState(
        backend=backend,
        tokenizer=tokenizer,
        model_name=MODEL,
        default_thinking=default_thinking,
        max_body_bytes=64 * 1024,
    )


HELLO_REASONING = "The user greets me."
HELLO_ANSWER = "Hello there! How are you?"
TOOL_REASONING = "I need the weather tool."
FINAL_REASONING = "The result says sunny."
FINAL_ANSWER = "It is sunny in Paris."
LONG_ANSWER = "word " * 300


def script(prompt: str) -> str:
    """Completion for a prompt; see the constants above for what each kind of turn writes."""
    named = f'{FORCED_CALL_PREFIX}get_weather">\n'
    if prompt.endswith(named):
        return WEATHER_CALL[len(named) :]
    if prompt.endswith(FORCED_CALL_PREFIX):
        return WEATHER_CALL[len(FORCED_CALL_PREFIX) :]
    thinking = not prompt.endswith(THINK_END)
    user = prompt[prompt.rfind(USER) + len(USER) :]
    question = user[: user.find(ASSISTANT)].lower()

    def answer(reasoning: str, text: str) -> str:
        return (reasoning + THINK_END if thinking else "") + text

    if "weather" in question:
        if "<function_results>" in user:
            return answer(FINAL_REASONING, FINAL_ANSWER + EOS)
        return answer(TOOL_REASONING, WEATHER_CALL)
    if "long" in question:
        return answer("long", LONG_ANSWER + EOS)
    return answer(HELLO_REASONING, HELLO_ANSWER + EOS)
