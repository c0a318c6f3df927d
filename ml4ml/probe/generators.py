"""The derivative of each built-in transformation family at its identity: the image
tangent along the family's generator, for the Lie derivative (``probe.lie``).

A family's ``derivative(images) -> tangent`` takes (batch, channel, height, width) images
and returns d T_p(images) / dp at the identity, same shape, in image units per parameter
unit (per degree, per pixel, per unit of factor):

=============  ==================================================================
rotation       forward-mode autodiff (``torch.func.jvp``) of a differentiable bilinear
scaling        warp (``F.affine_grid`` + ``grid_sample_bilinear``, which is
translation    ``F.grid_sample(mode="bilinear")`` in ops forward-mode autodiff runs
               through; fill 0 blended through a sampled mask as torchvision does), float64
brightness     closed form: ``x`` (``d clamp(f x, 0, 1) / df`` at ``f = 1``)
contrast       closed form: ``x - mean grey``
=============  ==================================================================

Every derivative is the *symmetric* one, the mean of the derivatives just above and just
below the identity: a central difference ``(T_h x - T_-h x) / 2h`` converges to it. At
the identity the bilinear warp samples exactly the pixel centres, where bilinear
interpolation has a kink (its one-sided derivatives are forward and backward pixel
differences), so the warp is differentiated at ``+DELTA`` and ``-DELTA`` parameter units
and the two averaged (``DELTA`` far below a pixel's displacement, so the result is the
central pixel difference along the generator's flow to ~1e-6). A photometric pixel at
0 or 1 that the clamp stops on one side counts half, likewise.

``blur`` has none (its derivative at sigma 0 vanishes identically: a Lie derivative of 0
says nothing), nor has a user family registered without ``derivative=``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = ["DELTA", "grid_sample_bilinear", "warp_bilinear", "geometric_derivative",
           "derivative_by_jvp", "rotation_derivative",
           "scaling_derivative", "translation_derivative", "brightness_derivative",
           "contrast_derivative", "DERIVATIVES"]

# parameter units either side of the identity at which the bilinear warp is differentiated
DELTA = 1e-6


def _inverse_theta(family: str, t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid``'s theta (1, 2, 3), differentiable in the parameter ``t`` (0-d):
    torchvision's inverse affine matrix in centred pixel units, rescaled to the
    normalised coordinates of ``align_corners=False``."""
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    if family == "rotation":  # counter-clockwise by t degrees
        rad = t * (math.pi / 180.0)
        cos, sin = torch.cos(rad), torch.sin(rad)
        rows = [[cos, -sin, zero], [sin, cos, zero]]
    elif family == "scaling":  # zoom by the factor t about the centre
        rows = [[1.0 / t, zero, zero], [zero, 1.0 / t, zero]]
    elif family == "translation":  # shift right by t pixels
        rows = [[one, zero, -t], [zero, one, zero]]
    else:
        raise ValueError(f"no geometric family {family!r}")
    # pixel (u, v) about the centre = normalised (x W/2, y H/2)
    scale_x, scale_y = width / 2.0, height / 2.0
    theta = torch.stack([
        torch.stack([rows[0][0], rows[0][1] * (scale_y / scale_x), rows[0][2] / scale_x]),
        torch.stack([rows[1][0] * (scale_x / scale_y), rows[1][1], rows[1][2] / scale_y]),
    ])
    return theta.unsqueeze(0)


