"""Probe groups ``probes/<suite>/<transform>``: laid out by the driver, filled model by model.

The driver lays a group out for every model of a pipeline (one committed layout change).
A model is then written in this order: its ``done`` flag cleared if set (driver); every
response array into the model's own chunks (``write_probe_data``, by the driver or a dask
worker); its small values, lineage included (``source_sha256``: the checkpoint or
reference files it came from; ``digest``: a sha256 of the responses as stored), then
``done`` (``finish_probes``, driver). A model whose outputs are not finite is refused: its
``error`` says why and ``done`` stays False.
"""

from __future__ import annotations

import hashlib

import dask.array as da
import numpy as np
import xarray as xr

from ml4ml import dims
from ml4ml.errors import InputError, StoreError
from ml4ml.store.arrays import (add_arrays, extend_rows, fit, layout_group, resize_along,
                                write_rows, write_table_rows)
from ml4ml.store.groups import (check_unique, group_exists, mid_positions, open_group,
                                probe_group, store_precision, zarr_group)
from ml4ml.store.layout import begin, commit, quiet
from ml4ml.store.rows import clear_done

__all__ = ["init_probes", "probe_layout", "write_probe", "write_probe_data", "finish_probes",
           "write_probe_failure", "open_probes", "check_compatible", "probe_digest",
           "unit_layers", "unit_digest_values", "UNIT_ARRAYS", "SOURCE", "DIGEST", "ERROR",
           "INTERPOLATION", "SUITE_DIGEST"]

SOURCE = "source_sha256"
DIGEST = "digest"
ERROR = "error"
# per-model variables a probe dataset provides, in the order they are written
RESPONSES = (dims.PROB, dims.PREDICTION, dims.CONFIDENCE, dims.ACT, dims.LAYER_NAME, dims.LEE)
# stored in float64 whatever the store's precision (a derivative, small: one per sample)
FLOAT64_RESPONSES = frozenset({dims.LEE})
# how the geometric families sampled (a group attr; absent: "nearest")
INTERPOLATION = "interpolation"
# per-model arrays along the positional ``unit`` dim ([probe] units = "channel"), placed
# by ``unit_label``; the digest covers a model's own units (``unit_digest_values``)
UNIT_ARRAYS = (dims.UNIT_RESPONSE, dims.UNIT_TV, dims.UNIT_SV)
# the content digest of the user's own images a group was probed on (a group attr; absent:
# a built-in or registered suite); ``data.own.suite_digest``
SUITE_DIGEST = "suite_digest"
LINEAGE_ATTRS = {
    SOURCE: ("source sha256", "sha256 of the checkpoint (or reference files) the model's "
             "responses were probed from"),
    DIGEST: ("probe digest", "sha256 of the model's responses as stored; derived groups "
             "record the digest they were computed from"),
    ERROR: ("probe error", "why the model's responses were refused; empty when they were not"),
}


def _per_model(template: xr.Dataset) -> dict:
    """{name: variable} of a probe dataset's per-model variables (``unit`` included: it
    is a coordinate, named like its dim)."""
    out = dict(template.data_vars.items())
    if dims.UNIT_RESPONSE in template.variables and \
            template[dims.UNIT_RESPONSE].ndim > 1:
        out[dims.UNIT_RESPONSE] = template[dims.UNIT_RESPONSE]
    return out


def probe_layout(template: xr.Dataset, mids, precision, suite: str, transform: str) -> xr.Dataset:
    """The group's dataset for ``mids``: lazy (never computed) per-model variables."""
    n = len(mids)
    variables = {}
    per_model = _per_model(template)
    for name, var in per_model.items():
        dtype = np.dtype(_precision(name, precision)) if var.dtype.kind == "f" else var.dtype
        if dtype.kind in "OUST":
            data = np.full((n,) + var.shape, "", dtype=object)
        else:  # never computed: the layout only
            data = da.zeros((n,) + var.shape, dtype=dtype, chunks=(1,) + var.shape)
        variables[name] = ((dims.MID,) + var.dims, data, dict(var.attrs))
    variables[dims.DONE] = ((dims.MID,), np.zeros(n, dtype=bool))
    if dims.UNIT_RESPONSE in per_model:
        variables[dims.UNIT_COUNT] = ((dims.MID, dims.LAYER),
                                      np.full((n, template.sizes[dims.LAYER]), -1, np.int64))
    for name, (long_name, description) in LINEAGE_ATTRS.items():
        variables[name] = ((dims.MID,), np.full(n, "", dtype=object),
                           {"long_name": long_name, "description": description})
    coords = {dims.MID: np.asarray(list(mids), dtype=object)}
    for name, coord in template.coords.items():
        if name not in per_model:
            coords[name] = coord.variable
    if dims.LAYER in template.dims and dims.LAYER not in coords:
        coords[dims.LAYER] = np.arange(template.sizes[dims.LAYER], dtype=np.int64)
    attrs = dict(template.attrs)
    attrs.pop("units", None)
    if attrs.get(INTERPOLATION) == "nearest":
        attrs.pop(INTERPOLATION)  # units live on aug_param, never on the group
    attrs.update({"suite": suite, "transform": transform,
                  "title": f"responses of every model on suite '{suite}' under "
                           f"'{transform}'"})
    return dims.describe(xr.Dataset(variables, coords=coords, attrs=attrs))


