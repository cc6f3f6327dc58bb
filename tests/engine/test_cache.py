import pytest
import torch

from dsv32.config import preset
from dsv32.engine.cache import CacheFullError, CacheSpec, PagedCache
from dsv32.model.accounting import cache_bytes_per_token
from dsv32.model.indexer import fp8_ue8m0_dequantize, fp8_ue8m0_quantize


@pytest.mark.parametrize("name", ["tiny", "small", "deepseek-v3.2"])
@pytest.mark.parametrize("index", ["fp8", "int8"])
def test_bytes_per_token_match_model_info(name, index):
    config = preset(name)
    cache = PagedCache(config, n_pages=1, page_size=2, spec=CacheSpec("bf16", index))
    assert cache.bytes_per_token() == cache_bytes_per_token(config)["total_fp8_indexer"]
    if name == "deepseek-v3.2":  # the official numbers: 1,152 + 132 bytes per layer
        assert cache.bytes_per_token() == 61 * (1152 + 132)


def test_bf16_index_mode_matches_bf16_accounting():
    config = preset("tiny")
    cache = PagedCache(config, n_pages=1, page_size=1, spec=CacheSpec("bf16", "bf16"))
    assert cache.bytes_per_token() == cache_bytes_per_token(config)["total_bf16_indexer"]


def _entries(config, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, config.kv_lora_rank, generator=g)
    pe = torch.randn(n, config.qk_rope_head_dim, generator=g)
    return c, pe, torch.randn(n, config.index_head_dim, generator=g) * 3


def test_paged_rows_and_round_trip():
    config = preset("tiny")
    cache = PagedCache(config, n_pages=6, page_size=4, spec=CacheSpec.exact())
    cache.reserve("a", 5)  # pages 0, 1
    cache.reserve("b", 3)  # page 2
    cache.reserve("a", 9)  # page 3: "a" is no longer contiguous
    rows = cache.rows("a", 0, 9)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 12]
    c, pe, k = _entries(config, 9)
    cache.write(1, rows, c, pe, k)
    got_c, got_pe = cache.read_latent(1, rows.view(3, 3), torch.float32)
    assert torch.equal(got_c.reshape(9, -1), c) and torch.equal(got_pe.reshape(9, -1), pe)
    assert torch.equal(cache.read_index_keys(1, rows), k)
    assert cache.free_pages == 2
    with pytest.raises(CacheFullError):
        cache.reserve("c", 3 * 4)
    assert "c" not in cache and cache.free_pages == 2
    cache.free("a")
    assert cache.free_pages == 5 and cache.capacity("a") == 0
    with pytest.raises(IndexError):
        cache.rows("b", 0, 5)


def test_compact_storage_is_the_fp8_format_and_close():
    config = preset("small")  # index_head_dim 32: one FP8 block per key
    cache = PagedCache(config, n_pages=1, page_size=8)
    c, pe, k = _entries(config, 8, seed=1)
    rows = torch.arange(8)
    cache.write(0, rows, c, pe, k)
    expected = fp8_ue8m0_dequantize(*fp8_ue8m0_quantize(k, 32))
    assert torch.equal(cache.read_index_keys(0, rows), expected)
    got_c, _ = cache.read_latent(0, rows, torch.float32)
    assert torch.equal(got_c, c.bfloat16().float())
    assert (expected - k).abs().max() <= k.abs().max() / 8  # e4m3: 3 mantissa bits


def test_int8_keys_per_token_scale():
    config = preset("tiny")
    cache = PagedCache(config, n_pages=1, page_size=8, spec=CacheSpec("fp32", "int8"))
    c, pe, k = _entries(config, 8, seed=2)
    cache.write(2, torch.arange(8), c, pe, k)
    got = cache.read_index_keys(2, torch.arange(8))
    step = k.abs().amax(-1, keepdim=True) / 127
    assert ((got - k).abs() <= step / 2 + 1e-6).all()
    assert torch.allclose(got.abs().amax(-1), k.abs().amax(-1))


def test_bad_spec_and_sizes():
    with pytest.raises(ValueError, match="index mode"):
        CacheSpec("bf16", "fp4")
    with pytest.raises(ValueError, match="n_pages"):
        PagedCache(preset("tiny"), n_pages=0)
