"""The one IO layer: every Zarr read and write of an ml4ml store goes through here.

A store is a Zarr v3 group (local path or any fsspec URL zarr accepts, e.g.
``memory://db.zarr``) holding xarray datasets in groups (layouts in ``dims``)::

    models                      dim mid: recipe, checkpoint, accuracy, labels
    probes/<suite>/<transform>  dims mid, aug_param, sample, class, layer, stat
    matrices/<suite>/<transform>
    measures/<suite>/<transform>
    assess/<transform>

Writing pattern: a group's template is written once with ``to_zarr(compute=False)``
(metadata and small eager variables only), then each model's data with
``to_zarr(region={"mid": slice(i, i + 1)})``, then its ``done`` flag. Every per-model
variable is chunked one model per chunk along ``mid``, so writers of different models
never touch one chunk. Readers use plain ``xr.open_zarr(path, group=...)``.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
import xarray as xr
import zarr

from ml4ml import dims
from ml4ml.errors import StoreError

__all__ = [
    "SCHEMA_VERSION",
    "SCHEMA_ATTR",
    "PRECISION_ATTR",
    "PRECISIONS",
    "MODELS_GROUP",
    "probe_group",
    "matrices_group",
    "measures_group",
    "assess_group",
    "create_store",
    "store_exists",
    "store_attrs",
    "store_precision",
    "group_exists",
    "list_groups",
    "open_group",
    "write_group",
    "read_models",
    "add_models",
    "update_models",
    "init_probes",
    "write_probe",
    "open_probes",
    "done_mids",
    "write_rows",
    "set_done",
    "append_measures",
    "check_compatible",
]

SCHEMA_VERSION = 1
SCHEMA_ATTR = "ml4ml_schema_version"
PRECISION_ATTR = "ml4ml_float_dtype"
PRECISIONS = ("float32", "float64")
MODELS_GROUP = "models"


def probe_group(suite: str, transform: str) -> str:
    return f"probes/{suite}/{transform}"


def matrices_group(suite: str, transform: str) -> str:
    return f"matrices/{suite}/{transform}"


def measures_group(suite: str, transform: str) -> str:
    return f"measures/{suite}/{transform}"


def assess_group(transform: str) -> str:
    return f"assess/{transform}"


@contextmanager
def _quiet():
    """Silence zarr's v3 notices about string dtypes that xarray handles for us."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Consolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*StringDType.*")
        warnings.filterwarnings("ignore", message=".*vlen-utf8.*")
        yield


# --------------------------------------------------------------------------- store
def create_store(path, *, precision: str = "float32") -> dict:
    """Create an empty store at ``path`` (or open an existing one); return its attributes.

    precision : float dtype of probe responses, "float32" (default) or "float64"
        (used for imported reference files). An existing store keeps its own.
    """
    if precision not in PRECISIONS:
        raise StoreError(f"precision must be one of {PRECISIONS}, got {precision!r}",
                         file=path, field="precision")
    if store_exists(path):
        return store_attrs(path)
    try:
        root = zarr.open_group(_store_path(path), mode="a", zarr_format=3)
    except Exception as exc:  # not a group, unreachable URL ...
        raise StoreError(f"cannot create a store here: {exc}", file=path) from exc
    if len(list(root.keys())):
        raise StoreError("exists and is not an ml4ml store (no schema version attribute)",
                         file=path, hint="choose a new path")
    root.attrs.update({SCHEMA_ATTR: SCHEMA_VERSION, PRECISION_ATTR: precision})
    return dict(root.attrs)


def store_exists(path) -> bool:
    try:
        root = zarr.open_group(_store_path(path), mode="r")
    except Exception:
        return False
    return SCHEMA_ATTR in root.attrs


def store_attrs(path) -> dict:
    """The store's root attributes; StoreError if ``path`` is not an ml4ml store."""
    try:
        root = zarr.open_group(_store_path(path), mode="r")
    except Exception as exc:
        raise StoreError("no ml4ml store here", file=path,
                         hint="create one with 'ml4ml train', 'ml4ml probe' or 'ml4ml import-legacy'") from exc
    attrs = dict(root.attrs)
    if SCHEMA_ATTR not in attrs:
        raise StoreError("not an ml4ml store (no schema version attribute)", file=path)
    if attrs[SCHEMA_ATTR] > SCHEMA_VERSION:
        raise StoreError(f"store schema version {attrs[SCHEMA_ATTR]} is newer than this "
                         f"ml4ml understands ({SCHEMA_VERSION})", file=path,
                         hint="upgrade ml4ml")
    return attrs


