"""Transformation families applied on the device to a batch of images for a whole grid at once.

A family is a :class:`Transform`: a name, the units of its parameter, the identity value and
a batched function ``apply(images, params) -> transformed`` with

    images      (batch, channel, height, width)         float in [0, 1], on the device
    params      (aug_param,)                            float64 tensor (any device)
    transformed (aug_param, batch, channel, height, width)

Built-in families match torchvision's ``transforms.v2.functional`` on float tensors:

=============  =======  ========  ============================================================
name           units    identity  torchvision equivalent (per image, per parameter ``p``)
=============  =======  ========  ============================================================
rotation       degrees  0         ``rotate(x, p, NEAREST, expand=False, fill=0)``
scaling        factor   1         ``affine(x, angle=0, translate=[0, 0], scale=p, shear=[0, 0],
                                  interpolation=NEAREST, fill=0)``
translation    pixels   0         ``affine(x, angle=0, translate=[p, 0], scale=1, ...)``
brightness     factor   1         ``adjust_brightness(x, p)``
contrast       factor   1         ``adjust_contrast(x, p)``
blur           sigma    0         ``gaussian_blur(x, [7, 7], [|p|, |p|])``; ``p == 0``: unchanged
=============  =======  ========  ============================================================

The geometric families (rotation, scaling, translation) build the P inverse affine matrices
and sampling grids exactly as torchvision does and sample all P x batch images with one
``grid_sample(mode="nearest")``, so the result is bit for bit torchvision's. Brightness is
bit for bit too; contrast and blur agree to float rounding (~1e-7).

The 15 common corruptions of ImageNet-C (``gaussian_noise`` ... ``jpeg_compression``, see
``ml4ml.probe.corruptions`` and docs/transforms.md; brightness and contrast as
``brightness_corruption`` and ``contrast_corruption``) are families too: units ``severity``,
integer parameters 0..5, identity 0 at the *start* of a one-sided grid (``identity_at =
"start"``), and they need the samples' ids to seed their random numbers
(``needs_sample_ids``): call a family as ``transform(images, params, sample_ids=ids)``,
which passes the ids to the families that take them.

``register_transform`` adds a family, ``get_transform`` looks one up, ``validate_grid`` checks
a parameter grid (strictly ascending, finite, within the family's range; the identity at the
centre of an odd grid, or first for a one-sided family).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ml4ml.errors import InputError
from ml4ml.probe.corruptions import CORRUPTIONS, corrupt
from ml4ml.probe.generators import DERIVATIVES
from ml4ml.spec.registry import (BLUR_KERNEL_SIZE, BUILTIN_TRANSFORMS, CORRUPTION_FAMILIES,
                                 DERIVATIVE_MISSING,
                                 TRANSFORMS, check_grid, transform_names)

__all__ = [
    "Transform",
    "register_transform",
    "get_transform",
    "transform_names",
    "validate_grid",
    "grid_attrs",
    "with_interpolation",
    "lie_derivative_refusal",
    "INTERPOLATIONS",
    "BLUR_KERNEL_SIZE",
]

@dataclass(frozen=True)
class Transform:
    """A transformation family.

    name : registry key, e.g. ``"rotation"``.
    units : units of the parameter, e.g. ``"degrees"``, ``"factor"``.
    identity : the parameter value that leaves images unchanged (the grid's centre).
    apply : ``apply(images (B, C, H, W), params (P,)) -> (P, B, C, H, W)``, run on the
        images' device; ``params`` is a float64 tensor (on the CPU or the images' device).
    minimum : smallest allowed parameter value (``-inf``: none).
    minimum_inclusive : whether ``minimum`` itself is allowed.
    description : one line for help texts.
    maximum : largest allowed parameter value (inclusive; ``inf``: none).
    integer : whether parameters must be whole numbers (corruption severities).
    identity_at : ``"centre"`` (a grid is odd with the identity in the middle) or
        ``"start"`` (one-sided: the identity is the grid's first value, e.g. severities 0..5).
    needs_sample_ids : whether ``apply`` takes ``sample_ids=`` ((B,) int64, the images'
        positions in their suite), which seed its random numbers.
    derivative : ``derivative(images (B, C, H, W)) -> (B, C, H, W)``: d apply / d param at
        the identity (the generator's tangent, per parameter unit; ``probe.generators``);
        None: the family has none, and ``probe_model(..., lie_derivative=True)`` refuses it.
    interpolation : how a geometric family samples (``"nearest"`` or ``"bilinear"``, see
        ``with_interpolation``); ``"nearest"`` for the others.
    """

    name: str
    units: str
    identity: float
    apply: Callable[..., torch.Tensor]
    minimum: float = -math.inf
    minimum_inclusive: bool = True
    description: str = ""
    maximum: float = math.inf
    integer: bool = False
    identity_at: str = "centre"
    needs_sample_ids: bool = False
    derivative: Callable[[torch.Tensor], torch.Tensor] | None = None
    interpolation: str = "nearest"

    def __call__(self, images: torch.Tensor, params: torch.Tensor, *,
                 sample_ids=None) -> torch.Tensor:
        """``apply(images, params)``, with ``sample_ids=`` for the families that need them."""
        if self.needs_sample_ids:
            return self.apply(images, params, sample_ids=sample_ids)
        return self.apply(images, params)

    def with_interpolation(self, interpolation: str) -> "Transform":
        """This family sampling with ``interpolation`` (``"nearest"``, ``"bilinear"``);
        only the built-in geometric families (rotation, scaling, translation) have a
        choice: InputError for any other than ``"nearest"`` elsewhere."""
        return with_interpolation(self, interpolation)


# the registry lives below the stages (``spec.registry``, which lists the built-in names so
# that a spec validates without torch); this module fills it with the families themselves
_REGISTRY: dict[str, Transform] = TRANSFORMS


def register_transform(transform: Transform, *, overwrite: bool = False) -> Transform:
    """Add ``transform`` to the registry under ``transform.name`` and return it.

    A name already registered is refused unless ``overwrite=True``.
    """
    if not isinstance(transform, Transform):
        raise InputError(
            f"expected an ml4ml.probe.Transform, found {type(transform).__name__}",
            field="transform",
        )
    if not transform.name or not isinstance(transform.name, str):
        raise InputError(f"transform name must be a non-empty string, found {transform.name!r}",
                         field="transform")
    if transform.name in _REGISTRY and not overwrite:
        raise InputError(
            f"a transform named {transform.name!r} is already registered",
            field="transform", hint="pass overwrite=True to replace it, or choose another name",
        )
    _REGISTRY[transform.name] = transform
    return transform


def get_transform(name: str | Transform) -> Transform:
    """The registered family called ``name`` (a :class:`Transform` is returned as is)."""
    if isinstance(name, Transform):
        return name
    try:
        found = _REGISTRY[name]
        if isinstance(found, Transform):
            return found
        raise KeyError(name)
    except (KeyError, TypeError):
        raise InputError(
            f"unknown transform {name!r}; expected one of {transform_names()}",
            field="transform", hint="register your own with ml4ml.probe.register_transform",
        ) from None


def grid_attrs(transform: str | Transform) -> dict:
    """Attrs of the ``aug_param`` coordinate of a probe of ``transform``: its units and name,
    and for a one-sided family ``identity_at = "start"`` and a description saying so."""
    transform = get_transform(transform)
    attrs = {"units": transform.units, "transform": transform.name}
    if transform.identity_at == "start":
        attrs |= {"identity_at": "start",
                  "description": f"{transform.units} of the family (a one-sided grid): the "
                                 f"first value ({transform.identity:g}) is the identity"}
    return attrs


def with_interpolation(transform: str | Transform, interpolation: str) -> Transform:
    """The family ``transform`` sampling with ``interpolation`` (see ``Transform``)."""
    transform = get_transform(transform)
    if interpolation == transform.interpolation:
        return transform
    choices = INTERPOLATIONS.get(transform.name, {})
    builtin = transform.apply in {f for c in INTERPOLATIONS.values() for f in c.values()}
    if interpolation not in choices or not builtin:
        known = sorted(choices) if builtin else ["nearest"]
        raise InputError(f"transform {transform.name!r} cannot interpolate "
                         f"{interpolation!r}; it can: {', '.join(known)}",
                         field="interpolation")
    return replace(transform, apply=choices[interpolation], interpolation=interpolation,
                   description=transform.description.replace(
                       _SAMPLING[transform.interpolation], _SAMPLING[interpolation]))


_SAMPLING = {"nearest": "nearest neighbour", "bilinear": "bilinear"}


def lie_derivative_refusal(transform: str | Transform) -> str | None:
    """Why ``transform`` has no Lie derivative (one line naming it), or None."""
    transform = get_transform(transform)
    if transform.derivative is not None:
        return None
    builtin = transform.apply is getattr(BUILTIN_TRANSFORMS.get(transform.name), "apply", 0) \
        or transform.name in DERIVATIVE_MISSING
    why = (DERIVATIVE_MISSING.get(transform.name) if builtin else None) or \
        "it was registered without derivative= (ml4ml.probe.Transform)"
    return f"transform {transform.name!r} has no derivative for the Lie derivative: {why}"


def validate_grid(transform: str | Transform, params) -> np.ndarray:
    """Check a parameter grid for ``transform`` and return it as float64 (aug_param,).

    The grid must be a 1-D sequence of finite, strictly ascending values within the family's
    allowed range (whole numbers for an ``integer`` family); a centred family's has an odd
    number of values with the identity at the centre (within a relative 1e-9, then set to it
    exactly), a one-sided family's (``identity_at="start"``) starts at the identity.
    """
    return check_grid(get_transform(transform), params)


# ---------------------------------------------------------------------------------------
# geometric families: one affine sampling grid per parameter, one grid_sample for all


def _inverse_affine_matrix(angle: float, translate: tuple[float, float], scale: float,
                           shear: tuple[float, float]) -> list[float]:
    """torchvision v2's ``_get_inverse_affine_matrix`` about the image centre (same float ops)."""
    cx, cy = 0.0, 0.0
    rot = math.radians(angle)
    sx = math.radians(shear[0])
    sy = math.radians(shear[1])
    tx, ty = translate
    cos_sy = math.cos(sy)
    tan_sx = math.tan(sx)
    rot_minus_sy = rot - sy
    cx_plus_tx = cx + tx
    cy_plus_ty = cy + ty
    a = math.cos(rot_minus_sy) / cos_sy
    b = -(a * tan_sx + math.sin(rot))
    c = math.sin(rot_minus_sy) / cos_sy
    d = math.cos(rot) - c * tan_sx
    matrix = [d / scale, -b / scale, 0.0, -c / scale, a / scale, 0.0]
    matrix[2] += cx - matrix[0] * cx_plus_tx - matrix[1] * cy_plus_ty
    matrix[5] += cy - matrix[3] * cx_plus_tx - matrix[4] * cy_plus_ty
    return matrix


def _affine_grid(matrix: list[float], height: int, width: int, dtype, device) -> torch.Tensor:
    """torchvision v2's ``_affine_grid`` (output size = input size): (1, height, width, 2)."""
    theta = torch.tensor(matrix, dtype=dtype, device=device).reshape(1, 2, 3)
    base_grid = torch.empty(1, height, width, 3, dtype=dtype, device=device)
    x_grid = torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, steps=width, device=device)
    base_grid[..., 0].copy_(x_grid)
    y_grid = torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, steps=height,
                            device=device).unsqueeze_(-1)
    base_grid[..., 1].copy_(y_grid)
    base_grid[..., 2].fill_(1)
    rescaled_theta = theta.transpose(1, 2).div_(
        torch.tensor([0.5 * width, 0.5 * height], dtype=dtype, device=device))
    return base_grid.view(1, height * width, 3).bmm(rescaled_theta).view(1, height, width, 2)


