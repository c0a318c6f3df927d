"""The assessor protocol: folds, determinism, metrics, importances, the honest comparison."""


import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.inspection import permutation_importance
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score
from sklearn.tree import DecisionTreeClassifier

from ml4ml.assess import (ASSESSORS, BASELINES, binary_metrics, compare, fold_assignment,
                          make_assessor, nadeau_bengio_ttest, run_protocol,
                          summary, top_features)
from ml4ml.assess.comparison import TEST_NAME, out_of_fold, verdict
from ml4ml.assess.estimators import FeatureThreshold
from ml4ml.errors import InputError


def _database(n=46, n_holdout=15, p=6, seed=0, label=None):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.uniform(-1, 1, size=(n, p)), columns=[f"f{i}" for i in range(p)],
                     index=pd.Index([f"t{i}" if i < n_holdout else f"m{i}" for i in range(n)],
                                    name="mid"))
    y = (X["f3"] > 0).astype(int).to_numpy() if label is None else label(X, rng)
    holdout = np.arange(n) < n_holdout
    return X, y, holdout


@pytest.fixture(scope="module")
def small():
    X, y, holdout = _database()
    methods = ["decision_tree", "logistic", "linear", "baseline_best_feature",
               "baseline_majority"]
    return X, y, holdout, run_protocol(X, y, holdout, methods=methods, repeats=2, seed=3)


def _fold_rows(results, repeat, fold):
    return results["test_fold"].values[repeat] == fold


def test_fold_structure(small):
    X, y, holdout, results = small
    folds = results["test_fold"].values
    assert folds.shape == (2, 46)
    assert (folds[:, holdout] == 0).all()  # hold-out models are always fold 0
    regular = folds[:, ~holdout]
    assert set(np.unique(regular)) == {1, 2}  # each regular model tested exactly once
    np.testing.assert_array_equal((regular == 1).sum(axis=1), [16, 16])
    np.testing.assert_array_equal((regular == 2).sum(axis=1), [15, 15])
    np.testing.assert_array_equal(results["n_test"].values, [[15, 16, 15], [15, 16, 15]])
    np.testing.assert_array_equal(results["n_train"].values, 46 - results["n_test"].values)
    assert not np.array_equal(regular[0], regular[1])  # a new split per repeat
    # the documented seeding: default_rng([seed, repeat]).permutation of the regular models
    shuffled = np.random.default_rng([3, 1]).permutation(np.flatnonzero(~holdout))
    assert (folds[1, shuffled[:16]] == 1).all() and (folds[1, shuffled[16:]] == 2).all()
    np.testing.assert_array_equal(fold_assignment(holdout, 2, 3), folds)
    assert list(results["fold_name"].values) == ["holdout", "regular_a", "regular_b"]
    assert list(results["method_kind"].values) == ["assessor"] * 3 + ["baseline"] * 2


def test_layout_and_attrs(small):
    X, y, holdout, results = small
    for name in ("accuracy", "f1", "kappa", "fallback"):
        assert results[name].dims == ("repeat", "fold", "estimator")
    assert results["importance"].dims == ("feature", "estimator")
    assert results["importance_std"].dims == ("feature", "estimator")
    assert results["n_train"].dims == results["n_test"].dims == ("repeat", "fold")
    assert list(results["feature"].values) == list(X.columns)
    assert list(results["mid"].values) == list(X.index)
    for name in results.variables:
        assert {"long_name", "description"} <= set(results[name].attrs), name
    assert (results.attrs["repeats"], results.attrs["seed"]) == (2, 3)
    assert "hold-out models" in results.attrs["protocol"]


def test_deterministic(small):
    X, y, holdout, results = small
    again = run_protocol(X, y, holdout, methods=list(results["estimator"].values), repeats=2,
                         seed=3)
    xr.testing.assert_identical(again, results)
    other = run_protocol(X, y, holdout, methods=["decision_tree"], repeats=2, seed=4,
                         importance=False)
    assert not np.array_equal(other["test_fold"].values, results["test_fold"].values)


