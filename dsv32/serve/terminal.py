"""`dsv32 chat`: a streaming chat in the terminal, on the same request path as the server (no HTTP).

Each turn is planned and generated exactly as `POST /v1/chat/completions` would (encoding,
tool_choice, parser), so what the terminal shows is what the API returns. Reasoning streams under a
`[reasoning]` header (dim when the output is a terminal), the answer under `[answer]`, and every
tool call as `[tool call] name {json arguments}`; the user then types each tool's result and the
model continues the same turn (its reasoning is sent back, as the encoding expects).

Commands at the prompt: `/new` starts over, `/thinking on|off` switches the mode, `/exit` (or end of
input) quits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from dsv32.serve.chat_plan import plan_chat
from dsv32.serve.generation import run_chat_choice
from dsv32.serve.protocol import APIError, ChatCompletionRequest
from dsv32.serve.state import ServerState

DIM, RESET, BOLD = "\033[2m", "\033[0m", "\033[1m"


class TerminalChat:
    def __init__(
        self,
        state: ServerState,
        out: TextIO,
        thinking: bool = True,
        tools: list[dict[str, Any]] | None = None,
        options: dict[str, Any] | None = None,
        color: bool = False,
    ):
        self.state = state
        self.out = out
        self.thinking = thinking
        self.tools = tools or None
        self.options = dict(options or {})
        self.color = color
        self.messages: list[dict[str, Any]] = []
        self.turns = 0

    def _write(self, text: str, style: str = "") -> None:
        if style and self.color:
            text = f"{style}{text}{RESET}"
        self.out.write(text)
        self.out.flush()

    async def _generate(self) -> dict[str, Any]:
        body = {
            "model": self.state.model_name,
            "messages": self.messages,
            "thinking": self.thinking,
            **self.options,
        }
        if self.tools:
            body["tools"] = self.tools
        req = ChatCompletionRequest.model_validate(body)
        plan = plan_chat(req, self.state.tokenizer, self.state.backend.context_length, self.thinking)
        self.turns += 1
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "",
            "reasoning_content": "",
            "tool_calls": [],
        }
        section = None
        async for event in run_chat_choice(
            self.state.backend, self.state.tokenizer, plan, f"chat-{self.turns}"
        ):
            if event.reasoning:
                if section != "reasoning":
                    self._write("[reasoning]\n", BOLD)
                    section = "reasoning"
                self._write(event.reasoning, DIM)
                message["reasoning_content"] += event.reasoning
            if event.content:
                if section != "answer":
                    self._write(("\n" if section else "") + "[answer]\n", BOLD)
                    section = "answer"
                self._write(event.content)
                message["content"] += event.content
            for call in event.tool_calls:
                self._write(("\n" if section else "") + "[tool call] ", BOLD)
                self._write(f"{call['function']['name']} {call['function']['arguments']}\n")
                section = "tool"
                message["tool_calls"].append(call)
            if event.finish_reason is not None:
                self._write("\n")
                if event.parse_error:
                    self._write(f"[malformed output] {event.parse_error}\n", BOLD)
                if event.finish_reason == "length":
                    self._write("[stopped at the token limit]\n", BOLD)
        if not self.thinking:
            del message["reasoning_content"]
        if not message["tool_calls"]:
            del message["tool_calls"]
        return message

    def _command(self, line: str) -> bool:
        """Handle a /command; False means quit."""
        word, _, arg = line.strip().partition(" ")
        if word == "/exit":
            return False
        if word == "/new":
            self.messages = []
            self._write("[new conversation]\n", BOLD)
        elif word == "/thinking" and arg in ("on", "off"):
            self.thinking = arg == "on"
            self._write(f"[thinking {arg}]\n", BOLD)
        else:
            self._write("[commands: /new, /thinking on|off, /exit]\n", BOLD)
        return True

    def run(self, lines: Iterator[str], ask: Callable[[str], None] | None = None) -> int:
        """Chat until the input ends or /exit; `ask(prompt)` shows a prompt before each read."""
        ask = ask or (lambda text: self._write(text, BOLD))
        loop = asyncio.new_event_loop()
        loop.run_until_complete(self.state.backend.start())
        try:
            while True:
                ask("you> ")
                line = next(lines, None)
                if line is None:
                    return 0
                line = line.rstrip("\n")
                if line.startswith("/"):
                    if not self._command(line):
                        return 0
                    continue
                if not line.strip():
                    continue
                mark = len(self.messages)
                self.messages.append({"role": "user", "content": line})
                while True:  # tool calls continue the same turn
                    try:
                        message = loop.run_until_complete(self._generate())
                    except APIError as err:
                        self._write(f"[error] {err.message}\n", BOLD)
                        del self.messages[mark:]
                        break
                    self.messages.append(message)
                    if not message.get("tool_calls"):
                        break
                    for call in message["tool_calls"]:
                        ask(f"result of {call['function']['name']}> ")
                        result = next(lines, None)
                        if result is None:
                            return 0
                        self.messages.append(
                            {"role": "tool", "tool_call_id": call["id"], "content": result.rstrip("\n")}
                        )
        finally:
            loop.run_until_complete(self.state.backend.stop())
            loop.close()