def init_probes(path, suite: str, transform: str, template: xr.Dataset, mids) -> list[str]:
    """Lay out ``probes/<suite>/<transform>`` for ``mids``, or extend it; return the new ids.

    template : one model's probe dataset (no ``mid`` dim), e.g. what ``probe_model``
        returns; only its shapes, dtypes, attrs and coordinates are used. The store's
        precision decides the float dtype. An existing group must have the same grid,
        samples, labels and layer, stat and class counts; otherwise StoreError and nothing
        changes. One committed layout change; the caller holds the store's lock.
    """
    group = probe_group(suite, transform)
    mids = [str(m) for m in mids]
    check_unique(mids, path)
    precision = store_precision(path)
    if group_exists(path, group):
        existing = open_group(path, group)
        check_compatible(existing, template, path, group)
        old = [str(m) for m in existing[dims.MID].values]
        new = [m for m in mids if m not in set(old)]
        # variables the group lacks (e.g. ``lee``, first asked for now): added unwritten
        missing = [name for name in template.data_vars if name in RESPONSES
                   and name not in existing.variables]
        interpolation = template.attrs.get(INTERPOLATION, "nearest")
        moved = existing.attrs.get(INTERPOLATION, "nearest") != interpolation
        units = dims.UNIT_RESPONSE in _per_model(template) and \
            dims.UNIT_LABEL not in existing.variables
        digest = template.attrs.get(SUITE_DIGEST)
        changed = digest is not None and existing.attrs.get(SUITE_DIGEST) != digest
        if new or missing or moved or units or changed:
            begin(path, group)
            with quiet():
                zgroup = zarr_group(path, group)
                if units:  # units asked of a group laid out without them
                    _add_units(zgroup, template, old, precision)
                if new:
                    extend_rows(zgroup, new)
                if missing:
                    add_arrays(zgroup, probe_layout(template, old + new, precision, suite,
                                                    transform), missing)
                if moved:
                    zgroup.attrs.update({INTERPOLATION: interpolation})
                if changed:
                    zgroup.attrs.update({SUITE_DIGEST: digest})
            commit(path, group)
        return new
    layout = probe_layout(template, mids, precision, suite, transform)
    begin(path, group)
    with quiet():
        layout_group(zarr_group(path), group, layout)
    commit(path, group)
    return mids


def _add_units(zgroup, template: xr.Dataset, mids, precision) -> None:
    """The unit arrays (``unit``, ``unit_label``, ``unit_layer``, ``unit_count``) added to
    an existing group of ``mids``, no unit laid out yet (they grow as models write)."""
    P, S = template.sizes[dims.AUG_PARAM], template.sizes[dims.SAMPLE]
    n = len(mids)
    unit = template[dims.UNIT_RESPONSE]
    ds = xr.Dataset(coords={
        dims.UNIT_RESPONSE: ((dims.MID, dims.AUG_PARAM, dims.SAMPLE, dims.UNIT),
                             da.zeros((n, P, S, 0), dtype=np.dtype(precision),
                                      chunks=(1, P, S, 1)), dict(unit.attrs)),
        dims.UNIT_LABEL: (dims.UNIT, np.array([], dtype=object)),
        dims.UNIT_LAYER: (dims.UNIT, np.array([], dtype=object)),
        dims.UNIT_COUNT: ((dims.MID, dims.LAYER),
                          np.full((n, template.sizes[dims.LAYER]), -1, dtype=np.int64)),
    })
    for name in (dims.UNIT_TV, dims.UNIT_SV):
        ds[name] = ((dims.MID, dims.UNIT), da.zeros((n, 0), dtype=np.dtype(precision),
                                                   chunks=(1, 1)))
    add_arrays(zgroup, dims.describe(ds), per_var={})
    listed = str(zgroup.attrs.get("coordinates", "")).split()
    zgroup.attrs["coordinates"] = " ".join(
        listed + [c for c in (dims.UNIT_LABEL, dims.UNIT_LAYER) if c not in listed])


