"""The fused C statistics kernel (ml4ml._statistics) against the ATen kernels and float64."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import ml4ml.probe as probe_module
from ml4ml import dims
from ml4ml.probe import fused_statistics_available, layer_statistics, probe_model
from ml4ml.suites import load_suite
from conftest import require_fused_statistics

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def fused_kernel_built():
    require_fused_statistics()


def statistics_with(kernel: str, activations: torch.Tensor, monkeypatch) -> torch.Tensor:
    monkeypatch.setattr(probe_module, "USE_FUSED_STATISTICS", kernel == "fused")
    return layer_statistics(activations)


def float64_statistics(z: torch.Tensor) -> np.ndarray:
    """The 8 statistics in float64 of (n, channel, *spatial): (n, 8)."""
    z = z.double().reshape(z.shape[0], z.shape[1], -1).numpy()
    flat = z.reshape(z.shape[0], -1)
    mu, top = z.mean(-1), z.max(-1)
    return np.stack([flat.mean(-1), flat.std(-1), flat.max(-1), flat.min(-1),
                     mu.max(-1), mu.std(-1), top.mean(-1), top.std(-1)], axis=-1)


def test_kernel_is_built_and_names_the_statistics_in_order():
    # pip install -e . builds it wherever a C compiler is (this project's machines and CI)
    assert fused_statistics_available()
    from ml4ml import _statistics

    assert tuple(_statistics.STATS) == dims.STATS
    with pytest.raises(ValueError, match="channels >= 1"):
        _statistics.layer_statistics(0, 1, 0, 1, 0)


# (n, channel, *spatial): every path of the kernel. Spatial 1/2/4/8 with channel x spatial a
# multiple of 16 (channels packed in a vector), other spatial < 16 with >= 16 channels
# (transposed rows, with a tail of channels), and the rest (one channel at a time, with a
# tail of values after the 16-wide steps)
SHAPES = [(6, 32), (6, 16, 1, 1), (6, 8, 1, 2), (6, 32, 2, 2), (6, 16, 2, 4), (6, 512, 2, 2),
          (6, 16, 3, 3), (6, 37, 1, 3), (6, 64, 3, 5), (6, 5, 2, 2), (6, 3, 1, 3), (6, 7),
          (6, 16, 8, 8), (6, 6, 24, 24), (6, 3, 5, 7), (6, 1, 1, 70), (3, 2, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_fused_kernel_matches_aten_and_float64(shape, monkeypatch):
    g = torch.Generator().manual_seed(len(shape) * 100 + shape[1])
    z = 2.0 + 3.0 * torch.randn(shape, generator=g)
    before = z.clone()
    assert probe_module._fused_applies(z)
    fused = statistics_with("fused", z, monkeypatch)
    aten = statistics_with("aten", z, monkeypatch)
    torch.testing.assert_close(z, before, rtol=0, atol=0)  # neither writes to its input
    assert fused.shape == aten.shape == (shape[0], 8) and fused.dtype == torch.float32
    torch.testing.assert_close(fused, aten, rtol=2e-6, atol=3e-6)
    np.testing.assert_allclose(fused.double().numpy(), float64_statistics(z),
                               rtol=2e-6, atol=3e-6)


@pytest.mark.parametrize("shape", [(4, 32, 2, 2), (4, 16, 3, 3), (4, 16, 8, 8), (4, 5, 3),
                                   (4, 40, 1, 3)], ids=str)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_values_give_what_the_aten_kernels_give(shape, bad, monkeypatch):
    z = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    z[1].view(-1)[shape[-1] + 1] = bad
    fused = statistics_with("fused", z, monkeypatch)
    aten = statistics_with("aten", z, monkeypatch)
    torch.testing.assert_close(fused, aten, rtol=2e-6, atol=3e-6, equal_nan=True)
    clean = [0, 2, 3]  # the other rows keep their numbers
    assert bool(torch.isfinite(fused[clean]).all())
    if bad != bad:  # NaN: every statistic of the row
        assert bool(torch.isnan(fused[1]).all())
    else:  # an infinity: mean, max or min infinite, the spreads NaN
        assert fused[1, dims.STATS.index("max" if bad > 0 else "min")].item() == bad
        assert fused[1, dims.STATS.index("mean")].item() == bad
        assert bool(torch.isnan(fused[1, dims.STATS.index("std")]))


def test_other_dtypes_and_layouts_reach_the_same_numbers(monkeypatch):
    z = torch.randn(5, 24, 6, 6, generator=torch.Generator().manual_seed(4))
    expected = statistics_with("aten", z, monkeypatch)
    monkeypatch.setattr(probe_module, "USE_FUSED_STATISTICS", True)
    torch.testing.assert_close(layer_statistics(z.double()), expected, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(layer_statistics(z.to(memory_format=torch.channels_last)),
                               expected, rtol=2e-6, atol=2e-6)
    half = z.half()
    torch.testing.assert_close(layer_statistics(half),
                               statistics_with("aten", half.float(), monkeypatch),
                               rtol=2e-6, atol=2e-6)


class SmallCNN(nn.Module):
    """Convs with 16x8x8 and 32x2x2 outputs (the paths CNN5 takes), a linear head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.head = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.head(torch.relu(self.conv3(x)).flatten(1))


def test_probe_with_the_fused_kernel_equals_the_aten_probe(monkeypatch):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    suite = load_suite("digits", n_samples=40)
    grid = np.linspace(-20.0, 20.0, 9)
    runs, fused_calls = {}, []
    real_kernel = probe_module._statistics.layer_statistics

    def counted(x, n, channels, spatial, *args):  # a spy: counts, then runs the kernel
        fused_calls.append((n, channels, spatial))
        return real_kernel(x, n, channels, spatial, *args)

    monkeypatch.setattr(probe_module._statistics, "layer_statistics", counted)
    for kernel in ("fused", "aten"):
        monkeypatch.setattr(probe_module, "USE_FUSED_STATISTICS", kernel == "fused")
        runs[kernel] = probe_model(model, suite.images, suite.labels, "rotation", grid,
                                   layers=["conv1", "conv2", "conv3"], batch_size=64)
    # 9 x 40 rows in forwards of 64 (6 forwards), three layers each, all by the C kernel
    assert len(fused_calls) == 3 * 6 and fused_calls[1] == (64, 16, 64)
    act = {k: ds[dims.ACT].values for k, ds in runs.items()}
    assert act["fused"].shape == (9, 40, 3, 8)
    np.testing.assert_allclose(act["fused"], act["aten"], rtol=2e-6, atol=3e-6)
    # the same model outputs (to float rounding: oneDNN may pick another path per buffer)
    np.testing.assert_allclose(runs["fused"][dims.PROB].values, runs["aten"][dims.PROB].values,
                               rtol=0, atol=1e-6)
    assert float(np.abs(act["fused"]).max()) > 0.1  # real activations, not zeros


@pytest.mark.parametrize("shape", [(300, 16, 8, 8), (900, 32, 2, 2), (200, 24, 3, 3)], ids=str)
def test_rows_split_over_threads_give_identical_numbers(shape):
    from ml4ml import _statistics

    z = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    n, channels = shape[:2]
    spatial = z[0, 0].numel()
    runs = []
    for n_threads in (1, 2, 3, 64):  # more threads than rows of some: capped
        out = torch.full((n, 8), float("nan"))
        _statistics.layer_statistics(z.data_ptr(), n, channels, spatial, out.data_ptr(),
                                     n_threads)
        runs.append(out)
    for out in runs[1:]:
        assert torch.equal(out, runs[0])  # rows are independent: bitwise the same
    assert bool(torch.isfinite(runs[0]).all())
