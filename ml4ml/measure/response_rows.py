"""The response measures of a probe group, laid out as the measures group stores them.

``response_dataset(probes)`` is the response part of the measure stage's graph:
``response_value (mid, level, response_measure)`` over the group's levels
(``dims.level_names``). At ``confidence`` the units are the softmax classes (``prob``,
probabilities, ``prediction`` as the predictions); at each ``layer-k_<stat>`` level the
unit is that one recorded statistic (``act``). One blockwise task per chunk of models reads
``prob``, ``prediction`` and ``act`` once (the chunks the variance matrices read too) and
computes every measure of every level in it (``responses.responses_block``).

Undefined, so NaN, on the layer levels (``LAYER_UNDEFINED``): ``geed_kl`` (a statistic is
not a probability), ``geed_cos`` (one number has no direction), ``consistency`` (it is
about the predicted class) and ``lee`` (the Lie derivative of the softmax). ``lee`` is a
measure only where the probes hold ``lee (mid, sample)``: its mean over samples, at
``confidence``. Definitions: docs/measures.md, "Response measures".
"""

from __future__ import annotations

import functools

import numpy as np
import xarray as xr

from ml4ml import dims, store
from ml4ml.errors import InputError
from ml4ml.measure.matrices import apply_to_blocks, matrix_levels
from ml4ml.measure.response_kernels import TMEASURES_MEASURES
from ml4ml.measure.responses import (central_spacing, registered_response_measures,
                                     response_plan, responses_block)

__all__ = ["LEE", "LAYER_UNDEFINED", "response_names", "response_dataset",
           "defined_levels", "add_response_measures"]

# the probes' Lie derivative per sample (probe_model(..., lie_derivative=True)) and its measure
LEE = "lee"
# response measures that are NaN by definition on a layer statistic's level
LAYER_UNDEFINED = ("geed_kl", "geed_cos", "consistency", LEE)


def response_names(probes: xr.Dataset, names=None) -> list[str]:
    """The response measures of ``probes``: ``names`` (validated) or every built-in and
    registered one, plus ``lee`` where the probes hold ``lee (mid, sample)``."""
    known = list(registered_response_measures()) + ([LEE] if LEE in probes else [])
    if names is None:
        return known
    names = list(dict.fromkeys(str(name) for name in names))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InputError(f"unknown response measure(s) {', '.join(unknown)}; known: "
                         f"{', '.join(known)}", field="--measure",
                         hint="register one with ml4ml.measure.register_response_measure "
                              "(or --plugin MODULE)")
    return names


def defined_levels(name: str, levels) -> list[str]:
    """The levels of ``levels`` where the response measure ``name`` is defined."""
    return [str(level) for level in levels
            if str(level) == dims.CONFIDENCE_LEVEL or name not in LAYER_UNDEFINED]


def response_dataset(probes: xr.Dataset, names=None) -> xr.Dataset:
    """``response_value (..., level, response_measure)`` float64 of a probe dataset, lazily.

    probes : ``prob`` (..., aug_param, sample, class), ``prediction`` (..., aug_param,
        sample), ``act`` (..., aug_param, sample, layer, stat), optional ``lee`` (...,
        sample); ``...`` is usually ``mid``. Without ``prob`` (reference files imported
        with ``import-legacy`` hold only the confidence) every measure at ``confidence``
        but ``consistency`` is NaN. The identity is the grid's centre (as for the
        variance matrices); one grid step is read from the ``aug_param`` coordinate.
    names : response measure names (``response_names``); default every one.
    """
    names = response_names(probes, names)
    for name in (dims.PREDICTION, dims.ACT):
        if name not in probes:
            raise InputError(f"the probe dataset has no variable '{name}'; found "
                             f"{sorted(probes.data_vars)}", field=name)
    n_params, n_samples = probes.sizes[dims.AUG_PARAM], probes.sizes[dims.SAMPLE]
    identity = n_params // 2
    kernel = [name for name in names if name != LEE]
    if dims.PROB in probes:
        prob, undefined = probes[dims.PROB], ()
    else:  # imported reference files hold no softmax: only consistency is defined there
        prob = probes[dims.CONFIDENCE].expand_dims({dims.CLASS: 1}, axis=-1)
        undefined = tuple(name for name in kernel if name != "consistency")
    prob = prob.transpose(..., dims.AUG_PARAM, dims.SAMPLE, dims.CLASS)
    spacing = central_spacing(prob.rename({dims.CLASS: dims.UNIT}), identity, None)
    grid = np.asarray(probes[dims.AUG_PARAM].values, dtype=np.float64)
    shared = dict(n_params=n_params, n_samples=n_samples, identity_index=identity,
                  spacing=spacing, grid=grid)
    plans = {
        "confidence": response_plan(kernel, n_units=prob.sizes[dims.CLASS], predictions=True,
                                    probabilities=True, undefined=undefined, **shared)
        if kernel else None,
        # every statistic a one-unit response, computed as the units of one block per
        # unit (``per_unit``): anova's Bonferroni factor is that of one unit
        "layers": response_plan(kernel, n_units=1, predictions=False, probabilities=False,
                                undefined=LAYER_UNDEFINED, per_unit=True, **shared)
        if kernel else None,
    }
    act = probes[dims.ACT]
    if dims.STAT in act.coords:
        act = act.sel({dims.STAT: list(dims.STATS)})
    core = [dims.AUG_PARAM, dims.SAMPLE]
    args = [prob, probes[dims.PREDICTION].transpose(..., *core),
            act.transpose(..., *core, dims.LAYER, dims.STAT)]
    core_dims = [core + [dims.CLASS], core, core + [dims.LAYER, dims.STAT]]
    if LEE in names:
        args.append(probes[LEE].transpose(..., dims.SAMPLE))
        core_dims.append([dims.SAMPLE])
    args = [arg.drop_vars(dims.LABEL, errors="ignore") for arg in args]
    levels = matrix_levels(probes)
    value = xr.apply_ufunc(
        functools.partial(apply_to_blocks, _levels_block),
        *args,
        input_core_dims=core_dims,
        output_core_dims=[[dims.LEVEL, dims.RESPONSE_MEASURE]],
        kwargs={"core_ndims": tuple(len(c) for c in core_dims),
                "out_core_sizes": (len(levels), len(names)), "plans": plans,
                "names": tuple(names), "kernel": tuple(kernel)},
        dask="allowed",
        keep_attrs=False,
    )
    value = value.assign_coords({dims.LEVEL: np.array(levels, dtype=object),
                                 dims.RESPONSE_MEASURE: np.array(names, dtype=object)})
    return dims.describe(xr.Dataset({dims.RESPONSE_VALUE: value}))