def probe_digest(values: dict) -> str:
    """sha256 of a model's stored responses: name, dtype, shape and bytes of each, in order."""
    h = hashlib.sha256()
    for name in sorted(values):
        array = np.asarray(values[name])
        h.update(name.encode())
        if array.dtype == object or array.dtype.kind in "UST":
            h.update(b"str")
            h.update(repr(array.shape).encode())
            h.update("\x00".join(str(v) for v in array.ravel()).encode())
        else:
            array = np.ascontiguousarray(array)
            h.update(array.dtype.str.encode())
            h.update(repr(array.shape).encode())
            h.update(array.tobytes())
    return h.hexdigest()


def _stored_values(probe: xr.Dataset, zgroup, precision, path, group) -> dict:
    """The model's response arrays as they will be stored, checked against the group."""
    arrays = dict(zgroup.arrays())
    values = {}
    for name in RESPONSES:
        if name in FLOAT64_RESPONSES and name in arrays and name not in probe.data_vars:
            # probed without it: NaN, never a stale value of an earlier probe
            values[name] = np.full(arrays[name].shape[1:], np.nan)
            continue
        if name not in probe.data_vars or name not in arrays:
            continue
        var = probe[name]
        target = arrays[name]
        expected = dict(zip(target.metadata.dimension_names[1:], target.shape[1:]))
        _check_sizes(dict(zip(var.dims, var.shape)), expected, path, f"{group}/{name}")
        data = np.asarray(var.values)
        if data.dtype.kind == "f":
            data = data.astype(_precision(name, precision))
            if not np.isfinite(data).all():
                bad = int((~np.isfinite(data)).sum())
                raise InputError(f"{bad} of the model's '{name}' values are NaN or "
                                 f"infinite", field=name)
        elif data.dtype.kind in "OUST":
            data = data.astype(object)
        values[name] = data
    return values


def write_probe_data(path, suite: str, transform: str, mid: str, probe: xr.Dataset) -> dict:
    """Write one model's large response arrays into its own chunks; return its small values.

    Run by the driver or by a dask worker; the driver then passes the result to
    ``finish_probes``, which writes the small values and the ``done`` flag. Everything is
    checked before anything is written; InputError if the responses are not finite.
    Returns {"mid", "digest", "layer_name"}.
    """
    group = probe_group(suite, transform)
    if not group_exists(path, group):
        raise StoreError(f"the store has no group '{group}'", file=path)
    with quiet():
        zgroup = zarr_group(path, group, committed=True)
    coords = xr.Dataset(coords={name: (zgroup[name].metadata.dimension_names, zgroup[name][:])
                                for name in (dims.MID, dims.AUG_PARAM, dims.SAMPLE, dims.LABEL)
                                if name in zgroup})
    (row,) = mid_positions(coords, [mid], path, group)
    check_compatible(coords, probe, path, group)
    values = _stored_values(probe, zgroup, store_precision(path), path, group)
    large = {name: data[None] for name, data in values.items() if name != dims.LAYER_NAME}
    result = {"mid": str(mid),
              "layer_name": values.get(dims.LAYER_NAME, np.array([], dtype=object))}
    if dims.UNIT_RESPONSE in zgroup:
        placed, result["unit_count"], result["units"], own = _unit_row(probe, zgroup, path,
                                                                       group)
        large.update({name: row[None] for name, row in placed.items()})
        values.update(own)
    result["digest"] = probe_digest(values)
    with quiet():
        write_rows(zgroup, [row], large)
    return result


