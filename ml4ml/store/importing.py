"""Import the reference implementation's per-model .npy files into a store."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ml4ml import dims, store
from ml4ml.errors import StoreError


def import_legacy(path, mid: str, results, act, *, transform: str = "rotation",
                  suite: str = "legacy", force: bool = False) -> xr.Dataset:
    """Read one model's ``test_results*.npy`` and ``test_actoverall*.npy`` into the store.

    Everything is validated before the store is touched: a bad file, a grid without an
    identity, or a grid/sample set that differs from the group's leaves the store as it
    was. A new store is created with float64 precision. Returns the imported probe.
    """
    from ml4ml.store.legacy import read_legacy

    probe = read_legacy(results, act, transform=transform)
    if not mid or not str(mid).replace("_", "").replace("-", "").isalnum():
        raise StoreError(f"model id must be letters, digits, '-' or '_', got {mid!r}",
                         field="--mid")
    exists = store.store_exists(path)
    group = store.probe_group(suite, transform)
    if exists and store.group_exists(path, group):
        existing = store.open_probes(path, suite, transform)
        store.check_compatible(existing, probe, path, group)
        if mid in store.done_mids(existing) and not force:
            raise StoreError(f"model {mid!r} is already in '{group}'", file=path,
                             field="--mid", hint="use --force to overwrite it")
    store.create_store(path, precision="float64")
    store.init_probes(path, suite, transform, probe, [mid])
    table = xr.Dataset(
        {
            "holdout": ((dims.MID,), np.array([str(mid).startswith("t")])),
            "source": ((dims.MID,), np.array(["legacy"], dtype=object)),
            "results_file": ((dims.MID,), np.array([str(results)], dtype=object)),
            "act_file": ((dims.MID,), np.array([str(act)], dtype=object)),
        },
        coords={dims.MID: np.array([mid], dtype=object)},
    )
    store.add_models(path, table)
    store.write_probe(path, suite, transform, mid, probe)
    return probe
