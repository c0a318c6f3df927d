"""``ml4ml store check`` finds each kind of damage; ``store repair`` mends what is safe."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

import golden
from ml4ml import dims, store
from ml4ml.cli import cli
from ml4ml.errors import StoreError
from ml4ml.measure.stage import measure_store
from ml4ml.store import arrays
from ml4ml.store.check import check_store


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    path = tmp_path_factory.mktemp("check") / "ref.zarr"
    for mid, case in (("m1", "small2"), ("m2", "small2"), ("t1", "small2")):
        assert run("import-legacy", path, "--mid", mid, "--results", golden.results(case),
                   "--act", golden.act(case)).exit_code == 0
    assert run("measure", path, "-q").exit_code == 0
    return path


@pytest.fixture
def path(measured, tmp_path):
    copy = tmp_path / "ref.zarr"
    shutil.copytree(measured, copy)
    return copy


def files_of(path, group, row):
    """{file: sha256} of a row's large chunks (one model per chunk) in a group."""
    out = {}
    for name in ("act", "confidence", "prediction"):
        for file in sorted(Path(path, group, name, "c", str(row)).rglob("*")):
            if file.is_file():
                out[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    assert out
    return out


def check(path):
    result = run("store", "check", path)
    return result.exit_code, result.output


def test_a_sound_store_checks_ok(path):
    assert check(path) == (0, f"{path}: ok\n")


def test_uncommitted_layout_is_found_and_rolled_back(path):
    with store.writing(str(path)):
        pass
    arrays.extend_rows(store.zarr_group(str(path), "probes/legacy/rotation"), ["m9"])
    code, out = check(path)
    assert code == 1 and "a layout change was never committed (0 new, 9 changed node(s)" in out
    assert "run 'ml4ml store repair'" in out
    result = run("store", "repair", path)
    assert result.exit_code == 0 and "mended /: a layout change was never committed" in \
        result.output
    assert check(path) == (0, f"{path}: ok\n")


def damage_act(path, mid_row, value):
    group = store.zarr_group(str(path), "probes/legacy/rotation")
    chunk = group["act"][mid_row:mid_row + 1]
    chunk[0, 0, 0, 0, 0] = value
    group["act"][mid_row:mid_row + 1] = chunk


def test_damaged_and_altered_rows_lose_their_done_flag_and_nothing_else(path):
    damage_act(path, 0, np.nan)  # m1: a NaN in a done row
    damage_act(path, 1, 1234.5)  # m2: a finite value, but not what was written
    untouched = files_of(path, "probes/legacy/rotation", 2)
    code, out = check(path)
    assert code == 1
    assert "1 done model(s) hold missing or non-finite values, e.g. m1 in 'act'" in out
    assert "1 done model(s) no longer match the checksum recorded when they were written, " \
           "e.g. m2" in out
    result = run("store", "repair", path)
    assert result.exit_code == 0, result.output
    probes = store.open_probes(str(path), "legacy", "rotation")
    assert store.done_mids(probes) == ["t1"]
    assert files_of(path, "probes/legacy/rotation", 2) == untouched  # t1 never touched
    # the measures computed from the damaged rows are stale now, and said so
    code, out = check(path)
    assert code == 1 and "measures/legacy/rotation: 2 done row(s) were computed from other " \
                         "probe data than the store holds now" in out
    assert run("store", "repair", path).exit_code == 0
    assert store.done_mids(store.open_group(str(path), "measures/legacy/rotation")) == ["t1"]
    assert check(path) == (0, f"{path}: ok\n")


def test_a_probe_from_another_checkpoint_is_stale(path):
    with store.writing(str(path)):
        store.update_models(str(path), xr.Dataset(
            {"checkpoint_sha256": ("mid", np.array(["0" * 64], dtype=object))},
            coords={"mid": ["m2"]}))
    code, out = check(path)
    assert code == 1 and "1 done model(s) were probed from another checkpoint than the " \
                         "model's now, e.g. m2" in out


def test_duplicates_and_missing_nodes_are_reported_not_papered_over(path):
    with store.writing(str(path)):
        group = store.zarr_group(str(path), "probes/legacy/rotation")
        mids = group["mid"][:]
        mids[2] = "m1"
        group["mid"][:] = mids
    code, out = check(path)
    assert code == 1 and "probes/legacy/rotation: model id(s) ['m1'] appear more than once" in out
    result = run("store", "repair", path)
    assert result.exit_code == 1 and "left probes/legacy/rotation: model id(s) ['m1']" in \
        result.output
    shutil.rmtree(Path(path, "matrices/legacy/rotation/matrix"))
    code, out = check(path)
    assert code == 1 and "matrices/legacy/rotation/matrix: listed in the committed layout " \
                         "but missing" in out


def test_leftover_temporary_files_are_deleted(path):
    leftover = Path(path, "probes/legacy/rotation/act/c/0/0/0/0/0.4f2a.partial")
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half a chunk")
    code, out = check(path)
    assert code == 1 and "1 temporary file(s) of an interrupted write" in out
    assert run("store", "repair", path).exit_code == 0
    assert not leftover.exists() and check(path) == (0, f"{path}: ok\n")


def test_a_bad_chunk_layout_is_reported(path):
    with store.writing(str(path)):
        group = store.zarr_group(str(path), "probes/legacy/rotation")
        group.create_array("extra", shape=(3, 4), chunks=(2, 4), dtype="f8",
                           dimension_names=["mid", "x"], fill_value=np.nan)
        store.commit(str(path))
    code, out = check(path)
    assert code == 1 and "probes/legacy/rotation/extra: chunks [2, 4] for shape [3, 4]" in out


def rename_model(path, old, new):
    """The models table's id ``old`` becomes ``new`` (the groups computed for it keep ``old``)."""
    with store.writing(str(path)):
        group = store.zarr_group(str(path), "models")
        mids = group["mid"][:]
        mids[list(mids).index(old)] = new
        group["mid"][:] = mids


def test_rows_of_a_model_the_table_lacks_are_found_with_how_to_mend_them(path):
    rename_model(path, "m2", "tm2")  # probe row 'm2', models row 'tm2'
    code, out = check(path)
    assert code == 1, out
    lines = out.splitlines()  # probes, matrices and measures each name m2, nothing else
    assert len(lines) == 4 and lines[-1].startswith("3 problem(s); 2 mended by"), out
    for group in ("probes", "matrices", "measures"):
        line = next(x for x in lines if x.startswith(f"{path}: {group}/legacy/rotation: "))
        assert "1 row(s) hold results of model id(s) the models table does not have: m2; " \
               "a changed id? 'm2' (the table has 'tm2')" in line, line
        assert f"'ml4ml import-legacy {path} --mid m2 --suite legacy --transform rotation " \
               "--force --results FILE --act FILE'" in line, line
    # repair clears the derived rows (measure redoes them) and leaves the probe row: it
    # cannot rename a model
    result = run("store", "repair", path)
    assert result.exit_code == 1 and "left probes/legacy/rotation: 1 row(s)" in result.output
    measures = store.open_group(str(path), "measures/legacy/rotation")
    assert store.done_mids(measures) == ["m1", "t1"]
    # the mend as printed: register m2 again (import-legacy), then measure
    assert run("import-legacy", path, "--mid", "m2", "--suite", "legacy", "--transform",
               "rotation", "--force", "--results", golden.results("small2"), "--act",
               golden.act("small2")).exit_code == 0
    assert run("measure", path, "-q").exit_code == 0
    # a model with no probe row ('tm2' now) is no damage: its stage has not reached it
    assert check(path) == (0, f"{path}: ok\n")


def test_labels_and_assess_rows_of_unknown_models_are_found(path):
    labels = path.parent / "labels.csv"
    labels.write_text("mid,label\nm1,1\nm2,0\nt1,1\n")
    assert run("label", path, "--transform", "rotation", "--from", labels).exit_code == 0
    assert check(path) == (0, f"{path}: ok\n")
    rename_model(path, "t1", "x1")
    code, out = check(path)
    assert code == 1
    line = next(x for x in out.splitlines() if x.startswith(f"{path}: labels/rotation: "))
    assert "1 row(s) hold results of model id(s) the models table does not have: t1" in line
    assert "'store repair' cannot rename a model" in line


# ------------------------------------------------------------------ freshness
SUITE, TRANSFORM = "legacy", "rotation"
DERIVED = ("matrices/legacy/rotation", "measures/legacy/rotation")
PROBES = "probes/legacy/rotation"


def set_value(path, group, name, mid, value):
    """Write one row's value of a small array (as damage or an old store would hold it)."""
    zgroup = store.zarr_group(path, group, committed=True)
    row = [str(m) for m in zgroup[dims.MID][:].tolist()].index(mid)
    zgroup[name][row] = value


def stale_by_check(path) -> dict:
    """{group: sorted mids} that ``store check`` calls computed from other probe data."""
    return {p.where: sorted(p.mids) for p in check_store(path)
            if "computed from other probe data" in p.what}


def stale_by_lineage(path) -> dict:
    out = {}
    for group, kind in zip(DERIVED, ("matrices", "measures")):
        _, stale = store.row_lineage(path, SUITE, TRANSFORM, kind)
        if stale:
            out[group] = sorted(stale)
    return out


def test_the_freshness_rule_itself():
    done = np.array([True, True, True, True, False, True])
    recorded = np.array(["a", "a", "", "", "a", "a"], dtype=object)
    probe_done = np.array([True, False, True, True, True, True])
    probe_digest = np.array(["a", "a", "a", "", "a", "b"], dtype=object)
    fresh = store.fresh_rows(done, recorded, probe_done, probe_digest)
    assert fresh.tolist() == [True, False, False, False, False, False]


@pytest.mark.parametrize("probe_digest_too", [False, True],
                         ids=["recorded-empty", "both-empty"])
def test_an_empty_recorded_digest_is_stale_for_check_readers_and_measure(path,
                                                                       probe_digest_too):
    """One rule decides whether a derived row is fresh: ``store check``, every reader
    (lineage) and the measure stage agree on it, an empty recorded probe digest included."""
    path = str(path)
    assert stale_by_check(path) == stale_by_lineage(path) == {}
    assert store.fresh_mids(path, SUITE, TRANSFORM) == ["m1", "m2", "t1"]
    for group in DERIVED:
        set_value(path, group, store.PROBE_DIGEST, "m1", "")
    if probe_digest_too:  # the case where check and lineage used to disagree
        set_value(path, PROBES, store.DIGEST, "m1", "")
    expected = {group: ["m1"] for group in DERIVED}
    assert stale_by_check(path) == stale_by_lineage(path) == expected
    with pytest.raises(StoreError, match="stale"):
        store.fresh_mids(path, SUITE, TRANSFORM)
    # the measure stage redoes exactly the row the others call stale
    (report,) = measure_store(path)
    assert report.measured == ["m1"] and report.skipped == 2
    if not probe_digest_too:
        assert stale_by_check(path) == stale_by_lineage(path) == {}
        assert store.fresh_mids(path, SUITE, TRANSFORM) == ["m1", "m2", "t1"]
        return
    # an empty probe digest is damage: still stale everywhere (never fresh by accident),
    # and store check names the probe row too; repair clears them all, and then no row
    # of m1 is done for anyone
    assert stale_by_check(path) == stale_by_lineage(path) == expected
    assert any(p.where == PROBES and p.mids == ("m1",) for p in check_store(path))
    assert run("store", "repair", path).exit_code == 0
    assert stale_by_check(path) == stale_by_lineage(path) == {}
    assert store.fresh_mids(path, SUITE, TRANSFORM) == ["m2", "t1"]
    (report,) = measure_store(path)
    assert report.measured == [] and report.skipped == 2
