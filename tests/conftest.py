"""Every test starts from the same global RNG state, whatever ran before it; the hypothesis
profile of the property-based tests."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

# Property tests: derandomized (the same examples on every run, so CI is reproducible), no
# example database written to the tree, no per-example deadline (busy machines), and few
# enough examples that all property suites together stay well under a minute.
settings.register_profile(
    "ntk",
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ntk")


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
