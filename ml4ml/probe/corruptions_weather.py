"""Weather corruptions of ``ml4ml.probe.corruptions``: snow, frost and fog.

Each family is ``f(images (B, C, H, W), params, draws) -> (P', B, C, H, W)`` (see
``corruptions_spatial``). Frost uses a procedurally generated frost texture
(``frost_texture``) in place of CIFAR-10-C's six photographs.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from ml4ml.probe.corruption_ops import Draws, clipped_zoom_matrix, grey, line_blur, line_kernel

__all__ = ["snow", "frost", "fog", "frost_texture", "plasma_fractal", "FROST_TILE",
           "FROST_TINT"]

# side of the frost texture tile at the 32-pixel scale, and its colour (R, G, B)
FROST_TILE = 128
FROST_TINT = (0.86, 0.93, 1.0)


def snow(images, params, draws):
    """CIFAR-10-C's snow: a gaussian field (``mean``, ``std``; stream 0) zoomed by ``zoom``
    (flake size), cut below ``threshold``, motion-blurred (``radius``, ``sigma``, angle
    uniform in (-135, -45) degrees, stream 1) and added with its 180-degree rotation to the
    image whitened by ``blend``: ``blend x + (1 - blend) max(x, 1.5 grey(x) + 0.5)``."""
    batch, channels, height, width = images.shape
    dtype, device = images.dtype, images.device
    normal = torch.special.ndtri(draws.uniform((height, width), 0)).to(dtype)  # (B, H, W)
    angles = draws.uniform((), 1).to(torch.float64) * 90.0 - 135.0
    layers = []
    for p in params:
        field = p["mean"] + p["std"] * normal
        rows = torch.as_tensor(clipped_zoom_matrix(height, p["zoom"]), dtype=dtype,
                               device=device)
        cols = torch.as_tensor(clipped_zoom_matrix(width, p["zoom"]), dtype=dtype,
                               device=device)
        field = rows @ field @ cols.T
        field = torch.where(field < p["threshold"], torch.zeros_like(field), field)
        layers.append(torch.floor(field.clamp(0.0, 1.0) * 255.0) / 255.0)
    kernels = [line_kernel(p["radius"], p["sigma"]) for p in params]
    weights = np.zeros((len(kernels), max(k.size for k in kernels)))
    for i, k in enumerate(kernels):
        weights[i, :k.size] = k
    flakes = line_blur(torch.stack(layers).unsqueeze(2), angles, weights)  # (P', B, 1, H, W)
    flakes = flakes + torch.flip(flakes, dims=(-2, -1))
    blend = torch.tensor([p["blend"] for p in params], dtype=dtype,
                         device=device).view(-1, 1, 1, 1, 1)
    whitened = torch.maximum(images, grey(images) * 1.5 + 0.5)
    out = blend * images + (1.0 - blend) * whitened + flakes
    return out.clamp_(0.0, 1.0)


def frost(images, params, draws):
    """``clip(image_weight x + frost_weight t)``, t a crop of ``frost_texture`` at a random
    offset per sample (stream 0), tinted ``FROST_TINT`` (grey images: its luma)."""
    batch, channels, height, width = images.shape
    dtype, device = images.dtype, images.device
    out = []
    for p in params:
        texture = frost_texture(draws.seed, p["texture_scale"], str(device), dtype)
        side = texture.shape[0]
        start = (draws.uniform((2,), 0).to(torch.float64) * side).floor().long()  # (B, 2)
        rows = (start[:, :1] + torch.arange(height, device=device)) % side
        cols = (start[:, 1:] + torch.arange(width, device=device)) % side
        patch = texture[rows[:, :, None], cols[:, None, :]].unsqueeze(1)  # (B, 1, H, W)
        tint = torch.tensor(FROST_TINT, dtype=dtype, device=device)
        if channels == 1:
            tint = grey(tint.view(1, 3, 1, 1)).view(1)
        out.append(p["image_weight"] * images + p["frost_weight"] * patch * tint.view(1, -1, 1, 1))
    return torch.stack(out).clamp_(0.0, 1.0)


@functools.lru_cache(maxsize=8)
def frost_texture(seed: int, scale: float, device: str = "cpu",
                  dtype=torch.float32) -> torch.Tensor:
    """A tileable (S, S) frost texture in [0, 1], S = round(FROST_TILE * scale).

    Built at the 32-pixel scale from ``seed`` alone (counter-based numbers, on the CPU in
    float64, so every device gets the same texture): a milky haze (white noise smoothed
    at 6 and 2 pixels) under ice crystals, 320 needles of 2 to 14 pixels at angles near
    the multiples of 60 degrees, each with two side branches at +-60 degrees, drawn
    anti-aliased and saturated; then enlarged by ``scale`` (bilinear, wrapping).
    """
    side = FROST_TILE
    draws = Draws([0], seed=seed, name="frost-texture", device="cpu")
    haze = 0.7 * _periodic_blur(draws.uniform((side, side), 0)[0].double() - 0.5, 6.0) \
        + 0.3 * _periodic_blur(draws.uniform((side, side), 1)[0].double() - 0.5, 2.0)
    haze = (haze - haze.min()) / (haze.max() - haze.min())
    n = 320
    u = draws.uniform((n, 6), 2)[0].double()
    centre = u[:, :2] * side
    angle = (torch.floor(u[:, 2] * 6) * 60.0 + (u[:, 3] - 0.5) * 20.0) * math.pi / 180.0
    length = 2.0 + 12.0 * u[:, 4] ** 2
    bright = 0.5 + 0.5 * u[:, 5]
    segments = [(centre, angle, length, bright)]
    for turn in (-1.0, 1.0):  # side branches from a point along the needle
        along = (0.25 * turn) * length
        start = centre + along[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
        branch = angle + turn * math.pi / 3
        half = 0.2 * length
        mid = start + half[:, None] * torch.stack([torch.cos(branch), torch.sin(branch)], 1)
        segments.append((mid, branch, 2 * half, 0.8 * bright))
    canvas = torch.zeros(side * side, dtype=torch.float64)
    for mid, ang, lng, val in segments:
        steps = torch.linspace(-0.5, 0.5, 64, dtype=torch.float64)
        pos = mid[:, None, :] + (steps[None, :, None] * lng[:, None, None]) * torch.stack(
            [torch.cos(ang), torch.sin(ang)], 1)[:, None, :]
        weight = (val * lng / 64.0)[:, None].expand(-1, 64).reshape(-1)
        pos = pos.reshape(-1, 2)
        low = torch.floor(pos)
        frac = pos - low
        for dx in (0, 1):
            for dy in (0, 1):
                w = (frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
                x = (low[:, 0].long() + dx) % side
                y = (low[:, 1].long() + dy) % side
                canvas.index_add_(0, y * side + x, weight * w)
    crystals = 1.0 - torch.exp(-1.6 * _periodic_blur(canvas.view(side, side), 0.5))
    texture = (0.45 * haze + 0.8 * crystals).clamp(0.0, 1.0)
    size = int(round(side * scale))
    if size != side:
        wrapped = torch.cat([texture, texture[:1]], 0)
        wrapped = torch.cat([wrapped, wrapped[:, :1]], 1)[None, None]
        texture = F.interpolate(wrapped, size=(size + 1, size + 1), mode="bilinear",
                                align_corners=True)[0, 0, :size, :size]
    return texture.to(device=device, dtype=dtype)


def _periodic_blur(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of a square field with wrap-around (multiplication in Fourier space)."""
    side = field.shape[-1]
    freq = torch.fft.fftfreq(side, dtype=torch.float64)
    gain = torch.exp(-2.0 * (math.pi * sigma) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    return torch.fft.ifft2(torch.fft.fft2(field) * gain).real


def fog(images, params, draws):
    """``clip((x + amount f) max(x) / (max(x) + amount))``, f CIFAR-10-C's diamond-square
    plasma fractal (``plasma_fractal``, roughness ``decay``) over the image's power-of-two
    cover, cropped; the same uniforms (streams per level) for every decay."""
    batch, channels, height, width = images.shape
    mapsize = max(2, 1 << (max(height, width) - 1).bit_length())
    decays = sorted({p["decay"] for p in params})
    fractals = plasma_fractal(draws, mapsize, decays)[:, :, :height, :width]
    peak = images.amax(dim=(1, 2, 3), keepdim=True)
    out = []
    for p in params:
        layer = fractals[decays.index(p["decay"])].unsqueeze(1)
        amount = p["amount"]
        out.append((images + amount * layer) * peak / (peak + amount))
    return torch.stack(out).clamp_(0.0, 1.0)


def plasma_fractal(draws: Draws, mapsize: int, decays) -> torch.Tensor:
    """(D, B, mapsize, mapsize) float32 heightmaps in [0, 1] by the diamond-square algorithm
    of CIFAR-10-C's ``plasma_fractal`` (including its ``wibble * uniform(-wibble, wibble)``
    perturbation), one per decay and sample; level ``i`` draws streams ``3i``, ``3i + 1``
    and ``3i + 2``, the same for every decay."""
    decays = torch.tensor(list(decays), dtype=torch.float32, device=draws.device)
    grid = torch.zeros((len(decays), draws.n, mapsize, mapsize), dtype=torch.float32,
                       device=draws.device)
    wibble = torch.full((len(decays), 1, 1, 1), 100.0, dtype=torch.float32,
                        device=draws.device)
    step, level = mapsize, 0

    def perturbed(total: torch.Tensor, stream: int) -> torch.Tensor:
        u = draws.uniform(total.shape[2:], stream)
        return total / 4 + (wibble * wibble) * (2.0 * u - 1.0)

    while step >= 2:
        half = step // 2
        corners = grid[:, :, 0::step, 0::step]
        squares = corners + torch.roll(corners, -1, dims=2)
        squares = squares + torch.roll(squares, -1, dims=3)
        grid[:, :, half::step, half::step] = perturbed(squares, 3 * level)
        centres = grid[:, :, half::step, half::step]
        across = centres + torch.roll(centres, 1, dims=2) + corners + torch.roll(corners, -1,
                                                                                  dims=3)
        grid[:, :, 0::step, half::step] = perturbed(across, 3 * level + 1)
        down = centres + torch.roll(centres, 1, dims=3) + corners + torch.roll(corners, -1,
                                                                                dims=2)
        grid[:, :, half::step, 0::step] = perturbed(down, 3 * level + 2)
        step, level = half, level + 1
        wibble = wibble / decays.view(-1, 1, 1, 1)
    grid -= grid.amin(dim=(2, 3), keepdim=True)
    return grid / grid.amax(dim=(2, 3), keepdim=True)
