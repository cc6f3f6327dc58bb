import math

import torch

from dsv32.config import preset
from dsv32.model.rope import apply_rope_half, apply_rope_interleaved, rope_cos_sin, rope_frequencies


def test_frequencies_without_yarn_are_the_base_ones():
    config = preset("tiny").replace(rope_scaling=None, rope_theta=100.0)
    d = config.qk_rope_head_dim
    expected = torch.tensor([100.0 ** (-2 * i / d) for i in range(d // 2)])
    torch.testing.assert_close(rope_frequencies(config), expected)


def test_yarn_keeps_fast_dims_and_interpolates_slow_ones():
    config = preset("deepseek-v3.2")
    base = rope_frequencies(config.replace(rope_scaling=None))
    yarn = rope_frequencies(config)
    factor = config.rope_scaling["factor"]
    # Hand-computed ramp bounds for d=64, theta=1e4, original length 4096, beta 32 / 1:
    low = math.floor(64 * math.log(4096 / (32 * 2 * math.pi)) / (2 * math.log(1e4)))
    high = math.ceil(64 * math.log(4096 / (1 * 2 * math.pi)) / (2 * math.log(1e4)))
    assert (low, high) == (10, 23)
    torch.testing.assert_close(yarn[:low], base[:low])
    torch.testing.assert_close(yarn[high:], base[high:] / factor)
    ramp = (torch.arange(low, high, dtype=torch.float32) - low) / (high - low)
    torch.testing.assert_close(yarn[low:high], base[low:high] / factor * ramp + base[low:high] * (1 - ramp))


def test_softmax_scale_has_mscale_squared():
    config = preset("deepseek-v3.2")
    mscale = 0.1 * math.log(40) + 1
    assert math.isclose(config.softmax_scale, 192**-0.5 * mscale**2)


def test_interleaved_equals_half_after_permutation():
    config = preset("tiny")
    pos = torch.arange(7)[None]
    cos, sin = rope_cos_sin(config, pos)
    x = torch.randn(1, 7, 3, config.qk_rope_head_dim)
    d = x.shape[-1]
    to_half = torch.cat((torch.arange(0, d, 2), torch.arange(1, d, 2)))  # evens then odds
    torch.testing.assert_close(
        apply_rope_interleaved(x, cos, sin)[..., to_half], apply_rope_half(x[..., to_half], cos, sin)
    )


def test_rope_scores_depend_only_on_relative_position():
    config = preset("tiny")
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m, n, apply):
        cm, sm = rope_cos_sin(config, torch.tensor([[m]]))
        cn, sn = rope_cos_sin(config, torch.tensor([[n]]))
        return (apply(q, cm, sm) * apply(k, cn, sn)).sum()

    for apply in (apply_rope_interleaved, apply_rope_half):
        torch.testing.assert_close(score(5, 2, apply), score(103, 100, apply), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(score(5, 2, apply), score(5, 3, apply))
        x_cos, x_sin = rope_cos_sin(config, torch.tensor([[9]]))
        torch.testing.assert_close(apply(q, x_cos, x_sin).norm(), q.norm())  # a rotation
