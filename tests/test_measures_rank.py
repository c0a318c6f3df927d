"""``ml4ml measures rank``: every single measure ranked against the labels.

Numbers are checked against scikit-learn (``roc_auc_score``), a straightforward bootstrap
written here, brute-force thresholds and the best-single-feature baseline itself; the store
tests run on a real store of imported probes and read the result with plain xarray.
"""

import shutil

import golden
import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from ml4ml import store
from ml4ml.assess.estimators import FeatureThreshold
from ml4ml.assess.protocol import fold_assignment
from ml4ml.assess.rank import bootstrap_draws, rank_columns
from ml4ml.cli import cli
from ml4ml.errors import InputError

MIDS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "t1", "t2", "t3", "t4"]
INVARIANT = {"m1", "m3", "m5", "m7", "t1", "t3"}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _table(seed=1, n=40, p=300):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:4] = [0, 1, 0, 1]  # both classes among the hold-out models
    holdout = np.zeros(n, dtype=bool)
    holdout[:16] = True
    X = rng.normal(size=(n, p))
    X[:, 0] += 2 * y  # larger: invariant
    X[:, 1] = np.round(X[:, 1])  # ties
    X[:, 2] = 1.0  # constant
    X[3, 3] = np.nan  # one NaN
    X[:, 4] -= 1.5 * y  # smaller: invariant
    return X, y, holdout, [f"c{i}" for i in range(p)]


def test_auc_interval_accuracy_and_choice_equal_independent_computations():
    X, y, holdout, names = _table()
    n_boot, seed = 400, 3
    ds = rank_columns(X, y, holdout, names, repeats=4, seed=seed, n_boot=n_boot)
    assert ds.sizes["score"] == X.shape[1]
    held, regular = holdout, ~holdout
    positive = y[held] == 1
    draws_1, draws_0 = bootstrap_draws(int(positive.sum()), int((~positive).sum()), n_boot,
                                       seed)
    for k in (0, 1, 4, 7, 150):
        row = ds.sel(score=names[k])
        x = X[:, k]
        direction = 1 if roc_auc_score(y[regular], x[regular]) >= 0.5 else -1
        assert int(row["rank_direction"]) == direction
        assert float(row["rank_auc"]) == pytest.approx(roc_auc_score(y[held], direction * x[held]),
                                                      abs=1e-12)
        # a straightforward stratified bootstrap with the same draws
        pos, neg = x[held][positive], x[held][~positive]
        truth = np.r_[np.ones(pos.size), np.zeros(neg.size)]
        aucs = [roc_auc_score(truth, direction * np.r_[pos[draws_1[b]], neg[draws_0[b]]])
                for b in range(n_boot)]
        low, high = np.percentile(aucs, [2.5, 97.5])
        assert float(row["rank_auc_low"]) == pytest.approx(low, abs=1e-12)
        assert float(row["rank_auc_high"]) == pytest.approx(high, abs=1e-12)
        # the best threshold on the regular models, tested on the hold-out ones
        rule = FeatureThreshold(feature=0).fit(x[regular, None], y[regular])
        accuracy = (rule.predict(x[held, None]) == y[held]).mean()
        assert float(row["rank_accuracy"]) == pytest.approx(accuracy, abs=1e-12)
        # brute force: no threshold on the regular models does better than the rule's
        cuts = np.r_[-np.inf, np.unique(x[regular])]
        best = max(max(((x[regular] >= c) == y[regular]).mean(),
                       ((x[regular] < c) == y[regular]).mean()) for c in cuts)
        assert rule.train_accuracy_ == pytest.approx(best)
    assert int(ds["rank_direction"].sel(score="c0")) == 1
    assert int(ds["rank_direction"].sel(score="c4")) == -1
    # chosen: the baseline's own choice in every training part of the protocol
    folds = fold_assignment(holdout, 4, seed)
    scored = [k for k in range(X.shape[1]) if k not in (2, 3)]
    counts = np.zeros(X.shape[1])
    for fold_of in folds:
        for fold in range(3):
            train = fold_of != fold
            fitted = FeatureThreshold().fit(X[train][:, scored], y[train])
            counts[scored[fitted.feature_index_]] += 1
    np.testing.assert_allclose(ds["rank_chosen"].sel(score=names).values, counts / 12)
    assert ds["rank_chosen"].sum() == pytest.approx(1.0)


