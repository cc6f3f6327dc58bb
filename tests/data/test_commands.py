"""`dsv32 data ...` verbs end to end on a small corpus slice."""

from __future__ import annotations

import json
import re

from dsv32.cli import main
from dsv32.data.shards import load_shards
from dsv32.tokenizer import Tokenizer


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_data_verbs(tmp_path, capsys):
    corpus = ["--max-files", "60"]
    assert main(["data", "corpus", *corpus]) == 0
    stats = _json_lines(capsys.readouterr().out)[0]
    assert stats["train"]["files"] + stats["val"]["files"] == 60

    assert main(["data", "tokenizer", *corpus, "--vocab-size", "1000", "--out", str(tmp_path / "tok")]) == 0
    info = _json_lines(capsys.readouterr().out)[0]
    tok = Tokenizer.load(tmp_path / "tok")
    assert info["vocab_size"] == tok.vocab_size == 1000
    assert info["fingerprint"] == tok.fingerprint()[:16]
    split = ["data", "tokenizer", *corpus, "--vocab-size", "1000", "--split-digits"]
    split += ["--out", str(tmp_path / "d")]
    assert main(split) == 0
    capsys.readouterr()
    digits = Tokenizer.load(tmp_path / "d")
    assert [digits.decode([i]) for i in digits.encode("2048")] == list("2048")

    args = ["data", "shards", *corpus, "--tokenizer", str(tmp_path / "tok"), "--cache", str(tmp_path / "c")]
    assert main([*args, "--split", "train"]) == 0
    built = _json_lines(capsys.readouterr().out)[0]
    assert load_shards(built["directory"], tokenizer=tok).n_tokens == built["tokens"] > 0

    args = [
        "data",
        "longctx",
        "--tokenizer",
        str(tmp_path / "tok"),
        "--task",
        "var_track",
        "--context-len",
        "300",
    ]
    assert main([*args, "--n", "2", "--show"]) == 0
    out = capsys.readouterr().out
    records = _json_lines(out)
    assert [r["tokens"] for r in records] == [300, 300]
    assert re.search(rf"The value of VAR [A-Z]+ is {records[0]['answer']}\n", out)


def test_data_errors_are_one_line(tmp_path, capsys):
    args = ["data", "longctx", "--tokenizer", str(tmp_path / "missing"), "--task", "passkey"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dsv32 data: error: tokenizer file not found") and "\n" not in err
