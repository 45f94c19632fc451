"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Bit-exact comparisons need one CPU thread: multi-threaded kernels (e.g. grid_sample's backward) sum in varying order."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