def store_precision(path) -> np.dtype:
    return np.dtype(store_attrs(path).get(PRECISION_ATTR, "float32"))


def group_exists(path, group: str) -> bool:
    try:
        root = zarr.open_group(_store_path(path), mode="r")
        node = root[group]
    except Exception:
        return False
    return isinstance(node, zarr.Group) and len(list(node.array_keys())) > 0


def list_groups(path, prefix: str) -> list[tuple[str, str]]:
    """``(suite, transform)`` pairs present under ``prefix`` ("probes", "measures", ...)."""
    try:
        top = zarr.open_group(_store_path(path), mode="r")[prefix]
    except Exception:
        return []
    pairs = []
    for suite, suite_group in sorted(top.groups()):
        for transform, _ in sorted(suite_group.groups()):
            pairs.append((suite, transform))
    return pairs


def open_group(path, group: str) -> xr.Dataset:
    """Lazily open one group as an xarray Dataset (dask-backed)."""
    if not group_exists(path, group):
        raise StoreError(f"the store has no group '{group}'", file=path)
    with _quiet():
        return xr.open_zarr(_store_path(path), group=group, consolidated=False)


def write_group(path, group: str, ds: xr.Dataset) -> None:
    """Write (replace) a whole group at once: for derived results written by one writer."""
    store_attrs(path)
    ds = _strings_to_object(ds)
    with _quiet():
        ds.to_zarr(_store_path(path), group=group, mode="w", consolidated=False,
                   encoding=_mid_chunk_encoding(ds))


# --------------------------------------------------------------------------- models
def read_models(path) -> xr.Dataset:
    """The ``models`` table, loaded (dim ``mid``); an empty Dataset if there is none yet."""
    if not group_exists(path, MODELS_GROUP):
        return xr.Dataset(coords={dims.MID: np.array([], dtype=object)})
    return open_group(path, MODELS_GROUP).load()


def add_models(path, table: xr.Dataset) -> list[str]:
    """Append the rows of ``table`` (dim ``mid``) whose ids are new; return those ids.

    Single writer. Rows already present are left untouched (use ``update_models``).
    Variables the table lacks are filled with their type's missing value.
    """
    store_attrs(path)
    table = _strings_to_object(table)
    _check_unique(table[dims.MID].values, path)
    existing = read_models(path)
    have = set(existing[dims.MID].values.tolist())
    new = table.sel({dims.MID: [m for m in table[dims.MID].values.tolist() if m not in have]})
    if new.sizes[dims.MID] == 0:
        return []
    if existing.sizes.get(dims.MID, 0) == 0:
        with _quiet():
            new.to_zarr(_store_path(path), group=MODELS_GROUP, mode="w", consolidated=False)
        return new[dims.MID].values.tolist()
    missing_here = [v for v in existing.data_vars if v not in new.data_vars]
    for name in missing_here:
        new[name] = _missing_like(existing[name], new.sizes[dims.MID])
    extra = [v for v in new.data_vars if v not in existing.data_vars]
    if extra:
        _add_model_variables(path, existing, new[extra])
    with _quiet():
        new.to_zarr(_store_path(path), group=MODELS_GROUP, append_dim=dims.MID,
                    consolidated=False)
    return new[dims.MID].values.tolist()


def update_models(path, rows: xr.Dataset) -> None:
    """Overwrite the given variables of existing models (dim ``mid``); single writer.

    New variables are created (missing for the other models) first.
    """
    rows = _strings_to_object(rows)
    existing = open_group(path, MODELS_GROUP)
    index = _mid_index(existing, rows[dims.MID].values, path, MODELS_GROUP)
    extra = [v for v in rows.data_vars if v not in existing.data_vars]
    if extra:
        _add_model_variables(path, existing, rows[extra])
    body = rows.drop_vars([c for c in rows.coords if c != dims.MID])
    with _quiet():
        for k, i in enumerate(index):
            one = body.isel({dims.MID: slice(k, k + 1)}).drop_vars(dims.MID)
            # the table is one chunk per variable and has a single writer (the driver)
            one.to_zarr(_store_path(path), group=MODELS_GROUP, safe_chunks=False,
                        region={dims.MID: slice(int(i), int(i) + 1)}, consolidated=False)


