"""Offline BrowseComp-like search environment: corpus, SQLite FTS5 index, tools, questions, grader.

`SearchEnvironment.build(n_docs, n_questions, seed)` generates the corpus (`search_corpus.py`),
indexes it in an in-memory SQLite FTS5 table ranked by BM25 (title weighted 5x the body) and draws
multi-hop questions: start at a named entity, follow 1-3 relations, ask for an attribute of the
entity reached, so an answer needs 2-4 documents (one per hop plus the last). Everything is
deterministic by seed. `save`/`load` keep an environment in one SQLite file.

Tools for the model: `search(query, topn)` (BM25 over the words of the query, OR-combined),
`open(doc_id, loc)` (a page of numbered lines starting at line `loc`) and `find(doc_id, pattern)`
(lines containing a case-insensitive substring).

The grader takes the text after the last "Final answer:" (or the whole reply), normalises both
sides (Unicode NFKC, lower case, thousands separators and punctuation removed, articles dropped,
whitespace collapsed) and requires equality; no partial credit and no fuzzy matching.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import tempfile
import threading
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

from dsv32.agent.search_corpus import ATTRIBUTES, PHRASES, RELATIONS, Entity, generate_corpus
from dsv32.agent.tools import ToolRegistry, tool_from_function

SYSTEM_PROMPT = (
    "You answer questions by researching an offline archive of documents about fictional people, "
    "companies, cities, universities, books and events. Each entity has its own document, and a "
    "question usually needs facts from several documents. Use the tools: search(query, topn) finds "
    "documents, open(doc_id, loc) reads a page of a document, find(doc_id, pattern) lists the lines of a "
    "document containing a phrase. Several entities have similar names: check that a document is about "
    "exactly the entity you need. When you know the answer, reply without tool calls, ending with a line "
    "'Final answer: <answer>' where the answer is as short as possible (a name, a word or a number)."
)


@dataclass(frozen=True)
class Question:
    """A question, its exact answer, the relation path and the documents it needs (anchor first)."""

    qid: str
    text: str
    answer: str
    path: tuple[str, ...]  # relations, then the final attribute
    doc_ids: tuple[str, ...]


def question_text(kind: str, anchor: str, path: tuple[str, ...]) -> str:
    """'What is the <attr> of the <rel_k> of ... of the <rel_1> of the <kind> "<anchor>"?'"""
    chain = " of the ".join(PHRASES[p] for p in reversed(path))
    return f'What is the {chain} of the {kind} "{anchor}"?'


def generate_questions(entities: dict[str, Entity], n_questions: int, seed: int) -> list[Question]:
    """`n_questions` distinct questions with 1, 2 and 3 hops in turn (2, 3 and 4 documents)."""
    rng = random.Random(seed + 2)
    anchors = [e for e in entities.values() if RELATIONS[e.kind]]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    questions: list[Question] = []
    attempts = 0
    while len(questions) < n_questions:
        attempts += 1
        if attempts > 100 * n_questions + 1000:
            raise ValueError(f"cannot draw {n_questions} distinct questions from {len(entities)} documents")
        hops = 1 + len(questions) % 3
        anchor = rng.choice(anchors)
        current, path, docs = anchor, [], [anchor.doc_id]
        for hop in range(hops):
            last_hop = hop == hops - 1
            options = [r for r, k in RELATIONS[current.kind].items() if last_hop or RELATIONS[k]]
            options = [r for r in options if current.relations[r] not in docs]
            if not options:
                break
            relation = rng.choice(options)
            path.append(relation)
            current = entities[current.relations[relation]]
            docs.append(current.doc_id)
        if len(path) != hops:
            continue
        attribute = rng.choice(ATTRIBUTES[current.kind])
        key = (anchor.doc_id, (*path, attribute))
        if key in seen:
            continue
        seen.add(key)
        questions.append(
            Question(
                qid=f"q{len(questions):05d}",
                text=question_text(anchor.kind, anchor.name, key[1]),
                answer=current.attributes[attribute],
                path=key[1],
                doc_ids=tuple(docs),
            )
        )
    return questions


_FINAL = re.compile(r"final answer\s*[:\-]\s*", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Text after the last 'Final answer:', NFKC, lower case, no punctuation or articles."""
    text = unicodedata.normalize("NFKC", text or "")
    parts = _FINAL.split(text)
    text = parts[-1].strip().splitlines()[0] if parts[-1].strip() else ""
    text = text.lower()
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(r"[^\w\s]", " ", text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def grade(prediction: str | None, answer: str) -> bool:
    """True when the normalised prediction equals the normalised answer."""
    return prediction is not None and normalize_answer(prediction) == normalize_answer(answer) != ""


class SearchEnvironment:
    """Documents, FTS5 index, questions and the three tools over them."""

    def __init__(
        self, conn: sqlite3.Connection, documents: dict[str, list[str]], questions: list[Question], meta
    ):
        self._conn = conn
        self._lock = threading.Lock()
        self.documents = documents
        self.questions = questions
        self.meta = dict(meta)
        self.system_prompt = SYSTEM_PROMPT

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def build(cls, n_docs: int = 10_000, n_questions: int = 500, seed: int = 0) -> SearchEnvironment:
        if n_docs < 40:
            raise ValueError(f"n_docs: expected at least 40, got {n_docs}")
        if n_questions < 1:
            raise ValueError(f"n_questions: expected at least 1, got {n_questions}")
        corpus = generate_corpus(n_docs, seed)
        questions = generate_questions(corpus.entities, n_questions, seed)
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        _create_schema(conn)
        conn.executemany(
            "INSERT INTO docs(doc_id, title, body) VALUES (?, ?, ?)",
            ((d, lines[0], "\n".join(lines[1:])) for d, lines in corpus.documents.items()),
        )
        conn.execute("INSERT INTO docs_fts(docs_fts) VALUES ('optimize')")
        conn.executemany(
            "INSERT INTO questions VALUES (?, ?, ?, ?, ?)",
            ((q.qid, q.text, q.answer, json.dumps(q.path), json.dumps(q.doc_ids)) for q in questions),
        )
        meta = {"n_docs": n_docs, "n_questions": n_questions, "seed": seed, "format": 1}
        conn.executemany("INSERT INTO meta VALUES (?, ?)", ((k, json.dumps(v)) for k, v in meta.items()))
        conn.commit()
        return cls(conn, corpus.documents, questions, meta)

    @classmethod
    def load(cls, path: str | Path) -> SearchEnvironment:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"search environment {path}: no such file")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        try:
            meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
            rows = conn.execute("SELECT doc_id, title, body FROM docs ORDER BY doc_id").fetchall()
            qrows = conn.execute(
                "SELECT qid, text, answer, path, doc_ids FROM questions ORDER BY qid"
            ).fetchall()
        except sqlite3.DatabaseError as err:
            conn.close()
            raise ValueError(f"search environment {path}: not a valid environment file ({err})") from None
        if meta.get("format") != 1:
            raise ValueError(f"search environment {path}: unknown format {meta.get('format')!r}")
        documents = {d: [t] + b.split("\n") for d, t, b in rows}
        questions = [
            Question(q, t, a, tuple(json.loads(p)), tuple(json.loads(ds))) for q, t, a, p, ds in qrows
        ]
        return cls(conn, documents, questions, meta)

    def save(self, path: str | Path) -> Path:
        """Write the environment to one SQLite file atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            target = sqlite3.connect(tmp)
            with self._lock:
                self._conn.backup(target)
            target.close()
            os.chmod(tmp, 0o644)  # mkstemp creates 0600
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    # ---- tools --------------------------------------------------------------------------------

    def search(self, query: str, topn: int = 5) -> str:
        """Search the archive; returns up to `topn` documents ranked by BM25 with a snippet each.

        Args:
            query: words to look for (any word may match; more matching words rank higher)
            topn: how many results to return, 1 to 20
        """
        words = re.findall(r"\w+", query)
        if not words:
            raise ValueError("the query has no searchable words")
        if not 1 <= topn <= 20:
            raise ValueError(f"topn must be between 1 and 20, got {topn}")
        match = " OR ".join('"' + w.replace('"', "") + '"' for w in words[:32])
        with self._lock:
            rows = self._conn.execute(
                "SELECT doc_id, title, snippet(docs_fts, 2, '', '', ' ... ', 12) FROM docs_fts "
                "WHERE docs_fts MATCH ? ORDER BY bm25(docs_fts, 0.0, 5.0, 1.0) LIMIT ?",
                (match, topn),
            ).fetchall()
        if not rows:
            return f"No documents match {query!r}."
        lines = [f"Results for {query!r}:"]
        lines += [f"{i}. [{d}] {t}: {s.replace(chr(10), ' ')}" for i, (d, t, s) in enumerate(rows, 1)]
        return "\n".join(lines)

    def open_page(self, doc_id: str, loc: int = 0, page_lines: int = 10) -> str:
        lines = self._doc(doc_id)
        if not 0 <= loc < len(lines):
            raise ValueError(f"loc must be between 0 and {len(lines) - 1} for {doc_id}, got {loc}")
        end = min(len(lines), loc + page_lines)
        header = f"[{doc_id}] {lines[0]} (lines {loc}-{end - 1} of {len(lines)})"
        more = [f"(more: open with loc={end})"] if end < len(lines) else []
        return "\n".join([header] + [f"L{i}: {lines[i]}" for i in range(loc, end)] + more)

    def find(self, doc_id: str, pattern: str) -> str:
        """List the lines of a document that contain `pattern` (case-insensitive), at most 20.

        Args:
            doc_id: the document id, e.g. d000123
            pattern: the phrase to look for
        """
        lines = self._doc(doc_id)
        if not pattern.strip():
            raise ValueError("pattern must not be empty")
        needle = pattern.lower()
        hits = [i for i, line in enumerate(lines) if needle in line.lower()]
        if not hits:
            return f"[{doc_id}] {lines[0]}: no line contains {pattern!r}."
        shown = [f"L{i}: {lines[i]}" for i in hits[:20]]
        return "\n".join([f"[{doc_id}] {lines[0]}: {len(hits)} line(s) contain {pattern!r}"] + shown)

    def _doc(self, doc_id: str) -> list[str]:
        lines = self.documents.get(doc_id.strip())
        if lines is None:
            raise ValueError(
                f"unknown doc_id {doc_id!r}; ids look like d000123 (take them from search results)"
            )
        return lines

    def tools(self, page_lines: int = 10, timeout_s: float = 10.0) -> ToolRegistry:
        """The registry with `search`, `open` and `find` bound to this environment."""

        def open(doc_id: str, loc: int = 0) -> str:
            """Read a page of a document: numbered lines starting at line `loc`.

            Args:
                doc_id: the document id, e.g. d000123
                loc: the first line to show (0 is the title)
            """
            return self.open_page(doc_id, loc, page_lines)

        return ToolRegistry.from_functions(
            [
                tool_from_function(self.search, timeout_s=timeout_s),
                tool_from_function(open, timeout_s=timeout_s),
                tool_from_function(self.find, timeout_s=timeout_s),
            ]
        )

    def grade(self, prediction: str | None, question: Question) -> bool:
        return grade(prediction, question.answer)

    def close(self) -> None:
        self._conn.close()


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE docs(doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL)")
    conn.execute(
        "CREATE VIRTUAL TABLE docs_fts USING fts5(doc_id UNINDEXED, title, body, content='docs', "
        "content_rowid='rowid', tokenize='unicode61')"
    )
    conn.execute(
        "CREATE TRIGGER docs_ai AFTER INSERT ON docs BEGIN "
        "INSERT INTO docs_fts(rowid, doc_id, title, body) "
        "VALUES (new.rowid, new.doc_id, new.title, new.body); END"
    )
    conn.execute(
        "CREATE TABLE questions(qid TEXT PRIMARY KEY, text TEXT, answer TEXT, path TEXT, doc_ids TEXT)"
    )
    conn.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")


def question_record(q: Question) -> dict:
    return asdict(q)
