"""``ml4ml measures rank``: every single measure of a store ranked against its labels.

``rank_store`` reads every matrix and response measure column of one transform
(``ml4ml.measure.columns``), the labels of one source and the hold-out flags, ranks the
columns (``ml4ml.assess.rank``) and writes the result to ``assess/<transform>/rank``
(``store.rank_group``): a child of the assess group, so neither ``ml4ml assess`` nor the
rank replaces the other's arrays. Lineage: the rank records its label source and digests
of the labels and of the labelled models' measure columns; ``check_rank`` says whether
they still hold.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from ml4ml import store
from ml4ml.assess.inputs import holdout_flags, stored_labels
from ml4ml.assess.rank import rank_columns
from ml4ml.errors import InputError, StoreError

__all__ = ["rank_store", "read_rank", "check_rank", "RankReport"]

# rank_columns' coordinates from measure_columns' "about" keys
_ABOUT = ("family", "level", "split", "interval", "measure")


@dataclass
class RankReport:
    transform: str
    label_source: str
    n_models: int  # labelled and measured
    n_columns: int
    n_scored: int
    unlabelled: int  # measured models without a label
    rank: xr.Dataset
    seconds: float


def _inputs(path, transform, suite, labels):
    """(labelled table (n_models, n_columns), about, labels, holdout, source, unlabelled)."""
    from ml4ml.measure.columns import measure_columns
    from ml4ml.measure.stage import store_measures

    source, by_mid = stored_labels(path, transform, labels)
    table, about = measure_columns(store_measures(path, transform, suite=suite))
    if table.shape[1] == 0:
        raise StoreError(f"the measures of {transform!r} hold no measure values", file=path,
                         hint=f"run 'ml4ml measure {path} --force'")
    label = np.asarray([by_mid.get(str(m), -1) for m in table.index], dtype=np.int64)
    holdout = np.asarray(holdout_flags(store.read_models(path), list(table.index)))
    known = label >= 0
    return (table[known], about, label[known], holdout[known], source,
            int((~known).sum()))


def features_digest(table: pd.DataFrame) -> str:
    """sha256 of the labelled models' ids, column names and values."""
    h = hashlib.sha256()
    h.update(json.dumps([list(map(str, table.index)), list(map(str, table.columns))]).encode())
    h.update(np.ascontiguousarray(table.to_numpy(np.float64)).tobytes())
    return h.hexdigest()


def labels_digest(mids, labels) -> str:
    return hashlib.sha256(json.dumps([[str(m), int(v)] for m, v in zip(mids, labels)])
                          .encode()).hexdigest()


def rank_store(path, transform: str, *, suite=None, labels: str | None = None,
               repeats: int = 10, seed: int = 0, n_boot: int = 2000) -> RankReport:
    """Rank every measure of ``transform`` against the labels; write ``assess/<t>/rank``.

    labels : label source (default the current one). repeats, seed : the protocol's.
    n_boot : bootstrap resamples of the AUC interval. Nothing is written on an error.
    """
    started = time.perf_counter()
    table, about, label, holdout, source, unlabelled = _inputs(path, transform, suite,
                                                               labels)
    if holdout.sum() < 2 or (~holdout).sum() < 2:
        raise InputError(f"ranking needs at least 2 hold-out and 2 regular labelled, measured "
                         f"models; found {int(holdout.sum())} and {int((~holdout).sum())}",
                         file=path, field="labels")
    ds = rank_columns(table.to_numpy(np.float64), label, holdout, list(table.columns),
                      coords={f"rank_{key}": about[key] for key in _ABOUT}, repeats=repeats,
                      seed=seed, n_boot=n_boot)
    ds = ds.reset_coords([f"rank_{key}" for key in _ABOUT])
    ds["rank_family"].attrs = {"long_name": "family", "description": "matrix: a measure of "
                               "a variance matrix; response: a measure of the responses"}
    ds.attrs.update({
        "title": f"every single measure of '{transform}' ranked against the labels",
        "transform": transform, "suite": suite or "", "label_source": source,
        "labels_digest": labels_digest(table.index, label),
        "features_digest": features_digest(table),
        "n_models": int(label.size), "n_columns": int(table.shape[1]),
        "families": json.dumps(sorted(set(about["family"].tolist()))),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    with store.writing(path, f"ml4ml measures rank {transform}"):
        store.replace_group(path, store.rank_group(transform), ds)
    return RankReport(transform=transform, label_source=source, n_models=int(label.size),
                      n_columns=int(table.shape[1]), n_scored=int(ds.attrs["n_scored"]),
                      unlabelled=unlabelled, rank=ds, seconds=time.perf_counter() - started)


def read_rank(path, transform: str) -> xr.Dataset | None:
    """The stored rank of ``transform`` (loaded), or None where there is none."""
    group = store.rank_group(transform)
    if not store.group_exists(path, group):
        return None
    return store.read_group(path, group)


def check_rank(path, transform: str, rank: xr.Dataset | None = None) -> str:
    """Why the stored rank is stale ("" while its labels and measures are those it was
    made from); the reason names the command that redoes it."""
    rank = read_rank(path, transform) if rank is None else rank
    if rank is None:
        return ""
    attrs = rank.attrs
    redo = f"run 'ml4ml measures rank {path} --transform {transform}' to redo it"
    try:
        table, _, label, _, _, _ = _inputs(path, transform, attrs.get("suite") or None,
                                           attrs.get("label_source"))
    except (InputError, StoreError) as exc:
        return f"the rank cannot be checked: {exc}; {redo}"
    if labels_digest(table.index, label) != attrs.get("labels_digest"):
        return f"the labels {attrs.get('label_source')!r} changed since the rank; {redo}"
    if features_digest(table) != attrs.get("features_digest"):
        return f"the measures changed since the rank; {redo}"
    return ""