def _unit_row(probe: xr.Dataset, zgroup, path, group):
    """({unit array: the model's row on the group's units}, its channels per layer, pending,
    its units as the digest covers them (``unit_digest_values``)).

    The model's channel means (``unit``) and feature-map variances (``unit_tv``,
    ``unit_sv``) go to the positions of their ``unit_label`` in the group, NaN elsewhere;
    a model without units gets NaN rows (counts -1). A model with a label the group lacks
    is left for the driver (no rows; pending: (labels, {name: values})), which grows the
    ``unit`` dim (``finish_probes``)."""
    names = [name for name in UNIT_ARRAYS if name in zgroup]
    n_layers = zgroup[dims.UNIT_COUNT].shape[1]
    if dims.UNIT_RESPONSE not in probe.variables or probe[dims.UNIT_RESPONSE].ndim < 2:
        return {name: np.full(zgroup[name].shape[1:], np.nan, dtype=zgroup[name].dtype)
                for name in names}, [-1] * n_layers, None, {}
    data = {}
    for name in names:
        if name not in probe.variables:
            raise InputError(f"the model's units lack '{name}'", field=name)
        var = probe[name].transpose(..., dims.UNIT)
        expected = dict(zip(zgroup[name].metadata.dimension_names[1:-1],
                            zgroup[name].shape[1:-1]))
        _check_sizes(dict(zip(var.dims[:-1], var.shape[:-1])), expected, path,
                     f"{group}/{name}")
        values = np.asarray(var.values).astype(zgroup[name].dtype)
        if not np.isfinite(values).all():
            raise InputError(f"{int((~np.isfinite(values)).sum())} of the model's '{name}' "
                             f"values are NaN or infinite", field=name)
        data[name] = values
    labels = [str(v) for v in probe[dims.UNIT_LABEL].values]
    prefixes = [dims.prefix_of_unit(label) for label in labels]
    counts = [prefixes.count(prefix) for prefix in dims.layer_labels(n_layers)]
    have = {str(v): k for k, v in enumerate(zgroup[dims.UNIT_LABEL][:].tolist())}
    own = unit_digest_values(labels, data)
    if any(label not in have for label in labels):
        return {}, counts, (labels, data), own
    return _placed(zgroup, have, labels, data), counts, None, own


def unit_digest_values(labels, data: dict) -> dict:
    """A model's own units as its digest covers them, whatever their positions in the
    group: ``unit_label`` and each unit array's values (..., own units), in layer order
    (input to output) and channel order (a model probed without units adds nothing, so
    its digest is the same as before units existed)."""
    def key(label):
        prefix, channel = str(label).split("/", 1)
        return -int(prefix.split("-", 1)[1]), int(channel)

    order = sorted(range(len(labels)), key=lambda k: key(labels[k]))
    out = {dims.UNIT_LABEL: np.array([str(labels[k]) for k in order], dtype=object)}
    out.update({name: np.ascontiguousarray(np.asarray(values)[..., order])
                for name, values in data.items()})
    return out


def _placed(zgroup, have: dict, labels, data: dict) -> dict:
    """{name: the group's row of unit array ``name``}: ``data[name]`` (..., own units) at
    the positions ``have`` gives its ``labels``, NaN elsewhere."""
    positions = [have[label] for label in labels]
    out = {}
    for name, values in data.items():
        row = np.full(zgroup[name].shape[1:], np.nan, dtype=zgroup[name].dtype)
        row[..., positions] = values
        out[name] = row
    return out


def finish_probes(path, suite: str, transform: str, results, source_sha256: dict) -> None:
    """Write the small values of models whose responses are written, then their flags.

    results : ``write_probe_data``'s returns; source_sha256 : {mid: checkpoint sha256}.
    Driver only (one read-modify-write per small array, whatever the number of models).
    """
    results = list(results)
    if not results:
        return
    group = probe_group(suite, transform)
    if any(r.get("units") is not None for r in results):
        _grow_units(path, group, [r["units"][0] for r in results if r.get("units") is not None])
    with quiet():
        zgroup = zarr_group(path, group, committed=True)
        mids = [r["mid"] for r in results]
        rows = mid_positions(zgroup, mids, path, group)
        pending = [(row, r["units"]) for row, r in zip(rows, results)
                   if r.get("units") is not None]
        if pending:
            have = {str(v): k for k, v in enumerate(zgroup[dims.UNIT_LABEL][:].tolist())}
            for row, (labels, data) in pending:
                placed = _placed(zgroup, have, labels, data)
                write_rows(zgroup, [row], {name: v[None] for name, v in placed.items()})
        values = {
            dims.LAYER_NAME: np.stack([np.asarray(r["layer_name"], dtype=object)
                                       for r in results]),
            SOURCE: np.array([source_sha256.get(m, "") for m in mids], dtype=object),
            DIGEST: np.array([r["digest"] for r in results], dtype=object),
            ERROR: np.full(len(results), "", dtype=object),
        }
        if dims.UNIT_COUNT in zgroup:
            n_layers = zgroup[dims.UNIT_COUNT].shape[1]
            values[dims.UNIT_COUNT] = np.array([r.get("unit_count", [-1] * n_layers)
                                                for r in results], dtype=np.int64)
            names = np.asarray(zgroup[dims.LAYER_NAME][:], dtype=object)
            counts = np.asarray(zgroup[dims.UNIT_COUNT][:])
            names[np.asarray(rows)] = values[dims.LAYER_NAME]
            counts[np.asarray(rows)] = values[dims.UNIT_COUNT]
            layers = zgroup[dims.UNIT_LAYER]
            layers[...] = fit(layers, np.asarray(
                unit_layers(names, counts, zgroup[dims.UNIT_LABEL][:].tolist()), dtype=object),
                dims.UNIT_LAYER)
        write_table_rows(zgroup, rows, values, flag=dims.DONE)


