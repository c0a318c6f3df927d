"""Worker processes of a real LocalCluster: malloc settings that keep probing fast."""

import resource
import sys

import numpy as np
import pytest

from ml4ml.cluster import dask_client, keep_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")


def _faults_of_fresh_megabytes(n: int = 100) -> int:
    """Minor page faults while allocating, filling and freeing n arrays of 1 MiB."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        block = np.ones(2**18, dtype=np.float32)
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _worker_faults() -> tuple[str | None, int, bool, int]:
    import os

    default = _faults_of_fresh_megabytes()
    kept = keep_freed_memory()
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), default, kept, _faults_of_fresh_megabytes()


def test_dask_worker_reuses_freed_memory_after_keep_freed_memory():
    with dask_client(workers=1) as client:
        trim, default, kept, after = client.submit(_worker_faults, pure=False).result()
    # dask's nanny pins the trim threshold, so every MiB is mapped afresh: 256 faults each
    assert trim == "65536"
    assert default > 100 * 200
    assert kept is True
    assert after < default / 20
