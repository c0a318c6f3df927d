"""Does the chosen assessor beat the best baseline? A test that holds its level.

``significance_test(results)`` compares, on ``run_protocol``'s out-of-fold predictions, the
best assessor with the best baseline, both chosen on the same models, with a permutation
test whose unit is the model and a 95% interval for the difference.

Why the hold-out models only
----------------------------
Under the protocol every regular model is in the training folds of the other regular
half and of the hold-out fold, so the out-of-fold correctness of different models is
correlated through the shared fits: in a simulation with interchangeable one-feature
rules (benchmarks/significance.py) the variance of the mean accuracy difference over all
150 models is about 1.5 times what independent models would give, and a within-model
permutation test over all models rejects a true null in about 10% of databases at
alpha = 0.05 (the Nadeau-Bengio test of ``comparison.compare``: 4-13% depending on the
set-up). The hold-out models are different: every repeat predicts them with methods fitted
on the regular models only, so given those fits they are independent new models, and a
test on them alone is exact for the question "do the assessors, as trained on the
regular models, beat the baselines on new models" (and within 5% of its level for the
question "do the methods have equal expected accuracy" in the simulation, 3.6-4.7% at
alpha = 0.05). It uses a third of the models, so its power is that of 50, not 150.

The test
--------
- ``c[m, k]``: fraction of the repeats in which method k predicts hold-out model m's label.
- Statistic ``T = max over assessors of mean_m c - max over baselines of mean_m c``: the
  chosen assessor's accuracy minus the best baseline's, both selected on these models.
- Null (all methods exchangeable on every model): the methods' columns are permuted
  independently within each model (a sign flip when there are two methods), ``n_draws``
  permutations drawn at once (``numpy.random.default_rng(seed)``), or all of them when
  there are at most ``n_draws``; T is recomputed on each, with its selection, so the
  selection of both sides is accounted for. p-values count the observed statistic:
  ``p_greater = (1 + #{T* >= T}) / (1 + n_draws)`` (all permutations, identity included,
  when enumerated), likewise ``p_less``; ``p_value = min(1, 2 min(p_greater, p_less))``
  (two-sided; the null distribution need not be symmetric).
- Interval: simultaneous bootstrap-t over the hold-out models (``n_draws`` resamples):
  ``q`` is the ``confidence`` quantile of the maximum over all assessor-baseline pairs of
  ``|mean* d_ab - mean d_ab| / se_ab``; the chosen pair's interval is ``T +- q se``. Being
  simultaneous over every pair, it covers the chosen pair's true difference however the
  pair was chosen. It is not the inversion of the permutation test, so near alpha the two
  can disagree.
"""

from __future__ import annotations

import itertools
import math
import numbers

import numpy as np
import xarray as xr

from ml4ml.errors import InputError

__all__ = ["significance_test", "model_permutation_test", "permutation_p_values",
           "ESTIMATOR", "METHOD_DESCRIPTION"]

ESTIMATOR = "estimator"  # the dim of the methods in run_protocol's dataset
_LEGACY_ESTIMATOR = "method"  # its name before the rename
_DRAW_BLOCK = 256  # permutations per matrix product (bounds memory)

METHOD_DESCRIPTION = (
    "permutation test over the hold-out models (the methods' correctness, averaged over "
    "repeats, permuted within each model; best assessor minus best baseline, both "
    "re-selected on every permutation); 95% simultaneous bootstrap-t interval over the "
    "hold-out models; the regular models are left out because the protocol's shared "
    "fits correlate their results"
)


def _statistic(means, is_assessor):
    """max over assessors minus max over baselines of ``means`` (..., n_methods)."""
    return (np.where(is_assessor, means, -np.inf).max(axis=-1)
            - np.where(~is_assessor, means, -np.inf).max(axis=-1))


def _permutations(n_models, n_methods, n_draws, seed):
    """(orders (n, n_models, n_methods), exact): every within-model order, or n_draws."""
    total = math.factorial(n_methods) ** n_models
    if total <= n_draws:
        single = list(itertools.permutations(range(n_methods)))
        orders = np.array(list(itertools.product(single, repeat=n_models)), dtype=np.intp)
        return orders.reshape(total, n_models, n_methods), True
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((n_draws, n_models, n_methods)), axis=-1), False


