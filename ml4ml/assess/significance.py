"""Select, then test: is the chosen assessor more accurate than the chosen baseline?

``significance_test(results)`` answers it on ``run_protocol``'s dataset, or on the stored
``assess/<transform>`` group (the same variables, with unlabelled models at label -1: they
are left out, so both give identical results).

1. Select, without the hold-out models' labels. ``run_protocol`` cross-validates every
   method on the regular models alone (``selection_prediction``: k-fold CV whose fits never
   see a hold-out model; 3 x 5-fold by default); the assessor and the baseline of highest
   CV accuracy (the first of equals, in the methods' order) are the pair. The protocol's
   own regular folds cannot choose it: their fits also train on the hold-out models, so
   their out-of-fold results depend on the hold-out labels.
2. Test, on the hold-out models alone. ``d[m] = c_a[m] - c_b[m]``: the fraction of the
   repeats in which the chosen assessor predicts hold-out model m correctly minus the
   baseline's. Every repeat predicts the hold-out models with fits on the regular models
   only, so given those fits the ``d[m]`` are independent new models. Statistic: the mean
   difference. Null: each ``d[m]`` is symmetric about 0 (the two fitted methods equally
   accurate on new models); the sign-flip test counts the flips ``s`` (``s[m] = +-1``)
   with ``mean(s d) >= mean(d)`` (``p_greater``, small when the assessor is better), or
   ``<=`` (``p_less``); ``p_value = min(1, 2 min(p_greater, p_less))``.

   - Exact, whenever the differences lie on a lattice (multiples of 1/L, as a fraction of
     L repeats does): the distribution of the flipped sum over all 2^n flips by
     convolution over the lattice, so p is a count over every flip, the identity included.
     Off a lattice, every flip is enumerated when 2^n <= n_draws.
   - Otherwise Monte Carlo: ``n_draws`` random flips (``numpy.random.default_rng(seed)``),
     ``p_greater = (1 + g) / (1 + n_draws)`` with g the draws at least as extreme.
3. Interval: the inversion of that same test, the shifts delta for which the test of
   ``d - delta`` does not reject at ``alpha``. Flipping the set A of models moves the
   statistic up exactly when ``mean over A of d <= delta``, so ``p_greater(delta)`` is the
   weight of the flips whose subset mean is at most delta (Hartigan 1969) and the bounds
   are weighted quantiles of the subset means: the interval excludes 0 exactly when
   ``p_value < alpha``, so interval and decision never disagree.

The decision (``rejects``): ``p_value < alpha``, strictly.
"""

from __future__ import annotations

import numbers

import numpy as np
import xarray as xr

from ml4ml.errors import InputError

__all__ = ["significance_test", "sign_flip_test", "sign_flip_p_values", "select_pair",
           "rejects", "null_distribution", "ESTIMATOR", "METHOD_DESCRIPTION"]

ESTIMATOR = "estimator"  # the dim of the methods in run_protocol's dataset
_LEGACY_ESTIMATOR = "method"  # its name before the rename
_MAX_DENOMINATOR = 1000  # lattices 1/L looked for, L up to this
_MAX_CONVOLUTION = 3e8  # cells x steps of the exact convolution, above which it is not used
_DRAW_BLOCK = 4096  # random flips per matrix product (bounds memory)
_TIE = 1e-9  # subset sums this close to 0 count as 0 (off a lattice)

METHOD_DESCRIPTION = (
    "select, then test: the assessor and the baseline of highest accuracy in a repeated "
    "k-fold cross-validation on the regular models alone (fits that never see a hold-out model), "
    "compared on the hold-out models by a paired sign-flip test of their per-model "
    "correctness difference (averaged over the repeats; exact over every flip when the "
    "differences lie on a lattice, else Monte Carlo with p = (1 + g) / (1 + n)); the "
    "interval is the inversion of the same test, so it excludes 0 exactly when p < alpha"
)


def rejects(p_value, alpha) -> bool:
    """The decision: ``p_value < alpha`` (strictly; NaN never rejects)."""
    return bool(np.isfinite(p_value) and p_value < alpha)


