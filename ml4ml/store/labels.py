"""Label groups ``labels/<transform>``: labels per model and source, and expert ratings.

Layout (dims ``mid``, ``source``, ``rater``)::

    label        (mid, source)  int8     1 invariant, 0 variant, -1 unknown
    source_description (source) str      where the labels came from (file and sha256, rule)
    written_at   (source)       float64  seconds since 1970-01-01 (UTC) of the last write
    rating       (rater, mid)   int8     an expert's label: 1, 0, or -1 (none, or skipped)
    rated_at     (rater, mid)   float64  when it was given (a skip has a time, "none" has not)
    pick         (rater, mid)   int8     how the labelling page picked the model for that
                                         rater (``PICKS``; -1 unrecorded), kept from the
                                         first rating on (CF ``flag_values``/``flag_meanings``)
    attrs: transform; current_source (the labels the assessors use, the last written)

The ``mid`` axis covers every model of the ``models`` table when a label is written (it is
extended as models are added). A source's labels are written whole, then it becomes the
current source; each rating is one write of its rater's row (``pick``, then
``rated_at``, the label last). Every write holds the store's lock. A group written before
``pick`` existed gets it (every entry unrecorded) at its next rating; ``read_labels``
shows it as unrecorded meanwhile.

``pick`` tells a random pick from a chosen one (``RANDOM_PICKS``): ``overlap`` (the
models every rater is shown first, ``label-ui --overlap``), ``start`` (the active order's
random start), ``random`` (its random picks), ``seeded`` (the next model of the rater's own
random order) are drawn at random among the models not yet rated; ``least_sure`` (the
active order's pick) and ``browsed`` (a model the rater reached with the arrows and
rated, not the one offered) are not.
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

__all__ = ["SOURCE", "RATER", "UNKNOWN", "PICK", "PICKS", "RANDOM_PICKS", "UNRECORDED",
           "write_labels", "read_labels", "write_rating", "read_ratings", "current_source",
           "TIME_UNITS", "pick_names"]

SOURCE = "source"
RATER = "rater"
UNKNOWN = -1
TIME_UNITS = "seconds since 1970-01-01T00:00:00Z"
PICK = "pick"
# how a model was picked for a rater: the stored codes (the order of the CF flag_meanings)
PICKS = {"overlap": 1, "start": 2, "random": 3, "seeded": 4, "least_sure": 5, "browsed": 6}
RANDOM_PICKS = ("overlap", "start", "random", "seeded")
UNRECORDED = -1
_ATTRS = {
    "label": ("label", "1 invariant, 0 variant, -1 unknown, per model and source"),
    "source_description": ("label source", "where the labels came from"),
    "written_at": ("written at", "when the source's labels were last written"),
    "rating": ("expert rating", "a rater's label: 1 invariant, 0 variant, -1 none or skipped"),
    "rated_at": ("rated at", "when the rating was given"),
    PICK: ("pick", "how the labelling page picked the model for the rater (-1 unrecorded; "
                   "overlap, start, random and seeded are random picks)"),
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
    if PICK in ds.variables:
        ds[PICK].attrs.update(_pick_flags())
    return ds


def _pick_flags() -> dict:
    """The CF attributes that name ``pick``'s codes."""
    return {"flag_values": list(PICKS.values()), "flag_meanings": " ".join(PICKS)}


def pick_names(codes) -> np.ndarray:
    """``pick`` codes as their names (object array of the same shape; "" unrecorded)."""
    names = {v: k for k, v in PICKS.items()}
    codes = np.asarray(codes)
    out = np.full(codes.shape, "", dtype=object)
    for code, name in names.items():
        out[codes == code] = name
    return out


def _add_pick(path, group: str, zgroup) -> None:
    """Give a labels group written before ``pick`` existed its ``pick`` array (every entry
    unrecorded), as one committed layout change."""
    from ml4ml.store.arrays import COMPRESSOR

    rating = zgroup["rating"]
    begin(path, group)
    with quiet():
        zgroup.create_array(PICK, shape=rating.shape, dtype=np.int8, chunks=rating.chunks,
                            fill_value=UNRECORDED, dimension_names=[RATER, dims.MID],
                            compressors=[COMPRESSOR],
                            attributes={"long_name": _ATTRS[PICK][0],
                                        "description": _ATTRS[PICK][1], **_pick_flags()})
    commit(path, group)


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
                 "rated_at": ((RATER, dims.MID), np.full((len(raters), n), np.nan)),
                 PICK: ((RATER, dims.MID), np.full((len(raters), n), UNRECORDED, np.int8))},
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
        if rater and PICK not in zgroup:
            _add_pick(path, group, zgroup)
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


def write_rating(path, transform: str, rater: str, mid: str, label: int,
                 pick: str | None = None) -> float:
    """Record ``rater``'s label (1, 0, or -1 to skip) for ``mid`` now; return the time.

    pick : how the model was picked (a name of ``PICKS``), recorded with the rater's first
        rating of ``mid`` (a skip included) and kept after: a later label of a model
        skipped or labelled before keeps how it was first picked.
    The caller holds the store's lock.
    """
    if pick is not None and pick not in PICKS:
        raise ValueError(f"unknown pick {pick!r}; known: {', '.join(PICKS)}")
    zgroup = _ensure(path, transform, rater=rater)
    mids = [str(m) for m in zgroup[dims.MID][:].tolist()]
    raters = [str(r) for r in zgroup[RATER][:].tolist()]
    if mid not in mids:
        raise StoreError(f"model {mid!r} is not in the store", file=path, field="mid")
    row, column = raters.index(rater), mids.index(mid)
    now = time.time()
    writes = [("rated_at", now), ("rating", int(label))]  # the label last
    with quiet():
        first = bool(np.isnan(zgroup["rated_at"][row, column]))
        if pick is not None and first:
            writes.insert(0, (PICK, PICKS[pick]))
        for name, value in writes:
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
    if PICK not in ds:  # written before picks were recorded
        ds[PICK] = xr.full_like(ds["rating"], UNRECORDED, dtype=np.int8)
        ds = _describe(ds)
    return ds.assign_coords({name: ds[name].values.astype(object)
                             for name in (dims.MID, SOURCE, RATER)})


def read_ratings(path, transform: str) -> xr.Dataset | None:
    """The ratings of every rater (rater, mid) with their times and picks; None without a
    group."""
    ds = read_labels(path, transform)
    return None if ds is None else ds[["rating", "rated_at", PICK]]


def current_source(path, transform: str) -> str:
    ds = read_labels(path, transform)
    return "" if ds is None else str(ds.attrs.get("current_source", ""))

