"""Honest comparison of assessors with baselines from ``run_protocol`` results.

- ``summary``: accuracy, F1 and kappa per method.
- ``compare``: the best assessor against the best baseline, with the Nadeau-Bengio
  corrected resampled t-test (Nadeau & Bengio 2003, "Inference for the generalization
  error"), which accounts for the overlap of training sets across resampled evaluations.
- ``top_features``: the most important features of one method.

Kappa is NaN where undefined (``ml4ml.assess.protocol``); means of kappa skip NaN, and the
kappa test uses only the evaluations where both methods' kappa is defined.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from ml4ml import dims
from ml4ml.assess.estimators import method_kind
from ml4ml.errors import InputError

__all__ = ["summary", "compare", "top_features", "nadeau_bengio_ttest"]

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


def _best(frame, kind):
    candidates = frame[frame["kind"] == kind]
    if candidates.empty:
        raise InputError(f"the results have no {kind}; compare needs at least one assessor and "
                         f"one baseline", field="method",
                         hint="run the protocol with both kinds of methods")
    return candidates["accuracy_mean"].idxmax()  # first of equals, in the results' order


def compare(results: xr.Dataset, alpha: float = 0.05) -> dict:
    """The best assessor against the best baseline (highest mean accuracy of each kind).

    Differences are paired over the (repeat, fold) evaluations, assessor minus baseline,
    and tested with ``nadeau_bengio_ttest`` at ``test_train_ratio`` = the mean of
    n_test / n_train over the evaluations. Kappa uses the evaluations where both kappas
    are defined.

    Returns
    -------
    dict with ``best_assessor``, ``best_baseline``, ``accuracy_assessor`` and
    ``accuracy_baseline`` (mean accuracies), ``accuracy_difference``, ``accuracy_t``,
    ``accuracy_p``, ``kappa_difference``, ``kappa_t``, ``kappa_p``, ``n_evaluations``,
    ``n_kappa_evaluations``, ``test_train_ratio``, ``alpha`` and ``verdict``: one sentence
    saying which side wins, the accuracy difference and the p-value; an assessor "beats"
    the baseline only if its mean accuracy is higher and p < alpha.
    """
    _require(results, ["accuracy", "kappa", "n_train", "n_test"])
    frame = summary(results)
    assessor, baseline = _best(frame, "assessor"), _best(frame, "baseline")
    pair = results.sel({dims.ESTIMATOR: [assessor, baseline]})
    accuracy = _evaluations(pair["accuracy"])
    kappa = _evaluations(pair["kappa"])
    ratio = float((results["n_test"] / results["n_train"]).mean())
    d_accuracy = accuracy[:, 0] - accuracy[:, 1]
    defined = np.isfinite(kappa).all(axis=1)
    d_kappa = kappa[defined, 0] - kappa[defined, 1]
    t_accuracy, p_accuracy = nadeau_bengio_ttest(d_accuracy, ratio)
    t_kappa, p_kappa = nadeau_bengio_ttest(d_kappa, ratio)
    result = {
        "best_assessor": assessor,
        "best_baseline": baseline,
        "accuracy_assessor": float(accuracy[:, 0].mean()),
        "accuracy_baseline": float(accuracy[:, 1].mean()),
        "accuracy_difference": float(d_accuracy.mean()),
        "accuracy_t": t_accuracy,
        "accuracy_p": p_accuracy,
        "kappa_difference": float(d_kappa.mean()) if d_kappa.size else float("nan"),
        "kappa_t": t_kappa,
        "kappa_p": p_kappa,
        "n_evaluations": int(d_accuracy.size),
        "n_kappa_evaluations": int(d_kappa.size),
        "test_train_ratio": ratio,
        "alpha": float(alpha),
    }
    result["verdict"] = _verdict(result)
    return result


def _verdict(r) -> str:
    a, b, diff, p = r["best_assessor"], r["best_baseline"], r["accuracy_difference"], \
        r["accuracy_p"]
    levels = f"{a} {r['accuracy_assessor']:.3f} vs {b} {r['accuracy_baseline']:.3f} accuracy"
    significant = np.isfinite(p) and p < r["alpha"]
    if diff > 0 and significant:
        return f"{a} beats {b} by {diff:.3f} accuracy (p = {p:.3g})"
    if diff < 0 and significant:
        return (f"no assessor beats the best baseline: {b} beats {a} by {-diff:.3f} accuracy "
                f"(p = {p:.3g})")
    if diff > 0:
        return (f"no assessor beats the best baseline significantly: {levels}, difference "
                f"{diff:.3f} (p = {p:.3g}, not below {r['alpha']:g})")
    return (f"no assessor beats the best baseline: {levels}, difference {diff:.3f} "
            f"(p = {p:.3g})")


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