def test_metrics_match_sklearn(small):
    X, y, holdout, results = small
    repeat, fold, method = 1, 2, "decision_tree"
    test = _fold_rows(results, repeat, fold)
    seed = int(results["model_seed"].values[repeat, fold])
    model = make_assessor(method, seed).fit(X.to_numpy()[~test], y[~test])
    predicted = model.predict(X.to_numpy()[test])
    m = list(results["estimator"].values).index(method)
    np.testing.assert_array_equal(results["prediction"].values[repeat, test, m], predicted)
    one = results.isel(repeat=repeat, fold=fold, estimator=m)
    assert float(one["accuracy"]) == accuracy_score(y[test], predicted)
    assert float(one["f1"]) == pytest.approx(f1_score(y[test], predicted, zero_division=0))
    assert float(one["kappa"]) == pytest.approx(cohen_kappa_score(y[test], predicted))
    # every evaluation against sklearn's metrics on the recorded predictions
    for r in range(2):
        for f in range(3):
            rows = _fold_rows(results, r, f)
            for m, _ in enumerate(results["estimator"].values):
                pred = results["prediction"].values[r, rows, m]
                cell = results.isel(repeat=r, fold=f, estimator=m)
                assert float(cell["accuracy"]) == accuracy_score(y[rows], pred)
                assert float(cell["f1"]) == pytest.approx(f1_score(y[rows], pred,
                                                                   zero_division=0))
                with np.errstate(invalid="ignore"):
                    kappa = cohen_kappa_score(y[rows], pred) if len(set(pred)) > 1 \
                        or len(set(y[rows])) > 1 else np.nan
                np.testing.assert_allclose(float(cell["kappa"]), kappa, rtol=1e-12)


def test_binary_metrics_edge_cases():
    truth = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    pred = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]])
    accuracy, f1, kappa = binary_metrics(truth, pred)
    np.testing.assert_array_equal(accuracy, [1.0, 1.0, 0.0, 0.75, 0.0])
    np.testing.assert_allclose(f1, [1.0, 0.0, 0.0, 2 / 3, 0.0])
    np.testing.assert_allclose(kappa, [np.nan, np.nan, -1.0, 0.5, 0.0])
    for t, p, k in zip(truth[2:], pred[2:], kappa[2:]):
        assert k == pytest.approx(cohen_kappa_score(t, p))


