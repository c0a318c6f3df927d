"""Active labelling: which model a rater is asked about next, and how much the labels teach.

Pure functions over labelled data (no store access but ``labelling_features`` and
``rater_learning_curve``, which read one):

- ``labelling_features(path, transform)``: the store's feature set, one row per measured
  model: a DataFrame (n_models, n_features) indexed by ``mid``.
- ``ActiveOrder(features, ...).next(labels, skipped)``: the next model to ask about, and why.
  A seeded random start (``n_start`` labels, and until both classes are seen), then, with
  probability ``random_fraction``, a seeded random unlabelled model, else the unlabelled
  model whose label the assessor (fit on the labels so far) is least sure of: predicted
  probability of "invariant" closest to 0.5 (uncertainty sampling).
- ``learning_curve(features, ordered_labels, scored=...)``: the assessor's accuracy on
  the models not yet labelled, estimated from the random picks among the first n labels,
  against n (``ESTIMATOR``).
- ``rater_learning_curve(path, transform, rater)``: that curve for a rater's ratings in the
  order given (``rated_at``), scored on the picks the store records as random; or for
  the current label source in a seeded random order (every label scored).

The assessor is logistic regression (``make_assessor("logistic")``: median imputation,
standard scaling, L2-penalised logistic regression) with a stronger penalty than
scikit-learn's default, ``C = PENALTY_C = 0.03`` (80 features, a few dozen labels: at
C = 1 it separates the labels and overfits; on the three demo stores its hold-out accuracy
with every regular label is 0.84 / 0.90 / 0.92 at C = 0.03, 0.72 / 0.80 / 0.80 at C = 1).
Not the store's chosen assessor: logistic regression is refit on every request in
milliseconds, is deterministic, and gives smooth probabilities, so "closest to 0.5" is
well defined; a forest's vote fractions on a few labels are coarse and tied, and the
store's choice may be the linear assessor, which has no probabilities. Any estimator
with ``predict_proba`` may be passed instead.

**The learning curve's estimator: the random picks, corrected for the assessor's
picks.** Under the active order most labels are the models the assessor was least sure
of: the hard cases. Cross-validated over all labels, the curve measures the assessor on
those hard cases, not on the models left, which are easier: in the simulation of
``tests/test_active_labelling.py`` (200 models, 60 labels, 8 seeds) it shows 0.742 and 0.869
while the accuracy on the models not yet labelled is 0.948 and 0.854 (active, random order):
the better order ranked below the worse, as a review found on its own simulation.

So the curve is scored on the random picks only: the overlap (a seeded sample of every
model), the random start, the random picks (probability ``random_fraction``) and, in the
seeded order, every label; each was drawn uniformly from the models not yet rated at that
moment (the store records how each model was picked, ``store.labels`` ``pick``, so skips
and the arrows do not upset which labels were random). Every label gets its out-of-fold
correctness ``c`` (whether the assessor fit on the other folds of a stratified k-fold
over the n labels predicts it). A random pick i is a fair draw from the pool it was drawn
from; that pool has since lost other random picks (which leave it as it was, on average)
and ``a_i`` chosen picks (least sure, or reached with the arrows), whose ``c`` is known;
so the accuracy on the ``u`` models still unrated is estimated by

    e_i = c_i + a_i (c_i - mean of c over those a_i chosen picks) / u

(a difference estimator: the random pick's estimate for its pool, less the chosen picks
taken out of it). The curve shows the mean of ``e_i`` over the random picks (their count
``n_scored``), +- its standard error. In a random order there are no chosen picks and it
is the out-of-fold accuracy. Assumed, and said where shown: skips leave like random picks
(a rater may skip the hard ones); a model skipped and labelled later counts at its label's
time; labels given before the store recorded picks count as random.

In that simulation the curve shows 0.929 and 0.869. Over 48 more databases
(``benchmarks/learning_curve.py``, seeds 1000 to 1047) its bias was -0.022 +- 0.013
(active) and -0.003 +- 0.007 (random order), and in groups of 8 databases (the test's size)
it ranked active above random in 5 of 6 (active - random: -0.023 to +0.094; truth: +0.065
to +0.088): with about 20 random picks a rater's estimate is good to about +-0.07, so
near orders may swap; read its standard error. The random picks uncorrected ranked it
above random in 4 of 6 (-0.044 to +0.046): the start and the early random picks are drawn
from nearly every model, the hard ones included that the active picks take later; every
label cross-validated, in none (-0.181 to -0.133).

Chosen over plain importance weighting and over a validation set asked up front: a
least-sure pick is picked with probability about ``1 - random_fraction``, so its weight is
next to nothing and weighting the picks is the random picks' estimate again, with their
bias; a validation set asked up front costs the rater labels the assessor is not fit on.
With 20% random picks the estimate rests on about a third of the labels (10 start + 20% of
the rest): its standard error is shown.
"""

