"""Small building blocks: RMSNorm and the SwiGLU feed-forward used by dense layers and experts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _RMSNormFunction(torch.autograd.Function):
    """y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps), as one autograd node.

    PyTorch's `F.rms_norm` runs on CPU as five or six separate ops forward and as many autograd
    nodes backward; the backward written out (with x_hat = x * rstd and g' = g * w:
    dx = rstd * (g' - x_hat * mean(g' * x_hat)), dw = sum(g * x_hat)) runs forward + backward
    1.1-1.6x faster at the tiny preset's GRPO shapes and 1.4x at the small preset's training shape."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(eps))
        x_hat = x * rstd
        ctx.save_for_backward(x_hat, rstd, weight)
        return x_hat * weight

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x_hat, rstd, weight = ctx.saved_tensors
        gx_hat = grad_y * x_hat  # shared: dw sums it over rows, mean(g' * x_hat) = gx_hat . w / D
        grad_w = gx_hat.reshape(-1, grad_y.shape[-1]).sum(0) if ctx.needs_input_grad[1] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            mean_gx = (gx_hat @ weight).unsqueeze(-1).div_(grad_y.shape[-1])
            grad_x = torch.addcmul(grad_y * weight, x_hat, mean_gx, value=-1.0).mul_(rstd)
        return grad_x, grad_w, None


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight, computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            y = _RMSNormFunction.apply(x.float(), self.weight.float(), self.eps)
        else:
            y = F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        return y.to(x.dtype)


class SwiGLU(nn.Module):
    """down_proj(silu(gate_proj(x)) * up_proj(x)), the official names of the three projections."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