def test_importance_equals_sklearn_permutation_importance(small):
    X, y, holdout, results = small
    values = X.to_numpy()
    for method in ("logistic", "decision_tree"):
        per_fold = []
        for r in range(2):
            for f in range(3):
                test = _fold_rows(results, r, f)
                model = make_assessor(method, int(results["model_seed"].values[r, f]))
                model.fit(values[~test], y[~test])
                reference = permutation_importance(
                    model, values[test], y[test], scoring="accuracy", n_repeats=5,
                    random_state=int(results["permutation_seed"].values[r, f]))
                per_fold.append(reference.importances_mean)
        got = results["importance"].sel({"estimator": method}).values
        np.testing.assert_allclose(got, np.mean(per_fold, axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(results["importance_std"].sel({"estimator": method}).values,
                                   np.std(per_fold, axis=0), rtol=0, atol=1e-12)


def test_only_feature_3_matters(small):
    X, y, holdout, results = small
    for method in ("decision_tree", "baseline_best_feature"):
        ranked = top_features(results, method, n=6)
        assert ranked.index[0] == "f3"
        assert ranked["importance"].iloc[0] > 0.3
    # the threshold rule reads f3 only: every other column's importance is exactly 0
    best = results["importance"].sel({"estimator": "baseline_best_feature"}).to_series()
    assert (best.drop("f3") == 0).all()
    assert (results["importance"].sel({"estimator": "baseline_majority"}).values == 0).all()
    assert list(top_features(results, "decision_tree", n=2).columns) == ["importance",
                                                                         "importance_std"]


def test_single_training_class_falls_back():
    # every regular model is invariant: the hold-out fold trains on one class
    X, y, holdout = _database(seed=1)
    y = np.where(holdout, y, 1)
    methods = ["logistic", "gradient_boosting", "decision_tree", "baseline_majority"]
    results = run_protocol(X, y, holdout, methods=methods, repeats=1, importance=True)
    fallback = results["fallback"].values[0]
    np.testing.assert_array_equal(fallback, [[True, True, False, False],
                                             [False, False, False, False],
                                             [False, False, False, False]])
    hold = _fold_rows(results, 0, 0)
    assert (results["prediction"].values[0, hold] == 1).all()  # the one class, every method
    # the fallback fold's importances are 0; the others are scikit-learn's
    values, expected = X.to_numpy(), []
    for f in (1, 2):
        test = _fold_rows(results, 0, f)
        model = make_assessor("logistic", int(results["model_seed"].values[0, f]))
        model.fit(values[~test], y[~test])
        expected.append(permutation_importance(
            model, values[test], y[test], scoring="accuracy", n_repeats=5,
            random_state=int(results["permutation_seed"].values[0, f])).importances_mean)
    np.testing.assert_allclose(results["importance"].sel({"estimator": "logistic"}).values,
                               (0 + expected[0] + expected[1]) / 3, rtol=0, atol=1e-12)
    accuracy = results["accuracy"].values[0, 0]
    np.testing.assert_allclose(accuracy, y[hold].mean())
    # truth and prediction constant and equal on a regular fold: kappa undefined -> NaN
    majority = results.isel(repeat=0, estimator=3)
    assert np.isnan(majority["kappa"].values[1:]).all()
    np.testing.assert_array_equal(majority["f1"].values[1:], [1.0, 1.0])


def test_input_errors():
    X, y, holdout = _database()
    with pytest.raises(InputError, match="labels must be 0 .* found \\['-1'\\]"):
        run_protocol(X, np.where(np.arange(46) == 4, -1, y), holdout, methods=["linear"])
    with pytest.raises(InputError, match="at least 1 hold-out model"):
        run_protocol(X, y, np.zeros(46, bool), methods=["linear"])
    with pytest.raises(InputError, match="unknown method 'svm'"):
        run_protocol(X, y, holdout, methods=["svm"])
    with pytest.raises(InputError, match="robust_feature=None"):
        run_protocol(X, y, holdout, methods=["baseline_robust_accuracy"])
    with pytest.raises(InputError, match="'robust' is not a column of X"):
        run_protocol(X, y, holdout, methods=["linear"], robust_feature="robust")
    with pytest.raises(InputError, match="infinite values in columns \\['f2'\\]"):
        run_protocol(X.assign(f2=np.inf), y, holdout, methods=["linear"])
    with pytest.raises(InputError, match="repeats must be an int >= 1"):
        run_protocol(X, y, holdout, methods=["linear"], repeats=0)


def test_mid_column_nan_and_aligned_series():
    X, y, holdout = _database()
    table = X.reset_index()  # the paper80 shape: column mid, then the features
    table.loc[4, "f1"] = np.nan
    series = pd.Series(y, index=X.index)[::-1]  # aligned by model id, not position
    results = run_protocol(table, series, holdout, methods=["random_forest", "linear"],
                           repeats=1, importance=False, robust_feature="f3")
    assert list(results["mid"].values) == list(X.index)
    np.testing.assert_array_equal(results["label"].values, y)
    assert np.isfinite(results["accuracy"].values).all()
    assert results.attrs["robust_feature"] == "f3"


def test_robust_baseline_and_custom_methods():
    X, y, holdout = _database(seed=5)
    results = run_protocol(X, y, holdout, methods=["baseline_robust_accuracy"], repeats=1,
                           robust_feature="f0", importance=False)
    values = X.to_numpy()
    for f in range(3):  # the rule on f0 (noise), refit by hand per fold
        test = _fold_rows(results, 0, f)
        rule = FeatureThreshold(feature=0).fit(values[~test], y[~test])
        np.testing.assert_array_equal(results["prediction"].values[0, test, 0],
                                      rule.predict(values[test]))
    custom = {"baseline_always_one": DummyClassifier(strategy="constant", constant=1),
              "stump": DecisionTreeClassifier(max_depth=1)}
    results = run_protocol(X, y, holdout, methods=custom, repeats=2, importance=False)
    assert list(results["method_kind"].values) == ["baseline", "assessor"]
    for r in range(2):
        for f in range(3):
            assert results["accuracy"].values[r, f, 0] == y[_fold_rows(results, r, f)].mean()
    assert results["accuracy"].sel({"estimator": "stump"}).min() > 0.85  # f3 decides the label


# --- comparison --------------------------------------------------------------------------

def test_nadeau_bengio_by_hand():
    d = np.array([0.10, 0.05, 0.20, -0.02, 0.08, 0.11])
    ratio = 0.5
    t_hand = d.mean() / np.sqrt((1 / 6 + ratio) * np.var(d, ddof=1))
    p_hand = 2 * (1 - stats.t.cdf(abs(t_hand), df=5))
    t, p = nadeau_bengio_ttest(d, ratio)
    assert t == pytest.approx(t_hand, rel=1e-12)
    assert p == pytest.approx(p_hand, rel=1e-9)
    assert nadeau_bengio_ttest(np.zeros(4), 0.5) == (0.0, 1.0)
    assert nadeau_bengio_ttest(np.full(4, 0.1), 0.5) == (np.inf, 0.0)
    assert np.isnan(nadeau_bengio_ttest([0.1], 0.5)[1])


def _results(accuracy, kappa, names=("tree", "baseline_a", "baseline_b")):
    accuracy = np.asarray(accuracy, dtype=float)  # (repeat, fold, method)
    n_test = np.array([[10, 20, 20]] * accuracy.shape[0])
    return xr.Dataset(
        {"accuracy": (("repeat", "fold", "estimator"), accuracy),
         "f1": (("repeat", "fold", "estimator"), accuracy),
         "kappa": (("repeat", "fold", "estimator"), np.asarray(kappa, dtype=float)),
         "n_test": (("repeat", "fold"), n_test),
         "n_train": (("repeat", "fold"), 50 - n_test)},
        coords={"estimator": list(names)})


def test_summary_by_hand():
    tree = np.array([[0.9, 0.8, 0.85], [0.95, 0.7, 0.9]])
    base_a = np.array([[0.6, 0.6, 0.7], [0.65, 0.6, 0.55]])
    base_b = base_a - 0.1
    kappa = np.stack([tree, base_a, base_b], axis=-1) - 0.5
    kappa[1, 2, 1] = np.nan  # undefined kappa: left out of the mean
    table = summary(_results(np.stack([tree, base_a, base_b], axis=-1), kappa))
    assert list(table["kind"]) == ["assessor", "baseline", "baseline"]
    assert table.loc["tree", "accuracy_mean"] == pytest.approx(tree.mean())
    assert table.loc["tree", "accuracy_sem"] == pytest.approx(tree.std(ddof=1) / np.sqrt(6))
    assert table.loc["baseline_a", "kappa_mean"] == pytest.approx(np.nanmean(kappa[..., 1]))
    assert table.loc["tree", "accuracy_min"] == 0.7


def _predictions(prediction, label, holdout, names, kinds, selection=None):
    """run_protocol's prediction layout: prediction (repeat, mid, estimator), and the
    selection's cross-validated predictions of the regular models (mid, estimator), -1
    for the hold-out models (default: every method right on every regular model)."""
    prediction = np.asarray(prediction, dtype=np.int8)
    label, holdout = np.asarray(label, dtype=np.int8), np.asarray(holdout, dtype=bool)
    if selection is None:
        selection = np.repeat(label[:, None], prediction.shape[2], axis=1)
    selection = np.where(holdout[:, None], -1, selection).astype(np.int8)
    mids = [f"m{k}" for k in range(prediction.shape[1])]
    return xr.Dataset(
        {"prediction": (("repeat", "mid", "estimator"), prediction),
         "selection_prediction": (("mid", "estimator"), selection),
         "label": ("mid", label), "holdout": ("mid", holdout)},
        coords={"mid": mids, "estimator": list(names),
                "method_kind": ("estimator", list(kinds))}, attrs={"selection_folds": 2})


def test_compare_is_the_hold_out_sign_flip_test_by_hand():
    """Three methods, 8 hold-out models: the pair is the one the selection's predictions of
    the regular models choose (not the hold-out's best), then the sign-flip test
    enumerated by hand (2^8 flips); the regular models' protocol predictions (wrong for the
    assessor everywhere) do not enter it."""
    label = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 0])
    holdout = np.arange(12) < 8
    tree = np.array([label, label])  # (repeat, mid): right on every hold-out model ...
    tree[:, 8:] = 1 - label[8:]  # ... wrong on every regular model (ignored by the test)
    base = np.array([label, label])
    base[:, [0, 3, 5, 7]] = 1 - label[[0, 3, 5, 7]]  # wrong on 4 models in both repeats
    base[1, 6], base[0, 1] = 1 - label[6], 1 - label[1]  # and on 2 in one repeat
    perfect = np.array([label, label])  # right on every hold-out model, but ...
    selection = np.stack([label, label, label], axis=1)
    selection[8, 2] = 1 - label[8]  # ... wrong on one regular model in the selection
    results = _predictions(np.stack([tree, base, perfect], axis=-1), label, holdout,
                           ["tree", "baseline_a", "baseline_b"],
                           ["assessor", "baseline", "baseline"], selection)
    result = compare(results)
    c = np.stack([(tree == label).mean(axis=0), (base == label).mean(axis=0)], axis=-1)[:8]
    d = c[:, 0] - c[:, 1]
    flips = np.array(list(__import__("itertools").product([1, -1], repeat=8)))
    null = (flips * d).mean(axis=1)
    p_greater = (null >= d.mean() - 1e-12).mean()
    p_less = (null <= d.mean() + 1e-12).mean()
    assert result["chosen_assessor"] == "tree" and result["best_baseline"] == "baseline_a"
    assert result["selection"] == "2-fold CV on the 4 regular models"
    assert (result["selection_accuracy_assessor"], result["selection_accuracy_baseline"]) \
        == (1.0, 1.0)
    assert result["n_models"] == 8 and result["exact"] and result["n_draws"] == 0
    assert result["accuracy_assessor"] == pytest.approx(c[:, 0].mean()) == 1.0
    assert result["accuracy_baseline"] == pytest.approx(c[:, 1].mean()) == 0.375
    assert result["difference"] == pytest.approx(0.625)
    assert result["p_greater"] == pytest.approx(p_greater)
    assert result["p_value"] == pytest.approx(min(1, 2 * min(p_greater, p_less)))
    assert result["p_value"] == pytest.approx(2 * 4 / 256)  # 4 of 256 flips reach +0.625
    # the interval inverts the test: it excludes 0, the test rejecting
    assert 0 < result["ci_low"] < result["difference"] < result["ci_high"] <= 1
    assert result["verdict"] == (
        f"tree beats baseline_a: tree vs baseline_a, chosen by 2-fold CV on the 4 regular "
        f"models (CV accuracy 1.000 vs 1.000); on the 8 hold-out models tree 1.000 vs "
        f"baseline_a 0.375 accuracy, difference +0.625 (95% CI {result['ci_low']:+.3f} to "
        f"{result['ci_high']:+.3f}), p = {2 * 4 / 256:.3g} ({TEST_NAME})")
    # the stored layout: unlabelled models (label -1, prediction -1) are left out
    padded = _predictions(np.concatenate([np.stack([tree, base, perfect], axis=-1),
                                          -np.ones((2, 3, 3))], axis=1),
                          np.r_[label, [-1, -1, -1]], np.r_[holdout, [True, True, False]],
                          ["tree", "baseline_a", "baseline_b"],
                          ["assessor", "baseline", "baseline"],
                          np.r_[selection, -np.ones((3, 3))])
    assert compare(padded) == result


