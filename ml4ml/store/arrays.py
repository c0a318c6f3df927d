"""Datasets as Zarr groups: the layout conventions every ml4ml group follows.

xarray reads what is written here with plain ``xr.open_zarr``: each variable is an array
whose ``dimension_names`` are its dims and whose attributes are its attrs; non-index
coordinates are listed in the ``coordinates`` attribute of the variables that share their
dims (CF), or of the group when no variable does. Strings are fixed-width unicode
(``<U{width}``, zarr's ``fixed_length_utf32``): plain xarray reads them as numpy unicode,
which ``Dataset.where``, ``to_dataframe`` and ``groupby`` handle (zarr's variable-length
strings read as numpy's StringDType, which ``Dataset.where`` cannot promote). The width
is ``STRING_WIDTH`` characters (``STRING_WIDTHS`` for long texts) or the longest value
laid out, whichever is larger; a longer value is refused (``fit``), never cut silently,
except error texts (``TRUNCATED``), which are cut with a mark.

Every array has a declared fill value that unwritten entries read as: NaN for floats, -1
for integers, False for flags, "" for strings.

Chunks: a large per-model variable (responses, matrices, measures) is chunked one model
per chunk along ``mid`` (whole along every other dim), so the tasks that write different
models in parallel never share a chunk. The small per-model values of a row (``done``,
lineage, ``layer_name``, ``error``: ``ROW_TABLE_VARIABLES``) are written by the driver
alone, as models finish, and chunked ``ROW_CHUNK`` models at a time, so reading them for
a store of N models costs N / ROW_CHUNK reads, not N. Other variables are one chunk.

Codecs: float responses hardly compress (about 5% at zstd level 1), and the measure pass
reads them for every model, so ``act``, ``confidence`` and the matrices are stored raw
(reading raw is 4x faster); everything else is zstd level 1 (README, "Store codecs").
"""

from __future__ import annotations

import asyncio

import numpy as np
import xarray as xr
import zarr
from zarr.core.sync import sync
from zarr.codecs import ZstdCodec

from ml4ml import dims

__all__ = ["fill_value", "missing", "zarr_dtype", "fit", "STRING_WIDTH", "STRING_WIDTHS",
           "layout_group", "add_arrays", "extend_rows", "extend_dim", "resize_along",
           "UNIT_CHUNK",
           "write_rows", "write_table_rows", "set_flags", "ROW_CHUNK", "RAW_VARIABLES",
           "ROW_TABLE_VARIABLES"]

# variables written uncompressed (read by every measure pass; float noise compresses ~5%)
RAW_VARIABLES = frozenset({dims.ACT, dims.CONFIDENCE, dims.MATRIX, dims.MATRIX_SUBSET})
# small per-model values written by the driver alone, ROW_CHUNK models per chunk
ROW_TABLE_VARIABLES = frozenset({dims.DONE, dims.LAYER_NAME, "source_sha256", "digest",
                                 "probe_digest", "error", dims.UNIT_COUNT})
# the codec of every other array
COMPRESSOR = ZstdCodec(level=1)
# rows per chunk along mid of tables written by the driver alone (models, labels)
ROW_CHUNK = 1024
# values per chunk along ``unit`` at least: the probes' unit dim grows as models with more
# channels arrive (``store.probes``), so its chunks are sized for growth, not its first size
UNIT_CHUNK = 256
# characters of a string array (fixed-width unicode); long texts get more
STRING_WIDTH = 256
STRING_WIDTHS = {"error": 2048, "train_error": 2048, "checkpoint": 4096, "pretrained": 4096,
                 "source_description": 1024}
# texts cut to the width (with a mark) rather than refused
TRUNCATED = frozenset({"error", "train_error"})


def fill_value(dtype):
    """The value unwritten entries of an array of ``dtype`` read as."""
    dtype = np.dtype(dtype) if not isinstance(dtype, str) else dtype
    if dtype == str or getattr(dtype, "kind", "") in "OUST":
        return ""
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "b":
        return False
    if dtype.kind == "i":
        return -1
    if dtype.kind == "u":  # bytes (a stored assessor): no value stands for "missing"
        return 0
    raise TypeError(f"no fill value for dtype {dtype}")


