"""Shared fixtures."""

import pytest

from ml4ml.cluster import torch_threads


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread: fast on small batches, no oversubscription on shared CPUs."""
    with torch_threads(1):
        yield


def require_fused_statistics():
    """Fail unless ml4ml._statistics is built; skip where no C compiler could build it."""
    import shutil
    import sysconfig

    from ml4ml.probe import fused_statistics_available

    if fused_statistics_available():
        return
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) built the fused statistics kernel")
    pytest.fail("ml4ml._statistics is not built although a C compiler is there: "
                "run pip install -e . again and read its build output")
