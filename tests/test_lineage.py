"""Lineage: a stage redoes exactly the models whose inputs changed, and says so."""

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from ml4ml import dims, store
from ml4ml.cli import cli

SPEC = """
name = "lineage"
[store]
path = "db.zarr"
[suites.digits]
n_samples = 16
[transforms.rotation]
grid = [-4, 4, 5]
[zoo]
arch = "cnn5"
epochs = 1
n_train = 64
batch_size = 32
[[zoo.models]]
mid = "m001"
[[zoo.models]]
mid = "m002"
lr = 0.002
[[zoo.models]]
mid = "t001"
holdout = true
"""


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A store trained, probed and measured once (copied by each test)."""
    folder = tmp_path_factory.mktemp("lineage")
    (folder / "spec.toml").write_text(SPEC)
    result = run("run", folder / "spec.toml", "-q")
    assert result.exit_code == 0, result.output + result.stderr
    return folder


@pytest.fixture
def folder(built, tmp_path):
    import shutil

    for name in ("spec.toml", "db.zarr", "db.zarr.checkpoints"):
        source = built / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    # the copied checkpoints live in the copy: point the models table at them
    with store.writing(str(tmp_path / "db.zarr")):
        table = store.read_models(str(tmp_path / "db.zarr"))
        paths = [str(tmp_path / "db.zarr.checkpoints" / f"{m}.pt") for m in table.mid.values]
        store.update_models(str(tmp_path / "db.zarr"), xr.Dataset(
            {"checkpoint": ("mid", np.array(paths, dtype=object))},
            coords={"mid": table.mid.values}))
    return tmp_path


def rows(folder, group):
    return store.open_group(str(folder / "db.zarr"), group).load()


def test_a_changed_recipe_reprobes_and_remeasures_exactly_that_model(folder):
    before_probe = rows(folder, "probes/digits/rotation")
    before_measure = rows(folder, "measures/digits/rotation")
    spec = folder / "spec.toml"
    spec.write_text(SPEC.replace("lr = 0.002", "lr = 0.003"))
    refused = run("run", spec, "-q")
    assert refused.exit_code == 1 and "field 'zoo (m002.lr)'" in refused.stderr
    assert "--changed" in refused.stderr
    result = run("train", spec, "--changed", "-q")
    assert result.exit_code == 0, result.stderr
    assert "0 added, 1 trained (1 retrained), 2 already" in result.output
    result = run("run", spec, "-q")
    assert result.exit_code == 0, result.stderr
    assert "train: 0 added, 0 trained, 3 already" in result.output
    assert "probe: 1 probed, 2 already" in result.output
    assert "measured 1 model(s), re-measured m002 (its probe data changed), 2 already measured" \
        in result.output
    after_probe = rows(folder, "probes/digits/rotation")
    after_measure = rows(folder, "measures/digits/rotation")
    for mid in ("m001", "t001"):  # untouched, bitwise
        xr.testing.assert_identical(after_probe.sel(mid=mid), before_probe.sel(mid=mid))
        xr.testing.assert_identical(after_measure.sel(mid=mid), before_measure.sel(mid=mid))
    changed = after_probe.sel(mid="m002")
    assert not np.array_equal(changed.prob.values, before_probe.sel(mid="m002").prob.values)
    assert changed.digest.values.item() != before_probe.sel(mid="m002").digest.values.item()
    table = store.read_models(str(folder / "db.zarr"))
    assert changed.source_sha256.values.item() == table.checkpoint_sha256.sel(mid="m002").item()
    assert after_measure.probe_digest.sel(mid="m002").values.item() == \
        changed.digest.values.item()
    assert not np.array_equal(after_measure.value.sel(mid="m002").values,
                              before_measure.value.sel(mid="m002").values, equal_nan=True)


def test_force_at_one_stage_makes_the_later_stages_redo_the_model(folder):
    spec = folder / "spec.toml"
    before = rows(folder, "measures/digits/rotation")
    result = run("probe", spec, "--force", "-q")
    assert result.exit_code == 0 and "probe: 3 probed, 0 already," \
        in result.output
    # the measures computed from the old probes are no longer current
    assert store.done_mids(rows(folder, "measures/digits/rotation")) == []
    result = run("measure", folder / "db.zarr", "-q")
    assert "measured 3 model(s)" in result.output and "0 already measured" in result.output
    # the probe is deterministic: the same numbers again
    xr.testing.assert_identical(rows(folder, "measures/digits/rotation"), before)
    result = run("train", spec, "--force", "-q")
    assert "0 added, 3 trained (3 retrained), 0 already" in result.output
    assert store.done_mids(rows(folder, "probes/digits/rotation")) == []
    assert store.done_mids(rows(folder, "matrices/digits/rotation")) == []
    result = run("run", spec, "-q")
    assert "probe: 3 probed, 0 already" in result.output


def test_measure_force_recomputes_what_is_stored(folder):
    path = str(folder / "db.zarr")
    good = rows(folder, "measures/digits/rotation").value.sel(mid="m001").values
    with store.writing(path):  # damage a stored value behind the stage's back
        group = store.zarr_group(path, "measures/digits/rotation")
        array = group["value"]
        damaged = array[0:1]
        damaged[...] = 123.0
        array[0:1] = damaged
    assert run("measure", path, "-q").output.count("measured 0 model(s)") == 1
    result = run("measure", path, "--force", "-q")
    assert "measured 3 model(s), re-measured m001, m002, t001 (forced)" in result.output
    np.testing.assert_array_equal(rows(folder, "measures/digits/rotation").value
                                  .sel(mid="m001").values, good)


def test_a_missing_plugin_measure_is_one_line_and_the_values_stay(folder):
    path = str(folder / "db.zarr")
    plugin = folder / "extra.py"
    plugin.write_text("from ml4ml.measure import register_measure\n"
                      "register_measure('trace_sum', lambda m: m.trace(axis1=-2, axis2=-1))\n")
    from ml4ml.measure.measures import unregister_measure

    try:
        result = run("measure", path, "--plugin", plugin, "--measure", "trace_sum", "-q")
        assert result.exit_code == 0 and "added trace_sum for measured models" in result.output
    finally:
        unregister_measure("trace_sum")
    stored = rows(folder, "measures/digits/rotation")
    assert stored.measure.values.tolist()[-1] == "trace_sum"
    # a new model needs every stored measure; without the plugin, one clear line
    with store.writing(path):
        store.clear_done(path, "measures/digits/rotation", ["t001"])
    result = run("measure", path, "-q")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "measure(s) ['trace_sum'] are in the store but not registered now" in result.stderr
    assert "--plugin" in result.stderr and "Traceback" not in result.stderr
    again = rows(folder, "measures/digits/rotation")
    xr.testing.assert_identical(again.drop_vars("done"), stored.drop_vars("done"))


def test_reimported_responses_are_measured_again(tmp_path):
    import golden

    path = tmp_path / "ref.zarr"
    for case in ("small1", "small1"):
        result = run("import-legacy", path, "--mid", "m1", "--results", golden.results(case),
                     "--act", golden.act(case), "--force")
        assert result.exit_code == 0, result.stderr
    assert "measured 1 model(s)" in run("measure", path, "-q").output
    first = store.open_group(str(path), "measures/legacy/rotation").value.load()
    # other responses for the same model (its confidence shrunk), imported with --force
    import gzip
    import io

    results = np.load(io.BytesIO(gzip.open(golden.results("small1")).read()))
    results[..., 3] *= 0.5
    other = tmp_path / "other_results.npy"
    np.save(other, results)
    result = run("import-legacy", path, "--mid", "m1", "--results", other,
                 "--act", golden.act("small1"), "--force")
    assert result.exit_code == 0, result.stderr
    result = run("measure", path, "-q")
    assert "measured 1 model(s), re-measured m1 (its probe data changed)" in result.output
    second = store.open_group(str(path), "measures/legacy/rotation").value.load()
    confidence = {dims.LEVEL: dims.CONFIDENCE_LEVEL, dims.MEASURE: "mean"}
    np.testing.assert_allclose(second.sel(confidence).values, 0.5 * first.sel(confidence).values,
                               rtol=1e-9)
    assert not np.allclose(second.sel(confidence).values, first.sel(confidence).values)


def test_orphan_temporary_checkpoints_are_removed_and_said_so(folder):
    orphan = folder / "db.zarr.checkpoints" / ".tmp-abc123.pt"
    orphan.write_bytes(b"half a checkpoint")
    result = run("train", folder / "spec.toml")
    assert result.exit_code == 0, result.output
    assert not orphan.exists()
    assert "removed orphan temporary checkpoint .tmp-abc123.pt" in result.stderr
    assert sorted(p.name for p in (folder / "db.zarr.checkpoints").iterdir()) == \
        ["m001.pt", "m002.pt", "t001.pt"]
