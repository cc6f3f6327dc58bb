# ruff: noqa: E501 - templates and generated source are data; their lines stay whole
"""A scripted OpenAI-compatible server on 127.0.0.1 that answers every chat completion with a
fixed category module (as a model would), for testing model-driven synthesis."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LENDING = '''
SCHEMA = """CREATE TABLE books(id INTEGER PRIMARY KEY, title TEXT, author TEXT, copies INT);
CREATE TABLE loans(id INTEGER PRIMARY KEY AUTOINCREMENT, book_id INT, member TEXT);"""
AUTHORS = ["Lu Xun", "Mo Yan", "Ba Jin"]

def build(db, rng):
    for i in range(9):
        db.execute("INSERT INTO books(title, author, copies) VALUES (?,?,?)",
                   (f"Book {i}-{rng.randint(1, 99)}", AUTHORS[i % 3], rng.randint(1, 3) if i < 6 else 0))

OBJ = lambda **p: {"type": "object", "properties": p, "required": list(p)}
TOOLS = [
    {"name": "search_books", "description": "Books by an author", "parameters": OBJ(author={"type": "string"}), "level": 1},
    {"name": "lend_book", "description": "Lend a book to a member", "level": 1,
     "parameters": OBJ(book_id={"type": "integer"}, member={"type": "string"})},
    {"name": "member_loans", "description": "Loans of a member", "parameters": OBJ(member={"type": "string"}), "level": 2},
]

def tool_search_books(db, author):
    return [{"id": r[0], "title": r[1], "copies": r[2]} for r in db.execute("SELECT id, title, copies FROM books WHERE author=?", (author,))]

def tool_lend_book(db, book_id, member):
    row = db.execute("SELECT copies FROM books WHERE id=?", (book_id,)).fetchone()
    if not row or row[0] < 1:
        raise ValueError("no free copy")
    db.execute("UPDATE books SET copies = copies - 1 WHERE id=?", (book_id,))
    return db.execute("INSERT INTO loans(book_id, member) VALUES (?,?)", (book_id, member)).lastrowid

def tool_member_loans(db, member):
    return [r[0] for r in db.execute("SELECT book_id FROM loans WHERE member=?", (member,))]

def make_task(db, rng, level):
    if level > 2:
        return None
    author = rng.choice(AUTHORS)
    return {"instruction": f"Lend Ann {level} different book(s) by {author} that have a free copy; answer with the ids.",
            "constraints": ["lent", "author", "count"], "author": author, "member": "Ann", "n": level}

def solve(call, p):
    books = [b for b in call("search_books", author=p["author"]) if b["copies"] > 0][: p["n"]]
    for b in books:
        call("lend_book", book_id=b["id"], member=p["member"])
    if p["n"] > 1:
        call("member_loans", member=p["member"])
    return {"book_ids": [b["id"] for b in books]}

def verify(db, p, answer):
    ids = answer.get("book_ids") if isinstance(answer, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        return [["format", False, "answer must be {book_ids: [int]}"]]
    lent = {r[0] for r in db.execute("SELECT book_id FROM loans WHERE member=?", (p["member"],))}
    authors = {r[0]: r[1] for r in db.execute("SELECT id, author FROM books")}
    return [["lent", all(i in lent for i in ids), "not all lent"],
            ["author", all(authors.get(i) == p["author"] for i in ids), "wrong author"],
            ["count", len(ids) == len(set(ids)) == p["n"], "wrong number of books"]]

def mutate(db, p, answer, rng):
    ids = answer["book_ids"]
    other = [r[0] for r in db.execute("SELECT id FROM books WHERE author != ?", (p["author"],))]
    return [["count", {"book_ids": ids + ids[:1]}], ["count", {"book_ids": []}], ["lent", {"book_ids": ids[:-1] + [999]}],
            ["author", {"book_ids": ids[:-1] + [other[0]]}], ["count", {"book_ids": ids + ids}], ["format", {"ids": ids}]]

def baseline(call, p, rng):
    books = call("search_books", author=p["author"])
    rng.shuffle(books)
    picked = []
    for b in books[: p["n"]]:
        try:
            call("lend_book", book_id=b["id"], member=p["member"])
            picked.append(b["id"])
        except ValueError:
            pass
    return {"book_ids": picked}
'''

# the same module with a verifier that accepts anything: the gates must reject its tasks
LAX = LENDING.replace('    return [["lent", all(i in lent', '    return [["lent", True or all(i in lent')
LAX = LAX.replace('["author", all(authors', '["author", True or all(authors').replace(
    '["count", len(ids)', '["count", True or len(set(ids))'
)


class ScriptedModel:
    """Serve POST /v1/chat/completions with `module` in a python block; counts requests."""

    def __init__(self, module: str):
        self.module, self.requests = module, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                reply = {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": f"```python\n{outer.module}```"},
                        }
                    ],
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class ScriptedAgentModel(ScriptedModel):
    """A tool-calling model: first turn calls `tool` (with reasoning_content), then answers `final`."""

    def __init__(self, tool: str, arguments: dict, final: str):
        super().__init__("")
        outer = self

        def reply(body):
            seen_tool = any(m.get("role") == "tool" for m in body["messages"])
            if seen_tool:
                return {"role": "assistant", "content": final}
            call = {
                "id": "call_0",
                "type": "function",
                "function": {"name": tool, "arguments": json.dumps(arguments)},
            }
            return {
                "role": "assistant",
                "content": "",
                "reasoning_content": "look it up",
                "tool_calls": [call],
            }

        handler = self.server.RequestHandlerClass

        class AgentHandler(handler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                message = reply(body)
                finish = "tool_calls" if message.get("tool_calls") else "stop"
                data = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server.RequestHandlerClass = AgentHandler
