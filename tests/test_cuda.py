"""`ml4ml probe --device cuda`, wherever a GPU is present: the same store as on the CPU.

Skipped (with the reason) on machines without CUDA; it runs on any CI runner with a GPU.
"""

import shutil

import numpy as np
import pytest
import torch

from ml4ml import dims, store
from processes import ml4ml

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")

SPEC = """
name = "cuda"
[store]
path = "db.zarr"
[suites.digits]
n_samples = 64
[transforms.rotation]
grid = [-15, 15, 7]
[zoo]
arch = "cnn5"
epochs = 1
n_train = 128
augmentation = "rotation"
[[zoo.grids]]
aug_range = [0, 30]
"""


def test_probe_on_cuda_matches_the_cpu(tmp_path):
    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    cpu.mkdir()
    (cpu / "spec.toml").write_text(SPEC)
    assert ml4ml("train", "spec.toml", "-q", cwd=cpu, timeout=600).returncode == 0
    shutil.copytree(cpu, gpu)
    for folder, device in ((cpu, "cpu"), (gpu, "cuda")):
        result = ml4ml("probe", "spec.toml", "--device", device, "-q", cwd=folder, timeout=600)
        assert result.returncode == 0, result.stderr
    a = store.open_probes(str(cpu / "db.zarr"), "digits", "rotation").load()
    b = store.open_probes(str(gpu / "db.zarr"), "digits", "rotation").load()
    assert b[dims.DONE].values.all()
    np.testing.assert_allclose(b[dims.PROB].values, a[dims.PROB].values, atol=1e-4, rtol=0)
    np.testing.assert_allclose(b[dims.ACT].values, a[dims.ACT].values, rtol=1e-3, atol=1e-4)
    # argmax may flip only where two classes tie to float rounding
    assert (b[dims.PREDICTION].values == a[dims.PREDICTION].values).mean() > 0.995
