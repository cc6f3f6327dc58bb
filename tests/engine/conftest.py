import pytest
import torch

from dsv32.model.transformer import build_model

from .support import tiny_config


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    model = build_model(tiny_config(), seed=3).eval()
    with torch.no_grad():  # non-trivial routing bias, so expert choice is not just the score order
        for gate in model.gates().values():
            gate.e_score_correction_bias.normal_(0, 0.05)
    return model


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    # Tiny matrices: thread start-up and contention with other processes cost more than they give.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
