"""The answer first: every model's judgement (out-of-fold prediction and probability) in
the store and in ``STORE.<transform>.judgements.csv``, the summary's counts, and the
report that opens with the list of models judged not invariant (headless Chromium)."""

import re
from pathlib import Path

import golden
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier

import browser
from ml4ml import store
from ml4ml.assess import make_assessor, run_protocol
from ml4ml.assess.judgements import COLUMNS, out_of_fold_probability
from ml4ml.cli import cli
from ml4ml.cli.common import beside_store
from ml4ml.report.figures import LABEL_COLOURS

MIDS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "t1", "t2", "t3"]
INVARIANT = {"m1", "m3", "m5", "t1", "t3"}
UNLABELLED = {"m7"}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# ----------------------------------------------------------------------------- protocol
def test_the_protocols_probabilities_are_each_folds_fit_predict_proba():
    rng = np.random.default_rng(4)
    X = pd.DataFrame(rng.uniform(-1, 1, size=(40, 5)), columns=[f"f{i}" for i in range(5)],
                     index=[f"t{i}" if i < 12 else f"m{i}" for i in range(40)])
    y = ((X["f1"] + 0.3 * rng.standard_normal(40)) > 0).astype(int).to_numpy()
    holdout = np.arange(40) < 12
    forest = RandomForestClassifier(n_estimators=15)
    results = run_protocol(X, y, holdout, methods={"forest": forest,
                                                   "linear": make_assessor("linear")},
                           repeats=3, seed=2, importance=False)
    assert results["probability"].dims == ("repeat", "mid", "estimator")
    proba = results["probability"].sel(estimator="forest").values
    folds = results["test_fold"].values
    for repeat in range(3):
        for fold in range(3):
            test = folds[repeat] == fold
            fit = clone(forest).set_params(
                random_state=int(results["model_seed"].values[repeat, fold]))
            fit.fit(X.to_numpy()[~test], y[~test])
            column = list(fit.classes_).index(1)
            np.testing.assert_array_equal(proba[repeat, test],
                                          fit.predict_proba(X.to_numpy()[test])[:, column])
            # the prediction stored beside it is that fit's too
            np.testing.assert_array_equal(
                results["prediction"].sel(estimator="forest").values[repeat, test],
                fit.predict(X.to_numpy()[test]))
    # the linear assessor has no probabilities: NaN, and its out-of-fold probability is
    # the fraction of repeats predicting invariant
    assert np.isnan(results["probability"].sel(estimator="linear").values).all()
    linear = out_of_fold_probability(results, "linear")
    votes = results["prediction"].sel(estimator="linear").values
    np.testing.assert_array_equal(linear.values, (votes == 1).mean(axis=0))
    assert linear.attrs["kind"] == "vote_fraction"
    forest_oof = out_of_fold_probability(results, "forest")
    np.testing.assert_allclose(forest_oof.values, proba.mean(axis=0), rtol=0, atol=1e-15)
    assert forest_oof.attrs["kind"] == "probability"


def test_out_of_fold_probability_is_over_the_repeats_a_model_was_tested_in():
    prediction = np.array([[1, 0, -1], [1, 1, -1], [0, 1, -1]], dtype=np.int8)[..., None]
    probability = np.array([[0.9, 0.2, np.nan], [0.7, 0.6, np.nan], [0.2, 0.9, np.nan]])
    results = xr.Dataset({"prediction": (("repeat", "mid", "estimator"), prediction),
                          "probability": (("repeat", "mid", "estimator"),
                                          probability[..., None])},
                         coords={"mid": ["a", "b", "c"], "estimator": ["tree"]})
    value = out_of_fold_probability(results, "tree")
    np.testing.assert_allclose(value.values[:2], [0.6, 1.7 / 3])
    assert np.isnan(value.values[2]) and value.dims == ("mid",)