def test_nan_and_constant_columns_rank_last_with_a_reason_and_the_order():
    X, y, holdout, names = _table()
    X[:, 5] = np.nan
    ds = rank_columns(X, y, holdout, names, repeats=2, n_boot=50)
    reasons = dict(zip(ds["score"].values.tolist(), ds["rank_reason"].values.tolist()))
    assert reasons["c2"] == "constant over the labelled models"
    assert reasons["c3"] == "not finite for 1 of 40 labelled models"
    assert reasons["c5"] == "not finite for 40 of 40 labelled models"
    assert ds["score"].values.tolist()[-3:] == ["c2", "c3", "c5"]
    assert np.isnan(ds["rank_auc"].sel(score=["c2", "c3", "c5"]).values).all()
    assert ds["rank_position"].values.tolist() == list(range(1, X.shape[1] + 1))
    auc = ds["rank_auc"].values[:-3]
    assert (np.diff(auc) <= 0).all()
    # the interval holds the estimate (a percentile interval of a symmetric statistic)
    scored = ds.isel(score=slice(0, -3))
    assert (scored["rank_auc_low"] <= scored["rank_auc_high"]).all()
    # every column unscored: no crash
    nothing = rank_columns(np.full((40, 3), 2.0), y, holdout, ["a", "b", "c"], n_boot=10)
    assert (nothing["rank_reason"] == "constant over the labelled models").all()


def test_input_errors_of_the_ranking():
    X, y, holdout, names = _table()
    with pytest.raises(InputError, match="among the hold-out labelled models; found only label 1"):
        rank_columns(X, np.where(holdout, 1, y), holdout, names)
    with pytest.raises(InputError, match="labels must be 0"):
        rank_columns(X, np.where(holdout, -1, y), holdout, names)
    with pytest.raises(InputError, match="n_boot must be an int >= 2"):
        rank_columns(X, y, holdout, names, n_boot=1)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rank")
    golden.drifting_store(folder, MIDS, lambda k, mid: 0.0 if mid in INVARIANT
                          else 0.01 * (1 + 0.2 * k))
    labels = folder / "labels.csv"
    labels.write_text("mid,label\n" + "".join(f"{m},{int(m in INVARIANT)}\n" for m in MIDS))
    assert run("label", folder / "db.zarr", "--transform", "rotation", "--from",
               labels).exit_code == 0
    return folder


@pytest.fixture
def path(labelled, tmp_path):
    shutil.copytree(labelled / "db.zarr", tmp_path / "db.zarr")
    return tmp_path / "db.zarr"


