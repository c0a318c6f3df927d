"""Transformation registry, grid validation and bit-exactness against torchvision."""

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ml4ml.probe import transforms
from ml4ml.errors import InputError
from ml4ml.probe.transforms import torchvision_equivalent
from ml4ml.probe.transforms import Transform, get_transform, register_transform, validate_grid

torch.set_num_threads(min(2, torch.get_num_threads()))
NEAREST = InterpolationMode.NEAREST

# family -> (grid, torchvision's per-image equivalent)
GRIDS = {"rotation": np.linspace(-45, 45, 31), "scaling": np.linspace(0.7, 1.3, 31),
         "translation": np.linspace(-7.5, 7.5, 31), "brightness": np.linspace(0.0, 2.0, 31),
         "contrast": np.linspace(0.0, 2.0, 31), "blur": np.linspace(-3.0, 3.0, 31)}
TORCHVISION = {name: (grid, torchvision_equivalent(name)) for name, grid in GRIDS.items()}


@pytest.fixture
def user_transform():
    """A user family ``invert_mix`` (blend with the negative), removed after the test."""

    def apply(images, params):
        w = params.to(images.dtype).to(images.device).view(-1, 1, 1, 1, 1)
        return (1 - w) * images.unsqueeze(0) + w * (1 - images.unsqueeze(0))

    t = register_transform(Transform("invert_mix", "weight", 0.0, apply, minimum=-1.0))
    yield t
    transforms._REGISTRY.pop("invert_mix", None)


def test_builtin_names():
    assert set(transforms.transform_names()) >= {
        "rotation", "scaling", "brightness", "translation", "contrast", "blur"}
    assert get_transform("rotation").units == "degrees"
    assert get_transform("scaling").identity == 1.0
    assert get_transform("blur").identity == 0.0


def test_get_transform_passes_a_transform_through():
    t = get_transform("brightness")
    assert get_transform(t) is t


def test_unknown_transform_lists_known_names():
    with pytest.raises(InputError, match=r"unknown transform 'shear'; expected one of "
                                         r"\[.*'blur'.*'rotation'.*\]"):
        get_transform("shear")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_matches_torchvision_bit_for_bit(name, channels):
    grid, reference = TORCHVISION[name]
    grid = grid[::3]  # 11 values, centre kept
    images = torch.rand(4, channels, 28, 28, generator=torch.Generator().manual_seed(1))
    out = get_transform(name).apply(images, torch.from_numpy(grid))
    assert out.shape == (len(grid), 4, channels, 28, 28)
    expected = torch.stack([torch.stack([reference(x, float(p)) for x in images]) for p in grid])
    assert torch.equal(out, expected)


@pytest.mark.parametrize("angle", [-270.0, -180.0, -90.0, 90.0, 180.0, 270.0, 360.0, 33.3])
@pytest.mark.parametrize("size", [(20, 28), (28, 28), (9, 9)])
def test_rotation_fast_paths_match_torchvision(angle, size):
    images = torch.rand(3, 2, *size, generator=torch.Generator().manual_seed(2))
    out = get_transform("rotation").apply(images, torch.tensor([angle], dtype=torch.float64))
    expected = torch.stack([TF.rotate(x, angle, interpolation=NEAREST, fill=0) for x in images])
    assert torch.equal(out[0], expected)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_identity_leaves_images_unchanged(name):
    t = get_transform(name)
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    out = t.apply(images, torch.tensor([t.identity], dtype=torch.float64))
    assert torch.equal(out[0], images)


def test_validate_grid_returns_float64_and_snaps_centre():
    grid = validate_grid("scaling", np.linspace(0.7, 1.3, 31))
    assert grid.dtype == np.float64 and grid.shape == (31,)
    assert grid[15] == 1.0
    np.testing.assert_array_equal(validate_grid("rotation", range(-15, 16)), np.arange(-15, 16))
    np.testing.assert_array_equal(validate_grid(get_transform("rotation"), [0]), [0.0])


@pytest.mark.parametrize("params, message", [
    ([-1, 0, 1, 2], r"odd number.*found 4 values \(an even number\)"),
    ([], r"found 0 values"),
    ([-1, 1, 0], r"strictly ascending.*found 1 followed by 0 at positions 1, 2"),
    ([-1, 0, 0], r"found 0 followed by 0"),
    ([-np.inf, 0, 1], r"finite.*found non-finite values \[-inf\]"),
    ([-1, 0, np.nan], r"found non-finite values \[nan\]"),
    ([[-1, 0, 1]], r"found an array of shape \(1, 3\)"),
    ([-2, -1, 1], r"identity \(0 degrees\) at the centre; found -1 at the centre"),
    (["a", "b", "c"], r"not numeric"),
])
def test_validate_grid_refuses(params, message):
    with pytest.raises(InputError, match=r"field 'params': expected .*" + message):
        validate_grid("rotation", params)


def test_validate_grid_refuses_values_outside_the_domain():
    with pytest.raises(InputError, match=r"scaling parameters must be > 0; found 0"):
        validate_grid("scaling", [0.0, 1.0, 2.0])
    with pytest.raises(InputError, match=r"brightness parameters must be >= 0; found -0.5"):
        validate_grid("brightness", [-0.5, 1.0, 2.5])
    validate_grid("brightness", [0.0, 1.0, 2.0])


def test_validate_grid_uses_the_family_identity():
    with pytest.raises(InputError, match=r"identity \(1 factor\) at the centre; found 0"):
        validate_grid("brightness", [-1, 0, 1])


def test_user_registered_transform(user_transform):
    assert get_transform("invert_mix") is user_transform
    assert "invert_mix" in transforms.transform_names()
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    grid = validate_grid("invert_mix", [-0.5, 0.0, 0.5])
    out = user_transform.apply(images, torch.from_numpy(grid))
    assert torch.equal(out[1], images)
    torch.testing.assert_close(out[2], 0.5 * images + 0.5 * (1 - images))
    with pytest.raises(InputError, match=r"invert_mix parameters must be >= -1; found -2"):
        validate_grid("invert_mix", [-2, 0, 2])


def test_register_refuses_a_taken_name_unless_overwrite(user_transform):
    again = Transform("invert_mix", "weight", 0.0, user_transform.apply)
    with pytest.raises(InputError, match=r"'invert_mix' is already registered.*overwrite=True"):
        register_transform(again)
    assert register_transform(again, overwrite=True) is again
    assert get_transform("invert_mix") is again


def test_register_refuses_non_transforms():
    with pytest.raises(InputError, match=r"expected an ml4ml.probe.Transform, found dict"):
        register_transform({"name": "x"})
    with pytest.raises(InputError, match=r"non-empty string"):
        register_transform(Transform("", "u", 0.0, lambda x, p: x))


def test_contrast_refuses_two_channels():
    images = torch.rand(1, 2, 8, 8)
    with pytest.raises(InputError, match=r"contrast needs 1 or 3 channels, found 2"):
        get_transform("contrast").apply(images, torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64))


def test_blur_refuses_tiny_images():
    images = torch.rand(1, 1, 3, 3)
    with pytest.raises(InputError, match=r"blur needs images larger than 3 pixels, found 3x3"):
        get_transform("blur").apply(images, torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64))


def test_blur_is_symmetric_in_sign():
    images = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    out = get_transform("blur").apply(images, torch.tensor([-1.5, 0.0, 1.5], dtype=torch.float64))
    assert torch.equal(out[0], out[2])
    assert not torch.equal(out[0], out[1])
    assert math.isclose(float(out[0].sum()), float(images.sum()), rel_tol=0.05)
