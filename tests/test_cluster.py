"""Worker processes of a real LocalCluster: malloc settings that keep probing fast."""

import resource
import sys

import numpy as np
import pytest

from ml4ml.cluster import dask_client, keep_freed_memory, prepare_dask_worker

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
    in_worker = prepare_dask_worker()  # what the train and probe tasks call first
    return (os.environ.get("MALLOC_TRIM_THRESHOLD_"), default, in_worker,
            _faults_of_fresh_megabytes())


def test_dask_worker_reuses_freed_memory_once_prepared():
    with dask_client(workers=1) as client:
        trim, default, in_worker, after = client.submit(_worker_faults, pure=False).result()
    # dask's nanny pins the trim threshold, so every MiB is mapped afresh: 256 faults each
    assert trim == "65536"
    assert default > 100 * 200
    assert in_worker is True
    assert after < default / 20


def test_prepare_dask_worker_does_nothing_outside_a_worker():
    assert prepare_dask_worker() is False
    assert keep_freed_memory() is True  # glibc: the call itself works in any process
