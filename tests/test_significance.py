"""The comparison that holds its level: ml4ml.assess.significance."""

import numpy as np
import pandas as pd
import pytest
from simulate_protocol import nadeau_bengio_p, noise_for, separation_for, simulate
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from ml4ml.assess import run_protocol
from ml4ml.assess.estimators import FeatureThreshold
from ml4ml.assess.significance import (model_permutation_test, permutation_p_values,
                                       significance_test)
from ml4ml.errors import InputError

N_DATABASES = 1000


def _holdout_correctness(prediction, label, holdout):
    return (prediction == label[:, None, :, None]).mean(axis=1)[:, holdout]


def test_level_under_the_null():
    """1,000 databases, 100 regular + 50 hold-out models, 10 repeats, the real folds; two
    assessors and two baselines of equal expected accuracy, errors independent."""
    separation = np.full(4, separation_for(0.7))
    prediction, label, holdout, test_fold, is_assessor = simulate(
        N_DATABASES, separation, n_assessors=2, seed=11)
    assert (prediction.shape, holdout.sum()) == ((N_DATABASES, 10, 150, 4), 50)
    _, p, _, _ = permutation_p_values(_holdout_correctness(prediction, label, holdout),
                                      is_assessor, n_draws=2000, seed=0)
    rate = float((p < 0.05).mean())
    assert 0.02 <= rate <= 0.06, rate
    # the same permutation over all 150 models ignores the shared fits and is too liberal
    correct_all = (prediction == label[:, None, :, None]).mean(axis=1)
    _, p_all, _, _ = permutation_p_values(correct_all, is_assessor, n_draws=1000)
    assert (p_all < 0.05).mean() > 0.08


def test_level_with_selection_on_both_sides_and_shared_errors():
    """Three assessors and two baselines reading one latent signal, 60% invariant."""
    noise = np.full(5, noise_for(0.8))
    prediction, label, holdout, _, is_assessor = simulate(
        N_DATABASES, noise, n_assessors=3, seed=12, shared=True, prevalence=0.6)
    _, p, _, _ = permutation_p_values(_holdout_correctness(prediction, label, holdout),
                                      is_assessor, n_draws=2000, seed=0)
    assert (p < 0.05).mean() <= 0.06


def test_power():
    """Assessors 0.10 and 0.20 more accurate than the baselines (best thresholds)."""
    rates = {}
    for delta in (0.10, 0.20):
        noise = np.r_[np.full(2, noise_for(0.7 + delta)), np.full(2, noise_for(0.7))]
        prediction, label, holdout, test_fold, is_assessor = simulate(
            N_DATABASES, noise, n_assessors=2, seed=13, shared=True)
        correct = _holdout_correctness(prediction, label, holdout)
        statistic, p, p_greater, _ = permutation_p_values(correct, is_assessor, n_draws=2000)
        assert statistic.mean() == pytest.approx(delta, abs=0.015)
        rates[delta] = ((p < 0.05).mean(), (p_greater < 0.05).mean(),
                        (nadeau_bengio_p(prediction, label, test_fold, is_assessor)
                         < 0.05).mean())
    # a 0.10 difference is found in about a quarter of the databases (two-sided), a third
    # one-sided: 50 hold-out models carry that much; 0.20 in most (0.85)
    assert 0.2 <= rates[0.10][0] <= 0.35 and rates[0.10][1] > rates[0.10][0]
    assert rates[0.20][0] >= 0.8


def test_exact_enumeration_two_methods():
    # one assessor, one baseline, 4 models: 2**4 = 16 sign flips, all enumerated
    correct = np.array([[1, 0], [1, 0], [1, 0], [0, 0]], dtype=float)
    result = model_permutation_test(correct, [True, False], names=["a", "b"], n_draws=100)
    assert result["exact"] and result["n_draws"] == 16
    assert (result["chosen_assessor"], result["best_baseline"]) == ("a", "b")
    assert result["difference"] == 0.75
    # T* = (flips of models 0-2 sum) / 4; T* >= 0.75 only when none of them flips: 2 of 16
    assert result["p_greater"] == 2 / 16
    assert result["p_value"] == 4 / 16
    assert (result["accuracy_assessor"], result["accuracy_baseline"]) == (0.75, 0.0)