def _figures(**changes):
    figures = {"chosen_assessor": "tree", "best_baseline": "base", "n_models": 50,
               "selection": "5-fold CV on the 100 regular models",
               "selection_accuracy_assessor": 0.87, "selection_accuracy_baseline": 0.85,
               "accuracy_assessor": 0.9, "accuracy_baseline": 0.8, "difference": 0.1,
               "ci_low": 0.02, "ci_high": 0.18, "confidence": 0.95, "p_value": 0.01,
               "alpha": 0.05}
    return {**figures, **changes}


def test_verdict_sentences():
    tail = f" ({TEST_NAME})"
    chosen = ("tree vs base, chosen by 5-fold CV on the 100 regular models (CV accuracy "
              "0.870 vs 0.850); ")
    figures = ("on the 50 hold-out models tree 0.900 vs base 0.800 accuracy, difference "
               "+0.100 (95% CI +0.020 to +0.180), p = 0.01")
    assert verdict(_figures()) == f"tree beats base: {chosen}{figures}{tail}"
    # p at alpha is not below it: not significant (the decision is strict)
    at = figures.replace("p = 0.01", "p = 0.05").replace("+0.020", "+0.000")
    assert verdict(_figures(p_value=0.05, ci_low=0.0)) == (
        f"tree is ahead of base, not significantly: {chosen}{at}, not below 0.05{tail}")
    assert verdict(_figures(p_value=0.5, ci_low=-0.1, ci_high=0.3)) == (
        f"tree is ahead of base, not significantly: {chosen}on the 50 hold-out models tree "
        "0.900 vs base 0.800 accuracy, difference +0.100 (95% CI -0.100 to +0.300), "
        f"p = 0.5, not below 0.05{tail}")
    # the baseline ahead: it is named as the winner, or as ahead
    assert verdict(_figures(accuracy_assessor=0.7, difference=-0.1, ci_low=-0.18,
                            ci_high=-0.02)) == (
        f"base beats tree: {chosen}on the 50 hold-out models tree 0.700 vs base 0.800 "
        f"accuracy, difference -0.100 (95% CI -0.180 to -0.020), p = 0.01{tail}")
    assert verdict(_figures(accuracy_assessor=0.7, difference=-0.1, ci_low=-0.18,
                            ci_high=0.01, p_value=0.09)).startswith(
        "base is ahead of tree, not significantly: ")
    assert verdict(_figures(accuracy_assessor=0.8, difference=0.0, ci_low=-0.05,
                            ci_high=0.05, p_value=1.0)) == (
        f"tree and base tie: {chosen}on the 50 hold-out models tree 0.800 vs base "
        f"0.800 accuracy, difference +0.000 (95% CI -0.050 to +0.050), p = 1, not below "
        f"0.05{tail}")
    # a Monte Carlo test names itself
    assert verdict(_figures(test="sign-flip test over the hold-out models, 10,000 random "
                                 "flips")).endswith("(sign-flip test over the hold-out "
                                                    "models, 10,000 random flips)")


