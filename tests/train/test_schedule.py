"""Learning-rate schedules against hand-computed values; parameter groups; config overrides."""

from __future__ import annotations

import math

import pytest
import torch

from dsv32.config import preset
from dsv32.model.transformer import build_model
from dsv32.train.config import TrainConfig, apply_overrides, load_stage_config
from dsv32.train.optim import lr_factor, param_groups


def test_cosine_by_hand():
    cfg = TrainConfig(steps=10, warmup_steps=2, min_lr_ratio=0.1, schedule="cosine")
    got = [lr_factor(s, cfg) for s in range(10)]
    # warm-up: 1/2, 2/2; then p = (s - 2) / 8
    expected = [0.5, 1.0] + [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 10)]
    assert got == pytest.approx(expected, abs=1e-12)
    assert got[2] == pytest.approx(1.0) and got[6] == pytest.approx(0.55)


def test_wsd_by_hand():
    cfg = TrainConfig(steps=10, warmup_steps=2, min_lr_ratio=0.0, schedule="wsd", decay_steps=4)
    got = [lr_factor(s, cfg) for s in range(10)]
    assert got == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0])


def test_constant_and_no_warmup():
    cfg = TrainConfig(steps=5, warmup_steps=0, schedule="constant")
    assert [lr_factor(s, cfg) for s in range(5)] == [1.0] * 5


def test_param_groups_split_decay_and_indexer():
    model = build_model(preset("tiny"))
    groups = {
        g["name"]: g for g in param_groups(model, TrainConfig(lr=1e-3, indexer_lr=5e-3, weight_decay=0.1))
    }
    assert set(groups) == {"decay", "no_decay", "indexer_decay", "indexer_no_decay"}
    assert "model.embed_tokens.weight" in groups["no_decay"]["param_names"]
    assert "model.norm.weight" in groups["no_decay"]["param_names"]
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    assert groups["indexer_decay"]["base_lr"] == 5e-3 and groups["decay"]["base_lr"] == 1e-3
    n_total = sum(len(g["params"]) for g in groups.values())
    assert n_total == len(list(model.parameters()))
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        param_groups(model, TrainConfig())
    torch.manual_seed(0)


def test_overrides_and_recipe_style_files(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(
        '{"common": {"lr": 0.01, "data": {"max_files": 50}}, "stages": {"dsa-warmup": {"lr": 0.002}}}'
    )
    cfg = load_stage_config(path, "dsa-warmup", ["steps=7", "data.vocab_size=1024", 'autocast="bf16"'])
    assert (cfg.stage, cfg.lr, cfg.steps, cfg.autocast) == ("dsa-warmup", 0.002, 7, "bf16")
    assert (cfg.data.max_files, cfg.data.vocab_size) == (50, 1024)
    with pytest.raises(ValueError, match="no stage"):
        load_stage_config(path, "pretrain")
    with pytest.raises(ValueError, match="unknown keys"):
        load_stage_config(None, "pretrain", ["nonsense=1"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, ["lr"])
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
