"""Many simulated model databases through select-then-test, vectorised in numpy.

Used by tests/test_significance.py and benchmarks/significance.py. Every database has
``n_regular + n_holdout`` models; model m has a latent score ``s ~ N(0, 1)`` and the label
``s > Phi^-1(1 - prevalence)``. Method k reads one feature, ``s + noise @ mixing[k]``
(``noise`` i.i.d. standard normal, one column per source of noise), and is a threshold
rule, "invariant where the feature > t", with t maximising the training accuracy (fitted
in numpy for every database at once). Methods that share a column of ``mixing`` err on the
same models (copies of one feature, duplicated baselines); the rule's accuracy depends
only on the row's norm (the feature's noise), so rows of equal norm are equally accurate.
A method with ``jitter[k] > 0`` reads fresh noise of that standard deviation in every fit
(every repeat and every selection fold), as a random forest's randomness: its correctness
on a hold-out model is a fraction of the repeats; the others are deterministic.

As ``run_protocol`` and ``significance_test`` do, per database:

1. selection: every method cross-validated on the regular models alone (``folds`` random
   folds, the same for every database); the assessor and the baseline of highest CV
   accuracy, the first of equals;
2. the hold-out models: every method fitted on all regular models (in each of
   ``repeats`` repeats) predicts them; ``correct`` is the fraction of repeats correct;
3. the differences ``d = correct[:, assessor] - correct[:, baseline]``, for the test.

``true_accuracy`` gives each fitted rule's accuracy on new models exactly (the estimand
the interval should cover), by quadrature over s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Design:
    """The methods of a simulated database: ``mixing`` (n_methods, n_sources), ``jitter``
    (n_methods,), the first ``n_assessors`` are assessors, labels ``prevalence`` positive."""
    mixing: np.ndarray
    jitter: np.ndarray
    n_assessors: int
    prevalence: float = 0.3

    @property
    def is_assessor(self):
        return np.arange(len(self.jitter)) < self.n_assessors


NOISE = 0.6  # every method's noise in the nulls: the best threshold's accuracy 0.83 (balanced)


def noise_for(accuracy: float) -> float:
    """The noise whose best threshold has ``accuracy`` on balanced labels."""
    return float(1 / np.tan(np.pi * (accuracy - 0.5)))


def nulls() -> dict:
    """The realistic nulls of issue 25 (every method equally accurate), by name."""
    sigma = NOISE
    eye = np.eye(5) * sigma
    duplicated = np.eye(5) * sigma
    duplicated[4] = duplicated[3]  # the two baselines read the same feature
    copy = 0.15 * sigma  # three assessors: one feature, each with a little noise of its own
    shared = np.sqrt(sigma ** 2 - copy ** 2)
    correlated = np.zeros((4, 5))
    correlated[:3, 0] = shared
    correlated[[0, 1, 2], [1, 2, 3]] = copy
    correlated[3, 4] = sigma  # the baseline: an independent feature, as accurate
    jitter = 0.6 * sigma  # the noisy assessor: less noise in its feature, more in its fits
    noisy = np.diag([np.sqrt(sigma ** 2 - jitter ** 2), sigma])
    return {
        "exchangeable (3 assessors, 2 baselines)": Design(eye, np.zeros(5), 3),
        "duplicated baselines": Design(duplicated, np.zeros(5), 3),
        "3 correlated assessors vs 1 baseline": Design(correlated, np.zeros(4), 3),
        "noisy assessor vs deterministic baseline": Design(noisy, np.array([jitter, 0.0]), 1),
        "unbalanced labels (20% positive)": Design(eye, np.zeros(5), 3, prevalence=0.2),
    }


def alternative(delta: float, accuracy: float = 0.75) -> Design:
    """Three assessors ``delta`` more accurate than two baselines (balanced labels)."""
    noise = np.r_[np.full(3, noise_for(accuracy + delta)), np.full(2, noise_for(accuracy))]
    return Design(np.diag(noise), np.zeros(5), 3, prevalence=0.5)


def simulate(n_databases, design: Design, *, n_regular=100, n_holdout=50, repeats=10,
             folds=5, seed=0, fitted=False) -> dict:
    """Select, then predict the hold-out models, for ``n_databases`` databases.

    fitted : False: every rule's threshold is the label's cut (the same for all methods,
        so methods of equal noise are exactly equally accurate, fit by fit): the per-model
        correctness is simulated directly. True: thresholds fitted on the training models
        (each selection fold's, and all regular models for the hold-out models), so the
        fitted rules' accuracies differ a little from database to database.

    Returns
    -------
    dict: ``cv_accuracy`` (D, K), ``correct`` (D, n_holdout, K) fractions of repeats,
    ``chosen`` (D, 2) the assessor's and the baseline's index, ``differences``
    (D, n_holdout), ``thresholds`` (D, repeats, K) of the hold-out fits, ``holdout``.
    """
    mixing = np.asarray(design.mixing, dtype=np.float64)
    jitter = np.asarray(design.jitter, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n_models, n_methods = n_regular + n_holdout, mixing.shape[0]
    holdout = np.arange(n_models) >= n_regular
    cut = stats.norm.ppf(1 - design.prevalence)
    score = rng.standard_normal((n_databases, n_models))
    label = (score > cut).astype(np.int8)
    features = score[..., None] + rng.standard_normal(
        (n_databases, n_models, mixing.shape[1])) @ mixing.T

    def fit(train):
        """(features of this fit, thresholds (D, K)): fresh noise for the jittered methods."""
        x = features + jitter * rng.standard_normal(features.shape) if jitter.any() \
            else features
        if not fitted:
            return x, np.full((n_databases, n_methods), cut)
        return x, _fit_stumps(x[:, train], label[:, train])

    regular = np.flatnonzero(~holdout)
    fold = np.empty(n_regular, dtype=np.int64)
    fold[rng.permutation(n_regular)] = np.arange(n_regular) % folds
    hits = np.zeros((n_databases, n_methods))
    for f in range(folds):
        train, test = regular[fold != f], regular[fold == f]
        x, threshold = fit(train)
        hits += ((x[:, test] > threshold[:, None, :]) == label[:, test, None]).sum(axis=1)
    cv_accuracy = hits / n_regular
    correct = np.zeros((n_databases, n_holdout, n_methods))
    thresholds = np.empty((n_databases, repeats, n_methods))
    for r in range(repeats if jitter.any() else 1):  # deterministic: every repeat alike
        x, thresholds[:, r] = fit(regular)
        correct += (x[:, holdout] > thresholds[:, r, None, :]) == label[:, holdout, None]
    if not jitter.any():
        thresholds[:, 1:] = thresholds[:, :1]
        correct *= repeats
    correct /= repeats
    is_assessor = design.is_assessor
    chosen = np.stack([np.argmax(np.where(is_assessor, cv_accuracy, -np.inf), axis=1),
                       np.argmax(np.where(~is_assessor, cv_accuracy, -np.inf), axis=1)], 1)
    rows = np.arange(n_databases)
    differences = correct[rows, :, chosen[:, 0]] - correct[rows, :, chosen[:, 1]]
    return {"cv_accuracy": cv_accuracy, "correct": correct, "chosen": chosen,
            "differences": differences, "thresholds": thresholds, "holdout": holdout}


def true_accuracy(design: Design, thresholds) -> np.ndarray:
    """(D, K): each method's accuracy on new models, averaged over its repeats' fits
    (thresholds (D, repeats, K)), by quadrature over the latent score."""
    noise = np.sqrt((np.asarray(design.mixing) ** 2).sum(axis=1) + np.asarray(design.jitter) ** 2)
    cut = stats.norm.ppf(1 - design.prevalence)
    s = np.linspace(-7, 7, 1401)
    weight = stats.norm.pdf(s) * (s[1] - s[0])
    thresholds = np.asarray(thresholds, dtype=np.float64)
    accuracy = np.empty((thresholds.shape[0], thresholds.shape[2]))
    for start in range(0, thresholds.shape[0], 50):  # bounds memory
        t = thresholds[start:start + 50, ..., None]  # (d, R, K, 1)
        # P(feature > t | s) = Phi((s - t) / noise); correct: above where s > cut
        above = stats.norm.cdf((s - t) / noise[:, None])
        correct = np.where(s > cut, above, 1 - above)
        accuracy[start:start + 50] = (correct * weight).sum(axis=-1).mean(axis=1)
    return accuracy


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


def previous_test_p(correct, is_assessor, n_draws=1000, seed=0):
    """The verdict's earlier test, for contrast (benchmark): best assessor minus best
    baseline, both chosen on the hold-out models, the methods' columns permuted within
    each model; two-sided p (D,)."""
    correct = np.asarray(correct, dtype=np.float64)
    n_databases, n_models, n_methods = correct.shape

    def statistic(means):
        return (np.where(is_assessor, means, -np.inf).max(axis=-1)
                - np.where(~is_assessor, means, -np.inf).max(axis=-1))

    observed = statistic(correct.mean(axis=1))
    rng = np.random.default_rng(seed)
    greater, less = np.zeros(n_databases), np.zeros(n_databases)
    flat = correct.reshape(n_databases, -1)
    for start in range(0, n_draws, 100):
        block = np.argsort(rng.random((min(100, n_draws - start), n_models, n_methods)), -1)
        weights = np.zeros((n_models, n_methods, block.shape[0], n_methods))
        weights[np.arange(n_models)[None, :, None], block,
                np.arange(block.shape[0])[:, None, None], np.arange(n_methods)] = 1 / n_models
        means = (flat @ weights.reshape(n_models * n_methods, -1)).reshape(
            n_databases, block.shape[0], n_methods)
        permuted = statistic(means)
        greater += (permuted >= observed[:, None] - 1e-12).sum(axis=1)
        less += (permuted <= observed[:, None] + 1e-12).sum(axis=1)
    return np.minimum(1, 2 * np.minimum(1 + greater, 1 + less) / (1 + n_draws))
