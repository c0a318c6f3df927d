"""Derived groups (``matrices/...``, ``measures/...``): rows computed lazily, written per model.

``prepare_rows`` lays a group out (or extends its ``mid`` axis) for the models about to be
written, as one committed layout change, and clears the ``done`` flag of those being
redone. ``RowWrites`` turns a lazy dataset into one dask task per model that writes that
model's large variables; as tasks complete, the driver writes their small values (lineage)
and then their ``done`` flags. The tasks of a batch of models are computed together, so
variance matrices shared by two groups are built once. ``append_measures`` adds new names
along ``measure`` for every row in one committed change, ``append_responses`` new names
along ``response_measure`` (and the array itself to a group of an earlier version).
"""

from __future__ import annotations

import dask
import numpy as np
import xarray as xr

from ml4ml import dims
from ml4ml.errors import StoreError
from ml4ml.store.arrays import (ROW_TABLE_VARIABLES, add_arrays, extend_dim, extend_rows, fit,
                                layout_group, set_flags, write_table_rows)
from ml4ml.store.groups import group_exists, mid_positions, select_rows, zarr_group
from ml4ml.store.layout import begin, commit, quiet

__all__ = ["prepare_rows", "RowWrites", "append_measures", "append_responses", "stored_labels",
           "clear_done", "rewrite_coordinate",
           "PROBE_DIGEST"]

PROBE_DIGEST = "probe_digest"
_LINEAGE = {PROBE_DIGEST: ("probe digest", "digest of the probe responses this row was "
                           "computed from (the probe group's 'digest')")}


def _layout(ds: xr.Dataset, mids) -> xr.Dataset:
    """``ds`` over ``mids`` with the ``done`` flag and lineage variables added."""
    ds = select_rows(ds, mids)
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
        if not group_exists(path, group):
            begin(path, group)
            layout_group(zarr_group(path), group, _layout(ds, mids))
            commit(path, group)
        else:
            zgroup = zarr_group(path, group)
            have = set(str(m) for m in zgroup[dims.MID][:].tolist())
            new = [m for m in mids if m not in have]
            if new:
                begin(path, group)
                extend_rows(zgroup, new)
                commit(path, group)
        zgroup = zarr_group(path, group, committed=True)
        rows = mid_positions(zgroup, mids, path, group)
        done = np.asarray(zgroup[dims.DONE][:], dtype=bool)
        redo = sorted(r for r in rows if done[r])
        if redo:
            set_flags(zgroup, dims.DONE, redo, False)
    return rows


def _write_one_row(arrays: dict, row: int, *blocks):
    """Task body: write one model's blocks into row ``row`` of each array; return the row."""
    with quiet():
        for (name, array), block in zip(arrays.items(), blocks):
            data = np.asarray(block)
            array[row:row + 1] = data if data.shape[:1] == (1,) else data[None]
    return row


class RowWrites:
    """The writes of one derived group's rows: one dask task per model, then its flags.

    ``tasks`` write each model's large variables (one chunk each). ``finish(mids)``, run
    by the driver as tasks complete, writes those models' small values (lineage,
    ``layer_name``: ``ROW_TABLE_VARIABLES``) and then their ``done`` flags.
    """

    def __init__(self, path, group: str, ds: xr.Dataset, mids, rows, table=None):
        self.path, self.group = path, group
        self.mids = [str(m) for m in mids]
        self.rows = dict(zip(self.mids, (int(r) for r in rows)))
        ds = select_rows(ds, self.mids)
        per_model = [name for name, var in ds.data_vars.items()
                     if dims.MID in var.dims and name != dims.DONE]
        small = [name for name in per_model if name in ROW_TABLE_VARIABLES]
        large = [name for name in per_model if name not in ROW_TABLE_VARIABLES]
        self.table = dict(table or {})
        for name in small:  # small per-model values: computed now, written with the flags
            self.table[name] = ds[name].transpose(dims.MID, ...).values
        with quiet():
            zgroup = zarr_group(path, group, committed=True)
        arrays = {name: zgroup[name] for name in large}
        columns = []
        for name in large:
            var = ds[name].transpose(dims.MID, ...)
            data = var.data
            if not dask.is_dask_collection(data):
                import dask.array as da

                data = da.from_array(np.asarray(data), chunks=(1,) + var.shape[1:])
            data = data.rechunk((1,) + tuple(-1 for _ in var.shape[1:]))
            # unoptimised: optimising each variable alone would fuse (and so duplicate) the
            # tasks variables share, e.g. the variance matrices behind every measure
            columns.append(data.to_delayed(optimize_graph=False).ravel())
        self.keys = {}
        self.tasks = []
        for k, mid in enumerate(self.mids):
            key = f"write-{group}-{mid}"
            self.keys[key] = mid
            self.tasks.append(dask.delayed(_write_one_row, pure=False)(
                arrays, self.rows[mid], *[column[k] for column in columns],
                dask_key_name=key))

    def finish(self, mids) -> None:
        """Write the small values of ``mids`` (whose tasks completed), then their flags."""
        mids = [str(m) for m in mids]
        if not mids:
            return
        position = {m: k for k, m in enumerate(self.mids)}
        take = [position[m] for m in mids]
        values = {name: np.asarray(column)[take] for name, column in self.table.items()}
        with quiet():
            zgroup = zarr_group(self.path, self.group, committed=True)
            write_table_rows(zgroup, [self.rows[m] for m in mids], values, flag=dims.DONE)


