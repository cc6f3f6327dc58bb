import json

import pytest
import torch

from dsv32.config import ModelConfig, preset
from dsv32.model.accounting import count_params
from dsv32.model.transformer import build_model


def test_json_round_trip_keeps_unknown_keys(tmp_path):
    data = preset("tiny").to_dict()
    data["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    data["torch_dtype"] = "bfloat16"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    config = ModelConfig.from_json(path)
    assert config.extra["quantization_config"]["weight_block_size"] == [128, 128]
    config.to_json(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == data


def test_official_config_keys_and_defaults():
    d = ModelConfig().to_dict()
    assert d["model_type"] == "deepseek_v32" and d["architectures"] == ["DeepseekV32ForCausalLM"]
    assert (d["hidden_size"], d["num_hidden_layers"], d["index_topk"], d["n_group"], d["topk_group"]) == (
        7168, 61, 2048, 8, 4)  # fmt: skip
    assert d["rope_scaling"]["factor"] == 40 and d["rope_scaling"]["original_max_position_embeddings"] == 4096


def test_reads_transformers_rope_parameters():
    data = preset("tiny").to_dict()
    rope = data.pop("rope_scaling")
    data.pop("rope_theta")
    data["rope_parameters"] = {**rope, "rope_type": "yarn", "rope_theta": 5000.0}
    config = ModelConfig.from_dict(data)
    assert config.rope_theta == 5000.0 and config.yarn["factor"] == rope["factor"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n_routed_experts": 10, "n_group": 4}, "divisible by n_group"),
        ({"topk_group": 5, "n_group": 4}, "topk_group must be in"),
        ({"index_topk": 0}, "index_topk"),
        ({"qk_rope_head_dim": 7, "index_head_dim": 16}, "must be even"),
        ({"num_experts_per_tok": 9}, "num_experts_per_tok"),
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
        ({"rope_scaling": {"type": "linear", "factor": 2}}, "rope_scaling type"),
        ({"index_hadamard": True, "index_head_dim": 24}, "power of two"),
        ({"first_k_dense_replace": 9}, "first_k_dense_replace"),
        ({"embedding_initializer_range": 0.0}, "embedding_initializer_range must be > 0"),
    ],
)
def test_bad_configs_raise_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        preset("tiny").replace(**changes)


def test_bad_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ModelConfig.from_json(tmp_path / "nope.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelConfig.from_json(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        ModelConfig.from_json(tmp_path)


def test_presets_sizes():
    tiny, small = preset("tiny"), preset("small")
    assert count_params(tiny).total <= 2_000_000
    assert tiny.first_k_dense_replace >= 1 and len(tiny.moe_layers) >= 2
    assert tiny.n_routed_experts >= 8 and tiny.n_group >= 2
    assert 10_000_000 <= count_params(small).total <= 40_000_000
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


@pytest.mark.parametrize("name", ["tiny", "small", "deepseek-v3.2"])
def test_analytic_counts_equal_built_model(name):
    config = preset(name)
    model = build_model(config, device="meta")  # the official size exists only as shapes
    built = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    assert built == count_params(config).total


def test_deepseek_v32_counts():
    counts = count_params(preset("deepseek-v3.2"))
    assert counts.total_without_indexers == 671_026_419_200
    assert counts.indexers == 61 * 13_959_424 == 851_524_864
    assert counts.total == 671_877_944_064
    # 37.55B activated without the indexers (DeepSeek-V3's 37B), 38.40B with them.
    assert counts.activated_without_indexers == 37_552_297_472
    assert counts.activated == 38_403_822_336


@pytest.mark.parametrize("tied", [False, True])
def test_embedding_initializer_range_sets_only_the_embedding(tied):
    base = preset("tiny").replace(tie_word_embeddings=tied)
    plain = build_model(base, seed=0)
    wide = build_model(base.replace(embedding_initializer_range=0.5), seed=0)
    emb = wide.model.embed_tokens.weight
    assert abs(float(emb.std()) - 0.5) < 0.02
    # same draws, scaled: the embedding is 25x the default one, every other matrix is identical
    torch.testing.assert_close(emb, plain.model.embed_tokens.weight * 25)
    head_std = float(wide.lm_head.weight.std())
    assert (abs(head_std - 0.5) < 0.02) if tied else (abs(head_std - 0.02) < 1e-3)
    for (name, a), (_, b) in zip(wide.named_parameters(), plain.named_parameters(), strict=True):
        if name != "model.embed_tokens.weight":
            torch.testing.assert_close(a, b, msg=name)
    assert ModelConfig.from_dict(wide.config.to_dict()).embedding_initializer_range == 0.5