from __future__ import annotations

import hashlib
import numbers

import numpy as np
import pandas as pd

from ml4ml import dims
from ml4ml.errors import InputError

__all__ = ["ASSESSOR", "ESTIMATOR", "N_START", "PENALTY_C", "RANDOM_FRACTION", "ActiveOrder",
           "labelling_features", "learning_curve", "learning_curve_png",
           "rater_learning_curve"]

ASSESSOR = "logistic"
PENALTY_C = 0.03  # the default assessor's inverse L2 penalty (scikit-learn's default: 1)
N_START = 10
RANDOM_FRACTION = 0.2
CURVE_COLUMNS = ("n_labels", "n_scored", "n_folds", "accuracy", "se")
ESTIMATOR = ("accuracy on the models not yet labelled, estimated from your random picks "
             "(the shared overlap, the random start, the random picks; in a random order "
             "every label), each scored out of fold (stratified 5-fold over your labels) and "
             "corrected for the hard models the assessor's own picks took out of the pool "
             "since it was drawn; the assessor's picks (least sure) and models reached with "
             "the arrows are fit on, never scored, as they are not a random sample of the "
             "models left")


# ----------------------------------------------------------------------------- features
def labelling_features(path, transform: str, *, suite=None) -> pd.DataFrame:
    """The store's feature set: DataFrame (n_models, n_features), index ``mid``.

    The feature set and split of the store's assessment of ``transform`` (its attrs
    ``feature_set``, ``split``, ``suite``) when there is one, else paper80 on the correctly
    classified samples; one row per measured model, the numeric feature columns only (not
    the robust accuracy, which only its baseline reads). ``df.attrs`` records
    ``feature_set`` and ``split``.
    """
    from ml4ml import store
    from ml4ml.assess.stage import ROBUST, feature_table

    set_, split = "paper80", "correct"
    group = store.assess_group(transform)
    if store.group_exists(path, group):
        attrs = store.open_group(path, group).attrs
        set_ = str(attrs.get("feature_set") or set_)
        split = str(attrs.get("split") or split)
        suite = suite or attrs.get("suite") or None
    table, _ = feature_table(path, transform, suite=suite, set=set_, split=split)
    columns = [c for c in table.columns if c not in (dims.MID, "holdout", "partition", ROBUST)]
    frame = table.set_index(dims.MID)[columns].astype(np.float64)
    frame.index = frame.index.astype(str)
    frame.attrs.update(feature_set=set_, split=split)
    return frame


def _assessor(assessor, seed):
    from sklearn.base import clone

    from ml4ml.assess.estimators import make_assessor

    if assessor is None:
        return make_assessor(ASSESSOR, seed).set_params(model__C=PENALTY_C)
    if isinstance(assessor, str):
        return make_assessor(assessor, seed)
    if not hasattr(assessor, "predict_proba"):
        raise InputError(f"the assessor must have predict_proba; got "
                         f"{type(assessor).__name__}", field="assessor")
    return clone(assessor)


