"""Every test starts from the same global RNG state, whatever ran before it."""

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_global_rngs():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="module")
def single_thread():
    """Small matrices: one intra-op thread avoids spinning when the 2 cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
