"""Assessors and baselines: scikit-learn estimators that tell invariant models (1) from variant (0).

The paper's four assessors are a decision tree, a random forest, AdaBoost (scikit-learn
defaults, ``random_state`` from a seed) and ``L2LinearThreshold`` (linear regression on
row-wise L2-normalised features, thresholded at 0.5). Added: logistic regression (after a
``StandardScaler``) and gradient boosting. Baselines: ``FeatureThreshold`` on the robust
accuracy column, ``FeatureThreshold`` on the best single feature, and the majority class.

NaN policy
----------
A model with a NaN feature must not crash an assessor. Every estimator that
``make_assessor`` and ``make_baseline`` build is a ``Pipeline`` whose first step is
``SimpleImputer(strategy="median", keep_empty_features=True)``: a NaN is replaced by the
median of that feature over the *training* models of the fold (a feature that is NaN for
every training model becomes 0, and stays a column, so feature positions never shift).
The bare estimators ``L2LinearThreshold`` and ``FeatureThreshold`` reject NaN and infinity
(scikit-learn's usual validation); infinities are rejected everywhere.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import AdaBoostClassifier, GradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from ml4ml.errors import InputError

__all__ = ["L2LinearThreshold", "FeatureThreshold", "ASSESSORS", "BASELINES", "METHODS",
           "make_assessor", "make_baseline", "make_method", "method_kind"]

ASSESSORS = ("decision_tree", "random_forest", "adaboost", "linear", "logistic",
             "gradient_boosting")
BASELINES = ("baseline_robust_accuracy", "baseline_best_feature", "baseline_majority")
METHODS = ASSESSORS + BASELINES


def _binary_classes(estimator, y):
    """``classes_`` (sorted) and ``y`` encoded 0/1 (1 = ``classes_[1]``); binary or one class."""
    check_classification_targets(y)
    y_type = type_of_target(y, input_name="y", raise_unknown=True)
    if y_type not in ("binary",):
        raise InputError(
            f"Only binary classification is supported. The type of the target is {y_type}.",
            field="y", hint=f"{type(estimator).__name__} predicts 1 (invariant) or 0 (variant)",
        )
    classes, encoded = np.unique(y, return_inverse=True)
    return classes, encoded.astype(np.int64)


def _tags_binary(tags):
    tags.classifier_tags.multi_class = False
    return tags


def l2_normalise_rows(X):
    """Each row of ``X`` (n_samples, n_features) divided by its L2 norm; a zero row stays zero."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    safe = np.where(norms > 0, norms, 1.0)
    return X / safe[:, None]


