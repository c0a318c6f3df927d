"""Which single measure agrees with the labels: every measure column ranked at once.

``rank_columns`` scores every column of a (models x measures) table under the paper's
protocol (``ml4ml.assess.protocol``): the hold-out models are tested, the regular models
train. Every step works on all columns at once (numpy/scipy ranks, cumulative counts); no
Python loop runs over the measures.

Per column (``score`` dim):

- ``rank_direction``: +1 where larger values mean invariant (label 1), -1 where smaller do,
  learned on the regular models alone: +1 where their ROC AUC is >= 0.5 (``rank_train_auc``).
- ``rank_auc``: ROC AUC on the hold-out models with that direction applied (ties count one
  half, as ``sklearn.metrics.roc_auc_score``); ``rank_auc_low``/``rank_auc_high``: its 95%
  percentile bootstrap interval over the hold-out models, stratified by label: resample
  ``b`` draws ``rng.integers(n1, size=n1)`` of the invariant hold-out models and
  ``rng.integers(n0, size=n0)`` of the variant ones (in store order), ``rng =
  numpy.random.default_rng(seed)``, all positives of every resample first, then all
  negatives (``bootstrap_draws``); ``numpy.percentile`` (linear) of the resampled AUCs.
- ``rank_accuracy``: hold-out accuracy of the column's best threshold, threshold and
  direction learned on the regular models (``best_thresholds``: the rule of
  ``baseline_best_feature``; ``rank_threshold``, ``rank_rule``).
- ``rank_chosen``: the fraction of the protocol's training parts (``repeats`` x 3 folds,
  ``fold_assignment``) in which the column was the best single feature, as
  ``baseline_best_feature`` chooses it (most training models right; ties: first column).

Columns with a NaN for a labelled model, or constant over them, are not scored: their
numbers are NaN, ``rank_reason`` says why, and they rank last. The rest are ordered by
``rank_auc``, then ``rank_accuracy``, then name; ``rank_position`` 1 is the best. The
ranking is descriptive: it is read off the hold-out models, so the top AUC is an optimistic
estimate of the best measure's; ``rank_chosen`` is chosen without them.
"""

from __future__ import annotations

import numbers

import numpy as np
import xarray as xr
from scipy.stats import rankdata

from ml4ml.assess.estimators import best_thresholds
from ml4ml.assess.protocol import fold_assignment
from ml4ml.errors import InputError

__all__ = ["rank_columns", "auc_columns", "bootstrap_draws", "SCORE", "RANK_VARIABLES"]

SCORE = "score"
# the element budget of one block of the bootstrap (resamples x negatives x columns)
_BLOCK = 4_000_000

RANK_VARIABLES = {
    "rank_position": ("rank", "1: the measure that agrees best with the labels (hold-out "
                      "AUC, then accuracy, then name); unscored measures last"),
    "rank_auc": ("hold-out ROC AUC", "ROC AUC of the measure on the hold-out models, its "
                 "direction learned on the regular models"),
    "rank_auc_low": ("hold-out AUC, interval low", "2.5th percentile of the AUC over "
                     "stratified bootstrap resamples of the hold-out models"),
    "rank_auc_high": ("hold-out AUC, interval high", "97.5th percentile of the AUC over "
                      "stratified bootstrap resamples of the hold-out models"),
    "rank_accuracy": ("hold-out accuracy", "accuracy on the hold-out models of the "
                      "measure's best threshold on the regular models"),
    "rank_threshold": ("threshold", "the best threshold on the regular models"),
    "rank_rule": ("threshold rule", "'>=' or '<': invariant where the measure is >= or < "
                  "the threshold"),
    "rank_direction": ("direction", "+1: larger values mean invariant; -1: smaller do "
                       "(learned on the regular models); 0: not scored"),
    "rank_train_auc": ("regular-model ROC AUC", "ROC AUC on the regular models (larger "
                       "values taken as invariant): its side of 0.5 is the direction"),
    "rank_chosen": ("chosen as best single feature", "fraction of the protocol's training "
                    "parts (repeats x 3 folds) in which baseline_best_feature's rule "
                    "chose this measure (0 for unscored measures, never chosen)"),
    "rank_reason": ("why not scored", "empty for scored measures"),
}


