"""Import the reference implementation's per-model .npy files into a store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import xarray as xr

from ml4ml import dims
from ml4ml.errors import InputError, StoreError
from ml4ml.store import groups, models, probes
from ml4ml.store.lock import writing

__all__ = ["import_legacy"]


def _files_sha256(*files) -> str:
    h = hashlib.sha256()
    for file in files:
        h.update(Path(file).read_bytes())
    return h.hexdigest()


def import_legacy(path, mid: str, results, act, *, transform: str = "rotation",
                  suite: str = "legacy", force: bool = False) -> xr.Dataset:
    """Read one model's ``test_results*.npy`` and ``test_actoverall*.npy`` into the store.

    Everything is validated before the store is touched: a bad file, a grid without an
    identity, or a grid/sample set that differs from the group's leaves the store as it
    was. A new store is created with float64 precision. With ``force`` a model imported
    before is replaced, and its matrices and measures are redone by the next measure
    (lineage: the probe digest). Returns the imported probe.
    """
    from ml4ml.store.legacy import read_legacy

    probe = read_legacy(results, act, transform=transform)
    if not mid or not str(mid).replace("_", "").replace("-", "").isalnum():
        raise InputError(f"model id must be letters, digits, '-' or '_', got {mid!r}",
                         field="--mid")
    group = groups.probe_group(suite, transform)
    exists = groups.store_exists(path)
    if exists:
        groups.store_attrs(path)
    with writing(path, f"ml4ml import-legacy {mid}"):
        if exists and groups.group_exists(path, group):
            existing = probes.open_probes(path, suite, transform)
            probes.check_compatible(existing, probe, path, group)
            if mid in groups.done_mids(existing) and not force:
                raise StoreError(f"model {mid!r} is already in '{group}'", file=path,
                                 field="--mid", hint="use --force to overwrite it")
        groups.create_store(path, precision="float64")
        probes.init_probes(path, suite, transform, probe, [mid])
        table = xr.Dataset(
            {
                "holdout": ((dims.MID,), np.array([str(mid).startswith("t")])),
                "source": ((dims.MID,), np.array(["legacy"], dtype=object)),
                "results_file": ((dims.MID,), np.array([str(results)], dtype=object)),
                "act_file": ((dims.MID,), np.array([str(act)], dtype=object)),
            },
            coords={dims.MID: np.array([mid], dtype=object)},
        )
        models.add_models(path, table)
        probes.write_probe(path, suite, transform, mid, probe,
                           source_sha256=_files_sha256(results, act))
    return probe