# ----------------------------------------------------------------------------- null
def _lattice(values) -> int | None:
    """The smallest L <= 1000 with every value a multiple of 1/L (to 1e-9), or None."""
    magnitudes = np.unique(np.abs(np.asarray(values, dtype=np.float64)).ravel())
    magnitudes = magnitudes[magnitudes > 0]
    if magnitudes.size == 0:
        return 1
    if magnitudes.size > 2 * _MAX_DENOMINATOR:
        return None
    for start in range(1, _MAX_DENOMINATOR + 1, 100):
        denominators = np.arange(start, min(start + 100, _MAX_DENOMINATOR + 1))[:, None]
        scaled = denominators * magnitudes
        ok = np.flatnonzero((np.abs(scaled - np.rint(scaled)) <= _TIE).all(axis=1))
        if ok.size:
            return int(denominators[ok[0], 0])
    return None


def _all_flips(n):
    """Every subset of n models as bool rows (2^n, n); row 0 flips none."""
    return ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(bool)


def _random_flips(n, n_draws, seed):
    return np.random.default_rng(seed).random((n_draws, n)) < 0.5


def _unique(values, weights):
    values, inverse = np.unique(values, return_inverse=True)
    return values, np.bincount(inverse.ravel(), weights=weights, minlength=values.size)


def _convolution_null(d, denominator):
    """(subset means, weights, weight of the empty set) over all 2^n flips: the number of
    flipped sets of each size and lattice sum, by one convolution step per model."""
    steps = np.rint(d * denominator).astype(np.int64)
    low, high = int(steps[steps < 0].sum()), int(steps[steps > 0].sum())
    width = high - low + 1
    table = np.zeros((d.size + 1, width))  # (size of the flipped set, its sum - low)
    table[0, -low] = 1.0
    for step in steps:
        moved = np.zeros_like(table)
        if step >= 0:
            moved[1:, step:] = table[:-1, :width - step]
        else:
            moved[1:, :width + step] = table[:-1, -step:]
        table = 0.5 * (table + moved)
    size, column = np.nonzero(table[1:] > 0)
    means = (column + low) / (denominator * (size + 1.0))
    return (*_unique(means, table[1:][size, column]), float(table[0, -low]))


def _flip_null(d, flips, exact):
    """(subset means, weights, weight of the flips that move nothing) of the rows of
    ``flips``: all of them (exact) or random draws (the identity added: 1 + g over 1 + n)."""
    sizes = flips.sum(axis=1)
    sums = flips.astype(np.float64) @ d
    sums[np.abs(sums) <= _TIE] = 0.0
    flipped = sizes > 0
    n = flips.shape[0]
    if exact:
        weight, always = 1.0 / n, (n - flipped.sum()) / n
    else:
        weight, always = 1.0 / (1 + n), (1 + n - flipped.sum()) / (1 + n)
    means = sums[flipped] / sizes[flipped]
    return (*_unique(means, np.full(means.size, weight)), float(always))


def null_distribution(differences, *, n_draws=10_000, seed=0):
    """The sign-flip null of one set of per-model differences, as subset means.

    Returns
    -------
    dict: ``means`` (sorted distinct means over a flipped set A of the differences in A),
    ``weights`` (the share of the flips with that mean), ``always`` (the share of the flips
    that flip nothing, counted as at least as extreme on both sides), ``exact`` (every
    flip counted, not drawn), ``n_draws`` (random flips drawn; 0 when exact), ``how``
    ("convolution over a lattice of 1/L", "enumeration" or "Monte Carlo").
    """
    d = np.asarray(differences, dtype=np.float64).ravel()
    n = d.size
    denominator = _lattice(d)
    if denominator is not None:
        cells = (n + 1) * (np.abs(np.rint(d * denominator)).sum() + 1) * n
        if cells <= _MAX_CONVOLUTION:
            means, weights, always = _convolution_null(d, denominator)
            return {"means": means, "weights": weights, "always": always, "exact": True,
                    "n_draws": 0, "how": f"convolution over a lattice of 1/{denominator}"}
    if 2 ** min(n, 63) <= n_draws:
        means, weights, always = _flip_null(d, _all_flips(n), exact=True)
        return {"means": means, "weights": weights, "always": always, "exact": True,
                "n_draws": 0, "how": "enumeration"}
    means, weights, always = _flip_null(d, _random_flips(n, n_draws, seed), exact=False)
    return {"means": means, "weights": weights, "always": always, "exact": False,
            "n_draws": int(n_draws), "how": "Monte Carlo"}


