import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from dsv32.checkpoint import (
    INDEX_NAME,
    CheckpointError,
    dequantize_fp8_blocks,
    load_model,
    save_checkpoint,
)
from dsv32.config import preset
from dsv32.model.accounting import count_params
from dsv32.model.indexer import fp8_ue8m0_quantize
from dsv32.model.transformer import build_model


def test_round_trip_is_bit_exact_and_sharded(tiny_model, tiny_config, tmp_path):
    save_checkpoint(tiny_model, tiny_config, tmp_path / "ck", max_shard_bytes=300_000, meta={"step": 7})
    index = json.loads((tmp_path / "ck" / INDEX_NAME).read_text())
    assert len(set(index["weight_map"].values())) > 1
    names = set(index["weight_map"])
    official = {
        "model.embed_tokens.weight",
        "lm_head.weight",
        "model.norm.weight",
        "model.layers.0.self_attn.indexer.k_norm.bias",
        "model.layers.1.mlp.gate.e_score_correction_bias",
        "model.layers.1.mlp.experts.7.down_proj.weight",
        "model.layers.2.mlp.shared_experts.up_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.2.self_attn.kv_a_proj_with_mqa.weight",
    }
    assert official <= names
    loaded = load_model(tmp_path / "ck")
    for (n1, a), (n2, b) in zip(tiny_model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and a.dtype == b.dtype and torch.equal(a, b)
    x = torch.randint(0, tiny_config.vocab_size, (1, 30))
    with torch.no_grad():
        assert torch.equal(tiny_model(x, attention="sparse").logits, loaded(x, attention="sparse").logits)


def test_tied_head_is_stored_once_and_stays_tied(tmp_path):
    config = preset("tiny").replace(tie_word_embeddings=True)
    model = build_model(config, seed=3).eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    untied = build_model(preset("tiny"), seed=3)
    saved = sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in model.parameters())
    assert saved == config.vocab_size * config.hidden_size
    assert count_params(preset("tiny")).total - count_params(config).total == saved
    save_checkpoint(model, config, tmp_path / "ck")
    stored = load_file(str(tmp_path / "ck" / "model-00001-of-00001.safetensors"))
    assert "lm_head.weight" not in stored and "model.embed_tokens.weight" in stored
    loaded = load_model(tmp_path / "ck")
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight  # one Parameter, not two copies
    x = torch.randint(0, config.vocab_size, (1, 20))
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)
    # A file that also stores the head (as some exporters do) loads; the head is the embedding.
    stored["lm_head.weight"] = torch.zeros_like(stored["model.embed_tokens.weight"])
    save_file(stored, str(tmp_path / "ck" / "model-00001-of-00001.safetensors"))
    index = json.loads((tmp_path / "ck" / INDEX_NAME).read_text())
    index["weight_map"]["lm_head.weight"] = "model-00001-of-00001.safetensors"
    (tmp_path / "ck" / INDEX_NAME).write_text(json.dumps(index))
    again = load_model(tmp_path / "ck")
    assert again.lm_head.weight is again.model.embed_tokens.weight
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)


def test_overwrite_is_atomic(tiny_model, tiny_config, tmp_path, monkeypatch):
    save_checkpoint(tiny_model, tiny_config, tmp_path / "ck")
    before = load_file(str(next((tmp_path / "ck").glob("*.safetensors"))))
    import dsv32.checkpoint as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tiny_model, tiny_config, tmp_path / "ck")
    after = load_file(str(next((tmp_path / "ck").glob("*.safetensors"))))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no staging leftovers


def test_fp8_block_dequantisation_by_hand():
    w = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]).to(torch.float8_e4m3fn)
    scale_inv = torch.tensor([[2.0, 10.0], [0.5, 3.0]])  # blocks of 2x2 over a 3x3 matrix
    expected = torch.tensor([[2.0, 4.0, 30.0], [8.0, 10.0, 60.0], [3.5, 4.0, 27.0]])
    torch.testing.assert_close(dequantize_fp8_blocks(w, scale_inv, block=2), expected)
    with pytest.raises(CheckpointError, match="weight_scale_inv shape"):
        dequantize_fp8_blocks(w, torch.ones(1, 1), block=2)