def test_out_of_fold_is_the_majority_over_the_repeats():
    prediction = np.array([[1, 0, 1, -1], [1, 1, 0, -1], [0, 1, 0, -1], [1, 0, 1, -1]])
    results = _predictions(prediction[..., None], [1, 1, 0, -1], [True, False, False, False],
                           ["tree"], ["assessor"])
    # 3 of 4, 2 of 4 (a tie: invariant), 2 of 4 (tie), never tested
    np.testing.assert_array_equal(out_of_fold(results, "tree").values, [1, 1, 1, -1])
    results["prediction"][:, 2, 0] = [0, 0, 0, 1]
    np.testing.assert_array_equal(out_of_fold(results, "tree").values, [1, 1, 0, -1])


def test_compare_needs_both_kinds():
    results = _predictions(np.zeros((1, 4, 2)), [0, 1, 0, 1], [True, True, False, False],
                           ["tree", "forest"], ["assessor", "assessor"])
    with pytest.raises(InputError, match="at least one assessor and one baseline; got 2 "
                                         "and 0"):
        compare(results)


def test_assessor_beats_baselines_on_xor():
    X, y, holdout = _database(n=120, n_holdout=40, p=4, seed=2,
                              label=lambda X, rng: ((X["f1"] > 0) ^ (X["f3"] > 0)).astype(int)
                              .to_numpy())
    methods = ["random_forest", "baseline_best_feature", "baseline_majority"]
    results = run_protocol(X, y, holdout, methods=methods, repeats=3, seed=0,
                           importance=False)
    result = compare(results)
    best = result["chosen_assessor"]
    assert best == "random_forest" and result["n_models"] == 40
    assert result["selection"] == "3 x 5-fold CV on the 80 regular models"
    assert result["selection_accuracy_assessor"] > 0.8
    assert result["accuracy_assessor"] > 0.8 and result["accuracy_baseline"] < 0.65
    assert result["difference"] > 0.2 and result["ci_low"] > 0.05
    assert result["p_value"] < 0.01 and result["significant"]
    assert result["verdict"].startswith(
        f"{best} beats {result['best_baseline']}: {best} vs {result['best_baseline']}, "
        f"chosen by 3 x 5-fold CV on the 80 regular models (CV accuracy ")
    assert f"difference {result['difference']:+.3f} (95% CI " in result["verdict"]