def unit_layers(layer_names, unit_count, labels) -> list[str]:
    """The ``unit_layer`` coordinate of a probe group's units ``labels`` from its rows'
    ``layer_names`` (model, layer) and ``unit_count`` (model, layer): ``dims.unit_layers_of``
    of the rows that recorded units."""
    names = np.asarray(layer_names, dtype=object)
    return dims.unit_layers_of(names[np.asarray(unit_count).min(axis=-1) >= 0], labels)


def _grow_units(path, group: str, label_lists) -> None:
    """Append the labels of ``label_lists`` the group's ``unit`` dim lacks (one committed
    layout change; existing rows read NaN there). Driver only, holding the store's lock."""
    with quiet():
        zgroup = zarr_group(path, group, committed=True)
        have = [str(v) for v in zgroup[dims.UNIT_LABEL][:].tolist()]
    new = list(dict.fromkeys(label for labels in label_lists for label in labels
                             if label not in set(have)))
    if not new:
        return
    begin(path, group)
    with quiet():
        zgroup = zarr_group(path, group)
        resize_along(zgroup, dims.UNIT, len(have) + len(new))
        zgroup[dims.UNIT_LABEL][len(have):] = fit(zgroup[dims.UNIT_LABEL],
                                                 np.array(new, dtype=object), dims.UNIT_LABEL)
    commit(path, group)


def write_probe(path, suite: str, transform: str, mid: str, probe: xr.Dataset, *,
                source_sha256: str = "") -> str:
    """Write one model's responses, its lineage and then its ``done`` flag; return the digest.

    probe : one model's probe dataset (no ``mid`` dim), on the group's grid and samples.
    A model already done has its flag cleared before its data is overwritten. Driver only
    (the probe stage's workers call ``write_probe_data``).
    """
    clear_done(path, probe_group(suite, transform), [mid])
    result = write_probe_data(path, suite, transform, mid, probe)
    finish_probes(path, suite, transform, [result], {str(mid): source_sha256})
    return result["digest"]


def write_probe_failure(path, suite: str, transform: str, mid: str, message: str) -> None:
    """Record why a model's responses were refused (its ``done`` flag cleared). Driver only."""
    group = probe_group(suite, transform)
    with quiet():
        zgroup = zarr_group(path, group, committed=True)
        (row,) = mid_positions(zgroup, [mid], path, group)
        write_table_rows(zgroup, [row], {ERROR: np.array([message], dtype=object)},
                         flag=dims.DONE, flag_value=False)


def open_probes(path, suite: str, transform: str, *, committed: bool = True) -> xr.Dataset:
    """Every model's probe responses for one suite and transform, lazily (dask).

    The small coordinates ``label`` (sample,), ``unit_label`` and ``unit_layer`` (unit,)
    are loaded into memory.
    """
    ds = open_group(path, probe_group(suite, transform), committed=committed)
    small = [name for name in (dims.LABEL, dims.UNIT_LABEL, dims.UNIT_LAYER) if name in ds.coords]
    if small:
        ds = ds.assign_coords({name: ds[name].load() for name in small})
    return ds


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


def _precision(name: str, precision) -> str:
    """The float dtype a response variable is stored in."""
    return "float64" if name in FLOAT64_RESPONSES else precision


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
