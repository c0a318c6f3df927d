"""Determinism of the measure pass: across schedulers and thread counts, and across reruns."""

import gzip
import io

import dask
import numpy as np
import pytest
from click.testing import CliRunner

import golden
from ml4ml import store
from ml4ml.cli import cli
from ml4ml.measure.stage import measure_store


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def stores(tmp_path):
    """Make (path factory): a store of three imported models, one of them perturbed."""
    results = np.load(io.BytesIO(gzip.open(golden.results("small1")).read()))
    results[..., 3] = np.clip(results[..., 3] * 0.9 + 0.05, 0, 1)
    perturbed = tmp_path / "perturbed_results.npy"
    np.save(perturbed, results)

    def make(name):
        path = tmp_path / name
        for mid, res in (("m1", golden.results("small1")), ("m2", perturbed),
                         ("t1", golden.results("small1"))):
            result = run("import-legacy", path, "--mid", mid, "--results", res,
                         "--act", golden.act("small1"))
            assert result.exit_code == 0, result.output
        return path

    return make


def measures(path):
    return store.open_group(str(path), "measures/legacy/rotation").load()


def matrices(path):
    return store.open_group(str(path), "matrices/legacy/rotation").load()


def test_schedulers_and_thread_counts_agree_within_1e_12_relative(stores):
    """Asserts agreement within 1e-12 relative (the documented guarantee)."""
    one, two, cluster = stores("one.zarr"), stores("two.zarr"), stores("cluster.zarr")
    with dask.config.set(scheduler="threads", num_workers=1):
        measure_store(str(one))
    with dask.config.set(scheduler="threads", num_workers=2):
        measure_store(str(two))
    result = run("measure", cluster, "--workers", "2", "-q")
    assert result.exit_code == 0 and "measured 3 model(s)" in result.output, result.output
    reference = measures(one)
    for other in (two, cluster):
        got = measures(other)
        for name in ("value", "accuracy", "class_accuracy", "robust_accuracy"):
            np.testing.assert_allclose(got[name].values, reference[name].values, rtol=1e-12,
                                       atol=0, equal_nan=True, err_msg=f"{other} {name}")
        np.testing.assert_allclose(matrices(other).matrix.values, matrices(one).matrix.values,
                                   rtol=1e-12, atol=0, equal_nan=True)
    # and the perturbed model really is different (the comparison can fail)
    value = reference.value.sel(level="confidence", split="all", interval=0, measure="mean")
    assert value.sel(mid="m1").item() == value.sel(mid="t1").item() != value.sel(mid="m2").item()


def test_a_rerun_with_the_same_settings_is_bitwise_identical(stores):
    """Asserts bitwise identity (same scheduler, same threads, forced rerun)."""
    path = stores("rerun.zarr")
    measure_store(str(path))
    first_measures, first_matrices = measures(path), matrices(path)
    (report,) = measure_store(str(path), force=True)
    assert sorted(report.measured) == ["m1", "m2", "t1"]
    for name in ("value", "accuracy", "class_accuracy", "robust_accuracy"):
        assert np.array_equal(measures(path)[name].values, first_measures[name].values,
                              equal_nan=True), name
    assert np.array_equal(matrices(path).matrix.values, first_matrices.matrix.values,
                          equal_nan=True)
    assert np.array_equal(matrices(path).matrix_subset.values,
                          first_matrices.matrix_subset.values, equal_nan=True)


def test_measuring_in_batches_writes_the_same_store(stores, monkeypatch):
    """Asserts bitwise identity: a database measured a model per graph (three batches, the
    groups laid out by the first and extended by the others) equals one graph."""
    from ml4ml.measure import stage

    whole, batched = stores("whole.zarr"), stores("batched.zarr")
    with dask.config.set(scheduler="threads", num_workers=1):
        measure_store(str(whole))
        monkeypatch.setattr(stage, "BATCH", 1)
        (report,) = measure_store(str(batched))
    assert report.measured == ["m1", "m2", "t1"] and report.tasks > 0
    for group in ("measures/legacy/rotation", "matrices/legacy/rotation"):
        a = store.open_group(str(whole), group).load()
        b = store.open_group(str(batched), group).load()
        assert list(a.data_vars) == list(b.data_vars)
        for name in a.variables:
            assert np.array_equal(a[name].values, b[name].values,
                                  equal_nan=a[name].dtype.kind == "f"), (group, name)
    assert store.done_mids(store.open_group(str(batched), "measures/legacy/rotation")) == \
        ["m1", "m2", "t1"]
