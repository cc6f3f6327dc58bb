"""`dsv32 bench all`: every registered benchmark runs, its last JSON line lands in one table, and
one failing benchmark does not lose the others' results."""

import json
import sys
import types

from dsv32.bench import commands
from dsv32.cli import main


def _fake(name: str, fail: bool):
    module = types.ModuleType(name)

    def add_arguments(p):
        p.add_argument("--out")
        p.add_argument("--quick", action="store_true")

    def run(args):
        if fail:
            raise RuntimeError("no transformers here")
        print("a table line")
        print(json.dumps({"ratio": 2.5, "quick": args.quick}))
        return 0

    module.add_arguments, module.run = add_arguments, run
    return module


def test_bench_all_collects_every_result(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fake_ok", _fake("fake_ok", False))
    monkeypatch.setitem(sys.modules, "fake_bad", _fake("fake_bad", True))
    monkeypatch.setattr(commands, "BENCHMARKS", {"good": ("fake_ok", "ok"), "bad": ("fake_bad", "fails")})
    assert main(["bench", "all", "--quick", "--out", str(tmp_path)]) == 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["good"] == {"status": "ok", "ratio": 2.5, "quick": True}
    assert results["bad"]["status"] == "failed: RuntimeError: no transformers here"
    md = (tmp_path / "results.md").read_text()
    assert "| good | ok |" in md and "| bad | failed" in md
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "good": "ok",
        "bad": results["bad"]["status"],
    }
    assert main(["bench", "all", "--only", "nope", "--out", str(tmp_path)]) == 2
