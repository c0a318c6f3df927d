"""The command line end to end on the reference's golden files: import, measure, features."""

import gzip
import io
import json

import golden
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from tree import digest as tree_digest

from ml4ml import __version__, dims, store
from ml4ml.cli import cli

PLUGIN = '''
import numpy as np
from ml4ml.measure.measures import register_measure
register_measure("corner_gap", lambda m: m[..., 0, -1] - m[..., -1, 0], fill=False)
'''


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def import_case(path, case, mid=None, suite=None):
    return run("import-legacy", path, "--mid", mid or case, "--suite", suite or case,
               "--results", golden.results(case), "--act", golden.act(case))


def test_help_and_version():
    assert run("--version").output.strip() == f"ml4ml, version {__version__}"
    out = run("-h").output
    for command in ("validate", "train", "probe", "measure", "features", "import-legacy", "run"):
        assert command in out


@pytest.mark.parametrize("case", ["small1", "small2"])
def test_import_measure_features_match_the_reference(tmp_path, case):
    path = tmp_path / "ref.zarr"
    result = import_case(path, case)
    assert result.exit_code == 0, result.output
    n_params = {"small1": 31, "small2": 21}[case]
    assert f"imported {case}: {n_params} parameters" in result.output
    assert store.store_precision(str(path)) == np.float64
    result = run("measure", path, "-q")
    assert result.exit_code == 0 and f"{case}/rotation: measured 1 model(s)" in result.output
    csv = tmp_path / "features.csv"
    result = run("features", path, "--transform", "rotation", "-o", csv)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(csv)
    reference = golden.features80(json.loads(golden.expected(case).read_text()))
    assert list(table.columns) == ["mid"] + list(reference)
    assert table["mid"].tolist() == [case]
    np.testing.assert_allclose(table.iloc[0, 1:].to_numpy(float), list(reference.values()),
                               rtol=1e-6)
    # rerun does nothing
    assert "measured 0 model(s), 1 already measured" in run("measure", path, "-q").output


def test_bad_files_are_refused_and_the_store_is_untouched(tmp_path):
    path = tmp_path / "ref.zarr"
    assert import_case(path, "small3").exit_code == 0
    before = tree_digest(path)
    results = np.load(io.BytesIO(gzip.open(golden.results("small3")).read()))
    wrong = tmp_path / "wrong_results.npy"
    np.save(wrong, results[:, :, :4])  # a column short
    result = run("import-legacy", path, "--mid", "m2", "--suite", "small3", "--results", wrong,
                 "--act", golden.act("small3"))
    assert result.exit_code == 1
    assert str(wrong) in result.output and "column" in result.output
    shifted = tmp_path / "shifted_results.npy"
    off = results.copy()
    off[..., 4] += 0.5  # no identity value any more
    np.save(shifted, off)
    act = np.load(io.BytesIO(gzip.open(golden.act("small3")).read()))
    act[..., 12] += 0.5
    shifted_act = tmp_path / "shifted_act.npy"
    np.save(shifted_act, act)
    result = run("import-legacy", path, "--mid", "m3", "--suite", "small3", "--results", shifted,
                 "--act", shifted_act)
    assert result.exit_code == 1 and "identity" in result.output
    # another grid into the same group
    result = import_case(path, "small2", mid="m4", suite="small3")
    assert result.exit_code == 1 and "'aug_param' differs" in result.output
    # the same model again without --force
    result = import_case(path, "small3")
    assert result.exit_code == 1 and "already in" in result.output and "--force" in result.output
    assert tree_digest(path) == before
    # a new store is not even created for a bad file
    result = run("import-legacy", tmp_path / "new.zarr", "--mid", "m", "--results", wrong,
                 "--act", golden.act("small3"))
    assert result.exit_code == 1 and not (tmp_path / "new.zarr").exists()


def test_registered_measure_lands_beside_the_papers(tmp_path):
    path = tmp_path / "ref.zarr"
    assert import_case(path, "small2").exit_code == 0
    assert run("measure", path, "-q").exit_code == 0
    group = store.measures_group("small2", "rotation")
    paper = store.open_group(str(path), group)[dims.VALUE].load()
    plugin = tmp_path / "my_measures.py"
    plugin.write_text(PLUGIN)
    try:
        result = run("measure", path, "--plugin", plugin, "--measure", "corner_gap", "-q")
        assert result.exit_code == 0, result.output
        assert "added corner_gap for measured models" in result.output
        ds = store.open_group(str(path), group)
        assert ds[dims.MEASURE].values.tolist()[-1] == "corner_gap"
        np.testing.assert_array_equal(ds[dims.VALUE].sel(measure=paper[dims.MEASURE]).values,
                                      paper.values)
        mats = store.open_group(str(path), store.matrices_group("small2", "rotation"))
        l2 = mats[dims.MATRIX].sel(kind="l2").values  # (mid, level, split, i, j)
        flipped = l2[..., ::-1, :]  # the reference's row-reversed F
        P = l2.shape[-1]
        got = ds[dims.VALUE].sel(measure="corner_gap").values  # (mid, level, split, interval)
        for k in range(got.shape[-1]):
            window = flipped[..., k:P - k, k:P - k]
            expected = window[..., 0, -1] - window[..., -1, 0]
            np.testing.assert_allclose(got[..., k], expected, rtol=1e-12, equal_nan=True)
    finally:
        from ml4ml.measure.measures import unregister_measure

        unregister_measure("corner_gap")


def test_measure_on_a_local_cluster_equals_in_process(tmp_path):
    serial, dist = tmp_path / "a.zarr", tmp_path / "b.zarr"
    for path in (serial, dist):
        assert import_case(path, "small2", mid="m1", suite="s").exit_code == 0
        assert import_case(path, "small2", mid="t1", suite="s").exit_code == 0
    assert run("measure", serial, "-q").exit_code == 0
    result = run("measure", dist, "--workers", "2", "-q")
    assert result.exit_code == 0, result.output
    assert "measured 2 model(s)" in result.output
    a = store.open_group(str(serial), store.measures_group("s", "rotation")).load()
    b = store.open_group(str(dist), store.measures_group("s", "rotation")).load()
    assert a.identical(b)


def test_user_errors_are_one_line_with_exit_1(tmp_path):
    result = run("measure", tmp_path / "absent.zarr")
    assert result.exit_code == 1 and result.output.startswith("error: ")
    assert "no store here: the folder does not exist" in result.output
    path = tmp_path / "ref.zarr"
    assert import_case(path, "small2").exit_code == 0
    result = run("measure", path, "--measure", "nope")
    assert result.exit_code == 1 and "unknown measure(s) ['nope']" in result.output
    result = run("features", path, "--transform", "rotation", "-o", tmp_path / "f.csv")
    assert result.exit_code == 1 and "run 'ml4ml measure" in result.output
    result = run("measure", path, "--suite", "zzz")
    assert result.exit_code == 1 and "unknown suite 'zzz'; the store has: small2" in result.output
