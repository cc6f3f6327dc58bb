"""A deterministic OpenAI-compatible chat server driven by a Python policy, for tests and demos.

`ScriptedServer(policy)` serves `POST /v1/chat/completions` and `GET /v1/models` with FastAPI +
uvicorn on 127.0.0.1 (a free port) in a background thread. The policy maps the request body to one
reply `{"content", "reasoning_content", "tool_calls": [{"name", "arguments"}]}`, which the server
wraps in the OpenAI response shape (`reasoning_content` on the message, as DeepSeek's API does).
`usage.prompt_tokens` is an estimate (UTF-8 bytes of the request's messages / 4), labelled as such
in the response's `usage_estimate` field. Requests are recorded (the last `keep_requests`).

Fault injection for retry tests: `fail_first=k` answers the first k requests with HTTP
`fail_status`; `delay_s` sleeps before each reply.

`SequencePolicy(replies)` returns canned replies in order, for unit tests of the loop. The search
policy that actually solves the search environment lives in `scripted_search.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)

Reply = dict[str, Any]
Policy = Callable[[dict[str, Any]], Reply]


class SequencePolicy:
    """Replies from a fixed list, one per request; past the end it repeats the last reply."""

    def __init__(self, replies: Sequence[Reply]):
        if not replies:
            raise ValueError("SequencePolicy needs at least one reply")
        self.replies = list(replies)
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            reply = self.replies[min(self.calls, len(self.replies) - 1)]
            self.calls += 1
        return reply


def completion_response(body: dict[str, Any], reply: Reply, index: int) -> dict[str, Any]:
    """The OpenAI chat-completion JSON for one policy reply."""
    calls = [
        {
            "id": f"call_{index}_{j}",
            "type": "function",
            "function": {
                "name": c["name"],
                "arguments": json.dumps(c.get("arguments", {}), ensure_ascii=False),
            },
        }
        for j, c in enumerate(reply.get("tool_calls") or [])
    ]
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
    if reply.get("reasoning_content"):
        message["reasoning_content"] = reply["reasoning_content"]
    if calls:
        message["tool_calls"] = calls
    prompt_bytes = len(json.dumps(body.get("messages", []), ensure_ascii=False).encode())
    completion_bytes = len(json.dumps(message, ensure_ascii=False).encode())
    prompt_tokens, completion_tokens = -(-prompt_bytes // 4), -(-completion_bytes // 4)
    return {
        "id": f"chatcmpl-{index}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "scripted"),
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "usage_estimate": "utf-8 bytes / 4 of the JSON request messages and reply",
    }


def make_app(server: ScriptedServer) -> FastAPI:
    app = FastAPI(title="dsv32 scripted policy")

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": server.model_name, "object": "model", "owned_by": "dsv32"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": {"message": "request body is not JSON"}}, status_code=400)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return JSONResponse(
                {"error": {"message": "expected a JSON object with `messages`"}}, status_code=400
            )
        index = server.record(body)
        if server.delay_s:
            await asyncio.sleep(server.delay_s)
        if index < server.fail_first:
            return JSONResponse({"error": {"message": "injected failure"}}, status_code=server.fail_status)
        try:
            reply = server.policy(body)
        except Exception as err:  # noqa: BLE001 - a policy bug becomes an HTTP 500 the client sees
            log.exception("policy failed")
            return JSONResponse({"error": {"message": f"policy error: {err}"}}, status_code=500)
        return completion_response(body, reply, index)

    return app


class ScriptedServer:
    """Context manager running the policy behind an OpenAI-compatible API on 127.0.0.1."""

    def __init__(
        self,
        policy: Policy,
        *,
        model_name: str = "scripted",
        fail_first: int = 0,
        fail_status: int = 500,
        delay_s: float = 0.0,
        keep_requests: int = 1000,
        port: int = 0,
    ):
        self.policy = policy
        self.model_name = model_name
        self.fail_first, self.fail_status, self.delay_s = fail_first, fail_status, delay_s
        self.requests: deque[dict[str, Any]] = deque(maxlen=keep_requests)
        self.n_requests = 0
        self._lock = threading.Lock()
        self._port = port
        self._server = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def record(self, body: dict[str, Any]) -> int:
        with self._lock:
            self.requests.append(body)
            self.n_requests += 1
            return self.n_requests - 1

    @property
    def base_url(self) -> str:
        if self._socket is None:
            raise RuntimeError("the server is not running")
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}/v1"

    def start(self) -> ScriptedServer:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted connections inherit this: without it a response written in two parts waits for
        # the client's delayed ACK (about 40 ms per request on loopback)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket.bind(("127.0.0.1", self._port))
        config = uvicorn.Config(make_app(self), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="scripted-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the scripted server did not start within 20 s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