def _add_model_variables(path, existing: xr.Dataset, like: xr.Dataset) -> None:
    n = existing.sizes[dims.MID]
    fresh = xr.Dataset({name: _missing_like(like[name], n) for name in like.data_vars},
                       coords={dims.MID: existing[dims.MID].values.astype(object)})
    fresh = fresh.drop_vars(dims.MID)
    with _quiet():
        fresh.to_zarr(_store_path(path), group=MODELS_GROUP, mode="a", consolidated=False)


def _missing_like(var: xr.DataArray, n: int) -> xr.DataArray:
    shape = (n,) + tuple(var.shape[1:])
    kind = var.dtype.kind
    if kind == "f":
        data = np.full(shape, np.nan, dtype=var.dtype)
    elif kind in "iu":
        data = np.full(shape, -1, dtype=var.dtype)
    elif kind == "b":
        data = np.zeros(shape, dtype=bool)
    else:
        data = np.full(shape, "", dtype=object)
    return xr.DataArray(data, dims=var.dims, attrs=var.attrs)


# --------------------------------------------------------------------------- probes
def init_probes(path, suite: str, transform: str, template: xr.Dataset, mids) -> None:
    """Create ``probes/<suite>/<transform>`` for ``mids``, or extend it with new ones.

    template : one model's probe dataset (no ``mid`` dim), e.g. what ``probe_model``
        returns; only its shapes, dtypes and coordinates are used. The store's
        precision decides the float dtype. An existing group must have the same
        grid, samples, labels and layer count; otherwise StoreError and nothing changes.
    """
    store_attrs(path)
    group = probe_group(suite, transform)
    mids = [str(m) for m in mids]
    _check_unique(mids, path)
    precision = store_precision(path)
    if group_exists(path, group):
        existing = open_group(path, group)
        check_compatible(existing, template, path, group)
        have = set(existing[dims.MID].values.tolist())
        mids = [m for m in mids if m not in have]
        if not mids:
            return
        lazy = _probe_template(template, mids, precision)
        lazy = lazy.drop_vars([c for c in lazy.coords if dims.MID not in lazy[c].dims])
        with _quiet():
            lazy.to_zarr(_store_path(path), group=group, append_dim=dims.MID,
                         compute=False, consolidated=False)
        return
    lazy = _probe_template(template, mids, precision)
    with _quiet():
        lazy.to_zarr(_store_path(path), group=group, mode="w", compute=False,
                     consolidated=False, encoding=_mid_chunk_encoding(lazy))


def write_probe(path, suite: str, transform: str, mid: str, probe: xr.Dataset) -> None:
    """Write one model's probe results into its region, then set its ``done`` flag.

    probe : one model's probe dataset (no ``mid`` dim), same grid and samples as the group.
    Checked against the group (``check_compatible`` and every variable's shape) before
    anything is written; the region is written array by array straight through zarr (the
    group's layout is the template's), the ``done`` chunk last.
    """
    group = probe_group(suite, transform)
    if not group_exists(path, group):
        raise StoreError(f"the store has no group '{group}'", file=path)
    with _quiet():
        zgroup = zarr.open_group(_store_path(path), path=group, mode="r+")
    arrays = dict(zgroup.arrays())
    existing = xr.Dataset(coords={name: (arrays[name].metadata.dimension_names, arrays[name][:])
                                  for name in (dims.MID, dims.AUG_PARAM, dims.SAMPLE, dims.LABEL)
                                  if name in arrays})
    (i,) = _mid_index(existing, [mid], path, group)
    check_compatible(existing, probe, path, group)
    precision = store_precision(path)
    body = {}
    for name, var in probe.data_vars.items():
        if name == dims.DONE or name not in arrays:
            continue
        target = arrays[name]
        _check_sizes(dict(zip(var.dims, var.shape)),
                     dict(zip(target.metadata.dimension_names[1:], target.shape[1:])),
                     path, f"{group}/{name}")
        data = var.values
        if data.dtype.kind == "f":
            data = data.astype(precision)
        elif data.dtype.kind in "US" or data.dtype == object or data.dtype.kind == "T":
            data = data.astype(object)
        body[name] = data
    for name, data in body.items():  # every check passed: write
        arrays[name][i] = data
    arrays[dims.DONE][i] = True


