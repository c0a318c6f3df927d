"""Lineage of an assessment: what it was made from, and whether it is still current.

The assessment records its feature set, split and label source, each model's label and a
hash of its features (``feature_hash``), and digests of both (``_lineage``), plus one
digest of all its inputs and settings (``inputs_digest``). ``check_assessment`` compares
them with the store's current labels and features; ``predict``, the judgements and the
report use an assessment only while they agree, on exactly its features.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ml4ml import dims, store
from ml4ml.assess.inputs import ROBUST, feature_table, stored_labels
from ml4ml.errors import InputError, StoreError

# in the inputs digest: assessments made before lineage (1) or before the out-of-fold
# probabilities (2) are redone
LINEAGE_VERSION = 2
VERDICT_VERSION = 2  # in the inputs digest: verdicts of an earlier test are redone


def inputs_digest(table: pd.DataFrame, source, assessors, repeats, seed, set, split) -> str:
    """sha256 of everything an assessment depends on: features, labels, settings."""
    import hashlib

    h = hashlib.sha256()
    h.update(json.dumps([LINEAGE_VERSION, VERDICT_VERSION, source, list(assessors),
                         repeats, seed, set, split, list(table.columns)]).encode())
    h.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _current_digest(path, transform: str) -> str:
    group = store.assess_group(transform)
    if not store.group_exists(path, group):
        return ""
    return str(store.open_group(path, group).attrs.get("inputs_digest", ""))


def _feature_hashes(table: pd.DataFrame, columns) -> np.ndarray:
    """(n_models,) uint64: a hash of each row's ``columns`` (names and values)."""
    return pd.util.hash_pandas_object(table[list(columns)], index=False).to_numpy(np.uint64)


def _digest(pairs) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(sorted(pairs)).encode()).hexdigest()


def _lineage(table, columns, source, set, split) -> dict:
    """What an assessment records of its inputs: the attrs, and ``hashes`` (per model)."""
    hashes = _feature_hashes(table, columns)
    mids = [str(m) for m in table[dims.MID]]
    return {"feature_set": set, "split": split, "label_source": source,
            "labels_digest": _digest([[m, int(v)] for m, v in zip(mids, table["label"])]),
            "features_digest": _digest([[m, str(h)] for m, h in zip(mids, hashes)]
                                       + [["columns", json.dumps(list(columns))]]),
            "hashes": hashes}


def _stale(path, transform, why, mend) -> StoreError:
    return StoreError(f"the assessment of {transform!r} is stale: {why}", file=path,
                      field=store.assess_group(transform), hint=f"run '{mend}' to redo it")


def check_assessment(path, transform: str, *, suite=None, current_labels: bool = False):
    """(table, attrs): the current features of the assessment's feature set and split,
    once the stored assessment of ``transform`` is current; StoreError (one line naming
    the models and the command that redoes it) otherwise.

    Current: the labels of its source and the features of every model it was made from
    are those it recorded (the measures read are fresh: ``store.fresh_mids``).
    current_labels : also require its label source to be the store's current one (what
        the report shows beside it).
    """
    import shlex

    from ml4ml.store.lineage import stale_message_models

    group = store.assess_group(transform)
    if not store.group_exists(path, group):
        raise StoreError(f"the store has no assessor for {transform!r} yet", file=path,
                         hint=f"run 'ml4ml assess {path} --transform {transform}' first")
    ds = store.open_group(path, group)
    attrs = dict(ds.attrs)
    suite = suite or attrs.get("suite") or None
    mend = f"ml4ml assess {shlex.quote(str(path))} --transform {shlex.quote(transform)}" + \
        (f" --suite {shlex.quote(suite)}" if suite else "")
    if "features_digest" not in attrs or "feature_hash" not in ds:
        raise _stale(path, transform, "it records no lineage (made by an older ml4ml)", mend)
    removed = list(attrs.get("models_removed", []) or [])  # by ml4ml remove-models
    if removed:
        raise _stale(path, transform, f"{len(removed)} labelled model(s) it was made with were "
                     f"removed since: {stale_message_models(removed)}", mend)
    source = str(attrs["label_source"])
    current_source = ""
    try:
        current_source, _ = stored_labels(path, transform)
    except StoreError:
        pass
    if current_labels and current_source and current_source != source:
        raise _stale(path, transform, f"it was made on labels {source!r}, the current "
                     f"labels are {current_source!r}", mend)
    if source != current_source:
        mend += f" --labels {shlex.quote(source)}"
    mids = [str(m) for m in ds[dims.MID].values]
    recorded = np.asarray(ds["label"].values, dtype=np.int64)
    try:
        _, by_mid = stored_labels(path, transform, source)
    except (StoreError, InputError):
        raise _stale(path, transform, f"its labels {source!r} are no longer in the store",
                     mend) from None
    now = np.array([by_mid.get(m, -1) for m in mids], dtype=np.int64)
    changed = [m for m, a, b in zip(mids, recorded, now) if a != b]
    if changed:
        raise _stale(path, transform, f"the labels {source!r} of {len(changed)} model(s) "
                     f"changed since it was made: {stale_message_models(changed)}", mend)
    columns = json.loads(ds["assessor"].attrs["features"])
    table, _ = feature_table(path, transform, suite=suite, set=str(attrs["feature_set"]),
                             split=str(attrs["split"]))
    now = [c for c in table.columns if c not in (dims.MID, "holdout", "partition", ROBUST)]
    if now + [ROBUST] != columns:
        raise _stale(path, transform, f"it was made from other features than the set "
                     f"{attrs['feature_set']!r} gives now "
                     f"({_first_difference(columns, now + [ROBUST])})", mend)
    position = {str(m): k for k, m in enumerate(table[dims.MID])}
    missing = [m for m in mids if m not in position]
    if missing:
        raise _stale(path, transform, f"{len(missing)} of its model(s) have no measures now: "
                     f"{stale_message_models(missing)}", mend)
    hashes = _feature_hashes(table, columns)
    stored = np.asarray(ds["feature_hash"].values, dtype=np.uint64)
    changed = [m for m, h in zip(mids, stored) if hashes[position[m]] != h]
    if changed:
        raise _stale(path, transform, f"the features of {len(changed)} model(s) changed "
                     f"since it was made: {stale_message_models(changed)}", mend)
    return table, attrs


def _first_difference(a, b) -> str:
    for x, y in zip(a, b):
        if x != y:
            return f"{x!r} stored, {y!r} now"
    return f"{len(a)} against {len(b)} columns"
