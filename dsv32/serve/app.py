"""The OpenAI-compatible HTTP app: `create_app(state)` returns a FastAPI app serving

- `GET /` the chat page; `GET /health`; `GET /metrics` (Prometheus text);
- `GET /v1/models`, `GET /v1/models/{id}`;
- `POST /v1/chat/completions` and `POST /v1/completions`, streamed (SSE) or not.

Request bodies are read here, not by FastAPI: a body over `max_body_bytes` is a 413 before it is
read in full, invalid JSON a 400, a body that fails the request model a 422, an unknown model a 404,
and everything the chat encoding rejects a 400, all as `{"error": {"message", "type", "param",
"code"}}`. Anything unexpected inside a handler is a 500 of the same shape (logged); the server keeps
serving. A client that goes away mid-request (streamed or not) cancels its engine requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from importlib import resources
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dsv32.serve.chat_api import chat_response, chat_stream
from dsv32.serve.chat_plan import plan_chat
from dsv32.serve.completions_api import completion_response, completion_stream, plan_completion
from dsv32.serve.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    bad_request,
    validation_error,
)
from dsv32.serve.state import ServerState
from dsv32.serve.streaming import DONE, sse

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
DISCONNECT_POLL_S = 0.25


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def internal_error(err: BaseException) -> APIError:
    return APIError(
        500, f"internal error: {type(err).__name__}: {err}", "server_error", None, "internal_error"
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) anything over `limit` bytes without reading it all."""
    too_large = APIError(
        413, f"request body exceeds {limit} bytes", "invalid_request_error", None, "request_too_large"
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse_request(model: type[M], raw: bytes) -> M:
    if not raw.strip():
        raise bad_request("the request body is empty; expected a JSON object", None, "invalid_json")
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        if first.get("type") == "json_invalid":
            raise bad_request(
                f"the request body is not valid JSON: {first.get('msg')}", None, "invalid_json"
            ) from None
        raise validation_error(err) from None


T = TypeVar("T")


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so its engine requests) if the client disconnects."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise asyncio.CancelledError("client disconnected")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def create_app(state: ServerState) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.backend.start()
        try:
            yield
        finally:
            await state.backend.stop()

    app = FastAPI(title="dsv32", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    metrics = state.metrics

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(APIError(exc.status_code, message, kind, None, None))

    def check_model(name: str) -> None:
        if name != state.model_name:
            raise APIError(
                404,
                f"model {name!r} does not exist; this server serves {state.model_name!r}",
                "invalid_request_error",
                "model",
                "model_not_found",
            )

    async def sse_body(stream: AsyncIterator[str], endpoint: str, started: float) -> AsyncIterator[str]:
        completed, status = False, 200
        metrics.in_flight += 1
        try:
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                async for piece in stream:
                    yield piece
            completed = True
        except Exception as err:  # the status line is sent: report the error in-band
            log.exception("%s stream failed", endpoint)
            status, completed = 500, True
            yield sse(internal_error(err).body())
        finally:
            metrics.in_flight -= 1
            if not completed:
                metrics.cancelled += 1
                log.info("%s: client went away; request cancelled", endpoint)
            metrics.request_done(endpoint, status if completed else 499, time.monotonic() - started)
        yield DONE

    async def answer(
        request: Request, endpoint: str, work: Awaitable[dict[str, Any]], started: float
    ) -> Response:
        metrics.in_flight += 1
        try:
            body = await _unless_disconnected(request, work)
        except asyncio.CancelledError:
            metrics.cancelled += 1
            metrics.request_done(endpoint, 499, time.monotonic() - started)
            raise
        except APIError as err:
            metrics.request_done(endpoint, err.status)
            return error_response(err)
        except Exception as err:
            log.exception("%s failed", endpoint)
            metrics.request_done(endpoint, 500)
            return error_response(internal_error(err))
        finally:
            metrics.in_flight -= 1
        metrics.request_done(endpoint, 200, time.monotonic() - started)
        return JSONResponse(body)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        started = time.monotonic()
        try:
            req = parse_request(ChatCompletionRequest, await read_body(request, state.max_body_bytes))
            check_model(req.model)
            plan = plan_chat(req, state.tokenizer, state.backend.context_length, state.default_thinking)
        except APIError as err:
            metrics.request_done("chat", err.status)
            return error_response(err)
        except Exception as err:
            log.exception("planning a chat request failed")
            metrics.request_done("chat", 500)
            return error_response(internal_error(err))
        request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if req.stream:
            stream = chat_stream(state, plan, request_id, req.n, started, req.include_usage())
            return StreamingResponse(sse_body(stream, "chat", started), media_type="text/event-stream")
        return await answer(request, "chat", chat_response(state, plan, request_id, req.n, started), started)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        started = time.monotonic()
        try:
            req = parse_request(CompletionRequest, await read_body(request, state.max_body_bytes))
            check_model(req.model)
            planned = plan_completion(state, req)
        except APIError as err:
            metrics.request_done("completions", err.status)
            return error_response(err)
        except Exception as err:
            log.exception("planning a completion request failed")
            metrics.request_done("completions", 500)
            return error_response(internal_error(err))
        request_id = f"cmpl-{uuid.uuid4().hex[:24]}"
        if req.stream:
            stream = completion_stream(state, req, planned, request_id, started)
            return StreamingResponse(sse_body(stream, "completions", started), media_type="text/event-stream")
        work = completion_response(state, req, planned, request_id, started)
        return await answer(request, "completions", work, started)

    def model_card() -> dict[str, Any]:
        return {
            "id": state.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "dsv32",
            "max_model_len": state.backend.context_length,
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> Response:
        try:
            check_model(model_id)
        except APIError as err:
            return error_response(err)
        return JSONResponse(model_card())

    @app.get("/health")
    async def health() -> JSONResponse:
        stats = state.backend.stats()
        body = {
            "status": "ok" if stats.healthy else "unhealthy",
            "running": stats.running,
            "waiting": stats.waiting,
        }
        return JSONResponse(body, status_code=200 if stats.healthy else 503)

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(
            metrics.render(state.backend.stats()), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.get("/")
    async def page() -> HTMLResponse:
        text = resources.files("dsv32.serve").joinpath("page.html").read_text(encoding="utf-8")
        return HTMLResponse(text.replace("{{MODEL}}", html.escape(state.model_name, quote=True)))

    return app
