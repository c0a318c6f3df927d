"""The names a spec may use, as plain data below the stages: suites and transform families.

The stages fill these registries (``data.suites`` its loaders and ``register_suite``;
``probe.transforms`` its families and ``register_transform``); the built-in names are
listed here too, so that a spec validates without importing torch or a stage. Also the
parameter-grid check of a transform family (``check_grid``, pure numpy) and
``import_path``, which a ``module:`` architecture is imported under.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass

import numpy as np

from ml4ml.errors import InputError

__all__ = ["BUILTIN_SUITES", "SUITE_LOADERS", "suite_names", "TransformInfo",
           "BUILTIN_TRANSFORMS", "TRANSFORMS", "transform_names", "transform_info",
           "check_grid", "identity_index", "import_path", "BLUR_KERNEL_SIZE", "MAX_SEVERITY",
           "CORRUPTION_FAMILIES", "corruption_family_names", "INTERPOLATIONS",
           "DERIVATIVE_MISSING", "has_derivative"]

# the suites ``data.suites`` defines (its ``SUITE_LOADERS`` is ``SUITE_LOADERS`` below)
BUILTIN_SUITES = ("digits", "mnist5k", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")
# name -> loader(split, root, download) -> (images, labels, n_classes); ``data.suites``
# fills it with the built-in loaders, ``register_suite`` adds a user's
SUITE_LOADERS: dict = {}


def suite_names() -> list[str]:
    """Suite names a spec may use (built-in and registered), sorted."""
    return sorted(set(BUILTIN_SUITES) | set(SUITE_LOADERS))


# kernel size of the ``blur`` family (odd; images must be larger than half of it)
BLUR_KERNEL_SIZE = 7
# how far the centre of a grid may lie from the identity and still be taken as it
_IDENTITY_RTOL = 1e-9


@dataclass(frozen=True)
class TransformInfo:
    """What a spec needs of a transformation family: its name, parameter units, identity
    value and allowed range (``probe.transforms.Transform`` adds the function)."""

    name: str
    units: str
    identity: float
    minimum: float = -math.inf
    minimum_inclusive: bool = True
    description: str = ""
    maximum: float = math.inf
    integer: bool = False
    identity_at: str = "centre"


# the 15 common corruptions of ImageNet-C / CIFAR-10-C (``probe.corruptions``): corruption ->
# transform family name (its own, but for the two whose names the multiplicative
# ``brightness`` / ``contrast`` families hold) and one line for help texts
MAX_SEVERITY = 5
CORRUPTION_FAMILIES = {
    "gaussian_noise": ("gaussian_noise", "additive gaussian noise"),
    "shot_noise": ("shot_noise", "Poisson (photon) noise"),
    "impulse_noise": ("impulse_noise", "salt-and-pepper noise"),
    "defocus_blur": ("defocus_blur", "anti-aliased disk blur"),
    "glass_blur": ("glass_blur", "blur, local pixel shuffle, blur"),
    "motion_blur": ("motion_blur", "one-sided line blur at a random angle"),
    "zoom_blur": ("zoom_blur", "mean of centre zooms up to 1.06..1.26"),
    "snow": ("snow", "motion-blurred snow flakes on a whitened image"),
    "frost": ("frost", "procedural frost texture blended in"),
    "fog": ("fog", "plasma-fractal fog"),
    "brightness": ("brightness_corruption", "HSV value shift"),
    "contrast": ("contrast_corruption", "contrast about each channel's mean"),
    "elastic_transform": ("elastic_transform", "random affine and elastic warp"),
    "pixelate": ("pixelate", "Pillow box down- and up-sampling"),
    "jpeg_compression": ("jpeg_compression", "Pillow JPEG round trip at quality 80..40"),
}


def corruption_family_names() -> list[str]:
    """The transform family names of the 15 corruptions, in ImageNet-C's order."""
    return [family for family, _ in CORRUPTION_FAMILIES.values()]


BUILTIN_TRANSFORMS = {t.name: t for t in (
    TransformInfo("rotation", "degrees", 0.0,
                  description="rotation about the centre, nearest neighbour, fill 0"),
    TransformInfo("scaling", "factor", 1.0, minimum=0.0, minimum_inclusive=False,
                  description="zoom about the centre (> 1 enlarges), nearest neighbour, fill 0"),
    TransformInfo("translation", "pixels", 0.0,
                  description="horizontal shift (positive: right), nearest neighbour, fill 0"),
    TransformInfo("brightness", "factor", 1.0, minimum=0.0,
                  description="multiply by the factor, clamp to [0, 1]"),
    TransformInfo("contrast", "factor", 1.0, minimum=0.0,
                  description="blend with the mean grey level, clamp to [0, 1]"),
    TransformInfo("blur", "sigma", 0.0,
                  description=f"gaussian blur, kernel {BLUR_KERNEL_SIZE}, sigma |value|, 0 "
                              f"unchanged"),
) + tuple(
    TransformInfo(family, "severity", 0.0, minimum=0.0, maximum=float(MAX_SEVERITY),
                  integer=True, identity_at="start",
                  description=f"{what} (ImageNet-C / CIFAR-10-C), severity 0..{MAX_SEVERITY}, "
                              f"0 unchanged")
    for family, what in CORRUPTION_FAMILIES.values()
)}
# the built-in families' interpolation choices (``[transforms.<name>] interpolation``) and
# why those without a derivative (``[probe] lie_derivative``) have none
INTERPOLATIONS = {"rotation": ("nearest", "bilinear"), "scaling": ("nearest", "bilinear"),
                  "translation": ("nearest", "bilinear")}
