"""The paper's fold scheme as a scikit-learn cross-validation splitter.

``ProtocolSplit`` yields the (train, test) index pairs of ``run_protocol``: per repeat,
the hold-out models form one test fold and the regular models are split at random into
two; every fold is tested once, trained on the other two. Hold-out membership is passed
as ``groups``, so the splitter works wherever scikit-learn takes ``cv=`` with groups::

    from sklearn.model_selection import cross_validate
    cv = ProtocolSplit(n_repeats=10, random_state=0)
    cross_validate(LogisticRegression(), X, y, groups=holdout, cv=cv)

Seeding (the protocol's, so stored results are reproduced exactly): repeat ``r``
shuffles the regular models' indices with ``numpy.random.default_rng([random_state,
r]).permutation``; the first ``ceil(n_regular / 2)`` shuffled models form fold 1
(``regular_a``), the rest fold 2 (``regular_b``); fold 0 is the hold-out models.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.model_selection import BaseCrossValidator
from sklearn.model_selection._split import GroupsConsumerMixin

from ml4ml.errors import InputError

__all__ = ["ProtocolSplit", "FOLD_NAMES"]

FOLD_NAMES = ("holdout", "regular_a", "regular_b")


def _holdout_groups(groups) -> np.ndarray:
    """``groups`` as a bool vector (true: hold-out model), or one clear InputError."""
    if groups is None:
        raise InputError("ProtocolSplit needs groups: true (or 1) for hold-out models, false "
                         "(or 0) for regular ones", field="groups",
                         hint="pass groups=holdout to split, cross_validate or fit")
    values = np.asarray(groups)
    if values.ndim != 1:
        raise InputError(f"groups must be one value per model; got shape {values.shape}",
                         field="groups")
    if values.dtype != bool:
        ok = np.isin(values, (0, 1)) if values.dtype.kind in "biuf" else np.zeros(1, bool)
        if not ok.all():
            raise InputError("groups must be boolean or 0/1 (1: hold-out model); found "
                             f"{sorted({str(v) for v in values.ravel()})[:5]}", field="groups")
        values = values.astype(bool)
    if not values.any() or (~values).sum() < 2:
        raise InputError(
            f"the protocol needs at least 1 hold-out model and 2 regular models; got "
            f"{int(values.sum())} and {int((~values).sum())}", field="groups")
    return values


class ProtocolSplit(GroupsConsumerMixin, BaseCrossValidator):
    """The paper's three folds per repeat: hold-out models, and two random regular halves.

    Parameters
    ----------
    n_repeats : int >= 1, number of random splits of the regular models.
    random_state : int >= 0, the protocol's ``seed`` (module docstring); a fixed int, so
        that every call of ``split`` yields the same folds.

    ``split(X, y, groups)`` yields ``3 * n_repeats`` pairs ``(train, test)`` of sorted
    index arrays, repeat-major, folds in the order holdout, regular_a, regular_b (that of
    ``FOLD_NAMES`` and of ``run_protocol``'s ``fold`` dim). ``groups`` (n_samples,) is
    true or 1 for hold-out models.
    """

    def __init__(self, n_repeats=10, *, random_state=0):
        self.n_repeats = n_repeats
        self.random_state = random_state

    def _check_params(self):
        for name, value, low in (("n_repeats", self.n_repeats, 1),
                                 ("random_state", self.random_state, 0)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) \
                    or value < low:
                raise InputError(f"The '{name}' parameter of ProtocolSplit must be an int >= "
                                 f"{low}. Got {value!r} instead.", field=name)

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of (train, test) pairs: 3 per repeat."""
        self._check_params()
        return len(FOLD_NAMES) * int(self.n_repeats)

    def test_folds(self, groups) -> np.ndarray:
        """Test fold of every model in every repeat: int8 array (n_repeats, n_samples).

        0: hold-out, 1: regular_a, 2: regular_b (seeding in the module docstring).
        """
        self._check_params()
        holdout = _holdout_groups(groups)
        regular = np.flatnonzero(~holdout)
        first = (regular.size + 1) // 2
        folds = np.zeros((int(self.n_repeats), holdout.size), dtype=np.int8)
        for repeat in range(int(self.n_repeats)):
            shuffled = np.random.default_rng([int(self.random_state), repeat]).permutation(
                regular)
            folds[repeat, shuffled[:first]] = 1
            folds[repeat, shuffled[first:]] = 2
        return folds

    def _iter_test_masks(self, X=None, y=None, groups=None):
        folds = self.test_folds(groups)
        if X is not None and len(X) != folds.shape[1]:
            raise InputError(f"groups has {folds.shape[1]} values but X has {len(X)} rows",
                             field="groups")
        for repeat_folds in folds:
            for fold in range(len(FOLD_NAMES)):
                yield repeat_folds == fold
