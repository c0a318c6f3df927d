"""The ``models`` table: one row per model (dim ``mid``), written by the driver alone.

Rows are added whole, as one layout change (``layout.commit``), and outcomes are written
per variable in one operation each, with the flag that says a row is complete (e.g.
``trained``) written last. New variables are created for every row at once, filled with
their missing value (NaN, -1, False or "").
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ml4ml import dims
from ml4ml.store.arrays import (ROW_CHUNK, extend_rows, fill_value, fit, layout_group, missing,
                                zarr_dtype)
from ml4ml.store.groups import (MODELS_GROUP, check_unique, group_exists, mid_positions,
                                read_group, store_attrs, zarr_group)
from ml4ml.store.layout import begin, commit, quiet

__all__ = ["read_models", "add_models", "update_models", "model_ids"]


def read_models(path, *, committed: bool = True) -> xr.Dataset:
    """The ``models`` table, loaded (dim ``mid``); an empty Dataset if there is none yet."""
    store_attrs(path)
    if not group_exists(path, MODELS_GROUP, committed=committed):
        return xr.Dataset(coords={dims.MID: np.array([], dtype=object)})
    table = read_group(path, MODELS_GROUP, committed=committed)
    return table.assign_coords({dims.MID: table[dims.MID].values.astype(object)})


def model_ids(path) -> list[str]:
    """The ids in the committed ``models`` table, in row order."""
    return [str(m) for m in read_models(path)[dims.MID].values]


def add_models(path, table: xr.Dataset) -> list[str]:
    """Append the rows of ``table`` (dim ``mid``) whose ids are new; return those ids.

    Rows already present are left untouched (``update_models`` changes them). Variables
    the table lacks are filled with their missing value. One layout change, committed.
    The caller holds the store's lock.
    """
    check_unique(table[dims.MID].values.tolist(), path)
    existing = read_models(path)
    have = set(existing[dims.MID].values.tolist())
    new_ids = [str(m) for m in table[dims.MID].values.tolist() if str(m) not in have]
    if not new_ids:
        return []
    new = _for_storage(table.sel({dims.MID: new_ids}))
    begin(path, MODELS_GROUP)
    with quiet():
        if existing.sizes.get(dims.MID, 0) == 0:
            layout_group(zarr_group(path), MODELS_GROUP, new, mid_chunk=ROW_CHUNK, write="all")
        else:
            group = zarr_group(path, MODELS_GROUP)
            for name in new.data_vars:
                if name not in existing.data_vars:
                    _create_variable(group, name, new[name], existing.sizes[dims.MID])
            values = {}
            for name, array in group.arrays():
                if name == dims.MID:
                    continue
                if name in new:
                    values[name] = new[name].values
                else:
                    values[name] = missing(array.dtype, (len(new_ids),) + array.shape[1:])
            extend_rows(group, new_ids, fill_fixed=values)
    commit(path, MODELS_GROUP)
    return new_ids


def update_models(path, rows: xr.Dataset, *, last=()) -> None:
    """Overwrite variables of existing models (dim ``mid``), one write per variable.

    last : names of variables (flags such as ``trained``) written after every other one,
        so a flag never stands for a row whose other values are not written yet.
    New variables are created first (missing for the other models) and committed.
    The caller holds the store's lock.
    """
    rows = _for_storage(rows)
    group = zarr_group(path, MODELS_GROUP, committed=True)
    n = group[dims.MID].shape[0]
    index = np.asarray(mid_positions(group, rows[dims.MID].values.tolist(), path,
                                     MODELS_GROUP), dtype=np.int64)
    extra = [v for v in rows.data_vars if v not in set(group.array_keys())]
    with quiet():
        if extra:
            begin(path, MODELS_GROUP)
            actual = zarr_group(path, MODELS_GROUP)
            for name in extra:
                _create_variable(actual, name, rows[name], n)
            commit(path, MODELS_GROUP)
            group = zarr_group(path, MODELS_GROUP, committed=True)
        order = [v for v in rows.data_vars if v not in last] + [v for v in last if v in rows]
        for name in order:
            array = group[name]
            data = array[...]
            if data.dtype.kind == "T":
                data = data.astype(object)
            data[index] = fit(array, rows[name].values, name)
            array[...] = data


def _create_variable(group, name, like: xr.DataArray, n: int) -> None:
    shape = (n,) + tuple(like.shape[1:])
    array = group.create_array(name, shape=shape, dtype=zarr_dtype(like.dtype, name,
                                                                   like.values),
                               chunks=(ROW_CHUNK,) + tuple(max(s, 1) for s in shape[1:]),
                               fill_value=fill_value(like.dtype),
                               dimension_names=list(like.dims), attributes=dict(like.attrs))
    if n:
        array[...] = missing(like.dtype, shape)


def _for_storage(table: xr.Dataset) -> xr.Dataset:
    """Strings of any kind as Python objects (zarr's variable-length strings)."""
    out = table.copy()
    for name, var in table.variables.items():
        if var.dtype.kind in "UST":
            if name in table.coords:
                out = out.assign_coords({name: var.copy(data=var.values.astype(object))})
            else:
                out[name] = var.copy(data=var.values.astype(object))
    return out