def test_exact_enumeration_with_selection():
    # two assessors, one baseline, 2 models: 3!**2 = 36 within-model orders
    correct = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    result = model_permutation_test(correct, [True, True, False], n_draws=36)
    assert result["exact"] and result["n_draws"] == 36
    assert result["difference"] == 1.0
    # T* = 1 only if both models' 1 lands on the same assessor: (a0, a0) or (a1, a1), 2 of
    # the 9 placements, each with 2 x 2 orders of the zeros -> 8 of 36
    assert result["p_greater"] == 8 / 36
    assert result["chosen_assessor"] == "0" and result["best_baseline"] == "2"


def test_interval_covers_and_is_seeded():
    rng = np.random.default_rng(0)
    correct = (rng.random((50, 4)) < [0.8, 0.75, 0.7, 0.7]).astype(float)
    first = model_permutation_test(correct, [True, True, False, False], n_draws=2000)
    again = model_permutation_test(correct, [True, True, False, False], n_draws=2000)
    assert first == again
    assert first["ci_low"] < first["difference"] < first["ci_high"]
    assert not first["exact"] and first["n_draws"] == 2000 and first["n_models"] == 50
    # simultaneous over the 4 pairs: wider than the chosen pair's own normal interval
    d = correct[:, int(first["chosen_assessor"])] - correct[:, int(first["best_baseline"])]
    half = 1.96 * d.std(ddof=1) / np.sqrt(50)
    assert first["ci_high"] - first["ci_low"] > 2 * half
    assert "hold-out models" in first["method"]


def test_on_run_protocol_results():
    rng = np.random.default_rng(5)
    n = 60
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["f0", "f1", "f2"],
                     index=pd.Index([f"m{i}" for i in range(n)], name="mid"))
    y = (X["f0"] + X["f1"] > 0).astype(int).to_numpy()
    holdout = np.arange(n) % 3 == 0
    methods = {"logistic": LogisticRegression(),
               "tree": DecisionTreeClassifier(max_depth=2, random_state=0),
               "baseline_f0": FeatureThreshold(feature=0),
               "baseline_f2": FeatureThreshold(feature=2)}
    results = run_protocol(X, y, holdout, methods=methods, repeats=3, seed=1,
                           importance=False)
    result = significance_test(results, n_draws=2000)
    held = results["prediction"].values[:, holdout]
    correct = (held == y[holdout][None, :, None]).mean(axis=0)
    expected = model_permutation_test(correct, [True, True, False, False],
                                      names=list(methods), n_draws=2000)
    assert result == expected
    assert result["n_models"] == 20
    assert result["chosen_assessor"] == "logistic" and result["best_baseline"] == "baseline_f0"
    assert result["difference"] == pytest.approx(
        correct[:, 0].mean() - correct[:, 2].mean())


@pytest.mark.parametrize("kwargs, message", [
    ({"is_assessor": [True, True]}, "at least one assessor and one baseline; got 2 and 0"),
    ({"correct": np.ones((1, 2))}, "at least 2 hold-out models; got 1"),
    ({"correct": np.full((3, 2), 2.0)}, r"fractions in \[0, 1\]"),
    ({"n_draws": 0}, "n_draws must be an int >= 1; got 0"),
    ({"correct": np.ones((3, 3))}, r"\(n_models, n_methods\) with n_methods = 2"),
])
def test_bad_input(kwargs, message):
    arguments = {"correct": np.ones((3, 2)), "is_assessor": [True, False]} | kwargs
    with pytest.raises(InputError, match=message):
        model_permutation_test(**arguments)
