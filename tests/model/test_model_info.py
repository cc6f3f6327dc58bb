import json

from dsv32.cli import main
from dsv32.config import preset
from dsv32.model.accounting import cache_bytes_per_token, flops_per_token


def test_model_info_json_for_the_official_model(capsys):
    assert main(["model", "info", "--preset", "deepseek-v3.2", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"]["total"] == 671_877_944_064
    assert info["params"]["total_without_indexers"] == 671_026_419_200
    assert 37e9 <= info["params"]["activated_without_indexers"] <= 38e9
    assert info["cache_bytes_per_token"]["latent_bf16_per_layer"] == 1152
    assert info["cache_bytes_per_token"]["indexer_fp8_per_layer"] == 132
    assert info["cache_bytes_per_token"]["total_fp8_indexer"] == 61 * (1152 + 132)


def test_model_info_table_and_config_file(tmp_path, capsys):
    preset("tiny").to_json(tmp_path / "config.json")
    assert main(["model", "info", "--config", str(tmp_path), "--seq-len", "64"]) == 0
    out = capsys.readouterr().out
    assert "total_without_indexers" in out and "context 64" in out


def test_model_info_bad_input(tmp_path, capsys):
    assert main(["model", "info", "--config", str(tmp_path / "missing.json")]) == 2
    assert "model config not found" in capsys.readouterr().err
    assert main(["model", "info", "--preset", "tiny", "--seq-len", "0"]) == 2


def test_flop_accounting_by_hand():
    c = preset("deepseek-v3.2")
    # decode attention at 128K: dense absorbed over 131072 keys vs DSA over 2048 keys + the indexer
    h, dn, dr, kv, dv = 128, 128, 64, 512, 128
    dense = 61 * 2 * h * 131072 * (kv + dr + kv)
    dsa = 61 * (2 * h * 2048 * (kv + dr + kv) + 2 * 131072 * 64 * 129)
    f = flops_per_token(c, 131072)
    assert f["decode_attention_dense"] == dense and f["decode_attention_dsa"] == dsa
    assert 12 < dense / dsa < 14  # the ~13x the FLOP count allows with a bf16 indexer
    # prefill at 32K, MHA form: dense token i sees i keys; DSA sees min(i, 2048) keys plus the indexer
    p = flops_per_token(c, 32768)
    dense_sum = sum(2 * h * i * (dn + dr + dv) for i in range(1, 32769))
    dsa_sum = sum(2 * h * min(i, 2048) * (dn + dr + dv) + 2 * i * 64 * 129 for i in range(1, 32769))
    assert abs(p["prefill_attention_dense"] - 61 * dense_sum / 32768) < 1e-6 * p["prefill_attention_dense"]
    assert abs(p["prefill_attention_dsa"] - 61 * dsa_sum / 32768) < 1e-6 * p["prefill_attention_dsa"]
    # below the top-k a DSA token does the same attention work plus the indexer
    short = flops_per_token(c, 1024)
    assert short["decode_attention_dsa"] > short["decode_attention_dense"]
    assert cache_bytes_per_token(preset("tiny"))["indexer_fp8_per_layer"] == 16 + 4
