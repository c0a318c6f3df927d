"""Assessors and baselines: scikit-learn conformance, exact behaviour, NaN policy, registry."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from ml4ml.assess.estimators import (ASSESSORS, BASELINES, FeatureThreshold, L2LinearThreshold,
                                     make_assessor, make_baseline, make_method, method_kind)
from ml4ml.errors import InputError


@parametrize_with_checks([L2LinearThreshold(), FeatureThreshold(), FeatureThreshold(feature=0)])
def test_sklearn_conformance(estimator, check):
    check(estimator)


# --- L2LinearThreshold -------------------------------------------------------------------

def test_l2_linear_hand_example():
    # normalised rows [1,0], [0,1], [0,0], [1,0] with labels 1, 0, 0, 1: the least-squares
    # fit y = a*u + b*v + c is exact with c = 0 (zero row), a = 1, b = 0
    X = np.array([[2.0, 0.0], [0.0, 3.0], [0.0, 0.0], [5.0, 0.0]])
    model = L2LinearThreshold().fit(X, [1, 0, 0, 1])
    np.testing.assert_allclose(model.coef_, [1.0, 0.0], atol=1e-12)
    assert model.intercept_ == pytest.approx(0.0, abs=1e-12)
    new = np.array([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(model.decision_function(new),
                               [0.5, -0.5, np.sqrt(0.5) - 0.5, -0.5], atol=1e-12)
    np.testing.assert_array_equal(model.predict(new), [1, 0, 1, 0])
    strict = L2LinearThreshold(threshold=0.8).fit(X, [1, 0, 0, 1])
    np.testing.assert_array_equal(strict.predict(new), [1, 0, 0, 0])


def test_l2_linear_matches_lstsq_on_normalised_rows():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 4)) * np.array([1.0, 10.0, 0.1, 3.0])
    y = (X[:, 0] + X[:, 2] * 10 > 0).astype(int)
    rows = X / np.linalg.norm(X, axis=1, keepdims=True)
    design = np.column_stack([rows, np.ones(len(rows))])
    solution, *_ = np.linalg.lstsq(design, y.astype(float), rcond=None)
    model = L2LinearThreshold().fit(X, y)
    np.testing.assert_allclose(model.coef_, solution[:4], rtol=1e-9, atol=1e-12)
    assert model.intercept_ == pytest.approx(solution[4], rel=1e-9, abs=1e-12)
    expected = design @ solution
    np.testing.assert_allclose(model.decision_function(X), expected - 0.5, atol=1e-12)
    np.testing.assert_array_equal(model.predict(X), (expected >= 0.5).astype(int))
    # a row scaled by a positive number is the same normalised row
    np.testing.assert_array_equal(model.predict(X * 7.5), model.predict(X))


def test_l2_linear_string_labels_and_one_class():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
    model = L2LinearThreshold().fit(X, ["variant", "invariant", "variant", "invariant"])
    np.testing.assert_array_equal(model.classes_, ["invariant", "variant"])
    np.testing.assert_array_equal(model.predict(X), ["variant", "invariant", "variant",
                                                     "invariant"])
    single = L2LinearThreshold().fit(X, [1, 1, 1, 1])
    np.testing.assert_array_equal(single.predict(X), [1, 1, 1, 1])


def test_l2_linear_bad_threshold():
    with pytest.raises(InputError, match="'threshold' parameter of L2LinearThreshold"):
        L2LinearThreshold(threshold="high").fit([[1.0], [2.0]], [0, 1])


# --- FeatureThreshold --------------------------------------------------------------------

@pytest.mark.parametrize("y,direction", [([0, 0, 0, 1, 1, 1], ">="), ([1, 1, 1, 0, 0, 0], "<")])
def test_feature_threshold_both_directions(y, direction):
    X = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]])
    model = FeatureThreshold(feature=0).fit(X, y)
    assert (model.threshold_, model.direction_, model.train_accuracy_) == (3.5, direction, 1.0)
    np.testing.assert_array_equal(model.predict([[3.4], [3.5], [100.0]]),
                                  [y[0], y[-1], y[-1]])


def test_feature_threshold_ties_smallest_threshold():
    # thresholds 1.5 and 3.5 (">=") both classify 3 of 4: the smaller wins
    model = FeatureThreshold().fit([[1.0], [2.0], [3.0], [4.0]], [0, 1, 0, 1])
    assert (model.threshold_, model.direction_, model.train_accuracy_) == (1.5, ">=", 0.75)
    # every rule classifies 2 of 4: the smallest candidate (-inf) and ">=" win
    flat = FeatureThreshold().fit([[1.0], [1.0], [2.0], [2.0]], [0, 1, 0, 1])
    assert (flat.threshold_, flat.direction_, flat.train_accuracy_) == (-np.inf, ">=", 0.5)
    np.testing.assert_array_equal(flat.predict([[-1e300], [5.0]]), [1, 1])


def test_feature_threshold_never_splits_equal_values():
    model = FeatureThreshold().fit([[1.0], [1.0], [1.0], [2.0], [2.0]], [0, 0, 1, 1, 1])
    assert (model.threshold_, model.direction_, model.train_accuracy_) == (1.5, ">=", 0.8)


def test_feature_threshold_adjacent_floats():
    low, high = 1.0, np.nextafter(1.0, 2.0)
    model = FeatureThreshold().fit([[low], [high]], [0, 1])
    assert low < model.threshold_ <= high
    np.testing.assert_array_equal(model.predict([[low], [high]]), [0, 1])


def test_feature_threshold_best_feature_and_feature_ties():
    x = np.arange(8.0)
    y = (x >= 4).astype(int)
    X = np.column_stack([np.sin(x * 12.9898) * 43758.5453 % 1, -x, x])
    model = FeatureThreshold().fit(X, y)
    # columns 1 and 2 are both perfect: the lower index wins; column 1 falls with y
    assert (model.feature_index_, model.threshold_, model.direction_) == (1, -3.5, "<")
    assert model.train_accuracy_ == 1.0


def test_feature_threshold_against_brute_force():
    rng = np.random.default_rng(11)
    X = rng.integers(0, 6, size=(40, 5)).astype(float)
    y = (X[:, 2] + rng.normal(scale=1.5, size=40) > 2.5).astype(int)
    model = FeatureThreshold().fit(X, y)
    best = (-1, None)
    for j in range(X.shape[1]):  # independent loop over features, thresholds and directions
        values = np.unique(X[:, j])
        for t in np.concatenate([[-np.inf], (values[:-1] + values[1:]) / 2]):
            for direction in (">=", "<"):
                predicted = X[:, j] >= t if direction == ">=" else X[:, j] < t
                correct = int((predicted == y).sum())
                if correct > best[0]:
                    best = (correct, (j, t, direction))
    assert model.train_accuracy_ == best[0] / 40
    assert (model.feature_index_, model.threshold_, model.direction_) == best[1]


def test_feature_threshold_by_name():
    frame = pd.DataFrame({"a": [5.0, 1.0, 4.0, 2.0], "b": [1.0, 2.0, 3.0, 4.0]})
    model = FeatureThreshold(feature="b").fit(frame, [0, 0, 1, 1])
    assert (model.feature_index_, model.threshold_, model.direction_) == (1, 2.5, ">=")
    np.testing.assert_array_equal(model.predict(frame), [0, 0, 1, 1])
    with pytest.raises(InputError, match="'c' is not a column of X"):
        FeatureThreshold(feature="c").fit(frame, [0, 0, 1, 1])
    with pytest.raises(InputError, match="is a column name, but X has no column names"):
        FeatureThreshold(feature="b").fit(frame.to_numpy(), [0, 0, 1, 1])
    with pytest.raises(InputError, match="n_features = 2"):
        FeatureThreshold(feature=2).fit(frame, [0, 0, 1, 1])
    with pytest.raises(InputError, match="must be an int, a str or None"):
        FeatureThreshold(feature=1.5).fit(frame, [0, 0, 1, 1])


# --- NaN policy --------------------------------------------------------------------------

def _nan_problem():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, 4))
    y = (X[:, 1] > 0).astype(int)
    X[3, 1] = np.nan
    X[7, 0] = np.nan
    X[:, 3] = np.nan  # a feature missing for every model
    return X, y


def test_bare_estimators_reject_nan():
    X, y = _nan_problem()
    for estimator in (L2LinearThreshold(), FeatureThreshold()):
        with pytest.raises(ValueError, match="NaN"):
            estimator.fit(X, y)


@pytest.mark.parametrize("name", ASSESSORS + BASELINES)
def test_every_method_imputes_nan(name):
    X, y = _nan_problem()
    model = make_method(name, seed=0, robust_feature=1).fit(X, y)
    imputer = model.named_steps["impute"]
    np.testing.assert_allclose(imputer.statistics_[:3], np.nanmedian(X[:, :3], axis=0))
    assert imputer.statistics_[3] == 0.0  # all-NaN column: kept, filled with 0
    predicted = model.predict(np.full((2, 4), np.nan))
    assert predicted.shape == (2,) and set(predicted) <= {0, 1}


def test_nan_becomes_training_median_for_the_baseline():
    X = np.array([[1.0], [2.0], [3.0], [4.0], [np.nan]])
    model = make_baseline("baseline_best_feature").fit(X, [0, 0, 1, 1, 1])
    # the NaN row is imputed with median 2.5 before the threshold is searched: the sorted
    # column 1, 2, 2.5, 3, 4 with labels 0, 0, 1, 1, 1 splits at (2 + 2.5) / 2
    assert model.named_steps["impute"].statistics_[0] == 2.5
    assert model.named_steps["model"].threshold_ == 2.25
    np.testing.assert_array_equal(model.predict([[np.nan], [2.2], [2.3]]), [1, 0, 1])


# --- registry ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def easy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5))
    y = (X[:, 2] > 0.2).astype(int)
    return X, y


@pytest.mark.parametrize("name", ASSESSORS)
def test_every_assessor_builds_fits_and_is_seeded(easy, name):
    X, y = easy
    model = make_assessor(name, seed=7)
    assert method_kind(name) == "assessor"
    seeds = {k: v for k, v in model.get_params().items() if k.endswith("random_state")}
    assert set(seeds.values()) <= {7}
    first = model.fit(X, y).predict(X)
    again = clone(model).fit(X, y).predict(X)
    np.testing.assert_array_equal(first, again)
    assert (first == y).mean() >= 0.9
    np.testing.assert_array_equal(model.classes_, [0, 1])
    assert model.n_features_in_ == 5


def test_every_baseline_builds_and_fits(easy):
    X, y = easy
    robust = make_baseline("baseline_robust_accuracy", robust_feature=2).fit(X, y)
    assert robust.named_steps["model"].feature_index_ == 2
    assert robust.score(X, y) == 1.0
    best = make_baseline("baseline_best_feature").fit(X, y)
    assert best.named_steps["model"].feature_index_ == 2
    assert best.score(X, y) == 1.0
    majority = make_baseline("baseline_majority").fit(X, y)
    np.testing.assert_array_equal(majority.predict(X), np.full(80, int(y.mean() > 0.5)))
    assert majority.score(X, y) == max(y.mean(), 1 - y.mean())
    assert {method_kind(name) for name in BASELINES} == {"baseline"}


def test_robust_baseline_by_column_name(easy):
    X, y = easy
    frame = pd.DataFrame(X, columns=["a", "b", "robust_accuracy", "d", "e"])
    model = make_baseline("baseline_robust_accuracy", "robust_accuracy").fit(frame, y)
    assert model.named_steps["model"].feature_index_ == 2
    assert model.score(frame, y) == 1.0


def test_method_names_are_the_contract():
    assert ASSESSORS == ("decision_tree", "random_forest", "adaboost", "linear", "logistic",
                         "gradient_boosting")
    assert BASELINES == ("baseline_robust_accuracy", "baseline_best_feature",
                         "baseline_majority")


def test_unknown_names():
    with pytest.raises(InputError, match=r"unknown assessor 'svm'; expected one of "
                                         r"decision_tree, random_forest, adaboost, linear, "
                                         r"logistic, gradient_boosting"):
        make_assessor("svm", 0)
    with pytest.raises(InputError, match=r"unknown baseline 'baseline_mean'; expected one of "
                                         r"baseline_robust_accuracy, baseline_best_feature, "
                                         r"baseline_majority"):
        make_baseline("baseline_mean")
    with pytest.raises(InputError, match="unknown method 'svm'"):
        make_method("svm")
    with pytest.raises(InputError, match="robust_feature=None"):
        make_baseline("baseline_robust_accuracy")
    with pytest.raises(InputError, match="seed must be a non-negative int"):
        make_assessor("decision_tree", -1)
