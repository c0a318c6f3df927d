"""Readers never use stale rows: features, assess, predict, report and plot read only rows
whose lineage matches the store's current probes, labels and features, and refuse in one
line naming the models and the command that mends them; the measure stage redoes them."""

import gzip
import io
import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner

import golden
from ml4ml import store
from ml4ml.cli import cli

MIDS = ["m1", "m2", "m3", "m4", "m5", "m6", "t1", "t2", "t3"]
INVARIANT = {"m1", "m3", "m5", "t1", "t3"}
GROUP = "measures/legacy/rotation"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def responses(k: int, mid: str, shrink: float = 1.0) -> np.ndarray:
    """The golden small1 responses, less sure away from the identity unless invariant."""
    results = np.load(io.BytesIO(gzip.open(golden.results("small1")).read()))
    rng = np.random.default_rng(k)
    params = results[:, 0, 4]
    if mid not in INVARIANT:
        results[..., 3] *= (1 - 0.02 * np.abs(params) * (1 + 0.1 * k))[:, None]
    results[..., 3] = np.clip(results[..., 3] * (1 + 0.01 * rng.standard_normal(
        results.shape[:2])), 0, 1) * shrink
    return results


def import_model(folder, mid, results, *flags):
    file = folder / f"{mid}_results.npy"
    np.save(file, results)
    result = run("import-legacy", folder / "db.zarr", "--mid", mid, "--results", file,
                 "--act", golden.act("small1"), *flags)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def assessed(tmp_path_factory):
    """Nine imported models, measured, labelled from a file and assessed."""
    folder = tmp_path_factory.mktemp("stale")
    for k, mid in enumerate(MIDS):
        import_model(folder, mid, responses(k, mid))
    path = folder / "db.zarr"
    assert run("measure", path, "-q").exit_code == 0
    (folder / "labels.csv").write_text(
        "mid,label\n" + "".join(f"{m},{int(m in INVARIANT)}\n" for m in MIDS))
    assert run("label", path, "--transform", "rotation", "--from",
               folder / "labels.csv").exit_code == 0
    result = run("assess", path, "--transform", "rotation", "--repeats", "2", "--assessor",
                 "decision_tree", "--assessor", "logistic", "-q")
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def folder(assessed, tmp_path):
    shutil.copytree(assessed / "db.zarr", tmp_path / "db.zarr")
    shutil.copy(assessed / "labels.csv", tmp_path / "labels.csv")
    return tmp_path


