"""Assessor feature tables from the measures dataset (docs/measures.md, "paper80")."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import xarray as xr

from ml4ml import dims
from ml4ml.errors import InputError

__all__ = ["PAPER80_MEASURES", "PAPER80_STATS", "paper80", "selection", "FEATURE_SETS",
           "features"]

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
# layer statistics used, for each of the last two recorded layers
PAPER80_STATS = ("max", "max_mean")
_NUMBERED_CONV = re.compile(r"^conv\d+$")


def _feature_layer_name(name: str) -> str:
    """Feature prefix of a layer: "conv8" as is, a module path with "." replaced by "_"."""
    name = str(name)
    return name if _NUMBERED_CONV.match(name) else name.replace(".", "_")


def _last_two_layers(measures: xr.Dataset) -> list[tuple[int, str]]:
    """(layer index, feature prefix) of the last two recorded layers, shared by every model."""
    if dims.LAYER_NAME in measures:
        names = measures[dims.LAYER_NAME]
        n_layers = names.sizes[dims.LAYER]
        values = np.asarray(names.values, dtype=object)
        if values.ndim == 1:
            values = values[None, :]
        values = values.reshape(-1, n_layers)
    else:
        levels = [str(level) for level in measures[dims.LEVEL].values]
        n_layers = len({level.split("_")[0] for level in levels if level.startswith("layer")})
        values = np.array([[f"layer{i}" for i in range(n_layers)]], dtype=object)
    if n_layers < 2:
        raise InputError(
            f"paper80 needs at least two recorded layers; found {n_layers}", field=dims.LAYER_NAME
        )
    chosen = []
    for index in (n_layers - 2, n_layers - 1):
        prefixes = {_feature_layer_name(name) for name in values[:, index]}
        if len(prefixes) != 1:
            raise InputError(
                f"models record different layers at position {index}: {sorted(prefixes)}; "
                f"paper80 columns need one name per position",
                field=dims.LAYER_NAME,
                hint="build features for each architecture separately",
            )
        chosen.append((index, prefixes.pop()))
    return chosen


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
    the last two recorded layers, full interval, in docs/measures.md order.
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
    matrices = [(dims.CONFIDENCE_LEVEL, "confidence")]
    for index, prefix in _last_two_layers(measures):
        matrices += [(dims.layer_level(index, stat), f"{prefix}_{stat}") for stat in PAPER80_STATS]
    table = value.sel({dims.LEVEL: [level for level, _ in matrices]}).transpose(
        dims.MID, dims.LEVEL, dims.MEASURE
    )
    numbers = np.asarray(table.values, dtype=np.float64).reshape(table.sizes[dims.MID], -1)
    columns = [f"{prefix}_{name}" for _, prefix in matrices for name in PAPER80_MEASURES]
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
    levels : levels to use: "confidence", "layer<i>_<stat>" or "<layer name>_<stat>"
        (e.g. "conv3_max"); default every level (filtered by ``stats``).
    stats : keep only the layer levels of these statistics (the confidence stays).
    intervals : nested intervals to use (0 = the full grid).
    names : measure names (default every measure of the store but ``sstv`` beyond
        interval 0, where it is undefined).

    Columns ``<prefix>_<measure>`` for interval 0 and ``<prefix>_<measure>_k<interval>``
    otherwise, where the prefix is paper80's ("confidence", "conv8_max", ...).
    """
    if split not in dims.SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {dims.SPLITS}", field="split")
    value = measures[dims.VALUE]
    if dims.MID not in value.dims:
        value = value.expand_dims(dims.MID)
    all_levels = [str(level) for level in value[dims.LEVEL].values]
    prefixes = {dims.CONFIDENCE_LEVEL: "confidence"}
    names_of_layers = _all_layer_names(measures, all_levels)
    for level in all_levels:
        if level.startswith("layer"):
            index, stat = level[len("layer"):].split("_", 1)
            prefixes[level] = f"{names_of_layers[int(index)]}_{stat}"
    by_prefix = {prefix: level for level, prefix in prefixes.items()}
    chosen = []
    for level in (levels or all_levels):
        key = level if level in prefixes else by_prefix.get(level)
        if key is None:
            raise InputError(f"unknown level {level!r}; the store has "
                             f"{', '.join(prefixes.values())}", field="--level")
        chosen.append(key)
    if stats:
        unknown = [s for s in stats if s not in dims.STATS]
        if unknown:
            raise InputError(f"unknown statistic(s) {unknown}; expected some of "
                             f"{', '.join(dims.STATS)}", field="--stat")
        chosen = [c for c in chosen if c == dims.CONFIDENCE_LEVEL
                  or c.split("_", 1)[1] in stats]
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
                columns.append(f"{prefixes[level]}_{name}{suffix}")
                blocks.append((level, int(k), name))
    numbers = np.stack([value.sel({dims.LEVEL: level, dims.INTERVAL: k, dims.MEASURE: name})
                        .values for level, k, name in blocks], axis=-1) if blocks else \
        np.zeros((value.sizes[dims.MID], 0))
    frame = pd.DataFrame(np.asarray(numbers, dtype=np.float64), columns=columns)
    frame.insert(0, dims.MID, np.asarray(value[dims.MID].values, dtype=object))
    return frame


def _all_layer_names(measures: xr.Dataset, levels) -> list[str]:
    n_layers = len({level.split("_")[0] for level in levels if level.startswith("layer")})
    if dims.LAYER_NAME not in measures:
        return [f"layer{i}" for i in range(n_layers)]
    values = np.asarray(measures[dims.LAYER_NAME].values, dtype=object).reshape(-1, n_layers)
    out = []
    for index in range(n_layers):
        names = {_feature_layer_name(name) for name in values[:, index]}
        out.append(names.pop() if len(names) == 1 else f"layer{index}")
    return out


FEATURE_SETS = {"paper80": paper80}


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
