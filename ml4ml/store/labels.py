"""Label groups ``labels/<transform>``: labels per model and source, and expert ratings.

Layout (dims ``mid``, ``source``, ``rater``)::

    label        (mid, source)  int8     1 invariant, 0 variant, -1 unknown
    source_description (source) str      where the labels came from (file and sha256, rule)
    written_at   (source)       float64  seconds since 1970-01-01 (UTC) of the last write
    rating       (rater, mid)   int8     an expert's label: 1, 0, or -1 (none, or skipped)
    rated_at     (rater, mid)   float64  when it was given
    attrs: transform; current_source (the labels the assessors use, the last written)

The ``mid`` axis covers every model of the ``models`` table when a label is written (it is
extended as models are added). A source's labels are written whole, then it becomes the
current source; each rating is one write of its rater's row. Every write holds the
store's lock.
"""

from __future__ import annotations

import time

import numpy as np
import xarray as xr

from ml4ml import dims
from ml4ml.errors import StoreError
from ml4ml.store.arrays import ROW_CHUNK, extend_dim, extend_rows, fit, layout_group
from ml4ml.store.groups import group_exists, labels_group, read_group, zarr_group
from ml4ml.store.layout import begin, commit, quiet
from ml4ml.store.models import model_ids

__all__ = ["SOURCE", "RATER", "UNKNOWN", "write_labels", "read_labels", "write_rating",
           "read_ratings", "current_source", "TIME_UNITS"]

SOURCE = "source"
RATER = "rater"
UNKNOWN = -1
TIME_UNITS = "seconds since 1970-01-01T00:00:00Z"
_ATTRS = {
    "label": ("label", "1 invariant, 0 variant, -1 unknown, per model and source"),
    "source_description": ("label source", "where the labels came from"),
    "written_at": ("written at", "when the source's labels were last written"),
    "rating": ("expert rating", "a rater's label: 1 invariant, 0 variant, -1 none or skipped"),
    "rated_at": ("rated at", "when the rating was given"),
    dims.MID: ("model id", "id of the model in the models table"),
    SOURCE: ("label source", "recipe, a file, expert (merged ratings), ..."),
    RATER: ("rater", "name of an expert rater"),
}


def _describe(ds: xr.Dataset) -> xr.Dataset:
    for name, (long_name, description) in _ATTRS.items():
        if name in ds.variables:
            ds[name].attrs.update(long_name=long_name, description=description)
    for name in ("written_at", "rated_at"):
        if name in ds.variables:
            ds[name].attrs["units"] = TIME_UNITS
    return ds


def _ensure(path, transform: str, *, source: str | None = None, rater: str | None = None):
    """The labels group with every model of the table, ``source`` and ``rater`` on its axes."""
    group = labels_group(transform)
    mids = model_ids(path)
    if not mids:
        raise StoreError("the store has no models to label yet", file=path,
                         hint="train, probe or import models first")
    with quiet():
        if not group_exists(path, group):
            begin(path, group)
            n = len(mids)
            sources = [source] if source else []
            raters = [rater] if rater else []
            ds = xr.Dataset(
                {"label": ((dims.MID, SOURCE), np.full((n, len(sources)), UNKNOWN, np.int8)),
                 "source_description": ((SOURCE,), np.full(len(sources), "", dtype=object)),
                 "written_at": ((SOURCE,), np.full(len(sources), np.nan)),
                 "rating": ((RATER, dims.MID), np.full((len(raters), n), UNKNOWN, np.int8)),
                 "rated_at": ((RATER, dims.MID), np.full((len(raters), n), np.nan))},
                coords={dims.MID: np.asarray(mids, dtype=object),
                        SOURCE: np.asarray(sources, dtype=object),
                        RATER: np.asarray(raters, dtype=object)},
                attrs={"transform": transform, "current_source": "",
                       "title": f"labels of every model for '{transform}'"})
            layout_group(zarr_group(path), group, _describe(ds), mid_chunk=ROW_CHUNK,
                         write="all")
            commit(path, group)
            return zarr_group(path, group, committed=True)
        zgroup = zarr_group(path, group)
        have = [str(m) for m in zgroup[dims.MID][:].tolist()]
        new = [m for m in mids if m not in set(have)]
        new_source = source and source not in [str(s) for s in zgroup[SOURCE][:].tolist()]
        new_rater = rater and rater not in [str(r) for r in zgroup[RATER][:].tolist()]
        if not (new or new_source or new_rater):
            return zarr_group(path, group, committed=True)
        begin(path, group)
        if new:
            extend_rows(zgroup, new, fill_fixed={
                "label": np.full((len(new), zgroup["label"].shape[1]), UNKNOWN, np.int8)})
            zgroup = zarr_group(path, group)
        if new_source:
            extend_dim(zgroup, SOURCE, [source])
            zgroup = zarr_group(path, group)
        if new_rater:
            extend_dim(zgroup, RATER, [rater])
        commit(path, group)
        return zarr_group(path, group, committed=True)


