"""Many simulated model databases through the protocol's real folds, vectorised in numpy.

Used by tests/test_significance.py and benchmarks/significance.py. Every database has
``n_regular + n_holdout`` models with a 0/1 label and one feature per method; method k is
a one-feature threshold rule (a stump: "invariant if feature k > t", t chosen to maximise
the training accuracy), fitted on the two training folds of every (repeat, fold) of
``ProtocolSplit`` and asked to predict the test fold, for all databases at once. Feature k
is ``separation[k] * label + N(0, 1)``, independent across methods given the label, so
methods with equal separation have equal expected accuracy (``Phi(separation / 2)`` for
the best threshold with balanced labels): their errors are independent.

``shared=True`` instead gives every model a latent score s ~ N(0, 1), the label
``s > 0`` and feature k ``s + noise[k] * N(0, 1)``: the methods read the same signal with
different noise, so they err on the same (borderline) models, as measures of one
invariance do; the best threshold's accuracy is ``1/2 + arctan(1 / noise) / pi``.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ml4ml.assess.splitter import FOLD_NAMES, ProtocolSplit


def separation_for(accuracy: float) -> float:
    """The separation whose best stump has ``accuracy`` on balanced labels."""
    return float(2 * stats.norm.ppf(accuracy))


def noise_for(accuracy: float) -> float:
    """The noise (``shared=True``) whose best threshold has ``accuracy``."""
    return float(1 / np.tan(np.pi * (accuracy - 0.5)))


def simulate(n_databases, separation, *, n_assessors, n_regular=100, n_holdout=50,
             repeats=10, prevalence=0.5, seed=0, fold_seed=0, shared=False):
    """Out-of-fold predictions of stumps over ``n_databases`` databases.

    Parameters
    ----------
    separation : float array (n_methods,), the first ``n_assessors`` are the assessors
        (with ``shared=True``: the noise of each method's feature).

    Returns
    -------
    prediction : int8 array (n_databases, repeats, n_models, n_methods), as run_protocol's
        ``prediction (repeat, mid, method)`` per database.
    label : int8 array (n_databases, n_models). holdout : bool (n_models,).
    test_fold : int8 (repeats, n_models), the same splits for every database.
    is_assessor : bool (n_methods,).
    """
    separation = np.asarray(separation, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n_models = n_regular + n_holdout
    holdout = np.arange(n_models) >= n_regular
    if shared:
        score = rng.standard_normal((n_databases, n_models))
        label = (score > stats.norm.ppf(1 - prevalence)).astype(np.int8)
        features = score[..., None] + separation * rng.standard_normal(
            (n_databases, n_models, separation.size))
    else:
        label = (rng.random((n_databases, n_models)) < prevalence).astype(np.int8)
        features = rng.standard_normal((n_databases, n_models, separation.size))
        features += separation * label[..., None]
    test_fold = ProtocolSplit(repeats, random_state=fold_seed).test_folds(holdout)
    prediction = np.zeros((n_databases, repeats, n_models, separation.size), dtype=np.int8)
    for repeat in range(repeats):
        for fold in range(len(FOLD_NAMES)):
            test = test_fold[repeat] == fold
            threshold = _fit_stumps(features[:, ~test], label[:, ~test])
            prediction[:, repeat, test] = features[:, test] > threshold[:, None, :]
    return prediction, label, holdout, test_fold, np.arange(separation.size) < n_assessors


def _fit_stumps(x, y):
    """Thresholds (n_databases, n_methods) maximising training accuracy of "x > t -> 1"."""
    order = np.argsort(x, axis=1)
    xs = np.take_along_axis(x, order, axis=1)
    ys = np.take_along_axis(np.broadcast_to(y[..., None], x.shape), order, axis=1)
    # cut i (0..n): the i lowest predicted 0, the rest 1
    zeros_below = np.concatenate([np.zeros_like(ys[:, :1]), np.cumsum(1 - ys, axis=1)], 1)
    ones_above = ys.sum(axis=1, keepdims=True) - np.concatenate(
        [np.zeros_like(ys[:, :1]), np.cumsum(ys, axis=1)], 1)
    cut = np.argmax(zeros_below + ones_above, axis=1)  # (n_databases, n_methods)
    padded = np.concatenate([np.full_like(xs[:, :1], -np.inf), xs,
                             np.full_like(xs[:, :1], np.inf)], axis=1)
    low = np.take_along_axis(padded, cut[:, None], axis=1)[:, 0]
    high = np.take_along_axis(padded, cut[:, None] + 1, axis=1)[:, 0]
    # between the two values at the cut; all 1 below the lowest, all 0 above the highest
    return np.where(np.isfinite(low) & np.isfinite(high), (low + high) / 2, low)


def nadeau_bengio_p(prediction, label, test_fold, is_assessor):
    """The old test (comparison.compare) for every database: two-sided p (n_databases,).

    Best assessor and best baseline by mean fold accuracy over the (repeat, fold)
    evaluations, Nadeau-Bengio corrected resampled t-test of their paired differences.
    """
    correct = prediction == label[:, None, :, None]  # (D, R, M, K)
    folds = np.stack([test_fold == f for f in range(len(FOLD_NAMES))], axis=1)  # (R, F, M)
    n_test = folds.sum(axis=2)  # (R, F)
    accuracy = np.einsum("drmk,rfm->drfk", correct.astype(np.float64), folds) \
        / n_test[None, :, :, None]
    evaluations = accuracy.reshape(accuracy.shape[0], -1, accuracy.shape[-1])  # (D, J, K)
    mean = evaluations.mean(axis=1)
    best_a = np.argmax(np.where(is_assessor, mean, -np.inf), axis=1)
    best_b = np.argmax(np.where(~is_assessor, mean, -np.inf), axis=1)
    rows = np.arange(evaluations.shape[0])
    d = evaluations[rows, :, best_a] - evaluations[rows, :, best_b]  # (D, J)
    ratio = float((n_test / (label.shape[1] - n_test)).mean())
    j = d.shape[1]
    variance = d.var(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = d.mean(axis=1) / np.sqrt((1 / j + ratio) * variance)
    p = 2 * stats.t.sf(np.abs(t), df=j - 1)
    return np.where(variance == 0, np.where(d.mean(axis=1) == 0, 1.0, 0.0), p)
