"""Hypothesis strategies for chat messages, shared by the chat tests."""

import json

from hypothesis import strategies as st

from dsv32.chat.dsml import RESERVED
from dsv32.chat.tokens import EOS, FUNCTION_CALLS_END, INVOKE_END, PARAMETER_END, THINK_END

# Pieces that sit near the format's markers, so that generated text probes the scanner's edges.
TRICKY = [
    "<",
    ">",
    "/",
    "｜",
    "\n",
    "\n\n",
    '"',
    "<｜",
    "</thi",
    "<think",
    "<｜end▁of",
    "\n\n<｜DS",
    "é",
    "日本",
    " ",
]
MARKER_FRAGMENTS = TRICKY + [
    THINK_END,
    EOS,
    "\n\n<｜DSML｜function_calls>",
    PARAMETER_END,
    INVOKE_END,
    FUNCTION_CALLS_END,
]


def clean(text: str) -> bool:
    return not any(token in text for token in RESERVED)


free_text = (
    st.lists(st.one_of(st.text(max_size=6), st.sampled_from(TRICKY)), max_size=8).map("".join).filter(clean)
)
name = st.text(
    alphabet=st.characters(blacklist_characters='"<>\n', blacklist_categories=("Cs",)), min_size=1, max_size=8
).filter(clean)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | free_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
arguments = st.dictionaries(name, json_values, max_size=4).filter(
    lambda a: clean(json.dumps(a, ensure_ascii=False))
)


@st.composite
def assistant_messages(draw, thinking: bool = True):
    calls = draw(st.lists(st.tuples(name, arguments), max_size=3))
    message = {"role": "assistant", "content": draw(free_text)}
    if thinking:
        message["reasoning_content"] = draw(free_text)
        if not message["reasoning_content"] and not calls:
            message["reasoning_content"] = "r"
    if calls:
        message["tool_calls"] = [
            {"type": "function", "function": {"name": n, "arguments": json.dumps(a, ensure_ascii=False)}}
            for n, a in calls
        ]
    return message


garbage = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(st.text(max_size=4), st.sampled_from(MARKER_FRAGMENTS)), max_size=20).map("".join),
)