def _tails(null):
    """(at most, at least): the share of flips whose subset mean is <= means[k] (and the
    empty set), and >= means[k] (and the empty set)."""
    weights = null["weights"]
    at_most = null["always"] + np.cumsum(weights)
    at_least = null["always"] + np.cumsum(weights[::-1])[::-1]
    return at_most, at_least


def _p_values(null, at_most, at_least, delta=0.0):
    """(p_greater, p_less) of the test of ``differences - delta``."""
    means = null["means"]
    below = np.searchsorted(means, delta, side="right") - 1
    above = np.searchsorted(means, delta, side="left")
    p_greater = float(at_most[below]) if below >= 0 else null["always"]
    p_less = float(at_least[above]) if above < means.size else null["always"]
    return min(1.0, p_greater), min(1.0, p_less)  # sums of shares: 1 + 1e-16 is 1


def _interval(null, at_most, at_least, alpha):
    """[low, high]: the shifts the two-sided test does not reject at ``alpha`` (module
    docstring); -1 or 1 where no shift in that direction is rejected."""
    means, half = null["means"], alpha / 2
    if null["always"] >= half:
        return -1.0, 1.0
    low = means[np.flatnonzero(at_most >= half)[0]]
    high = means[np.flatnonzero(at_least >= half)[-1]]
    return float(low), float(high)


