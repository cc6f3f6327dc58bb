"""The headline recipe end to end at toy size, its parity arithmetic, and the stage commands."""

from __future__ import annotations

import json

import pytest

from dsv32.cli import main
from dsv32.train.recipe import (
    curriculum_runs,
    dense_gate,
    load_recipe,
    parity,
    recipe_runs,
    run_recipe,
    stage_config,
)


def _fast_overrides(data_cfg) -> list[str]:
    return [
        "common.seq_len=128", "common.batch_size=2", 'common.data.tasks=["passkey"]',
        f"common.data.max_files={data_cfg.max_files}",
        f"common.data.cache_dir={json.dumps(data_cfg.cache_dir)}",
        "common.data.text_rows=8", "common.data.task_samples=4", "common.data.val_rows=2",
        "stages.pretrain.steps=2", "stages.dsa-warmup.steps=2", "stages.dsa-warmup.recall_every=1",
        "stages.dsa-warmup.index_topk=16", "stages.dsa-sparse.steps=2", "stages.dsa-sparse.index_topk=16",
        "eval.n_samples=2", "eval.index_topk=16", "eval.extra=true",
    ]  # fmt: skip


@pytest.mark.slow
def test_tiny_recipe_end_to_end(data_cfg, tmp_path):
    out = tmp_path / "recipe"
    curriculum = 'curriculum={"seq_len": 112, "batch_size": 3, "steps": 2}'
    summary = run_recipe("tiny", out, [*_fast_overrides(data_cfg), curriculum], progress=False)
    results = summary["results"]
    assert set(results) == {"dense", "sparse", "sparse_no_warmup", "warmup_only_sparse", "no_training_sparse"}
    assert results["dense"]["attention"] == "dense" and results["sparse"]["index_topk"] == 16
    assert summary["parity"] == parity(results, "dense", "sparse")
    assert [r["step"] for r in summary["warmup_recall"]] == [0, 1, 2]
    for name in ("losses.png", "recall.png", "accuracy.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "results.json").read_text())["parity"] == summary["parity"]
    assert "| metric | dense | sparse |" in (out / "results.md").read_text()
    for run in ("pretrain_short", "pretrain", "warmup", "sparse", "sparse_no_warmup"):
        assert (out / run / "config.json").is_file() and (out / run / "train_config.json").is_file()
    assert json.loads((out / "pretrain_short" / "train_config.json").read_text())["seq_len"] == 112
    runs = {"pretrain_short", "pretrain", "warmup", "sparse", "sparse_no_warmup"}
    assert set(summary["stage_seconds"]) == runs | {"eval"}


def test_curriculum_adds_a_short_pretraining_run_that_pretraining_starts_from(tmp_path):
    spec = load_recipe("tiny")
    assert [r[0] for r in recipe_runs(spec)] == ["pretrain", "warmup", "sparse", "sparse_no_warmup"]
    curriculum = '{"seq_len": 128, "batch_size": 32, "steps": 7, "data.n_pairs": 2}'
    spec = load_recipe("small", [f"curriculum={curriculum}"])
    runs = recipe_runs(spec, ablation=False)
    assert runs[:2] == [("pretrain_short", "pretrain", None), ("pretrain", "pretrain", "pretrain_short")]
    assert [r[0] for r in runs] == ["pretrain_short", "pretrain", "warmup", "sparse"]
    short = stage_config(spec, "pretrain_short", "pretrain", tmp_path)
    main_cfg = stage_config(spec, "pretrain", "pretrain", tmp_path)
    assert (short.seq_len, short.batch_size, short.steps, short.data.n_pairs) == (128, 32, 7, 2)
    own_steps = spec["stages"]["pretrain"]["steps"]  # the main run keeps the stage's own settings
    assert own_steps != 7
    assert (main_cfg.seq_len, main_cfg.steps, main_cfg.data.n_pairs) == (2048, own_steps, 8)
    assert short.data.tasks == main_cfg.data.tasks and short.lr == main_cfg.lr  # the rest is the stage's


def test_curriculum_list_runs_in_order_each_from_the_one_before(tmp_path):
    phases = '[{"seq_len": 96, "steps": 5, "data.n_pairs": 2}, {"seq_len": 512, "steps": 3}]'
    spec = load_recipe("small", [f"curriculum={phases}"])
    runs = recipe_runs(spec, ablation=False)
    assert runs[:3] == [
        ("pretrain_short_1", "pretrain", None),
        ("pretrain_short_2", "pretrain", "pretrain_short_1"),
        ("pretrain", "pretrain", "pretrain_short_2"),
    ]
    first = stage_config(spec, "pretrain_short_1", "pretrain", tmp_path)
    second = stage_config(spec, "pretrain_short_2", "pretrain", tmp_path)
    assert (first.seq_len, first.steps, first.data.n_pairs) == (96, 5, 2)
    assert (second.seq_len, second.steps, second.data.n_pairs) == (512, 3, 8)  # only its own overrides
    with pytest.raises(ValueError, match="curriculum"):
        recipe_runs(load_recipe("small", ['curriculum=[{"steps": 1}, 3]']))


def test_small_recipe_climbs_context_lengths_then_pretrains_at_2048(tmp_path):
    spec = load_recipe("small")
    names = list(curriculum_runs(spec))
    configs = [stage_config(spec, n, "pretrain", tmp_path) for n in [*names, "pretrain"]]
    lengths = [c.seq_len for c in configs]
    assert lengths == sorted(lengths) and lengths[-1] == 2048 and len(lengths) > 2
    assert all(c.model_overrides["tie_word_embeddings"] for c in configs)
    assert [c.data.text_rows for c in configs[:-1]] == [0] * len(names)  # tasks only while climbing
    warm = stage_config(spec, "warmup", "dsa-warmup", tmp_path)
    assert warm.model_overrides == configs[-1].model_overrides and warm.index_topk == 2048 // 8


def test_parity_and_gate_by_hand():
    d = {"accuracy": {"passkey": {"257": 0.95}, "kv_recall": {"257": 0.60}}, "val_loss": 2.0}
    s = {"accuracy": {"passkey": {"257": 0.94}, "kv_recall": {"257": 0.57}}, "val_loss": 2.03}
    p = parity({"d": d, "s": s}, "d", "s")
    assert p["accuracy_delta_points"] == {"passkey@257": -1.0, "kv_recall@257": -3.0}
    assert p["accuracy_within_2_points"] is False
    assert p["val_loss_relative"] == pytest.approx(0.015) and p["val_loss_within_2_percent"] is True
    gate = dense_gate(d)
    assert gate["passkey_at_least_90"] and gate["kv_recall_at_least_50"]
    assert not dense_gate({"accuracy": {"passkey": {"257": 0.5}}})["passkey_at_least_90"]


def test_recipe_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="known names"):
        load_recipe("nope")
    with pytest.raises(ValueError, match="stages"):
        load_recipe({"common": {}})
    assert load_recipe("tiny", ["stages.pretrain.steps=3"])["stages"]["pretrain"]["steps"] == 3


def test_stage_commands_chain(data_cfg, tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(
        json.dumps({"seq_len": 128, "batch_size": 2, "warmup_steps": 0, "data": data_cfg.__dict__})
    )
    pre, wu = tmp_path / "pre", tmp_path / "wu"
    assert main(["train", "pretrain", "--config", str(cfg), "--out", str(pre), "--steps", "1"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["step"] == 1 and line["steps_run"] == 1
    assert main(["train", "dsa-warmup", "--config", str(cfg), "--out", str(wu), "--steps", "1",
                 "--init-from", str(pre), "--set", "index_topk=16", "--set", "lr=0.01"]) == 0  # fmt: skip
    saved = json.loads((wu / "train_config.json").read_text())
    assert (saved["stage"], saved["lr"], saved["index_topk"]) == ("dsa-warmup", 0.01, 16)
    assert "indexer_kl" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # a DSA stage with nothing to start from is a usage error, as is an unknown key
    assert main(["train", "dsa-sparse", "--out", str(tmp_path / "x")]) == 2
    assert main(["train", "pretrain", "--out", str(tmp_path / "y"), "--set", "nope=1"]) == 2