def permutation_p_values(correct, is_assessor, *, n_draws=10_000, seed=0):
    """The permutation test on many databases at once.

    Parameters
    ----------
    correct : float array (..., n_models, n_methods), e.g. the fraction of repeats in which
        each method predicts each hold-out model correctly.
    is_assessor : bool array (n_methods,), with at least one true and one false.
    n_draws, seed : permutations drawn (the same ones for every database).

    Returns
    -------
    statistic, p_value, p_greater, p_less : float arrays (...). ``exact`` is not returned;
    see ``model_permutation_test``.
    """
    statistic, p_value, p_greater, p_less, _ = _test(correct, is_assessor, n_draws, seed)
    return statistic, p_value, p_greater, p_less


def _test(correct, is_assessor, n_draws, seed):
    correct = np.asarray(correct, dtype=np.float64)
    is_assessor = np.asarray(is_assessor, dtype=bool)
    n_models, n_methods = correct.shape[-2:]
    batch = correct.shape[:-2]
    flat = correct.reshape(-1, n_models * n_methods)
    statistic = _statistic(correct.mean(axis=-2), is_assessor).reshape(-1)
    orders, exact = _permutations(n_models, n_methods, n_draws, seed)
    tolerance = 1e-12
    greater = np.zeros(flat.shape[0])
    less = np.zeros(flat.shape[0])
    methods = np.arange(n_methods)
    for start in range(0, orders.shape[0], _DRAW_BLOCK):
        block = orders[start:start + _DRAW_BLOCK]
        # one-hot (model, source method) -> (draw, permuted method), scaled to a mean
        weights = np.zeros((n_models, n_methods, block.shape[0], n_methods))
        weights[np.arange(n_models)[None, :, None], block,
                np.arange(block.shape[0])[:, None, None], methods] = 1.0 / n_models
        means = (flat @ weights.reshape(n_models * n_methods, -1)).reshape(
            flat.shape[0], block.shape[0], n_methods)
        permuted = _statistic(means, is_assessor)
        greater += (permuted >= statistic[:, None] - tolerance).sum(axis=1)
        less += (permuted <= statistic[:, None] + tolerance).sum(axis=1)
    if exact:
        p_greater, p_less = greater / orders.shape[0], less / orders.shape[0]
    else:
        p_greater, p_less = (1 + greater) / (1 + n_draws), (1 + less) / (1 + n_draws)
    p_value = np.minimum(1.0, 2 * np.minimum(p_greater, p_less))
    shaped = [a.reshape(batch) for a in (statistic, p_value, p_greater, p_less)]
    return (*shaped, exact)


def _interval(correct, is_assessor, chosen, n_draws, seed, confidence):
    """(low, high): simultaneous bootstrap-t interval of the chosen pair (module docstring)."""
    n_models = correct.shape[0]
    assessors, baselines = np.flatnonzero(is_assessor), np.flatnonzero(~is_assessor)
    d = (correct[:, assessors, None] - correct[:, None, baselines]).reshape(n_models, -1)
    mean = d.mean(axis=0)
    se = d.std(axis=0, ddof=1) / np.sqrt(n_models) if n_models > 1 else np.zeros_like(mean)
    rng = np.random.default_rng([seed, 1])
    counts = rng.multinomial(n_models, np.full(n_models, 1.0 / n_models), size=n_draws)
    resampled = counts @ d / n_models  # (n_draws, n_pairs)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(se > 0, np.abs(resampled - mean) / np.where(se > 0, se, 1), 0.0)
    q = float(np.quantile(ratio.max(axis=1), confidence))
    pair = int(np.flatnonzero(assessors == chosen[0])[0]) * baselines.size \
        + int(np.flatnonzero(baselines == chosen[1])[0])
    return float(mean[pair] - q * se[pair]), float(mean[pair] + q * se[pair])