def missing(dtype, shape) -> np.ndarray:
    """An array of ``shape`` holding the fill value of ``dtype`` (object for strings)."""
    value = fill_value(dtype)
    if isinstance(value, str):
        return np.full(shape, value, dtype=object)
    return np.full(shape, value, dtype=np.dtype(dtype))


def zarr_dtype(dtype, name: str = "", values=None):
    """Strings of any numpy kind become fixed-width unicode of ``string_width(name,
    values)`` characters; the rest stay."""
    dtype = np.dtype(dtype)
    return np.dtype(f"<U{string_width(name, values)}") if dtype.kind in "OUST" else dtype


def string_width(name: str, values=None) -> int:
    """Characters of the string array ``name`` holding ``values`` (at least)."""
    longest = 0
    if values is not None and np.size(values):
        longest = max(len(str(v)) for v in np.asarray(values, dtype=object).ravel())
    return max(STRING_WIDTHS.get(name, STRING_WIDTH), longest)


def fit(array, values, name: str = "") -> np.ndarray:
    """``values`` as array ``array`` stores them: strings checked against a fixed width
    (StoreError naming the array if one is longer; error texts cut with a mark), strings
    into a variable-length array (older stores) as objects."""
    values = np.asarray(values)
    kind = np.dtype(array.dtype).kind
    if kind == "U":
        width = np.dtype(array.dtype).itemsize // 4
        name = name or str(getattr(array, "basename", "") or "")
        strings = np.asarray(values, dtype=object)
        strings = np.vectorize(lambda v: "" if v is None else str(v), otypes=[object])(strings) \
            if strings.size else strings
        long = [s for s in strings.ravel() if len(s) > width]
        if long and name in TRUNCATED:
            strings = np.vectorize(lambda s: s if len(s) <= width else s[:width - 1] + "…",
                                   otypes=[object])(strings)
        elif long:
            from ml4ml.errors import StoreError

            raise StoreError(f"value {long[0][:60]!r}... has {len(long[0])} characters; the "
                             f"array holds at most {width}", field=name,
                             hint="use a shorter value (e.g. a shorter path or id)")
        return np.asarray(strings, dtype=array.dtype)
    return _as_written(values)


def _compressors(name: str, dtype):
    if name in RAW_VARIABLES and np.dtype(dtype).kind == "f":
        return None
    return None if COMPRESSOR is None else [COMPRESSOR]


def _chunks(name: str, var: xr.Variable, mid_chunk: int) -> tuple:
    rows = ROW_CHUNK if name in ROW_TABLE_VARIABLES or name == dims.MID else mid_chunk
    return tuple((rows if d == dims.MID else max(int(s), UNIT_CHUNK if d == dims.UNIT else 1))
                 for d, s in zip(var.dims, var.shape))


def _coordinates_attr(ds: xr.Dataset) -> tuple[dict, list]:
    """{data var: "c1 c2"} for the non-index coords sharing its dims, and coords left over."""
    extra = [name for name in ds.coords if name not in ds.dims]
    per_var, used = {}, set()
    for name, var in ds.data_vars.items():
        mine = [c for c in extra if set(ds[c].dims) <= set(var.dims)]
        if mine:
            per_var[name] = " ".join(mine)
            used.update(mine)
    return per_var, [c for c in extra if c not in used]


