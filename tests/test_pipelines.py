"""Pipelines end to end: the paper's partitions on tiny data in the real on-disk formats,
and the probe stage on a real dask LocalCluster giving the same store as a serial run."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from ml4ml import dims, store
from independent import assert_stored_as_recomputed
from ml4ml.config import load_pipeline, shrink_pipeline
from ml4ml.measure.stage import measure_store, store_features
from ml4ml.probe.stage import probe_pipeline
from ml4ml.data.tiny import write_cifar10, write_mnist
from ml4ml.zoo.stage import train_pipeline

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


@pytest.mark.parametrize("name,writer,suite,transform", [
    ("paper-a-rotation-cifar10-vgg13bn", write_cifar10, "cifar10", "rotation"),
    ("paper-b-brightness-cifar10-vgg13bn", write_cifar10, "cifar10", "brightness"),
    ("paper-c-scaling-cifar10-vgg13bn", write_cifar10, "cifar10", "scaling"),
    ("paper-d-rotation-mnist-cnn5", write_mnist, "mnist", "rotation"),
])
def test_paper_partition_wiring(tmp_path, name, writer, suite, transform):
    root = writer(tmp_path / "data", n_train=60, n_test=30, seed=1)
    full = load_pipeline(PIPELINES / f"{name}.toml")
    p = shrink_pipeline(full, store=str(tmp_path / "db.zarr"), data_root=root, n_models=3,
                        epochs=1, n_train=48, n_samples=12)
    assert [r.holdout for r in p.recipes] == [False, False, True]
    assert train_pipeline(p, progress=False).trained == [r.mid for r in p.recipes]
    report = probe_pipeline(p, progress=False)
    assert len(report.probed) == 3
    (measured,) = measure_store(p.store)
    assert sorted(measured.measured) == sorted(p.mids)
    probes = store.open_probes(p.store, suite, transform)
    assert probes.sizes == {"mid": 3, "aug_param": 31, "sample": 12, "class": 10, "layer": 2,
                            "stat": 8}
    np.testing.assert_allclose(probes[dims.PROB].sum(dims.CLASS).values, 1.0, atol=1e-5)
    assert np.isfinite(probes[dims.ACT].values).all()
    table = store_features(p.store, transform)
    assert table.shape == (3, 81) and table["mid"].tolist() == p.mids
    # the numbers: stored probes and features equal an independent recomputation
    assert_stored_as_recomputed(p, [p.mids[0], p.mids[-1]], table, transform=transform)
    models = store.read_models(p.store)
    assert set(models["arch"].values) == {full.recipes[0].arch}
    assert set(models["partition"].values) == {name.split("-")[1]}


SPEC = """
[store]
path = "serial.zarr"
[suites.digits]
n_samples = 40
[transforms.rotation]
grid = [-10, 10, 5]
[transforms.brightness]
values = [0.8, 0.9, 1.0, 1.1, 1.2]
[probe]
batch_size = 64
[zoo]
arch = "cnn5"
epochs = 1
n_train = 200
[[zoo.grids]]
seed = [0, 1, 2]
"""


def test_probe_on_a_local_cluster_equals_serial(tmp_path):
    spec = tmp_path / "p.toml"
    spec.write_text(SPEC)
    serial = load_pipeline(spec)
    train_pipeline(serial, progress=False)
    shutil.copytree(serial.store, tmp_path / "dist.zarr")
    from dataclasses import replace

    dist = replace(serial, store=str(tmp_path / "dist.zarr"))
    probe_pipeline(serial, progress=False)
    from ml4ml.cluster import dask_client

    with dask_client(workers=2) as client:
        report = probe_pipeline(dist, client=client, progress=False)
    assert len(report.probed) == 6
    for transform in ("rotation", "brightness"):
        a = store.open_probes(serial.store, "digits", transform).load()
        b = store.open_probes(dist.store, "digits", transform).load()
        assert a[dims.DONE].values.all()
        xr.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert (a[dims.PREDICTION] == b[dims.PREDICTION]).mean() > 0.999
    # done models are skipped on rerun; --force probes again
    assert probe_pipeline(serial, progress=False).skipped == 6
    assert len(probe_pipeline(serial, force=True, progress=False).probed) == 6


OOD_SPEC = """
[store]
path = "ood.zarr"
[data]
root = "data"
[suites.digits]
n_samples = 20
[suites.fashion_mnist]
n_samples = 20
seed = 3
[transforms.rotation]
values = [-10, -5, 0, 5, 10]
[zoo]
arch = "cnn5"
train_suite = "digits"
epochs = 1
n_train = 100
[[zoo.models]]
mid = "m1"
"""


def test_out_of_distribution_suite(tmp_path):
    """A digits-trained model probed on its own test split and on Fashion-MNIST."""
    from ml4ml.data.suites import load_suite
    from ml4ml.data.tiny import write_mnist

    write_mnist(tmp_path / "data", n_train=30, n_test=40, fashion=True)
    spec = tmp_path / "ood.toml"
    spec.write_text(OOD_SPEC)
    p = load_pipeline(spec)
    train_pipeline(p, progress=False)
    assert len(probe_pipeline(p, progress=False).probed) == 2
    fashion = store.open_probes(p.store, "fashion_mnist", "rotation")
    expected = load_suite("fashion_mnist", "test", root=tmp_path / "data", n_samples=20, seed=3)
    assert fashion[dims.LABEL].values.tolist() == expected.labels.tolist()
    assert store.done_mids(fashion) == ["m1"]
    digits = store.open_probes(p.store, "digits", "rotation")
    assert digits.sizes["sample"] == 20 and store.done_mids(digits) == ["m1"]
    reports = measure_store(p.store)
    assert sorted((r.suite, len(r.measured)) for r in reports) == [("digits", 1),
                                                                   ("fashion_mnist", 1)]
