"""Code agent: a small generated Python package with an injected bug and a failing test.

The database holds the correct repository (`files(path, content)`); a task's `setup` SQL injects
its bug(s) into the episode's copy. Tools list, read, search and edit files and run the unit
tests inside `dsv32.sandbox` (no network, CPU/memory/file limits, writes confined to a temporary
directory). Verified by the test suite: every test passes, test files are unchanged and no file
was deleted. Ladder: L1 one bug in the function a failing test names; L2 the bug sits in a helper
in another module (adds `search_code`); L3 two bugs in different modules.
"""

from __future__ import annotations

import json
import random

from dsv32.envs.categories.base import Category, Mutation, attends, check, rows
from dsv32.envs.categories.code_templates import BUG_RULES, HELPERS, NAME_PARTS, TEMPLATES
from dsv32.envs.tools import S, SandboxRunner, ToolCaller, ToolError, tool

RUN_TESTS = """
import json, sys, unittest
suite = unittest.defaultTestLoader.discover("tests", top_level_dir=".")
result = unittest.TextTestRunner(stream=sys.stdout, verbosity=1).run(suite)
failed = sorted({t.id().split(".")[-1] for t, _ in result.failures + result.errors})
print("@@RESULT " + json.dumps({"passed": result.wasSuccessful(), "ran": result.testsRun, "failed": failed}))
"""


def _files(db) -> dict[str, str]:
    return {r["path"]: r["content"] for r in rows(db, "SELECT path, content FROM files ORDER BY path")}


def run_suite(runner: SandboxRunner, files: dict[str, str]) -> dict:
    result = runner.python(RUN_TESTS, files)
    for line in result.stdout.splitlines():
        if line.startswith("@@RESULT "):
            out = json.loads(line[len("@@RESULT ") :])
            out["output"] = result.stdout[-1500:]
            return out
    reason = result.killed_reason or "test run crashed"
    return {"passed": False, "ran": 0, "failed": [], "output": f"{reason}\n{result.stderr[-1500:]}"}


@tool("list_files", "Paths of all files in the repository.")
def list_files(ctx):
    return [r["path"] for r in rows(ctx.db, "SELECT path FROM files ORDER BY path")]


@tool("read_file", "The content of a file.", path=S("file path"))
def read_file(ctx, path):
    found = rows(ctx.db, "SELECT content FROM files WHERE path=?", (path,))
    if not found:
        raise ToolError(f"no file {path!r}")
    return {"path": path, "content": found[0]["content"]}


@tool(
    "edit_file",
    "Replace the one occurrence of `old` with `new` in a file.",
    True,
    path=S("file path"),
    old=S("exact text to replace (must occur once)"),
    new=S("replacement text"),
)
def edit_file(ctx, path, old, new):
    content = read_file.fn(ctx, path)["content"]
    if content.count(old) != 1:
        raise ToolError(f"`old` occurs {content.count(old)} times in {path}; it must occur exactly once")
    ctx.db.execute("UPDATE files SET content=? WHERE path=?", (content.replace(old, new), path))
    return {"path": path, "edited": True}


@tool("run_tests", "Run the unit tests in a sandbox; returns pass/fail, failing test names and output.")
def run_tests(ctx):
    return run_suite(ctx.sandbox, _files(ctx.db))


@tool("search_code", "Lines containing a text, with file and line number.", pattern=S("text to find"))
def search_code(ctx, pattern):
    hits = []
    for path, content in _files(ctx.db).items():
        hits += [
            {"path": path, "line": i, "text": t}
            for i, t in enumerate(content.splitlines(), 1)
            if pattern in t
        ]
    return hits[:50]