def open_probes(path, suite: str, transform: str) -> xr.Dataset:
    """All models' probe responses for one suite and transform, lazily (dask).

    The small per-sample ``label`` coordinate is loaded into memory.
    """
    ds = open_group(path, probe_group(suite, transform))
    if dims.LABEL in ds.coords:
        ds = ds.assign_coords({dims.LABEL: ds[dims.LABEL].load()})
    return ds


def done_mids(ds: xr.Dataset) -> list[str]:
    """Ids of the models whose ``done`` flag is set."""
    done = ds[dims.DONE].values.astype(bool)
    return [str(m) for m in ds[dims.MID].values[done]]


def write_rows(path, group: str, ds: xr.Dataset, mids, *, compute: bool = True):
    """Write the rows ``mids`` of a derived dataset (dim ``mid``) into ``group``.

    Creates the group (template, compute=False) or extends its ``mid`` axis as needed,
    then writes each contiguous run of rows as one region; all runs are computed in one
    dask call. ``ds`` may be lazy; only the selected rows are computed. With
    ``compute=False`` the delayed writes are returned instead, to compute together with
    other writes (shared tasks then run once).
    """
    import dask

    ds = _strings_to_object(ds)
    all_mids = [str(m) for m in ds[dims.MID].values]
    mids = [str(m) for m in mids]
    if group_exists(path, group):
        existing = open_group(path, group)
        have = [str(m) for m in existing[dims.MID].values]
        new = [m for m in all_mids if m not in set(have)]
        if new:
            add = ds.sel({dims.MID: new})
            add = add.drop_vars([c for c in add.coords if dims.MID not in add[c].dims])
            with _quiet():
                add.to_zarr(_store_path(path), group=group, append_dim=dims.MID,
                            compute=False, consolidated=False)
            have = have + new
    else:
        with _quiet():
            ds.to_zarr(_store_path(path), group=group, mode="w", compute=False,
                       consolidated=False, encoding=_mid_chunk_encoding(ds))
        have = all_mids
    position = {m: k for k, m in enumerate(have)}
    rows = sorted(position[m] for m in mids)
    pending = []
    for start, stop in _runs(rows):
        part = ds.sel({dims.MID: have[start:stop]})
        part = part.drop_vars([c for c in part.coords if c == dims.MID or dims.MID not in part[c].dims])
        part = part.drop_vars([v for v in part.data_vars if dims.MID not in part[v].dims])
        with _quiet():
            pending.append(part.to_zarr(_store_path(path), group=group, compute=False,
                                        region={dims.MID: slice(start, stop)},
                                        consolidated=False))
    if not compute:
        return pending
    with _quiet():
        dask.compute(*pending)
    return None


def set_done(path, group: str, mids) -> None:
    """Set the ``done`` flag of ``mids`` in ``group`` (after their data is written)."""
    existing = open_group(path, group)
    rows = sorted(_mid_index(existing, mids, path, group))
    with _quiet():
        for start, stop in _runs(rows):
            flags = xr.Dataset({dims.DONE: ((dims.MID,), np.ones(stop - start, dtype=bool))})
            flags.to_zarr(_store_path(path), group=group, region={dims.MID: slice(start, stop)},
                          consolidated=False)


def append_measures(path, group: str, ds: xr.Dataset):
    """Append new entries along ``measure`` to an existing measures group; return the delayed write.

    ds : dataset whose variables have a ``measure`` dim and the group's ``mid`` order.
    """
    existing = open_group(path, group)
    have = [str(m) for m in existing[dims.MID].values]
    if [str(m) for m in ds[dims.MID].values] != have:
        raise StoreError("models to append measures for differ from the group's", file=path,
                         field=f"{group}/{dims.MID}")
    ds = _strings_to_object(ds).drop_vars(
        [c for c in ds.coords if dims.MEASURE not in ds[c].dims])
    with _quiet():
        return ds.to_zarr(_store_path(path), group=group, append_dim=dims.MEASURE,
                          compute=False, consolidated=False)


def _runs(sorted_rows):
    """Contiguous ``(start, stop)`` runs of sorted integers."""
    runs = []
    for r in sorted_rows:
        if runs and runs[-1][1] == r:
            runs[-1][1] = r + 1
        else:
            runs.append([r, r + 1])
    return [tuple(r) for r in runs]


