"""Honest comparison of assessors with baselines from ``run_protocol`` results.

- ``summary``: accuracy, F1 and kappa per method.
- ``compare``: the verdict, select then test (``ml4ml.assess.significance``): the
  assessor and the baseline chosen by cross-validation on the regular models alone,
  compared on the hold-out models by an exact paired sign-flip test with the interval
  that inverts it; and its sentence (``verdict``).
- ``nadeau_bengio_ttest``: the Nadeau-Bengio corrected resampled t-test (Nadeau & Bengio
  2003), kept as a function; it is not the verdict's test (it rejects a true null too
  often under this protocol, whose repeats share their training models).
- ``top_features``: the most important features of one method.
- ``power_note``: why a comparison on so few labels is underpowered ("" when it is not),
  against ``MIN_LABELLED`` and ``MIN_PER_CLASS``.

Kappa is NaN where undefined (``ml4ml.assess.protocol``); means of kappa skip NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from ml4ml import dims
from ml4ml.assess.estimators import method_kind
from ml4ml.errors import InputError

__all__ = ["summary", "compare", "verdict", "out_of_fold", "top_features", "nadeau_bengio_ttest",
           "TEST_NAME", "power_note", "underpowered_verdict", "best_feature_text",
           "MIN_LABELLED", "MIN_PER_CLASS"]

# below these, a comparison is flagged underpowered (CLI warning, store attrs, report)
MIN_LABELLED = 30  # labelled models in the protocol
MIN_PER_CLASS = 5  # labelled models of each class (invariant, variant)

_EVALUATION = ("repeat", "fold")


def _require(results, names):
    missing = [name for name in names if name not in results.variables]
    if missing:
        raise InputError(f"the results lack {missing}", field=missing[0],
                         hint="pass the dataset run_protocol returns")


def _kinds(results) -> np.ndarray:
    if dims.ESTIMATOR_KIND in results.coords:
        return np.asarray(results[dims.ESTIMATOR_KIND].values, dtype=object)
    return np.asarray([method_kind(name) for name in results[dims.ESTIMATOR].values], dtype=object)


def _evaluations(variable: xr.DataArray) -> np.ndarray:
    """(n_evaluations, n_methods): one row per (repeat, fold)."""
    return variable.transpose(*_EVALUATION, dims.ESTIMATOR).values.reshape(
        -1, variable.sizes[dims.ESTIMATOR])


def summary(results: xr.Dataset) -> pd.DataFrame:
    """One row per method (in the results' order), over its R x 3 evaluations.

    Columns: ``kind`` (assessor or baseline), ``accuracy_mean``, ``accuracy_min``,
    ``accuracy_max``, ``accuracy_sem`` (standard error of the mean: sample standard
    deviation, ddof=1, over the R x 3 evaluations divided by sqrt(R x 3); note that the
    evaluations share training models, so it understates the uncertainty), ``f1_mean``,
    ``kappa_mean`` (over the evaluations where kappa is defined), ``n_evaluations``.
    """
    _require(results, ["accuracy", "f1", "kappa"])
    accuracy = _evaluations(results["accuracy"])
    n = accuracy.shape[0]
    kappa = _evaluations(results["kappa"])
    with np.errstate(invalid="ignore"):
        kappa_mean = np.array([np.mean(col[np.isfinite(col)]) if np.isfinite(col).any()
                               else np.nan for col in kappa.T])
    frame = pd.DataFrame({
        "kind": _kinds(results),
        "accuracy_mean": accuracy.mean(axis=0),
        "accuracy_min": accuracy.min(axis=0),
        "accuracy_max": accuracy.max(axis=0),
        "accuracy_sem": (accuracy.std(axis=0, ddof=1) / np.sqrt(n) if n > 1
                         else np.full(accuracy.shape[1], np.nan)),
        "f1_mean": _evaluations(results["f1"]).mean(axis=0),
        "kappa_mean": kappa_mean,
        "n_evaluations": n,
    }, index=pd.Index(np.asarray(results[dims.ESTIMATOR].values, dtype=object), name=dims.ESTIMATOR))
    return frame


def nadeau_bengio_ttest(differences, test_train_ratio: float) -> tuple[float, float]:
    """Nadeau-Bengio corrected resampled t-test of paired differences (two-sided).

    Parameters
    ----------
    differences : 1-d array of the J paired differences (method A minus method B).
    test_train_ratio : n_test / n_train of the evaluations (the mean over them).

    Returns
    -------
    (t, p): ``t = mean / sqrt((1/J + test_train_ratio) * var)``, with ``var`` the sample
    variance (ddof=1) of the differences, and ``p = 2 * P(T > |t|)`` for T Student's t with
    J - 1 degrees of freedom. With zero variance: t = 0 and p = 1 if the mean difference is
    0, else t = +-inf and p = 0. Fewer than two differences: (nan, nan).
    """
    d = np.asarray(differences, dtype=np.float64).ravel()
    if d.size < 2:
        return float("nan"), float("nan")
    mean = d.mean()
    variance = d.var(ddof=1)
    if variance == 0:
        if mean == 0:
            return 0.0, 1.0
        return float(np.copysign(np.inf, mean)), 0.0
    t = mean / np.sqrt((1.0 / d.size + test_train_ratio) * variance)
    return float(t), float(2 * stats.t.sf(abs(t), df=d.size - 1))


def out_of_fold(results: xr.Dataset, estimator: str) -> xr.DataArray:
    """Each model's out-of-fold label from ``estimator``: the majority, over the repeats,
    of its predictions as a test-fold model (fits that never saw that model's label).

    Returns DataArray (mid,) int8: 1 invariant, 0 variant (a tie counts as invariant), -1
    for a model never tested (``prediction`` -1: not labelled, not in the protocol).
    """
    _require(results, ["prediction"])
    votes = results["prediction"].sel({dims.ESTIMATOR: estimator}).transpose(
        "repeat", dims.MID).values
    tested = (votes >= 0).sum(axis=0)
    ones = (votes == 1).sum(axis=0)
    label = np.where(tested == 0, -1, (2 * ones >= tested).astype(np.int8)).astype(np.int8)
    return xr.DataArray(label, dims=dims.MID, coords={dims.MID: results[dims.MID].values},
                        attrs={"long_name": "out-of-fold label", "description": (
                            f"the majority of {estimator}'s test-fold predictions over the "
                            "repeats (1 invariant, 0 variant, ties invariant; -1 never "
                            "tested): fits that never saw the model's label")})


def compare(results: xr.Dataset, alpha: float = 0.05, *, n_draws: int = 10_000,
            seed: int = 0) -> dict:
    """The verdict: select, then test (``ml4ml.assess.significance``).

    The assessor and the baseline of highest accuracy in a cross-validation on the regular
    models alone (fits that never see a hold-out model) are compared on the hold-out
    models by a paired sign-flip test, with the interval that inverts it at ``1 - alpha``.
    The Nadeau-Bengio test (``nadeau_bengio_ttest``) rejected a true null in up to 13% of
    simulated databases at alpha = 0.05 and is not used here.

    Works alike on ``run_protocol``'s dataset and on the stored assess group (unlabelled
    models, label -1, left out).

    Returns
    -------
    dict: ``significance_test``'s keys (``chosen_assessor``, ``best_baseline``,
    ``selection``, ``selection_accuracy_assessor`` / ``_baseline``, ``accuracy_assessor``
    and ``accuracy_baseline`` on the hold-out models, ``difference``, ``ci_low``,
    ``ci_high``, ``confidence`` (``1 - alpha``), ``p_value`` (two-sided), ``p_greater``,
    ``p_less``, ``significant`` (``p_value < alpha``), ``n_models``, ``n_draws``,
    ``exact``, ``test``, ``method``), ``alpha`` and ``verdict``: one sentence that says
    which side wins (or that neither does significantly), how the pair was chosen, the
    hold-out figures with the interval, p and the test (``verdict``). The interval excludes
    0 exactly when the test rejects, so the two never disagree.
    """
    from ml4ml.assess.significance import significance_test

    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1); got {alpha!r}", field="alpha")
    result = significance_test(results, alpha=alpha, n_draws=n_draws, seed=seed)
    result["verdict"] = verdict(result)
    return result


def power_note(labels) -> str:
    """Why a comparison on ``labels`` (the protocol's 0/1 labels) is underpowered, or "".

    Underpowered: fewer than ``MIN_LABELLED`` labelled models, or fewer than
    ``MIN_PER_CLASS`` of either class. The note names the counts and the thresholds, e.g.
    "7 labelled models (3 invariant, 4 variant): fewer than 30 labelled, fewer than 5
    invariant, fewer than 5 variant".
    """
    labels = np.asarray(labels)
    labels = labels[labels >= 0]
    n, invariant = int(labels.size), int((labels == 1).sum())
    variant = n - invariant
    short = [f"fewer than {MIN_LABELLED} labelled"] if n < MIN_LABELLED else []
    short += [f"fewer than {MIN_PER_CLASS} {name}" for name, count in
              (("invariant", invariant), ("variant", variant)) if count < MIN_PER_CLASS]
    if not short:
        return ""
    return (f"{n} labelled models ({invariant} invariant, {variant} variant): "
            + ", ".join(short))


def underpowered_verdict(text: str, note: str) -> str:
    """The verdict sentence ``text`` led by the underpowered ``note`` (unchanged if none)."""
    if not note:
        return text
    return f"underpowered comparison, {note}; read it as a hint, not a result: {text}"


def best_feature_text(attrs, modules=None) -> str:
    """Which feature ``baseline_best_feature`` chose, from the assess group's attrs
    (``ml4ml.assess.stage.best_feature``): the refit's rule and how often each feature was
    chosen over the protocol's training parts; modules : {layer label: module} to name
    beside each feature ("layer-1_max_sstv (conv3)", ``dims.module_note``)."""
    import json

    from ml4ml.dims import module_note

    folds = json.loads(attrs["best_feature_folds"])
    often = ", ".join(f"{module_note(name, modules)} in {count}"
                      for name, count in folds.items())
    return (f"baseline_best_feature uses {module_note(attrs['best_feature'], modules)} "
            f"(refit on every label: "
            f"{attrs['best_feature_rule']}); chosen in the protocol's "
            f"{attrs['best_feature_fits']} training parts: {often}")


TEST_NAME = "exact sign-flip test over the hold-out models"


def verdict(r: dict) -> str:
    """One sentence from ``compare``'s figures: who wins (or that neither does
    significantly), how the pair was chosen, the hold-out difference with its interval,
    p, the test. The decision is ``significance.rejects(p_value, alpha)``."""
    from ml4ml.assess.significance import rejects

    a, b, d = r["chosen_assessor"], r["best_baseline"], r["difference"]
    significant = rejects(r["p_value"], r["alpha"])
    if significant:
        lead = f"{a} beats {b}" if d > 0 else f"{b} beats {a}"
    elif d > 0:
        lead = f"{a} is ahead of {b}, not significantly"
    elif d < 0:
        lead = f"{b} is ahead of {a}, not significantly"
    else:
        lead = f"{a} and {b} tie"
    chosen = (f"{a} vs {b}, chosen by {r['selection']} (CV accuracy "
              f"{r['selection_accuracy_assessor']:.3f} vs "
              f"{r['selection_accuracy_baseline']:.3f})")
    figures = (f"on the {r['n_models']} hold-out models {a} {r['accuracy_assessor']:.3f} vs "
               f"{b} {r['accuracy_baseline']:.3f} accuracy, difference {d:+.3f} "
               f"({r['confidence']:.0%} CI {r['ci_low']:+.3f} to {r['ci_high']:+.3f}), "
               f"p = {r['p_value']:.3g}")
    if not significant:
        figures += f", not below {r['alpha']:g}"
    return f"{lead}: {chosen}; {figures} ({r.get('test', TEST_NAME)})"


def top_features(results: xr.Dataset, method: str, n: int = 10) -> pd.DataFrame:
    """The ``n`` features of highest permutation importance for ``method``.

    Returns a DataFrame indexed by feature, columns ``importance`` and ``importance_std``,
    sorted by importance (descending; equal importances keep the feature order).
    """
    _require(results, ["importance", "importance_std"])
    methods = [str(m) for m in results[dims.ESTIMATOR].values]
    if method not in methods:
        raise InputError(f"unknown method {method!r}; the results hold {', '.join(methods)}",
                         field="method")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise InputError(f"n must be an int >= 1; got {n!r}", field="n")
    chosen = results[["importance", "importance_std"]].sel({dims.ESTIMATOR: method})
    frame = pd.DataFrame({
        "importance": chosen["importance"].values,
        "importance_std": chosen["importance_std"].values,
    }, index=pd.Index(np.asarray(results["feature"].values, dtype=object), name="feature"))
    return frame.sort_values("importance", ascending=False, kind="stable").head(n)
