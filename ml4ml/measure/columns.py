"""Every single measure of a measures dataset as one column of a (models x columns) table.

Matrix measures: one column per level x split x interval x measure of ``value (mid,
level, split, interval, measure)``, named ``<level>_<measure>`` (the names of ``paper80``
and ``selection`` for split ``correct`` and the full interval), with ``_<split>`` for the
other splits and ``_k<interval>`` for the nested intervals. Response measures: one column
per level x response measure of ``response_value (mid, level, response_measure)``, named
``<level>_<response_measure>`` (``_response`` appended should a matrix column have the
name). No loop over models or measures: each family is one reshape.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ml4ml import dims

__all__ = ["measure_columns", "MATRIX", "RESPONSE"]

MATRIX, RESPONSE = "matrix", "response"


def _matrix_columns(value: xr.DataArray):
    order = (dims.MID, dims.LEVEL, dims.SPLIT, dims.INTERVAL, dims.MEASURE)
    value = value.transpose(*order)
    grid = np.meshgrid(*(np.asarray(value[d].values) for d in order[1:]), indexing="ij")
    level, split, interval, measure = (np.asarray(g).ravel() for g in grid)
    names = [f"{lv}_{m}" + ("" if s == "correct" else f"_{s}") + ("" if int(k) == 0 else
                                                                   f"_k{int(k)}")
             for lv, s, k, m in zip(level, split, interval, measure)]
    numbers = np.asarray(value.values, dtype=np.float64).reshape(value.sizes[dims.MID], -1)
    return numbers, names, {"family": np.full(len(names), MATRIX, dtype=object),
                            "level": level.astype(str).astype(object),
                            "split": split.astype(str).astype(object),
                            "interval": interval.astype(np.int64),
                            "measure": measure.astype(str).astype(object)}


def _response_columns(value: xr.DataArray, taken: set):
    order = (dims.MID, dims.LEVEL, dims.RESPONSE_MEASURE)
    value = value.transpose(*order)
    level, measure = (np.asarray(g).ravel() for g in np.meshgrid(
        np.asarray(value[dims.LEVEL].values), np.asarray(value[dims.RESPONSE_MEASURE].values),
        indexing="ij"))
    names = [f"{lv}_{m}" for lv, m in zip(level, measure)]
    names = [f"{n}_response" if n in taken else n for n in names]
    numbers = np.asarray(value.values, dtype=np.float64).reshape(value.sizes[dims.MID], -1)
    return numbers, names, {"family": np.full(len(names), RESPONSE, dtype=object),
                            "level": level.astype(str).astype(object),
                            "split": np.full(len(names), "", dtype=object),
                            "interval": np.full(len(names), -1, dtype=np.int64),
                            "measure": measure.astype(str).astype(object)}


def measure_columns(measures: xr.Dataset) -> tuple[pd.DataFrame, dict]:
    """(table, about): every matrix and response measure of ``measures`` as columns.

    Parameters
    ----------
    measures : Dataset with ``value (mid, level, split, interval, measure)`` and/or
        ``response_value (mid, level, response_measure)`` (either may be absent).

    Returns
    -------
    table : DataFrame (n_models, n_columns), index the model ids, columns the names
        (module docstring), float64.
    about : {"family", "level", "split", "interval", "measure"}: arrays (n_columns,)
        saying where each column comes from ("" and -1 where a family has no such dim).
    """
    blocks = []
    if dims.VALUE in measures:
        blocks.append(_matrix_columns(measures[dims.VALUE]))
    if dims.RESPONSE_VALUE in measures:
        taken = set(blocks[0][1]) if blocks else set()
        blocks.append(_response_columns(measures[dims.RESPONSE_VALUE], taken))
    mids = np.asarray([str(m) for m in measures[dims.MID].values], dtype=object) \
        if dims.MID in measures.coords else np.zeros(0, dtype=object)
    if not blocks:
        return pd.DataFrame(index=pd.Index(mids, name=dims.MID)), {
            key: np.zeros(0, dtype=object) for key in ("family", "level", "split",
                                                         "interval", "measure")}
    numbers = np.concatenate([b[0] for b in blocks], axis=1)
    names = [n for b in blocks for n in b[1]]
    about = {key: np.concatenate([b[2][key] for b in blocks]) for key in blocks[0][2]}
    return pd.DataFrame(numbers, index=pd.Index(mids, name=dims.MID), columns=names), about
