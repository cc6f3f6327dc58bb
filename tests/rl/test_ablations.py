"""The ablation driver: each run switches exactly its fix, every run starts from the same SFT
weights, curves are read from the GRPO records, plots and summary are written."""

import json

import pytest
import torch

from dsv32.checkpoint import save_checkpoint
from dsv32.config import preset
from dsv32.model.transformer import build_model
from dsv32.rl import ablations
from dsv32.rl.ablations import RUNS, run_config, step_curves
from dsv32.tokenizer import train_bpe


def test_each_run_switches_exactly_its_fix():
    base = run_config("v3.2", steps=2)
    assert (
        base.loss.unbiased_kl and base.loss.opsm and base.loss.keep_routing and base.loss.keep_sampling_mask
    )
    assert base.reward.length_penalty and base.mu == 1 and base.top_p == 1.0
    # the tiny outputs are shorter than the preset's budget, so it is scaled to the run
    assert base.reward.length_budget == base.max_new_tokens // 2
    assert base.reward.length_limit == base.max_new_tokens
    expected = {
        "speciale": {("reward", "length_penalty"): False},
        "no-unbiased-kl": {("loss", "unbiased_kl"): False},
        "no-opsm": {("loss", "opsm"): False, ("mu",): 4},
        "opsm-mu4": {("mu",): 4},
        "no-keep-mask": {("loss", "keep_sampling_mask"): False, ("top_p",): 0.9},
    }
    for name, changes in expected.items():
        cfg = run_config(name, steps=2)
        flat_base, flat = _flatten(base), _flatten(cfg)
        differing = {k for k in flat if flat[k] != flat_base[k]}
        assert differing == set(changes), name
        for key, value in changes.items():
            assert flat[key] == value
    # the no-OPSM run and its control see the same stale rollouts and differ only in the mask
    stale, control = _flatten(run_config("no-opsm", steps=2)), _flatten(run_config("opsm-mu4", steps=2))
    assert {k for k in stale if stale[k] != control[k]} == {("loss", "opsm")}


def _flatten(cfg) -> dict:
    out = {}
    for key, value in cfg.to_dict().items():
        if isinstance(value, dict) and key in ("loss", "reward"):
            out.update({(key, k): v for k, v in value.items()})
        else:
            out[(key,)] = value
    return out


def test_step_curves_from_records():
    history = [
        {"reward/reasoning": 0.5, "reward/calc": -0.5, "length/reasoning": 10.0, "length/calc": 20.0,
         "kl": 0.1, "abs_ratio_dev_before_update": 0.0, "opsm_masked_fraction": 0.25,
         "opsm_would_mask_fraction": 0.25},
        {"reward/reasoning": 1.0, "length/reasoning": 8.0,
         "kl": 0.2, "abs_ratio_dev_before_update": 0.05, "opsm_masked_fraction": 0.0,
         "opsm_would_mask_fraction": 0.5},
    ]  # fmt: skip
    curves = step_curves(history)
    assert curves == {
        "reward": [0.0, 1.0],
        "kl": [0.1, 0.2],
        "abs_ratio_dev_before_update": [0.0, 0.05],
        "opsm_masked_fraction": [0.25, 0.0],
        "opsm_would_mask_fraction": [0.25, 0.5],
        "length": [15.0, 8.0],
    }


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="ablation run"):
        run_config("no-such-fix", steps=1)
    with pytest.raises(FileNotFoundError, match="neither a model checkpoint nor a run directory"):
        ablations.run_ablations(tmp_path, tmp_path / "out")


@pytest.fixture()
def sft_dir(tmp_path):
    tok = train_bpe(["12 + 30 = 42, sorted: 1 2 3"] * 4, 300)
    model = build_model(preset("tiny").replace(vocab_size=tok.vocab_size), seed=0)
    save_checkpoint(model, model.config, tmp_path / "sft")
    tok.save(tmp_path / "sft" / "tokenizer.json")
    return tmp_path / "sft"


def test_every_run_starts_from_the_sft_weights(sft_dir, tmp_path, monkeypatch):
    seen = []

    def fake_grpo(model, tokenizer, cfg, metrics_path=None):
        seen.append((cfg, float(model.lm_head.weight.detach().sum())))
        with torch.no_grad():  # a run that changes the weights must not leak into the next one
            model.lm_head.weight.add_(1.0)
        n = len(seen)
        return [
            {"reward/reasoning": 0.1 * n + s, "length/reasoning": 5.0 + s, "kl": 0.01 * s,
             "abs_ratio_dev_before_update": 0.0, "opsm_masked_fraction": 0.5 * s,
             "opsm_would_mask_fraction": 0.5 * s}
            for s in range(cfg.steps)
        ]  # fmt: skip

    lengths = iter([10.0, 20.0])
    monkeypatch.setattr(ablations, "run_grpo", fake_grpo)
    monkeypatch.setattr(
        ablations, "pass_at_1", lambda *a, **k: {"reasoning": 0.25, "length/reasoning": next(lengths, 7.0)}
    )
    out = tmp_path / "abl"
    summary = ablations.run_ablations(sft_dir, out, steps=2, runs=["v3.2", "speciale", "no-opsm"])
    assert len({weight for _, weight in seen}) == 1
    assert [cfg.mu for cfg, _ in seen] == [1, 1, 4]
    assert summary["runs"]["speciale"]["curves"]["reward"] == [0.2, 1.2]
    assert summary["tradeoff"] == {
        "v3.2": {"accuracy": 0.25, "output_length": 10.0},
        "speciale": {"accuracy": 0.25, "output_length": 20.0},
    }
    written = json.loads((out / "summary.json").read_text())
    assert written["runs"]["no-opsm"]["final"]["opsm_masked_fraction"] == 0.5
    for name in [*ablations.CURVES, "tradeoff"]:
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert set(summary["runs"]) == {"v3.2", "speciale", "no-opsm"} and set(RUNS) > set(summary["runs"])


def test_command_line_choices_are_the_library_names():
    """The CLI lists the presets, ablations and ablation runs by hand (it must not import torch
    to build its parser); they must stay the names the library accepts."""
    import argparse

    from dsv32.rl.ablations import RUNS
    from dsv32.rl.presets import ABLATIONS, VARIANTS
    from dsv32.train.commands import register

    parser = argparse.ArgumentParser()
    register(parser)
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    grpo = {a.dest: a for a in verbs["grpo"]._actions}
    assert tuple(grpo["ablation"].choices) == ABLATIONS
    assert tuple(grpo["preset"].choices) == VARIANTS
    runs_help = {a.dest: a for a in verbs["post-ablations"]._actions}["runs"].help
    assert runs_help.split()[-1].split(",") == list(RUNS)
