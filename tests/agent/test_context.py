"""Context strategies on scripted trajectories: exactly which messages remain, and valid encodings."""

from __future__ import annotations

import json
import math

import pytest

from dsv32.agent.context import (
    SUMMARY_PREFIX,
    ByteCounter,
    DiscardRounds,
    NoCompaction,
    ParallelFewestStep,
    Summarize,
    TokenizerCounter,
    encode_prompt,
    make_strategy,
    parse_strategies,
    tool_rounds,
)
from dsv32.chat.encoding import encode_messages
from dsv32.chat.errors import EncodingError

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    }
]


def call(i: int, *queries: str) -> dict:
    return {
        "role": "assistant",
        "content": None,
        "reasoning_content": f"thinking {i}",
        "tool_calls": [
            {
                "id": f"c{i}{j}",
                "type": "function",
                "function": {"name": "search", "arguments": json.dumps({"query": q})},
            }
            for j, q in enumerate(queries)
        ],
    }


def result(i: int, j: int = 0) -> dict:
    return {"role": "tool", "tool_call_id": f"c{i}{j}", "content": f"result {i}.{j}"}


def trajectory(n_rounds: int) -> list[dict]:
    """system, user, then n rounds; round 1 has two parallel calls."""
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "question"}]
    for i in range(1, n_rounds + 1):
        if i == 1:
            msgs += [call(1, "a", "b"), result(1, 0), result(1, 1)]
        else:
            msgs += [call(i, f"q{i}"), result(i)]
    return msgs


def labels(messages: list[dict]) -> list[str]:
    out = []
    for m in messages:
        if m["role"] == "assistant":
            out.append("A" + (m["tool_calls"][0]["id"][1] if m.get("tool_calls") else "final"))
        elif m["role"] == "tool":
            out.append("T" + m["tool_call_id"][1:])
        else:
            out.append(m["role"][0].upper() + (":" + m["content"][:8] if m["role"] == "user" else ""))
    return out


def never(messages):  # a summarizer that must not be called
    raise AssertionError("summarize called")


def test_rounds_are_found_with_all_their_results():
    assert tool_rounds(trajectory(3)) == [[2, 3, 4], [5, 6], [7, 8]]
    with pytest.raises(ValueError, match="message 2: a tool result without"):
        tool_rounds([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, result(1)])


@pytest.mark.parametrize(
    "n_rounds, kept",
    [
        (1, []),
        (2, ["A2", "T20"]),
        (3, ["A3", "T30"]),
        (4, ["A4", "T40"]),
        (8, ["A7", "T70", "A8", "T80"]),
    ],
)
def test_discard_75_keeps_the_newest_quarter(n_rounds, kept):
    out = make_strategy("discard-75").compact(trajectory(n_rounds), never)
    assert labels(out) == ["S", "U:question"] + kept
    assert len(tool_rounds(out)) == n_rounds - max(1, math.floor(0.75 * n_rounds))
    encode_prompt(out, TOOLS)  # valid: raises EncodingError otherwise


def test_discard_all_keeps_system_user_and_final_answers_across_turns():
    msgs = trajectory(2) + [
        {"role": "assistant", "content": "Final answer: x", "reasoning_content": "done"},
        {"role": "user", "content": "follow-up"},
        call(9, "z"),
        result(9),
    ]
    out = make_strategy("discard-all").compact(msgs, never)
    assert labels(out) == ["S", "U:question", "Afinal", "U:follow-u"]
    prompt = encode_prompt(out, TOOLS)
    assert prompt.endswith("<｜User｜>follow-up<｜Assistant｜><think>")
    assert "done" not in prompt  # reasoning of the earlier turn is dropped by the encoding


def test_discard_keeps_reasoning_of_kept_rounds_in_the_current_turn():
    out = make_strategy("discard-75").compact(trajectory(4), never)
    prompt = encode_prompt(out, TOOLS)
    assert "thinking 4</think>" in prompt and "thinking 3" not in prompt
    assert prompt.endswith("</function_results>\n\n<think>")


def test_no_rounds_means_no_compaction():
    msgs = trajectory(0)
    for name in ("discard-75", "discard-all", "summary", "none", "parallel-fewest-step"):
        assert make_strategy(name).compact(msgs, never) is None


def test_summary_restarts_from_task_and_replaces_an_earlier_summary():
    seen = []

    def summarize(messages):
        seen.append(labels(messages))
        return f"  summary {len(seen)}  "

    first = Summarize().compact(trajectory(2), summarize)
    assert labels(first) == ["S", "U:question", "U:" + SUMMARY_PREFIX[:8]]
    assert first[-1]["content"] == f"{SUMMARY_PREFIX}\nsummary 1"
    second = Summarize().compact(first + [call(5, "more"), result(5)], summarize)
    assert labels(second) == ["S", "U:question", "U:" + SUMMARY_PREFIX[:8]]
    assert second[-1]["content"].endswith("summary 2")
    assert seen[1] == ["S", "U:question", "U:" + SUMMARY_PREFIX[:8], "A5", "T50"]
    prompt = encode_prompt(second, TOOLS)
    assert prompt.endswith(f"{SUMMARY_PREFIX}\nsummary 2<｜Assistant｜><think>")


def test_encoding_check_catches_a_split_round():
    broken = trajectory(2)
    del broken[4]  # the second result of round 1: the round is no longer whole
    with pytest.raises(EncodingError):
        encode_prompt(broken + [{"role": "user", "content": "next"}], TOOLS)


def test_token_counters():
    msgs = trajectory(3)
    text = encode_messages(msgs, "thinking", True, tools=TOOLS)
    assert ByteCounter(1.0).count(msgs, TOOLS) == len(text.encode("utf-8"))
    assert ByteCounter().count(msgs, TOOLS) == math.ceil(len(text.encode("utf-8")) / 4)

    class CharTokenizer:
        def encode(self, text: str) -> list[int]:
            return [ord(c) for c in text]

    assert TokenizerCounter(CharTokenizer()).count(msgs, TOOLS) == len(text)
    assert ByteCounter().name.startswith("estimate")
    with pytest.raises(ValueError, match="bytes_per_token"):
        ByteCounter(0)


def test_strategy_names():
    assert isinstance(make_strategy("none"), NoCompaction)
    assert make_strategy("discard-all") == DiscardRounds(1.0, name="discard-all")
    assert make_strategy("parallel-fewest-step", parallel_n=3) == ParallelFewestStep(3)
    assert parse_strategies("all") == ["none", "summary", "discard-75", "discard-all", "parallel-fewest-step"]
    assert parse_strategies("summary, none") == ["summary", "none"]
    with pytest.raises(ValueError, match="unknown context strategy 'discard-50'"):
        parse_strategies("none,discard-50")
    with pytest.raises(ValueError, match="expected `all`"):
        parse_strategies(" , ")
    with pytest.raises(ValueError, match="fraction"):
        DiscardRounds(0.0)