def _probe_template(template: xr.Dataset, mids, precision) -> xr.Dataset:
    import dask.array as da

    n = len(mids)
    variables = {}
    for name, var in template.data_vars.items():
        if name == dims.DONE:
            continue
        shape = (n,) + var.shape
        dtype = var.dtype
        if dtype.kind == "f":
            dtype = precision
        if dtype.kind in "fiub":
            fill = np.nan if dtype.kind == "f" else (False if dtype.kind == "b" else -1)
            data = da.full(shape, fill, dtype=dtype, chunks=(1,) + var.shape)
        else:
            data = np.full(shape, "", dtype=object)
        variables[name] = ((dims.MID,) + var.dims, data, var.attrs)
    variables[dims.DONE] = ((dims.MID,), np.zeros(n, dtype=bool))
    coords = {dims.MID: np.array(mids, dtype=object)}
    for name, coord in template.coords.items():
        coords[name] = coord.variable
    return _strings_to_object(xr.Dataset(variables, coords=coords, attrs=template.attrs))


def check_compatible(existing: xr.Dataset, probe: xr.Dataset, path, group) -> None:
    """StoreError unless ``probe`` has the group's grid, samples, labels and dim sizes."""
    for name in (dims.AUG_PARAM, dims.SAMPLE, dims.LABEL):
        if name in probe.coords and name in existing.coords:
            a = np.asarray(existing[name].values)
            b = np.asarray(probe[name].values)
            if a.shape != b.shape or not np.array_equal(a, b):
                raise StoreError(
                    f"'{name}' differs from the group's: expected {_brief(a)}, found {_brief(b)}",
                    file=path, field=f"{group}/{name}",
                    hint="probe every model of a group on the same grid and samples",
                )
    for dim in (dims.LAYER, dims.STAT, dims.CLASS):
        if dim in probe.dims and dim in existing.dims:
            _check_sizes({dim: probe.sizes[dim]}, {dim: existing.sizes[dim]}, path,
                         f"{group}/{dim}")


def _check_sizes(found: dict, expected: dict, path, field: str) -> None:
    """StoreError naming the first dimension whose size (``{dim: size}``) differs."""
    if found == expected:
        return
    dim = next((d for d in expected if found.get(d) != expected[d]), None) or sorted(found)[0]
    raise StoreError(f"dimension '{dim}' has size {found.get(dim)}, the group has "
                     f"{expected.get(dim)}", file=path, field=field)


def _brief(a: np.ndarray) -> str:
    if a.size <= 6:
        return repr(a.tolist())
    return f"{a.size} values {a.ravel()[:3].tolist()}..."


def _check_unique(mids, path) -> None:
    mids = [str(m) for m in np.asarray(mids).tolist()]
    seen = set()
    for m in mids:
        if m in seen:
            raise StoreError(f"model id {m!r} appears twice", file=path, field=dims.MID)
        seen.add(m)


def _mid_index(ds: xr.Dataset, mids, path, group) -> list[int]:
    have = {str(m): k for k, m in enumerate(ds[dims.MID].values.tolist())}
    out = []
    for m in np.asarray(mids).tolist():
        if str(m) not in have:
            raise StoreError(f"model {m!r} is not in '{group}'", file=path, field=dims.MID)
        out.append(have[str(m)])
    return out


def _mid_chunk_encoding(ds: xr.Dataset) -> dict:
    """One chunk per model along ``mid``, whole along every other dim."""
    encoding = {}
    for name, var in ds.variables.items():
        if dims.MID in var.dims and var.ndim >= 1 and name != dims.MID:
            encoding[name] = {"chunks": tuple(1 if d == dims.MID else max(s, 1)
                                              for d, s in zip(var.dims, var.shape))}
    return encoding


def _strings_to_object(ds: xr.Dataset) -> xr.Dataset:
    """Variable-length strings (object dtype), never fixed-width ``<U`` (no Zarr v3 spec)."""
    out = ds.copy()
    for name, var in ds.variables.items():
        if var.dtype.kind in "US" or var.dtype.kind == "T":
            if name in ds.indexes:
                out = out.assign_coords({name: (var.dims, var.values.astype(object), var.attrs)})
            elif name in ds.coords:
                out = out.assign_coords({name: (var.dims, var.values.astype(object), var.attrs)})
            else:
                out[name] = (var.dims, var.values.astype(object), var.attrs)
    return out


def _store_path(path):
    return str(path)