def _fit(assessor, seed, X, y):
    """The assessor fit on X (n_labels, n_features), y (n_labels,); one BLAS/OpenMP thread
    (a few dozen rows: more threads only cost, 10x on a busy 2-core machine)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _assessor(assessor, seed).fit(X, y)


def _proba(model, X) -> np.ndarray:
    """(n_samples,) P(label 1) by a fitted ``model``."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return model.predict_proba(X)[:, list(model.classes_).index(1)]


def _check_fraction(value, name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value <= 1:
        raise InputError(f"The {name!r} parameter must be a number in [0, 1]. Got {value!r} "
                         "instead.", field=name)
    return float(value)


def _check_count(value, name, low=0):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise InputError(f"The {name!r} parameter must be an int >= {low}. Got {value!r} "
                         "instead.", field=name)
    return int(value)


# ----------------------------------------------------------------------------- order
class ActiveOrder:
    """Which model a rater labels next: a seeded random start, then mostly the least sure.

    Parameters
    ----------
    features : DataFrame (n_models, n_features), index mid (``labelling_features``).
    n_start : int, default 10. Labels asked in random order before the assessor is used
        (and for as long as the labels have only one class).
    random_fraction : float in [0, 1], default 0.2. Probability that a later pick is a
        random unlabelled model rather than the least sure one.
    seed : int, default 0. With ``rater`` and the number of labels so far, it fixes every
        random draw: the same labels give the same next model (a reload shows the same).
    rater : str, default "". Each rater gets draws of their own.
    assessor : None, str or estimator. None (default): logistic regression with
        ``C=PENALTY_C`` (module docstring); a name of ``ASSESSORS`` (built with
        ``make_assessor(name, seed)``, its defaults); or an estimator with
        ``predict_proba`` (cloned).
    """

    def __init__(self, features: pd.DataFrame, *, n_start: int = N_START,
                 random_fraction: float = RANDOM_FRACTION, seed: int = 0, rater: str = "",
                 assessor=None):
        self.features = features
        self.n_start = _check_count(n_start, "n_start")
        self.random_fraction = _check_fraction(random_fraction, "random_fraction")
        self.seed = _check_count(seed, "seed")
        self.rater = str(rater)
        self.assessor = assessor
        self._mids = np.asarray(features.index.astype(str), dtype=object)
        self._X = features.to_numpy(np.float64)
        self._row = {m: k for k, m in enumerate(self._mids)}
        key = hashlib.sha256(f"{self.seed}:{self.rater}".encode()).digest()
        self._key = int.from_bytes(key[:8], "little")

    def _rng(self, n_labelled: int) -> np.random.Generator:
        return np.random.default_rng([self._key, int(n_labelled)])

    def random_steps(self, n: int) -> np.ndarray:
        """(n,) bool: whether the pick offered after k = 0 .. n-1 labels is random (the
        start, or the coin with probability ``random_fraction``); the start counts as
        random even where only one class delays the assessor beyond it."""
        coin = np.array([self._rng(k).random() < self.random_fraction for k in range(n)],
                        dtype=bool)
        return coin | (np.arange(n) < self.n_start)

    def probabilities(self, labels: dict) -> pd.Series:
        """P(invariant) of every model by the assessor fit on ``labels`` ({mid: 0/1}),
        Series (n_models,) indexed by mid; needs both classes."""
        rows, y = self._labelled(labels)
        if len(np.unique(y)) < 2:
            raise InputError("the assessor needs labels of both classes; got "
                             f"{len(y)} label(s) of one class", field="labels")
        model = _fit(self.assessor, self.seed, self._X[rows], y)
        return pd.Series(_proba(model, self._X), index=self._mids, name="p_invariant")

    def _labelled(self, labels: dict) -> tuple[np.ndarray, np.ndarray]:
        pairs = [(self._row[str(m)], int(v)) for m, v in labels.items()
                 if str(m) in self._row and int(v) in (0, 1)]
        rows = np.array([r for r, _ in pairs], dtype=np.int64)
        return rows, np.array([v for _, v in pairs], dtype=np.int64)

    def next(self, labels: dict, skipped=()) -> tuple[str | None, str]:
        """(mid, reason) of the model to ask about next; (None, reason) when none is left.

        labels : {mid: 0 or 1} given so far (other values count as unlabelled; models
            not in ``features`` are ignored).
        skipped : mids the rater skipped; they are offered once no other is left.
        reason : "random start (k of n_start)", "random (p=0.20)", or
            "least sure, p=0.47" (the assessor's probability of "invariant"); prefixed by
            "skipped before; " for a skipped model.
        """
        rows, y = self._labelled(labels)
        done = np.zeros(len(self._mids), dtype=bool)
        done[rows] = True
        skip = np.isin(self._mids, np.asarray([str(m) for m in skipped], dtype=object))
        candidates = np.flatnonzero(~done & ~skip)
        prefix = ""
        if candidates.size == 0:
            candidates, prefix = np.flatnonzero(~done), "skipped before; "
        if candidates.size == 0:
            return None, "every model is labelled"
        n = len(rows)
        rng = self._rng(n)
        coin, draw = rng.random(), int(rng.integers(candidates.size))
        if n < self.n_start or len(np.unique(y)) < 2:
            why = (f"random start ({n + 1} of {self.n_start})" if n < self.n_start
                   else "random start (one class so far)")
            return str(self._mids[candidates[draw]]), prefix + why
        if coin < self.random_fraction:
            return (str(self._mids[candidates[draw]]),
                    prefix + f"random (p={self.random_fraction:.2f})")
        p = _proba(_fit(self.assessor, self.seed, self._X[rows], y), self._X[candidates])
        best = int(np.argmin(np.abs(p - 0.5)))  # first of ties: the features' order
        return str(self._mids[candidates[best]]), prefix + f"least sure, p={p[best]:.2f}"


# ----------------------------------------------------------------------------- curves
def learning_curve(features: pd.DataFrame, ordered_ratings, *, scored=None,
                   min_labels: int = 10, step: int = 5, folds: int = 5, seed: int = 0,
                   assessor=None) -> pd.DataFrame:
    """The assessor's accuracy on the models not yet labelled, estimated from the random
    picks among the first n labels, for n = min_labels, min_labels + step, ..., and the
    last n (``ESTIMATOR``; the module docstring says why and how).

    features : DataFrame (n_models, n_features), index mid: every model that can be
        picked (the pool).
    ordered_ratings : [(mid, rating), ...] in the order given, each model once: rating 0
        or 1 a label, -1 a skip (the model left the pool without a label); mids not in
        ``features`` and other values are left out.
    scored : (len(ordered_ratings),) bool, which labels are random picks (scored; the
        others, the chosen picks, are fit on only); default: every label (a random order).
        Skips count as random whatever it says.
    Returns DataFrame (n_points, 5): ``n_labels``; ``n_scored``, the random picks among
    them; ``n_folds``, the folds of a stratified k-fold over the n labels
    (``StratifiedKFold(shuffle=True, random_state=seed)``), ``folds`` or fewer where a
    class has fewer labels (0: a class has < 2, no estimate); ``accuracy``, the mean over
    the random picks i of ``e_i = c_i + a_i (c_i - mean of c over A_i) / u``, clipped to
    [0, 1], where ``c`` is a label's out-of-fold correctness (1 if the assessor fit on the
    other folds predicts it), ``A_i`` the chosen picks labelled after i (``a_i`` of them)
    and ``u`` the models not yet rated after the n-th label; with every label scored it
    is the out-of-fold accuracy (as ``cross_val_predict``); ``se``, the standard error of
    that mean, ``std(e, ddof=1) / sqrt(n_scored)``. NaN where there is no estimate (fewer
    than 2 random picks; no model left while chosen picks need correcting). Empty with
    fewer than ``min_labels`` labels.
    """
    min_labels = _check_count(min_labels, "min_labels", 2)
    step = _check_count(step, "step", 1)
    folds = _check_count(folds, "folds", 2)
    ordered_ratings = list(ordered_ratings)
    scored = (np.ones(len(ordered_ratings), dtype=bool) if scored is None
              else np.asarray(scored, dtype=bool))
    if scored.shape != (len(ordered_ratings),):
        raise InputError(f"'scored' must have one entry per rating ({len(ordered_ratings)}); "
                         f"got shape {scored.shape}", field="scored")
    row = {m: k for k, m in enumerate(features.index.astype(str))}
    events = [k for k, (m, v) in enumerate(ordered_ratings)
              if str(m) in row and int(v) in (0, 1, -1)]
    labelled = [k for k in events if int(ordered_ratings[k][1]) in (0, 1)]
    X = features.to_numpy(np.float64)[[row[str(ordered_ratings[k][0])] for k in labelled]]
    y = np.array([int(ordered_ratings[k][1]) for k in labelled], dtype=np.int64)
    random_pick = scored[labelled]
    rated = np.searchsorted(events, labelled) + 1  # models rated by each label, skips too
    sizes = list(range(min_labels, len(y) + 1, step))
    if sizes and sizes[-1] != len(y):
        sizes.append(len(y))
    out = []
    for n in sizes:
        k = min(folds, int(np.bincount(y[:n], minlength=2).min()))
        left = len(row) - int(rated[n - 1])
        estimate = _corrected(X[:n], y[:n], random_pick[:n], left, k, seed, assessor) \
            if k >= 2 else None
        accuracy, se = estimate or (np.nan, np.nan)
        out.append((n, int(random_pick[:n].sum()), k if k >= 2 else 0, accuracy, se))
    frame = pd.DataFrame(out, columns=list(CURVE_COLUMNS))
    return frame.astype({"n_labels": np.int64, "n_scored": np.int64, "n_folds": np.int64})


def _corrected(X, y, random_pick, left, folds, seed, assessor):
    """(accuracy, se) of ``learning_curve`` on these n labels, or None."""
    from sklearn.model_selection import StratifiedKFold

    picks = np.flatnonzero(random_pick)
    if picks.size < 2:
        return None
    right = np.zeros(len(y))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        right[test] = _fit(assessor, seed, X[train], y[train]).predict(X[test]) == y[test]
    chosen = ~random_pick
    after = np.cumsum(chosen[::-1])[::-1]  # chosen picks at or after each label
    after_right = np.cumsum((right * chosen)[::-1])[::-1]
    a, total = after[picks], after_right[picks]
    if left <= 0 and a.any():
        return None  # no model left to correct towards
    e = right[picks] + np.divide(a * right[picks] - total, max(left, 1))
    return float(np.clip(e.mean(), 0.0, 1.0)), float(e.std(ddof=1) / np.sqrt(e.size))


def rater_learning_curve(path, transform: str, rater: str | None = None, *, suite=None,
                         seed: int = 0, **curve) -> pd.DataFrame:
    """``learning_curve`` of a rater's ratings in the order they were given (``rated_at``;
    skips included: they leave the pool), scored on the rater's random picks (the store's
    ``pick``: ``store.labels.RANDOM_PICKS``; a rating from before picks were recorded
    counts as random, and ``attrs["unrecorded"]`` says how many); or with ``rater=None``
    of the current label source in a seeded random order, every label scored (a source
    is written whole: it has no order of its own).

    curve : keywords of ``learning_curve`` (min_labels, step, folds, assessor).
    Returns its DataFrame with ``attrs``: ``who`` ("rater ann" or "source recipe"),
    ``order`` (how the labels were ordered), ``n_labels`` (usable labels in all),
    ``n_scored`` (the random picks among them), ``picks`` ({kind: labels}, the labels by
    how they were picked, "unrecorded" included), ``unrecorded`` and ``skipped``.
    StoreError without labels (``rater=None``); InputError for an unknown rater or one
    without ratings.
    """
    from ml4ml.assess.stage import stored_labels
    from ml4ml.store.labels import RANDOM_PICKS, read_labels

    features = labelling_features(path, transform, suite=suite)
    if rater is None:
        source, by_mid = stored_labels(path, transform)
        mids = sorted(m for m, v in by_mid.items() if v in (0, 1) and m in features.index)
        order = np.random.default_rng(seed).permutation(len(mids))
        ordered = [(mids[k], by_mid[mids[k]]) for k in order]
        kinds = np.full(len(ordered), "seeded", dtype=object)
        who = f"source {source}"
        how = f"a seeded random order (seed {seed}): a source has no order of its own"
    else:
        ordered, kinds = _rater_ratings(path, transform, rater, features, read_labels)
        who, how = f"rater {rater}", "the order the ratings were given (rated_at)"
    label = np.array([v in (0, 1) for _, v in ordered], dtype=bool)
    unrecorded = (kinds == "") & label
    scored = (np.isin(kinds, list(RANDOM_PICKS)) | unrecorded) & label
    frame = learning_curve(features, ordered, scored=scored, seed=seed, **curve)
    names, counts = np.unique(np.where(unrecorded, "unrecorded", kinds)[label].astype(str),
                              return_counts=True)
    frame.attrs.update(who=who, order=how, n_labels=int(label.sum()),
                       n_scored=int(scored.sum()), skipped=int((~label).sum()),
                       picks={str(k): int(c) for k, c in zip(names, counts)},
                       unrecorded=int(unrecorded.sum()))
    return frame


def _rater_ratings(path, transform, rater, features, read_labels):
    """([(mid, rating)] of the rater's labels and skips of models in ``features`` in the
    order given, their pick kinds (object array, "" unrecorded))."""
    from ml4ml.store.labels import pick_names

    ds = read_labels(path, transform)
    raters = [] if ds is None else [str(r) for r in ds["rater"].values]
    if rater not in raters:
        raise InputError(f"unknown rater {rater!r}; the store has ratings by "
                         f"{', '.join(raters) or 'nobody yet'}", file=path, field="--rater")
    row = ds.sel(rater=rater)
    mids = np.asarray(ds[dims.MID].values).astype(str)
    rating = np.asarray(row["rating"].values, dtype=np.int64)
    when = np.asarray(row["rated_at"].values)
    pool = np.isin(mids, features.index.to_numpy(str))
    if not (np.isin(rating, (0, 1)) & pool).any():
        raise InputError(f"rater {rater!r} has rated no measured model of {transform!r} "
                         "yet", file=path, field="--rater")
    keep = pool & (np.isin(rating, (0, 1)) | ((rating == -1) & ~np.isnat(when)))
    order = np.flatnonzero(keep)[np.argsort(when[keep], kind="stable")]
    kinds = pick_names(np.asarray(row["pick"].values))[order]
    return list(zip(mids[order].tolist(), rating[order].tolist())), kinds


def learning_curve_png(file, curves: dict, *, title: str = "") -> None:
    """Write a PNG of learning curves: {name: ``learning_curve`` frame}, each its
    estimated accuracy against the number of labels, shaded +- its standard error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.0), dpi=100)
    for name, frame in curves.items():
        x, a, se = (frame[c].to_numpy(np.float64) for c in ("n_labels", "accuracy", "se"))
        line, = ax.plot(x, a, marker="o", markersize=3, label=name)
        ax.fill_between(x, a - se, a + se, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("expert labels (the first n, in the order given)", fontsize=11)
    ax.set_ylabel("accuracy on the models not yet labelled", fontsize=10)
    ax.tick_params(labelsize=10)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=10, title="from the random picks; band: +- s.e.", title_fontsize=10,
              loc="lower right")
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(file)
    plt.close(fig)