def auc_columns(X, positive) -> np.ndarray:
    """ROC AUC of every column of X (n_models, n_columns) for the boolean ``positive``
    (n_models,): larger values taken as positive, ties one half (Mann-Whitney via average
    ranks); (n_columns,)."""
    positive = np.asarray(positive, dtype=bool)
    n1 = int(positive.sum())
    n0 = positive.size - n1
    ranks = rankdata(X, axis=0)
    return (ranks[positive].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def bootstrap_draws(n_positive: int, n_negative: int, n_boot: int, seed: int):
    """(positives (n_boot, n_positive), negatives (n_boot, n_negative)): the indices each
    stratified resample draws, within each class (module docstring)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(n_positive, size=(n_boot, n_positive)),
            rng.integers(n_negative, size=(n_boot, n_negative)))


def _counts(draws, n) -> np.ndarray:
    """How often each index is drawn, per resample: (n_boot, n) float64."""
    counts = np.zeros((draws.shape[0], n))
    np.add.at(counts, (np.arange(draws.shape[0])[:, None], draws), 1.0)
    return counts


def _bootstrap_auc(positives, negatives, n_boot, seed) -> np.ndarray:
    """AUC (larger = positive) of every column on every stratified resample: (n_boot,
    n_columns). A resample's AUC is c1' K c0 / (n1 n0) with c the draw counts and K the
    pairwise comparisons (n1, n0) of the column, computed for blocks of columns."""
    n1, n0, p = positives.shape[0], negatives.shape[0], positives.shape[1]
    draws_1, draws_0 = bootstrap_draws(n1, n0, n_boot, seed)
    c1, c0 = _counts(draws_1, n1), _counts(draws_0, n0)
    out = np.empty((n_boot, p))
    step = max(1, _BLOCK // max(1, n_boot * max(n0, n1)))
    for start in range(0, p, step):  # blocks of columns, to bound memory
        a = positives[:, None, start:start + step]
        b = negatives[None, :, start:start + step]
        pairs = (a > b) + 0.5 * (a == b)  # (n1, n0, block)
        by_positive = np.tensordot(c1, pairs, axes=(1, 0))  # (n_boot, n0, block)
        out[:, start:start + step] = np.einsum("bjc,bj->bc", by_positive, c0)
    return out / (n1 * n0)


def _check(values, labels, holdout, names):
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels)
    holdout = np.asarray(holdout, dtype=bool)
    if values.ndim != 2 or values.shape[0] != labels.size or holdout.size != labels.size:
        raise InputError(f"values must be (n_models, n_columns) with one label and hold-out "
                         f"flag per model; got {values.shape}, {labels.size} labels, "
                         f"{holdout.size} flags", field="values")
    if len(names) != values.shape[1]:
        raise InputError(f"{len(names)} names for {values.shape[1]} columns", field="names")
    if not np.isin(labels, (0, 1)).all():
        raise InputError("labels must be 0 (variant) or 1 (invariant); drop unlabelled "
                         "models first", field="labels")
    labels = labels.astype(bool)
    for where, mask in (("hold-out", holdout), ("regular", ~holdout)):
        kinds = np.unique(labels[mask])
        if kinds.size < 2:
            found = "none" if kinds.size == 0 else f"only label {int(kinds[0])}"
            raise InputError(f"ranking needs invariant and variant models among the {where} "
                             f"labelled models; found {found} ({int(mask.sum())} model(s))",
                             field="labels", hint="label models of both kinds in both "
                             "parts (hold-out and regular)")
    return values, labels, holdout


def _reasons(values) -> np.ndarray:
    """Why each column is not scored ("" where it is): NaN or infinite values, constant."""
    n = values.shape[0]
    bad = (~np.isfinite(values)).sum(axis=0)
    finite = np.where(np.isfinite(values), values, values[:1])  # NaN columns: bad anyway
    constant = (finite == finite[:1]).all(axis=0)
    reasons = np.full(values.shape[1], "", dtype=object)
    reasons[constant] = "constant over the labelled models"
    reasons[bad > 0] = [f"not finite for {k} of {n} labelled models" for k in bad[bad > 0]]
    return reasons


def _chosen(values, labels, holdout, repeats, seed) -> np.ndarray:
    """(n_columns,) fraction of the protocol's training parts choosing each column."""
    folds = fold_assignment(holdout, repeats, seed)
    counts = np.zeros(values.shape[1])
    for fold_of in folds:  # repeats x 3 training parts; every column at once in each
        for fold in range(3):
            train = fold_of != fold
            correct = best_thresholds(values[train], labels[train].astype(np.int64))[0]
            counts[int(np.argmax(correct))] += 1
    return counts / (3 * folds.shape[0])


def _score(values, labels, holdout, repeats, seed, n_boot, confidence) -> dict:
    """Every number of the scored columns (values already finite and non-constant)."""
    regular = ~holdout
    train_auc = auc_columns(values[regular], labels[regular])
    direction = np.where(train_auc >= 0.5, 1, -1)
    held = values[holdout]
    auc = auc_columns(held, labels[holdout])
    resampled = _bootstrap_auc(held[labels[holdout]], held[~labels[holdout]], n_boot, seed)
    resampled = np.where(direction > 0, resampled, 1.0 - resampled)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail], axis=0)
    _, threshold, rule = best_thresholds(values[regular], labels[regular].astype(np.int64))
    invariant = np.where(rule == 0, held >= threshold, held < threshold)
    return {"rank_auc": np.where(direction > 0, auc, 1.0 - auc), "rank_auc_low": low,
            "rank_auc_high": high,
            "rank_accuracy": (invariant == labels[holdout][:, None]).mean(axis=0),
            "rank_threshold": threshold,
            "rank_rule": np.asarray([">=", "<"], dtype=object)[rule],
            "rank_direction": direction.astype(np.int8), "rank_train_auc": train_auc,
            "rank_chosen": _chosen(values, labels, holdout, repeats, seed)}


