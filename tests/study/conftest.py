import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tests train tiny models: one intra-op thread is fastest and immune to oversubscribed CI cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