def test_no_assessor_beats_a_perfect_feature():
    X, y, holdout = _database(n=90, n_holdout=30, p=5, seed=4,
                              label=lambda X, rng: (X["f2"] > 0.1).astype(int).to_numpy())
    methods = ["linear", "logistic", "baseline_best_feature", "baseline_majority"]
    results = run_protocol(X, y, holdout, methods=methods, repeats=3, seed=0,
                           importance=False)
    result = compare(results)
    assert result["best_baseline"] == "baseline_best_feature"
    assert result["accuracy_baseline"] >= result["accuracy_assessor"]
    assert not result["significant"] or result["difference"] < 0
    assert not result["verdict"].startswith(f"{result['chosen_assessor']} beats")
    assert result["chosen_assessor"] in result["verdict"]
    assert f"p = {result['p_value']:.3g}" in result["verdict"]
    assert result["verdict"].endswith(f"({TEST_NAME})")


def test_paper_scale_protocol_finds_the_signal():
    """150 models x 80 features, every method, importances: the informative feature wins.
    (Its speed at 10 repeats is a benchmark's business, not a test's.)"""
    rng = np.random.default_rng(0)
    columns = [f"f{i}" for i in range(80)]
    X = pd.DataFrame(rng.normal(size=(150, 80)), columns=columns)
    y = ((X["f3"] + 0.5 * X["f7"] + 0.3 * rng.normal(size=150)) > 0).astype(int).to_numpy()
    X.iloc[5, 10] = np.nan
    holdout = np.arange(150) < 50
    results = run_protocol(X, y, holdout, methods=list(ASSESSORS + BASELINES), repeats=3,
                           seed=0, robust_feature="f3")
    assert results["accuracy"].shape == (3, 3, 9)
    assert np.isfinite(results["accuracy"].values).all()
    for method in ("random_forest", "gradient_boosting", "baseline_best_feature"):
        assert top_features(results, method, n=1).index[0] == "f3"
    table = summary(results)
    assert table.loc["baseline_majority", "accuracy_mean"] < 0.6
    assert table.loc["gradient_boosting", "accuracy_mean"] > 0.75