def write_labels(path, transform: str, source: str, labels: dict, description: str) -> None:
    """Write one source's labels ({mid: 0/1}; other models unknown) and make it current.

    The caller holds the store's lock and has validated ``labels`` (known mids, 0/1).
    """
    zgroup = _ensure(path, transform, source=source)
    mids = [str(m) for m in zgroup[dims.MID][:].tolist()]
    sources = [str(s) for s in zgroup[SOURCE][:].tolist()]
    column = sources.index(source)
    values = np.full(len(mids), UNKNOWN, dtype=np.int8)
    for k, mid in enumerate(mids):
        if mid in labels:
            values[k] = int(labels[mid])
    with quiet():
        array = zgroup["label"]
        data = array[...]
        data[:, column] = values
        array[...] = data
        for name, value in (("source_description", description), ("written_at", time.time())):
            target = zgroup[name]
            current = target[...]
            if current.dtype.kind == "T":
                current = current.astype(object)
            current[column] = fit(target, [value], name)[0]
            target[...] = current
        begin(path, labels_group(transform))
        zgroup.attrs["current_source"] = source
    commit(path, labels_group(transform))


def write_rating(path, transform: str, rater: str, mid: str, label: int) -> float:
    """Record ``rater``'s label (1, 0, or -1 to skip) for ``mid`` now; return the time.

    The caller holds the store's lock.
    """
    zgroup = _ensure(path, transform, rater=rater)
    mids = [str(m) for m in zgroup[dims.MID][:].tolist()]
    raters = [str(r) for r in zgroup[RATER][:].tolist()]
    if mid not in mids:
        raise StoreError(f"model {mid!r} is not in the store", file=path, field="mid")
    row, column = raters.index(rater), mids.index(mid)
    now = time.time()
    with quiet():
        for name, value in (("rated_at", now), ("rating", int(label))):  # the label last
            array = zgroup[name]
            data = array[row:row + 1]
            data[0, column] = value
            array[row:row + 1] = data
    return now


def read_labels(path, transform: str) -> xr.Dataset | None:
    """The labels group, loaded (times decoded to datetime64); None if there is none."""
    group = labels_group(transform)
    if not group_exists(path, group):
        return None
    ds = read_group(path, group)
    return ds.assign_coords({name: ds[name].values.astype(object)
                             for name in (dims.MID, SOURCE, RATER)})


def read_ratings(path, transform: str) -> xr.Dataset | None:
    """The ratings of every rater (rater, mid) with their times; None without a group."""
    ds = read_labels(path, transform)
    return None if ds is None else ds[["rating", "rated_at"]]


def current_source(path, transform: str) -> str:
    ds = read_labels(path, transform)
    return "" if ds is None else str(ds.attrs.get("current_source", ""))