def rank_columns(values, labels, holdout, names, *, coords=None, repeats: int = 10,
                 seed: int = 0, n_boot: int = 2000, confidence: float = 0.95) -> xr.Dataset:
    """Rank every measure column by how well it alone agrees with the labels.

    Parameters
    ----------
    values : float array (n_models, n_columns) of the labelled models.
    labels : 0/1 array (n_models,). holdout : bool array (n_models,).
    names : the columns' names (n_columns,), the ``score`` coordinate.
    coords : {name: array (n_columns,)} more coordinates along ``score`` (family, level...).
    repeats, seed : the protocol's (``rank_chosen``); seed also seeds the bootstrap.
    n_boot, confidence : bootstrap resamples and the interval's confidence.

    Returns
    -------
    xarray.Dataset along ``score`` (best first): the ``RANK_VARIABLES`` (module docstring).
    """
    for name, value, low in (("repeats", repeats, 1), ("seed", seed, 0),
                             ("n_boot", n_boot, 2)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
            raise InputError(f"{name} must be an int >= {low}; got {value!r}", field=name)
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1); got {confidence!r}",
                         field="confidence")
    values, labels, holdout = _check(values, labels, holdout, names)
    reasons = _reasons(values)
    scored = np.flatnonzero(reasons == "")
    n = values.shape[1]
    out = {name: np.full(n, np.nan) for name in RANK_VARIABLES}
    out |= {"rank_rule": np.full(n, "", dtype=object), "rank_chosen": np.zeros(n),
            "rank_direction": np.zeros(n, dtype=np.int8), "rank_reason": reasons}
    if scored.size:
        for name, array in _score(values[:, scored], labels, holdout, repeats, seed, n_boot,
                                  confidence).items():
            out[name][scored] = array
    names = np.asarray([str(c) for c in names], dtype=object)
    # scored first by AUC, accuracy (both descending), then by name; unscored after
    order = np.lexsort((names, -np.nan_to_num(out["rank_accuracy"], nan=-1.0),
                        -np.nan_to_num(out["rank_auc"], nan=-1.0), reasons != ""))
    out["rank_position"] = np.empty(n, dtype=np.int64)
    out["rank_position"][order] = np.arange(1, n + 1)
    data = {name: xr.Variable(SCORE, np.asarray(out[name])[order],
                              {"long_name": long, "description": text})
            for name, (long, text) in RANK_VARIABLES.items()}
    extra = {key: (SCORE, np.asarray(value, dtype=object)[order])
             for key, value in (coords or {}).items()}
    ds = xr.Dataset(data, coords={SCORE: (SCORE, names[order]), **extra})
    ds[SCORE].attrs = {"long_name": "measure column", "description": "the measure scored "
                       "alone: <level>_<measure>[_<split>][_k<interval>]"}
    ds.attrs.update({"n_holdout": int(holdout.sum()), "n_regular": int((~holdout).sum()),
                     "n_scored": int(scored.size), "repeats": int(repeats), "seed": int(seed),
                     "n_boot": int(n_boot), "confidence": float(confidence),
                     "bootstrap": "stratified percentile bootstrap over the hold-out models, "
                                  "numpy.random.default_rng(seed)",
                     "protocol": "direction and threshold from the regular models, scored on "
                                 "the hold-out models (ml4ml.assess.rank)"})
    return ds