class L2LinearThreshold(ClassifierMixin, BaseEstimator):
    """The paper's linear assessor: linear regression on L2-normalised rows, thresholded.

    Each row of X is divided by its L2 norm (a zero row stays zero); an ordinary least
    squares regression with intercept (``sklearn.linear_model.LinearRegression``) is fit
    to the labels encoded 0/1 (1 = ``classes_[1]``); a sample is predicted ``classes_[1]``
    where the regression output is >= ``threshold``.

    Parameters
    ----------
    threshold : float, default=0.5
        Regression output at and above which a sample is predicted ``classes_[1]``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,), the sorted labels (two, or one if fit on one).
    coef_ : ndarray of shape (n_features,), regression weights on the normalised rows.
    intercept_ : float, regression intercept.
    n_features_in_ : int; ``feature_names_in_`` when fit on a DataFrame with string columns.
    """

    def __init__(self, threshold=0.5):
        self.threshold = threshold

    def __sklearn_tags__(self):
        return _tags_binary(super().__sklearn_tags__())

    def fit(self, X, y):
        """Fit on X (n_samples, n_features) and binary labels y (n_samples,); returns self."""
        if not isinstance(self.threshold, numbers.Real) or isinstance(self.threshold, bool) \
                or not np.isfinite(self.threshold):
            raise InputError(
                f"The 'threshold' parameter of L2LinearThreshold must be a finite real number. "
                f"Got {self.threshold!r} instead.", field="threshold",
            )
        X, y = validate_data(self, X, y, dtype=np.float64)
        self.classes_, target = _binary_classes(self, y)
        regression = LinearRegression().fit(l2_normalise_rows(X), target.astype(np.float64))
        self.coef_ = regression.coef_
        self.intercept_ = float(regression.intercept_)
        return self

    def decision_function(self, X):
        """Regression output minus ``threshold``, shape (n_samples,); >= 0 means ``classes_[1]``."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return l2_normalise_rows(X) @ self.coef_ + self.intercept_ - self.threshold

    def predict(self, X):
        """Predicted labels, shape (n_samples,)."""
        check_is_fitted(self)
        scores = self.decision_function(X)
        if len(self.classes_) == 1:
            return np.full(scores.shape[0], self.classes_[0])
        return self.classes_[(scores >= 0).astype(np.int64)]


def _midpoints(lower, upper):
    """Thresholds strictly above ``lower`` and at most ``upper`` (elementwise, lower < upper)."""
    with np.errstate(over="ignore", invalid="ignore"):
        mid = lower + (upper - lower) / 2
    return np.where(np.isfinite(mid) & (mid > lower) & (mid <= upper), mid, upper)


def best_thresholds(X, target):
    """For every column of X, the threshold and direction that maximise training accuracy.

    Parameters
    ----------
    X : ndarray (n_samples, n_features), finite.
    target : ndarray (n_samples,) of 0/1.

    Returns
    -------
    correct : int ndarray (n_features,), training samples classified correctly.
    threshold : float ndarray (n_features,).
    direction : int ndarray (n_features,), 0 for "predict 1 where x >= threshold", 1 for
        "predict 1 where x < threshold".

    Candidates are ``-inf`` (every sample on the ``>=`` side) and the midpoints between
    consecutive distinct values of the column. Ties go to the smallest threshold, then to
    ``>=``. Vectorised: one sort per column and cumulative counts, no loop over samples.
    """
    n_samples, n_features = X.shape
    order = np.argsort(X, axis=0, kind="stable")
    xs = np.take_along_axis(X, order, axis=0)
    ys = target[order]
    ones_before = np.zeros((n_samples, n_features), dtype=np.int64)
    np.cumsum(ys[:-1], axis=0, out=ones_before[1:])
    zeros_before = np.arange(n_samples)[:, None] - ones_before
    total_ones = ys.sum(axis=0)
    # split before sorted position i: ">=" predicts 1 from i on, "<" predicts 1 before i
    correct_ge = zeros_before + (total_ones - ones_before)
    correct = np.stack([correct_ge, n_samples - correct_ge], axis=1)  # (i, direction, feature)
    valid = np.ones((n_samples, n_features), dtype=bool)
    valid[1:] = xs[1:] > xs[:-1]
    correct = np.where(valid[:, None, :], correct, -1)
    flat = correct.reshape(2 * n_samples, n_features)
    best = np.argmax(flat, axis=0)  # first maximum: smallest threshold, then ">="
    position, direction = np.divmod(best, 2)
    columns = np.arange(n_features)
    lower = xs[np.maximum(position - 1, 0), columns]
    upper = xs[position, columns]
    threshold = np.where(position == 0, -np.inf, _midpoints(lower, upper))
    return flat[best, columns], threshold, direction


class FeatureThreshold(ClassifierMixin, BaseEstimator):
    """One-feature threshold classifier: the robust-accuracy and best-single-feature baselines.

    On ``fit`` it finds, on one feature column, the threshold and direction that maximise
    training accuracy: predict ``classes_[1]`` where ``x >= threshold_`` (``direction_ ==
    ">="``) or where ``x < threshold_`` (``"<"``). Candidate thresholds are ``-inf`` and the
    midpoints between consecutive distinct training values. Ties go to the smallest
    threshold, then to ``">="``; with ``feature=None``, to the lowest column index.

    Parameters
    ----------
    feature : int, str or None, default=None
        The column: an index, or a column name when fit on a DataFrame. ``None`` picks the
        single best feature on the training data (the "best single feature" baseline).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,), sorted labels.
    feature_index_ : int, the column used.
    threshold_ : float.
    direction_ : str, ">=" or "<".
    train_accuracy_ : float, accuracy of the rule on the training data.
    n_features_in_ : int; ``feature_names_in_`` when fit on a DataFrame with string columns.
    """

    def __init__(self, feature=None):
        self.feature = feature

    def __sklearn_tags__(self):
        tags = _tags_binary(super().__sklearn_tags__())
        # a rule on a fixed column scores only as well as that column allows
        tags.classifier_tags.poor_score = self.feature is not None
        return tags

    def _feature_index(self):
        feature, n_features = self.feature, self.n_features_in_
        if feature is None:
            return None
        if isinstance(feature, str):
            names = getattr(self, "feature_names_in_", None)
            if names is None:
                raise InputError(
                    f"feature {feature!r} is a column name, but X has no column names",
                    field="feature", hint="fit on a pandas DataFrame, or pass a column index",
                )
            matches = np.flatnonzero(np.asarray(names) == feature)
            if matches.size == 0:
                raise InputError(
                    f"feature {feature!r} is not a column of X; found {n_features} columns "
                    f"({', '.join(map(str, names[:5]))}{', ...' if n_features > 5 else ''})",
                    field="feature",
                )
            return int(matches[0])
        if isinstance(feature, numbers.Integral) and not isinstance(feature, bool):
            if not 0 <= feature < n_features:
                raise InputError(
                    f"feature index {feature} is out of range: X has n_features = {n_features}",
                    field="feature", hint=f"pass 0 ... {n_features - 1}",
                )
            return int(feature)
        raise InputError(
            f"The 'feature' parameter of FeatureThreshold must be an int, a str or None. "
            f"Got {feature!r} instead.", field="feature",
        )

    def fit(self, X, y):
        """Fit on X (n_samples, n_features) and binary labels y (n_samples,); returns self."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        self.classes_, target = _binary_classes(self, y)
        index = self._feature_index()
        columns = X if index is None else X[:, [index]]
        correct, threshold, direction = best_thresholds(columns, target)
        best = int(np.argmax(correct))  # first maximum: lowest column index
        self.feature_index_ = best if index is None else index
        self.threshold_ = float(threshold[best])
        self.direction_ = (">=", "<")[int(direction[best])]
        self.train_accuracy_ = float(correct[best]) / X.shape[0]
        return self

    def predict(self, X):
        """Predicted labels, shape (n_samples,)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        x = X[:, self.feature_index_]
        if len(self.classes_) == 1:
            return np.full(x.shape[0], self.classes_[0])
        positive = x >= self.threshold_ if self.direction_ == ">=" else x < self.threshold_
        return self.classes_[positive.astype(np.int64)]


def _imputed(*steps, pandas_out=False):
    """A Pipeline: median imputation (the NaN policy of this module), then ``steps``."""
    imputer = SimpleImputer(strategy="median", keep_empty_features=True)
    if pandas_out:
        imputer.set_output(transform="pandas")
    return Pipeline([("impute", imputer), *steps])


def _check_seed(seed):
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)
                             or seed < 0):
        raise InputError(f"seed must be a non-negative int or None; got {seed!r}", field="seed")
    return None if seed is None else int(seed)


def make_assessor(name: str, seed: int | None = 0):
    """A fresh, unfitted assessor ``name`` (one of ``ASSESSORS``) with ``random_state=seed``.

    Every assessor is a ``Pipeline`` whose first step is median imputation (module
    docstring, NaN policy); the model is the last step, named ``"model"``:

    - ``decision_tree``: ``DecisionTreeClassifier(random_state=seed)``
    - ``random_forest``: ``RandomForestClassifier(random_state=seed, n_jobs=1)``
    - ``adaboost``: ``AdaBoostClassifier(random_state=seed)``
    - ``linear``: ``L2LinearThreshold()`` (deterministic, no seed)
    - ``logistic``: ``StandardScaler()`` then ``LogisticRegression(max_iter=1000,
      random_state=seed)`` (``max_iter`` raised from 100 so that 80 features converge)
    - ``gradient_boosting``: ``GradientBoostingClassifier(random_state=seed)``

    All other parameters are scikit-learn defaults.
    """
    seed = _check_seed(seed)
    builders = {
        "decision_tree": lambda: DecisionTreeClassifier(random_state=seed),
        "random_forest": lambda: RandomForestClassifier(random_state=seed, n_jobs=1),
        "adaboost": lambda: AdaBoostClassifier(random_state=seed),
        "linear": lambda: L2LinearThreshold(),
        "logistic": lambda: LogisticRegression(max_iter=1000, random_state=seed),
        "gradient_boosting": lambda: GradientBoostingClassifier(random_state=seed),
    }
    if name not in builders:
        raise InputError(
            f"unknown assessor {name!r}; expected one of {', '.join(ASSESSORS)}",
            field="method", hint=f"baselines ({', '.join(BASELINES)}) come from make_baseline",
        )
    if name == "logistic":
        return _imputed(("scale", StandardScaler()), ("model", builders[name]()))
    return _imputed(("model", builders[name]()))


def make_baseline(name: str, robust_feature: int | str | None = None):
    """A fresh, unfitted baseline ``name`` (one of ``BASELINES``), median imputation first.

    - ``baseline_robust_accuracy``: ``FeatureThreshold(feature=robust_feature)``, the robust
      accuracy column (an index, or a name when fit on a DataFrame); required here.
    - ``baseline_best_feature``: ``FeatureThreshold(feature=None)``, the best single feature.
    - ``baseline_majority``: ``DummyClassifier(strategy="most_frequent")``.
    """
    if name not in BASELINES:
        raise InputError(
            f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}",
            field="method", hint=f"assessors ({', '.join(ASSESSORS)}) come from make_assessor",
        )
    if name == "baseline_robust_accuracy":
        if robust_feature is None:
            raise InputError(
                "baseline_robust_accuracy needs the robust accuracy column; got "
                "robust_feature=None", field="robust_feature",
                hint="pass its column name or index, or leave this baseline out",
            )
        return _imputed(("model", FeatureThreshold(feature=robust_feature)),
                        pandas_out=isinstance(robust_feature, str))
    if name == "baseline_best_feature":
        return _imputed(("model", FeatureThreshold()))
    return _imputed(("model", DummyClassifier(strategy="most_frequent")))


def make_method(name: str, seed: int | None = 0, robust_feature: int | str | None = None):
    """``make_assessor(name, seed)`` or ``make_baseline(name, robust_feature)``, by name."""
    if name in BASELINES:
        return make_baseline(name, robust_feature)
    if name in ASSESSORS:
        return make_assessor(name, seed)
    raise InputError(
        f"unknown method {name!r}; expected one of {', '.join(METHODS)}", field="method",
    )


def method_kind(name: str) -> str:
    """"baseline" for ``BASELINES`` and any name starting with "baseline", else "assessor"."""
    return "baseline" if str(name).startswith("baseline") else "assessor"