def _models_table():
    """A mixed models table: two trained CNNs, a trained ResNet, an added export and an
    imported model, as the stages write them (missing fields empty or NaN)."""
    return xr.Dataset({
        "arch": ("mid", np.array(["cnn5", "cnn5", "resnet", "export", ""], dtype=object)),
        "augmentation": ("mid", np.array(["rotation", "scaling", "none", "none", ""],
                                         dtype=object)),
        "aug_range": ("mid", [20.0, 0.2, 0.0, 0.0, np.nan]),
        "anomaly": ("mid", [4, 0, 0, 0, 0]),
        "holdout": ("mid", [False, False, True, False, True]),
        "source": ("mid", np.array(["", "", "", "added", "legacy"], dtype=object)),
        "checkpoint_format": ("mid", np.array(["", "", "", "export", ""], dtype=object)),
        "checkpoint": ("mid", np.array(["/c/a.pt", "/c/b.pt", "/c/r.pt",
                                        "/home/me/<x>.pt2", ""], dtype=object)),
        "results_file": ("mid", np.array(["", "", "", "", "/data/t9_results.npy"],
                                         dtype=object))},
        coords={"mid": np.array(["a", "b", "r", "x", "t9"], dtype=object)})


def test_every_kind_of_model_names_its_source():
    from ml4ml.assess.judgements import model_sources

    assert model_sources(_models_table()) == [
        "cnn5, rotation ± 20 degrees, anomaly 4 (class_ordered)",
        "cnn5, scaling factor 1 ± 0.2, no anomaly",
        "resnet, no augmentation, no anomaly",
        "added: export file <x>.pt2",
        "imported: t9_results.npy"]
    # one architecture among the trained models: not repeated on every row
    one = _models_table().isel(mid=[0, 1, 3])
    assert model_sources(one)[0] == "rotation ± 20 degrees, anomaly 4 (class_ordered)"


def test_a_model_outside_the_assessment_is_not_judged():
    from ml4ml.assess.judgements import answer_counts, judgement_table

    models = _models_table()
    mids = ["a", "b", "r", "x"]  # t9 was not measured when the assessment was made
    assessment = xr.Dataset({
        "out_of_fold": ("mid", np.array([0, 1, -1, 0], dtype=np.int8)),
        "out_of_fold_probability": ("mid", [0.2, 0.9, np.nan, 0.4]),
        "predicted": ("mid", np.array([0, 1, 0, 1], dtype=np.int8)),
        "score": ("mid", [0.1, 0.95, 0.3, 0.6]),
        "robust_accuracy": ("mid", [0.1, 0.8, 0.2, 0.5])},
        coords={"mid": np.array(mids, dtype=object)},
        attrs={"chosen_assessor": "tree", "label_source": "file"})
    assessment["out_of_fold_probability"].attrs["kind"] = "probability"
    clean = pd.Series([0.9, 0.8, 0.7, 0.6, 0.5], index=["a", "b", "r", "x", "t9"])
    table = judgement_table(assessment, models, {"a": 1, "b": 1, "x": 0}, clean)
    assert table["mid"].tolist() == ["a", "b", "r", "x", "t9"]
    assert table["judgement"].tolist() == [0, 1, 0, 0, -1]
    assert table["judged_by"].tolist() == ["out_of_fold", "out_of_fold", "refit",
                                           "out_of_fold", "none"]
    assert table["disagrees_with_label"].tolist() == [True, False, False, False, False]
    assert table["label"].tolist() == [1, 1, -1, 0, -1]
    assert np.isnan(table["refit_score"].iloc[-1])
    assert answer_counts(table) == {
        "models": 5, "judged": 4, "variant": 3, "invariant": 1, "labelled": 3,
        "labelled_variant": 2, "unlabelled": 1, "unlabelled_variant": 1, "disagree": 1,
        "unjudged": 1}
    # the page says so, and escapes what comes from files
    from ml4ml.report.answer import answer_section

    html = answer_section(table, answer_counts(table), transform="rotation")
    assert "The answer: 3 of 4 models are not invariant to rotation" in html
    assert "added: export file &lt;x&gt;.pt2" in html and "<x>" not in html
    assert "1 not in the assessment (no measures when it was made)" in html
    assert "<td>refit 0.300</td>" in html  # the unlabelled model: its refit score


