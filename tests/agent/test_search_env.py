"""The offline search environment: determinism, multi-hop questions answerable from the text, tools."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from dsv32.agent.scripted_search import parse_question, read_fact
from dsv32.agent.search_corpus import FACT_TEMPLATES
from dsv32.agent.search_env import SearchEnvironment, grade, normalize_answer
from dsv32.agent.tools import ToolCall


@pytest.fixture(scope="module")
def env():
    e = SearchEnvironment.build(n_docs=300, n_questions=30, seed=7)
    yield e
    e.close()


def test_deterministic_by_seed(env):
    again = SearchEnvironment.build(n_docs=300, n_questions=30, seed=7)
    other = SearchEnvironment.build(n_docs=300, n_questions=30, seed=8)
    assert again.documents == env.documents and again.questions == env.questions
    assert other.questions != env.questions
    assert again.search("Ledger harbor", 5) == env.search("Ledger harbor", 5)


def test_questions_need_two_to_four_documents_and_follow_the_text(env):
    assert Counter(len(q.doc_ids) for q in env.questions) == {2: 10, 3: 10, 4: 10}
    assert len({q.text for q in env.questions}) == 30
    for q in env.questions:
        anchor, path = parse_question(q.text)
        assert path == list(q.path)
        # walk the chain reading only each hop's own document text (a reference independent of
        # the generator's entity tables)
        name = anchor
        assert env.documents[q.doc_ids[0]][0] == anchor
        for hop, key in enumerate(path):
            doc = "\n".join(env.documents[q.doc_ids[hop]])
            value = read_fact(doc, name, key)
            assert value is not None, (q, key)
            # the fact is stated nowhere else: every other document lacks that sentence
            sentence = FACT_TEMPLATES[key].format(s=name, v=value)
            holders = [d for d, lines in env.documents.items() if sentence in lines]
            assert holders == [q.doc_ids[hop]]
            name = value
            if hop + 1 < len(path):
                assert env.documents[q.doc_ids[hop + 1]][0] == name
        assert name == q.answer


def test_distractors_exist(env):
    # most anchors share a name word with another document's title, and a search for the
    # anchor returns other documents besides it
    titles = [lines[0] for lines in env.documents.values()]
    similar = 0
    for q in env.questions:
        anchor = env.documents[q.doc_ids[0]][0]
        words = set(anchor.split()) - {"The", "of"}
        similar += any(t != anchor and words & set(t.split()) for t in titles)
        hits = re.findall(r"\[(d\d+)\]", env.search(anchor, 5))
        assert q.doc_ids[0] in hits and len(hits) == 5
    assert similar >= 20


def test_tools_through_the_registry(env):
    tools = env.tools(page_lines=4)
    assert [s["function"]["name"] for s in tools.schemas()] == ["search", "open", "find"]
    doc = env.questions[0].doc_ids[0]
    lines = env.documents[doc]
    page = tools.execute(ToolCall("1", "open", json.dumps({"doc_id": doc, "loc": 2}))).content
    assert page.splitlines() == [f"[{doc}] {lines[0]} (lines 2-5 of {len(lines)})"] + [
        f"L{i}: {lines[i]}" for i in range(2, 6)
    ] + ["(more: open with loc=6)"]
    found = tools.execute(
        ToolCall("2", "find", json.dumps({"doc_id": doc, "pattern": lines[0].upper()}))
    ).content
    expected = [i for i, line in enumerate(lines) if lines[0].lower() in line.lower()]
    assert [int(m) for m in re.findall(r"^L(\d+):", found, re.M)] == expected[:20]
    bad = tools.execute(ToolCall("3", "open", json.dumps({"doc_id": "d999999"})))
    assert not bad.ok and "unknown doc_id 'd999999'" in bad.content
    past = tools.execute(ToolCall("4", "open", json.dumps({"doc_id": doc, "loc": len(lines)})))
    assert not past.ok and "loc must be between 0 and" in past.content
    assert "no searchable words" in tools.execute(ToolCall("5", "search", '{"query": "!!"}')).content
    assert (
        "topn must be between 1 and 20"
        in tools.execute(ToolCall("6", "search", '{"query": "a", "topn": 50}')).content
    )
    assert env.search("zzzqqqxxx") == "No documents match 'zzzqqqxxx'."


def test_search_ranks_by_bm25(env):
    # the exact title outranks documents that only mention it, for the anchors' full names
    top1 = sum(
        re.findall(r"\[(d\d+)\]", env.search(env.documents[q.doc_ids[0]][0], 3))[0] == q.doc_ids[0]
        for q in env.questions
    )
    assert top1 >= 20


def test_save_and_load_round_trip(env, tmp_path):
    path = env.save(tmp_path / "env.sqlite")
    loaded = SearchEnvironment.load(path)
    assert loaded.documents == env.documents and loaded.questions == env.questions
    assert loaded.meta == env.meta
    assert loaded.search("Amber Ledger", 7) == env.search("Amber Ledger", 7)
    with pytest.raises(FileNotFoundError):
        SearchEnvironment.load(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_text("not a database")
    with pytest.raises(ValueError, match="not a valid environment file"):
        SearchEnvironment.load(tmp_path / "junk.sqlite")


@pytest.mark.parametrize(
    "prediction, answer, ok",
    [
        ("Final answer: 1953", "1953", True),
        ("I think...\nFINAL ANSWER:  the Tarvik.", "Tarvik", True),
        ("final answer - 12,345 ", "12345", True),
        ("Final answer: **Ilse  Varnok**", "Ilse Varnok", True),
        ("Final answer: 1953\nbecause ...", "1953", True),
        ("1953", "1953", True),
        ("Final answer: 1954", "1953", False),
        ("Final answer: Ilse", "Ilse Varnok", False),
        ("", "x", False),
        (None, "x", False),
    ],
)
def test_grader(prediction, answer, ok):
    assert grade(prediction, answer) is ok


def test_normalize_answer():
    assert normalize_answer("Final answer: The Amber-Ledger!") == "amber ledger"
    assert normalize_answer("ｆｕｌｌｗｉｄｔｈ") == "fullwidth"


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="n_docs"):
        SearchEnvironment.build(n_docs=10)
    with pytest.raises(ValueError, match="n_questions"):
        SearchEnvironment.build(n_docs=100, n_questions=0)