# ----------------------------------------------------------------------------- tests
def sign_flip_test(differences, *, alpha=0.05, n_draws=10_000, seed=0) -> dict:
    """The paired sign-flip test of one set of per-model differences, with its interval.

    Parameters
    ----------
    differences : array (n_models,) in [-1, 1], e.g. the chosen assessor's fraction of
        repeats correct minus the chosen baseline's, per hold-out model.
    alpha : level of the two-sided test; the interval's confidence is ``1 - alpha``.
    n_draws, seed : random flips where the test is not exact (module docstring).

    Returns
    -------
    dict: ``difference`` (the mean), ``ci_low``, ``ci_high``, ``confidence``, ``p_value``
    (two-sided), ``p_greater`` (one-sided: the assessor better), ``p_less``,
    ``significant`` (``rejects(p_value, alpha)``), ``n_models``, ``exact``, ``n_draws``
    (0 when exact), ``null`` (how the null was counted).
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or d.size < 2:
        raise InputError(f"the test needs at least 2 hold-out models; got {d.size}",
                         field="holdout")
    if not np.isfinite(d).all() or (np.abs(d) > 1).any():
        raise InputError("differences must lie in [-1, 1]", field="correct")
    _check_settings(alpha, n_draws, seed)
    null = null_distribution(d, n_draws=n_draws, seed=seed)
    at_most, at_least = _tails(null)
    p_greater, p_less = _p_values(null, at_most, at_least)
    p_value = min(1.0, 2 * min(p_greater, p_less))
    low, high = _interval(null, at_most, at_least, alpha)
    return {"difference": float(d.mean()), "ci_low": low, "ci_high": high,
            "confidence": 1 - float(alpha), "p_value": p_value, "p_greater": p_greater,
            "p_less": p_less, "significant": rejects(p_value, alpha),
            "n_models": int(d.size), "exact": null["exact"], "n_draws": null["n_draws"],
            "null": null["how"]}


def sign_flip_p_values(differences, *, n_draws=10_000, seed=0):
    """The sign-flip test on many databases at once (simulations): p-values only.

    Parameters
    ----------
    differences : float array (..., n_models).
    n_draws, seed : as ``sign_flip_test`` (the same random flips for every database).

    Returns
    -------
    statistic, p_value, p_greater, p_less : float arrays (...); equal to
    ``sign_flip_test``'s on each database (exact where the whole batch lies on a lattice).
    """
    d = np.asarray(differences, dtype=np.float64)
    batch, n = d.shape[:-1], d.shape[-1]
    flat = d.reshape(-1, n)
    denominator = _lattice(flat)
    steps = None if denominator is None else np.rint(flat * denominator).astype(np.int64)
    if steps is not None and flat.shape[0] * (2 * np.abs(steps).sum(1).max() + 1) * n \
            <= 10 * _MAX_CONVOLUTION:
        p_greater, p_less = _convolution_p(steps)
    else:
        exact = 2 ** min(n, 63) <= n_draws
        flips = _all_flips(n) if exact else _random_flips(n, n_draws, seed)
        greater = np.zeros(flat.shape[0])
        less = np.zeros(flat.shape[0])
        for start in range(0, flips.shape[0], _DRAW_BLOCK):
            sums = flat @ flips[start:start + _DRAW_BLOCK].T.astype(np.float64)
            greater += (sums <= _TIE).sum(axis=1)  # the flipped sum <= 0: statistic up
            less += (sums >= -_TIE).sum(axis=1)
        if exact:
            p_greater, p_less = greater / flips.shape[0], less / flips.shape[0]
        else:
            p_greater, p_less = (1 + greater) / (1 + n_draws), (1 + less) / (1 + n_draws)
    p_value = np.minimum(1.0, 2 * np.minimum(p_greater, p_less))
    return tuple(a.reshape(batch) for a in (flat.mean(axis=1), p_value, p_greater, p_less))


def _convolution_p(steps):
    """(p_greater, p_less) (n_databases,): the distribution of the flipped sum over every
    flip, one convolution step per model, for all databases at once."""
    n_databases, n = steps.shape
    reach = int(np.abs(steps).sum(axis=1).max())
    width = 2 * reach + 1
    distribution = np.zeros((n_databases, width))
    distribution[:, reach] = 1.0
    margin = int(np.abs(steps).max())
    rows = np.arange(n_databases)
    for k in range(n):
        padded = np.pad(distribution, ((0, 0), (margin, margin)))
        # moved[s] = distribution[s - step]: the window of padded starting at margin - step
        windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=1)
        distribution = 0.5 * (distribution + windows[rows, margin - steps[:, k]])
    return distribution[:, :reach + 1].sum(axis=1), distribution[:, reach:].sum(axis=1)


def _check_settings(alpha, n_draws, seed):
    for name, value, low in (("n_draws", n_draws, 1), ("seed", seed, 0)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
            raise InputError(f"{name} must be an int >= {low}; got {value!r}", field=name)
    if not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1); got {alpha!r}", field="alpha")


# ----------------------------------------------------------------------------- selection
def select_pair(selection_accuracy, is_assessor) -> tuple[int, int]:
    """(assessor, baseline): the indices of the highest selection accuracy of each kind,
    the first of equals in the methods' order."""
    accuracy = np.asarray(selection_accuracy, dtype=np.float64)
    is_assessor = np.asarray(is_assessor, dtype=bool)
    if not is_assessor.any() or is_assessor.all():
        raise InputError("the test needs at least one assessor and one baseline; got "
                         f"{int(is_assessor.sum())} and {int((~is_assessor).sum())}",
                         field="method_kind", hint="run the protocol with both kinds")
    return (int(np.argmax(np.where(is_assessor, accuracy, -np.inf))),
            int(np.argmax(np.where(~is_assessor, accuracy, -np.inf))))


def selection_text(n_folds: int, n_regular: int, n_repeats: int = 1) -> str:
    """How the pair was chosen, e.g. "3 x 5-fold CV on the 100 regular models"."""
    times = f"{n_repeats} x " if n_repeats > 1 else ""
    return f"{times}{n_folds}-fold CV on the {n_regular} regular models"


