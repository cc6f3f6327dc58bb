"""`dsv32 serve` / `dsv32 chat` argument errors: one clear line, exit status 2, no traceback."""

import json

import pytest

from dsv32.cli import main


@pytest.mark.parametrize("group", ["serve", "chat"])
def test_missing_checkpoint_is_one_clear_line(group, tmp_path, capsys):
    assert main([group, "--checkpoint", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint directory not found" in err and "nowhere" in err


def test_checkpoint_without_tokenizer_says_what_is_missing(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert main(["chat", "--checkpoint", str(tmp_path)]) == 2
    assert "has no tokenizer.json" in capsys.readouterr().err


def test_bad_tools_file_and_port(tmp_path, capsys):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps({"not": "a list"}))
    assert main(["chat", "--checkpoint", str(tmp_path), "--tools", str(tools)]) == 2
    assert "expected a JSON list of tools" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(tmp_path), "--port", "70000"]) == 2
    assert "--port must be in 1..65535" in capsys.readouterr().err