def one_line_error(result, expected: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: {expected}\n"


def stale_rows(path, kind: str) -> str:
    return (f"{path}: field '{kind}/legacy/rotation': the {kind} of 1 model(s) are stale "
            f"(computed from other probe data than the store holds now): m2 (run 'ml4ml "
            f"measure {path} --suite legacy --transform rotation' to redo them)")


def test_reimported_responses_make_every_reader_refuse_until_measured(folder):
    path = folder / "db.zarr"
    csv, out = folder / "f.csv", folder / "out"
    assert run("features", path, "--transform", "rotation", "-o", csv).exit_code == 0
    before = pd.read_csv(csv).set_index("mid")
    csv.unlink()
    import_model(folder, "m2", responses(1, "m2", shrink=0.5), "--force")
    one_line_error(run("features", path, "--transform", "rotation", "-o", csv),
                   stale_rows(path, "measures"))
    one_line_error(run("assess", path, "--transform", "rotation", "--repeats", "2", "-q"),
                   stale_rows(path, "measures"))
    one_line_error(run("assess", path, "--transform", "rotation", "--predict", "m1"),
                   stale_rows(path, "measures"))
    one_line_error(run("report", path, "-o", out, "-q"), stale_rows(path, "matrices"))
    one_line_error(run("plot", path, "--mid", "m1", "-o", folder / "m1.png"),
                   stale_rows(path, "matrices"))
    assert not csv.exists() and not out.exists() and not (folder / "m1.png").exists()
    # the command named redoes exactly that model, and says why
    result = run("measure", path, "--suite", "legacy", "--transform", "rotation", "-q")
    assert "measured 1 model(s), re-measured m2 (its probe data changed), 8 already " \
           "measured" in result.output
    assert run("features", path, "--transform", "rotation", "-o", csv).exit_code == 0
    after = pd.read_csv(csv).set_index("mid")
    pd.testing.assert_frame_equal(after.drop(index="m2"), before.drop(index="m2"))
    assert after.loc["m2", "confidence_mean"] == pytest.approx(
        0.5 * before.loc["m2", "confidence_mean"], rel=1e-9)
    # now the assessment is what is stale: m2's features changed since it was made
    stale = (f"{path}: field 'assess/rotation': the assessment of 'rotation' is stale: the "
             f"features of 1 model(s) changed since it was made: m2 (run 'ml4ml assess "
             f"{path} --transform rotation' to redo it)")
    one_line_error(run("assess", path, "--transform", "rotation", "--predict", "m1"), stale)
    one_line_error(run("report", path, "-o", out, "-q"), stale)
    assert run("plot", path, "--mid", "m2", "-o", folder / "m2.png").exit_code == 0
    assert run("assess", path, "--transform", "rotation", "--repeats", "2", "--assessor",
               "logistic", "-q").exit_code == 0
    assert run("assess", path, "--transform", "rotation", "--predict", "m2").exit_code == 0
    assert run("report", path, "-o", out, "-q").exit_code == 0


def test_report_and_predict_refuse_an_assessment_made_on_other_labels(folder):
    path = folder / "db.zarr"
    out = folder / "out"
    flipped = folder / "b.csv"
    flipped.write_text("mid,label\n" + "".join(f"{m},{int(m not in INVARIANT)}\n"
                                               for m in MIDS))
    assert run("label", path, "--transform", "rotation", "--from", flipped, "--as", "b") \
        .exit_code == 0
    # the report shows the current labels: never beside an assessment made on others
    one_line_error(run("report", path, "-o", out, "-q"),
                   f"{path}: field 'assess/rotation': the assessment of 'rotation' is stale: "
                   f"it was made on labels 'file', the current labels are 'b' (run 'ml4ml "
                   f"assess {path} --transform rotation' to redo it)")
    assert not out.exists()
    # predict judges with the assessor of labels 'file', which are unchanged
    assert run("assess", path, "--transform", "rotation", "--predict", "m1").exit_code == 0
    # the labels 'file' rewritten: m1 and t3 flipped
    changed = folder / "labels.csv"
    changed.write_text("mid,label\n" + "".join(
        f"{m},{int((m in INVARIANT) != (m in ('m1', 't3')))}\n" for m in MIDS))
    assert run("label", path, "--transform", "rotation", "--from", changed).exit_code == 0
    one_line_error(run("assess", path, "--transform", "rotation", "--predict", "m1"),
                   f"{path}: field 'assess/rotation': the assessment of 'rotation' is stale: "
                   f"the labels 'file' of 2 model(s) changed since it was made: m1, t3 (run "
                   f"'ml4ml assess {path} --transform rotation' to redo it)")
    assert run("assess", path, "--transform", "rotation", "--repeats", "2", "--assessor",
               "logistic", "-q").exit_code == 0
    assert run("report", path, "-o", out, "-q").exit_code == 0
    ds = xr.open_zarr(path, group="assess/rotation").load()
    assert ds.attrs["label_source"] == "file"
    assert ds["label"].sel(mid="m1").item() == 0 and ds["label"].sel(mid="t3").item() == 0


def test_the_assessment_records_its_inputs_and_predict_uses_exactly_them(folder):
    from ml4ml.assess.stage import assess_store, predict

    path = str(folder / "db.zarr")
    assess_store(path, "rotation", assessors=["logistic"], repeats=2, split="all")
    ds = xr.open_zarr(path, group="assess/rotation").load()
    assert {k: ds.attrs[k] for k in ("feature_set", "split", "label_source")} == \
        {"feature_set": "paper80", "split": "all", "label_source": "file"}
    assert len(ds.attrs["labels_digest"]) == 64 and len(ds.attrs["features_digest"]) == 64
    assert ds["feature_hash"].dims == ("mid",) and ds["feature_hash"].dtype == np.uint64
    # the refit assessor's scores, from the features it was fit on: predict gives them
    judged = predict(path, "rotation", MIDS)
    np.testing.assert_array_equal(judged["score"].to_numpy(), ds["score"].values)
    np.testing.assert_array_equal(judged["label"].to_numpy(), ds["predicted"].values)
    # the split matters: the same assessor on the 'correct' split's features scores otherwise
    from ml4ml.assess.stage import ROBUST, feature_table, load_assessor

    estimator, names, _ = load_assessor(path, "rotation")
    other, _ = feature_table(path, "rotation", split="correct")
    assert names[-1] == ROBUST
    assert not np.allclose(estimator.predict_proba(other[names].to_numpy())[:, 1],
                           ds["score"].values)


def test_features_read_only_done_rows(folder):
    """Mutation: store_features reading rows whose done flag is not set."""
    path = folder / "db.zarr"
    with store.writing(str(path)):
        assert store.clear_done(str(path), GROUP, ["m3"]) == ["m3"]
    result = run("features", path, "--transform", "rotation", "-o", folder / "f.csv")
    assert result.exit_code == 0, result.output
    assert pd.read_csv(folder / "f.csv")["mid"].tolist() == [m for m in MIDS if m != "m3"]
    assert "not written (no measures for rotation): 1 model(s): m3" in result.stderr


def test_labels_are_matched_to_models_by_id(folder):
    """Mutation: labels matched to the measured models by position instead of mid (m3 has
    no measures, so every later model would take its neighbour's label)."""
    path = folder / "db.zarr"
    with store.writing(str(path)):
        store.clear_done(str(path), GROUP, ["m3"])
    result = run("features", path, "--transform", "rotation", "--with-labels", "-o",
                 folder / "f.csv")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(folder / "f.csv")
    assert table["mid"].tolist() == [m for m in MIDS if m != "m3"]
    assert table["label"].tolist() == [int(m in INVARIANT) for m in MIDS if m != "m3"]
    result = run("assess", path, "--transform", "rotation", "--repeats", "2", "--assessor",
                 "logistic", "-q")
    assert result.exit_code == 0, result.output
    ds = xr.open_zarr(path, group="assess/rotation").load()
    assert ds["mid"].values.tolist() == [m for m in MIDS if m != "m3"]
    assert ds["label"].values.tolist() == [int(m in INVARIANT) for m in MIDS if m != "m3"]


def test_measure_clears_the_rows_of_models_whose_probe_is_no_longer_done(folder):
    """Mutation: the measure stage leaving stale rows done (their probe refused since)."""
    path = str(folder / "db.zarr")
    with store.writing(path):
        store.write_probe_failure(path, "legacy", "rotation", "m4", "refused for a test")
    # until measure runs, the readers see m4's rows as stale
    result = run("features", path, "--transform", "rotation", "-o", folder / "f.csv")
    assert result.exit_code == 1 and "the measures of 1 model(s) are stale" in result.stderr
    result = run("measure", path, "-q")
    assert result.exit_code == 0 and "measured 0 model(s), 8 already measured" in \
        result.output
    for group in (GROUP, "matrices/legacy/rotation"):
        assert store.done_mids(store.open_group(path, group)) == \
            [m for m in MIDS if m != "m4"]
    result = run("features", path, "--transform", "rotation", "-o", folder / "f.csv")
    assert result.exit_code == 0 and "1 model(s): m4" in result.stderr
