"""One rule decides whether a derived row is fresh: ``store check``, every reader (lineage)
and the measure stage agree on it, an empty recorded probe digest included."""

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import golden
from ml4ml import dims, store
from ml4ml.cli import cli
from ml4ml.errors import StoreError
from ml4ml.measure.stage import measure_store
from ml4ml.store.check import check_store

SUITE, TRANSFORM = "legacy", "rotation"
DERIVED = ("matrices/legacy/rotation", "measures/legacy/rotation")
PROBES = "probes/legacy/rotation"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    path = tmp_path_factory.mktemp("fresh") / "db.zarr"
    for mid in ("m1", "m2"):
        assert run("import-legacy", path, "--mid", mid, "--results", golden.results("small1"),
                   "--act", golden.act("small1")).exit_code == 0
    assert run("measure", path, "-q").exit_code == 0
    return path


@pytest.fixture
def path(measured, tmp_path):
    copy = tmp_path / "db.zarr"
    shutil.copytree(measured, copy)
    return str(copy)


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


def test_the_rule_itself():
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
    assert stale_by_check(path) == stale_by_lineage(path) == {}
    assert store.fresh_mids(path, SUITE, TRANSFORM) == ["m1", "m2"]
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
    assert report.measured == ["m1"] and report.skipped == 1
    if not probe_digest_too:
        assert stale_by_check(path) == stale_by_lineage(path) == {}
        assert store.fresh_mids(path, SUITE, TRANSFORM) == ["m1", "m2"]
        return
    # an empty probe digest is damage: still stale everywhere (never fresh by accident),
    # and store check names the probe row too; repair clears them all, and then no row
    # of m1 is done for anyone
    assert stale_by_check(path) == stale_by_lineage(path) == expected
    assert any(p.where == PROBES and p.mids == ("m1",) for p in check_store(path))
    assert run("store", "repair", path).exit_code == 0
    assert stale_by_check(path) == stale_by_lineage(path) == {}
    assert store.fresh_mids(path, SUITE, TRANSFORM) == ["m2"]
    (report,) = measure_store(path)
    assert report.measured == [] and report.skipped == 1
