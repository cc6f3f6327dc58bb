import pytest
import torch

from dsv32.config import preset
from dsv32.model.transformer import build_model


@pytest.fixture
def tiny_config():
    return preset("tiny")


@pytest.fixture
def tiny_model(tiny_config):
    model = build_model(tiny_config, seed=1)
    with torch.no_grad():  # non-trivial norms and biases so mistakes in them show
        for gate in model.gates().values():
            gate.e_score_correction_bias.normal_(0, 0.05)
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()