def grid_sample_bilinear(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
    align_corners=False)`` for one grid (1, H', W', 2) shared by all of images (N, C, H, W),
    written with gathers and products so that forward-mode autodiff runs through it
    (torch's grid sampler has no forward derivative). (N, C, H', W')."""
    n, channels, height, width = images.shape
    out_h, out_w = grid.shape[1:3]
    ix = ((grid[0, ..., 0] + 1) * width - 1) / 2  # (H', W') pixel coordinates
    iy = ((grid[0, ..., 1] + 1) * height - 1) / 2
    x0, y0 = torch.floor(ix).detach(), torch.floor(iy).detach()
    flat = images.reshape(n, channels, height * width)
    out = 0
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        xs, ys = x0 + dx, y0 + dy
        weight = (1 - (ix - xs).abs()) * (1 - (iy - ys).abs())  # bilinear, >= 0 in the cell
        inside = (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
        index = (ys.clamp(0, height - 1) * width + xs.clamp(0, width - 1)).long()
        values = flat[:, :, index.reshape(-1)].reshape(n, channels, out_h, out_w)
        out = out + values * (weight * inside)
    return out


def warp_bilinear(family: str, images: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The geometric ``family`` at parameter ``t`` (0-d tensor, differentiable) applied to
    images (B, C, H, W): ``F.affine_grid`` and bilinear sampling (``grid_sample_bilinear``),
    out-of-image samples 0, blended through the sampled mask of ones as torchvision's
    ``fill=0`` does. (B, C, H, W)."""
    batch, channels, height, width = images.shape
    theta = _inverse_theta(family, t.to(images.dtype), height, width)
    grid = F.affine_grid(theta, [1, 1, height, width], align_corners=False)
    stacked = images.reshape(1, batch * channels, height, width)
    stacked = torch.cat([stacked, torch.ones_like(stacked[:, :1])], dim=1)
    out = grid_sample_bilinear(stacked, grid)
    sampled, mask = out[:, :-1], out[:, -1:]
    return (sampled * mask).view(batch, channels, height, width)


def geometric_derivative(family: str, identity: float, images: torch.Tensor) -> torch.Tensor:
    """Symmetric derivative of ``warp_bilinear`` at ``identity`` (B, C, H, W), in float64,
    returned in the images' dtype.

    The warp is linear in the image: at ``identity +- DELTA`` each output pixel is
    ``sampled * mask`` with ``sampled = sum_c w_c x[i_c]`` and ``mask = sum_c w_c`` over
    its four neighbours ``i_c``; their weights ``w_c`` and derivatives ``dw_c / dp``
    (forward-mode autodiff of ``F.affine_grid``'s sampling positions, ``_tangent_plan``)
    depend on the family and image size only and are built once; every batch then
    takes eight gathers. ``derivative_by_jvp`` is the same through the whole warp.
    """
    batch, channels, height, width = images.shape
    flat = images.detach().to(torch.float64).reshape(batch * channels, height * width)
    tangent = 0
    for index, weight, slope in _tangent_plan(family, float(identity), height, width,
                                              str(images.device)):
        values = flat[:, index]  # (N, 4, H W)
        sampled, d_sampled = (values * weight).sum(1), (values * slope).sum(1)
        mask, d_mask = weight.sum(0), slope.sum(0)
        tangent = tangent + d_sampled * mask + sampled * d_mask
    return (tangent * 0.5).reshape(images.shape).to(images.dtype)


def derivative_by_jvp(family: str, identity: float, images: torch.Tensor) -> torch.Tensor:
    """``geometric_derivative`` by ``torch.func.jvp`` through the whole ``warp_bilinear``
    (slower: the reference the plan is tested against)."""
    x = images.detach().to(torch.float64)
    tangents = []
    for side in (DELTA, -DELTA):
        t = torch.tensor(identity + side, dtype=torch.float64, device=x.device)
        _, tangent = torch.func.jvp(lambda p: warp_bilinear(family, x, p), (t,),
                                    (torch.ones_like(t),))
        tangents.append(tangent)
    return ((tangents[0] + tangents[1]) * 0.5).to(images.dtype)


@functools.lru_cache(maxsize=32)
def _tangent_plan(family: str, identity: float, height: int, width: int, device: str):
    """For each side ``identity +- DELTA``: (index (4, H W) of the four neighbours each
    output pixel samples, their bilinear weights (4, H W) with 0 outside the image, and
    the weights' derivatives in the parameter (4, H W)), float64 on ``device``."""
    plan = []
    for side in (DELTA, -DELTA):
        t = torch.tensor(identity + side, dtype=torch.float64, device=device)

        def positions(p):
            theta = _inverse_theta(family, p, height, width)
            grid = F.affine_grid(theta, [1, 1, height, width], align_corners=False)
            return (((grid[0, ..., 0] + 1) * width - 1) / 2,
                    ((grid[0, ..., 1] + 1) * height - 1) / 2)

        ix, iy = positions(t)
        x0, y0 = torch.floor(ix), torch.floor(iy)
        corners = [(x0 + dx, y0 + dy) for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1))]

        def weights(p):
            jx, jy = positions(p)
            return torch.stack([(1 - (jx - xs).abs()) * (1 - (jy - ys).abs())
                                for xs, ys in corners]).reshape(4, -1)

        weight, slope = torch.func.jvp(weights, (t,), (torch.ones_like(t),))
        inside = torch.stack([(xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
                              for xs, ys in corners]).reshape(4, -1)
        index = torch.stack([ys.clamp(0, height - 1) * width + xs.clamp(0, width - 1)
                             for xs, ys in corners]).reshape(4, -1).long()
        plan.append((index, weight * inside, slope * inside))
    return tuple(plan)


def rotation_derivative(images: torch.Tensor) -> torch.Tensor:
    """d rotate(images, p) / dp at p = 0, per degree."""
    return geometric_derivative("rotation", 0.0, images)


def scaling_derivative(images: torch.Tensor) -> torch.Tensor:
    """d zoom(images, s) / ds at s = 1, per unit of factor."""
    return geometric_derivative("scaling", 1.0, images)


def translation_derivative(images: torch.Tensor) -> torch.Tensor:
    """d shift(images, t) / dt at t = 0, per pixel."""
    return geometric_derivative("translation", 0.0, images)


def _clamped_half(direction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``direction`` halved where the clamp to [0, 1] stops the pixel on one side."""
    at_edge = (images <= 0) | (images >= 1)
    return torch.where(at_edge, direction * 0.5, direction)


def brightness_derivative(images: torch.Tensor) -> torch.Tensor:
    """d clamp(f images, 0, 1) / df at f = 1 (symmetric): the image itself."""
    return _clamped_half(images.detach().clone(), images)


def contrast_derivative(images: torch.Tensor) -> torch.Tensor:
    """d clamp(f x + (1 - f) mean, 0, 1) / df at f = 1 (symmetric): ``x - mean`` with
    ``mean`` the image's mean grey level (torchvision's weights for 3 channels)."""
    x = images.detach()
    if x.shape[1] == 3:
        r, g, b = x.unbind(dim=1)
        grey = (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)
    else:
        grey = x
    mean = grey.mean(dim=(-3, -2, -1), keepdim=True)
    return _clamped_half(x - mean, x)


DERIVATIVES = {"rotation": rotation_derivative, "scaling": scaling_derivative,
               "translation": translation_derivative, "brightness": brightness_derivative,
               "contrast": contrast_derivative}
