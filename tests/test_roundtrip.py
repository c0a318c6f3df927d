"""The store reads like a dataset: every group written by the stages of a reduced demo
pipeline opens with plain xarray, without a warning, and holds exactly the coordinates,
attrs, dtypes and values of the in-memory datasets that produced it."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from ml4ml import dims, store
from ml4ml.config import load_pipeline, shrink_pipeline
from ml4ml.measure.matrices import variance_matrices
from ml4ml.measure.measures import measure_database
from ml4ml.measure.stage import measure_store
from ml4ml.probe.responses import probe_model
from ml4ml.probe.stage import load_probe_suite, probe_pipeline
from ml4ml.zoo.stage import recipe_table, train_pipeline
from ml4ml.zoo.training import load_checkpoint

DEMO = Path(__file__).resolve().parents[1] / "pipelines" / "demo-digits.toml"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("roundtrip")
    pipeline = shrink_pipeline(load_pipeline(DEMO), store=str(folder / "demo.zarr"),
                               n_models=3, epochs=1, n_train=120, n_samples=24)
    train_pipeline(pipeline, progress=False)
    probe_pipeline(pipeline, progress=False)
    measure_store(pipeline.store, progress=False)
    return pipeline


def plain(path, group):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return xr.open_zarr(path, group=group)


def in_memory_probes(pipeline) -> xr.Dataset:
    """Every model's probe, recomputed in memory from its checkpoint, stacked along mid."""
    (suite_spec,) = pipeline.suites
    suite = load_probe_suite(pipeline, suite_spec)
    (transform, grid), = pipeline.transforms.items()
    table = store.read_models(pipeline.store)
    probes = []
    for mid in pipeline.mids:
        model, recipe = load_checkpoint(str(table.checkpoint.sel(mid=mid).values))
        probes.append(probe_model(model, suite.images, suite.labels, transform, grid,
                                  normalize=recipe.normalize,
                                  batch_size=pipeline.probe.batch_size))
    return xr.concat(probes, dim=xr.DataArray(pipeline.mids, dims=dims.MID), coords="minimal",
                     compat="identical", data_vars="all", join="exact")


def assert_holds(stored: xr.Dataset, memory: xr.Dataset, *, exact=True):
    """Every variable and coordinate of ``memory`` is in ``stored``: dims, dtype, attrs, values."""
    for name, var in memory.variables.items():
        assert name in stored.variables, name
        got = stored[name]
        assert got.dims == var.dims, name
        kind = "O" if var.dtype.kind in "OUT" else var.dtype.kind
        assert ("O" if got.dtype.kind in "OUT" else got.dtype.kind) == kind, name
        if kind != "O":
            assert got.dtype == var.dtype, name
        for key, value in var.attrs.items():
            assert got.attrs.get(key) == value, (name, key)
        a, b = np.asarray(got.values), np.asarray(var.values)
        if kind == "O":
            assert [str(v) for v in a.ravel().tolist()] == [str(v) for v in b.ravel().tolist()], name
        elif exact:
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, equal_nan=True, err_msg=name)
    for key, value in memory.attrs.items():
        assert stored.attrs.get(key) == value, key


def test_every_group_opens_with_plain_xarray_without_a_warning(built):
    groups = ["models", "probes/digits/rotation", "matrices/digits/rotation",
              "measures/digits/rotation"]
    for group in groups:
        ds = plain(built.store, group)
        # every labelled dim has a coordinate
        assert set(ds.dims) <= set(ds.coords), (group, set(ds.dims) - set(ds.coords))
        for name, var in ds.variables.items():
            assert var.attrs.get("long_name") and var.attrs.get("description"), (group, name)
        if group != "models":
            assert {"suite", "transform", "title"} <= set(ds.attrs), group
            assert "units" not in ds.attrs, group  # units live on each variable
            assert ds.attrs["suite"] == "digits"
            axes = [n for n in (dims.AUG_PARAM, dims.AUG_PARAM_I, dims.AUG_PARAM_J) if n in ds]
            assert axes and all(ds[n].attrs["units"] == "degrees" for n in axes), group
            if dims.HALF_WIDTH in ds:
                assert ds[dims.HALF_WIDTH].attrs["units"] == "grid steps"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tree = xr.open_datatree(built.store, engine="zarr")
    assert sorted(tree.groups) == ["/", "/matrices", "/matrices/digits",
                                   "/matrices/digits/rotation", "/measures", "/measures/digits",
                                   "/measures/digits/rotation", "/models", "/probes",
                                   "/probes/digits", "/probes/digits/rotation"]
    # lazily: nothing is loaded until asked for
    act = tree["probes/digits/rotation"].dataset["act"]
    assert not isinstance(act.variable._data, np.ndarray)
    assert tree.attrs[store.SCHEMA_ATTR] == store.SCHEMA_VERSION


def test_the_models_table_holds_every_recipe_field(built):
    stored = plain(built.store, "models").load()
    expected = recipe_table(built.recipes)
    for name in expected.data_vars:
        if name in ("trained", "checkpoint", "checkpoint_sha256", "test_accuracy",
                    "train_seconds", "n_train_images", "train_error"):
            continue
        assert [str(v) for v in np.asarray(stored[name].values).tolist()] == \
            [str(v) for v in np.asarray(expected[name].values).tolist()], name
    assert stored.trained.values.all()
    assert ((stored.test_accuracy.values >= 0) & (stored.test_accuracy.values <= 1)).all()


def test_probes_round_trip_exactly(built):
    memory = in_memory_probes(built)
    stored = plain(built.store, "probes/digits/rotation").load()
    assert_holds(stored, memory)
    assert stored[dims.LAYER].values.tolist() == [0, 1]
    assert stored[dims.PREDICTION].dtype == np.int64
    assert bool(stored.done.all())


def test_matrices_and_measures_round_trip(built):
    probes = in_memory_probes(built)
    matrices = variance_matrices(probes).compute()
    stored = plain(built.store, "matrices/digits/rotation").load()
    assert_holds(stored, matrices)
    measures = measure_database(probes).compute()
    stored = plain(built.store, "measures/digits/rotation").load()
    # in memory the three models are measured in one block, in the store one per block:
    # the measures' sums may round differently, within 1e-12 relative
    assert_holds(stored, measures, exact=False)
    # a non-index coordinate computed lazily (dask) and written with the layout
    np.testing.assert_array_equal(stored[dims.HALF_WIDTH].values, np.arange(15, 4, -1))
    assert stored[dims.HALF_WIDTH].dims == (dims.INTERVAL,)
