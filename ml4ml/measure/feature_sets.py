"""Assessor feature tables from the measures dataset (docs/measures.md, "paper80",
"Feature sets": ``responses`` and ``all``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ml4ml import dims
from ml4ml.errors import InputError

__all__ = ["PAPER80_MEASURES", "PAPER80_STATS", "paper80", "responses",
           "paper80_and_responses", "selection", "FEATURE_SETS", "features"]

# per matrix, in the paper's order (docs/measures.md)
PAPER80_MEASURES = (
    "sstv",
    "mean",
    "s_mean",
    "std",
    "robusterror",
    "discnty",
    "asymm",
    "grad_overall",
    "grad_v_mean",
    "grad_v_std",
    "grad_v_wstd",
    "grad_h_mean",
    "grad_h_std",
    "grad_h_wstd",
    "grad_d_mean",
    "grad_d_std",
)
# layer statistics used, for each of the last two recorded layers (layer-2 and layer-1)
PAPER80_STATS = ("max", "max_mean")


def _last_two_layers(measures: xr.Dataset) -> list[str]:
    """Labels (``dims.layer_label``) of the last two recorded layers, from the levels:
    ``["layer-2", "layer-1"]``."""
    prefixes = dims.prefixes_of_levels(measures[dims.LEVEL].values)
    if len(prefixes) < 2:
        raise InputError(
            f"paper80 needs at least two recorded layers; found {len(prefixes)}",
            field=dims.LAYER_NAME
        )
    return prefixes[-2:]


def paper80(measures: xr.Dataset, split: str = "correct") -> pd.DataFrame:
    """The paper's 80 assessor features, one row per model.

    Parameters
    ----------
    measures : the measures dataset (``measure_database``): ``value`` (mid, level, split,
        interval, measure) and ``layer_name`` (mid, layer).
    split : which sample split ("correct" in the paper).

    Returns
    -------
    pandas.DataFrame, one row per model: column ``mid``, then the 80 features
    ``confidence_<measure>`` and ``<layer>_<stat>_<measure>`` for stats max and max_mean of
    the last two recorded layers (``layer-2``, ``layer-1``: e.g. ``layer-1_max_sstv``), full
    interval, in docs/measures.md order.
    """
    if dims.VALUE not in measures:
        raise InputError("the measures dataset has no variable 'value'", field=dims.VALUE)
    if split not in dims.SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {dims.SPLITS}", field="split")
    value = measures[dims.VALUE]
    missing = [name for name in PAPER80_MEASURES if name not in value[dims.MEASURE].values]
    if missing:
        raise InputError(
            f"the measures dataset lacks {missing}", field=dims.MEASURE,
            hint="compute every paper measure (measures=None)",
        )
    if dims.MID not in value.dims:
        value = value.expand_dims(dims.MID)
    value = value.sel({dims.SPLIT: split, dims.INTERVAL: 0, dims.MEASURE: list(PAPER80_MEASURES)})
    levels = [dims.CONFIDENCE_LEVEL] + [dims.layer_level(prefix, stat) for prefix in
                                        _last_two_layers(measures) for stat in PAPER80_STATS]
    table = value.sel({dims.LEVEL: levels}).transpose(dims.MID, dims.LEVEL, dims.MEASURE)
    numbers = np.asarray(table.values, dtype=np.float64).reshape(table.sizes[dims.MID], -1)
    columns = [f"{level}_{name}" for level in levels for name in PAPER80_MEASURES]
    frame = pd.DataFrame(numbers, columns=columns)
    frame.insert(0, dims.MID, np.asarray(table[dims.MID].values, dtype=object))
    return frame


def selection(measures: xr.Dataset, split: str = "correct", *, levels=None, stats=None,
              intervals=(0,), names=None) -> pd.DataFrame:
    """Any selection of the measures as features, one row per model.

    Parameters
    ----------
    measures : the measures dataset (``value`` (mid, level, split, interval, measure)).
    split : the sample split.
    levels : levels to use: "confidence" or "<layer>_<stat>" (e.g. "layer-1_max", the
        store's ``level`` labels), or a ``level_module`` label (e.g. "conv3_max", where
        every model recorded that module there); default every level (filtered by
        ``stats``).
    stats : keep only the layer levels of these statistics (the confidence stays).
    intervals : nested intervals to use (0 = the full grid).
    names : measure names (default every measure of the store but ``sstv`` beyond
        interval 0, where it is undefined).

    Columns ``<prefix>_<measure>`` for interval 0 and ``<prefix>_<measure>_k<interval>``
    otherwise, where the prefix is the level ("confidence", "layer-1_max", ...), whichever
    label selected it.
    """
    if split not in dims.SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {dims.SPLITS}", field="split")
    value = measures[dims.VALUE]
    if dims.MID not in value.dims:
        value = value.expand_dims(dims.MID)
    all_levels = [str(level) for level in value[dims.LEVEL].values]
    stat_of = {dims.CONFIDENCE_LEVEL: None}
    for prefix in dims.prefixes_of_levels(all_levels):
        stat_of.update({dims.layer_level(prefix, stat): stat for stat in dims.STATS})
    by_module = _by_module(value)
    chosen = []
    for level in (levels or all_levels):
        level = by_module.get(level, level) if level not in stat_of else level
        if level not in stat_of:
            modules = [m for m in by_module if m != dims.CONFIDENCE_LEVEL]
            raise InputError(f"unknown level {level!r}; the store has "
                             f"{', '.join(all_levels)}"
                             + (f" (by module name: {', '.join(modules)})" if modules else ""),
                             field="--level")
        chosen.append(level)
    if stats:
        unknown = [s for s in stats if s not in dims.STATS]
        if unknown:
            raise InputError(f"unknown statistic(s) {unknown}; expected some of "
                             f"{', '.join(dims.STATS)}", field="--stat")
        chosen = [c for c in chosen if c == dims.CONFIDENCE_LEVEL or stat_of[c] in stats]
    n_intervals = value.sizes[dims.INTERVAL]
    bad = [k for k in intervals if not 0 <= int(k) < n_intervals]
    if bad:
        raise InputError(f"unknown interval(s) {bad}; the store has 0..{n_intervals - 1}",
                         field="--interval")
    have = [str(m) for m in value[dims.MEASURE].values]
    wanted = list(names or have)
    missing = [m for m in wanted if m not in have]
    if missing:
        raise InputError(f"unknown measure(s) {missing}; the store has {', '.join(have)}",
                         field="--measure")
    value = value.sel({dims.SPLIT: split})
    columns, blocks = [], []
    for level in chosen:
        for k in intervals:
            for name in wanted:
                if name == "sstv" and int(k) > 0 and names is None:
                    continue
                suffix = "" if int(k) == 0 else f"_k{int(k)}"
                columns.append(f"{level}_{name}{suffix}")
                blocks.append((level, int(k), name))
    numbers = np.stack([value.sel({dims.LEVEL: level, dims.INTERVAL: k, dims.MEASURE: name})
                        .values for level, k, name in blocks], axis=-1) if blocks else \
        np.zeros((value.sizes[dims.MID], 0))
    frame = pd.DataFrame(np.asarray(numbers, dtype=np.float64), columns=columns)
    frame.insert(0, dims.MID, np.asarray(value[dims.MID].values, dtype=object))
    return frame


def _by_module(value: xr.DataArray) -> dict:
    """{level_module label: level} of the levels every model names alike ("" left out)."""
    if dims.LEVEL_MODULE not in value.coords:
        return {}
    pairs = zip([str(m) for m in value[dims.LEVEL_MODULE].values],
                [str(level) for level in value[dims.LEVEL].values])
    return {module: level for module, level in pairs if module}


def responses(measures: xr.Dataset, split: str = "correct") -> pd.DataFrame:
    """Every response measure at every level where it is defined, one row per model.

    Parameters
    ----------
    measures : the measures dataset with ``response_value`` (mid, level, response_measure).
    split : unused (the response measures have no split); accepted like every set's.

    Returns
    -------
    pandas.DataFrame: column ``mid``, then ``<level>_<response measure>`` for each level
    in the store's order and each response measure in the store's order (e.g.
    ``confidence_nv``, ``layer-1_max_tv``), leaving out those NaN by definition
    (``response_rows.LAYER_UNDEFINED`` on layer levels).
    """
    from ml4ml.measure.response_rows import defined_levels

    if dims.RESPONSE_VALUE not in measures:
        raise InputError("the measures have no response measures ('response_value'; measured "
                         "by an earlier ml4ml)", field=dims.RESPONSE_VALUE,
                         hint="run 'ml4ml measure STORE' to add them from the stored probes")
    value = measures[dims.RESPONSE_VALUE]
    if dims.MID not in value.dims:
        value = value.expand_dims(dims.MID)
    value = value.transpose(dims.MID, dims.LEVEL, dims.RESPONSE_MEASURE)
    levels = [str(level) for level in value[dims.LEVEL].values]
    names = [str(name) for name in value[dims.RESPONSE_MEASURE].values]
    numbers = np.asarray(value.values, dtype=np.float64)
    keep = [(k, j) for k, level in enumerate(levels) for j, name in enumerate(names)
            if level in defined_levels(name, [level])]
    frame = pd.DataFrame(numbers[:, [k for k, _ in keep], [j for _, j in keep]]
                         if keep else np.zeros((numbers.shape[0], 0)),
                         columns=[f"{levels[k]}_{names[j]}" for k, j in keep])
    frame.insert(0, dims.MID, np.asarray(value[dims.MID].values, dtype=object))
    return frame


def paper80_and_responses(measures: xr.Dataset, split: str = "correct") -> pd.DataFrame:
    """``paper80`` then ``responses``: column ``mid``, the 80 features, every response one."""
    paper = paper80(measures, split=split)
    return pd.concat([paper, responses(measures, split=split).drop(columns=dims.MID)], axis=1)


FEATURE_SETS = {"paper80": paper80, "responses": responses, "all": paper80_and_responses}


def features(measures: xr.Dataset, set: str = "paper80", split: str = "correct",
             **selected) -> pd.DataFrame:
    """The feature table ``set`` (a key of ``FEATURE_SETS``, or "selection" with the
    keywords of ``selection``): column ``mid``, then the features."""
    if set == "selection" or selected:
        return selection(measures, split=split, **selected)
    if set not in FEATURE_SETS:
        raise InputError(
            f"unknown feature set {set!r}; expected one of {sorted(FEATURE_SETS)} or "
            f"'selection'", field="set"
        )
    return FEATURE_SETS[set](measures, split=split)
