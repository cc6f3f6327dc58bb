"""The induction probe: metrics by hand, a causal reference, every model flag reaches the model, a CLI run."""

import json
import math
from dataclasses import replace

import pytest
import torch

from dsv32.cli import main
from dsv32.train.induction_probe import (
    InductionProbeConfig,
    ReferenceTransformer,
    copy_metrics,
    escape_step,
    run_induction_probe,
)


def test_copy_metrics_read_only_repeated_positions():
    targets = torch.tensor([[3, 4, 3, 4]])
    is_copy = torch.tensor([[False, False, True, True]])
    logits = torch.zeros(1, 4, 6)
    logits[0, 2, 3] = 10.0  # right on the first repeat
    logits[0, 3, 5] = 10.0  # wrong on the second
    logits[0, 0, 0] = 50.0  # a non-copy position, ignored
    m = copy_metrics(logits, targets, is_copy)
    assert m["copy_accuracy"] == pytest.approx(0.5)
    expected = torch.nn.functional.cross_entropy(logits[0, 2:], targets[0, 2:])
    assert m["copy_loss"] == pytest.approx(float(expected))


def test_escape_step_is_the_first_logged_step_below_the_plateau():
    history = [{"step": s, "a": {"copy_loss": v}} for s, v in [(25, 4.2), (50, 4.1), (75, 4.0), (100, 3.5)]]
    assert escape_step(history, "a", plateau=math.log(64)) == 75  # ln 64 = 4.159; 4.0 <= 4.059
    assert escape_step(history, "a", plateau=math.log(64), margin=1.0) is None


def test_reference_transformer_is_causal():
    torch.manual_seed(0)
    model = ReferenceTransformer(vocab=20, width=16, heads=2, ffn=32, layers=2, max_len=10).eval()
    ids = torch.randint(0, 20, (1, 10))
    changed = ids.clone()
    changed[0, 7] = (ids[0, 7] + 1) % 20
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_probe_cli_short_run(capsys):
    args = ["train", "probe-induction", "--preset", "tiny", "--seq-len", "32", "--batch-size", "2",
            "--steps", "3", "--log-every", "2", "--symbols", "16"]  # fmt: skip
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["step"] for r in result["history"]] == [2, 3]
    assert result["plateau"] == pytest.approx(math.log(16), abs=1e-4)
    for r in result["history"]:
        for arch in ("dsv32", "reference"):
            assert 0 < r[arch]["copy_loss"] < 10 and 0 <= r[arch]["copy_accuracy"] <= 1
    with pytest.raises(ValueError, match="archs must be"):
        run_induction_probe(InductionProbeConfig(archs=("dsv32", "gpt")))


@pytest.mark.parametrize("tie_head", [False, True])
def test_tie_head_ties_the_dsv32_models_output_head(tie_head):
    from dsv32.train.induction_probe import _build

    model = _build("dsv32", InductionProbeConfig(preset="tiny", tie_head=tie_head))
    shared = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert shared == tie_head and model.config.tie_word_embeddings == tie_head


def test_span_flag_reaches_the_rows_and_bad_values_are_errors(capsys):
    args = ["train", "probe-induction", "--preset", "tiny", "--archs", "dsv32", "--seq-len", "32",
            "--batch-size", "2", "--steps", "1", "--symbols", "16", "--span", "4,6"]  # fmt: skip
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["config"]["span"] == [4, 6]
    for bad in ("7", "a,b", "6,4"):
        assert main(args[:-1] + [bad]) == 2
        assert "span" in capsys.readouterr().err


def test_no_yarn_builds_plain_rope():
    from dsv32.train.induction_probe import _build

    assert _build("dsv32", InductionProbeConfig(preset="tiny")).config.rope_scaling is not None
    assert _build("dsv32", InductionProbeConfig(preset="tiny", yarn=False)).config.rope_scaling is None


def test_model_set_changes_the_dsv32_model_and_unknown_fields_are_errors(capsys):
    args = ["train", "probe-induction", "--preset", "tiny", "--archs", "dsv32", "--seq-len", "32",
            "--batch-size", "2", "--steps", "1", "--symbols", "16",
            "--model-set", "kv_lora_rank=48", "--model-set", "first_k_dense_replace=2"]  # fmt: skip
    assert main(args) == 0
    config = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["config"]
    assert config["model_overrides"] == {"kv_lora_rank": 48, "first_k_dense_replace": 2}

    from dsv32.train.induction_probe import _build

    model = _build("dsv32", InductionProbeConfig(preset="tiny", model_overrides={"kv_lora_rank": 48}))
    assert model.config.kv_lora_rank == 48
    assert main(args[:-1] + ["kv_rank=48"]) == 2
    assert "kv_rank" in capsys.readouterr().err
    assert main(args[:-1] + ["a.b=1"]) == 2
    assert "--model-set" in capsys.readouterr().err


def test_abs_positions_add_a_learned_embedding_per_position():
    from dsv32.train.induction_probe import _build

    cfg = InductionProbeConfig(preset="tiny", seq_len=8)
    plain, with_pos = _build("dsv32", cfg), _build("dsv32", replace(cfg, abs_positions=True))
    ids = torch.tensor([[2, 3, 2, 3]])
    emb = with_pos.model.embed_tokens(ids)
    torch.testing.assert_close(emb[0], plain.model.embed_tokens(ids)[0] + with_pos.probe_positions.weight[:4])
    assert any(p is with_pos.probe_positions.weight for p in with_pos.parameters())


def test_reference_init_range_replaces_pytorchs_defaults():
    from dsv32.train.induction_probe import _build

    default = _build("reference", InductionProbeConfig(preset="small"))
    assert abs(float(default.embed.weight.std()) - 1.0) < 0.05  # nn.Embedding's N(0, 1)
    scaled = _build("reference", InductionProbeConfig(preset="small", reference_init_range=0.05))
    for name, p in scaled.named_parameters():
        if p.dim() >= 2:
            assert abs(float(p.std()) - 0.05) < 0.005, name
        elif name.endswith("bias"):
            assert not p.any(), name
        else:
            assert (p == 1).all(), name  # LayerNorm weights keep 1
