"""Labels in the store, the assess command, the stored assessor, and the demo's design."""

from collections import Counter
from pathlib import Path

import golden
import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from tree import digest

from ml4ml import store
from ml4ml.assess.significance import significance_test
from ml4ml.cli import cli

DEMO = Path(__file__).resolve().parents[1] / "pipelines" / "demo-digits.toml"
MIDS = ["m1", "m2", "m3", "m4", "m5", "m6", "t1", "t2", "t3"]
INVARIANT = {"m1", "m3", "m5", "t1", "t3"}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Nine imported models whose confidence drifts with the parameter unless 'invariant'."""
    folder = tmp_path_factory.mktemp("assess")
    # less sure away from the identity unless invariant
    golden.drifting_store(folder, MIDS, lambda k, mid: 0.0 if mid in INVARIANT
                          else 0.02 * (1 + 0.1 * k))
    labels = folder / "labels.csv"
    labels.write_text("mid,label\n" + "".join(f"{m},{int(m in INVARIANT)}\n" for m in MIDS))
    return folder


@pytest.fixture
def folder(measured, tmp_path):
    import shutil

    shutil.copytree(measured / "db.zarr", tmp_path / "db.zarr")
    shutil.copy(measured / "labels.csv", tmp_path / "labels.csv")
    return tmp_path


def test_labels_are_stored_per_transform_and_source_and_refusals_write_nothing(folder):
    path = folder / "db.zarr"
    before = digest(path)
    bad = folder / "bad.csv"
    bad.write_text("mid,label\nm1,1\nm1,0\n")
    result = run("label", path, "--transform", "rotation", "--from", bad)
    assert result.exit_code == 1 and "field 'line 3': model 'm1' is labelled twice" in \
        result.output
    assert digest(path) == before and not (path / "labels").exists()
    result = run("label", path, "--transform", "rotation", "--from", folder / "labels.csv")
    assert result.exit_code == 0, result.output
    assert "labelled 9 model(s) for rotation" in result.output
    assert "5 invariant, 4 variant; source 'file'" in result.output
    ds = xr.open_zarr(path, group="labels/rotation").load()
    assert ds.attrs["current_source"] == "file" and ds.attrs["transform"] == "rotation"
    assert ds["label"].sel(source="file").values.tolist() == \
        [int(m in INVARIANT) for m in MIDS]
    assert "labels.csv (sha256 " in str(ds["source_description"].sel(source="file").values)
    assert np.issubdtype(ds["written_at"].dtype, np.datetime64)
    # the recipe proxy: imported models have no recipe, so unknown, and it becomes current
    result = run("label", path, "--transform", "rotation", "--from", "recipe")
    assert "labelled 0 model(s)" in result.output and "9 unknown" in result.output
    shown = run("label", path, "--transform", "rotation", "--show").output.splitlines()
    assert shown[0].split() == ["mid", "file", "recipe*", "measured"]
    assert shown[1].split() == ["m1", "1", "-", "yes"] and shown[2].split() == ["m2", "0", "-", "yes"]


def test_assess_writes_the_protocol_the_comparison_and_the_assessor(folder):
    path = folder / "db.zarr"
    assert run("label", path, "--transform", "rotation", "--from",
               folder / "labels.csv").exit_code == 0
    result = run("assess", path, "--transform", "rotation", "--repeats", "4", "-q")
    assert result.exit_code == 0, result.output
    assert "assess rotation: 9 labelled model(s) (labels 'file'), 12 evaluations" in \
        result.output
    for method in ("decision_tree", "random_forest", "adaboost", "linear", "logistic",
                   "gradient_boosting", "baseline_robust_accuracy", "baseline_best_feature",
                   "baseline_majority"):
        assert f"\n  {method} " in result.output
    assert "verdict: " in result.output and "(exact sign-flip test over the hold-out " \
        "models)" in result.output and "the verdict: the 3 hold-out models only" in \
        result.output
    ds = xr.open_zarr(path, group="assess/rotation").load()
    for name in ("accuracy", "f1", "kappa"):
        assert ds[name].dims == ("repeat", "fold", "estimator")
        assert ds[name].shape == (4, 3, 9)
    assert ds["importance"].dims == ("feature", "estimator")
    assert ds["feature"].values.tolist()[-1] == "robust_accuracy"
    assert ds["estimator"].values.tolist()[-3:] == ["baseline_robust_accuracy",
                                                "baseline_best_feature", "baseline_majority"]
    assert ds["fold_name"].values.tolist() == ["holdout", "regular_a", "regular_b"]
    # the hold-out models are always the hold-out fold
    test_fold = ds["test_fold"].sel(mid=["t1", "t2", "t3"]).values
    assert (test_fold == 0).all()
    # the summary agrees with the per-fold numbers
    mean = ds["accuracy"].mean(("repeat", "fold")).values
    np.testing.assert_allclose(ds["summary_accuracy_mean"].values, mean, rtol=1e-12)
    assert ds.attrs["label_source"] == "file" and ds.attrs["verdict"] in result.output
    # the verdict's pair: the highest accuracy of each kind in the selection's
    # cross-validation on the regular models; its figures: on the hold-out models
    regular = ~ds["holdout"].values
    selected = ds["selection_prediction"].values[:, regular] == \
        ds["label"].values[regular, None]
    cv = dict(zip(ds["estimator"].values.tolist(), selected.mean(axis=(0, 1))))
    kinds = dict(zip(ds["estimator"].values.tolist(), ds["method_kind"].values.tolist()))
    chosen, baseline = ds.attrs["chosen_assessor"], ds.attrs["best_baseline"]
    assert cv[chosen] == max(v for k, v in cv.items() if kinds[k] == "assessor")
    assert cv[baseline] == max(v for k, v in cv.items() if kinds[k] == "baseline")
    assert ds.attrs["comparison_selection"] == "3 x 5-fold CV on the 6 regular models"
    held = ds["holdout"].values
    correct = (ds["prediction"].values[:, held] == ds["label"].values[held][None, :, None])
    accuracy = dict(zip(ds["estimator"].values.tolist(), correct.mean(axis=(0, 1))))
    assert float(ds["comparison_difference"]) == pytest.approx(
        accuracy[chosen] - accuracy[baseline])
    assert float(ds["comparison_accuracy_assessor"]) == pytest.approx(accuracy[chosen])
    expected = significance_test(ds)
    for key in ("p_value", "p_greater", "ci_low", "ci_high"):
        assert float(ds[f"comparison_{key}"]) == expected[key]
    assert ds.attrs["comparison_models"] == 3 and "hold-out" in ds.attrs["comparison_test"]
    assert f"p = {expected['p_value']:.3g}" in ds.attrs["verdict"]
    assert "chosen by 3 x 5-fold CV on the 6 regular models" in ds.attrs["verdict"]
    # out of fold: the majority of the chosen assessor's test-fold predictions
    votes = ds["prediction"].sel({"estimator": chosen}).values
    for k, mid in enumerate(ds["mid"].values.tolist()):
        tested = votes[:, k] >= 0
        want = int(2 * (votes[tested, k] == 1).sum() >= tested.sum()) if tested.any() else -1
        assert int(ds["out_of_fold"].values[k]) == want, mid
    # no assessor reads the robust accuracy column: its permutation importance is exactly 0
    robust = ds["importance"].sel(feature="robust_accuracy")
    assert (robust.sel({"estimator": [k for k in kinds if kinds[k] == "assessor"]}).values
            == 0).all()
    # a rerun gives the same table
    again = run("assess", path, "--transform", "rotation", "--repeats", "4", "-q")
    table = [line for line in result.output.splitlines() if line.startswith("  ")]
    assert [line for line in again.output.splitlines() if line.startswith("  ")] == table
    xr.testing.assert_identical(
        xr.open_zarr(path, group="assess/rotation").load().drop_vars("assessor"),
        ds.drop_vars("assessor"))


def test_the_stored_layout_and_the_api_give_one_verdict_with_unlabelled_models(folder):
    """A store where m6 and t3 have no label: the stored group holds them at label -1
    (predictions -1); compare and significance_test on it equal those on run_protocol's
    dataset of the labelled models, and the figures stored."""
    from ml4ml.assess import compare, run_protocol
    from ml4ml.assess.estimators import ASSESSORS
    from ml4ml.assess.stage import ROBUST, _methods, feature_table

    path = folder / "db.zarr"
    partial = folder / "partial.csv"
    partial.write_text("mid,label\n" + "".join(f"{m},{int(m in INVARIANT)}\n" for m in MIDS
                                               if m not in ("m6", "t3")))
    assert run("label", path, "--transform", "rotation", "--from", partial).exit_code == 0
    result = run("assess", path, "--transform", "rotation", "--repeats", "3", "-q")
    assert result.exit_code == 0, result.output
    assert "not in the protocol (no label): 2 model(s), e.g. m6, t3" in result.output
    ds = xr.open_zarr(path, group="assess/rotation").load()
    assert ds.sizes["mid"] == 9 and ds["label"].sel(mid=["m6", "t3"]).values.tolist() == \
        [-1, -1]
    assert (ds["prediction"].sel(mid="t3").values == -1).all()
    assert (ds["selection_prediction"].sel(mid=["m6", "t3"]).values == -1).all()
    assert ds["selection_prediction"].dims == ("selection_repeat", "mid", "estimator")
    # the protocol as the stage ran it, on the labelled models alone
    table, _ = feature_table(path, "rotation", labels=True)
    labelled = table[table["label"] >= 0]
    features = [c for c in table.columns
                if c not in ("mid", "holdout", "partition", "label", ROBUST)]
    results = run_protocol(labelled.set_index("mid")[features + [ROBUST]],
                           labelled["label"].to_numpy(), labelled["holdout"].to_numpy(),
                           methods=_methods(ASSESSORS, len(features), 0), repeats=3, seed=0)
    api, stored = compare(results, seed=0), compare(ds, seed=0)
    assert stored == api
    assert significance_test(ds) == significance_test(results)
    assert api["n_models"] == 2 and api["n_selection_models"] == 5  # not 3 and 6
    assert api["selection"] == "3 x 5-fold CV on the 5 regular models"
    for key in ("difference", "p_value", "ci_low", "ci_high", "accuracy_assessor"):
        assert float(ds[f"comparison_{key}"]) == api[key]
    assert ds.attrs["verdict"].endswith(api["verdict"])
    assert ds.attrs["comparison_models"] == 2


def test_the_stored_assessor_judges_models_and_refuses_other_features(folder):
    from ml4ml.assess.stage import load_assessor

    path = folder / "db.zarr"
    assert run("label", path, "--transform", "rotation", "--from",
               folder / "labels.csv").exit_code == 0
    assert run("assess", path, "--transform", "rotation", "--repeats", "2", "-q").exit_code == 0
    estimator, features, method = load_assessor(str(path), "rotation")
    assert len(features) == 81 and features[0] == "confidence_sstv"
    result = run("assess", path, "--transform", "rotation", "--predict", "m1", "m2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("m1: ") and lines[1].startswith("m2: ") and method in lines[0]
    ds = xr.open_zarr(path, group="assess/rotation").load()
    predicted = dict(zip(ds["mid"].values.tolist(), ds["predicted"].values.tolist()))
    assert ("invariant" in lines[0]) == (predicted["m1"] == 1)
    # an assessor fit on other features is refused
    with store.writing(str(path)):
        group = store.zarr_group(str(path), "assess/rotation")
        group["assessor"].attrs["features"] = '["confidence_mean"]'
        store.commit(str(path))
    result = run("assess", path, "--transform", "rotation", "--predict", "m1")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "the assessment of 'rotation' is stale: it was made from other features than the " \
           "set 'paper80' gives now ('confidence_mean' stored, 'confidence_sstv' now)" in \
        result.stderr


def test_an_assessor_holding_foreign_code_is_never_loaded(folder):
    import skops.io

    from ml4ml.assess.stage import load_assessor
    from ml4ml.errors import StoreError

    path = folder / "db.zarr"
    assert run("label", path, "--transform", "rotation", "--from",
               folder / "labels.csv").exit_code == 0
    assert run("assess", path, "--transform", "rotation", "--repeats", "2", "-q").exit_code == 0
    foreign = skops.io.dumps(Counter({"a": 1}))  # a type outside sklearn/numpy/ml4ml
    with store.writing(str(path)):
        group = store.zarr_group(str(path), "assess/rotation")
        attrs = dict(group["assessor"].attrs)
        del group["assessor"]
        array = group.create_array("assessor", shape=(len(foreign),), dtype="u1",
                                   dimension_names=["byte"], attributes=attrs)
        array[:] = np.frombuffer(foreign, dtype=np.uint8)
        store.commit(str(path))
    with pytest.raises(StoreError, match=r"types ml4ml does not trust: \['collections.Counter'\]"):
        load_assessor(str(path), "rotation")


def test_assess_uses_the_last_written_labels_or_the_named_source(folder):
    path = folder / "db.zarr"
    flipped = folder / "flipped.csv"
    flipped.write_text("mid,label\n" + "".join(f"{m},{int(m not in INVARIANT)}\n"
                                               for m in MIDS))
    run("label", path, "--transform", "rotation", "--from", folder / "labels.csv")
    run("label", path, "--transform", "rotation", "--from", flipped, "--as", "flipped")
    result = run("assess", path, "--transform", "rotation", "--repeats", "2", "-q")
    assert "(labels 'flipped')" in result.output
    ds = xr.open_zarr(path, group="assess/rotation").load()
    assert ds["label"].sel(mid="m1").item() == 0
    result = run("assess", path, "--transform", "rotation", "--repeats", "2", "--labels",
                 "file", "-q")
    assert "(labels 'file')" in result.output
    assert xr.open_zarr(path, group="assess/rotation").load()["label"].sel(mid="m1").item() == 1
    result = run("assess", path, "--transform", "rotation", "--labels", "nope", "-q")
    assert result.exit_code == 1 and "unknown label source 'nope'; the store has file, " \
                                      "flipped" in result.output


def test_features_with_labels_and_models_without_measures(folder):
    path = folder / "db.zarr"
    run("label", path, "--transform", "rotation", "--from", folder / "labels.csv")
    out = folder / "f.csv"
    result = run("features", path, "--transform", "rotation", "--with-labels", "-o", out)
    assert result.exit_code == 0, result.output
    import pandas as pd

    table = pd.read_csv(out)
    assert list(table.columns[:5]) == ["mid", "holdout", "partition", "label",
                                       "robust_accuracy"]
    assert table["holdout"].tolist() == [m.startswith("t") for m in MIDS]
    assert table["label"].tolist() == [int(m in INVARIANT) for m in MIDS]
    # a model imported but not measured is reported, not dropped silently
    results = golden.results("small1")
    assert run("import-legacy", path, "--mid", "m7", "--results", results, "--act",
               golden.act("small1")).exit_code == 0
    result = run("features", path, "--transform", "rotation", "-o", out)
    assert "not written (no measures for rotation): 1 model(s): m7" in result.output
    selection = run("features", path, "--transform", "rotation", "--level", "confidence",
                    "--interval", "0", "--interval", "3", "--measure", "mean", "-o", out)
    assert selection.exit_code == 0, selection.output
    assert list(pd.read_csv(out).columns) == ["mid", "confidence_mean", "confidence_mean_k3"]


def test_the_demo_is_a_balanced_test_bed_by_its_spec_alone():
    from ml4ml.assess.labels import recipe_labels
    from ml4ml.config import load_pipeline
    from ml4ml.zoo.stage import recipe_table

    p = load_pipeline(DEMO)
    regular = [r for r in p.recipes if not r.holdout]
    holdout = [r for r in p.recipes if r.holdout]
    assert (len(regular), len(holdout)) == (100, 50)
    grid = p.transforms["rotation"]
    assert grid[0] == -45 and grid[-1] == 45 and len(grid) == 31
    labels = recipe_labels(recipe_table(p.recipes), "rotation", grid)
    share = np.mean(list(labels.values()))
    assert 0.35 <= share <= 0.65
    assert sum(r.anomaly == 4 for r in p.recipes) / len(p.recipes) <= 0.05
    # balanced: every (augmentation range, anomaly) cell of the main grid has as many models
    cells = Counter((r.aug_range, r.anomaly, r.lr) for r in regular if r.anomaly not in (4, 6))
    assert len(set(cells.values())) == 1 and len(cells) == 32
    # one-sided holes inside the tested range, and test leakage
    holes = [r.anomaly_removed for r in p.recipes if r.anomaly == 6]
    assert holes and all(len(h) == 1 and 0 < h[0][0] < 45 for h in holes)
    assert sum(r.anomaly == 8 for r in p.recipes) >= 12


def test_assessors_never_see_the_robust_accuracy_column():
    """The assess stage's methods: the assessors and the feature baselines read the
    features only; the robust accuracy column (here: the label itself) is for its baseline
    alone. Given it, any assessor would score 1.0."""
    import pandas as pd

    from ml4ml.assess.estimators import ASSESSORS
    from ml4ml.assess.protocol import run_protocol
    from ml4ml.assess.stage import ROBUST, _methods

    rng = np.random.default_rng(7)
    n, n_features = 90, 4
    y = np.tile([0, 1], n // 2)
    X = pd.DataFrame(rng.normal(size=(n, n_features)),
                     columns=[f"f{i}" for i in range(n_features)],
                     index=pd.Index([f"m{i}" for i in range(n)], name="mid"))
    X[ROBUST] = y.astype(float)  # a perfect formula score
    results = run_protocol(X, y, np.arange(n) < 30, methods=_methods(ASSESSORS, n_features, 0),
                           repeats=2, seed=0)
    accuracy = results["accuracy"].mean(("repeat", "fold"))
    assert float(accuracy.sel({"estimator": "baseline_robust_accuracy"})) == 1.0
    for name in ASSESSORS:
        assert float(results["importance"].sel({"estimator": name, "feature": ROBUST})) == 0
        assert float(accuracy.sel({"estimator": name})) < 0.75, name
