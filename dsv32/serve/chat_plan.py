"""A chat-completion request turned into what the engine runs: prompt ids, sampling, tool-choice rules.

`tool_choice` is enforced on what the model may output, not merely asked for in the prompt:
- "none": the tools are left out of the prompt, the function-calls token is banned from sampling
  (when the tokenizer has it as one token) and the parser accepts no tool call;
- "auto" (the default with tools): the tools are in the prompt; calls are checked against them;
- "required": after the reasoning, the output is forced to begin with the DSML block and an invoke
  (`\\n\\n<｜DSML｜function_calls>\\n<｜DSML｜invoke name="`), so the model writes at least one call
  and chooses the tool; the parser rejects names that are not among the tools;
- named (`{"type": "function", "function": {"name": N}}`): as "required" with `name="N">\\n` forced too.
In thinking mode the forced text comes after the model's own reasoning: generation first runs to
`</think>` (a stop token), then continues from prompt + reasoning + forced text (two engine
requests; the forced tokens count as prompt tokens). What the model writes inside the forced
invoke is not grammar-constrained: a malformed call is reported as a parse error, not repaired.
`response_format` is rendered into the prompt (the encoding's response-format section); the
output is not constrained to the schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dsv32.chat.encoding import encode_messages
from dsv32.chat.errors import EncodingError
from dsv32.chat.messages import normalize_conversation, normalize_function
from dsv32.chat.tokens import EOS, FUNCTION_CALLS_START, INVOKE_START, THINK_END
from dsv32.serve.backend import SamplingParams
from dsv32.serve.protocol import APIError, ChatCompletionRequest, bad_request
from dsv32.tokenizer import Tokenizer

FORCED_CALL_PREFIX = f'\n\n{FUNCTION_CALLS_START}\n{INVOKE_START} name="'


@dataclass(frozen=True)
class ChatPlan:
    prompt_ids: list[int]
    thinking: bool
    parser_tools: list[dict[str, Any]] | None  # None: calls unchecked; []: no call allowed
    forced_text: str  # written for the model after its reasoning ("" when nothing is forced)
    params: SamplingParams
    stops: list[str]
    think_end_id: int | None


def single_token_id(tokenizer: Tokenizer, text: str) -> int | None:
    ids = tokenizer.encode(text)
    return ids[0] if len(ids) == 1 else None


def _tool_choice(req: ChatCompletionRequest) -> tuple[str, str | None]:
    """(mode, forced tool name) with mode in none/auto/required/named."""
    tools = req.tools or []
    choice = req.tool_choice
    if choice is None:
        return ("auto" if tools else "none"), None
    if isinstance(choice, str):
        if choice in ("required",) and not tools:
            raise bad_request("tool_choice 'required' needs a non-empty tools list", "tool_choice")
        return choice, None
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise bad_request(
            "tool_choice must be 'none', 'auto', 'required' or "
            "{'type': 'function', 'function': {'name': ...}}",
            "tool_choice",
        )
    names = [t["function"]["name"] for t in tools]
    if name not in names:
        raise bad_request(f"tool_choice names {name!r}, which is not among the tools {names}", "tool_choice")
    return "named", name


def _check_ends_with_prompt(messages: list[dict[str, Any]]) -> None:
    """Generation needs a conversation that ends where the model speaks next."""
    try:
        normalized = normalize_conversation(messages)
    except EncodingError as err:
        raise bad_request(str(err), "messages") from None
    last = normalized[-1]
    if last.role == "tool":
        caller = len(normalized) - 1
        while normalized[caller].role == "tool":
            caller -= 1
        results = len(normalized) - 1 - caller
        if results < len(normalized[caller].tool_calls):
            raise bad_request(
                f"message {caller} made {len(normalized[caller].tool_calls)} tool call(s) but only {results} "
                "tool result(s) follow it",
                "messages",
            )
    elif last.role not in ("user", "developer"):
        raise bad_request(
            f"the last message is a {last.role} message; it must be a user, developer or tool message",
            "messages",
        )


def sampling_params(
    req: Any, max_tokens: int, logprobs: int | None, stop_ids: tuple[int, ...]
) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=max(0, req.top_k),
        min_p=req.min_p,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty,
        seed=req.seed,
        stop_token_ids=stop_ids,
        logprobs=logprobs,
    )


def fit_max_tokens(requested: int | None, prompt_len: int, context_length: int) -> int:
    """The generation budget; 413 when the prompt (plus an explicit max_tokens) exceeds the context."""
    room = context_length - prompt_len
    if room < 1:
        raise APIError(
            413,
            f"the prompt is {prompt_len} tokens; this model's context is {context_length} tokens",
            "invalid_request_error",
            "messages",
            "context_length_exceeded",
        )
    if requested is not None and requested > room:
        raise APIError(
            413,
            f"prompt ({prompt_len} tokens) + max_tokens ({requested}) exceeds the context of "
            f"{context_length} tokens",
            "invalid_request_error",
            "max_tokens",
            "context_length_exceeded",
        )
    return requested if requested is not None else room


def plan_chat(
    req: ChatCompletionRequest, tokenizer: Tokenizer, context_length: int, default_thinking: bool
) -> ChatPlan:
    """Validate and encode a chat request (APIError for anything the client must fix)."""
    thinking = req.thinking_enabled(default_thinking)
    tools = req.tools or []
    for i, tool in enumerate(tools):
        try:
            normalize_function(tool, f"tools[{i}]")
        except EncodingError as err:
            raise bad_request(str(err), f"tools.{i}") from None
    mode, name = _tool_choice(req)
    _check_ends_with_prompt(req.messages)
    response_format = req.response_format
    if response_format is not None and response_format.get("type", "text") == "text":
        response_format = None
    try:
        text = encode_messages(
            req.messages,
            thinking_mode="thinking" if thinking else "chat",
            tools=tools if tools and mode != "none" else None,
            response_format=response_format,
        )
    except EncodingError as err:
        raise bad_request(str(err), "messages") from None
    prompt_ids = tokenizer.encode(text)
    forced = ""
    if mode == "required":
        forced = FORCED_CALL_PREFIX
    elif mode == "named":
        forced = f'{FORCED_CALL_PREFIX}{name}">\n'
    think_end_id = single_token_id(tokenizer, THINK_END)
    if forced and thinking and think_end_id is None:
        raise bad_request(
            f"tool_choice {mode!r} in thinking mode needs {THINK_END!r} as one token", "tool_choice"
        )
    forced_len = len(tokenizer.encode(forced)) if forced else 0  # prompt-side tokens, in either mode
    max_tokens = fit_max_tokens(req.token_limit(), len(prompt_ids) + forced_len, context_length)
    eos_id = single_token_id(tokenizer, EOS)
    banned: tuple[int, ...] = ()
    calls_id = single_token_id(tokenizer, FUNCTION_CALLS_START)
    if mode == "none" and calls_id is not None:
        banned = (calls_id,)
    k = (req.top_logprobs or 0) if req.logprobs else None
    params = sampling_params(req, max_tokens, k, (eos_id,) if eos_id is not None else ())
    params = SamplingParams(**{**params.__dict__, "banned_token_ids": banned})
    return ChatPlan(
        prompt_ids=prompt_ids,
        thinking=thinking,
        parser_tools=[] if mode == "none" else (tools or None),
        forced_text=forced,
        params=params,
        stops=req.stop_list(),
        think_end_id=think_end_id,
    )