DERIVATIVE_MISSING = {"blur": "its derivative at sigma 0 is identically 0 (the gaussian "
                              "kernel's tails vanish faster than any power of sigma)",
                      **{family: "its parameter is a whole-number severity, which has no "
                                 "derivative" for family, _ in CORRUPTION_FAMILIES.values()}}


def has_derivative(transform) -> bool:
    """Whether a family (a name or family) has a derivative at its identity: a built-in
    one not in ``DERIVATIVE_MISSING``, or a registered one with ``derivative=``."""
    transform = transform_info(transform)
    if hasattr(transform, "derivative"):  # a probe.transforms.Transform
        return transform.derivative is not None
    return transform.name not in DERIVATIVE_MISSING


# name -> family (a TransformInfo, or once ``probe.transforms`` is imported its Transform,
# which has the same fields); ``register_transform`` adds a user's
TRANSFORMS: dict = dict(BUILTIN_TRANSFORMS)


def transform_names() -> list[str]:
    """Names of the registered transformation families, sorted."""
    return sorted(TRANSFORMS)


def transform_info(name):
    """The registered family called ``name`` (a family object is returned as is)."""
    if not isinstance(name, str) and hasattr(name, "identity"):
        return name
    try:
        return TRANSFORMS[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown transform {name!r}; expected one of {transform_names()}",
            field="transform", hint="register your own with ml4ml.probe.register_transform",
        ) from None


def check_grid(transform, params) -> np.ndarray:
    """Check a parameter grid for ``transform`` (a name or family) and return it as
    float64 (aug_param,).

    The grid must be a 1-D sequence of finite, strictly ascending values within the family's
    allowed range (whole numbers for an ``integer`` family, e.g. a corruption's severities
    0..5). For a centred family it has an odd number of values whose centre is the identity
    (within a relative 1e-9, then set to it exactly); for a one-sided family
    (``identity_at="start"``) the identity is its first value.
    """
    transform = transform_info(transform)
    one_sided = getattr(transform, "identity_at", "centre") == "start"
    where = "first" if one_sided else "at the centre"
    expected = (f"expected {'' if one_sided else 'an odd number of '}strictly ascending finite "
                f"values with the identity ({transform.identity:g} {transform.units}) {where}")
    try:
        grid = np.array(params, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{expected}; found {params!r}, which is not numeric",
                         field="params") from None
    if grid.ndim != 1:
        raise InputError(f"{expected}; found an array of shape {grid.shape}", field="params")
    if grid.size == 0 or (not one_sided and grid.size % 2 == 0):
        what = "an even number" if grid.size else "none"
        raise InputError(f"{expected}; found {grid.size} values ({what})", field="params")
    if not np.all(np.isfinite(grid)):
        bad = grid[~np.isfinite(grid)]
        raise InputError(f"{expected}; found non-finite values {bad.tolist()}", field="params")
    if getattr(transform, "integer", False):  # a severity of 7 or 2.5 is named first
        _check_range(transform, grid)
    steps = np.diff(grid)
    if np.any(steps <= 0):
        k = int(np.argmax(steps <= 0))
        raise InputError(
            f"{expected}; found {grid[k]:g} followed by {grid[k + 1]:g} at positions {k}, {k + 1}",
            field="params",
        )
    centre = 0 if one_sided else grid.size // 2
    if not math.isclose(grid[centre], transform.identity, rel_tol=_IDENTITY_RTOL, abs_tol=1e-12):
        found = (f"{grid[0]:g} first" if one_sided
                 else f"{grid[centre]:g} at the centre (position {centre} of {grid.size})")
        hint = (f"start the grid at {transform.identity:g}, e.g. [0, 1, 2, 3, 4, 5]" if one_sided
                else "make the grid symmetric about the identity, e.g. -15..15")
        raise InputError(f"{expected}; found {found}", field="params", hint=hint)
    grid[centre] = transform.identity
    _check_range(transform, grid)
    return grid


def identity_index(transform, n_params: int) -> int:
    """Position of the identity on a checked grid of ``n_params`` values of ``transform``:
    0 for a one-sided family (corruption severities), else the centre."""
    one_sided = getattr(transform_info(transform), "identity_at", "centre") == "start"
    return 0 if one_sided else n_params // 2


def _check_range(transform, grid: np.ndarray) -> None:
    """Refuse the first value outside the family's range, or not whole where it must be."""
    low, high = transform.minimum, getattr(transform, "maximum", math.inf)
    integer = getattr(transform, "integer", False)
    for value in grid:
        below = value < low or (value == low and not transform.minimum_inclusive)
        if integer and (below or value > high or value != round(value)):
            raise InputError(f"{transform.name} {transform.units} must be a whole number from "
                             f"{low:g} to {high:g}; found {value:g}", field="params")
        if below:
            relation = ">=" if transform.minimum_inclusive else ">"
            raise InputError(f"{transform.name} parameters must be {relation} {low:g}; found "
                             f"{value:g}", field="params")
        if value > high:
            raise InputError(f"{transform.name} parameters must be <= {high:g}; found "
                             f"{value:g}", field="params")


@contextlib.contextmanager
def import_path(folder):
    """``folder`` first on ``sys.path`` for the block (a spec's folder for ``module:``)."""
    if not folder:
        yield
        return
    folder = os.fspath(folder)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
