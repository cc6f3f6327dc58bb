"""Request models of the OpenAI-compatible API, and OpenAI-style errors.

Requests are validated with pydantic in strict JSON mode (`"max_tokens": "5"` is a type error, an
integer is accepted where a float is expected); unknown fields are ignored (clients send many optional
ones) but every known field is type- and range-checked, so a mistyped value is a 422 naming the
field. Messages and tools are kept as plain dicts here: the chat encoding (`dsv32.chat`) checks
them with messages that name the offending message, and its errors become 400s.

Errors have the OpenAI shape `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_N = 16
MAX_STOPS = 16


class APIError(Exception):
    """An error answered to the client with `status` and the OpenAI error body."""

    def __init__(
        self, status: int, message: str, type: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


def validation_error(err: ValidationError) -> APIError:
    """The first pydantic problem as a 422 naming the field (`messages.0.role` style)."""
    first = err.errors(include_url=False)[0]
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    detail = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg')}"
        for e in err.errors(include_url=False)[:5]
    )
    return APIError(422, f"invalid request: {detail}", "invalid_request_error", param, "invalid_value")


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=-1)
    min_p: float = Field(default=0.0, ge=0.0, le=1.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=10.0)
    n: int = Field(default=1, ge=1, le=MAX_N)
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: Any) -> Any:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return value

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ThinkingOption(BaseModel):
    """DeepSeek's `thinking: {"type": "enabled" | "disabled"}`."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["enabled", "disabled"]


class ChatCompletionRequest(_Request):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    thinking: bool | ThinkingOption | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def thinking_enabled(self, default: bool) -> bool:
        """`thinking` (bool or DeepSeek's object) wins over `chat_template_kwargs.thinking`."""
        if isinstance(self.thinking, bool):
            return self.thinking
        if isinstance(self.thinking, ThinkingOption):
            return self.thinking.type == "enabled"
        kwargs = self.chat_template_kwargs or {}
        for key in ("thinking", "enable_thinking"):
            if key in kwargs:
                if not isinstance(kwargs[key], bool):
                    raise bad_request(
                        f"chat_template_kwargs.{key} must be true or false", f"chat_template_kwargs.{key}"
                    )
                return kwargs[key]
        return default


class CompletionRequest(_Request):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False

    def prompts(self) -> list[str | list[int]]:
        """The prompt(s): one string, one token list, or a batch of either."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise bad_request("prompt must not be empty", "prompt")
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]