_PLAN_CACHE: dict = {}
_PLAN_CACHE_SIZE = 32


def _geometric_plan(family: str, params: torch.Tensor, height: int, width: int, dtype, device):
    """(sampling grids (P, H, W, 2), {param index: rot90 turns}) for a geometric family.

    Cached per family, parameter values, image size, dtype and device, so probing many
    batches of one grid builds the grids once.
    """
    values = tuple(params.detach().cpu().tolist())
    key = (family, values, height, width, dtype, str(device))
    plan = _PLAN_CACHE.get(key)
    if plan is not None:
        return plan
    turns = {}
    if family == "rotation":
        angles = [a % 360 for a in values]
        matrices = [_inverse_affine_matrix(-a, (0.0, 0.0), 1.0, (0.0, 0.0)) for a in angles]
        # torchvision's exact fast paths (no resampling): 0 and 180 always, 90/270 if square
        for k, angle in enumerate(angles):
            if angle in (0, 180) or (height == width and angle in (90, 270)):
                turns[k] = int(angle // 90)
    elif family == "scaling":
        matrices = [_inverse_affine_matrix(0.0, (0.0, 0.0), s, (0.0, 0.0)) for s in values]
    else:  # translation
        matrices = [_inverse_affine_matrix(0.0, (t, 0.0), 1.0, (0.0, 0.0)) for t in values]
    grids = torch.cat([_affine_grid(m, height, width, dtype, device) for m in matrices])
    if len(_PLAN_CACHE) >= _PLAN_CACHE_SIZE:
        _PLAN_CACHE.pop(next(iter(_PLAN_CACHE)))
    _PLAN_CACHE[key] = plan = (grids, turns)
    return plan


def _apply_geometric(family: str, images: torch.Tensor, params: torch.Tensor,
                     mode: str = "nearest") -> torch.Tensor:
    """Sample every image at every parameter's grid: (P, B, C, H, W).

    The batch is folded into channels so one grid per parameter serves the whole batch;
    out-of-image samples are 0 (torchvision's fill=0: nearest pads with zeros, bilinear
    blends through a sampled mask of ones, as torchvision's ``_apply_grid_transform``).
    """
    batch, channels, height, width = images.shape
    grids, turns = _geometric_plan(family, params, height, width, images.dtype, images.device)
    n_params = grids.shape[0]
    stacked = images.reshape(1, batch * channels, height, width).expand(n_params, -1, -1, -1)
    if mode == "bilinear":
        ones = torch.ones((n_params, 1, height, width), dtype=images.dtype, device=images.device)
        sampled = F.grid_sample(torch.cat([stacked, ones], dim=1), grids, mode="bilinear",
                                padding_mode="zeros", align_corners=False)
        out = sampled[:, :-1].mul(sampled[:, -1:])
    else:
        out = F.grid_sample(stacked, grids, mode="nearest", padding_mode="zeros",
                            align_corners=False)
    out = out.view(n_params, batch, channels, height, width)
    for k, quarter_turns in turns.items():
        out[k] = torch.rot90(images, k=quarter_turns, dims=(-2, -1)) if quarter_turns else images
    return out


def _apply_rotation(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Rotate counter-clockwise by ``params`` degrees about the centre: (P, B, C, H, W)."""
    return _apply_geometric("rotation", images, params)


def _apply_scaling(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Zoom by factor ``params`` about the centre (> 1 enlarges): (P, B, C, H, W)."""
    return _apply_geometric("scaling", images, params)


def _apply_translation(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Shift right by ``params`` pixels (negative: left): (P, B, C, H, W)."""
    return _apply_geometric("translation", images, params)


def _bilinear(family: str):
    """The bilinear variant of a geometric family's ``apply``."""
    def apply(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return _apply_geometric(family, images, params, mode="bilinear")

    apply.__name__ = apply.__qualname__ = f"_apply_{family}_bilinear"
    return apply


# family -> {interpolation: apply}: the geometric families' choice of interpolation
INTERPOLATIONS = {family: {"nearest": nearest, "bilinear": _bilinear(family)}
                  for family, nearest in (("rotation", _apply_rotation),
                                          ("scaling", _apply_scaling),
                                          ("translation", _apply_translation))}


def _params_list(params: torch.Tensor) -> list[float]:
    return [float(p) for p in params.detach().cpu().tolist()]


# ---------------------------------------------------------------------------------------
# photometric families


def _apply_brightness(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """``clamp(images * factor, 0, 1)`` for every factor: (P, B, C, H, W)."""
    factors = params.to(dtype=images.dtype, device=images.device).view(-1, 1, 1, 1, 1)
    return (images.unsqueeze(0) * factors).clamp_(0.0, 1.0)


def _apply_contrast(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean grey level by ``factor``: (P, B, C, H, W)."""
    channels = images.shape[1]
    if channels == 3:
        r, g, b = images.unbind(dim=1)
        grey = r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)
    elif channels == 1:
        grey = images
    else:
        raise InputError(f"contrast needs 1 or 3 channels, found {channels}", field="images")
    mean = torch.mean(grey, dim=(-3, -2, -1), keepdim=True)
    factors = _params_list(params)
    out = torch.empty((len(factors),) + tuple(images.shape), dtype=images.dtype,
                      device=images.device)
    # the same ops as torchvision's _blend, one factor at a time (cheap elementwise work)
    for k, factor in enumerate(factors):
        torch.mul(images, factor, out=out[k])
        out[k].add_(mean, alpha=1.0 - factor).clamp_(0.0, 1.0)
    return out


def _gaussian_kernels(sigmas: list[float], kernel_size: int, dtype, device) -> torch.Tensor:
    """2-D gaussian kernels (P, 1, K, K) as torchvision builds them (sigma > 0)."""
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=kernel_size, dtype=dtype, device=device)
    sig = torch.tensor(sigmas, dtype=dtype, device=device).view(-1, 1)
    kernel1d = torch.softmax(x.view(1, -1).div(sig).pow(2).neg(), dim=1)
    return (kernel1d.unsqueeze(-1) * kernel1d.unsqueeze(-2)).unsqueeze(1)


def _apply_blur(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Gaussian blur, kernel ``BLUR_KERNEL_SIZE``, sigma ``|param|``; 0: unchanged."""
    batch, channels, height, width = images.shape
    sigmas = [abs(s) for s in _params_list(params)]
    out = images.unsqueeze(0).repeat(len(sigmas), 1, 1, 1, 1)
    blurred = [k for k, s in enumerate(sigmas) if s > 0]
    if not blurred:
        return out
    pad = BLUR_KERNEL_SIZE // 2
    if min(height, width) <= pad:
        raise InputError(f"blur needs images larger than {pad} pixels, found {height}x{width}",
                         field="images")
    kernels = _gaussian_kernels([sigmas[k] for k in blurred], BLUR_KERNEL_SIZE, images.dtype,
                                images.device)
    padded = F.pad(images.reshape(batch * channels, 1, height, width), [pad] * 4, mode="reflect")
    result = F.conv2d(padded, kernels)  # (B*C, P', H, W)
    result = result.view(batch, channels, len(blurred), height, width).permute(2, 0, 1, 3, 4)
    out[blurred] = result
    return out


def _apply_corruption(name: str, images: torch.Tensor, params: torch.Tensor, *,
                      sample_ids=None) -> torch.Tensor:
    """``corruptions.corrupt`` at the grid's severities (seed 0): (P, B, C, H, W)."""
    return corrupt(name, images, params, sample_ids=sample_ids)


_APPLY = {"rotation": _apply_rotation, "scaling": _apply_scaling,
          "translation": _apply_translation, "brightness": _apply_brightness,
          "contrast": _apply_contrast, "blur": _apply_blur}
_APPLY |= {CORRUPTION_FAMILIES[name][0]: functools.partial(_apply_corruption, name)
           for name in CORRUPTIONS}
for _info in BUILTIN_TRANSFORMS.values():  # the names, units and ranges: spec.registry
    if not isinstance(_REGISTRY.get(_info.name), Transform):
        register_transform(Transform(
            _info.name, _info.units, _info.identity, _APPLY[_info.name],
            minimum=_info.minimum, minimum_inclusive=_info.minimum_inclusive,
            description=_info.description, maximum=_info.maximum, integer=_info.integer,
            identity_at=_info.identity_at, needs_sample_ids=_info.identity_at == "start",
            derivative=DERIVATIVES.get(_info.name)),
            overwrite=True)
del _info


def torchvision_equivalent(family: str, interpolation: str = "nearest"):
    """``f(image (C, H, W), p) -> image``: torchvision v2's transform of one image by one
    parameter ``p`` that the built-in ``family`` matches (the reference the tests compare
    against); ``interpolation`` "bilinear" for the geometric families' bilinear variant."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    mode = InterpolationMode(interpolation)
    equivalents = {
        "rotation": lambda x, p: TF.rotate(x, p, interpolation=mode, fill=0),
        "scaling": lambda x, p: TF.affine(x, angle=0.0, translate=[0, 0], scale=p,
                                          shear=[0, 0], interpolation=mode, fill=0),
        "translation": lambda x, p: TF.affine(x, angle=0.0, translate=[p, 0], scale=1.0,
                                              shear=[0, 0], interpolation=mode, fill=0),
        "brightness": lambda x, p: TF.adjust_brightness(x, p),
        "contrast": lambda x, p: TF.adjust_contrast(x, p),
        "blur": lambda x, p: x.clone() if p == 0 else TF.gaussian_blur(x, [7, 7], [abs(p)] * 2),
    }
    return equivalents[family]
