"""Determinism: the measure pass and the probe's layer statistics are bitwise the same
across schedulers, thread counts, a busy machine, batch-mates and reruns."""

import contextlib
import gzip
import io
import subprocess
import sys

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
    # and wrong on 40 more samples: its samples fall into other groups (correct or not)
    results[:, :40, 2] = (results[:, :40, 1] + 1) % 10
    perturbed = tmp_path / "perturbed_results.npy"
    np.save(perturbed, results)
    act = np.load(io.BytesIO(gzip.open(golden.act("small1")).read()))
    act[:, :, :, 2] = results[:, :, None, 2]
    perturbed_act = tmp_path / "perturbed_act.npy"
    np.save(perturbed_act, act)

    def make(name, mids=("m1", "m2", "t1")):
        path = tmp_path / name
        files = {"m1": (golden.results("small1"), golden.act("small1")),
                 "m2": (perturbed, perturbed_act),
                 "t1": (golden.results("small1"), golden.act("small1"))}
        for mid in mids:
            res, act_file = files[mid]
            result = run("import-legacy", path, "--mid", mid, "--results", res,
                         "--act", act_file)
            assert result.exit_code == 0, result.output
        return path

    return make


def measures(path):
    return store.open_group(str(path), "measures/legacy/rotation").load()


def matrices(path):
    return store.open_group(str(path), "matrices/legacy/rotation").load()


def every_variable(path) -> dict:
    """{group/name: values} of the measures and matrices groups (mid order sorted)."""
    out = {}
    for group in ("measures/legacy/rotation", "matrices/legacy/rotation"):
        ds = store.open_group(str(path), group).load().sortby("mid")
        out.update({f"{group}/{name}": ds[name].values for name in ds.variables})
    return out


def assert_bitwise(got: dict, reference: dict, what: str) -> None:
    assert sorted(got) == sorted(reference), what
    for name, values in reference.items():
        assert np.array_equal(got[name], values, equal_nan=values.dtype.kind == "f"), \
            f"{what}: {name}"


@contextlib.contextmanager
def busy_core():
    """A CPU-bound process beside the test (killed after)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


@contextlib.contextmanager
def threads(n: int):
    """torch and BLAS (numpy's) on ``n`` threads, dask's threaded scheduler on ``n``."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n, user_api="blas"), \
                dask.config.set(scheduler="threads", num_workers=n):
            yield
    finally:
        torch.set_num_threads(before)


def test_measure_is_bitwise_the_same_on_any_thread_count_load_and_scheduler(stores):
    """Asserts bitwise identity of every variable of matrices and measures: 1 thread,
    2 threads with a CPU-bound process beside them, and a cluster of 2 workers."""
    one, two, cluster = stores("one.zarr"), stores("two.zarr"), stores("cluster.zarr")
    with threads(1):
        measure_store(str(one))
    with threads(2), busy_core():
        measure_store(str(two))
    result = run("measure", cluster, "--workers", "2", "-q")
    assert result.exit_code == 0 and "measured 3 model(s)" in result.output, result.output
    reference = every_variable(one)
    assert_bitwise(every_variable(two), reference, "2 threads, a busy core")
    assert_bitwise(every_variable(cluster), reference, "2 workers")
    # and the perturbed model really is different (the comparison can fail)
    value = measures(one).value.sel(level="confidence", split="all", interval=0,
                                    measure="mean")
    assert value.sel(mid="m1").item() == value.sel(mid="t1").item() != value.sel(mid="m2").item()


def test_a_model_measured_alone_equals_it_measured_among_others(stores):
    """Asserts bitwise identity of a model's rows measured alone and with two others."""
    alone, together = stores("alone.zarr", mids=("m2",)), stores("together.zarr")
    measure_store(str(alone))
    measure_store(str(together))
    for group in ("measures/legacy/rotation", "matrices/legacy/rotation"):
        a = store.open_group(str(alone), group).load()
        b = store.open_group(str(together), group).load().sel(mid=["m2"])
        for name in a.data_vars:
            assert np.array_equal(a[name].values, b[name].values,
                                  equal_nan=a[name].dtype.kind == "f"), (group, name)


def test_blas_stays_single_threaded_while_any_block_computes(stores):
    """Blocks computed at once on dask's threads each hold BLAS at one thread; one that
    ends first must not give BLAS its threads back under another still computing (what
    it would see: the count it started with)."""
    import time

    from threadpoolctl import threadpool_info

    from ml4ml.measure import register_measure, unregister_measure

    def blas_threads(matrices):
        time.sleep(0.05)  # blocks overlap: each sees the others start and end
        counts = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        return np.full(matrices.shape[:-2], float(max(counts)))

    path = stores("blas.zarr")
    register_measure("blas_threads", blas_threads)
    try:
        with threads(2):
            measure_store(str(path))
    finally:
        unregister_measure("blas_threads")
    seen = measures(path).value.sel(measure="blas_threads").values
    assert seen.size > 0 and np.all(seen == 1.0), np.unique(seen)


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


def test_measures_of_a_model_do_not_depend_on_its_batch_mates():
    """Asserts bitwise identity of a model's matrices and measures computed alone and in
    one block with models whose samples split otherwise (in memory: one block of all)."""
    import xarray as xr

    from ml4ml.measure.measures import measure_database
    from ml4ml.store.legacy import read_legacy

    base = read_legacy(golden.results("small1"), golden.act("small1"))
    models = []
    for k, wrong in enumerate((0, 60, 150)):  # more and more samples wrong everywhere
        probe = base.copy(deep=True)
        probe["prediction"][:, :wrong] = (probe["label"].values[:wrong] + 1) % 10
        probe["act"] = probe["act"] * (1 + 0.1 * k)
        models.append(probe)
    together = xr.concat(models, dim="mid").assign_coords(mid=["a", "b", "c"])
    both = measure_database(together).compute()
    for k, mid in enumerate(("a", "b", "c")):
        alone = measure_database(together.sel(mid=[mid])).compute()
        for name in alone.data_vars:
            assert np.array_equal(alone[name].values, both[name].sel(mid=[mid]).values,
                                  equal_nan=alone[name].dtype.kind == "f"), (mid, name)


def test_probe_statistics_do_not_depend_on_threads_or_on_the_inputs_beside_them():
    """Asserts bitwise identity of the probe's responses and layer statistics of the same
    images: on 1 and 2 torch threads, with a busy core, in forwards of other sizes and
    beside other images. The model ends in a 1x1 convolution, whose implementation torch
    picks from the batch size and the thread count."""
    import torch
    import torch.nn as nn

    from ml4ml.probe.responses import probe_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(),
                          nn.Conv2d(16, 10, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    images = torch.rand(20, 1, 14, 14, generator=torch.Generator().manual_seed(1))
    labels = np.arange(20) % 10
    grid = [-10.0, 0.0, 10.0]

    def probe(n_threads, n_images=7, batch_size=5):
        before = torch.get_num_threads()
        torch.set_num_threads(n_threads)
        try:
            ds = probe_model(model, images[:n_images], labels[:n_images], "rotation", grid,
                             layers=["2", "4"], batch_size=batch_size)
        finally:
            torch.set_num_threads(before)
        return ds.isel(sample=slice(0, 7))

    reference = probe(1)
    with busy_core():
        others = {"2 threads": probe(2), "forwards of 64": probe(1, batch_size=64),
                  "beside 13 other images": probe(1, n_images=20),
                  "2 threads, forwards of 64, beside others": probe(2, 20, 64)}
    for what, ds in others.items():
        for name in ("prob", "act"):
            assert np.array_equal(ds[name].values, reference[name].values), (what, name)
