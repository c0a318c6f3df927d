"""Assess stage: labels and measures of a store -> the paper's protocol -> ``assess/<transform>``.

``label_store`` writes labels (from a file, or the recipe proxy) into ``labels/<transform>``;
``feature_table`` joins a store's features with hold-out flags, partitions and labels;
``assess_store`` runs the protocol (``run_protocol``) for the assessors and the baselines,
compares the best of each on the hold-out models (``compare``: a permutation test that holds
its level), refits the chosen assessor on every labelled model
and writes everything, the refit assessor as skops bytes included, to ``assess/<transform>``
(one committed change; the old results are replaced). ``predict`` judges models with the
stored assessor.

Lineage: the assessment records its feature set, split and label source, each model's
label and a hash of its features (``feature_hash``), and digests of both.
``check_assessment`` compares them with the store's current labels and features; ``predict``
and the report use an assessment only while they agree, on exactly its features.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from ml4ml import dims, store
from ml4ml.errors import InputError, StoreError

__all__ = ["label_store", "feature_table", "assess_store", "predict", "AssessReport",
           "load_assessor", "check_assessment", "ProtocolNotPossible", "ROBUST",
           "SKOPS_TRUSTED", "COMPARISON"]

ROBUST = "robust_accuracy"
# the comparison's figures stored as comparison_<key> (compare's keys)
COMPARISON = ("accuracy_assessor", "accuracy_baseline", "difference", "ci_low", "ci_high",
              "p_value", "p_greater")


class ProtocolNotPossible(InputError):
    """Too few labelled models, or only one kind of label: no protocol to run."""
# the only types a stored assessor may hold: ml4ml's own estimators, and types of
# scikit-learn, numpy and scipy (which skops loads as data, never by running their
# pickled code); anything else is refused, so a store written by someone else never runs
# their code
SKOPS_TRUSTED = ("ml4ml.assess.estimators.L2LinearThreshold",
                 "ml4ml.assess.estimators.FeatureThreshold")
SKOPS_TRUSTED_MODULES = ("sklearn", "numpy", "scipy")


# ----------------------------------------------------------------------------- labels
def label_store(path, transform: str, source, *, grid=None, name: str | None = None) -> dict:
    """Write labels for ``transform``: ``source`` is a file path or ``"recipe"``.

    grid : the tested parameter grid (for the recipe rule; default: the grid of the
        store's probe group of that transform).
    name : the source's name in the store (default "recipe", or "file" for a file).
    Returns {"source", "labels" (mid -> 1/0/-1), "description"}. Nothing is written if the
    file is refused.
    """
    from ml4ml.assess.labels import RECIPE_RULE, read_label_file, recipe_labels
    from ml4ml.store.labels import write_labels

    store.store_attrs(path)
    models = store.read_models(path)
    mids = [str(m) for m in models[dims.MID].values]
    if str(source) == "recipe":
        grid = _tested_grid(path, transform) if grid is None else np.asarray(grid)
        labels = recipe_labels(models, transform, grid)
        description = (f"recipe proxy, tested range {grid.min():g}..{grid.max():g}: "
                       f"{RECIPE_RULE}")
        name = name or "recipe"
    else:
        import hashlib
        from pathlib import Path

        labels = read_label_file(source, transform, mids)
        sha = hashlib.sha256(Path(source).read_bytes()).hexdigest()
        description = f"file {Path(source).resolve()} (sha256 {sha})"
        name = name or "file"
    with store.writing(path, f"ml4ml label --from {source}"):
        write_labels(path, transform, name, {m: v for m, v in labels.items() if v >= 0},
                     description)
    return {"source": name, "labels": labels, "description": description}


def _tested_grid(path, transform: str) -> np.ndarray:
    pairs = [(s, t) for s, t in store.list_groups(path, "probes") if t == transform]
    if not pairs:
        have = sorted({t for _, t in store.list_groups(path, "probes")})
        raise InputError(f"the store has no probes for transform {transform!r}"
                         + (f"; it has {', '.join(have)}" if have else ""),
                         file=path, field="--transform")
    ds = store.open_probes(path, *pairs[0])
    return np.asarray(ds[dims.AUG_PARAM].values)


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


# ----------------------------------------------------------------------------- features
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
    holdout = (dict(zip(ids, np.asarray(models["holdout"].values, dtype=bool).tolist()))
               if "holdout" in models else {m: m.startswith("t") for m in ids})
    partition = (dict(zip(ids, [str(p) for p in models["partition"].values]))
                 if "partition" in models else {})
    front = pd.DataFrame({dims.MID: measured,
                          "holdout": [bool(holdout.get(m, m.startswith("t"))) for m in measured],
                          "partition": [partition.get(m, "") for m in measured]})
    if labels:
        _, by_mid = stored_labels(path, transform, None if labels is True else labels)
        front["label"] = [by_mid.get(m, -1) for m in measured]
    front[ROBUST] = _robust_accuracy(path, transform, suite, split, measured)
    table = pd.concat([front, features.drop(columns=[dims.MID]).reset_index(drop=True)],
                      axis=1)
    return table, unmeasured


def _robust_accuracy(path, transform, suite, split, mids) -> np.ndarray:
    pairs = [(s, t) for s, t in store.list_groups(path, "measures") if t == transform
             and (suite is None or s == suite)]
    ds = store.open_group(path, store.measures_group(*pairs[0]))
    return np.asarray(ds["robust_accuracy"].sel({dims.MID: list(mids), dims.INTERVAL: 0})
                      .values, dtype=np.float64)


# ----------------------------------------------------------------------------- assess
@dataclass
class AssessReport:
    transform: str
    label_source: str
    n_models: int  # labelled and measured: in the protocol
    unlabelled: list  # measured, without a label
    unmeasured: list  # in the models table, without measures
    summary: pd.DataFrame
    comparison: dict
    top: pd.DataFrame
    chosen: str
    seconds: float
    notes: list = field(default_factory=list)
    underpowered: str = ""  # why the comparison is underpowered ("" when it is not)
    best_feature: dict = field(default_factory=dict)  # ``best_feature``'s attrs


def _methods(assessors, n_features: int, seed: int) -> dict:
    """Every method, the assessors and the two feature baselines seeing only the features
    (not the robust accuracy column, which only its baseline reads)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    from ml4ml.assess.estimators import BASELINES, make_assessor, make_baseline

    def features_only(estimator):
        keep = ColumnTransformer([("features", "passthrough", list(range(n_features)))],
                                 remainder="drop")
        return Pipeline([("features", keep), ("method", estimator)])

    methods = {name: features_only(make_assessor(name, seed)) for name in assessors}
    for name in BASELINES:
        if name == "baseline_robust_accuracy":
            methods[name] = make_baseline(name, robust_feature=n_features)
        else:
            methods[name] = features_only(make_baseline(name))
    return methods


def inputs_digest(table: pd.DataFrame, source, assessors, repeats, seed, set, split) -> str:
    """sha256 of everything an assessment depends on: features, labels, settings."""
    import hashlib

    h = hashlib.sha256()
    h.update(json.dumps([LINEAGE_VERSION, source, list(assessors), repeats, seed, set,
                         split, list(table.columns)]).encode())
    h.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _current_digest(path, transform: str) -> str:
    group = store.assess_group(transform)
    if not store.group_exists(path, group):
        return ""
    return str(store.open_group(path, group).attrs.get("inputs_digest", ""))


def assess_store(path, transform: str, *, suite=None, labels: str | None = None,
                 assessors=None, repeats: int = 10, seed: int = 0, set: str = "paper80",
                 split: str = "correct", progress: bool = False,
                 skip_current: bool = False) -> AssessReport | None:
    """Run the paper's protocol on the labelled, measured models and write the results.

    skip_current : return None, writing nothing, when the stored results were computed
        from the same features, labels and settings (lineage: ``inputs_digest``).
    """
    import skops.io

    from ml4ml.assess.comparison import (compare, power_note, summary, top_features,
                                         underpowered_verdict)
    from ml4ml.assess.estimators import ASSESSORS
    from ml4ml.assess.protocol import run_protocol
    from ml4ml.progress import progress as stage_progress

    started = time.perf_counter()
    assessors = list(assessors or ASSESSORS)
    unknown = [a for a in assessors if a not in ASSESSORS]
    if unknown:
        raise InputError(f"unknown assessor(s) {unknown}; expected some of "
                         f"{', '.join(ASSESSORS)}", field="--assessor")
    source, by_mid = stored_labels(path, transform, labels)
    table, unmeasured = feature_table(path, transform, suite=suite, set=set, split=split,
                                      labels=source)
    feature_columns = [c for c in table.columns
                       if c not in (dims.MID, "holdout", "partition", "label", ROBUST)]
    labelled = table[table["label"] >= 0]
    unlabelled = [str(m) for m in table.loc[table["label"] < 0, dims.MID]]
    if labelled["holdout"].sum() < 2 or (~labelled["holdout"]).sum() < 2:
        # the verdict's test is over the hold-out models: it needs two of them
        raise ProtocolNotPossible(f"the protocol and its verdict need at least 2 hold-out "
                                  f"and 2 regular labelled, measured models; found "
                                  f"{int(labelled['holdout'].sum())} and "
                         f"{int((~labelled['holdout']).sum())}", file=path, field="labels")
    if labelled["label"].nunique() < 2:
        raise ProtocolNotPossible(f"every labelled model has label {int(labelled['label'].iloc[0])} "
                         f"({source}): an assessor needs both kinds", file=path,
                         field="labels")
    X = labelled.set_index(dims.MID)[feature_columns + [ROBUST]]
    lineage = _lineage(table, feature_columns + [ROBUST], source, set, split)
    digest = inputs_digest(table, source, assessors, repeats, seed, set, split)
    if skip_current and _current_digest(path, transform) == digest:
        return None
    bar = stage_progress(f"assess {transform}", 1, progress, unit="protocol")
    methods = _methods(assessors, len(feature_columns), seed)
    results = run_protocol(X, labelled["label"].to_numpy(), labelled["holdout"].to_numpy(),
                           methods=methods, repeats=repeats, seed=seed)
    bar.advance(f"{repeats} repeats x 3 folds x {len(methods)} methods")
    bar.close()
    frame = summary(results)
    comparison = compare(results, seed=seed)
    comparison["underpowered"] = power_note(labelled["label"].to_numpy())
    comparison["verdict"] = underpowered_verdict(comparison["verdict"],
                                                 comparison["underpowered"])
    chosen = comparison["chosen_assessor"]
    top = top_features(results, chosen, n=10)
    # the chosen assessor, refit on every labelled model; its score for every measured one
    from sklearn.base import clone

    refit = clone(methods[chosen])
    _seed_estimator(refit, seed)
    refit.fit(X.to_numpy(np.float64), labelled["label"].to_numpy())
    everything = table.set_index(dims.MID)[feature_columns + [ROBUST]].to_numpy(np.float64)
    predicted, score = _judge(refit, everything)
    blob = skops.io.dumps(refit)
    ds = _assess_dataset(results, table, frame, comparison, top, chosen, predicted, score,
                         blob, feature_columns, source, repeats, seed, transform, suite)
    ds.attrs["score_kind"] = _score_kind(refit)
    chosen_feature = best_feature(methods[BEST_FEATURE], X.to_numpy(np.float64),
                                  labelled["label"].to_numpy(),
                                  np.asarray(results["test_fold"].values), feature_columns)
    ds.attrs.update(chosen_feature)
    ds["feature_hash"] = xr.DataArray(lineage.pop("hashes"), dims=dims.MID, attrs={
        "long_name": "feature hash", "description": "hash of the model's features (and "
        "robust accuracy) the assessment was made from (pandas.util.hash_pandas_object)"})
    ds.attrs.update(lineage)
    ds.attrs["inputs_digest"] = digest
    with store.writing(path, f"ml4ml assess {transform}") as notes:
        store.replace_group(path, store.assess_group(transform), ds)
    return AssessReport(transform=transform, label_source=source, n_models=len(labelled),
                        unlabelled=unlabelled, unmeasured=unmeasured, summary=frame,
                        comparison=comparison, top=top, chosen=chosen,
                        seconds=time.perf_counter() - started, notes=list(notes),
                        underpowered=comparison["underpowered"], best_feature=chosen_feature)


BEST_FEATURE = "baseline_best_feature"


def _threshold_step(estimator):
    """The ``FeatureThreshold`` at the end of (nested) pipelines."""
    while hasattr(estimator, "steps"):
        estimator = estimator.steps[-1][1]
    return estimator


def best_feature(template, X, y, test_fold, feature_columns) -> dict:
    """Which feature the best-single-feature baseline chose: in each training part of the
    protocol (its ``test_fold`` (repeat, model): train on the models of the other two
    folds, exactly as ``run_protocol`` fit it; the rule is deterministic) and refit on
    every labelled model.

    Returns the attrs ``best_feature`` (the refit's feature), ``best_feature_rule`` (e.g.
    "invariant where conv3_max_sstv < 0.0123"), ``best_feature_folds`` (JSON {feature:
    number of training parts that chose it}, most often first) and ``best_feature_fits``.
    """
    from collections import Counter

    from sklearn.base import clone

    chosen = []
    for folds in np.asarray(test_fold):
        for fold in np.unique(folds[folds >= 0]):
            train = folds != fold
            fitted = _threshold_step(clone(template).fit(X[train], y[train]))
            chosen.append(feature_columns[fitted.feature_index_])
    refit = _threshold_step(clone(template).fit(X, y))
    name = feature_columns[refit.feature_index_]
    side = refit.direction_ if list(refit.classes_)[-1] == 1 else \
        {">=": "<", "<": ">="}[refit.direction_]
    return {"best_feature": name,
            "best_feature_rule": f"invariant where {name} {side} {refit.threshold_:.4g}",
            "best_feature_folds": json.dumps(dict(Counter(chosen).most_common())),
            "best_feature_fits": len(chosen)}


def _score_kind(estimator) -> str:
    """What the refit assessor's ``score`` is (``_judge``)."""
    if hasattr(estimator, "predict_proba"):
        return "predicted probability that the model is invariant"
    return "decision function (>= 0: invariant), the assessor having no probabilities"


def _seed_estimator(estimator, seed: int) -> None:
    keys = [k for k in estimator.get_params() if k.endswith("random_state")]
    if keys:
        estimator.set_params(**{k: seed for k in keys})


def _judge(estimator, X) -> tuple[np.ndarray, np.ndarray]:
    """(predicted label, score): P(invariant), or the decision function where the model has
    no probabilities (the linear assessor: regression output minus its 0.5 threshold)."""
    predicted = np.asarray(estimator.predict(X)).astype(np.int8)
    if hasattr(estimator, "predict_proba"):
        try:
            proba = estimator.predict_proba(X)
            classes = list(getattr(estimator, "classes_", [0, 1]))
            column = classes.index(1) if 1 in classes else 0
            return predicted, np.asarray(proba)[:, column].astype(np.float64)
        except AttributeError:
            pass
    return predicted, np.asarray(estimator.decision_function(X), dtype=np.float64)


def _assess_dataset(results, table, frame, comparison, top, chosen, predicted, score, blob,
                    feature_columns, source, repeats, seed, transform, suite) -> xr.Dataset:
    from ml4ml.assess.comparison import out_of_fold
    from ml4ml.assess.judgements import out_of_fold_probability

    mids = np.asarray(table[dims.MID].to_numpy(), dtype=object)
    ds = results.reindex({dims.MID: mids})
    for name, fill in (("label", -1), ("test_fold", -1), ("prediction", -1)):
        ds[name] = ds[name].fillna(fill).astype(np.int8)
    ds["label"] = xr.DataArray(table["label"].to_numpy(np.int8), dims=dims.MID)
    ds["holdout"] = xr.DataArray(table["holdout"].to_numpy(bool), dims=dims.MID)
    ds[ROBUST] = xr.DataArray(table[ROBUST].to_numpy(np.float64), dims=dims.MID,
                              attrs={"long_name": "robust accuracy", "description":
                                     "fraction of samples correct at every parameter "
                                     "(full interval): the formula score"})
    ds["score"] = xr.DataArray(score, dims=dims.MID, attrs={
        "long_name": "refit assessor's score", "description": f"the refit {chosen}'s "
        "probability of 'invariant' (or its decision function) for every measured model; "
        "in-sample for the labelled models (it was fit on their labels)"})
    ds["predicted"] = xr.DataArray(predicted, dims=dims.MID, attrs={
        "long_name": "refit assessor's label", "description": f"the refit {chosen}'s label; "
        "in-sample for the labelled models (see out_of_fold)"})
    ds["out_of_fold"] = out_of_fold(ds, chosen).astype(np.int8)
    ds["out_of_fold_probability"] = out_of_fold_probability(ds, chosen)
    for column in ("accuracy_mean", "accuracy_min", "accuracy_max", "accuracy_sem",
                   "f1_mean", "kappa_mean"):
        ds[f"summary_{column}"] = xr.DataArray(frame.loc[list(ds[dims.ESTIMATOR].values), column]
                                               .to_numpy(np.float64), dims=dims.ESTIMATOR, attrs={
            "long_name": column.replace("_", " "),
            "description": f"{column.replace('_', ' ')} over the {repeats * 3} evaluations"})
    for key in COMPARISON:
        ds[f"comparison_{key}"] = xr.DataArray(float(comparison[key]), attrs={
            "long_name": key.replace("_", " "),
            "description": f"the chosen assessor ({chosen}) against the best baseline "
                           f"({comparison['best_baseline']}) on the "
                           f"{comparison['n_models']} hold-out models: "
                           f"{comparison['method']}"})
    ds["assessor"] = xr.DataArray(np.frombuffer(blob, dtype=np.uint8), dims="byte", attrs={
        "long_name": "refit assessor", "description": f"the {chosen}, refit on every "
        "labelled model, as skops bytes (ml4ml.assess.stage.load_assessor)",
        "estimator": chosen, "features": json.dumps(feature_columns + [ROBUST])})
    ds["top_feature"] = xr.DataArray(np.asarray(top.index, dtype=object), dims="rank",
                                     attrs={"long_name": "top features",
                                            "description": f"features of highest "
                                            f"permutation importance for {chosen}"})
    ds.attrs.update({
        "transform": transform, "suite": suite or "", "label_source": source,
        "chosen_assessor": chosen, "best_baseline": comparison["best_baseline"],
        "verdict": comparison["verdict"], "comparison_test": comparison["method"],
        # a comparison on few labels: flagged, and why (counts and thresholds)
        "underpowered": int(bool(comparison.get("underpowered"))),
        "underpowered_reason": str(comparison.get("underpowered", "")),
        "comparison_models": int(comparison["n_models"]),
        "comparison_alpha": float(comparison["alpha"]),
        "comparison_draws": int(comparison["n_draws"]),
        "repeats": int(repeats), "seed": int(seed),
        "title": f"assessors against baselines for '{transform}' (paper's protocol)"})
    return ds.assign_coords({dims.MID: mids})


# ----------------------------------------------------------------------------- lineage
# in the inputs digest: assessments made before lineage (1) or before the out-of-fold
# probabilities (2) are redone
LINEAGE_VERSION = 2


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


def load_assessor(path, transform: str):
    """(estimator, feature names, method) of the stored assessor, loaded with skops.

    Only scikit-learn's types and ``SKOPS_TRUSTED`` are loaded; any other type in the bytes
    is refused (opening a store someone else wrote never runs their code).
    """
    import skops.io

    group = store.assess_group(transform)
    if not store.group_exists(path, group):
        raise StoreError(f"the store has no assessor for {transform!r} yet", file=path,
                         hint=f"run 'ml4ml assess {path} --transform {transform}' first")
    ds = store.open_group(path, group)
    blob = bytes(np.asarray(ds["assessor"].values, dtype=np.uint8))
    unknown = skops.io.get_untrusted_types(data=blob)
    refused = [t for t in unknown if t not in SKOPS_TRUSTED
               and t.split(".")[0] not in SKOPS_TRUSTED_MODULES]
    if refused:
        raise StoreError(f"the stored assessor holds types ml4ml does not trust: {refused}",
                         file=path, field=f"{group}/assessor",
                         hint="only scikit-learn, numpy and ml4ml types are loaded")
    estimator = skops.io.loads(blob, trusted=list(unknown))
    attrs = ds["assessor"].attrs
    chosen = attrs.get("estimator", attrs.get("method"))  # "method" in older stores
    return estimator, json.loads(attrs["features"]), str(chosen)


def predict(path, transform: str, mids, *, suite=None) -> pd.DataFrame:
    """The stored assessor's label and score for ``mids`` (labelled or not), from the
    feature set and split it was made on; StoreError while the assessment is stale
    (``check_assessment``)."""
    estimator, names, method = load_assessor(path, transform)
    table, _ = check_assessment(path, transform, suite=suite)
    known = [str(m) for m in table[dims.MID]]
    unknown = [m for m in mids if m not in known]
    if unknown:
        raise InputError(f"no measures for model(s) {unknown}; measured: "
                         f"{', '.join(known[:8])}{' ...' if len(known) > 8 else ''}",
                         file=path, field="--predict")
    rows = table.set_index(dims.MID).loc[list(mids), names].to_numpy(np.float64)
    predicted, score = _judge(estimator, rows)
    return pd.DataFrame({dims.MID: list(mids), "label": predicted, "score": score,
                         "assessor": method})


def _first_difference(a, b) -> str:
    for x, y in zip(a, b):
        if x != y:
            return f"{x!r} stored, {y!r} now"
    return f"{len(a)} against {len(b)} columns"
