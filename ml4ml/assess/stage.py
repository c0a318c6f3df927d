"""Assess stage: labels and measures of a store -> the paper's protocol -> ``assess/<transform>``.

``label_store`` writes labels (from a file, or the recipe proxy) into ``labels/<transform>``;
``feature_table`` (``inputs``) joins a store's features with hold-out flags, partitions and
labels;
``assess_store`` runs the protocol (``run_protocol``) for the assessors and the baselines,
chooses an assessor and a baseline by cross-validation on the regular models alone and
compares them on the hold-out models (``compare``: an exact sign-flip test), refits the
chosen assessor on every labelled model and writes everything, the refit assessor as skops bytes included, to ``assess/<transform>``
(one committed change; the old results are replaced). ``predict`` judges models with the
stored assessor.

Lineage: the assessment records its feature set, split and label source, each model's
label and a hash of its features (``feature_hash``), and digests of both.
``check_assessment`` (``lineage``) compares them with the store's current labels and
features; ``predict`` and the report use an assessment only while they agree, on exactly
its features. ``stored_labels``, ``feature_table``, ``ROBUST`` and ``check_assessment`` are
re-exported here under their old names.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from ml4ml import dims, store
from ml4ml.assess.inputs import ROBUST, feature_table, stored_labels
from ml4ml.assess.lineage import (  # noqa: F401 (check_assessment: re-exported)
    _current_digest,
    _lineage,
    check_assessment,
    inputs_digest,
)
from ml4ml.errors import InputError, StoreError

__all__ = ["label_store", "feature_table", "assess_store", "predict", "AssessReport",
           "load_assessor", "check_assessment", "ProtocolNotPossible", "ROBUST",
           "SKOPS_TRUSTED", "COMPARISON"]

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
    # {layer label: module} where every measured model recorded the same module there
    layer_modules: dict = field(default_factory=dict)
    feature_set: str = "paper80"  # the features the assessors learned from
    n_features: int = 0  # their number of columns


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
    from ml4ml.measure.stage import layer_modules as stored_layer_modules
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
    modules = stored_layer_modules(path, transform, suite)
    ds.attrs["layer_modules"] = json.dumps(modules)
    with store.writing(path, f"ml4ml assess {transform}") as notes:
        _replace_keeping_rank(path, transform, ds)
    return AssessReport(transform=transform, label_source=source, n_models=len(labelled),
                        unlabelled=unlabelled, unmeasured=unmeasured, summary=frame,
                        comparison=comparison, top=top, chosen=chosen,
                        seconds=time.perf_counter() - started, notes=list(notes),
                        underpowered=comparison["underpowered"], best_feature=chosen_feature,
                        layer_modules=modules, feature_set=set,
                        n_features=len(feature_columns))


BEST_FEATURE = "baseline_best_feature"


def _replace_keeping_rank(path, transform: str, ds: xr.Dataset) -> None:
    """Replace the assess group by ``ds``, writing the rank of ``ml4ml measures rank`` (its
    child group) back as it was; the caller holds the lock. A crash in between leaves the
    rank absent (rerun the rank), never half written."""
    rank_group = store.rank_group(transform)
    rank = store.read_group(path, rank_group) if store.group_exists(path, rank_group) \
        else None
    store.replace_group(path, store.assess_group(transform), ds)
    if rank is not None:
        store.replace_group(path, rank_group, rank)


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
    "invariant where layer-1_max_sstv < 0.0123"), ``best_feature_folds`` (JSON {feature:
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
    for name, fill in (("label", -1), ("test_fold", -1), ("prediction", -1),
                       ("selection_fold", -1), ("selection_prediction", -1)):
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
        "comparison_selection": str(comparison["selection"]),
        "comparison_selection_accuracy": json.dumps({
            comparison["chosen_assessor"]: comparison["selection_accuracy_assessor"],
            comparison["best_baseline"]: comparison["selection_accuracy_baseline"]}),
        "repeats": int(repeats), "seed": int(seed),
        "title": f"assessors against baselines for '{transform}' (paper's protocol)"})
    return ds.assign_coords({dims.MID: mids})


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
