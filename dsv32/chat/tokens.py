"""Special-token strings of the DeepSeek-V3.2 chat encoding, in one place.

`SPECIAL_TOKENS` lists every string a tokenizer must treat as one indivisible id, in id order:
BOS is id 0 and EOS id 1 as in the official vocabulary (SPEC section 1); the rest follow in a fixed
order so that a tokenizer built from this list always assigns the same ids. The official tokenizer
places the chat tokens far up its 129k vocabulary; a small dsv32 tokenizer packs them at the front.

The DSML tags carry the tool-call syntax. Opening `invoke` and `parameter` tags take attributes
(`<｜DSML｜invoke name="f">`), so their special token is the prefix up to the attributes; the
closing tags are whole tokens. `｜` is U+FF5C and `▁` is U+2581.
"""

from __future__ import annotations

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_START = "<think>"
THINK_END = "</think>"

DSML = "｜DSML｜"
FUNCTION_CALLS_START = f"<{DSML}function_calls>"
FUNCTION_CALLS_END = f"</{DSML}function_calls>"
INVOKE_START = f"<{DSML}invoke"
INVOKE_END = f"</{DSML}invoke>"
PARAMETER_START = f"<{DSML}parameter"
PARAMETER_END = f"</{DSML}parameter>"

# Plain-text markers of tool results; part of the encoding but not single tokens officially.
FUNCTION_RESULTS_START = "<function_results>"
FUNCTION_RESULTS_END = "</function_results>"
RESULT_START = "<result>"
RESULT_END = "</result>"

BOS_ID = 0
EOS_ID = 1

SPECIAL_TOKENS: list[str] = [
    BOS,
    EOS,
    PAD,
    USER,
    ASSISTANT,
    THINK_START,
    THINK_END,
    FUNCTION_CALLS_START,
    FUNCTION_CALLS_END,
    INVOKE_START,
    INVOKE_END,
    PARAMETER_START,
    PARAMETER_END,
]
