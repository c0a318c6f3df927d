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
           "check_grid", "import_path", "BLUR_KERNEL_SIZE", "INTERPOLATIONS",
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
)}
# the built-in families' interpolation choices (``[transforms.<name>] interpolation``) and
# why those without a derivative (``[probe] lie_derivative``) have none
INTERPOLATIONS = {"rotation": ("nearest", "bilinear"), "scaling": ("nearest", "bilinear"),
                  "translation": ("nearest", "bilinear")}
DERIVATIVE_MISSING = {"blur": "its derivative at sigma 0 is identically 0 (the gaussian "
                              "kernel's tails vanish faster than any power of sigma)"}


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

    The grid must be a 1-D sequence of an odd number of finite, strictly ascending values
    whose centre is the family's identity (within a relative 1e-9, then set to it exactly),
    all within the family's allowed range.
    """
    transform = transform_info(transform)
    expected = (f"expected an odd number of strictly ascending finite values with the identity "
                f"({transform.identity:g} {transform.units}) at the centre")
    try:
        grid = np.array(params, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{expected}; found {params!r}, which is not numeric",
                         field="params") from None
    if grid.ndim != 1:
        raise InputError(f"{expected}; found an array of shape {grid.shape}", field="params")
    if grid.size % 2 == 0:
        raise InputError(f"{expected}; found {grid.size} values (an even number)", field="params")
    if not np.all(np.isfinite(grid)):
        bad = grid[~np.isfinite(grid)]
        raise InputError(f"{expected}; found non-finite values {bad.tolist()}", field="params")
    steps = np.diff(grid)
    if np.any(steps <= 0):
        k = int(np.argmax(steps <= 0))
        raise InputError(
            f"{expected}; found {grid[k]:g} followed by {grid[k + 1]:g} at positions {k}, {k + 1}",
            field="params",
        )
    centre = grid.size // 2
    if not math.isclose(grid[centre], transform.identity, rel_tol=_IDENTITY_RTOL, abs_tol=1e-12):
        raise InputError(
            f"{expected}; found {grid[centre]:g} at the centre (position {centre} of {grid.size})",
            field="params", hint="make the grid symmetric about the identity, e.g. -15..15",
        )
    grid[centre] = transform.identity
    low = grid[0]
    if low < transform.minimum or (low == transform.minimum and not transform.minimum_inclusive):
        relation = ">=" if transform.minimum_inclusive else ">"
        raise InputError(
            f"{transform.name} parameters must be {relation} {transform.minimum:g}; found {low:g}",
            field="params",
        )
    return grid


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
