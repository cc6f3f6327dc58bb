"""RMSNorm's hand-written backward against autograd through the formula, and its no-grad path."""

import pytest
import torch
import torch.nn.functional as F

from dsv32.model.layers import RMSNorm, _RMSNormFunction


def _formula(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def test_rms_norm_function_passes_gradcheck():
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: _RMSNormFunction.apply(a, b, 1e-6), (x, w))


@pytest.mark.parametrize("shape", [(5, 16), (2, 7, 32)])
def test_rms_norm_matches_the_formula_forward_and_backward(shape):
    torch.manual_seed(0)
    norm = RMSNorm(shape[-1])
    with torch.no_grad():
        norm.weight.copy_(torch.rand(shape[-1]) + 0.5)
    x = torch.randn(shape, requires_grad=True)
    grad_y = torch.randn(shape)
    y = norm(x)
    ref = _formula(x, norm.weight, norm.eps)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-6)
    got = torch.autograd.grad(y, (x, norm.weight), grad_y)
    want = torch.autograd.grad(ref, (x, norm.weight), grad_y)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_rms_norm_without_grad_gives_the_same_values():
    torch.manual_seed(0)
    norm = RMSNorm(16)
    x = torch.randn(4, 16)
    with torch.no_grad():
        fast = norm(x)
    assert torch.equal(fast, norm(x.requires_grad_()).detach())
    assert torch.equal(fast, F.rms_norm(x, (16,), norm.weight, norm.eps).detach())


def test_rms_norm_frozen_weight_gets_no_gradient():
    norm = RMSNorm(8).requires_grad_(False)
    x = torch.randn(3, 8, requires_grad=True)
    norm(x).sum().backward()
    assert norm.weight.grad is None and x.grad is not None


def test_rms_norm_bf16_input_keeps_its_dtype():
    norm = RMSNorm(8)
    x = torch.randn(3, 8, dtype=torch.bfloat16, requires_grad=True)
    y = norm(x)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and x.grad.dtype == torch.bfloat16
