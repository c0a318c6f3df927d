"""The Lie derivative at probe time (``[probe] lie_derivative``, ``probe_model(...,
lie_derivative=True)``, ``lee (mid, sample)``) and the bilinear geometric families.

On a CNN5 trained briefly on real MNIST digits (``mnist5k``), the forward-mode ``lee``
agrees with the finite difference ``lee_fd`` of the response measures on a bilinear grid
one small step either side of the identity, and with Gruver et al.'s definition
reproduced here independently (their parametrisation: radians, ``align_corners=True``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ml4ml import dims
from ml4ml.errors import InputError
from ml4ml.measure.responses import response_measures
from ml4ml.probe.generators import (derivative_by_jvp, geometric_derivative,
                                    grid_sample_bilinear)
from ml4ml.probe.responses import probe_model
from ml4ml.probe.transforms import (Transform, get_transform, register_transform,
                                    torchvision_equivalent)
from processes import ml4ml

GEOMETRIC = ("rotation", "scaling", "translation")


@pytest.fixture(scope="module")
def digits():
    """48 real MNIST test digits (28x28) and their labels."""
    from ml4ml.data.suites import load_suite

    test = load_suite("mnist5k", "test", n_samples=48, seed=0)
    return test.images, test.labels


@pytest.fixture(scope="module")
def cnn5():
    """A CNN5 trained for two epochs on 1,000 real MNIST digits (~90% accurate)."""
    from ml4ml.data.suites import load_suite
    from ml4ml.zoo.architectures import CNN5

    torch.manual_seed(0)
    train = load_suite("mnist5k", "train", n_samples=1000, seed=0)
    model = CNN5(10, 1, (28, 28))
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(2):
        order = torch.randperm(len(train.labels))
        for start in range(0, len(order), 50):
            idx = order[start:start + 50]
            loss = F.cross_entropy(model(train.images[idx]), train.labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def family(name: str) -> Transform:
    t = get_transform(name)
    return t.with_interpolation("bilinear") if name in GEOMETRIC else t


# --------------------------------------------------------------------- bilinear sampling
@pytest.mark.parametrize("name,params", [
    ("rotation", [-45.0, -0.01, 0.0, 0.01, 7.3, 90.0, 180.0, 270.0]),
    ("scaling", [0.5, 0.99, 1.0, 1.01, 1.7]),
    ("translation", [-3.5, -0.01, 0.0, 0.01, 2.0]),
])
@pytest.mark.parametrize("size", [(28, 28), (9, 12)])
def test_bilinear_families_match_torchvision_bit_for_bit(name, params, size):
    images = torch.rand(3, 1, *size, generator=torch.Generator().manual_seed(1))
    out = family(name).apply(images, torch.tensor(params, dtype=torch.float64))
    reference = torchvision_equivalent(name, "bilinear")
    expected = torch.stack([torch.stack([reference(image, p) for image in images])
                            for p in params])
    assert torch.equal(out, expected), (out - expected).abs().max()
    nearest = get_transform(name).apply(images, torch.tensor(params, dtype=torch.float64))
    assert not torch.equal(nearest, out)  # it did sample otherwise


def test_interpolation_is_refused_where_a_family_has_no_choice():
    with pytest.raises(InputError, match="transform 'brightness' cannot interpolate "
                                         "'bilinear'; it can: nearest"):
        get_transform("brightness").with_interpolation("bilinear")
    with pytest.raises(InputError, match="'rotation' cannot interpolate 'bicubic'"):
        get_transform("rotation").with_interpolation("bicubic")
    assert get_transform("rotation").with_interpolation("nearest") is get_transform("rotation")


def test_grid_sample_bilinear_is_torch_grid_sample():
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(4, 2, 9, 11, dtype=torch.float64, generator=generator)
    grid = torch.rand(1, 7, 5, 2, dtype=torch.float64, generator=generator) * 2.6 - 1.3
    expected = F.grid_sample(images, grid.expand(4, -1, -1, -1), mode="bilinear",
                             padding_mode="zeros", align_corners=False)
    assert torch.allclose(grid_sample_bilinear(images, grid), expected, rtol=0, atol=1e-14)


# --------------------------------------------------------------- the generators' tangents
def _framed(n=4, size=12, seed=3):
    """Random float64 images with a zero frame (strokes away from the border, as digits)."""
    x = torch.rand(n, 1, size, size, dtype=torch.float64,
                   generator=torch.Generator().manual_seed(seed))
    x[..., 0, :] = x[..., -1, :] = x[..., :, 0] = x[..., :, -1] = 0
    return x


@pytest.mark.parametrize("name,identity,step,tolerance", [
    ("rotation", 0.0, 1e-3, 1e-4), ("scaling", 1.0, 1e-5, 1e-4),
    ("translation", 0.0, 1e-4, 1e-4), ("brightness", 1.0, 1e-4, 1e-10),
    ("contrast", 1.0, 1e-4, 1e-10)])
def test_tangent_is_the_central_difference_of_the_transform(name, identity, step, tolerance):
    images = _framed()
    images[0, 0, 5, 5] = 1.0  # a saturated pixel: the clamp stops it on one side
    t = family(name)
    out = t.apply(images, torch.tensor([identity - step, identity, identity + step],
                                       dtype=torch.float64))
    central = (out[2] - out[0]) / (2 * step)
    tangent = t.derivative(images)
    assert tangent.shape == images.shape and tangent.dtype == images.dtype
    scale = float(central.abs().max())
    assert scale > 0.01
    assert float((tangent - central).abs().max()) <= tolerance * scale


@pytest.mark.parametrize("name,identity", [("rotation", 0.0), ("scaling", 1.0),
                                           ("translation", 0.0)])
def test_tangent_plan_is_forward_mode_autodiff_through_the_whole_warp(name, identity):
    images = torch.rand(3, 2, 11, 13, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(4))  # a lit rim: the mask
    fast = geometric_derivative(name, identity, images)
    reference = derivative_by_jvp(name, identity, images)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-12)
    single = geometric_derivative(name, identity, images.float())
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), fast, rtol=0, atol=1e-6)


def test_rotation_tangent_is_the_flow_dotted_with_the_central_image_gradient():
    """Independent: d/dθ x(R(-θ) p) = (-v, u) · ∇x per radian, ∇x by central pixel
    differences (zero outside), (u, v) pixel coordinates about the centre (v down)."""
    images = _framed(n=2, size=10)
    x = images.numpy()[:, 0]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    d_du = (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]) / 2
    d_dv = (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]) / 2
    v, u = np.meshgrid(np.arange(10) - 4.5, np.arange(10) - 4.5, indexing="ij")
    expected = (-v * d_du + u * d_dv) * math.pi / 180  # per degree
    tangent = get_transform("rotation").derivative(images).numpy()[:, 0]
    # DELTA (1e-6 degrees) from the kink, the bilinear cross term leaves ~1e-7 relative
    np.testing.assert_allclose(tangent, expected, rtol=0, atol=1e-6 * np.abs(expected).max())


# ----------------------------------------------------------- lee against lee_fd, Gruver
def _lee_fd(probe, identity_index=1) -> float:
    prob = probe[dims.PROB].rename({dims.CLASS: dims.UNIT})
    return float(response_measures(prob, ["lee_fd"], identity_index=identity_index).values[0])


@pytest.mark.parametrize("name,identity,step", [
    ("rotation", 0.0, 0.01),      # degrees: the grid
    ("translation", 0.0, 0.01),   # pixels
    ("scaling", 1.0, 0.001),      # a factor: a 1% zoom moves the rim 0.14 px (2.2% off)
    ("brightness", 1.0, 1e-4),    # a factor: at 1 +- 0.01 the clamp at 1 bends lee_fd 9%
    ("contrast", 1.0, 1e-4)])
def test_lee_agrees_with_lee_fd_on_a_bilinear_grid(cnn5, digits, name, identity, step):
    images, labels = digits
    probe = probe_model(cnn5, images, labels, family(name),
                        [identity - step, identity, identity + step], lie_derivative=True)
    lee = probe[dims.LEE]
    assert lee.dims == (dims.SAMPLE,) and lee.dtype == np.float64
    assert lee.attrs["long_name"] and "softmax" in lee.attrs["description"]
    assert np.isfinite(lee.values).all() and (lee.values > 0).all()
    fd = _lee_fd(probe)
    assert float(lee.mean()) == pytest.approx(fd, rel=0.02)


def _gruver_rotation(images: torch.Tensor, t: float) -> torch.Tensor:
    """Gruver et al.'s ``rotate`` (lee/transforms: affine matrix [[cos, sin], [-sin, cos]]
    in radians, ``F.affine_grid(align_corners=True)``, bilinear), here with torch's
    sampler and zero padding: their sampler mirrors at the border where torchvision (and
    so the probe) fills 0, which reads alike on images whose rim is 0."""
    c, s = math.cos(t), math.sin(t)
    theta = torch.tensor([[[c, s, 0.0], [-s, c, 0.0]]], dtype=torch.float64)
    theta = theta.expand(images.shape[0], -1, -1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=True)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=True)


def test_lee_is_gruver_et_al_lie_derivative(cnn5, digits):
    """Their ``get_equivariance_metrics``: ``rot_deriv = jvp(t -> softmax(model(rotate(x,
    t))), 0, 1)`` per radian, reduced ``abs().mean(-1)`` over classes. Reproduced: the
    image tangent by a tiny central difference of their warp in float64 (bilinear sampling
    has a kink at the identity: the central one is the derivative a grid converges to),
    pushed through the model by ``torch.autograd.functional.jvp``."""
    import copy

    images, labels = digits
    rim = torch.cat([images[..., 0, :], images[..., -1, :], images[..., 0], images[..., -1]],
                    dim=-1)
    blank_rim = (rim == 0).flatten(1).all(dim=1)
    assert int(blank_rim.sum()) >= 40  # of 48 digits; the others touch the border
    images, labels = images[blank_rim], labels[blank_rim]
    model = copy.deepcopy(cnn5).double()
    x = images.double()
    step = 1e-7  # radians
    tangent = (_gruver_rotation(x, step) - _gruver_rotation(x, -step)) / (2 * step)
    _, derivative = torch.autograd.functional.jvp(
        lambda z: torch.softmax(model(z), dim=-1), x, tangent)
    theirs = derivative.abs().mean(-1).numpy()  # per radian
    probe = probe_model(model, x, labels, "rotation", [-1.0, 0.0, 1.0], lie_derivative=True)
    ours = probe[dims.LEE].values * 180 / math.pi  # per degree -> per radian
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)  # both tangents O(1e-7) off the limit
    # and the float32 model of the store agrees to float32's rounding
    probe32 = probe_model(cnn5, images, labels, "rotation", [-1.0, 0.0, 1.0],
                          lie_derivative=True)
    np.testing.assert_allclose(probe32[dims.LEE].values * 180 / math.pi, theirs, rtol=1e-3)


def test_lee_does_not_change_the_other_responses_nor_depend_on_batches(cnn5, digits):
    images, labels = digits
    grid = [-10.0, 0.0, 10.0]
    plain = probe_model(cnn5, images, labels, "rotation", grid)
    both = probe_model(cnn5, images, labels, "rotation", grid, lie_derivative=True)
    small = probe_model(cnn5, images, labels, "rotation", grid, lie_derivative=True,
                        batch_size=16)
    assert dims.LEE not in plain
    for name in (dims.PROB, dims.ACT, dims.PREDICTION):
        assert np.array_equal(plain[name].values, both[name].values)
    np.testing.assert_allclose(small[dims.LEE].values, both[dims.LEE].values, rtol=1e-5)


# ------------------------------------------------------------------------------ refusals
def test_a_family_without_a_derivative_is_refused_naming_it(cnn5, digits):
    images, labels = digits
    with pytest.raises(InputError, match="transform 'blur' has no derivative for the Lie "
                                         "derivative: its derivative at sigma 0"):
        probe_model(cnn5, images, labels, "blur", [-1.0, 0.0, 1.0], lie_derivative=True)

    def darken(batch, params):
        return batch.unsqueeze(0) * params.to(batch.dtype).view(-1, 1, 1, 1, 1)

    mine = Transform("darken_nod", "factor", 1.0, darken)
    with pytest.raises(InputError, match="transform 'darken_nod' has no derivative for the "
                                         "Lie derivative: it was registered without "
                                         "derivative="):
        probe_model(cnn5, images, labels, mine, [0.9, 1.0, 1.1], lie_derivative=True)
    # with one it runs, and its lee is brightness's (no pixel of the digits saturates
    # under a product without clamp; brightness halves only the pixels at exactly 1)
    with_derivative = register_transform(Transform("darken_d", "factor", 1.0, darken,
                                                   derivative=lambda b: b.clone()),
                                         overwrite=True)
    probe = probe_model(cnn5, images, labels, with_derivative, [0.9, 1.0, 1.1],
                        lie_derivative=True)
    unsaturated = (images < 1).reshape(len(images), -1).all(dim=1).numpy()
    brightness = probe_model(cnn5, images, labels, "brightness", [0.9, 1.0, 1.1],
                             lie_derivative=True)
    np.testing.assert_allclose(probe[dims.LEE].values[unsaturated],
                               brightness[dims.LEE].values[unsaturated], rtol=1e-6)


SPEC = """
name = "lie"
[store]
path = "s.zarr"
[suites.digits]
n_samples = 16
[transforms.rotation]
values = [-0.02, -0.01, 0, 0.01, 0.02]
interpolation = "bilinear"
[probe]
lie_derivative = true
[zoo]
arch = "cnn5"
epochs = 1
n_train = 64
batch_size = 32
[[zoo.models]]
mid = "a"
"""


def _ml4ml(*args, cwd):
    return ml4ml(*args, cwd=cwd, timeout=600)


def test_a_spec_with_a_family_without_derivative_is_refused_in_one_line(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.replace('[transforms.rotation]\nvalues = [-0.02, -0.01, 0, 0.01, 0.02]\n'
                                 'interpolation = "bilinear"',
                                 "[transforms.blur]\nvalues = [-1, 0, 1]"))
    result = _ml4ml("train", str(spec), cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "blur" in line]
    assert len(lines) == 1, result.stderr
    assert "field 'transforms.blur'" in lines[0] and "has no derivative" in lines[0]
    assert not (tmp_path / "s.zarr").exists()  # nothing written


def test_the_probe_stage_stores_lee_and_redoes_rows_probed_without_it(tmp_path):
    import xarray as xr

    from ml4ml import store

    spec = tmp_path / "lie.toml"
    spec.write_text(SPEC)
    assert _ml4ml("train", str(spec), "-q", cwd=tmp_path).returncode == 0
    first = _ml4ml("probe", str(spec), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    path = tmp_path / "s.zarr"
    ds = store.open_probes(path, "digits", "rotation")
    assert ds.attrs["interpolation"] == "bilinear"
    lee = ds[dims.LEE]
    assert lee.dims == (dims.MID, dims.SAMPLE) and lee.dtype == np.float64
    assert lee.data.chunksize == (1, 16)  # chunks of one model, as prob's
    assert lee.attrs["long_name"] == "Lie derivative of the softmax"
    stored = lee.values.copy()
    assert np.isfinite(stored).all() and (stored > 0).all()
    # lee_fd of the same probes agrees within 2% (the bilinear grid of step 0.01)
    fd = float(response_measures(ds[dims.PROB].isel(mid=0).rename({dims.CLASS: dims.UNIT}),
                                 ["lee_fd"], identity_index=2).values[0])
    assert float(stored.mean()) == pytest.approx(fd, rel=0.02)
    # plain xarray reads it
    assert xr.open_zarr(path, group="probes/digits/rotation")[dims.LEE].shape == (1, 16)
    # the measure stage turns it into the response measure lee: its mean over samples, at
    # confidence only, beside lee_fd of the same stored probes
    measured = _ml4ml("measure", str(path), "-q", cwd=tmp_path)
    assert measured.returncode == 0, measured.stderr
    value = xr.open_zarr(path, group="measures/digits/rotation")[dims.RESPONSE_VALUE]
    at = value.sel(level="confidence").isel(mid=0)
    assert float(at.sel(response_measure="lee")) == pytest.approx(float(stored.mean()),
                                                                  rel=1e-12)
    assert float(at.sel(response_measure="lee_fd")) == pytest.approx(fd, rel=1e-10)
    assert np.isnan(value.sel(response_measure="lee").drop_sel(level="confidence")).all()

    # probed again without it: NaN, never the stale value; lineage covers it
    digest = str(ds[store.DIGEST].values[0])
    spec.write_text(SPEC.replace("lie_derivative = true", "lie_derivative = false"))
    assert _ml4ml("probe", str(spec), "--force", "-q", cwd=tmp_path).returncode == 0
    again = store.open_probes(path, "digits", "rotation")
    assert np.isnan(again[dims.LEE].values).all() and bool(again[dims.DONE].values[0])
    assert str(again[store.DIGEST].values[0]) != digest

    # asked for again: the row is redone, with the same values
    spec.write_text(SPEC)
    third = _ml4ml("probe", str(spec), cwd=tmp_path)
    assert "re-probing a: its Lie derivative was not recorded" in third.stderr + third.stdout
    redone = store.open_probes(path, "digits", "rotation")
    np.testing.assert_array_equal(redone[dims.LEE].values, stored)
    assert str(redone[store.DIGEST].values[0]) == digest
    checked = _ml4ml("store", "check", str(path), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_store_probed_without_it_has_no_lee(tmp_path):
    from ml4ml import store

    spec = tmp_path / "plain.toml"
    spec.write_text(SPEC.replace("lie_derivative = true", "lie_derivative = false")
                    .replace('interpolation = "bilinear"\n', ""))
    assert _ml4ml("train", str(spec), "-q", cwd=tmp_path).returncode == 0
    assert _ml4ml("probe", str(spec), "-q", cwd=tmp_path).returncode == 0
    ds = store.open_probes(tmp_path / "s.zarr", "digits", "rotation")
    assert dims.LEE not in ds and "interpolation" not in ds.attrs


def test_torchscript_and_exported_graphs_give_the_eager_lee(cnn5, digits):
    """Forward-mode autodiff runs through a ScriptModule and a ``torch.export`` graph (the
    probe stage wraps such loaded files to hook and mode them)."""
    from ml4ml.probe.lie import softmax_lie_derivative

    images = digits[0][:16]
    rotation = get_transform("rotation")
    eager = softmax_lie_derivative(cnn5, images, rotation).numpy()
    assert (eager > 0).all()
    for other in (torch.jit.script(cnn5), torch.export.export(cnn5, (images,)).module()):
        np.testing.assert_allclose(softmax_lie_derivative(other, images, rotation).numpy(),
                                   eager, rtol=1e-5)