# ----------------------------------------------------------------------------- assess CLI
@pytest.fixture(scope="module")
def assessed(tmp_path_factory):
    """Ten imported models, one unlabelled, assessed by ``ml4ml assess`` (its output)."""
    folder = tmp_path_factory.mktemp("judgements")
    golden.drifting_store(folder, MIDS, lambda k, mid: 0.0 if mid in INVARIANT
                          else 0.02 * (1 + 0.1 * k))
    labels = folder / "labels.csv"
    labels.write_text("mid,label\n" + "".join(f"{m},{int(m in INVARIANT)}\n" for m in MIDS
                                              if m not in UNLABELLED))
    path = folder / "db.zarr"
    assert run("label", path, "--transform", "rotation", "--from", labels).exit_code == 0
    result = run("assess", path, "--transform", "rotation", "--repeats", "4", "-q")
    assert result.exit_code == 0, result.output
    return path, result.output


def _counts_line(table: pd.DataFrame, chosen: str, repeats: int) -> str:
    """The summary's answer line, from the CSV's own columns."""
    labelled = table[table["judged_by"] == "out_of_fold"]
    unlabelled = table[table["judged_by"] == "refit"]
    judged = table[table["judgement"] >= 0]
    parts = [f"{(labelled['judgement'] == 0).sum()} of {len(labelled)} labelled out of fold "
             f"(the majority over {repeats} repeats of fits that never saw the model's label)"]
    if len(unlabelled):
        parts.append(f"{(unlabelled['judgement'] == 0).sum()} of {len(unlabelled)} unlabelled "
                     f"by the refit {chosen}")
    return (f"variant:  {(judged['judgement'] == 0).sum()} of {len(judged)} models judged not "
            f"invariant by {chosen}: {', '.join(parts)}; "
            f"{int(table['disagrees_with_label'].sum())} disagree with their label")


