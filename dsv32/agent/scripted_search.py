"""A deterministic policy that solves search-environment questions with the three tools.

It reads only what the model would see: the question, the visible tool calls and results, its own
earlier reasoning and any summary. The question's relation chain is parsed from its fixed wording;
hop by hop it searches for the current entity's exact title, opens that document (or jumps to
`find`), reads the fact sentence of the next relation, and finally answers "Final answer: <value>".

Its reasoning records progress as lines `Hop i = NAME` (hop 0 is the question's entity). Those
lines are how it resumes after context management: a summary request is answered with them,
`discard-75` keeps the latest rounds whose reasoning carries them, and `discard-all` leaves only
the question, so the policy starts over. It is deterministic given the request `seed` (None
counts as its own seed): per hop, the seed decides whether it opens the first search hit without
checking its title (a careless step that wastes context) and whether it goes straight to `find`.
What it leaves out: any language understanding beyond these templates; it is a test fixture
for the agent runtime, not a model.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from dsv32.agent.context import SUMMARY_PREFIX, SUMMARY_REQUEST
from dsv32.agent.search_corpus import FACT_TEMPLATES, PHRASES

_QUESTION = re.compile(r'What is the (?P<chain>.+) of the (?P<kind>\w+) "(?P<anchor>.+)"\?')
_PHRASE_KEYS = {phrase: key for key, phrase in PHRASES.items()}
_HOP = re.compile(r"^Hop (\d+) = (.+)$", re.MULTILINE)
_RESULT = re.compile(r"^\d+\. \[(d\d+)\] (.+?): ", re.MULTILINE)
_HEADER = re.compile(r"^\[(d\d+)\] (.+?) \(lines (\d+)-(\d+) of (\d+)\)")


def parse_question(text: str) -> tuple[str, list[str]] | None:
    """(anchor name, path of relation/attribute keys) or None when the wording is not recognised."""
    m = _QUESTION.search(text)
    if not m:
        return None
    phrases = m.group("chain").split(" of the ")
    if any(p not in _PHRASE_KEYS for p in phrases):
        return None
    return m.group("anchor"), [_PHRASE_KEYS[p] for p in reversed(phrases)]


def fact_parts(key: str) -> tuple[str, str]:
    """(middle, suffix) of a fact template: '{s} <middle> {v}<suffix>'."""
    before, after = FACT_TEMPLATES[key].split("{v}")
    return before.replace("{s}", "").strip(), after


def read_fact(text: str, subject: str, key: str) -> str | None:
    """The value of `key` for `subject` if its fact sentence occurs in `text`."""
    middle, suffix = fact_parts(key)
    prefix = f"{subject} {middle} "
    for line in text.splitlines():
        line = re.sub(r"^L\d+: ", "", line.strip())
        if line.startswith(prefix) and line.endswith(suffix) and len(line) > len(prefix) + len(suffix):
            return line[len(prefix) : len(line) - len(suffix)]
    return None


def _coin(seed: Any, *parts: Any) -> float:
    digest = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class SearchPolicy:
    """Callable policy for `ScriptedServer`; `careless` and `find_first` are per-hop probabilities."""

    def __init__(self, careless: float = 0.3, find_first: float = 0.5):
        self.careless, self.find_first = careless, find_first

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        seed = body.get("seed")
        users = [m for m in messages if m.get("role") == "user"]
        summarising = bool(users) and users[-1].get("content") == SUMMARY_REQUEST
        task = next((m for m in users if not str(m.get("content")).startswith(SUMMARY_PREFIX)), None)
        parsed = parse_question(str(task.get("content"))) if task else None
        if parsed is None:
            return {"content": "Final answer: unknown", "reasoning_content": "I cannot parse the question."}
        anchor, path = parsed
        hops = self._known_hops(messages)
        hops.setdefault(0, anchor)
        seen = self._tool_text(messages)
        k = max(hops)
        while k < len(path):  # extend with facts visible in tool results
            value = read_fact(seen, hops[k], path[k])
            if value is None:
                break
            hops[k + 1] = value
            k += 1
        if summarising:  # reasoning is not visible here (a new user message dropped it): notes as content
            return {"content": "\n".join(f"Hop {i} = {hops[i]}" for i in sorted(hops))}
        notes = "\n".join(f"Hop {i} = {hops[i]}" for i in sorted(hops) if i <= k)
        if k == len(path):
            return {
                "content": f"Final answer: {hops[k]}",
                "reasoning_content": notes + "\nAll hops resolved.",
            }
        action = self._next_action(messages, seed, hops[k], path[k], k, final=k == len(path) - 1)
        if action is None:
            return {"content": "Final answer: unknown", "reasoning_content": notes + "\nI could not find it."}
        return {
            "reasoning_content": f"{notes}\nNext: the {PHRASES[path[k]]} of {hops[k]}.",
            "tool_calls": action,
        }

    # ---- reading the conversation ---------------------------------------------------------------

    @staticmethod
    def _known_hops(messages: list[dict[str, Any]]) -> dict[int, str]:
        hops: dict[int, str] = {}
        for m in messages:
            for field in ("reasoning_content", "content"):
                if m.get("role") in ("assistant", "user") and isinstance(m.get(field), str):
                    for i, name in _HOP.findall(m[field]):
                        hops[int(i)] = name.strip()
        return hops

    @staticmethod
    def _tool_text(messages: list[dict[str, Any]]) -> str:
        return "\n".join(str(m.get("content")) for m in messages if m.get("role") == "tool")

    @staticmethod
    def _done(messages: list[dict[str, Any]]) -> set[tuple]:
        done = set()
        for m in messages:
            for call in m.get("tool_calls") or []:
                fn = call.get("function", {})
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except json.JSONDecodeError:
                    continue
                done.add((fn.get("name"), *(json.dumps(args.get(k)) for k in sorted(args))))
        return done

    def _next_action(
        self, messages: list[dict[str, Any]], seed: Any, name: str, key: str, hop: int, final: bool
    ) -> list[dict[str, Any]] | None:
        tool_text = self._tool_text(messages)
        done = self._done(messages)

        def was(name_: str, **args: Any) -> bool:
            return (name_, *(json.dumps(args[k]) for k in sorted(args))) in done

        titles: dict[str, str] = {}
        first_hit: str | None = None
        for doc_id, title in _RESULT.findall(tool_text):
            titles.setdefault(title, doc_id)
        for m in messages:  # the first hit of the latest visible search for this name
            if m.get("role") == "tool" and str(m.get("content")).startswith(f"Results for {name!r}"):
                hit = _RESULT.search(str(m["content"]))
                first_hit = hit.group(1) if hit else None
        doc = titles.get(name)
        if first_hit and first_hit != doc and _coin(seed, name, hop, "careless") < self.careless:
            if not was("open", doc_id=first_hit, loc=0):
                return [{"name": "open", "arguments": {"doc_id": first_hit, "loc": 0}}]
        if doc is None:
            for topn in (5, 10):
                if not was("search", query=name, topn=topn):
                    return [{"name": "search", "arguments": {"query": name, "topn": topn}}]
            return None
        middle, _ = fact_parts(key)
        find = {"name": "find", "arguments": {"doc_id": doc, "pattern": f"{name} {middle}"}}
        opened = [
            (int(h.group(3)), int(h.group(4)), int(h.group(5)))
            for h in map(_HEADER.match, tool_text.split("\n"))
            if h and h.group(1) == doc
        ]
        if final and not opened and not was("find", **find["arguments"]):  # read and look up at once
            return [{"name": "open", "arguments": {"doc_id": doc, "loc": 0}}, find]
        if not opened and _coin(seed, name, hop, "find") >= self.find_first:
            return [{"name": "open", "arguments": {"doc_id": doc, "loc": 0}}]
        if not was("find", **find["arguments"]):
            return [find]
        shown = {line for start, end, _ in opened for line in range(start, end + 1)}
        total = max((t for _, _, t in opened), default=0)
        for loc in range(0, total, 10):
            if loc not in shown and not was("open", doc_id=doc, loc=loc):
                return [{"name": "open", "arguments": {"doc_id": doc, "loc": loc}}]
        return None