def test_rank_command_writes_every_column_readable_by_plain_xarray(path):
    result = run("measures", "rank", path, "--transform", "rotation", "--repeats", "3",
                 "--bootstrap", "300")
    assert result.exit_code == 0, result.output
    assert "rank rotation: " in result.output and "12 labelled model(s) (labels 'file'; " \
        "4 hold-out, 8 regular)" in result.output
    rank = xr.open_zarr(path, group="assess/rotation/rank").load()
    measures = xr.open_zarr(path, group="measures/legacy/rotation").load()
    value = measures["value"]
    n_matrix = value.sizes["level"] * value.sizes["split"] * value.sizes["interval"] * \
        value.sizes["measure"]
    response = measures["response_value"]
    n_response = response.sizes["level"] * response.sizes["response_measure"]
    # every level x split x interval x measure, and every level x response measure
    assert rank.sizes["score"] == n_matrix + n_response
    family = rank["rank_family"].values.astype(str)
    assert (family == "matrix").sum() == n_matrix and (family == "response").sum() == n_response
    assert rank.attrs["label_source"] == "file" and rank.attrs["n_boot"] == 300
    # the best matrix column against scikit-learn, from the measures group itself
    best = str(rank["score"].values[family == "matrix"][0])
    row = rank.sel(score=best)
    column = value.sel(level=str(row["rank_level"].values), split="correct" if
                       not str(row["rank_split"].values) else str(row["rank_split"].values),
                       interval=int(row["rank_interval"]), measure=str(row["rank_measure"]
                                                                       .values))
    holdout = np.asarray([m.startswith("t") for m in measures["mid"].values])
    y = np.asarray([int(m in INVARIANT) for m in measures["mid"].values])
    x = column.values * int(row["rank_direction"])
    assert float(row["rank_auc"]) == pytest.approx(roc_auc_score(y[holdout], x[holdout]))
    assert str(rank["score"].values[0]) in result.output.splitlines()[3]
    # the printed top rows are the stored order
    assert rank["rank_position"].values[:3].tolist() == [1, 2, 3]
    assert run("store", "check", path).exit_code == 0


def test_assess_and_rank_keep_each_others_results_and_a_stale_rank_is_told(path, tmp_path):
    from ml4ml.assess.rank_stage import check_rank

    assert run("measures", "rank", path, "--transform", "rotation", "--repeats", "2",
               "--bootstrap", "100").exit_code == 0
    before = xr.open_zarr(path, group="assess/rotation/rank").load()
    result = run("assess", path, "--transform", "rotation", "--repeats", "2", "-q",
                 "--features", "selection")
    assert result.exit_code == 0, result.output
    assert "features: set 'selection' (" in result.output
    assessed = xr.open_zarr(path, group="assess/rotation").load()
    assert assessed.attrs["feature_set"] == "selection" and "rank_auc" not in assessed
    xr.testing.assert_identical(xr.open_zarr(path, group="assess/rotation/rank").load(),
                                before)
    assert run("measures", "rank", path, "--transform", "rotation", "--repeats", "2",
               "--bootstrap", "100", "--seed", "5").exit_code == 0
    xr.testing.assert_identical(xr.open_zarr(path, group="assess/rotation").load(), assessed)
    assert run("assess", path, "--transform", "rotation", "--predict", "t1").exit_code == 0
    assert check_rank(path, "rotation") == ""
    flipped = tmp_path / "flipped.csv"
    flipped.write_text("mid,label\n" + "".join(f"{m},{int(m not in INVARIANT)}\n"
                                               for m in MIDS))
    assert run("label", path, "--transform", "rotation", "--from", flipped).exit_code == 0
    assert "the labels 'file' changed since the rank" in check_rank(path, "rotation")
    tree = xr.open_datatree(path, engine="zarr")
    assert tree["assess/rotation/rank"].dataset.sizes["score"] == before.sizes["score"]


