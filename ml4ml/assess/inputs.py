"""What an assessment reads from a store: its labels and the feature table.

``stored_labels`` gives the labels of one source (the current one by default);
``feature_table`` joins a store's features with hold-out flags, partitions, labels and the
robust accuracy (the formula score). Both read only; the assess stage, its lineage check,
the judgements and the labelling page build on them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml4ml import dims, store
from ml4ml.errors import InputError, StoreError

ROBUST = "robust_accuracy"


def stored_labels(path, transform: str, source: str | None = None) -> tuple[str, dict]:
    """(source name, {mid: 1/0/-1}) of the current labels, or of ``source``."""
    from ml4ml.store.labels import read_labels

    ds = read_labels(path, transform)
    if ds is None or ds.sizes.get("source", 0) == 0:
        raise StoreError(f"the store has no labels for {transform!r} yet", file=path,
                         hint=f"write some with 'ml4ml label {path} --transform {transform} "
                              "--from recipe' (or --from FILE)")
    sources = [str(s) for s in ds["source"].values]
    name = source or str(ds.attrs.get("current_source") or sources[-1])
    if name not in sources:
        raise InputError(f"unknown label source {name!r}; the store has "
                         f"{', '.join(sources)}", file=path, field="--labels")
    column = ds["label"].sel(source=name)
    return name, {str(m): int(v) for m, v in zip(ds[dims.MID].values, column.values)}


def feature_table(path, transform: str, *, suite=None, set: str = "paper80",
                  split: str = "correct", selected=None, labels: str | bool | None = None):
    """(table, unmeasured): features of every measured model, and the models without.

    table : DataFrame, one row per measured model: ``mid``, ``holdout``, ``partition``,
        ``label`` (when ``labels``: True for the current source, or a source name),
        ``robust_accuracy`` (full interval, the formula score), then the features.
    unmeasured : ids in the ``models`` table with no measures for this transform.
    """
    from ml4ml.measure.stage import store_features

    features = store_features(path, transform, suite=suite, set=set, split=split,
                              **(selected or {}))
    models = store.read_models(path)
    ids = [str(m) for m in models[dims.MID].values]
    measured = [str(m) for m in features[dims.MID]]
    measured_ids = frozenset(measured)
    unmeasured = [m for m in ids if m not in measured_ids]
    partition = (dict(zip(ids, [str(p) for p in models["partition"].values]))
                 if "partition" in models else {})
    front = pd.DataFrame({dims.MID: measured, "holdout": holdout_flags(models, measured),
                          "partition": [partition.get(m, "") for m in measured]})
    if labels:
        _, by_mid = stored_labels(path, transform, None if labels is True else labels)
        front["label"] = [by_mid.get(m, -1) for m in measured]
    front[ROBUST] = _robust_accuracy(path, transform, suite, split, measured)
    table = pd.concat([front, features.drop(columns=[dims.MID]).reset_index(drop=True)],
                      axis=1)
    return table, unmeasured


def holdout_flags(models, mids) -> list[bool]:
    """Whether each of ``mids`` is a hold-out model: the models table's ``holdout`` column,
    else (tables of older stores) an id starting with "t"."""
    ids = [str(m) for m in models[dims.MID].values]
    holdout = (dict(zip(ids, np.asarray(models["holdout"].values, dtype=bool).tolist()))
               if "holdout" in models else {})
    return [bool(holdout.get(m, m.startswith("t"))) for m in mids]


def _robust_accuracy(path, transform, suite, split, mids) -> np.ndarray:
    pairs = [(s, t) for s, t in store.list_groups(path, "measures") if t == transform
             and (suite is None or s == suite)]
    ds = store.open_group(path, store.measures_group(*pairs[0]))
    return np.asarray(ds["robust_accuracy"].sel({dims.MID: list(mids), dims.INTERVAL: 0})
                      .values, dtype=np.float64)
