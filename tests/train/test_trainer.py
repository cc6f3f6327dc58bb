"""The training loop: exact resume, accumulation equivalence, clipping, MoE bias update, keep-last-N."""

from __future__ import annotations

import json

import pytest
import torch

from dsv32.train.runner import train_stage
from dsv32.train.state import checkpoint_dirs, resolve_checkpoint
from dsv32.train.trainer import masked_ce_sum, row_mean_sum


def _losses(result):
    return [m["lm_loss"] for m in result.metrics]


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied-head"])
def test_resume_continues_bit_identically(make_cfg, tmp_path, tied):
    cfg = make_cfg(steps=6, save_every=3, model_overrides={"tie_word_embeddings": tied})
    full = train_stage(cfg, tmp_path / "full", progress=False)
    first = train_stage(cfg, tmp_path / "cut", stop_after=3, progress=False)
    assert _losses(first) == _losses(full)[:3]
    second = train_stage(cfg, tmp_path / "cut", progress=False)  # resumes at step 3
    assert [m["step"] for m in second.metrics] == [4, 5, 6]
    assert _losses(second) == _losses(full)[3:]  # exact, not approximate
    assert [m["grad_norm"] for m in second.metrics] == [m["grad_norm"] for m in full.metrics][3:]
    a = json.loads((full.checkpoint / "trainer_state.json").read_text())
    b = json.loads((second.checkpoint / "trainer_state.json").read_text())
    assert a["loader"] == b["loader"] and a["step"] == b["step"] == 6
    from safetensors.torch import load_file

    wa = load_file(str(full.checkpoint / "model-00001-of-00001.safetensors"))
    wb = load_file(str(second.checkpoint / "model-00001-of-00001.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # metrics of the resumed run: one train record per step, none duplicated
    steps = [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "train"]  # fmt: skip
    assert steps == [1, 2, 3, 4, 5, 6]


def test_keep_last_and_resolve(make_cfg, tmp_path):
    result = train_stage(make_cfg(steps=4, save_every=1, keep_last=2), tmp_path / "run", progress=False)
    names = [p.name for p in checkpoint_dirs(tmp_path / "run")]
    assert names == ["step_000003", "step_000004"]
    assert resolve_checkpoint(tmp_path / "run") == result.checkpoint
    assert not list((tmp_path / "run" / "checkpoints").glob(".partial-*"))
    with pytest.raises(FileNotFoundError):
        resolve_checkpoint(tmp_path / "nothing")


def test_accumulation_matches_one_big_batch(make_cfg, tmp_path):
    big = train_stage(make_cfg(batch_size=4, grad_accum=1, steps=3), tmp_path / "big", progress=False)
    acc = train_stage(make_cfg(batch_size=2, grad_accum=2, steps=3), tmp_path / "acc", progress=False)
    assert _losses(acc) == pytest.approx(_losses(big), rel=1e-5)
    assert [m["grad_norm"] for m in acc.metrics] == pytest.approx(
        [m["grad_norm"] for m in big.metrics], rel=1e-4
    )


def test_clipping_and_reported_norm(make_cfg, tmp_path):
    """grad_norm is the pre-clip global norm of the loss gradient; stored grads are scaled to the cap."""
    captured = {}

    def hook(trainer, step, metrics):
        grads = [p.grad for g in trainer.optimizer.param_groups for p in g["params"]]
        captured["clipped_norm"] = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        captured["reported"] = metrics["grad_norm"]

    cfg = make_cfg(steps=1, grad_clip=1e-3, lr=1e-9, warmup_steps=0)
    ref_cfg = make_cfg(steps=1, grad_clip=0.0, lr=1e-9, warmup_steps=0)
    train_stage(cfg, tmp_path / "clip", hooks=[hook], progress=False)
    ref = {}

    def ref_hook(trainer, step, metrics):
        grads = [p.grad for g in trainer.optimizer.param_groups for p in g["params"]]
        ref["norm"] = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))

    train_stage(ref_cfg, tmp_path / "noclip", hooks=[ref_hook], progress=False)
    assert captured["reported"] == pytest.approx(ref["norm"], rel=1e-5)
    assert ref["norm"] > 1e-2
    assert captured["clipped_norm"] == pytest.approx(1e-3, rel=1e-4)


def test_expert_bias_moves_against_load(make_cfg, tmp_path):
    seen = {}

    def hook(trainer, step, metrics):
        seen["bias"] = {k: g.e_score_correction_bias.clone() for k, g in trainer.model.gates().items()}

    train_stage(make_cfg(steps=1, bias_update_gamma=0.01), tmp_path / "b", hooks=[hook], progress=False)
    for bias in seen["bias"].values():
        # one step from zero: every entry is exactly +-gamma or 0 (experts at the mean load)
        vals = bias.abs()
        assert torch.all((vals == 0) | ((vals - 0.01).abs() < 1e-9))
        assert (bias != 0).any()


def test_masked_ce_sum_matches_reference():
    torch.manual_seed(1)
    logits, targets = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    ref = sum(
        torch.nn.functional.cross_entropy(logits[b, t][None], targets[b, t][None])
        for b in range(2) for t in range(5) if mask[b, t]
    )  # fmt: skip
    assert float(masked_ce_sum(logits[mask], targets, mask)) == pytest.approx(float(ref), rel=1e-6)


def test_row_mean_sum_by_hand():
    logits_all = torch.randn(2, 4, 7, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 1]])
    mask = torch.tensor([[False, True, False, False], [True, True, True, False]])
    ce = torch.nn.functional.cross_entropy(logits_all.flatten(0, 1), targets.flatten(), reduction="none")
    ce = ce.view(2, 4)
    expected = ce[0, 1] + (ce[1, 0] + ce[1, 1] + ce[1, 2]) / 3
    got = row_mean_sum(ce[mask], mask)
    assert torch.allclose(got, expected)
    assert torch.allclose(masked_ce_sum(logits_all[mask], targets, mask), ce[mask].sum())
    empty_row = mask.clone()
    empty_row[0] = False  # a row without targets adds nothing
    assert torch.allclose(row_mean_sum(ce[empty_row], empty_row), expected - ce[0, 1])


def test_row_weighting_equals_token_weighting_for_one_row_and_differs_for_mixed_rows(make_cfg, tmp_path):
    def losses(weighting, batch_size, name):
        cfg = make_cfg(steps=3, batch_size=batch_size, loss_weighting=weighting)
        return _losses(train_stage(cfg, tmp_path / name, progress=False))

    assert losses("row", 1, "r1") == pytest.approx(losses("token", 1, "t1"), rel=1e-5)
    # text rows (every token supervised) next to answer-only task rows: the weightings now differ
    assert losses("row", 4, "r4")[1:] != pytest.approx(losses("token", 4, "t4")[1:], rel=1e-3)
    with pytest.raises(ValueError, match="loss_weighting"):
        make_cfg(loss_weighting="sample")
