"""The paper's assessor protocol: three folds per repeat, hold-out models always one fold.

``run_protocol`` trains every method on two folds and tests it on the third, all three
ways, ``repeats`` times, and returns accuracy, F1, Cohen's kappa and permutation
importances as one ``xarray.Dataset`` (layout in ``run_protocol``'s docstring).

Policies
--------
- Seeds: repeat ``r`` splits the regular models with
  ``numpy.random.default_rng([seed, r]).permutation``; the first ``ceil(n_regular / 2)``
  shuffled models form fold ``regular_a``, the rest ``regular_b``. The estimators of fold
  ``f`` of repeat ``r`` get ``random_state = SeedSequence([seed, r, f, 1]).generate_state(1)``
  (every parameter whose name ends in ``random_state``), the permutations of its test rows
  ``SeedSequence([seed, r, f, 2])``; both are recorded (``model_seed``,
  ``permutation_seed``). A rerun gives identical numbers; more repeats leave the earlier
  ones unchanged.
- One training class: a method whose ``fit`` raises ``ValueError`` on a training part with
  a single class (logistic regression, gradient boosting) is replaced, for that fold, by a
  constant predictor of that class (``DummyClassifier(strategy="most_frequent")``) and the
  fold is flagged in ``fallback``; its permutation importances are then 0. Methods that
  fit one class (trees, forests, AdaBoost, the baselines) are left alone.
- Kappa is NaN where it is undefined: where the expected agreement is 1 (truth and
  prediction both constant and equal). F1 is that of class 1, 0 where undefined.
- Permutation importance: the drop in test accuracy when one feature column of the test
  fold is permuted, ``n_permutations`` times per feature; the permutations are those of
  ``sklearn.inspection.permutation_importance(..., n_repeats=n_permutations,
  random_state=permutation_seed)``, so one fold's numbers equal scikit-learn's. All
  permuted copies of the test rows are stacked into one matrix and predicted in one call.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr
from sklearn.base import clone
from sklearn.dummy import DummyClassifier

from ml4ml import dims
from ml4ml.assess.estimators import METHODS, make_method, method_kind
from ml4ml.assess.splitter import FOLD_NAMES, ProtocolSplit
from ml4ml.errors import InputError

__all__ = ["run_protocol", "FOLD_NAMES", "permutation_drops", "binary_metrics",
           "fold_assignment"]

_MODEL_STREAM, _PERMUTATION_STREAM = 1, 2

PROTOCOL = (
    "three folds per repeat: the hold-out models, and the regular models split at random "
    "into two folds of (nearly) equal size; every method is trained on two folds and tested "
    "on the third, all three ways; each estimator is cloned per fold"
)

# name -> (long_name, description), CF-style attrs of the result
_ATTRS = {
    "repeat": ("repeat", "index of the random split of the regular models"),
    "fold": ("test fold", "index of the fold tested (the other two are trained on)"),
    "fold_name": ("test fold name", "holdout: the hold-out models; regular_a/regular_b: the "
                  "two random halves of the regular models"),
    dims.ESTIMATOR: ("assessor or baseline", "name of the assessor or baseline "
                     "(ml4ml.assess.estimators)"),
    dims.ESTIMATOR_KIND: ("method kind", "assessor (learned from every feature) or baseline"),
    "feature": ("feature", "column of the feature table"),
    dims.MID: ("model id", "id of the model in the models table"),
    "accuracy": ("test accuracy", "fraction of the test fold's models classified correctly"),
    "f1": ("test F1 score", "F1 score of class 1 (invariant) on the test fold; 0 where "
           "precision and recall are both undefined"),
    "kappa": ("test Cohen's kappa", "Cohen's kappa between labels and predictions on the test "
              "fold; NaN where undefined (expected agreement 1)"),
    "fallback": ("constant fallback used", "true where the method failed to fit a training "
                 "part with a single class and a constant predictor of that class replaced it"),
    "n_train": ("training models", "number of models the methods were trained on"),
    "n_test": ("test models", "number of models in the test fold"),
    "model_seed": ("estimator seed", "random_state given to every estimator of the fold"),
    "permutation_seed": ("permutation seed", "random_state of the fold's permutations "
                         "(as in sklearn.inspection.permutation_importance)"),
    "test_fold": ("test fold of the model", "fold in which the model is tested in the repeat"),
    "prediction": ("prediction", "label predicted for the model in the repeat, by the method "
                   "trained on the two folds not containing the model"),
    "probability": ("predicted probability of invariant", "the method's predicted probability "
                    "of label 1 (invariant) for the model in the repeat, by the fit on the two "
                    "folds not containing it (predict_proba); NaN for a method without "
                    "probabilities (linear, the threshold baselines) and for untested models"),
    dims.LABEL: ("label", "label used for training and testing: 1 invariant, 0 variant"),
    "holdout": ("hold-out model", "true for hold-out models (always one fold)"),
    "importance": ("permutation importance", "mean drop in test accuracy when the feature's "
                   "column of the test fold is permuted, averaged over permutations, folds "
                   "and repeats"),
    "importance_std": ("permutation importance spread", "standard deviation (ddof=0) over "
                       "the repeats x folds of the per-fold mean drop in test accuracy"),
}


def _attrs(name):
    long_name, description = _ATTRS[name]
    return {"long_name": long_name, "description": description}


def _derived_seed(seed, repeat, fold, stream):
    state = np.random.SeedSequence([seed, repeat, fold, stream]).generate_state(1)
    return int(state[0])


def binary_metrics(y_true, y_pred):
    """Accuracy, F1 of class 1 and Cohen's kappa over the last axis, vectorised.

    Parameters
    ----------
    y_true, y_pred : 0/1 arrays (..., n_samples), broadcastable.

    Returns
    -------
    accuracy, f1, kappa : float arrays (...). F1 is 0 where undefined (no positive label
    and no positive prediction); kappa is NaN where undefined (expected agreement 1).
    """
    y_true = np.asarray(y_true).astype(bool)
    y_pred = np.asarray(y_pred).astype(bool)
    n = y_true.shape[-1] if y_true.ndim else 1
    tp = np.sum(y_true & y_pred, axis=-1)
    fp = np.sum(~y_true & y_pred, axis=-1)
    fn = np.sum(y_true & ~y_pred, axis=-1)
    tn = n - tp - fp - fn
    accuracy = (tp + tn) / n
    f1_denominator = 2 * tp + fp + fn
    f1 = np.where(f1_denominator > 0, 2 * tp / np.maximum(f1_denominator, 1), 0.0)
    # kappa = (po - pe) / (1 - pe) in integers: po = (tp+tn)/n, pe = chance / n**2
    chance = (tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)
    kappa_denominator = n * n - chance
    kappa = np.where(kappa_denominator > 0,
                     (n * (tp + tn) - chance) / np.where(kappa_denominator > 0,
                                                         kappa_denominator, 1), np.nan)
    return accuracy, f1.astype(np.float64), kappa


def _permutations(n_samples, n_repeats, random_state):
    """Row orders (n_repeats, n_samples) of sklearn's permutation_importance for any column.

    scikit-learn draws ``seed = RandomState(random_state).randint(2**31)``, and for every
    column shuffles ``arange(n)`` in place with ``RandomState(seed)`` once per repeat,
    re-permuting the already permuted column; the composition is replicated here.
    """
    seed = np.random.RandomState(random_state).randint(np.iinfo(np.int32).max + 1)
    generator = np.random.RandomState(seed)
    shuffling = np.arange(n_samples)
    order = np.arange(n_samples)
    orders = np.empty((n_repeats, n_samples), dtype=np.intp)
    for k in range(n_repeats):
        generator.shuffle(shuffling)
        order = order[shuffling]
        orders[k] = order
    return orders


def _permuted_stack(X, n_repeats, random_state):
    """X (n, p) on top of every permuted copy: ((1 + p * n_repeats) * n, p).

    Block 0 is X; block ``1 + j * n_repeats + k`` is X with column j in the k-th order.
    """
    n, p = X.shape
    orders = _permutations(n, n_repeats, random_state)
    stack = np.empty((1 + p * n_repeats, n, p), dtype=X.dtype)
    stack[:] = X
    permuted = stack[1:].reshape(p, n_repeats, n, p)
    columns = np.arange(p)
    permuted[columns, :, :, columns] = X[orders].transpose(2, 0, 1)
    return stack.reshape(-1, p)


def _drops(predictions, y, n_features, n_repeats):
    """Baseline accuracy and accuracy drops (n_features, n_repeats) from stacked predictions."""
    correct = (np.asarray(predictions).reshape(1 + n_features * n_repeats, -1) == y)
    accuracy = correct.mean(axis=1)
    return accuracy[0], (accuracy[0] - accuracy[1:]).reshape(n_features, n_repeats)


def permutation_drops(estimator, X, y, *, n_repeats=5, random_state=0):
    """Permutation importances of a fitted classifier, with one ``predict`` call.

    Parameters
    ----------
    estimator : fitted classifier.
    X : array (n_samples, n_features); y : labels (n_samples,).
    n_repeats : permutations per feature. random_state : int, as in scikit-learn.

    Returns
    -------
    baseline : float, accuracy on X.
    drops : float array (n_features, n_repeats), baseline minus accuracy with the feature's
        column permuted; equal to ``sklearn.inspection.permutation_importance(estimator, X,
        y, n_repeats=n_repeats, random_state=random_state).importances`` for accuracy.
    """
    X = np.asarray(X, dtype=np.float64)
    stack = _permuted_stack(X, n_repeats, random_state)
    return _drops(estimator.predict(stack), np.asarray(y), X.shape[1], n_repeats)


def fold_assignment(holdout, repeats, seed):
    """Test fold of every model in every repeat: int8 array (repeats, n_models).

    ``ProtocolSplit(repeats, random_state=seed).test_folds(holdout)``: fold 0 is the
    hold-out models; the regular models are shuffled with
    ``numpy.random.default_rng([seed, repeat])`` and the first ``ceil(n_regular / 2)`` form
    fold 1, the rest fold 2.
    """
    return ProtocolSplit(repeats, random_state=seed).test_folds(holdout)


def _feature_frame(X):
    """(values (n, p) float64, model ids (object), feature names (object)) from X."""
    if not isinstance(X, pd.DataFrame):
        values = np.asarray(X)
        if values.ndim != 2:
            raise InputError(f"X must be a table (models x features); got {values.ndim} dims",
                             field="X")
        X = pd.DataFrame(values, columns=[f"x{i}" for i in range(values.shape[1])])
    if dims.MID in X.columns:
        X = X.set_index(dims.MID)
    mids = np.asarray([str(mid) for mid in X.index], dtype=object)
    columns = np.asarray([str(column) for column in X.columns], dtype=object)
    if len(set(mids)) != mids.size:
        raise InputError("model ids of X are not unique", field=dims.MID)
    if len(set(columns)) != columns.size:
        raise InputError("feature names of X are not unique", field="X")
    if columns.size == 0 or mids.size == 0:
        raise InputError(f"X must have models and features; got shape {X.shape}", field="X")
    numeric = [pd.api.types.is_numeric_dtype(dtype) for dtype in X.dtypes]
    if not all(numeric):
        bad = [c for c, ok in zip(columns, numeric) if not ok]
        raise InputError(f"features must be numeric; non-numeric columns: {bad[:5]}", field="X",
                         hint="drop id and recipe columns; keep the feature table only")
    values = X.to_numpy(dtype=np.float64)
    infinite = np.isinf(values).any(axis=0)
    if infinite.any():
        raise InputError(
            f"features hold infinite values in columns {list(columns[infinite][:5])}",
            field="X", hint="replace them with NaN, which the assessors impute",
        )
    return values, mids, columns


def _model_vector(values, mids, name):
    """``values`` as a numpy vector in the row order of X (pandas Series aligned by index)."""
    if isinstance(values, pd.Series) and not isinstance(values.index, pd.RangeIndex):
        index = [str(i) for i in values.index]
        if set(index) != set(mids) or len(index) != len(mids):
            raise InputError(f"{name} is indexed by model ids that differ from X's",
                             field=name)
        values = pd.Series(values.to_numpy(), index=index).reindex(mids)
    array = np.asarray(values)
    if array.shape != (mids.size,):
        raise InputError(f"{name} must have one value per model ({mids.size}); got shape "
                         f"{array.shape}", field=name)
    return array


def _labels(y, mids):
    y = _model_vector(y, mids, "y")
    numeric = np.asarray(pd.to_numeric(pd.Series(y), errors="coerce"), dtype=np.float64)
    ok = np.isin(numeric, (0.0, 1.0))
    if not ok.all():
        found = sorted({str(v) for v in np.asarray(y)[~ok]})[:5]
        raise InputError(
            f"labels must be 0 (variant) or 1 (invariant); found {found}", field="y",
            hint="drop models whose label is unknown (-1) before assessing",
        )
    return numeric.astype(np.int8)


def _holdout(holdout, mids):
    holdout = _model_vector(holdout, mids, "holdout")
    if holdout.dtype != bool:
        raise InputError(f"holdout must be boolean; got dtype {holdout.dtype}", field="holdout")
    if not holdout.any() or (~holdout).sum() < 2:
        raise InputError(
            f"the protocol needs at least 1 hold-out model and 2 regular models; got "
            f"{int(holdout.sum())} and {int((~holdout).sum())}", field="holdout",
        )
    return holdout


def _robust_index(robust_feature, columns):
    if robust_feature is None:
        return None
    if isinstance(robust_feature, str):
        matches = np.flatnonzero(columns == robust_feature)
        if matches.size == 0:
            near = [c for c in columns if "robust" in c][:5]
            raise InputError(
                f"robust_feature {robust_feature!r} is not a column of X", field="robust_feature",
                hint=f"columns with 'robust' in the name: {near}" if near else None,
            )
        return int(matches[0])
    if isinstance(robust_feature, numbers.Integral) and not isinstance(robust_feature, bool) \
            and 0 <= robust_feature < columns.size:
        return int(robust_feature)
    raise InputError(f"robust_feature must be a column name or index of X; got "
                     f"{robust_feature!r}", field="robust_feature")


def _templates(methods, seed, robust_index):
    """(names, unfitted estimators) from method names or a mapping name -> estimator."""
    if isinstance(methods, str):
        raise InputError(f"methods must be a sequence of names; got the string {methods!r}",
                         field="methods", hint=f"e.g. methods=[{methods!r}]")
    if isinstance(methods, Mapping):
        names = [str(name) for name in methods]
        estimators = [clone(methods[name]) for name in methods]
    else:
        names = [str(name) for name in methods]
        estimators = [make_method(name, seed, robust_index) for name in names]
    if not names:
        raise InputError(f"methods is empty; expected some of {', '.join(METHODS)}",
                         field="methods")
    if len(set(names)) != len(names):
        raise InputError(f"methods repeat a name: {names}", field="methods")
    return names, estimators


def _seeded(template, seed):
    estimator = clone(template)
    keys = [key for key in estimator.get_params() if key.endswith("random_state")]
    if keys:
        estimator.set_params(**{key: seed for key in keys})
    return estimator


def _fit(estimator, X, y, name: str = "estimator", where: str = ""):
    """(fitted estimator, fallback flag): the single-class policy of the module docstring.

    Any other ValueError of ``fit`` (e.g. AdaBoost's "worse than random" on features that
    carry no information) is an InputError naming the method and the fold."""
    try:
        return estimator.fit(X, y), False
    except ValueError as exc:
        if np.unique(y).size != 1:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{name} cannot be fitted on {where or 'a training fold'}: "
                             f"{first}", field="methods",
                             hint="check that the features vary across models, or leave "
                                  "this method out") from None
        return DummyClassifier(strategy="most_frequent").fit(X, y), True


def _invariant_probability(estimator, X) -> np.ndarray:
    """(n_samples,) the fitted ``estimator``'s probability of class 1 (invariant); 0 where
    it never saw that class (a fit on one class)."""
    proba = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    classes = list(getattr(estimator, "classes_", []))
    return proba[:, classes.index(1)] if 1 in classes else np.zeros(len(X))


def run_protocol(X, y, holdout, *, methods, repeats=10, seed=0, robust_feature=None,
                 importance=True, n_permutations=5) -> xr.Dataset:
    """Train and test every method over the paper's three-fold protocol.

    Parameters
    ----------
    X : pandas.DataFrame (n_models, n_features), index the model ids (or a ``mid`` column,
        as ``ml4ml.measure.paper80`` returns, which becomes the index); numeric features,
        NaN allowed (imputed, see ``ml4ml.assess.estimators``), infinities not.
    y : array-like (n_models,) of 0/1 labels, in the row order of X (a pandas Series with
        model ids as index is aligned to X by id; one with a RangeIndex is positional).
    holdout : bool array-like (n_models,), true for hold-out models (aligned like y).
    methods : names from ``ASSESSORS`` and ``BASELINES``, or a mapping name -> unfitted
        estimator (a name starting with "baseline" counts as a baseline). Estimators are
        fit and asked to predict on float64 numpy arrays, columns in X's order.
    repeats : number of random splits of the regular models.
    seed : non-negative int; every random choice derives from it (module docstring).
    robust_feature : column name or index of the robust accuracy feature; required by
        ``baseline_robust_accuracy``.
    importance : compute permutation importances on the test folds.
    n_permutations : permutations per feature and test fold.

    Returns
    -------
    xarray.Dataset with
        accuracy, f1, kappa  (repeat, fold, estimator)  float64
        fallback             (repeat, fold, estimator)  bool
        n_train, n_test, model_seed, permutation_seed  (repeat, fold)  int64
        test_fold            (repeat, mid)           int8
        prediction           (repeat, mid, estimator)   int8
        probability          (repeat, mid, estimator)   float64: P(invariant) on the test
                             fold (predict_proba); NaN for methods without probabilities
        label, holdout       (mid,)                  int8, bool
        importance, importance_std  (feature, estimator)  float64   if ``importance``
        coords repeat (0..R-1), fold (0, 1, 2) with fold_name (holdout, regular_a,
        regular_b), estimator with method_kind (assessor/baseline), feature, mid.
    """
    values, mids, columns = _feature_frame(X)
    labels = _labels(y, mids)
    holdout = _holdout(holdout, mids)
    for name, value, low in (("repeats", repeats, 1), ("seed", seed, 0),
                             ("n_permutations", n_permutations, 1)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
            raise InputError(f"{name} must be an int >= {low}; got {value!r}", field=name)
    robust_index = _robust_index(robust_feature, columns)
    names, templates = _templates(methods, seed, robust_index)

    n_methods, n_features = len(names), columns.size
    splitter = ProtocolSplit(repeats, random_state=seed)
    test_fold = splitter.test_folds(holdout)
    shape = (repeats, len(FOLD_NAMES), n_methods)
    accuracy, f1, kappa = (np.empty(shape) for _ in range(3))
    fallback = np.zeros(shape, dtype=bool)
    counts = np.zeros((2, repeats, len(FOLD_NAMES)), dtype=np.int64)
    seeds = np.zeros((2, repeats, len(FOLD_NAMES)), dtype=np.int64)
    prediction = np.zeros((repeats, mids.size, n_methods), dtype=np.int8)
    probability = np.full((repeats, mids.size, n_methods), np.nan)
    has_proba = [hasattr(template, "predict_proba") for template in templates]
    fold_importance = np.zeros((repeats, len(FOLD_NAMES), n_features, n_methods))

    for split, (train, test) in enumerate(splitter.split(values, labels, holdout)):
        repeat, fold = divmod(split, len(FOLD_NAMES))
        x_train, y_train = values[train], labels[train]
        x_test, y_test = values[test], labels[test]
        model_seed = _derived_seed(seed, repeat, fold, _MODEL_STREAM)
        permutation_seed = _derived_seed(seed, repeat, fold, _PERMUTATION_STREAM)
        counts[:, repeat, fold] = train.size, test.size
        seeds[:, repeat, fold] = model_seed, permutation_seed
        rows = (_permuted_stack(x_test, n_permutations, permutation_seed)
                if importance else x_test)
        for m, template in enumerate(templates):
            estimator, fallback[repeat, fold, m] = _fit(
                _seeded(template, model_seed), x_train, y_train, names[m],
                f"repeat {repeat}, test fold {FOLD_NAMES[fold]}")
            predicted = np.asarray(estimator.predict(rows)).astype(np.int8)
            prediction[repeat, test, m] = predicted[: y_test.size]
            if has_proba[m]:
                probability[repeat, test, m] = _invariant_probability(estimator, x_test)
            if importance:
                _, drops = _drops(predicted, y_test, n_features, n_permutations)
                fold_importance[repeat, fold, :, m] = drops.mean(axis=1)
        accuracy[repeat, fold], f1[repeat, fold], kappa[repeat, fold] = binary_metrics(
            y_test, prediction[repeat, test].T)

    arrays = {
        "accuracy": accuracy, "f1": f1, "kappa": kappa, "fallback": fallback,
        "n_train": counts[0], "n_test": counts[1], "model_seed": seeds[0],
        "test_fold": test_fold, "prediction": prediction, "probability": probability,
        dims.LABEL: labels,
        "holdout": holdout,
    }
    if importance:
        per_fold = fold_importance.reshape(-1, n_features, n_methods)
        arrays |= {"permutation_seed": seeds[1], "importance": per_fold.mean(axis=0),
                   "importance_std": per_fold.std(axis=0)}
    attrs = {"repeats": int(repeats), "seed": int(seed), "importance": int(bool(importance)),
             "n_permutations": int(n_permutations)}
    if robust_index is not None:
        attrs["robust_feature"] = str(columns[robust_index])
    return _dataset(arrays, names, mids, columns, attrs)


_DIMS = {
    "accuracy": ("repeat", "fold", dims.ESTIMATOR),
    "f1": ("repeat", "fold", dims.ESTIMATOR),
    "kappa": ("repeat", "fold", dims.ESTIMATOR),
    "fallback": ("repeat", "fold", dims.ESTIMATOR),
    "n_train": ("repeat", "fold"),
    "n_test": ("repeat", "fold"),
    "model_seed": ("repeat", "fold"),
    "permutation_seed": ("repeat", "fold"),
    "test_fold": ("repeat", dims.MID),
    "prediction": ("repeat", dims.MID, dims.ESTIMATOR),
    "probability": ("repeat", dims.MID, dims.ESTIMATOR),
    dims.LABEL: (dims.MID,),
    "holdout": (dims.MID,),
    "importance": ("feature", dims.ESTIMATOR),
    "importance_std": ("feature", dims.ESTIMATOR),
}


def _dataset(arrays, names, mids, columns, attrs) -> xr.Dataset:
    """The result dataset: ``arrays`` (name -> ndarray, dims from ``_DIMS``) with coords."""
    names = np.asarray(names, dtype=object)
    coords = {
        "repeat": ("repeat", np.arange(attrs["repeats"])),
        "fold": ("fold", np.arange(len(FOLD_NAMES))),
        "fold_name": ("fold", np.asarray(FOLD_NAMES, dtype=object)),
        dims.ESTIMATOR: (dims.ESTIMATOR, names),
        dims.ESTIMATOR_KIND: (dims.ESTIMATOR, np.asarray([method_kind(n) for n in names], dtype=object)),
        dims.MID: (dims.MID, mids),
    }
    if "importance" in arrays:
        coords["feature"] = ("feature", columns)
    result = xr.Dataset(
        {name: xr.Variable(_DIMS[name], array, attrs=_attrs(name))
         for name, array in arrays.items()},
        coords={name: xr.Variable(dim, array, attrs=_attrs(name))
                for name, (dim, array) in coords.items()},
    )
    result.attrs = {
        "title": "ML4ML assessor protocol results",
        "protocol": PROTOCOL,
        **attrs,
        "split_rng": "numpy.random.default_rng([seed, repeat]).permutation of the regular models",
        "estimator_seed": "SeedSequence([seed, repeat, fold, 1]).generate_state(1)[0]",
        "permutation_rng": "SeedSequence([seed, repeat, fold, 2]).generate_state(1)[0], as "
                           "random_state of sklearn.inspection.permutation_importance",
        "single_class_policy": "a method that cannot fit one training class is replaced by a "
                               "constant predictor of it (fallback)",
        "nan_policy": "median imputation on the training models of each fold",
        "kappa_undefined": "NaN",
    }
    return result
