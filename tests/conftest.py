"""Shared fixtures; the report header says which golden cases the parity tests use."""

import pytest

from ml4ml.cluster import torch_threads


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread: fast on small batches, no oversubscription on shared CPUs."""
    with torch_threads(1):
        yield


def pytest_report_header(config):
    import golden

    if golden.large_available():
        return f"golden vectors: 3 small cases (tests/data/golden), 3 large ({golden.LARGE})"
    return (f"golden vectors: 3 small cases (tests/data/golden); the 3 large ones are an extra, "
            f"not at {golden.LARGE}, so not tested")
