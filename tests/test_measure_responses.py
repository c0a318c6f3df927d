"""The response measures in the measure stage: ``response_value (mid, level,
response_measure)`` written with the matrix measures from a real trained and probed store,
checked against plain numpy on the stored probes; old stores (no ``response_value``) told
by ``store check`` and mended by ``ml4ml measure``; a response measure registered later
added from the stored probes (no re-probing) on a real dask cluster's workers; unknown
names; the feature sets ``responses`` and ``all``; ``lee`` from the probes' ``lee``."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

import response_plugins
from ml4ml import dims, store
from ml4ml.cli import cli
from ml4ml.errors import InputError
from ml4ml.measure.feature_sets import PAPER80_MEASURES
from ml4ml.measure.response_kernels import RESPONSE_MEASURES
from ml4ml.measure.response_rows import LAYER_UNDEFINED, response_dataset
from ml4ml.measure.responses import register_response_measure, unregister_response_measure
from ml4ml.measure.stage import measure_store, store_features

SPEC = """
name = "responses"
[store]
path = "db.zarr"
[suites.digits]
n_samples = 24
[transforms.rotation]
grid = [-4, 4, 5]
[zoo]
arch = "cnn5"
epochs = 1
n_train = 48
batch_size = 24
augmentation = "rotation"
aug_range = 10
[[zoo.models]]
mid = "m001"
[[zoo.models]]
mid = "m002"
seed = 2
[[zoo.models]]
mid = "t001"
holdout = true
seed = 1
"""
GROUP = "measures/digits/rotation"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def probed(tmp_path_factory) -> Path:
    """A trained and probed store (3 CNN5s), not measured."""
    from ml4ml.config import load_pipeline
    from ml4ml.probe.stage import probe_pipeline
    from ml4ml.zoo.stage import train_pipeline

    folder = tmp_path_factory.mktemp("responses")
    (folder / "spec.toml").write_text(SPEC)
    pipeline = load_pipeline(folder / "spec.toml")
    train_pipeline(pipeline, progress=False)
    probe_pipeline(pipeline, progress=False)
    return Path(pipeline.store)


@pytest.fixture(scope="module")
def measured(probed, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("measured") / "db.zarr"
    shutil.copytree(probed, path)
    measure_store(str(path))
    return path


@pytest.fixture
def copy(measured, tmp_path) -> Path:
    path = tmp_path / "db.zarr"
    shutil.copytree(measured, path)
    return path


def plain_numpy(x: np.ndarray, predictions=None) -> dict:
    """tv, sv, nv (no zero std here), geed_l2, consistency and lee_fd of one model's
    responses x (P, S, U), averaged over units, written out plainly."""
    p = x.shape[0]
    c = p // 2
    tv = x.std(axis=0, ddof=1).mean(axis=0)  # per unit
    sv = x.std(axis=1, ddof=1).mean(axis=0)
    out = {"tv": tv.mean(), "sv": sv.mean(), "nv": (tv / sv).mean(),
           "geed_l2": np.linalg.norm(x - x.mean(axis=0), axis=-1).mean(),
           "lee_fd": (np.abs(x[c + 1] - x[c - 1]) / 4.0).mean()}  # grid step 2 degrees
    if predictions is not None:
        out["consistency"] = (predictions == predictions[c]).mean()
    return out


def test_measure_writes_response_values_from_the_stored_probes(measured):
    ds = xr.open_zarr(measured, group=GROUP)
    probes = store.open_probes(str(measured), "digits", "rotation").load()
    assert ds[dims.RESPONSE_VALUE].dims == (dims.MID, dims.LEVEL, dims.RESPONSE_MEASURE)
    assert ds[dims.RESPONSE_VALUE].dtype == np.float64
    assert list(ds[dims.RESPONSE_MEASURE].values) == list(RESPONSE_MEASURES)
    assert list(ds[dims.LEVEL].values) == dims.level_names(2)
    assert bool(ds[dims.DONE].all()) and list(ds[store.PROBE_DIGEST].values) == \
        list(probes[store.DIGEST].values)  # the same lineage as the matrix measures
    value = ds[dims.RESPONSE_VALUE].load()
    for mid in ("m001", "m002", "t001"):
        one = probes.sel({dims.MID: mid})
        prob = one[dims.PROB].transpose(dims.AUG_PARAM, dims.SAMPLE, dims.CLASS).values
        expected = plain_numpy(prob.astype(np.float64), one[dims.PREDICTION].values)
        got = value.sel({dims.MID: mid, dims.LEVEL: "confidence"})
        for name, number in expected.items():
            np.testing.assert_allclose(got.sel({dims.RESPONSE_MEASURE: name}), number,
                                       rtol=1e-10, err_msg=f"{mid} confidence {name}")
        for layer, label in ((0, "layer-2"), (1, "layer-1")):
            for stat in ("max", "mean_std"):
                act = one[dims.ACT].sel({dims.LAYER: layer, dims.STAT: stat})
                x = act.transpose(dims.AUG_PARAM, dims.SAMPLE).values[..., None]
                got = value.sel({dims.MID: mid, dims.LEVEL: f"{label}_{stat}"})
                for name, number in plain_numpy(x.astype(np.float64)).items():
                    np.testing.assert_allclose(got.sel({dims.RESPONSE_MEASURE: name}),
                                               number, rtol=1e-10,
                                               err_msg=f"{mid} {label}_{stat} {name}")
    # undefined on a layer statistic: NaN there, and defined at confidence
    layers = value.sel({dims.LEVEL: dims.level_names(2)[1:]})
    for name in ("geed_kl", "geed_cos", "consistency"):
        assert name in LAYER_UNDEFINED
        assert np.isnan(layers.sel({dims.RESPONSE_MEASURE: name})).all()
        assert np.isfinite(value.sel({dims.LEVEL: "confidence",
                                      dims.RESPONSE_MEASURE: name})).all()
    # plain xarray, as the issue spells it
    nv = xr.open_zarr(measured, group=GROUP)["response_value"].sel(response_measure="nv")
    assert nv.dims == (dims.MID, dims.LEVEL) and np.isfinite(nv.values).all()


def test_an_old_store_is_told_and_measure_adds_the_response_measures(copy, measured):
    # a store an earlier ml4ml measured: no response_value (taken out, layout committed)
    with store.writing(str(copy), "test: an earlier version's layout"):
        group = zarr.open_group(str(copy / GROUP), mode="r+")
        del group[dims.RESPONSE_VALUE]
        del group[dims.RESPONSE_MEASURE]
        store.commit(str(copy))
    result = run("store", "check", copy)
    assert result.exit_code == 1
    assert f"{GROUP}: has no response measures" in result.output
    assert f"run 'ml4ml measure {copy} --force' to add them" in result.output
    with pytest.raises(InputError, match="no response measures"):
        store_features(str(copy), "rotation", set="responses")
    reference = xr.open_zarr(measured, group=GROUP)[dims.RESPONSE_VALUE].values
    # plain `ml4ml measure` adds them from the stored probes, for every measured model
    result = run("measure", copy, "-q")
    assert result.exit_code == 0, result.output
    assert "measured 0 model(s), added tv, sv, nv" in result.output
    np.testing.assert_array_equal(
        xr.open_zarr(copy, group=GROUP)[dims.RESPONSE_VALUE].values, reference)
    assert run("store", "check", copy).exit_code == 0
    # and --force (the store check's mend) measures every model again, alike
    result = run("measure", copy, "--force", "-q")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(
        xr.open_zarr(copy, group=GROUP)[dims.RESPONSE_VALUE].values, reference)


def probe_files(path: Path) -> dict:
    folder = path / "probes"
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture
def orbit_range():
    register_response_measure("orbit_range", response_plugins.worker_orbit_range)
    yield "orbit_range"
    unregister_response_measure("orbit_range")


def test_a_response_measure_registered_later_runs_on_cluster_workers(copy, orbit_range):
    from ml4ml.cluster import dask_client

    before = probe_files(copy)
    with pytest.raises(ValueError, match="[Nn]o worker"):  # it refuses to run in-process
        response_plugins.worker_orbit_range(np.zeros((1, 5, 2, 1)))
    with dask_client(workers=2) as client:
        assert len(client.cluster.workers) == 2  # real worker processes
        (report,) = measure_store(str(copy))
    assert report.measured == [] and report.added_measures == ["orbit_range"]
    assert probe_files(copy) == before  # no re-probing
    ds = xr.open_zarr(copy, group=GROUP)
    assert list(ds[dims.RESPONSE_MEASURE].values) == list(RESPONSE_MEASURES) + ["orbit_range"]
    stored = ds[dims.RESPONSE_VALUE].values
    probes = store.open_probes(str(copy), "digits", "rotation").load()
    got = ds[dims.RESPONSE_VALUE].sel({dims.RESPONSE_MEASURE: "orbit_range"})
    for mid in ("m001", "t001"):
        prob = probes[dims.PROB].sel({dims.MID: mid}).values.astype(np.float64)
        np.testing.assert_allclose(got.sel({dims.MID: mid, dims.LEVEL: "confidence"}),
                                   np.ptp(prob, axis=0).mean(), rtol=1e-12)
        act = probes[dims.ACT].sel({dims.MID: mid, dims.LAYER: 1, dims.STAT: "max"})
        np.testing.assert_allclose(got.sel({dims.MID: mid, dims.LEVEL: "layer-1_max"}),
                                   np.ptp(act.values.astype(np.float64), axis=0).mean(),
                                   rtol=1e-12)
    # the built-in values stayed as they were
    assert np.isfinite(ds[dims.RESPONSE_VALUE].sel({dims.RESPONSE_MEASURE: "nv"})).all()
    # a new model is measured alike; without the plugin it is refused in one line
    unregister_response_measure("orbit_range")
    with store.writing(str(copy), "test"):
        store.clear_done(str(copy), GROUP, ["t001"])
    with pytest.raises(InputError, match=r"response measure\(s\) \['orbit_range'\] are in the "
                                         r"store but not registered now"):
        measure_store(str(copy))
    register_response_measure("orbit_range", response_plugins.orbit_range)
    (report,) = measure_store(str(copy))
    assert report.measured == ["t001"]
    again = xr.open_zarr(copy, group=GROUP)[dims.RESPONSE_VALUE]
    np.testing.assert_array_equal(again.values, stored)


def test_unknown_measure_names_list_both_families(measured):
    result = run("measure", measured, "--measure", "nope")
    assert result.exit_code == 1 and result.output.count("\n") <= 2
    assert "unknown measure(s) ['nope']" in result.output
    assert "sstv" in result.output and "response measures: tv, sv, nv" in result.output
    result = run("measure", measured, "--measure", "nv", "-q")  # a response name: accepted
    assert result.exit_code == 0, result.output


def test_feature_sets_responses_and_all(measured, tmp_path):
    frame = store_features(str(measured), "rotation", set="responses")
    levels = dims.level_names(2)
    expected = [f"confidence_{name}" for name in RESPONSE_MEASURES] + [
        f"{level}_{name}" for level in levels[1:] for name in RESPONSE_MEASURES
        if name not in LAYER_UNDEFINED]
    assert list(frame.columns) == ["mid"] + expected
    value = xr.open_zarr(measured, group=GROUP)[dims.RESPONSE_VALUE]
    np.testing.assert_array_equal(frame["layer-1_max_tv"],
                                  value.sel(level="layer-1_max", response_measure="tv"))
    np.testing.assert_array_equal(frame["confidence_nv"],
                                  value.sel(level="confidence", response_measure="nv"))
    both = store_features(str(measured), "rotation", set="all")
    paper = store_features(str(measured), "rotation", set="paper80")
    assert list(both.columns) == list(paper.columns) + expected
    assert len(paper.columns) == 1 + 5 * len(PAPER80_MEASURES)
    out = tmp_path / "responses.csv"
    result = run("features", measured, "--transform", "rotation", "--set", "responses",
                 "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0] == ",".join(["mid"] + expected)


def test_lee_is_the_mean_of_the_probes_lie_derivative_at_confidence(measured):
    probes = store.open_probes(str(measured), "digits", "rotation")
    rng = np.random.default_rng(3)
    lee = rng.random((probes.sizes[dims.MID], probes.sizes[dims.SAMPLE]))
    probes = probes.assign(lee=((dims.MID, dims.SAMPLE), lee))
    value = response_dataset(probes)[dims.RESPONSE_VALUE].compute()
    assert list(value[dims.RESPONSE_MEASURE].values) == list(RESPONSE_MEASURES) + ["lee"]
    np.testing.assert_allclose(value.sel(level="confidence", response_measure="lee"),
                               lee.mean(axis=1), rtol=1e-12)
    assert np.isnan(value.sel(response_measure="lee").isel(level=slice(1, None))).all()
    without = response_dataset(probes.drop_vars("lee"))[dims.RESPONSE_VALUE].compute()
    np.testing.assert_array_equal(value.sel(response_measure=list(RESPONSE_MEASURES)),
                                  without)