def significance_test(results: xr.Dataset, *, alpha=0.05, n_draws=10_000,
                      seed=0) -> dict:
    """Select, then test (module docstring) on ``run_protocol``'s results or the stored
    assess group.

    Uses ``prediction (repeat, mid, estimator)``, ``selection_prediction
    (selection_repeat, mid, estimator)``, ``label (mid,)`` (models labelled -1 are left
    out), ``holdout (mid,)`` and the coord ``method_kind (estimator,)``.

    Returns
    -------
    dict: ``sign_flip_test``'s keys for the chosen pair (``difference`` = hold-out
    accuracy of the assessor minus the baseline's, averaged over repeats), and
    ``chosen_assessor``, ``best_baseline`` (the baseline chosen), ``selection`` (how:
    "3 x 5-fold CV on the 100 regular models"), ``selection_folds``,
    ``selection_repeats``, ``n_selection_models``,
    ``selection_accuracy_assessor``, ``selection_accuracy_baseline`` (their CV accuracy),
    ``accuracy_assessor``, ``accuracy_baseline`` (on the hold-out models), ``alpha``,
    ``test`` (its short name), ``method`` (``METHOD_DESCRIPTION``).
    """
    missing = [name for name in ("prediction", "label", "holdout", "method_kind",
                                 "selection_prediction") if name not in results.variables]
    if missing:
        raise InputError(f"the results lack {missing}", field=missing[0],
                         hint="pass the dataset run_protocol returns; an assessment made "
                              "by an older ml4ml has no selection: run 'ml4ml assess' again")
    dim = ESTIMATOR if ESTIMATOR in results.dims else _LEGACY_ESTIMATOR
    label = np.asarray(results["label"].values, dtype=np.int64)
    labelled = label >= 0
    holdout = np.asarray(results["holdout"].values, dtype=bool)
    regular, held = labelled & ~holdout, labelled & holdout
    names = [str(name) for name in results[dim].values]
    kinds = np.asarray(results["method_kind"].transpose(dim).values, dtype=object)
    selected = results["selection_prediction"]
    if "selection_repeat" not in selected.dims:
        selected = selected.expand_dims("selection_repeat")
    selected = selected.transpose("selection_repeat", "mid", dim).values[:, regular]
    if selected.shape[1] == 0 or (selected < 0).any():
        found = int((selected >= 0).all(axis=(0, 2)).sum())
        raise InputError("the selection needs a cross-validated prediction of every "
                         f"labelled regular model; found {found} of {int(regular.sum())}",
                         field="selection_prediction")
    cv_accuracy = (selected == label[regular][None, :, None]).mean(axis=(0, 1))
    assessor, baseline = select_pair(cv_accuracy, kinds == "assessor")
    prediction = results["prediction"].transpose("repeat", "mid", dim).values[:, held]
    correct = (prediction[..., [assessor, baseline]] == label[held][None, :, None]).mean(0)
    result = sign_flip_test(correct[:, 0] - correct[:, 1], alpha=alpha, n_draws=n_draws,
                            seed=seed)
    folds = int(results.attrs.get("selection_folds", 0)) or int(
        np.unique(results["selection_fold"].values[..., regular]).size
        if "selection_fold" in results else 0)
    repeats = selected.shape[0]
    test = ("exact sign-flip test over the hold-out models" if result["exact"] else
            f"sign-flip test over the hold-out models, {result['n_draws']:,} random flips")
    return {"chosen_assessor": names[assessor], "best_baseline": names[baseline],
            "selection": selection_text(folds, int(regular.sum()), repeats),
            "selection_folds": folds, "selection_repeats": repeats,
            "n_selection_models": int(regular.sum()),
            "selection_accuracy_assessor": float(cv_accuracy[assessor]),
            "selection_accuracy_baseline": float(cv_accuracy[baseline]),
            "accuracy_assessor": float(correct[:, 0].mean()),
            "accuracy_baseline": float(correct[:, 1].mean()),
            **result, "alpha": float(alpha), "test": test, "method": METHOD_DESCRIPTION}