def _check(correct, is_assessor, n_draws, seed, confidence):
    correct = np.asarray(correct, dtype=np.float64)
    is_assessor = np.asarray(is_assessor, dtype=bool)
    if correct.ndim != 2 or correct.shape[1] != is_assessor.size:
        raise InputError(f"correct must be (n_models, n_methods) with n_methods = "
                         f"{is_assessor.size}; got shape {correct.shape}", field="correct")
    if not is_assessor.any() or is_assessor.all():
        raise InputError("the test needs at least one assessor and one baseline; got "
                         f"{int(is_assessor.sum())} and {int((~is_assessor).sum())}",
                         field="method_kind", hint="run the protocol with both kinds")
    if correct.shape[0] < 2:
        raise InputError(f"the test needs at least 2 hold-out models; got {correct.shape[0]}",
                         field="holdout")
    if not np.isfinite(correct).all() or (correct < 0).any() or (correct > 1).any():
        raise InputError("correct must hold fractions in [0, 1]", field="correct")
    for name, value, low in (("n_draws", n_draws, 1), ("seed", seed, 0)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
            raise InputError(f"{name} must be an int >= {low}; got {value!r}", field=name)
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1); got {confidence!r}",
                         field="confidence")
    return correct, is_assessor


def model_permutation_test(correct, is_assessor, *, names=None, n_draws=10_000, seed=0,
                           confidence=0.95) -> dict:
    """The test of the module docstring on one table of per-model correctness.

    Parameters
    ----------
    correct : array (n_models, n_methods) of fractions correct per model and method.
    is_assessor : bool array (n_methods,).
    names : method names (default ``"0"``, ``"1"``, ...).

    Returns
    -------
    dict: ``chosen_assessor``, ``best_baseline``, ``accuracy_assessor``,
    ``accuracy_baseline``, ``difference``, ``ci_low``, ``ci_high``, ``confidence``,
    ``p_value`` (two-sided), ``p_greater`` (one-sided: the assessor is better),
    ``n_models``, ``n_draws`` (permutations used), ``exact`` (all enumerated), ``method``.
    """
    correct, is_assessor = _check(correct, is_assessor, n_draws, seed, confidence)
    names = [str(k) for k in range(is_assessor.size)] if names is None else list(names)
    means = correct.mean(axis=0)
    # the first of equals, in the methods' order (as comparison.compare)
    assessor = int(np.argmax(np.where(is_assessor, means, -np.inf)))
    baseline = int(np.argmax(np.where(~is_assessor, means, -np.inf)))
    statistic, p_value, p_greater, _, exact = _test(correct, is_assessor, n_draws, seed)
    low, high = _interval(correct, is_assessor, (assessor, baseline), n_draws, seed,
                          confidence)
    n_used = (math.factorial(is_assessor.size) ** correct.shape[0]) if exact else n_draws
    return {
        "chosen_assessor": names[assessor],
        "best_baseline": names[baseline],
        "accuracy_assessor": float(means[assessor]),
        "accuracy_baseline": float(means[baseline]),
        "difference": float(statistic),
        "ci_low": low,
        "ci_high": high,
        "confidence": float(confidence),
        "p_value": float(p_value),
        "p_greater": float(p_greater),
        "n_models": int(correct.shape[0]),
        "n_draws": int(n_used),
        "exact": bool(exact),
        "method": METHOD_DESCRIPTION,
    }


def significance_test(results: xr.Dataset, *, n_draws=10_000, seed=0,
                      confidence=0.95) -> dict:
    """The chosen assessor against the best baseline on ``run_protocol``'s results.

    Uses ``prediction (repeat, mid, estimator)``, ``label (mid,)``, ``holdout (mid,)`` and
    the coord ``method_kind (estimator,)``; the hold-out models only (module docstring).
    Returns ``model_permutation_test``'s dict (accuracies are those on the hold-out
    models, averaged over repeats).
    """
    missing = [name for name in ("prediction", "label", "holdout", "method_kind")
               if name not in results.variables]
    if missing:
        raise InputError(f"the results lack {missing}", field=missing[0],
                         hint="pass the dataset run_protocol returns")
    dim = ESTIMATOR if ESTIMATOR in results.dims else _LEGACY_ESTIMATOR
    holdout = np.asarray(results["holdout"].values, dtype=bool)
    held = results[["prediction", "label"]].isel(mid=holdout)
    prediction = held["prediction"].transpose("repeat", "mid", dim).values
    correct = (prediction == held["label"].values[None, :, None]).mean(axis=0)
    kinds = np.asarray(results["method_kind"].transpose(dim).values, dtype=object)
    return model_permutation_test(correct, kinds == "assessor", names=[
        str(name) for name in results[dim].values], n_draws=n_draws, seed=seed,
        confidence=confidence)