def _official_fp8_copy(model, directory, extra_tensors=None):
    """Save like the official release: 2-D projections in FP8 with 128x128 weight_scale_inv."""
    state = {}
    for name, t in model.state_dict().items():
        if t.dim() == 2 and "embed" not in name and "lm_head" not in name and "gate.weight" not in name:
            rows, cols = t.shape
            pad = torch.zeros(-(-rows // 128) * 128, -(-cols // 128) * 128)
            pad[:rows, :cols] = t
            blocks = pad.unflatten(0, (-1, 128)).unflatten(2, (-1, 128)).permute(0, 2, 1, 3).flatten(2)
            codes, scales = fp8_ue8m0_quantize(blocks, block=blocks.shape[-1])
            codes = codes.unflatten(2, (128, 128)).permute(0, 2, 1, 3).flatten(0, 1).flatten(1)
            state[name] = codes[:rows, :cols].contiguous()
            state[name + "_scale_inv"] = scales.squeeze(-1)
        else:
            state[name] = t.contiguous()
    state.update(extra_tensors or {})
    directory.mkdir()
    save_file(state, str(directory / "model.safetensors"))
    model.config.to_json(directory / "config.json")


def test_loads_official_fp8_checkpoint_and_skips_mtp(tiny_model, tiny_config, tmp_path, caplog):
    mtp = {f"model.layers.{tiny_config.num_hidden_layers}.eh_proj.weight": torch.zeros(4, 4)}
    _official_fp8_copy(tiny_model, tmp_path / "fp8", mtp)
    with caplog.at_level(logging.INFO, logger="dsv32.checkpoint"):
        loaded = load_model(tmp_path / "fp8")
    assert "skipped 1 MTP-layer tensors" in caplog.text
    a = tiny_model.model.layers[0].self_attn.q_b_proj.weight
    b = loaded.model.layers[0].self_attn.q_b_proj.weight
    assert not torch.equal(a, b) and ((a - b).abs() <= a.abs().max() * 2**-4).all()
    x = torch.randint(0, tiny_config.vocab_size, (1, 12))
    with torch.no_grad():
        ref, out = tiny_model(x).logits, loaded(x).logits
    assert (ref - out).abs().max() < 0.1 * ref.abs().max()  # FP8 weights: a few percent per layer


def test_mismatched_checkpoint_lists_every_problem(tiny_model, tiny_config, tmp_path):
    state = dict(tiny_model.state_dict())
    state.pop("model.layers.0.self_attn.o_proj.weight")
    state.pop("lm_head.weight")
    state["model.layers.0.self_attn.surprise.weight"] = torch.zeros(2)
    state["model.norm.weight"] = torch.zeros(3)
    save_checkpoint(state, tiny_config, tmp_path / "bad")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "bad")
    text = str(err.value)
    assert "2 missing" in text and "lm_head.weight" in text and "o_proj.weight" in text
    assert "1 unexpected" in text and "surprise" in text
    assert "1 mis-shaped" in text and "model.norm.weight: checkpoint (3,) vs model (64,)" in text


def test_corrupt_checkpoints_give_clear_errors(tiny_model, tiny_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint directory not found"):
        load_model(tmp_path / "none", config=tiny_config)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither"):
        load_model(tmp_path / "empty", config=tiny_config)
    save_checkpoint(tiny_model, tiny_config, tmp_path / "ck", max_shard_bytes=300_000)
    (tmp_path / "ck" / INDEX_NAME).write_text("{}")
    with pytest.raises(CheckpointError, match="weight_map"):
        load_model(tmp_path / "ck")
    save_checkpoint(tiny_model, tiny_config, tmp_path / "ck2")
    shard = next((tmp_path / "ck2").glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        load_model(tmp_path / "ck2")
