"""Measure stage: probe groups of a store -> ``matrices/...`` and ``measures/...`` groups.

For each probe group, the models that are done but not yet measured (all of them with
``force``) are measured in ONE dask graph: variance matrices, every registered measure,
accuracy and robust accuracy, written into their own ``mid`` rows. A measure registered
later (``measures.register_measure``) is computed for every already-measured model and
appended along the ``measure`` dim, beside the paper's.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import dask
import numpy as np
import pandas as pd
import xarray as xr

from ml4ml import dims, store
from ml4ml.errors import InputError, StoreError


@dataclass
class MeasureReport:
    suite: str
    transform: str
    measured: list  # mids measured now
    added_measures: list  # measure names appended for already-measured models
    skipped: int  # done models already measured
    seconds: float

    def summary(self) -> str:
        parts = [f"{self.suite}/{self.transform}: measured {len(self.measured)} model(s)"]
        if self.added_measures:
            parts.append(f"added {', '.join(self.added_measures)} for measured models")
        parts.append(f"{self.skipped} already measured")
        return ", ".join(parts) + f" in {self.seconds:.1f} s"


def selected_groups(path, suite=None, transform=None) -> list[tuple[str, str]]:
    """The store's probe groups, filtered; InputError if a filter matches nothing."""
    pairs = store.list_groups(path, "probes")
    if not pairs:
        raise StoreError("the store has no probe groups yet", file=path,
                         hint="probe models first ('ml4ml probe') or import reference files "
                              "('ml4ml import-legacy')")
    chosen = [(s, t) for s, t in pairs if (suite is None or s == suite)
              and (transform is None or t == transform)]
    if not chosen:
        have = ", ".join(f"{s}/{t}" for s, t in pairs)
        raise InputError(f"no probe group matches suite={suite!r} transform={transform!r}; "
                         f"the store has {have}", file=path, field="--suite/--transform")
    return chosen


def measure_store(path, *, suite=None, transform=None, measures=None, force=False,
                  progress=False) -> list[MeasureReport]:
    """Measure every done, unmeasured model of every selected probe group.

    measures : names of registered measures to compute (default: all registered).
    Runs on the active dask scheduler (a ``distributed.Client`` if one is current).
    """
    from ml4ml.measure.measures import registered_measures

    store.store_attrs(path)
    known = list(registered_measures())
    wanted = known if measures is None else list(measures)
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise InputError(f"unknown measure(s) {unknown}; registered: {', '.join(known)}",
                         field="--measure", hint="register it with "
                         "ml4ml.measure.register_measure (or --plugin MODULE)")
    return [_measure_group(path, s, t, wanted, force, progress)
            for s, t in selected_groups(path, suite, transform)]


def _measure_group(path, suite, transform, wanted, force, progress) -> MeasureReport:
    from ml4ml.measure.matrices import variance_matrices
    from ml4ml.measure.measures import measure_database, measure_matrices, registered_measures

    start = time.perf_counter()
    probes = store.open_probes(path, suite, transform)
    done = store.done_mids(probes)
    group = store.measures_group(suite, transform)
    measured, have_names = [], []
    if store.group_exists(path, group):
        old = store.open_group(path, group)
        measured = store.done_mids(old) if dims.DONE in old else []
        have_names = [str(m) for m in old[dims.MEASURE].values]
    added = []
    todo = done if force else [m for m in done if m not in set(measured)]
    names = list(dict.fromkeys(have_names + wanted))
    registered = set(registered_measures())
    lost = [m for m in names if m not in registered]
    if lost and todo:
        warnings.warn(f"measures {lost} are in the store but not registered now: they stay "
                      f"NaN for the newly measured models", stacklevel=2)
    computable = [m for m in names if m in registered]

    # 1. new measure names for models measured before: from the stored matrices (no new
    #    matrices, no re-probing), appended along `measure`
    new_names = [m for m in wanted if m not in have_names]
    if have_names and new_names:
        old_mids = [str(m) for m in old[dims.MID].values]
        stored = store.open_group(path, store.matrices_group(suite, transform))
        value = measure_matrices(stored.sel({dims.MID: old_mids}), new_names)
        _compute(store.append_measures(path, group, value.to_dataset(name=dims.VALUE)),
                 progress)
        added = new_names

    # 2. rows of models not measured yet (every computable name)
    if todo:
        lazy = measure_database(probes, measures=computable)
        matrices = variance_matrices(probes)
        pending = store.write_rows(path, store.matrices_group(suite, transform),
                                   _with_done(matrices), todo, compute=False)
        pending += store.write_rows(path, group, _with_done(lazy), todo, compute=False)
        _compute(pending, progress)  # one graph: matrices are built once for both groups
        store.set_done(path, store.matrices_group(suite, transform), todo)
        store.set_done(path, group, todo)
    return MeasureReport(suite=suite, transform=transform, measured=list(todo),
                         added_measures=added, skipped=len(done) - len(todo),
                         seconds=time.perf_counter() - start)


def open_measures(path, suite: str, transform: str) -> xr.Dataset:
    """The measures group of one suite and transform (lazy)."""
    return store.open_group(path, store.measures_group(suite, transform))


def store_features(path, transform: str, *, suite=None, set: str = "paper80",
                   split: str = "correct") -> pd.DataFrame:
    """One row per measured model: ``mid`` then the feature set's columns, in order."""
    from ml4ml.measure.features import FEATURE_SETS, features

    if set not in FEATURE_SETS:
        raise InputError(f"unknown feature set {set!r}; known: {', '.join(FEATURE_SETS)}",
                         field="--set")
    if split not in dims.SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {dims.SPLITS}",
                         field="--split")
    pairs = [(s, t) for s, t in store.list_groups(path, "measures") if t == transform
             and (suite is None or s == suite)]
    if not pairs:
        raise StoreError(f"no measures for transform {transform!r}"
                         + (f" and suite {suite!r}" if suite else ""), file=path,
                         hint=f"run 'ml4ml measure {path}' first")
    if len(pairs) > 1:
        raise InputError(f"transform {transform!r} is measured on several suites "
                         f"({', '.join(s for s, _ in pairs)}); choose one with --suite",
                         file=path, field="--suite")
    ds = open_measures(path, *pairs[0])
    measured = store.done_mids(ds) if dims.DONE in ds else [str(m) for m in ds[dims.MID].values]
    ds = ds.sel({dims.MID: measured}).load()
    return features(ds, set=set, split=split)


def _with_done(ds: xr.Dataset) -> xr.Dataset:
    """Chunk one model per chunk and add an all-False ``done`` (mid) flag."""
    ds = ds.chunk({dims.MID: 1})
    ds[dims.DONE] = xr.DataArray(np.zeros(ds.sizes[dims.MID], bool), dims=(dims.MID,))
    return ds


def _compute(delayed, progress):
    with _progress(progress), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Consolidated metadata.*")
        dask.compute(delayed)


def _progress(enabled):
    from contextlib import nullcontext

    if not enabled:
        return nullcontext()
    try:
        from distributed import get_client

        get_client()
        return nullcontext()  # the dashboard shows progress on a cluster
    except (ImportError, ValueError):
        from dask.diagnostics import ProgressBar

        return ProgressBar(minimum=1.0)