def test_response_measures_are_ranked_beside_the_matrix_measures(path):
    """The measures dataset with ``response_value`` (built here from the store's own probes
    by ``response_measures``) ranks both families."""
    from ml4ml.assess.inputs import stored_labels
    from ml4ml.measure.columns import measure_columns
    from ml4ml.measure.responses import response_measures
    from ml4ml.measure.stage import store_measures

    probes = store.open_probes(path, "legacy", "rotation").load()
    identity = int(np.flatnonzero(probes["aug_param"].values == 0)[0])
    measures = store_measures(path, "rotation")
    # per level, its units: the confidence alone, each layer's recorded statistics
    levels = {"confidence": probes["confidence"].expand_dims(unit=1, axis=-1)}
    levels |= {f"layer-{2 - k}_mean": probes["act"].sel(layer=k, drop=True).rename(stat="unit")
               for k in (0, 1)}
    value = xr.concat([response_measures(r.transpose("mid", "aug_param", "sample", "unit"),
                                         identity_index=identity,
                                         predictions=probes["prediction"])
                       for r in levels.values()], dim="level", join="exact")
    value = value.assign_coords(level=list(levels)).reindex(level=measures["level"].values)
    measures = measures.assign(response_value=value)
    table, about = measure_columns(measures)
    families = about["family"]
    n_response = measures.sizes["level"] * value.sizes["response_measure"]
    assert (families == "response").sum() == n_response
    _, by_mid = stored_labels(path, "rotation")
    y = np.asarray([by_mid[m] for m in table.index])
    holdout = np.asarray([m.startswith("t") for m in table.index])
    ds = rank_columns(table.to_numpy(), y, holdout, list(table.columns),
                      coords={"rank_family": families}, n_boot=200, repeats=2)
    response = ds.where(ds["rank_family"] == "response", drop=True)
    # the imported models share their predictions: consistency is constant, unscored
    assert response["rank_reason"].sel(score="confidence_consistency").item() == \
        "constant over the labelled models"
    name = "confidence_tv"
    x = table[name].to_numpy() * int(ds["rank_direction"].sel(score=name))
    assert float(ds["rank_auc"].sel(score=name)) == pytest.approx(
        roc_auc_score(y[holdout], x[holdout]))
    assert response.sizes["score"] == n_response
    for name in ("confidence_tv", "confidence_sv", "confidence_geed_l2", "confidence_lee_fd"):
        assert np.isfinite(float(response["rank_auc"].sel(score=name))), name
    # only the confidence drifts in this store: its layers' responses are alike
    assert response["rank_reason"].sel(score="layer-1_mean_tv").item() == \
        "constant over the labelled models"
    # the levels without responses: unscored, with their reason
    assert response["rank_reason"].sel(score="layer-1_max_tv").item().startswith(
        "not finite for 12 of 12")


def test_the_docs_rank_example_runs(path):
    import docblocks

    (block,) = docblocks.marked("test_measures_rank.py::test_the_docs_rank_example_runs")
    assert run("measures", "rank", path, "--transform", "rotation", "--repeats", "2",
               "--bootstrap", "50").exit_code == 0
    namespace = {}
    exec(block.code.replace("stores/demo-digits.zarr", str(path)), namespace)
    top = namespace["top"].load()
    assert top.sizes["score"] == 10 and (top["rank_auc_low"] <= top["rank_auc_high"]).all()


def test_one_line_errors_of_the_command(labelled, path, tmp_path):
    def fails(*args):
        result = run(*args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        out = result.output.strip()
        assert out.count("\n") == 0, out
        return out

    assert "unknown transform 'scaling'" in fails("measures", "rank", path, "--transform",
                                                  "scaling")
    assert "unknown label source 'nosuch'" in fails("measures", "rank", path, "--transform",
                                                    "rotation", "--labels", "nosuch")
    empty = tmp_path / "empty.zarr"
    with store.writing(empty, "test"):
        store.create_store(empty)
    assert "the store has no probes yet" in fails("measures", "rank", empty, "--transform",
                                                  "rotation")
    probed = tmp_path / "probed.zarr"  # probed, never measured
    assert run("import-legacy", probed, "--mid", "m1", "--results",
               labelled / "m1_results.npy", "--act", golden.act("small1")).exit_code == 0
    assert "the store has no measures" in fails("measures", "rank", probed, "--transform",
                                                 "rotation")
    (tmp_path / "fresh").mkdir()
    golden.drifting_store(tmp_path / "fresh", MIDS[:3] + MIDS[-2:], lambda k, mid: 0.0)
    assert "the store has no labels for 'rotation' yet" in fails(
        "measures", "rank", tmp_path / "fresh" / "db.zarr", "--transform", "rotation")
    assert "field '--features': unknown feature set 'nope'" in fails(
        "assess", path, "--transform", "rotation", "--features", "nope")
