"""`dsv32 eval pass-at-1`: checkpoints scored side by side on the recipe's held-out tasks."""

import json

from dsv32.checkpoint import save_checkpoint
from dsv32.cli import main
from dsv32.config import preset
from dsv32.model.transformer import build_model
from dsv32.rl.evaluate import heldout_tasks, pass_at_1
from dsv32.rl.recipe import load_init
from dsv32.tokenizer import train_bpe


def _checkpoints(tmp_path):
    tok = train_bpe(["What is 12 + 30? How many a in a b a? Sort ascending: 3 1 2"] * 4, 300)
    config = preset("tiny").replace(vocab_size=tok.vocab_size)
    out = []
    for seed in (0, 1):
        directory = save_checkpoint(build_model(config, seed=seed), config, tmp_path / f"m{seed}")
        tok.save(directory / "tokenizer.json")
        out.append(directory)
    return out


def test_columns_equal_direct_evaluation_of_each_checkpoint(tmp_path):
    a, b = _checkpoints(tmp_path)
    args = [
        "eval",
        "pass-at-1",
        "--checkpoint",
        str(a),
        "--checkpoint",
        str(b),
        "--label",
        "a",
        "--label",
        "b",
    ]
    args += ["--reasoning", "4", "--calc", "1", "--max-new-tokens", "8", "--json", str(tmp_path / "r.json")]
    assert main(args) == 0
    got = json.loads((tmp_path / "r.json").read_text())
    reasoning, calc = heldout_tasks(4, 1)
    for label, directory in (("a", a), ("b", b)):
        model, tok = load_init(directory)
        assert got[label] == pass_at_1(model, tok, reasoning, calc, 8)


def test_each_column_is_its_checkpoint_on_the_recipe_tasks(tmp_path, monkeypatch, capsys):
    """Wiring, with pass@1 replaced by a spy that scores a model by its own weights."""
    a, b = _checkpoints(tmp_path)
    calls = []

    def spy(model, tok, reasoning, calc, max_new_tokens, attention, env):
        calls.append((reasoning, calc, max_new_tokens, attention, env))
        return {"reasoning": float(model.lm_head.weight.detach().sum())}

    monkeypatch.setattr("dsv32.rl.evaluate.pass_at_1", spy)
    args = ["eval", "pass-at-1", "--checkpoint", str(b), "--checkpoint", str(a), "--seed", "3"]
    assert main([*args, "--reasoning", "5", "--calc", "2", "--attention", "sparse"]) == 0
    want = [float(load_init(d)[0].lm_head.weight.detach().sum()) for d in (b, a)]
    assert want[0] != want[1]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "m1": {"reasoning": want[0]},
        "m0": {"reasoning": want[1]},
    }
    reasoning, calc = heldout_tasks(5, 2, seed=3)
    assert calls == [(reasoning, calc, 96, "sparse", [])] * 2
    assert all(t.split == "heldout" for t in reasoning + calc)


def test_bad_arguments_are_refused(tmp_path, capsys):
    a, _ = _checkpoints(tmp_path)
    base = ["eval", "pass-at-1", "--checkpoint", str(a)]
    assert main([*base, "--checkpoint", str(a)]) == 2  # two columns named "m0"
    assert "labels must differ" in capsys.readouterr().err
    assert main([*base, "--reasoning", "0", "--calc", "0"]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert main(["eval", "pass-at-1", "--checkpoint", str(tmp_path / "missing")]) == 2