def append_measures(path, group: str, value: xr.DataArray) -> None:
    """Add the names of ``value``'s ``measure`` dim to ``group`` for every row, committed.

    value : computed values (mid, level, split, interval, measure) for the group's models
        in its row order.
    """
    with quiet():
        zgroup = _same_rows(path, group, value, "measures")
        begin(path, group)
        start = extend_dim(zgroup, dims.MEASURE, [str(m) for m in value[dims.MEASURE].values])
        _write_along(zgroup[dims.VALUE], dims.MEASURE, start, value)
    commit(path, group)


def _same_rows(path, group: str, value: xr.DataArray, what: str):
    """The group (zarr), after checking that ``value`` covers its rows in its order."""
    zgroup = zarr_group(path, group)
    have = [str(m) for m in zgroup[dims.MID][:].tolist()]
    if [str(m) for m in value[dims.MID].values] != have:
        raise StoreError(f"the models to append {what} for differ from the group's",
                         file=path, field=f"{group}/{dims.MID}")
    return zgroup


def _write_along(target, dim: str, start: int, value: xr.DataArray) -> None:
    """Write ``value`` into ``target`` from position ``start`` of ``dim`` on."""
    order = list(target.metadata.dimension_names)
    index = [slice(None)] * target.ndim
    index[order.index(dim)] = slice(start, start + value.sizes[dim])
    target[tuple(index)] = value.transpose(*order).values


def append_responses(path, group: str, value: xr.DataArray) -> None:
    """Add the names of ``value``'s ``response_measure`` dim to ``group`` for every row,
    in one committed change; a group without ``response_value`` (written by an earlier
    version) gains the array and its ``response_measure`` coordinate.

    value : ``response_value`` (mid, level, response_measure) float64 for the group's
        models in its row order (NaN for rows not computed).
    """
    with quiet():
        zgroup = _same_rows(path, group, value, "response measures")
        levels = [str(level) for level in zgroup[dims.LEVEL][:].tolist()]
        if [str(level) for level in value[dims.LEVEL].values] != levels:
            raise StoreError("the response measures' levels differ from the group's",
                             file=path, field=f"{group}/{dims.LEVEL}")
        names = [str(m) for m in value[dims.RESPONSE_MEASURE].values]
        begin(path, group)
        if dims.RESPONSE_VALUE not in zgroup:
            value = value.assign_coords({dims.RESPONSE_MEASURE: np.array(names, dtype=object)})
            add_arrays(zgroup, dims.describe(xr.Dataset({dims.RESPONSE_VALUE: value})))
            zgroup, start = zarr_group(path, group), 0
        else:
            start = extend_dim(zgroup, dims.RESPONSE_MEASURE, names)
        _write_along(zgroup[dims.RESPONSE_VALUE], dims.RESPONSE_MEASURE, start,
                     value.astype(np.float64))
    commit(path, group)


def stored_labels(path, group: str, name: str) -> list[str] | None:
    """The labels of the small coordinate ``name`` of ``group`` (e.g. the response measures
    a measures group holds), read alone; None where the group or the array is absent."""
    if not group_exists(path, group):
        return None
    with quiet():
        zgroup = zarr_group(path, group, committed=True)
        if name not in zgroup:
            return None
        return [str(v) for v in zgroup[name][:].tolist()]


def clear_done(path, group: str, mids, *, flag: str = dims.DONE) -> list[str]:
    """Clear the ``done`` flag of those of ``mids`` that are done in ``group``; return them.

    Run before a model's rows are overwritten, and for rows whose inputs changed.
    flag : the flag to clear (``trained`` in the models table).
    """
    if not group_exists(path, group):
        return []
    with quiet():
        zgroup = zarr_group(path, group, committed=True)
        have = {str(m): k for k, m in enumerate(zgroup[dims.MID][:].tolist())}
        done = np.asarray(zgroup[flag][:], dtype=bool)
        cleared = [m for m in dict.fromkeys(str(m) for m in mids) if m in have and done[have[m]]]
        set_flags(zgroup, flag, [have[m] for m in cleared], False)
    return cleared


def rewrite_coordinate(path, group: str, name: str, values) -> bool:
    """Overwrite the values of the small coordinate ``name`` of ``group`` (same shape, one
    write) where they differ; return whether they did. For coordinates derived from the
    group's rows (``level_module``). The caller holds the store's lock."""
    with quiet():
        zgroup = zarr_group(path, group, committed=True)
        array = zgroup[name]
        current = array[...]
        if current.dtype.kind == "T":
            current = current.astype(object)
        values = np.asarray(values, dtype=object)
        if values.shape != current.shape:
            raise StoreError(f"'{name}' holds {current.shape[0]} value(s), {values.shape[0]} "
                             "given", file=path, field=f"{group}/{name}")
        if [str(v) for v in current.tolist()] == [str(v) for v in values.tolist()]:
            return False
        array[...] = fit(array, values, name)
    return True