class _RefusesToFit(BaseEstimator, ClassifierMixin):
    """An estimator whose fit fails on two-class data, as AdaBoost does on features that
    carry no information ("worse than random")."""

    def fit(self, X, y):
        raise ValueError("BaseClassifier in AdaBoostClassifier ensemble is worse than "
                         "random, ensemble can not be fit.\nsecond line")

    def predict(self, X):
        return np.zeros(len(X), dtype=int)


def test_a_fit_that_fails_on_two_classes_is_one_line_naming_the_method_and_fold():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(30, 2)), index=[f"m{i}" for i in range(30)],
                     columns=["a", "b"])
    y = np.tile([0, 1], 15)
    holdout = np.arange(30) >= 20
    with pytest.raises(InputError) as raised:
        run_protocol(X, y, holdout, methods={"stubborn": _RefusesToFit()}, repeats=1,
                     importance=False)
    message = str(raised.value)
    assert message.startswith("field 'methods': stubborn cannot be fitted on repeat 0, test "
                              "fold holdout: BaseClassifier in AdaBoostClassifier ensemble is "
                              "worse than random, ensemble can not be fit.")
    assert "\n" not in message and "second line" not in message


# --- no leakage, no stale copies -----------------------------------------------------------

def test_predictions_are_those_of_the_unpermuted_test_rows():
    """Every stored prediction and accuracy is the fitted method's on the test fold as it
    is, not on one of the permuted copies stacked for the importances (the label here is
    decided by the last column, so the last copy, with it permuted, would differ)."""
    X, y, holdout = _database(n=60, n_holdout=20, p=4, seed=5)  # label: f3 > 0, f3 last
    methods = ["decision_tree", "logistic", "baseline_best_feature"]
    results = run_protocol(X, y, holdout, methods=methods, repeats=2, seed=1)
    values = X.to_numpy()
    for m, method in enumerate(methods):
        for r in range(2):
            for f in range(3):
                test = _fold_rows(results, r, f)
                seed = int(results["model_seed"].values[r, f])
                model = (make_assessor(method, seed) if method != "baseline_best_feature"
                         else FeatureThreshold())
                model.fit(values[~test], y[~test])
                expected = model.predict(values[test])
                np.testing.assert_array_equal(results["prediction"].values[r, test, m],
                                              expected)
                assert results["accuracy"].values[r, f, m] == (expected == y[test]).mean()
    assert results["accuracy"].sel({"estimator": "decision_tree"}).min() > 0.85


def test_a_memorising_one_nearest_neighbour_scores_chance_on_random_labels():
    """The direct leakage test: 1-NN memorises its training models, so any test model that
    leaked into training (or its label) would be scored right; on random labels it scores
    0.5 +- 0.05 under the protocol, in every fold."""
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(11)
    n, n_holdout = 3000, 1000
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"f{i}" for i in range(5)],
                     index=pd.Index([f"t{i}" if i < n_holdout else f"m{i}" for i in range(n)],
                                    name="mid"))
    y = rng.integers(0, 2, size=n)
    results = run_protocol(X, y, np.arange(n) < n_holdout,
                           methods={"one_nn": KNeighborsClassifier(n_neighbors=1)},
                           repeats=4, seed=0, importance=False)
    accuracy = results["accuracy"].sel({"estimator": "one_nn"})
    assert abs(float(accuracy.mean()) - 0.5) < 0.05
    assert (abs(accuracy.mean("repeat") - 0.5) < 0.05).all()
    # the same memoriser scored on its own training models is perfect: it would notice
    model = KNeighborsClassifier(n_neighbors=1).fit(X.to_numpy(), y)
    assert (model.predict(X.to_numpy()) == y).all()