def _as_written(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "OUST":
        return np.asarray(values, dtype=object)
    return values


def layout_group(parent: zarr.Group, name: str, ds: xr.Dataset, *, mid_chunk: int = 1,
                 write: str = "fixed") -> zarr.Group:
    """Create group ``name`` under ``parent`` with an array per variable of ``ds``.

    ds : the group's dataset; only its dims, shapes, dtypes, attrs and coordinates are
        used for variables along ``mid`` (they may be lazy), unless ``write="all"``.
    mid_chunk : rows per chunk along ``mid`` of the large per-model variables.
    write : "fixed" writes the variables without a ``mid`` dim and the ``mid`` coordinate
        (the layout); "all" writes every variable's values too (a small table).
    Replaces a group of that name. Uncommitted until ``layout.commit``.
    """
    per_var, group_coords = _coordinates_attr(ds)
    attrs = dict(ds.attrs)
    if group_coords:
        attrs["coordinates"] = " ".join(group_coords)
    group = parent.create_group(name, overwrite=True, attributes=_plain(attrs))
    sync(_create_arrays(group._async_group,
                        _array_specs(ds, ds.variables, per_var, mid_chunk, write)))
    return group


def add_arrays(group: zarr.Group, ds: xr.Dataset, names=None, *, mid_chunk: int = 1,
               per_var: dict | None = None) -> list[str]:
    """Create in the existing ``group`` an array for each variable ``names`` of ``ds`` (the
    group's dataset, as for ``layout_group``; default: every variable the group lacks, e.g.
    ``response_value`` added by a later version), laid out as ``layout_group`` lays them
    out: those along ``mid`` unwritten (they read as their fill value, NaN for floats), the
    others with their values. Returns the names created. Uncommitted until
    ``layout.commit``. per_var : {variable: its ``coordinates`` attribute} (default: from
    ``ds``)."""
    per_var = _coordinates_attr(ds)[0] if per_var is None else per_var
    if names is None:
        names = [name for name in ds.variables if name not in group]
    names = list(names)
    sync(_create_arrays(group._async_group,
                        _array_specs(ds, names, per_var, mid_chunk, "fixed")))
    return names


def _array_specs(ds: xr.Dataset, names, per_var: dict, mid_chunk: int, write: str) -> list:
    """(name, create_array keywords, values or None) of each variable ``names`` of ``ds``."""
    arrays = []
    for vname in names:
        var = ds.variables[vname]
        var_attrs = dict(var.attrs)
        if vname in per_var:
            var_attrs["coordinates"] = per_var[vname]
        written = write == "all" or dims.MID not in var.dims or vname == dims.MID
        spec = dict(shape=var.shape,
                    dtype=zarr_dtype(var.dtype, vname, var.values if written else None),
                    chunks=_chunks(vname, var, mid_chunk), fill_value=fill_value(var.dtype),
                    dimension_names=list(var.dims), attributes=_plain(var_attrs),
                    compressors=_compressors(vname, var.dtype))
        values = _as_written(np.asarray(var.values)) if written and var.size else None
        arrays.append((vname, spec, values))
    return arrays


async def _create_arrays(group, arrays) -> None:
    """Every array's metadata and values at once: a store's latency is paid once, not
    once per key (a group of 40 arrays on object storage is 80 round trips in series)."""
    async def one(name, spec, values):
        array = await group.create_array(name, **spec)
        if values is not None:
            await array.setitem(Ellipsis, values)

    await asyncio.gather(*(one(*a) for a in arrays))


def extend_rows(group: zarr.Group, new_mids, *, fill_fixed=None) -> int:
    """Grow every ``mid`` array of ``group`` by the rows ``new_mids``; return the first new row.

    fill_fixed : optional {name: (k, ...) values} written into the new rows at once (for
        tables whose rows are written whole). Uncommitted until ``layout.commit``.
    """
    start = group[dims.MID].shape[0]
    stop = start + len(new_mids)
    _resize_along(group, dims.MID, stop)
    group[dims.MID][start:stop] = fit(group[dims.MID], list(new_mids), dims.MID)  # resized now
    for name, values in (fill_fixed or {}).items():
        group[name][start:stop] = fit(group[name], values, name)
    return start


def extend_dim(group: zarr.Group, dim: str, labels) -> int:
    """Grow every array along ``dim`` by ``labels`` (written into the ``dim`` coordinate)."""
    start = group[dim].shape[0]
    stop = start + len(labels)
    _resize_along(group, dim, stop)
    group[dim][start:stop] = fit(group[dim], list(labels), dim)  # resized now
    return start


def resize_along(group: zarr.Group, dim: str, stop: int) -> None:
    """Every array of ``group`` along ``dim`` resized to ``stop`` there (for a dim without
    a coordinate of its own name, whose labels the caller writes). Uncommitted until
    ``layout.commit``."""
    _resize_along(group, dim, stop)


def _resize_along(group: zarr.Group, dim: str, stop: int) -> None:
    """Every array along ``dim`` resized to ``stop`` there, all metadata writes at once."""
    from ml4ml.store.layout import quiet  # zarr's notice about fixed-width strings

    with quiet():
        _resize_arrays(group, dim, stop)


def _resize_arrays(group: zarr.Group, dim: str, stop: int) -> None:
    resizes = []
    for _, array in group.arrays():
        names = list(array.metadata.dimension_names or ())
        if dim in names:
            shape = list(array.shape)
            shape[names.index(dim)] = stop
            resizes.append(array._async_array.resize(tuple(shape)))

    async def gathered():
        await asyncio.gather(*resizes)

    sync(gathered())


def write_rows(group: zarr.Group, rows, values: dict, *, flag: str | None = None) -> None:
    """Write ``values[name]`` (len(rows), ...) into rows ``rows`` of each array; then ``flag``.

    rows : row positions along ``mid``. Every variable is written before ``flag`` (a
    bool ``mid`` array, e.g. ``done``) is set True for those rows, so a flag never stands
    for a partly written row.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return
    runs = _runs(rows)
    for name, data in values.items():
        array = group[name]
        data = fit(array, data, name)
        names = list(array.metadata.dimension_names or ())
        axis = names.index(dims.MID)
        for first, (start, stop) in runs:
            index = [slice(None)] * array.ndim
            index[axis] = slice(start, stop)
            part = np.take(data, np.arange(first, first + stop - start), axis=0)
            if axis != 0:
                part = np.moveaxis(part, 0, axis)
            array[tuple(index)] = part
    if flag is not None:
        set_flags(group, flag, rows, True)


def write_table_rows(group: zarr.Group, rows, values: dict, *, flag: str | None = None,
                     flag_value: bool = True) -> None:
    """Write ``values[name]`` (len(rows), ...) at ``rows`` of table-chunked arrays; then ``flag``.

    One read-modify-write per array, whatever the rows (in any order); for the arrays only
    the driver writes (``ROW_TABLE_VARIABLES``, tables). ``flag`` is written last.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return
    order = list(values) + ([flag] if flag is not None else [])
    for name in order:
        array = group[name]
        if name == flag:  # a cleared flag keeps its chunk: a chunk gone means damage
            array = array.with_config({"write_empty_chunks": True})
        names = list(array.metadata.dimension_names or ())
        axis = names.index(dims.MID)
        lo, hi = int(rows.min()), int(rows.max()) + 1
        index = [slice(None)] * array.ndim
        index[axis] = slice(lo, hi)
        current = array[tuple(index)]
        if current.dtype.kind == "T":
            current = current.astype(object)
        data = (np.full(rows.size, flag_value, dtype=bool) if name == flag and name not in values
                else fit(array, values[name], name))
        place = [slice(None)] * array.ndim
        place[axis] = rows - lo
        current[tuple(place)] = np.moveaxis(data, 0, axis) if axis else data
        array[tuple(index)] = current


def set_flags(group: zarr.Group, flag: str, rows, value: bool) -> None:
    """Set the bool ``mid`` array ``flag`` to ``value`` at ``rows`` (one write per run)."""
    write_table_rows(group, rows, {}, flag=flag, flag_value=value)


def _runs(rows: np.ndarray) -> list[tuple[int, tuple[int, int]]]:
    """[(position in rows, (start, stop))] for each run of consecutive row numbers.

    ``rows`` must be in the order their values are given; a run is a stretch of it that
    goes up by one each step.
    """
    out = []
    begin = 0
    for k in range(1, len(rows) + 1):
        if k == len(rows) or rows[k] != rows[k - 1] + 1:
            out.append((begin, (int(rows[begin]), int(rows[k - 1]) + 1)))
            begin = k
    return out


def _plain(attrs: dict) -> dict:
    """Attribute values as JSON types (numpy scalars and arrays to Python)."""
    out = {}
    for key, value in attrs.items():
        if isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, tuple):
            value = list(value)
        out[str(key)] = value
    return out
