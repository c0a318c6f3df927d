"""Response measures per channel: the probes' ``unit`` array measured unit by unit.

``unit_values`` gives every response measure of every recorded channel (the probes'
``unit`` array, ``[probe] units = "channel"``), lazily, one task per model;
``channel_levels`` averages them per recorded layer into the levels ``layer-k_channels``
that join ``response_value`` (docs/measures.md, "Units").
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ml4ml import dims
from ml4ml.errors import InputError
from ml4ml.measure.response_kernels import safe_divide
from ml4ml.measure.responses import response_measures

__all__ = ["unit_values", "channel_levels", "unit_responses"]


def unit_responses(probes: xr.Dataset) -> xr.DataArray:
    """The probes' ``unit`` array (mid, aug_param, sample, unit) as a plain DataArray,
    one dask chunk per model, coordinates ``unit_label`` and ``unit_layer``."""
    if dims.UNIT_RESPONSE not in probes.variables or probes[dims.UNIT_RESPONSE].ndim != 4:
        raise InputError("the probes hold no channel units", field=dims.UNIT_RESPONSE,
                         hint="set '[probe] units = \"channel\"' and run 'ml4ml probe' again")
    var = probes[dims.UNIT_RESPONSE].variable.transpose(
        dims.MID, dims.AUG_PARAM, dims.SAMPLE, dims.UNIT)
    coords = {name: probes[name].variable for name in (dims.MID, dims.AUG_PARAM, dims.SAMPLE)}
    coords.update({name: (dims.UNIT, np.asarray(probes[name].values).astype(str))
                   for name in (dims.UNIT_LABEL, dims.UNIT_LAYER) if name in probes.variables})
    unit = xr.DataArray(var, coords=coords, name=dims.UNIT_RESPONSE)
    if unit.chunks is not None:  # one task per model: whole along every other dim
        unit = unit.chunk({dims.MID: 1, dims.AUG_PARAM: -1, dims.SAMPLE: -1, dims.UNIT: -1})
    return unit


def unit_values(probes: xr.Dataset, names=None) -> xr.DataArray:
    """Every response measure of every channel unit, lazily.

    probes : a probe group (``store.open_probes``) holding ``unit`` (mid, aug_param,
        sample, unit), ``unit_count`` (mid, layer), ``unit_tv`` / ``unit_sv`` (mid, unit)
        and ``prediction`` (for ``consistency``, the same for every unit).
    names : measure names (default every built-in and registered one).
    Returns DataArray ``unit_value`` (mid, unit, response_measure) float64 with
    coordinates ``unit_label`` and ``unit_layer``; NaN for a unit a model has no channel
    at (the NaN padding of mixed stores) and for a model without units.

    ``response_measures(per_unit=True)`` measures the channels of one layer of the models
    with as many channels there together (their units hold no padding, so tmeasures'
    Bonferroni-corrected ``anova`` counts the layer's own channels, as tmeasures counts a
    layer's units); ``tv``, ``sv`` and ``nv`` are the feature maps' (``unit_tv``,
    ``unit_sv``: tmeasures' ``AverageFeatureMaps``), the others those of the channel
    means. Each model's chunk is read once; one kernel task per model and layer.
    """
    unit = unit_responses(probes)
    mids = np.asarray(unit[dims.MID].values)
    labels = [str(v) for v in unit[dims.UNIT_LABEL].values]
    position = {label: k for k, label in enumerate(labels)}
    counts = np.asarray(probes[dims.UNIT_COUNT].values) if dims.UNIT_COUNT in probes else \
        np.full((len(mids), 0), -1)
    predictions = probes[dims.PREDICTION] if dims.PREDICTION in probes else None
    if predictions is not None and predictions.chunks is not None:
        predictions = predictions.chunk({dims.MID: 1, dims.AUG_PARAM: -1, dims.SAMPLE: -1})
    plain = unit.drop_vars([dims.UNIT_LABEL, dims.UNIT_LAYER], errors="ignore")
    pieces = []
    for k, prefix in enumerate(dims.layer_labels(counts.shape[1])):
        for count in sorted(set(counts[:, k].tolist()) - {-1, 0}):
            rows = np.flatnonzero(counts[:, k] == count)
            own = [f"{prefix}/{c}" for c in range(count)]
            if any(label not in position for label in own):
                raise InputError(f"the probes' unit_label lacks {prefix} channels its "
                                 f"unit_count records", field=dims.UNIT_LABEL)
            block = plain.isel({dims.MID: rows, dims.UNIT: [position[u] for u in own]})
            pieces.append(response_measures(
                block.assign_coords({dims.UNIT: own}), names,
                identity_index=unit.sizes[dims.AUG_PARAM] // 2,
                predictions=None if predictions is None else predictions.isel({dims.MID: rows}),
                probabilities=False, per_unit=True).rename("piece"))
    if not pieces:
        raise InputError("no model of the probes recorded channel units",
                         field=dims.UNIT_COUNT,
                         hint="set '[probe] units = \"channel\"' and run 'ml4ml probe' again")
    value = xr.merge(pieces, join="outer", compat="no_conflicts")["piece"]
    value = value.reindex({dims.MID: mids, dims.UNIT: labels}).drop_vars(dims.UNIT)
    value = value.assign_coords({name: unit[name].variable for name in
                                 (dims.UNIT_LABEL, dims.UNIT_LAYER) if name in unit.coords})
    value = value.transpose(dims.MID, dims.UNIT, dims.RESPONSE_MEASURE)
    if dims.UNIT_TV in probes and dims.UNIT_SV in probes:
        value = _feature_map_variances(value, probes)
    value.name = dims.UNIT_VALUE
    long_name, description = dims.DESCRIPTIONS[dims.UNIT_VALUE]
    value.attrs = {"long_name": long_name, "description": description}
    return value


def _feature_map_variances(value: xr.DataArray, probes: xr.Dataset) -> xr.DataArray:
    """``value`` with its ``tv``, ``sv`` and ``nv`` those of the channels' feature maps,
    as tmeasures' ``AverageFeatureMaps`` measures them (recorded at probe time: the
    probes' ``unit_tv`` and ``unit_sv``; ``nv`` by tmeasures' ``safe_divide``)."""
    names = [str(n) for n in value[dims.RESPONSE_MEASURE].values]
    wanted = [n for n in ("tv", "sv", "nv") if n in names]
    if not wanted:
        return value
    # NaN where a model has no such channel or recorded none (rows written NaN)
    tv, sv = (xr.DataArray(probes[name].variable.astype(np.float64))
              for name in (dims.UNIT_TV, dims.UNIT_SV))
    tv, sv = (v.chunk({dims.MID: 1, dims.UNIT: -1}) if v.chunks is not None else v
              for v in (tv, sv))
    nv = xr.apply_ufunc(safe_divide, tv, sv, dask="parallelized", output_dtypes=[np.float64])
    nv = nv.where(tv.notnull() & sv.notnull())
    replaced = {"tv": tv, "sv": sv, "nv": nv}
    parts = [replaced[n].variable if n in replaced else value.sel(
        {dims.RESPONSE_MEASURE: n}, drop=True).variable.transpose(dims.MID, dims.UNIT)
        for n in names]
    data = xr.Variable.concat(parts, dim=dims.RESPONSE_MEASURE).transpose(
        dims.MID, dims.UNIT, dims.RESPONSE_MEASURE)
    return value.copy(data=data.data)


def channel_levels(unit_value: xr.DataArray, unit_layer=None) -> xr.DataArray:
    """The mean over each recorded layer's channels of ``unit_value``, as levels.

    unit_value : (mid, unit, response_measure) (``unit_values``), with coordinate
        ``unit_label`` ("layer-2/0", ...) naming each unit's layer by position.
    unit_layer : (unit,) module name of each unit (default the ``unit_layer`` coordinate);
        a layer's ``level_module`` is "<module>_channels" where it names a module, "" where
        it is a layer label (the models differ there).
    Returns DataArray (mid, level, response_measure): levels ``dims.channel_level(prefix)``
    ("layer-2_channels", ...), input to output; the mean over the finite units of the layer
    (NaN padding and tmeasures' inf ignored, as ``response_value`` averages units), NaN
    where none is finite. Lazy where ``unit_value`` is.
    """
    if dims.UNIT_LABEL not in unit_value.coords:
        raise InputError("unit_value lacks the unit_label coordinate", field=dims.UNIT_LABEL)
    labels = [str(v) for v in np.asarray(unit_value[dims.UNIT_LABEL].values)]
    layers = [str(v) for v in np.asarray(
        unit_layer if unit_layer is not None else unit_value[dims.UNIT_LAYER].values)]
    if len(layers) != len(labels):
        raise InputError(f"unit_layer holds {len(layers)} names for {len(labels)} units",
                         field=dims.UNIT_LAYER)
    prefixes = [dims.prefix_of_unit(label) for label in labels]
    order = sorted(set(prefixes), key=lambda p: -int(p.split("-", 1)[1]))  # input to output
    membership = np.array([[p == prefix for p in prefixes] for prefix in order], dtype=float)
    weights = xr.DataArray(membership.T, dims=(dims.UNIT, dims.LEVEL))
    finite = np.isfinite(unit_value)
    total = xr.dot(unit_value.where(finite, 0.0), weights, dim=dims.UNIT)
    count = xr.dot(finite.astype(float), weights, dim=dims.UNIT)
    levels = total / count.where(count > 0)
    module = {prefix: next(layer for p, layer in zip(prefixes, layers) if p == prefix)
              for prefix in order}
    levels = levels.assign_coords({
        dims.LEVEL: [dims.channel_level(prefix) for prefix in order],
        dims.LEVEL_MODULE: (dims.LEVEL, [
            "" if dims.is_layer_label(module[p]) else dims.channel_level(module[p])
            for p in order]),
    }).transpose(dims.MID, dims.LEVEL, dims.RESPONSE_MEASURE)
    levels.name = dims.RESPONSE_VALUE
    long_name, description = dims.DESCRIPTIONS[dims.RESPONSE_VALUE]
    levels.attrs.update(long_name=long_name, description=description)
    return levels
