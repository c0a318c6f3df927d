"""User response measures for tests/test_response_measures.py, in a module a dask worker
process can import (functions are sent to workers by reference, as a user's would be)."""

from __future__ import annotations

import numpy as np


def orbit_range(block):
    """Mean over samples and units of the range over the grid, (..., P, S, U) -> (...)."""
    return np.ptp(block, axis=-3).mean(axis=(-2, -1))


def worker_orbit_range(block):
    """``orbit_range``, refusing to run anywhere but in a dask worker."""
    from distributed import get_worker

    get_worker()  # ValueError outside a worker
    return orbit_range(block)


def identity_gap(block, identity_index, aug_param, predictions):
    """Mean |x - x(identity)| over grid, samples and units, plus the identity's grid value
    and the fraction of predictions equal to 0 (so the test sees every keyword arrive)."""
    gap = np.abs(block - block[..., identity_index : identity_index + 1, :, :])
    return gap.mean(axis=(-3, -2, -1)) + aug_param[identity_index] + (predictions == 0).mean(
        axis=(-2, -1))
