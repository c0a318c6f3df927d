"""Select, then test: ml4ml.assess.significance (issue 25, points 1, 2 and 5)."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from simulate_protocol import alternative, nulls, simulate
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from ml4ml.assess import run_protocol
from ml4ml.assess.comparison import compare
from ml4ml.assess.estimators import FeatureThreshold
from ml4ml.assess.significance import (rejects, sign_flip_p_values, sign_flip_test,
                                       significance_test)
from ml4ml.errors import InputError

N_DATABASES = 1000
ALPHA = 0.05


# ----------------------------------------------------------------------------- level
@pytest.mark.parametrize("n_holdout", [20, 50, 100])
@pytest.mark.parametrize("name", list(nulls()))
def test_level_under_realistic_nulls(name, n_holdout):
    """1,000 databases per null (100 regular models, 10 repeats): the pair chosen by 5-fold
    CV on the regular models, the sign-flip test on the hold-out models; every method
    equally accurate, so every rejection is a false one."""
    design = nulls()[name]
    sim = simulate(N_DATABASES, design, n_holdout=n_holdout, seed=n_holdout)
    # the designs are nulls: every method as accurate (to the simulation's noise) ...
    accuracy = sim["correct"].mean(axis=(0, 1))
    assert np.ptp(accuracy) < 0.01, accuracy
    # ... and the selection picks among them, not always the same one
    assert np.unique(sim["chosen"][:, 0]).size == design.n_assessors
    _, p, _, _ = sign_flip_p_values(sim["differences"])
    rate = float(np.mean(p < ALPHA))
    assert rate <= 0.06, (name, n_holdout, rate)


def test_power_grows_with_the_difference_and_the_hold_out_models():
    """Three assessors 0.05 or 0.10 more accurate than two baselines (benchmark: the rates);
    the assessor is the side found."""
    power = {}
    for delta, n_holdout in ((0.05, 50), (0.10, 50), (0.10, 100)):
        sim = simulate(N_DATABASES, alternative(delta), n_holdout=n_holdout, seed=3)
        statistic, p, p_greater, _ = sign_flip_p_values(sim["differences"])
        assert statistic.mean() == pytest.approx(delta, abs=0.01)
        power[delta, n_holdout] = float(np.mean(p < ALPHA))
        # the wrong side: at most alpha / 2, as for any two-sided test
        assert np.mean((p < ALPHA) & (statistic < 0)) <= ALPHA / 2
    assert 0.05 < power[0.05, 50] < power[0.10, 50] < power[0.10, 100]
    assert power[0.10, 100] > 0.3


# ----------------------------------------------------------------------------- exactness
def _brute_force(d, delta=0.0):
    """(p_greater, p_less) of the test of d - delta over every sign flip (itertools)."""
    shifted = np.asarray(d, dtype=float) - delta
    flips = np.array(list(itertools.product([1, -1], repeat=shifted.size)))
    sums, observed = flips @ shifted, shifted.sum()
    return (np.mean(sums >= observed - 1e-12), np.mean(sums <= observed + 1e-12))


def test_exact_p_is_the_count_over_every_flip():
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(2, 13))
        d = (rng.integers(0, 11, n) - rng.integers(0, 11, n)) / 10  # 10 repeats
        result = sign_flip_test(d)
        p_greater, p_less = _brute_force(d)
        assert result["exact"] and result["n_draws"] == 0
        assert result["p_greater"] == pytest.approx(p_greater, abs=1e-12)
        assert result["p_less"] == pytest.approx(p_less, abs=1e-12)
        assert result["p_value"] == pytest.approx(min(1, 2 * min(p_greater, p_less)))
        assert result["difference"] == pytest.approx(d.mean())


@pytest.mark.parametrize("positive, negative, ties", [(7, 1, 12), (30, 15, 55), (9, 9, 2),
                                                      (0, 6, 0)])
def test_deterministic_methods_give_the_exact_sign_test(positive, negative, ties):
    """Correct or not in every repeat: d in {-1, 0, 1}, the test is the exact sign test
    (McNemar's) on the models where the two disagree (scipy's binomial test)."""
    d = np.r_[np.ones(positive), -np.ones(negative), np.zeros(ties)]
    result = sign_flip_test(np.random.default_rng(0).permutation(d))
    expected = stats.binomtest(positive, positive + negative, 0.5).pvalue
    assert result["exact"] and result["p_value"] == pytest.approx(expected, rel=1e-9)


def test_interval_is_the_inversion_of_the_test():
    """The bounds are the last shifts the test does not reject (checked by brute force
    just inside and just outside), and the interval excludes 0 exactly when p < alpha."""
    rng = np.random.default_rng(2)
    for _ in range(12):
        d = (rng.integers(0, 5, 9) - rng.integers(0, 4, 9)) / 4
        result = sign_flip_test(d, alpha=0.1)
        for bound, outward in ((result["ci_low"], -1e-9), (result["ci_high"], 1e-9)):
            if abs(bound) == 1:
                continue
            p_in = min(1, 2 * min(_brute_force(d, bound)))
            p_out = min(1, 2 * min(_brute_force(d, bound + outward)))
            assert p_in >= 0.1 > p_out, (d, bound)
    agree = []
    for _ in range(300):
        n = int(rng.integers(5, 60))
        d = (rng.integers(0, 11, n) - rng.integers(0, 9, n)) / 10
        result = sign_flip_test(d)
        excludes = result["ci_low"] > 0 or result["ci_high"] < 0
        agree.append(excludes == result["significant"] == (result["p_value"] < ALPHA))
        assert result["ci_low"] <= result["difference"] <= result["ci_high"]
    assert all(agree)


def test_the_decision_is_strict():
    """Four models, the assessor right on all: p = 2 / 16 exactly; alpha = p does not
    reject, anything above does."""
    result = sign_flip_test(np.ones(4), alpha=0.125)
    assert result["p_value"] == 0.125 and result["p_greater"] == 1 / 16
    assert not result["significant"] and not rejects(0.125, 0.125)
    above = sign_flip_test(np.ones(4), alpha=0.1250001)
    assert above["significant"]
    # the interval agrees at the edge: at alpha = 2 / 16 no shift is rejected (every shift's
    # p is at least 2 / 16); just above, every shift below 1 is
    assert (result["ci_low"], result["ci_high"]) == (-1.0, 1.0)
    assert (above["ci_low"], above["ci_high"]) == (1.0, 1.0)
    # a shift whose p is alpha exactly is not rejected, so it is in the interval: flipping
    # the fourth model alone (mean -0.5) or nothing reaches the observed sum, p = 4 / 16
    for sign in (1, -1):
        edge = sign_flip_test(sign * np.array([1, 1, 1, -0.5]), alpha=0.25)
        assert edge["p_value"] == 0.25 and not edge["significant"]
        bound = edge["ci_low"] if sign == 1 else edge["ci_high"]
        assert bound == -0.5 * sign  # 0 inside, as the decision says
    assert not rejects(float("nan"), 0.5) and rejects(0.01, 0.05)


def test_off_a_lattice_small_databases_enumerate_every_flip():
    d = np.random.default_rng(3).normal(0.2, 0.3, 8).clip(-1, 1)
    result = sign_flip_test(d, n_draws=1000)  # 2^8 = 256 flips <= 1000
    assert result["exact"] and result["null"] == "enumeration"
    p_greater, p_less = _brute_force(d)
    assert (result["p_greater"], result["p_less"]) == pytest.approx((p_greater, p_less))


def test_monte_carlo_counts_the_observed_flip():
    """Off a lattice, 40 models: random flips, p = (1 + g) / (1 + n_draws). Every model
    better for the assessor: no random flip reaches the observed sum, g = 0."""
    d = np.random.default_rng(4).uniform(0.05, 0.6, 40)
    result = sign_flip_test(d, n_draws=999, seed=5)
    assert not result["exact"] and result["n_draws"] == 999
    assert result["p_greater"] == 1 / 1000 and result["p_value"] == 2 / 1000
    assert result["p_less"] == 1.0
    _, p, p_greater, _ = sign_flip_p_values(d[None], n_draws=999, seed=5)
    assert p_greater[0] == 1 / 1000 and p[0] == 2 / 1000
    # a middling case: g counted from the same seeded flips, (1 + g) / (1 + n)
    d = np.random.default_rng(6).normal(0.05, 0.3, 40).clip(-1, 1)
    flips = np.random.default_rng(7).random((999, 40)) < 0.5
    g = int(((flips * d).sum(axis=1) <= 0).sum())
    result = sign_flip_test(d, n_draws=999, seed=7)
    assert 0 < g < 999 and result["p_greater"] == pytest.approx((1 + g) / 1000)
    _, _, p_greater, _ = sign_flip_p_values(d[None], n_draws=999, seed=7)
    assert p_greater[0] == pytest.approx((1 + g) / 1000)
    # close to the exact p of the same differences rounded to a lattice
    exact = sign_flip_test(np.round(d * 100) / 100)
    assert exact["exact"] and abs(result["p_value"] - exact["p_value"]) < 0.05


def test_the_batch_gives_each_database_its_test():
    rng = np.random.default_rng(8)
    lattice = (rng.integers(0, 11, (20, 30)) - rng.integers(0, 11, (20, 30))) / 10
    for batch, kwargs in ((lattice, {}), (rng.normal(0, 0.3, (20, 30)).clip(-1, 1),
                                          {"n_draws": 500, "seed": 2})):
        statistic, p, p_greater, p_less = sign_flip_p_values(batch, **kwargs)
        for k in range(batch.shape[0]):
            one = sign_flip_test(batch[k], **kwargs)
            assert (p[k], p_greater[k], p_less[k]) == pytest.approx(
                (one["p_value"], one["p_greater"], one["p_less"]), abs=1e-12)
            assert statistic[k] == pytest.approx(one["difference"])


# ----------------------------------------------------------------------------- selection
def _database(n=90, seed=5):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["f0", "f1", "f2"],
                     index=pd.Index([f"m{i}" for i in range(n)], name="mid"))
    y = (X["f0"] + X["f1"] + 0.5 * rng.normal(size=n) > 0).astype(int).to_numpy()
    return X, y, np.arange(n) % 3 == 0


METHODS = {"logistic": LogisticRegression(),
           "tree": DecisionTreeClassifier(max_depth=2, random_state=0),
           "baseline_f0": FeatureThreshold(feature=0),
           "baseline_f2": FeatureThreshold(feature=2)}


def test_on_run_protocol_results_select_then_test():
    X, y, holdout = _database()
    results = run_protocol(X, y, holdout, methods=METHODS, repeats=3, seed=1,
                           importance=False)
    result = significance_test(results)
    # the selection: 3 x 5-fold CV on the 60 regular models, its predictions stored
    regular = ~holdout
    folds = results["selection_fold"].values
    assert folds.shape == (3, 90) and (folds[:, holdout] == -1).all()
    for repeat in folds:  # stratified: each fold holds 12 regular models, both classes
        assert np.bincount(repeat[regular]).tolist() == [12] * 5
        for fold in range(5):
            share = y[repeat == fold].mean()
            assert abs(share - y[regular].mean()) <= 1 / 12
    assert not np.array_equal(folds[0], folds[1])  # a new split per repeat
    selected = results["selection_prediction"].values
    assert selected.shape == (3, 90, 4)
    assert (selected[:, holdout] == -1).all() and (selected[:, regular] >= 0).all()
    cv = (selected[:, regular] == y[regular, None]).mean(axis=(0, 1))
    np.testing.assert_allclose(results["selection_accuracy"].values, cv)
    # each selection fit as run by hand: the regular models of the other folds only
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold
    state = int(np.random.SeedSequence([1, 2, 0, 3]).generate_state(1)[0])
    regular_ids = np.flatnonzero(regular)
    for fold, (train, test) in enumerate(StratifiedKFold(5, shuffle=True, random_state=state)
                                         .split(regular_ids, y[regular])):
        assert (folds[2, regular_ids[test]] == fold).all()
        seed = int(np.random.SeedSequence([1, 2, fold, 4]).generate_state(1)[0])
        tree = clone(METHODS["tree"]).set_params(random_state=seed).fit(
            X.to_numpy()[regular_ids[train]], y[regular_ids[train]])
        np.testing.assert_array_equal(selected[2, regular_ids[test], 1],
                                      tree.predict(X.to_numpy()[regular_ids[test]]))
    a, b = int(np.argmax(cv[:2])), 2 + int(np.argmax(cv[2:]))
    names = list(METHODS)
    assert (result["chosen_assessor"], result["best_baseline"]) == (names[a], names[b])
    assert result["selection"] == "3 x 5-fold CV on the 60 regular models"
    assert result["selection_accuracy_assessor"] == cv[a]
    # the test: the chosen pair on the 30 hold-out models
    correct = (results["prediction"].values[:, holdout] == y[holdout][None, :, None]).mean(0)
    d = correct[:, a] - correct[:, b]
    expected = sign_flip_test(d)
    assert {k: result[k] for k in expected} == expected
    assert result["n_models"] == 30 and result["accuracy_assessor"] == correct[:, a].mean()
    assert result["test"] == "exact sign-flip test over the hold-out models"


def test_the_selection_never_sees_the_hold_out_labels():
    """Other hold-out labels change the protocol's regular folds (their fits train on the
    hold-out models) but not the selection, hence not the pair."""
    X, y, holdout = _database(seed=6)
    other = y.copy()
    other[holdout] = 1 - other[holdout]
    first, second = (run_protocol(X, labels, holdout, methods=METHODS, repeats=2, seed=3,
                                  importance=False) for labels in (y, other))
    for name in ("selection_fold", "selection_prediction", "selection_accuracy"):
        np.testing.assert_array_equal(first[name].values, second[name].values)
    assert (first["prediction"].values[:, ~holdout]
            != second["prediction"].values[:, ~holdout]).any()
    a, b = significance_test(first), significance_test(second)
    assert (a["chosen_assessor"], a["best_baseline"]) == (b["chosen_assessor"],
                                                          b["best_baseline"])
    assert a["difference"] == pytest.approx(-b["difference"])  # all labels flipped


def test_compare_decides_strictly_on_a_protocol():
    X, y, holdout = _database(seed=7)
    results = run_protocol(X, y, holdout, methods=METHODS, repeats=2, seed=0,
                           importance=False)
    p = significance_test(results)["p_value"]
    assert 0 < p < 1
    at = compare(results, alpha=p)
    assert not at["significant"] and "not significantly" in at["verdict"]
    assert f"not below {p:g}" in at["verdict"]
    above = compare(results, alpha=min(0.999, p * 1.000001))
    assert above["significant"] and " beats " in above["verdict"]
    assert above["ci_low"] > 0 or above["ci_high"] < 0


@pytest.mark.parametrize("differences, kwargs, message", [
    (np.ones(1), {}, "at least 2 hold-out models; got 1"),
    (np.full(3, 2.0), {}, r"differences must lie in \[-1, 1\]"),
    (np.ones(3), {"n_draws": 0}, "n_draws must be an int >= 1; got 0"),
    (np.ones(3), {"alpha": 1.5}, r"alpha must be in \(0, 1\); got 1.5"),
])
def test_bad_input(differences, kwargs, message):
    with pytest.raises(InputError, match=message):
        sign_flip_test(differences, **kwargs)


def test_results_without_a_selection_are_refused():
    X, y, holdout = _database()
    results = run_protocol(X, y, holdout, methods=METHODS, repeats=1, importance=False)
    with pytest.raises(InputError, match=r"lack \['selection_prediction'\].*run 'ml4ml "
                                         "assess' again"):
        significance_test(results.drop_vars("selection_prediction"))
