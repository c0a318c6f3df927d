"""The 15 common corruptions of ImageNet-C / CIFAR-10-C at severities 0..5, batched in torch.

``corrupt(name, images, severities, *, sample_ids, seed=0)`` corrupts a whole batch for a
whole grid of severities at once, on the images' device:

    images      (batch, channel, height, width)          float in [0, 1], C = 1 or 3
    severities  (severity,)                              integers 0..5 (0 = unchanged)
    sample_ids  (batch,)                                 int64: the samples' suite positions
    returns     (severity, batch, channel, height, width)

Severity 0 is the exact identity. The parameters of each severity are CIFAR-10-C's
(Hendrycks & Dietterich 2019, ``make_cifar_c.py``), listed in ``SEVERITY_PARAMETERS`` and in
docs/transforms.md with the rule that adapts them to other image sizes
(``severity_parameters``). Random corruptions draw counter-based random numbers
(``corruption_ops.Draws``) keyed by ``(seed, corruption, sample id)``: a rerun is bitwise
the same, every model sees the same corrupted images, and which other samples share the
batch, or their order, changes nothing. The severities of one sample share their random
numbers (common random numbers: severity k + 1 is severity k made stronger, not a fresh draw).

This module holds the table, the pixel-level families (noise, brightness, contrast,
pixelate, JPEG) and the dispatcher; the blurs and the elastic transform are in
``corruptions_spatial``, snow, frost and fog in ``corruptions_weather``.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
import torch

from ml4ml.errors import InputError
from ml4ml.probe import corruptions_spatial as spatial
from ml4ml.probe import corruptions_weather as weather
from ml4ml.probe.corruption_ops import Draws, length_scale
from ml4ml.spec.registry import CORRUPTION_FAMILIES, MAX_SEVERITY

__all__ = ["CORRUPTIONS", "FAMILY_NAMES", "DESCRIPTIONS", "SEVERITY_PARAMETERS",
           "MAX_SEVERITY", "corrupt", "severity_parameters", "check_severities",
           "poisson_quantile", "box_resize_matrix", "jpeg_roundtrip"]


# name -> (parameter names, kind of each: "level" (unchanged at every size), "length"
# (pixels, times length_scale), "fraction" (of the shorter image side)), one tuple per
# severity 1..5: CIFAR-10-C's constants
SEVERITY_PARAMETERS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[tuple, ...]]] = {
    "gaussian_noise": (("sigma",), ("level",),
                       ((0.04,), (0.06,), (0.08,), (0.09,), (0.10,))),
    "shot_noise": (("photons",), ("level",), ((500,), (250,), (100,), (75,), (50,))),
    "impulse_noise": (("amount",), ("level",), ((0.01,), (0.02,), (0.03,), (0.05,), (0.07,))),
    "defocus_blur": (("radius", "alias_sigma"), ("length", "length"),
                     ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))),
    "glass_blur": (("sigma", "max_delta", "iterations"), ("length", "length", "level"),
                   ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))),
    "motion_blur": (("radius", "sigma"), ("length", "length"),
                    ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5))),
    "zoom_blur": (("zoom_stop",), ("level",), tuple((stop,) for stop in spatial.ZOOM_STOPS)),
    "snow": (("mean", "std", "zoom", "threshold", "radius", "sigma", "blend"),
             ("level", "level", "length", "level", "length", "length", "level"),
             ((0.1, 0.2, 1.0, 0.6, 8, 3, 0.95), (0.1, 0.2, 1.0, 0.5, 10, 4, 0.9),
              (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
              (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))),
    "frost": (("image_weight", "frost_weight", "texture_scale"), ("level", "level", "length"),
              ((1.0, 0.2, 1.0), (1.0, 0.3, 1.0), (0.9, 0.4, 1.0), (0.85, 0.4, 1.0),
               (0.75, 0.45, 1.0))),
    "fog": (("amount", "decay"), ("level", "level"),
            ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75))),
    "brightness": (("shift",), ("level",), ((0.05,), (0.1,), (0.15,), (0.2,), (0.3,))),
    "contrast": (("factor",), ("level",), ((0.75,), (0.5,), (0.4,), (0.3,), (0.15,))),
    "elastic_transform": (("alpha", "sigma", "affine"), ("fraction", "fraction", "fraction"),
                          ((0.0, 0.0, 0.03), (0.05, 0.2, 0.05), (0.08, 0.06, 0.06),
                           (0.1, 0.04, 0.07), (0.1, 0.03, 0.08))),
    "pixelate": (("factor",), ("level",), ((0.95,), (0.9,), (0.85,), (0.75,), (0.65,))),
    "jpeg_compression": (("quality",), ("level",), ((80,), (65,), (58,), (50,), (40,))),
}
CORRUPTIONS: tuple[str, ...] = tuple(SEVERITY_PARAMETERS)
# the transform family (ml4ml.probe.transforms registry) of each corruption: its own name,
# but for the two that the multiplicative ``brightness`` / ``contrast`` families already hold;
# the names and descriptions live in ``spec.registry`` so a spec validates without torch
FAMILY_NAMES = {name: family for name, (family, _) in CORRUPTION_FAMILIES.items()}
DESCRIPTIONS = {name: f"{what} (ImageNet-C / CIFAR-10-C), severity 0..{MAX_SEVERITY}"
                for name, (_, what) in CORRUPTION_FAMILIES.items()}
assert tuple(CORRUPTION_FAMILIES) == tuple(SEVERITY_PARAMETERS)


def severity_parameters(name: str, height: int, width: int) -> list[dict[str, float]]:
    """Severities 1..5 of corruption ``name`` for (height, width) images: one dict each.

    Lengths in pixels are multiplied by ``max(1, min(height, width) / 32)``; fractions by
    ``min(height, width)``; levels (intensities, probabilities, qualities, zoom factors,
    pixelate's factor of the side, iterations) are CIFAR-10-C's at every size.
    """
    names, kinds, table = _family_table(name)
    scale = length_scale(height, width)
    side = min(height, width)
    factor = {"level": 1.0, "length": scale, "fraction": float(side)}
    return [{n: v * factor[k] for n, k, v in zip(names, kinds, row)} for row in table]


def _family_table(name: str):
    try:
        return SEVERITY_PARAMETERS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown corruption {name!r}; expected one of {list(CORRUPTIONS)}",
                         field="transform") from None


def check_severities(name: str, severities) -> np.ndarray:
    """Severities as (P,) int64, each an integer 0..5; anything else is refused."""
    values = np.asarray(severities.detach().cpu() if isinstance(severities, torch.Tensor)
                        else severities)
    try:
        values = values.astype(np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{name} severities must be integers from 0 to {MAX_SEVERITY}; found "
                         f"{severities!r}", field="params") from None
    for v in values:
        if not (math.isfinite(v) and v == int(v) and 0 <= v <= MAX_SEVERITY):
            raise InputError(f"{name} severities must be integers from 0 to {MAX_SEVERITY}; "
                             f"found {v:g}", field="params")
    return values.astype(np.int64)


def corrupt(name: str, images: torch.Tensor, severities, *, sample_ids,
            seed: int = 0) -> torch.Tensor:
    """Corrupt every image at every severity: (severity, batch, channel, height, width).

    See the module docstring; ``seed`` selects another set of random corruptions.
    """
    _family_table(name)
    levels = check_severities(name, severities)
    _check_images(name, images)
    batch, channels, height, width = images.shape
    ids = _check_ids(sample_ids, batch)
    out = torch.empty((len(levels),) + tuple(images.shape), dtype=images.dtype,
                      device=images.device)
    wanted = sorted({int(v) for v in levels if v > 0})
    corrupted = None
    if wanted and batch:
        table = severity_parameters(name, height, width)
        params = [table[level - 1] for level in wanted]
        draws = Draws(ids, seed=seed, name=name, device=images.device)
        corrupted = _FAMILIES[name](images, params, draws)
    for k, level in enumerate(levels):
        out[k] = images if level == 0 else corrupted[wanted.index(int(level))]
    return out


def _check_images(name: str, images) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or \
            not images.is_floating_point():
        found = (f"{tuple(images.shape)} {images.dtype}" if isinstance(images, torch.Tensor)
                 else type(images).__name__)
        raise InputError(f"{name} needs a float tensor (batch, channel, height, width); "
                         f"found {found}", field="images")
    if images.shape[1] not in (1, 3):
        raise InputError(f"{name} needs 1 or 3 channels; found {images.shape[1]}",
                         field="images")


def _check_ids(sample_ids, batch: int) -> np.ndarray:
    if sample_ids is None:
        raise InputError("corruptions need the sample ids (the images' positions in their "
                         "suite) to seed their random numbers; pass sample_ids=",
                         field="sample_ids")
    ids = np.asarray(sample_ids.detach().cpu() if isinstance(sample_ids, torch.Tensor)
                     else sample_ids)
    if ids.shape != (batch,) or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"sample_ids must be ({batch},) integers; found {ids.shape} "
                         f"{ids.dtype}", field="sample_ids")
    return ids.astype(np.int64)


def _levels(params: list[dict], key: str, images: torch.Tensor) -> torch.Tensor:
    """(P', 1, 1, 1, 1) tensor of one parameter over the wanted severities."""
    return torch.tensor([p[key] for p in params], dtype=images.dtype,
                        device=images.device).view(-1, 1, 1, 1, 1)


# ---------------------------------------------------------------------------------------
# noise


def _gaussian_noise(images, params, draws):
    """``clip(x + sigma z)``, z = Phi^-1(u) per pixel and channel (u: stream 0)."""
    normal = torch.special.ndtri(draws.uniform(images.shape[1:], 0)).to(images.dtype)
    return (images + _levels(params, "sigma", images) * normal).clamp_(0.0, 1.0)


def _shot_noise(images, params, draws):
    """``clip(Poisson(photons x) / photons)`` per pixel and channel: the Poisson quantile
    at the pixel's uniform u (stream 0), the same u at every severity."""
    u = draws.uniform(images.shape[1:], 0).to(torch.float64)
    terms = _PoissonTerms(u, images.to(torch.float64))
    return torch.stack([(terms.quantile(float(p["photons"])) / float(p["photons"]))
                        .clamp_(0.0, 1.0).to(images.dtype) for p in params])


def poisson_quantile(u: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """The smallest k with P(Poisson(rate) <= k) >= u, elementwise (float64, as scipy's
    ``poisson.ppf(u, rate)``); larger rates never give smaller k for the same u."""
    u = u.to(torch.float64)
    return _PoissonTerms(u, torch.broadcast_to(rates.to(torch.float64), u.shape)).quantile(1.0)


_MAX_STEPS = 100_000


class _PoissonTerms:
    """What the Poisson quantiles of ``u`` at rates ``scale * base`` share across scales.

    ``quantile(scale)``: a Cornish-Fisher guess from ``z = Phi^-1(u)``, the exact CDF there
    (the regularised upper incomplete gamma function) and pmf, then steps of one along the
    pmf until the CDF brackets u.
    """

    def __init__(self, u: torch.Tensor, base: torch.Tensor):
        self.u = u
        z = torch.special.ndtri(u)
        self.first = z
        self.second = (z * z - 1.0) / 6.0
        self.third = (z * z - 7.0) * z / 72.0
        self.base = base.clamp(min=1e-300)
        self.zero = base <= 0
        self.root = torch.sqrt(self.base)
        self.log = torch.log(self.base)

    def quantile(self, scale: float) -> torch.Tensor:
        lam = self.base * scale
        root = self.root * math.sqrt(scale)
        # + 0.5: the continuity correction, which puts ~99.5% of the guesses on the quantile
        guess = lam + root * self.first + self.second + self.third / root + 0.5
        # kept within [0, lam + 8 sqrt(lam) + 8] and 0 where the rate is 0, so the walk below
        # is short (it corrects any guess)
        k = torch.floor(torch.minimum(guess.clamp_(min=0.0), lam + 8.0 * root + 8.0))
        k.masked_fill_(self.zero, 0.0)
        cdf = torch.special.gammaincc(k + 1.0, lam)
        pmf = torch.exp(k * (self.log + math.log(scale)) - lam - torch.lgamma(k + 1.0))
        k, cdf, pmf, lam, u = (t.view(-1) for t in (k, cdf, pmf, lam, self.u))
        down = torch.nonzero((k > 0) & (u <= cdf - pmf)).squeeze(1)
        for _ in range(_MAX_STEPS):  # P(X <= k - 1) >= u: step down
            if not down.numel():
                break
            cdf[down] -= pmf[down]
            pmf[down] *= k[down] / lam[down]
            k[down] -= 1
            down = down[(k[down] > 0) & (u[down] <= cdf[down] - pmf[down])]
        up = torch.nonzero(u > cdf).squeeze(1)
        for _ in range(_MAX_STEPS):  # P(X <= k) < u: step up
            if not up.numel():
                break
            k[up] += 1
            pmf[up] *= lam[up] / k[up]
            cdf[up] += pmf[up]
            up = up[u[up] > cdf[up]]
        return k.view(self.u.shape).masked_fill_(self.zero, 0.0)


def _impulse_noise(images, params, draws):
    """Salt and pepper: with probability ``amount`` (u < amount, stream 0) a pixel channel
    becomes 1 if its stream-1 number is below 0.5, else 0 (skimage's ``s&p``)."""
    u = draws.uniform(images.shape[1:], 0)
    salt = (draws.uniform(images.shape[1:], 1) < 0.5).to(images.dtype)
    amount = torch.tensor([p["amount"] for p in params], device=images.device)
    flipped = u.unsqueeze(0) < amount.view(-1, 1, 1, 1, 1)
    return torch.where(flipped, salt.unsqueeze(0), images.unsqueeze(0))


# ---------------------------------------------------------------------------------------
# digital


def _brightness(images, params, draws):
    """HSV value + shift (clipped), hue and saturation kept (CIFAR-10-C's via skimage)."""
    shift = _levels(params, "shift", images)
    if images.shape[1] == 1:
        return (images + shift).clamp_(0.0, 1.0)
    value = images.amax(dim=1, keepdim=True)
    new_value = (value + shift).clamp_(max=1.0)
    ratio = new_value / torch.where(value > 0, value, torch.ones_like(value))
    return torch.where(value > 0, images * ratio, new_value).clamp_(0.0, 1.0)


def _contrast(images, params, draws):
    """``clip((x - m) c + m)``, m each image's mean per channel."""
    means = images.mean(dim=(2, 3), keepdim=True)
    return ((images - means) * _levels(params, "factor", images) + means).clamp_(0.0, 1.0)


@functools.lru_cache(maxsize=64)
def box_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) weights of Pillow's BOX resampling along one axis
    (``precompute_coeffs`` of libImaging/Resample.c, support 0.5)."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 0.5 * filter_scale
    matrix = np.zeros((out_size, in_size))
    for xx in range(out_size):
        centre = (xx + 0.5) * scale
        low = max(int(centre - support + 0.5), 0)
        high = min(int(centre + support + 0.5), in_size)
        x = (np.arange(low, high) - centre + 0.5) / filter_scale
        w = ((x > -0.5) & (x <= 0.5)).astype(np.float64)
        if w.sum():
            w /= w.sum()
        matrix[xx, low:high] = w
    return matrix


def _pixelate(images, params, draws):
    """Pillow BOX down to ``int(factor * side / length_scale)`` pixels, BOX back up."""
    _, _, height, width = images.shape
    scale = length_scale(height, width)
    kw = dict(dtype=images.dtype, device=images.device)
    out = []
    for p in params:
        small_h = max(1, int(height / scale * p["factor"]))
        small_w = max(1, int(width / scale * p["factor"]))
        rows = box_resize_matrix(small_h, height) @ box_resize_matrix(height, small_h)
        cols = box_resize_matrix(small_w, width) @ box_resize_matrix(width, small_w)
        out.append(torch.as_tensor(rows, **kw) @ images @ torch.as_tensor(cols.T, **kw))
    return torch.stack(out)


def _jpeg(images, params, draws):
    """Pillow's JPEG encoder and decoder at ``quality`` on the images rounded to 8 bits."""
    pixels = (images.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()
    out = np.empty((len(params),) + pixels.shape, dtype=np.uint8)
    for k, p in enumerate(params):
        quality = int(p["quality"])
        if pixels.shape[1] == 1:
            out[k, :, 0] = _jpeg_grey_mosaic(pixels[:, 0], quality)
        else:
            for i in range(pixels.shape[0]):
                out[k, i] = jpeg_roundtrip(pixels[i].transpose(1, 2, 0), quality).transpose(2, 0, 1)
    return torch.from_numpy(out).to(device=images.device, dtype=images.dtype) / 255.0


def jpeg_roundtrip(pixels: np.ndarray, quality: int) -> np.ndarray:
    """Decode(encode(one (H, W) or (H, W, 3) uint8 image)) with Pillow's defaults."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded)


_MOSAIC_SIDE = 4096


def _jpeg_grey_mosaic(pixels: np.ndarray, quality: int) -> np.ndarray:
    """Round trip of (N, H, W) grey images through a few large JPEGs of tiled images.

    Each image is padded to whole 8x8 blocks by repeating its last row and column, as
    libjpeg pads an image itself, so every block, hence every decoded pixel, is the one
    the image's own JPEG would give (tests/test_corruptions.py checks it against Pillow).
    """
    n, height, width = pixels.shape
    tile_h, tile_w = -(-height // 8) * 8, -(-width // 8) * 8
    tiles = np.pad(pixels, ((0, 0), (0, tile_h - height), (0, tile_w - width)), mode="edge")
    per_row = max(1, min(_MOSAIC_SIDE // tile_w, math.ceil(math.sqrt(n))))
    per_mosaic = per_row * max(1, _MOSAIC_SIDE // tile_h)
    out = np.empty_like(pixels)
    for first in range(0, n, per_mosaic):
        chunk = tiles[first:first + per_mosaic]
        count = len(chunk)
        n_rows = -(-count // per_row)
        grid = np.zeros((n_rows * per_row, tile_h, tile_w), dtype=np.uint8)
        grid[:count] = chunk
        mosaic = grid.reshape(n_rows, per_row, tile_h, tile_w).transpose(0, 2, 1, 3)
        decoded = jpeg_roundtrip(np.ascontiguousarray(mosaic.reshape(n_rows * tile_h, -1)),
                                 quality)
        decoded = decoded.reshape(n_rows, tile_h, per_row, tile_w).transpose(0, 2, 1, 3)
        out[first:first + count] = decoded.reshape(-1, tile_h, tile_w)[:count, :height, :width]
    return out


_FAMILIES = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": spatial.defocus_blur,
    "glass_blur": spatial.glass_blur,
    "motion_blur": spatial.motion_blur,
    "zoom_blur": spatial.zoom_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": spatial.elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg,
}
