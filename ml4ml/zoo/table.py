"""The ``models`` table's columns and rows: what the train stage, added models and the
model sources all read and write (below ``stage`` and ``adding``, which both use it).

``recipe_table(recipes)`` builds rows from recipes, ``recipe_from_row`` reads one back;
``TRAINED``, ``CHECKPOINT``, ``SHA256`` ... name the outcome columns;
``invalidate_downstream`` clears the later results of models whose row changed.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from ml4ml import dims, store
from ml4ml.zoo.recipe import FIELD_ATTRS, Recipe

TUPLE_FIELDS = ("normalize_mean", "normalize_std", "anomaly_removed")
TRAINED = "trained"
CHECKPOINT = "checkpoint"
SHA256 = "checkpoint_sha256"
TEST_ACCURACY = "test_accuracy"
TRAIN_SECONDS = "train_seconds"
N_TRAIN_IMAGES = "n_train_images"
TRAIN_ERROR = "train_error"
OUTCOME_ATTRS = {
    TRAINED: ("trained", "true once the model's checkpoint and outcome are written"),
    TRAIN_ERROR: ("training error", "why training was refused; empty when it was not"),
    CHECKPOINT: ("checkpoint", "path of the model's checkpoint file"),
    SHA256: ("checkpoint sha256", "sha256 of the checkpoint file as written"),
    TEST_ACCURACY: ("clean test accuracy", "accuracy on the train suite's test split"),
    TRAIN_SECONDS: ("training time", "seconds the training took"),
    N_TRAIN_IMAGES: ("training images", "size of the training set after n_train and the "
                     "anomaly"),
}


def recipe_table(recipes) -> xr.Dataset:
    """The ``models`` rows of ``recipes``: one variable per recipe field (dim ``mid``).

    Tuple fields (normalisation, removed intervals) are stored as JSON strings; the
    training-outcome variables start empty (``trained`` False).
    """
    names = Recipe.field_names()
    columns = {name: [] for name in names if name != "mid"}
    for r in recipes:
        d = r.to_dict()
        for name in columns:
            value = d[name]
            columns[name].append(json.dumps(list(value)) if name in TUPLE_FIELDS else value)
    data = {}
    for name, values in columns.items():
        arr = np.asarray(values)
        if arr.dtype.kind in "US" or arr.dtype == object:
            arr = arr.astype(object)
        data[name] = ((dims.MID,), arr)
    n = len(recipes)
    data["anomaly_name"] = ((dims.MID,), np.array([r.anomaly_name for r in recipes], dtype=object))
    data[TRAINED] = ((dims.MID,), np.zeros(n, dtype=bool))
    data[TRAIN_ERROR] = ((dims.MID,), np.full(n, "", dtype=object))
    data[CHECKPOINT] = ((dims.MID,), np.full(n, "", dtype=object))
    data[SHA256] = ((dims.MID,), np.full(n, "", dtype=object))
    data[TEST_ACCURACY] = ((dims.MID,), np.full(n, np.nan))
    data[TRAIN_SECONDS] = ((dims.MID,), np.full(n, np.nan))
    data[N_TRAIN_IMAGES] = ((dims.MID,), np.full(n, -1, dtype=np.int64))
    mids = np.array([r.mid for r in recipes], dtype=object)
    table = xr.Dataset(data, coords={dims.MID: mids})
    for name, (long_name, description) in {**FIELD_ATTRS, **OUTCOME_ATTRS}.items():
        if name in table.variables:
            table[name].attrs.update(long_name=long_name, description=description)
    return table


def recipe_from_row(row: xr.Dataset) -> Recipe:
    """Rebuild a Recipe from one ``models`` row (the inverse of ``recipe_table``)."""
    values = {"mid": str(row[dims.MID].values)}
    for name in Recipe.field_names():
        if name == "mid" or name not in row:
            continue
        v = row[name].values.item()
        if name in TUPLE_FIELDS:
            v = tuple(tuple(x) if isinstance(x, list) else x for x in json.loads(v or "[]"))
        elif isinstance(v, (np.generic,)):
            v = v.item()
        values[name] = v
    return Recipe(**values)


def invalidate_downstream(path, mids) -> None:
    """Clear the ``done`` flags of ``mids`` in every probe, matrices and measures group."""
    for prefix in ("probes", "matrices", "measures"):
        for suite, transform in store.list_groups(path, prefix):
            store.clear_done(path, f"{prefix}/{suite}/{transform}", list(mids))
