import json

import pytest

from dsv32.data.io import atomic_write, atomic_write_json, atomic_write_jsonl


def test_json_and_jsonl_round_trip_with_dumps_options(tmp_path):
    value = {"b": [1, 2.5, None], "a": "é"}
    path = atomic_write_json(tmp_path / "sub" / "v.json", value, ensure_ascii=False, sort_keys=True)
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == value and text.endswith("}\n")
    assert text.index('"a"') < text.index('"b"') and "é" in text  # both options reached json.dumps
    records = [{"i": i, "s": "x" * i} for i in range(5)]
    lines = atomic_write_jsonl(tmp_path / "r.jsonl", iter(records)).read_text().splitlines()
    assert [json.loads(line) for line in lines] == records


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write_json(tmp_path / "v.json", {"old": True})

    def broken(f):
        f.write(b'{"new": ')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["v.json"]
