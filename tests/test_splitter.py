"""ProtocolSplit: the protocol's folds as a scikit-learn splitter, equal to run_protocol's."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_validate, permutation_test_score

from ml4ml.assess import ProtocolSplit, fold_assignment, run_protocol
from ml4ml.errors import InputError


def _database(n=46, n_holdout=15, p=4, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"f{i}" for i in range(p)],
                     index=pd.Index([f"m{i}" for i in range(n)], name="mid"))
    y = (X["f1"] + 0.8 * rng.normal(size=n) > 0).astype(int).to_numpy()
    holdout = rng.permutation(n) < n_holdout  # hold-out models scattered among the rows
    return X, y, holdout


@pytest.fixture(scope="module")
def database():
    X, y, holdout = _database()
    results = run_protocol(X, y, holdout, methods={"logistic": LogisticRegression()},
                           repeats=3, seed=7, importance=False)
    return X, y, holdout, results


def test_split_reproduces_the_protocol_folds(database):
    X, y, holdout, results = database
    cv = ProtocolSplit(3, random_state=7)
    assert cv.get_n_splits() == 9
    splits = list(cv.split(X, y, groups=holdout))
    assert len(splits) == 9
    folds = results["test_fold"].values
    np.testing.assert_array_equal(cv.test_folds(holdout), folds)
    np.testing.assert_array_equal(fold_assignment(holdout, 3, 7), folds)
    for k, (train, test) in enumerate(splits):
        repeat, fold = divmod(k, 3)
        np.testing.assert_array_equal(test, np.flatnonzero(folds[repeat] == fold))
        np.testing.assert_array_equal(train, np.flatnonzero(folds[repeat] != fold))
    # fold 0 is the hold-out models; regular halves of ceil/floor size, by the documented rng
    np.testing.assert_array_equal(splits[3][1], np.flatnonzero(holdout))
    regular = np.flatnonzero(~holdout)
    shuffled = np.random.default_rng([7, 1]).permutation(regular)
    np.testing.assert_array_equal(splits[4][1], np.sort(shuffled[: (regular.size + 1) // 2]))
    np.testing.assert_array_equal(splits[5][1], np.sort(shuffled[(regular.size + 1) // 2:]))
    # 0/1 groups equal boolean ones; every call yields the same folds
    again = list(cv.split(X.to_numpy(), y, groups=holdout.astype(int)))
    for (a_train, a_test), (b_train, b_test) in zip(splits, again):
        np.testing.assert_array_equal(a_train, b_train)
        np.testing.assert_array_equal(a_test, b_test)


def test_cross_validate_gives_the_stored_accuracies(database):
    X, y, holdout, results = database
    scores = cross_validate(LogisticRegression(), X, y, groups=holdout,
                            cv=ProtocolSplit(3, random_state=7), scoring="accuracy")
    stored = results["accuracy"].values[..., 0].reshape(-1)  # (repeat, fold) order
    np.testing.assert_array_equal(scores["test_score"], stored)
    correct = [10, 13, 11, 10, 11, 11, 10, 13, 12]  # of 15, 16, 15 test models per repeat
    np.testing.assert_allclose(stored, np.divide(correct, [15, 16, 15] * 3), rtol=0, atol=1e-15)


def test_permutation_test_score_and_grid_search(database):
    X, y, holdout, results = database
    stored = results["accuracy"].values[..., 0].reshape(-1)
    cv = ProtocolSplit(3, random_state=7)
    score, permuted, p_value = permutation_test_score(
        LogisticRegression(), X, y, groups=holdout, cv=cv, n_permutations=19, random_state=0)
    assert score == pytest.approx(stored.mean(), abs=1e-12)
    assert permuted.shape == (19,) and (permuted < score).all()
    assert p_value == pytest.approx(1 / 20)
    search = GridSearchCV(LogisticRegression(), {"C": [0.01, 1.0]}, cv=cv).fit(
        X, y, groups=holdout)
    assert search.n_splits_ == 9
    row = list(search.cv_results_["param_C"]).index(1.0)
    per_split = [search.cv_results_[f"split{k}_test_score"][row] for k in range(9)]
    np.testing.assert_array_equal(per_split, stored)


@pytest.mark.parametrize("groups, message", [
    (None, "ProtocolSplit needs groups"),
    (np.array([0, 1, 2] * 5), r"groups must be boolean or 0/1 .*found \['0', '1', '2'\]"),
    (np.array([1] * 14 + [0]), "at least 1 hold-out model and 2 regular models; got 14 and 1"),
    (np.zeros(15, dtype=bool), "at least 1 hold-out model and 2 regular models; got 0 and 15"),
])
def test_bad_groups(groups, message):
    with pytest.raises(InputError, match=message):
        list(ProtocolSplit(2).split(np.zeros((15, 2)), groups=groups))


@pytest.mark.parametrize("params, message", [
    ({"n_repeats": 0}, "'n_repeats' parameter of ProtocolSplit must be an int >= 1. Got 0"),
    ({"random_state": None}, "'random_state' parameter .* int >= 0. Got None"),
    ({"n_repeats": 2.5}, "Got 2.5 instead"),
])
def test_bad_parameters(params, message):
    with pytest.raises(InputError, match=message):
        ProtocolSplit(**params).get_n_splits()


def test_repr():
    assert repr(ProtocolSplit(4, random_state=2)) == "ProtocolSplit(n_repeats=4, random_state=2)"
