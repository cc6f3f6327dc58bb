import pytest
import torch


@pytest.fixture(autouse=True)
def restore_threads():
    # `--threads` sets torch's thread count for the process: give the rest of the session its own.
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
