"""Derived groups (``matrices/...``, ``measures/...``): rows computed lazily, written per model.

``prepare_rows`` lays a group out (or extends its ``mid`` axis) for the models about to be
written, as one committed layout change, and clears the ``done`` flag of those being
redone. ``row_writes`` turns a lazy dataset into one dask task per model that writes every
variable of that model's row, its lineage values, and then its ``done`` flag; all tasks of
a command are computed together, so variance matrices shared by two groups are built
once. ``append_measures`` adds new names along ``measure`` for every row in one committed
change.
"""

from __future__ import annotations

import dask
import numpy as np
import xarray as xr

from ml4ml import dims
from ml4ml.errors import StoreError
from ml4ml.store.arrays import extend_dim, extend_rows, layout_group, set_flags
from ml4ml.store.groups import group_exists, mid_positions, zarr_group
from ml4ml.store.layout import commit, quiet

__all__ = ["prepare_rows", "row_writes", "append_measures", "clear_rows", "PROBE_DIGEST"]

PROBE_DIGEST = "probe_digest"
_LINEAGE = {PROBE_DIGEST: ("probe digest", "digest of the probe responses this row was "
                           "computed from (the probe group's 'digest')")}


def _layout(ds: xr.Dataset, mids) -> xr.Dataset:
    """``ds`` over ``mids`` with the ``done`` flag and lineage variables added."""
    ds = ds.sel({dims.MID: list(mids)})
    n = len(mids)
    ds = ds.assign({dims.DONE: ((dims.MID,), np.zeros(n, dtype=bool))})
    for name, (long_name, description) in _LINEAGE.items():
        ds[name] = xr.Variable((dims.MID,), np.full(n, "", dtype=object),
                               {"long_name": long_name, "description": description})
    # coordinates without mid are written with the layout: in memory, never dask
    fixed = {name: var.load() if hasattr(var, "load") else var
             for name, var in ds.coords.items() if dims.MID not in var.dims}
    ds = ds.assign_coords({dims.MID: np.asarray(list(mids), dtype=object), **fixed})
    return dims.describe(ds)


def prepare_rows(path, group: str, ds: xr.Dataset, mids) -> list[int]:
    """Rows of ``mids`` in ``group``, laid out (committed) and with ``done`` cleared.

    ds : the group's lazy dataset with a ``mid`` dim covering ``mids``; its variables,
        coordinates and attrs define the layout of a new group.
    """
    mids = [str(m) for m in mids]
    with quiet():
        if not group_exists(path, group, committed=False):
            layout_group(zarr_group(path), group, _layout(ds, mids))
            commit(path)
        else:
            zgroup = zarr_group(path, group)
            have = set(str(m) for m in zgroup[dims.MID][:].tolist())
            new = [m for m in mids if m not in have]
            if new:
                extend_rows(zgroup, new)
                commit(path)
        zgroup = zarr_group(path, group)
        rows = mid_positions(zgroup, mids, path, group)
        done = np.asarray(zgroup[dims.DONE][:], dtype=bool)
        redo = sorted(r for r in rows if done[r])
        if redo:
            set_flags(zgroup, dims.DONE, redo, False)
    return rows


def _write_one_row(arrays: dict, row: int, flag, *blocks_and_values):
    """Task body: write one model's blocks (and lineage values), then its flag."""
    names = list(arrays)
    values = {}
    for name, block in zip(names, blocks_and_values):
        values[name] = np.asarray(block)
    with quiet():
        for name, data in values.items():
            arrays[name][row:row + 1] = data if data.shape[:1] == (1,) else data[None]
        flag[row] = True
    return row


def row_writes(path, group: str, ds: xr.Dataset, mids, rows, extra=None) -> list:
    """One delayed write per model: its row of every ``mid`` variable of ``ds``, then ``done``.

    ds : lazy dataset (dim ``mid`` in the order of ``mids``), one model per chunk.
    rows : the models' row positions in ``group`` (``prepare_rows``).
    extra : {name: values per model} written with the row (lineage, e.g. probe digests).
    """
    extra = extra or {}
    with quiet():
        zgroup = zarr_group(path, group)
    ds = ds.sel({dims.MID: list(mids)})
    names = [name for name, var in ds.data_vars.items() if dims.MID in var.dims
             and name != dims.DONE]
    arrays = {name: zgroup[name] for name in names + list(extra)}
    flag = zgroup[dims.DONE]
    per_variable = []
    for name in names:
        var = ds[name].transpose(dims.MID, ...)
        data = var.data
        if not dask.is_dask_collection(data):
            import dask.array as da

            data = da.from_array(np.asarray(data), chunks=(1,) + var.shape[1:])
        data = data.rechunk((1,) + tuple(-1 for _ in var.shape[1:]))
        per_variable.append(data.to_delayed().ravel())
    writes = []
    for k, row in enumerate(rows):
        blocks = [column[k] for column in per_variable]
        blocks += [np.asarray([extra[name][k]], dtype=object) for name in extra]
        writes.append(dask.delayed(_write_one_row, pure=False)(
            arrays, int(row), flag, *blocks, dask_key_name=f"write-{group}-{row}-{mids[k]}"))
    return writes


def append_measures(path, group: str, value: xr.DataArray) -> None:
    """Add the names of ``value``'s ``measure`` dim to ``group`` for every row, committed.

    value : computed values (mid, level, split, interval, measure) for the group's models
        in its row order.
    """
    with quiet():
        zgroup = zarr_group(path, group)
        have = [str(m) for m in zgroup[dims.MID][:].tolist()]
        if [str(m) for m in value[dims.MID].values] != have:
            raise StoreError("the models to append measures for differ from the group's",
                             file=path, field=f"{group}/{dims.MID}")
        names = [str(m) for m in value[dims.MEASURE].values]
        start = extend_dim(zgroup, dims.MEASURE, names)
        target = zgroup[dims.VALUE]
        order = list(target.metadata.dimension_names)
        data = value.transpose(*order).values
        index = [slice(None)] * target.ndim
        index[order.index(dims.MEASURE)] = slice(start, start + len(names))
        target[tuple(index)] = data
    commit(path)


def clear_rows(path, group: str, mids) -> None:
    """Clear ``done`` for those of ``mids`` in ``group`` (their inputs changed)."""
    if not group_exists(path, group, committed=False):
        return
    with quiet():
        zgroup = zarr_group(path, group)
        have = {str(m): k for k, m in enumerate(zgroup[dims.MID][:].tolist())}
        rows = sorted(have[m] for m in mids if m in have)
        set_flags(zgroup, dims.DONE, rows, False)