class CodeAgent(Category):
    name = "code_agent"
    summary = "software-repository"
    max_level = 3
    uses_sandbox = True
    base_tools = ("list_files", "read_file", "edit_file", "run_tests")
    answer_format = "a one-line summary of the fix (the repository state is what is graded)"

    def __init__(self):
        self.runner = SandboxRunner()

    def library(self):
        return [list_files, read_file, edit_file, run_tests, search_code]

    def build_database(self, db, rng):
        db.execute("CREATE TABLE files(path TEXT PRIMARY KEY, content TEXT)")
        pkg = f"{rng.choice(['acme', 'tidy', 'quick', 'plain', 'solid'])}_{rng.choice(NAME_PARTS)}"
        helper_names = {k: f"_{k}_{rng.randrange(10, 99)}" for k in HELPERS}
        chosen = rng.sample(TEMPLATES, rng.randint(4, 6))
        modules = [f"{pkg}/{part}.py" for part in rng.sample(NAME_PARTS, rng.randint(2, 3))]
        files = {
            f"{pkg}/__init__.py": "",
            "tests/__init__.py": "",
            "README.md": f"# {pkg}\n\nSmall utilities.\n",
            f"{pkg}/helpers.py": "\n\n".join(src.format(h=helper_names[k]) for k, src in HELPERS.items()),
        }
        fmt = {f"h_{k}": v for k, v in helper_names.items()}
        for i, (tname, src, tests) in enumerate(chosen):
            mod = modules[i % len(modules)]
            fname = f"{rng.choice(NAME_PARTS)}_{tname}"
            header = (
                f"from {pkg}.helpers import " + ", ".join(sorted(helper_names.values())) + "  # noqa: F401\n"
            )
            files[mod] = files.get(mod, header) + "\n\n" + src.format(f=fname, **fmt)
            test_path = f"tests/test_{mod.split('/')[-1]}"
            base = files.get(
                test_path,
                f"import unittest\n\nfrom {mod[:-3].replace('/', '.')} import *  # noqa: F403\n\n\n"
                "class TestModule(unittest.TestCase):\n",
            )
            body = "".join(f"        {t.format(f=fname)}\n" for t in tests)
            files[test_path] = base + f"    def test_{fname}(self):\n{body}\n"
        db.executemany("INSERT INTO files VALUES (?,?)", sorted(files.items()))
        return f"package {pkg}: {len(chosen)} functions in {len(modules)} modules with unit tests"

    def _bug_sites(self, db, in_helpers: bool):
        out = []
        for path, content in _files(db).items():
            if not path.endswith(".py") or path.startswith("tests/") or path.endswith("__init__.py"):
                continue
            if (path.endswith("helpers.py")) != in_helpers:
                continue
            for i, line in enumerate(content.splitlines()):
                for find, repl in BUG_RULES:
                    buggy = line.replace(find, repl)
                    if (
                        find in line
                        and line.count(find) == 1
                        and content.count(line) == 1
                        and buggy not in content
                    ):
                        out.append(
                            {"path": path, "line": i, "original": line, "buggy": line.replace(find, repl)}
                        )
        return out

    def _with_bugs(self, db, bugs, rng, level, constraints):
        files = _files(db)
        setup = []
        for bug in bugs:
            files[bug["path"]] = files[bug["path"]].replace(bug["original"], bug["buggy"])
        for path in sorted({b["path"] for b in bugs}):
            setup.append(["UPDATE files SET content=? WHERE path=?", [files[path], path]])
        if run_suite(self.runner, files)["passed"]:
            return None  # the tests do not catch this bug; the loop will regenerate
        return {"level": level, "bugs": bugs, "setup": setup, "constraints": constraints}

    def initial_task(self, db, rng):
        sites = self._bug_sites(db, in_helpers=False)
        for _ in range(4 if sites else 0):
            found = self._with_bugs(
                db, [rng.choice(sites)], rng, 1, ["tests_pass", "tests_untouched", "files_intact"]
            )
            if found:
                return found
        return None

    def harden(self, db, p, rng):
        level = p["level"] + 1
        a, b = self._bug_sites(db, in_helpers=False), self._bug_sites(db, in_helpers=True)
        for _ in range(4):  # a few draws until the tests catch the bug
            if level == 2 and b:
                found = self._with_bugs(db, [rng.choice(b)], rng, 2, p["constraints"] + ["helper"])
            elif level == 3 and a and b:
                found = self._with_bugs(
                    db, [rng.choice(a), rng.choice(b)], rng, 3, p["constraints"] + ["two_bugs"]
                )
            else:
                return None
            if found:
                return found
        return None

    def instruction(self, p):
        n = "Some tests fail" if len(p["bugs"]) > 1 else "A test fails"
        return (
            f"{n} in this repository. Find and fix the bug(s) in the package code so that all tests pass. "
            "Do not modify or delete any test file and do not delete files."
        )

    def solve(self, call: ToolCaller, p):
        call.note("First I run the tests to see which fail.")
        before = call("run_tests")
        for bug in p["bugs"]:
            if bug["path"].endswith("helpers.py"):
                helper = bug["original"]
                call.note(
                    f"The failing test {before['failed']} calls a helper; I search where the faulty logic lives."  # noqa: E501
                )
                call("search_code", pattern=helper.strip())
            call.note(f"I read {bug['path']} to inspect the suspicious line.")
            call("read_file", path=bug["path"])
            call.note(
                f"Line {bug['line'] + 1} reads `{bug['buggy'].strip()}`; it should be `{bug['original'].strip()}`."  # noqa: E501
            )
            call("edit_file", path=bug["path"], old=bug["buggy"], new=bug["original"])
        call.note("Now I rerun the tests to confirm the fix.")
        after = call("run_tests")
        return f"Fixed {len(p['bugs'])} bug(s); tests pass" if after["passed"] else None

    def verify(self, initial, final, p, answer):
        checks = []
        before, after = _files(initial), _files(final)
        changed = [t for t in before if t.startswith("tests/") and after.get(t) != before[t]]
        check(checks, "tests_untouched", not changed, f"test files changed or removed: {changed}")
        gone = [t for t in before if t not in after]
        check(checks, "files_intact", not gone, f"files deleted: {gone}")
        if changed or gone:
            return checks  # already rejected; skip the sandbox run
        result = run_suite(self.runner, after)
        check(
            checks,
            "tests_pass",
            result["passed"],
            f"tests fail: {result['failed'] or result['output'][-300:]}",
        )
        return checks

    def mutations(self, initial, p, answer, rng):
        files = _files(initial)
        tests = sorted(t for t in files if t.startswith("tests/test_"))
        code = sorted(
            t
            for t in files
            if t.endswith(".py") and not t.startswith("tests/") and not t.endswith("__init__.py")
        )
        upd = "UPDATE files SET content=? WHERE path=?"
        out = [Mutation("tests_pass", answer, [(sql, tuple(args)) for sql, args in p["setup"]])]
        for bug in p["bugs"][1:]:
            out.append(
                Mutation(
                    "tests_pass",
                    answer,
                    [(upd, (files[bug["path"]].replace(bug["original"], bug["buggy"]), bug["path"]))],
                )
            )
        out.append(Mutation("tests_pass", answer, [(upd, (files[code[0]] + "\ndef broken(:\n", code[0]))]))
        out.append(
            Mutation(
                "tests_pass",
                answer,
                [(upd, (files[code[-1]] + "\nraise RuntimeError('import-time failure')\n", code[-1]))],
            )
        )
        first = tests[0]
        line = next(ln for ln in files[first].splitlines() if "self.assert" in ln)
        out.append(
            Mutation(
                "tests_untouched",
                answer,
                [(upd, (files[first].replace(line, "        self.assertTrue(True)"), first))],
            )
        )
        out.append(
            Mutation("tests_untouched", answer, [(upd, (files[tests[-1]] + "\n# edited\n", tests[-1]))])
        )
        out.append(Mutation("files_intact", answer, [("DELETE FROM files WHERE path=?", ("README.md",))]))
        return out

    def baseline(self, call: ToolCaller, p, rng: random.Random):
        """Find the function a failing test names, flip one plausible operator in its body (and,
        when attending to helpers, in the helpers it calls); no checking or backtracking."""
        att = attends(rng, p)
        for _ in range(len(p["bugs"])):
            result = call("run_tests")
            if result["passed"] or not result["failed"]:
                break
            func = result["failed"][0].removeprefix("test_")
            sources = {
                x: call("read_file", path=x)["content"]
                for x in call("list_files")
                if x.endswith(".py") and not x.startswith("tests/")
            }
            body = _function_lines(sources, func)
            if "helper" in att:
                for name in {
                    w.split("(")[0] for _, ln in body for w in ln.split() if w.startswith("_") and "(" in w
                }:
                    body += _function_lines(sources, name)
            fixes = [
                (path, ln, ln.replace(repl, find))
                for path, ln in body
                for find, repl in BUG_RULES
                if repl in ln and sources[path].count(ln) == 1
            ]
            if not fixes:
                break
            path, old, new = rng.choice(fixes)
            try:
                call("edit_file", path=path, old=old, new=new)
            except ToolError:
                continue
        return "attempted a fix"


def _function_lines(sources: dict[str, str], func: str) -> list[tuple[str, str]]:
    """(path, line) for the body of `def func(` wherever it is defined."""
    out = []
    for path, content in sources.items():
        inside = False
        for line in content.splitlines():
            if line.startswith("def "):
                inside = line.startswith(f"def {func}(")
            elif inside and line.strip():
                out.append((path, line))
    return out