def check_csv_matches_the_store(path: Path, csv: Path) -> pd.DataFrame:
    """Every model of the store, its label, out-of-fold prediction and probability (both
    recomputed from the protocol's arrays), refit label and score, hold-out flag."""
    table = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    assert list(table.columns) == list(COLUMNS)
    models = xr.open_zarr(path, group="models").load()
    ds = xr.open_zarr(path, group="assess/rotation").load()
    labels = xr.open_zarr(path, group="labels/rotation").load()
    mids = models["mid"].values.tolist()
    assert table["mid"].tolist() == mids
    source = ds.attrs["label_source"]
    by_mid = dict(zip(labels["mid"].values.tolist(),
                      labels["label"].sel(source=source).values.tolist()))
    assert table["label"].tolist() == [by_mid.get(m, -1) for m in mids]
    assert table["holdout"].tolist() == models["holdout"].values.tolist()
    at = ds.sel(mid=mids)  # every model is measured here
    chosen = ds.attrs["chosen_assessor"]
    votes = at["prediction"].sel(estimator=chosen).values
    proba = at["probability"].sel(estimator=chosen).values
    tested = votes >= 0
    n = tested.sum(axis=0)
    majority = np.where(n > 0, (2 * ((votes == 1) & tested).sum(axis=0) >= n).astype(int), -1)
    assert table["oof_prediction"].tolist() == majority.tolist()
    assert table["oof_prediction"].tolist() == at["out_of_fold"].values.tolist()
    if np.isfinite(proba[tested]).any():
        mean = np.where(n > 0, np.where(tested, proba, 0).sum(axis=0) / np.maximum(n, 1),
                        np.nan)
    else:
        mean = np.where(n > 0, ((votes == 1) & tested).sum(axis=0) / np.maximum(n, 1), np.nan)
    np.testing.assert_allclose(table["oof_probability"], mean, rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(table["oof_probability"],
                                  at["out_of_fold_probability"].values)
    assert table["refit_prediction"].tolist() == at["predicted"].values.tolist()
    np.testing.assert_array_equal(table["refit_score"], at["score"].values)
    judgement = np.where(majority >= 0, majority, at["predicted"].values)
    assert table["judgement"].tolist() == judgement.tolist()
    label = table["label"].to_numpy()
    assert table["disagrees_with_label"].tolist() == \
        ((label >= 0) & (judgement != label)).tolist()
    (suite, _), = store.list_groups(path, "measures")
    measures = xr.open_zarr(path, group=f"measures/{suite}/rotation").load()
    centre = measures["accuracy"].sel(aug_param=0.0).sel(mid=mids).values
    np.testing.assert_array_equal(table["clean_accuracy"], centre)
    return table


def test_assess_writes_every_judgement_beside_the_store(assessed):
    path, out = assessed
    csv = Path(f"{path}.rotation.judgements.csv")
    table = check_csv_matches_the_store(path, csv)
    ds = xr.open_zarr(path, group="assess/rotation")
    chosen = ds.attrs["chosen_assessor"]
    # the unlabelled model is judged by the refit assessor; the others out of fold
    assert table.set_index("mid").loc["m7", "judged_by"] == "refit"
    assert np.isnan(table.set_index("mid").loc["m7", "oof_probability"])
    assert set(table.loc[table["judged_by"] == "out_of_fold", "mid"]) == set(MIDS) - UNLABELLED
    # imported models name their file
    assert table["source"].tolist() == [f"imported: {m}_results.npy" for m in MIDS]
    lines = out.splitlines()
    assert f"  {_counts_line(table, chosen, 4)}" in lines
    assert f"  judgements: {csv}  (every model: label, out-of-fold prediction and " \
           f"probability, refit score, source, clean accuracy)" in lines
    # --predict still judges with the stored assessor, as the CSV's refit columns say
    result = run("assess", path, "--transform", "rotation", "--predict", "m7", "m1")
    assert result.exit_code == 0, result.output
    refit = table.set_index("mid")
    for line, mid in zip(result.output.splitlines(), ("m7", "m1")):
        verdict = "invariant" if refit.loc[mid, "refit_prediction"] == 1 else "variant"
        assert line.startswith(f"{mid}: {verdict} (refit score "
                               f"{refit.loc[mid, 'refit_score']:.3f}, {chosen}")


def test_outputs_of_a_store_in_object_storage_go_to_the_current_folder(tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert beside_store("s3://bucket/team/db.zarr/", ".rotation.judgements.csv") == \
        tmp_path / "db.zarr.rotation.judgements.csv"
    assert beside_store("stores/db.zarr", ".report") == Path("stores/db.zarr.report")


# ----------------------------------------------------------------------------- run, report
@pytest.fixture(scope="module")
def demo(demo_run):
    folder, _, result = demo_run
    return folder / "demo.zarr", result.output


def test_run_writes_every_judgement_and_its_summary_counts_them(demo):
    path, out = demo
    csv = Path(f"{path}.rotation.judgements.csv")
    table = check_csv_matches_the_store(path, csv)
    ds = xr.open_zarr(path, group="assess/rotation")
    lines = out.splitlines()
    assert _counts_line(table, ds.attrs["chosen_assessor"], ds.sizes["repeat"]) in lines
    assert f"judgements: {csv}  (every model: label, out-of-fold prediction and " \
           f"probability, refit score, source, clean accuracy)" in lines
    # no cut list of ids: the answer is counted, and the list is in the file
    variant = table.loc[table["judgement"] == 0, "mid"].tolist()
    assert variant and not [line for line in lines if line.startswith("variant:")
                            and variant[0] in line]
    # the trained models name their recipe
    models = xr.open_zarr(path, group="models").load()
    source = table.set_index("mid")["source"]
    for k, mid in enumerate(models["mid"].values.tolist()):
        span, anomaly = float(models["aug_range"].values[k]), int(models["anomaly"].values[k])
        start = f"rotation ± {span:g} degrees, " if span else "no augmentation, "
        end = f"anomaly {anomaly} ({models['anomaly_name'].values[k]})" if anomaly else \
            "no anomaly"
        assert source[mid] == start + end, mid
    # the report carries the same table
    report = pd.read_csv(path.parent / "demo.zarr.report" / "judgements.csv")
    pd.testing.assert_frame_equal(report, pd.read_csv(csv))


def _rgb(colour: str) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def test_the_report_opens_with_the_answer_in_the_first_screen(demo):
    path, _ = demo
    index = path.parent / "demo.zarr.report" / "index.html"
    table = pd.read_csv(Path(f"{path}.rotation.judgements.csv"))
    variant = table[table["judgement"] == 0]
    with browser.page(viewport=(1400, 900)) as page:
        page.goto(index.resolve().as_uri())
        assert page.evaluate("[window.scrollX, window.scrollY]") == [0, 0]
        heading = page.locator("#answer-heading")
        assert heading.text_content() == (f"The answer: {len(variant)} of {len(table)} models "
                                          f"are not invariant to rotation")
        rows = page.locator("#variant-models tbody tr")
        assert rows.count() == len(variant)
        for box in [heading.bounding_box()] + [rows.nth(k).bounding_box() for k in range(3)]:
            assert box["y"] >= 0 and box["y"] + box["height"] <= 900, box
        # the list: the variant models, most surely variant first, with their numbers
        shown = page.evaluate("Array.from(document.querySelectorAll('#variant-models tbody "
                              "tr')).map(r => Array.from(r.cells).map(c => c.textContent))")
        ranked = variant.sort_values(["oof_probability", "mid"])
        assert [r[0] for r in shown] == ranked["mid"].tolist()
        first = ranked.iloc[0]
        assert shown[0][1] == f"{first['oof_probability']:.3f}"
        assert shown[0][4] == first["source"]
        assert shown[0][5] == f"{first['clean_accuracy']:.3f}"
        assert shown[0][2].startswith({1: "invariant", 0: "variant"}[int(first["label"])])
        # the verdict on the assessors comes after the answer
        verdict = page.locator("p.verdict").bounding_box()
        assert verdict["y"] > heading.bounding_box()["y"]
        # the legend: both classes and the disagreement mark, in the class colours
        legend = page.locator("#answer .legend")
        assert legend.count() == 1
        text = legend.text_content()
        assert "judged invariant" in text and "judged not invariant (variant)" in text
        assert "≠ label the judgement differs from the model's label" in text
        swatches = page.evaluate("['invariant', 'variant'].map(k => getComputedStyle("
                                 "document.querySelector('#answer .swatch.' + k))"
                                 ".backgroundColor)")
        assert swatches == [_rgb(LABEL_COLOURS[1]), _rgb(LABEL_COLOURS[0])]
        # every card: its top border in the colour of the class judged, the disagreeing
        # ones marked; the gallery starts with the variant models
        cards = page.evaluate("Array.from(document.querySelectorAll('.card')).map(c => "
                              "[c.id, getComputedStyle(c).borderTopColor, "
                              "c.classList.contains('disagrees'), "
                              "c.querySelector('.badge.differs') !== null])")
        judged = table.set_index("mid")
        assert len(cards) == len(table)
        for mid, colour, disagrees, badge in cards:
            assert colour == _rgb(LABEL_COLOURS[int(judged.loc[mid, "judgement"])]), mid
            assert disagrees == badge == bool(judged.loc[mid, "disagrees_with_label"]), mid
        order = [mid for mid, *_ in cards]
        assert order[:len(variant)] == ranked["mid"].tolist()
        # the filter shows only the variant models, then every model again
        page.locator(".filter button[data-show='variant']").click()
        visible = page.evaluate("Array.from(document.querySelectorAll('.card'))"
                                ".filter(c => c.offsetParent !== null).map(c => c.id)")
        assert visible == ranked["mid"].tolist()
        page.locator(".filter button[data-show='disagrees']").click()
        visible = page.evaluate("Array.from(document.querySelectorAll('.card'))"
                                ".filter(c => c.offsetParent !== null).map(c => c.id)")
        assert sorted(visible) == sorted(table.loc[table["disagrees_with_label"], "mid"])
        page.locator(".filter button[data-show='all']").click()
        assert page.evaluate("Array.from(document.querySelectorAll('.card'))"
                             ".every(c => c.offsetParent !== null)")
    html = index.read_text()
    assert re.search(r"<a href='judgements.csv'>judgements.csv</a>", html)
