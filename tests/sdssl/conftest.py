"""SDSSL tests use tiny models: one intra-op thread is faster than two (no spin-waiting),
and far faster on a shared, loaded CPU. The previous setting is restored afterwards."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
