"""Shared fixtures."""

import pytest

from ml4ml.cluster import torch_threads


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread: fast on small batches, no oversubscription on shared CPUs."""
    with torch_threads(1):
        yield