def _levels_block(prob, prediction, act, lee=None, *, plans, names, kernel):
    """(lead..., level, name) of one block: (lead..., P, S, C) probabilities, (lead..., P,
    S) predictions, (lead..., P, S, L, T) statistics and (lead..., S) Lie derivatives."""
    lead = np.broadcast_shapes(prob.shape[:-3], prediction.shape[:-2], act.shape[:-4])
    n_layers, n_stats = act.shape[-2:]
    out = np.full(lead + (1 + n_layers * n_stats, len(names)), np.nan)
    if kernel:
        at = [names.index(name) for name in kernel]
        out[..., 0, at] = responses_block(prob, prediction, plan=plans["confidence"])
        # the statistics as the units of one block, (lead..., P, S, L T), measured per unit
        stats = act.reshape(act.shape[:-2] + (n_layers * n_stats,))
        layers = responses_block(stats, None, plan=plans["layers"])  # (lead..., L T, names)
        tmeasures = [k for k, name in enumerate(kernel) if name in TMEASURES_MEASURES]
        # one unit's average over its finite units: NaN where the unit is not finite
        layers[..., tmeasures] = np.where(np.isfinite(layers[..., tmeasures]),
                                          layers[..., tmeasures], np.nan)
        out[..., 1:, at] = layers
    if lee is not None:
        out[..., 0, names.index(LEE)] = np.asarray(lee, dtype=np.float64).mean(axis=-1)
    return out


def add_response_measures(path, group: str, probes: xr.Dataset, wanted, measured,
                          n_todo: int) -> tuple[list[str], list[str]]:
    """Append to the measures ``group`` the response measures of ``wanted`` it lacks
    (every one, in a group an earlier version wrote), computed from the stored ``probes``
    for its rows ``measured`` (done, current: no re-probing; NaN for the others), in one
    committed change (``store.append_responses``). The caller holds the writer lock.

    Returns (the group's response measure names now, for the rows measured next; the
    names added). InputError where ``n_todo`` models are to be measured but a stored name
    is registered no more (its plugin was not loaded).
    """
    wanted = response_names(probes, wanted)
    if not store.group_exists(path, group):
        return wanted, []
    have = store.stored_labels(path, group, dims.RESPONSE_MEASURE)  # None: no response_value
    present, have = have is not None, have or []
    lost = [name for name in have if name not in response_names(probes)]
    if lost and n_todo:
        raise InputError(f"response measure(s) {lost} are in the store but not registered "
                         f"now, so {n_todo} new model(s) cannot be measured alike; the "
                         f"stored values stay", file=path, field="--measure",
                         hint="load the measure's plugin again with --plugin FILE")
    new = [name for name in wanted if name not in have]
    if not new and present:
        return have, []
    stored = store.open_group(path, group)
    rows = [str(m) for m in stored[dims.MID].values]
    levels = [str(level) for level in stored[dims.LEVEL].values]
    value = xr.DataArray(np.full((len(rows), len(levels), len(new)), np.nan),
                         dims=(dims.MID, dims.LEVEL, dims.RESPONSE_MEASURE),
                         coords={dims.MID: np.array(rows, dtype=object),
                                 dims.LEVEL: np.array(levels, dtype=object),
                                 dims.RESPONSE_MEASURE: np.array(new, dtype=object)})
    measured = [m for m in rows if m in set(measured)]
    if measured and new:
        lazy = response_dataset(probes.sel({dims.MID: measured}), new)[dims.RESPONSE_VALUE]
        with store.layout.quiet():
            computed = lazy.compute()
        value.loc[{dims.MID: measured}] = computed.transpose(*value.dims).values
    store.append_responses(path, group, value)
    return have + new, new
