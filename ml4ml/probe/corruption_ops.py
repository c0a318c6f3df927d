"""Building blocks of the common corruptions (``ml4ml.probe.corruptions``).

Pure torch functions that run on the images' device:

- ``Draws``: counter-based random numbers. The value drawn for element ``e`` of sample ``s``
  in stream ``t`` is a hash of ``(seed, corruption name, t, s, e)`` computed with 32-bit
  integer arithmetic, so it does not depend on which other samples are in the batch, on
  their order, on the device or on the batch size.
- padding by index (``pad_index``: edge, reflect-101 and half-sample symmetric, any width),
- separable gaussian filters as scipy/skimage build them (``gaussian_kernel``,
  ``filter_separable``), ImageMagick's one-sided motion-blur line (``line_kernel``,
  ``line_blur``), scipy's clipped zoom as a sampling matrix (``clipped_zoom_matrix``),
- the size rule (``length_scale``).
"""

from __future__ import annotations

import functools
import math
import zlib

import numpy as np
import torch

__all__ = ["Draws", "mix32", "to_uniform", "length_scale", "grey", "pad_index", "pad2d",
           "gaussian_kernel", "smoothing_matrix", "filter_separable", "line_kernel",
           "line_blur", "clipped_zoom_matrix"]

_MASK = 0xFFFFFFFF
# the two multipliers of the "lowbias32" integer hash (C. Wellons), and a key separator
_MUL1, _MUL2, _SPLIT = 0x7FEB352D, 0x846CA68B, 0x9E3779B9
# CIFAR-10-C's constants are for 32-pixel images
REFERENCE_SIZE = 32


def _as_int32(value: int) -> int:
    """A 32-bit pattern as the signed int32 that has it."""
    value &= _MASK
    return value - (1 << 32) if value >= (1 << 31) else value


def mix32(value):
    """The lowbias32 hash of 32-bit values: a Python int, or an int32 tensor (wrapping).

    Tensors hold the bit pattern as signed int32; shifts are made logical by masking.
    """
    if isinstance(value, int):
        value &= _MASK
        value ^= value >> 16
        value = (value * _MUL1) & _MASK
        value ^= value >> 15
        value = (value * _MUL2) & _MASK
        return value ^ (value >> 16)
    value = value ^ ((value >> 16) & 0xFFFF)
    value = value * _as_int32(_MUL1)
    value = value ^ ((value >> 15) & 0x1FFFF)
    value = value * _as_int32(_MUL2)
    return value ^ ((value >> 16) & 0xFFFF)


class Draws:
    """Counter-based uniform random numbers for one batch of samples.

    sample_ids : (B,) integer ids (the samples' positions in their suite).
    seed : the run's seed; name : the corruption (each has its own numbers).

    ``uniform(shape, stream)`` -> (B, *shape) float32 in (0, 1), an odd multiple of 2**-24
    (``to_uniform``); element ``e`` (flat index into ``shape``) of sample ``b`` depends only on
    ``(seed, name, stream, sample_ids[b], e)``.
    """

    def __init__(self, sample_ids, *, seed: int, name: str, device):
        ids = torch.as_tensor(np.asarray(sample_ids.detach().cpu() if isinstance(
            sample_ids, torch.Tensor) else sample_ids, dtype=np.int64))
        self.device = torch.device(device)
        low = ids & _MASK
        high = (ids >> 32) & _MASK
        self._low = torch.where(low >= 2 ** 31, low - 2 ** 32, low).to(torch.int32)
        self._high = torch.where(high >= 2 ** 31, high - 2 ** 32, high).to(torch.int32)
        self._low, self._high = self._low.to(self.device), self._high.to(self.device)
        self.seed = seed = int(seed)
        self._base = mix32(mix32(mix32(seed & _MASK) ^ ((seed >> 32) & _MASK))
                           ^ zlib.crc32(name.encode()))
        self.n = len(ids)

    def keys(self, stream: int) -> torch.Tensor:
        """The (B,) int32 key of every sample for ``stream``."""
        base = mix32(self._base ^ mix32(int(stream) + _SPLIT))
        return mix32(mix32(self._low ^ _as_int32(base)) ^ self._high)

    def bits(self, shape, stream: int) -> torch.Tensor:
        """(B, *shape) int32 hashes ``mix32(element + key)`` (32 random bits each)."""
        index = torch.arange(math.prod(shape), dtype=torch.int32, device=self.device)
        return mix32(index + self.keys(stream)[:, None]).view((self.n, *shape))

    def bits_at(self, rows: torch.Tensor, elements: torch.Tensor, stream: int) -> torch.Tensor:
        """Hashes of the given (sample row, flat element index) pairs: the same numbers as
        ``bits(...)[rows, elements]`` without drawing the rest."""
        return mix32(elements.to(torch.int32) + self.keys(stream)[rows])

    def uniform(self, shape, stream: int) -> torch.Tensor:
        return to_uniform(self.bits(tuple(shape), stream))

    def uniform_at(self, rows, elements, stream: int) -> torch.Tensor:
        return to_uniform(self.bits_at(rows, elements, stream))


def to_uniform(bits: torch.Tensor) -> torch.Tensor:
    """The top 23 bits k of int32 hashes as float32 in (0, 1): (k + 0.5) / 2**23, exact."""
    return (((bits >> 9) & 0x7FFFFF).to(torch.float32) + 0.5) * (2.0 ** -23)


def length_scale(height: int, width: int) -> float:
    """Factor applied to CIFAR-10-C's lengths in pixels: ``max(1, min(height, width) / 32)``."""
    return max(1.0, min(height, width) / REFERENCE_SIZE)


def grey(images: torch.Tensor) -> torch.Tensor:
    """(..., 1, H, W) luma (OpenCV/ITU-R 601 weights) of (..., C, H, W) with C = 1 or 3."""
    if images.shape[-3] == 1:
        return images
    r, g, b = images.unbind(dim=-3)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


# ---------------------------------------------------------------------------------------
# padding and filters


def pad_index(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """Source index of every position ``-before .. size - 1 + after`` of a padded axis.

    mode : ``"edge"`` (a a | a b c | c c), ``"reflect101"`` (c b | a b c | b a; OpenCV's
    default, scipy's ``mirror``) or ``"symmetric"`` (b a | a b c | c b; scipy's ``reflect``).
    Widths larger than the axis fold back and forth.
    """
    index = np.arange(-before, size + after)
    if mode == "edge" or size == 1:
        return np.clip(index, 0, size - 1)
    if mode == "reflect101":
        period = 2 * size - 2
        index = np.mod(index, period)
        return np.where(index < size, index, period - index)
    if mode == "symmetric":
        period = 2 * size
        index = np.mod(index, period)
        return np.where(index < size, index, period - 1 - index)
    raise ValueError(f"unknown padding mode {mode!r}")


def pad2d(images: torch.Tensor, pad_h: int, pad_w: int, mode: str) -> torch.Tensor:
    """Pad the last two dims by ``pad_h`` rows and ``pad_w`` columns on each side."""
    height, width = images.shape[-2:]
    rows = torch.from_numpy(pad_index(height, pad_h, pad_h, mode)).to(images.device)
    cols = torch.from_numpy(pad_index(width, pad_w, pad_w, mode)).to(images.device)
    return images.index_select(-2, rows).index_select(-1, cols)


def gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
    """scipy.ndimage's 1-D gaussian weights (radius ``int(truncate * sigma + 0.5)``)."""
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return np.ones(1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / sigma ** 2 * x ** 2)
    return phi / phi.sum()


@functools.lru_cache(maxsize=64)
def smoothing_matrix(size: int, kernel: tuple[float, ...], mode: str) -> np.ndarray:
    """(size, size) matrix of correlating one axis with ``kernel`` (odd length), the
    padding ``mode`` folded in: ``out = matrix @ x`` along that axis."""
    radius = len(kernel) // 2
    source = pad_index(size, radius, radius, mode)
    matrix = np.zeros((size, size))
    for tap, weight in enumerate(kernel):
        np.add.at(matrix, (np.arange(size), source[tap:tap + size]), weight)
    return matrix


def filter_separable(images: torch.Tensor, kernel: np.ndarray, mode: str) -> torch.Tensor:
    """Correlate the last two dims of (..., H, W) with ``kernel`` along each (padding
    ``mode``), as two small matrix products."""
    if kernel.size == 1:
        return images.clone()
    height, width = images.shape[-2:]
    kw = dict(dtype=images.dtype, device=images.device)
    taps = tuple(float(k) for k in kernel)
    rows = torch.as_tensor(smoothing_matrix(height, taps, mode), **kw)
    cols = torch.as_tensor(smoothing_matrix(width, taps, mode).T, **kw)
    return rows @ images @ cols


def line_kernel(radius: float, sigma: float) -> np.ndarray:
    """ImageMagick's motion-blur weights: ``2 ceil(radius) + 1`` taps of a one-sided
    gaussian ``exp(-i^2 / (2 sigma^2))``, i = 0, 1, ..., normalised to sum 1; the trailing
    taps below 1e-7 (which move no float32 pixel by more than that) are left out."""
    width = int(2 * math.ceil(radius) + 1) if radius > 0 else 3
    taps = np.arange(width, dtype=np.float64)
    weights = np.exp(-taps ** 2 / (2.0 * sigma ** 2))
    weights /= weights.sum()
    return weights[:max(1, int(np.flatnonzero(weights >= 1e-7)[-1]) + 1)]


def line_blur(layers: torch.Tensor, angles: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
    """Motion blur along a line per sample, as ImageMagick's ``MotionBlurImage``.

    layers : (L or 1, B, C, H, W); angles : (B,) degrees (0: towards +x, 90: towards +y);
    weights : (L, T) one row of tap weights per layer (``line_kernel``, zero-padded).
    Output pixel (x, y) of layer l is ``sum_i weights[l, i] * layer(x + dx_i, y + dy_i)``
    with ``dx_i = ceil(i cos(angle) - 0.5)``, ``dy_i = ceil(i sin(angle) - 0.5)``, pixels
    beyond the border repeating the edge. Returns (L, B, C, H, W).
    """
    n_layers, n_taps = weights.shape
    n_inputs, batch, channels, height, width = layers.shape
    device = layers.device
    radians = angles.to(device=device, dtype=torch.float64) * (math.pi / 180.0)
    taps = torch.arange(n_taps, dtype=torch.float64, device=device)[:, None]
    step_x = torch.ceil(taps * torch.cos(radians) - 0.5).long()  # (T, B)
    step_y = torch.ceil(taps * torch.sin(radians) - 0.5).long()
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    flat = layers.reshape(n_inputs, batch, channels, height * width)
    w = torch.as_tensor(weights, dtype=layers.dtype, device=device)
    out = torch.zeros((n_layers, batch * channels * height * width), dtype=layers.dtype,
                      device=device)
    # tap by tap, elementwise (a fixed order of additions: no image depends on the batch),
    # over the layers [first, last) whose kernels reach that far
    for i in np.flatnonzero(weights.max(axis=0) > 0):
        active = np.flatnonzero(weights[:, i] > 0)
        first, last = int(active[0]), int(active[-1]) + 1
        source = flat if n_inputs == 1 else flat[first:last]
        shifted = _shifted(source, step_x[i], step_y[i], rows, cols).view(len(source), -1)
        out[first:last].addcmul_(w[first:last, i:i + 1], shifted)
    return out.view(n_layers, batch, channels, height, width)


def _shifted(flat: torch.Tensor, step_x, step_y, rows, cols) -> torch.Tensor:
    """(L, B, C, H*W) images read at (x + step_x[b], y + step_y[b]), edges repeated."""
    n_inputs, batch, channels, size = flat.shape
    height, width = len(rows), len(cols)
    r = (rows[None, :] + step_y[:, None]).clamp_(0, height - 1)  # (B, H)
    c = (cols[None, :] + step_x[:, None]).clamp_(0, width - 1)  # (B, W)
    index = (r[:, :, None] * width + c[:, None, :]).view(1, batch, 1, size)
    return torch.gather(flat, 3, index.expand(n_inputs, -1, channels, -1))


@functools.lru_cache(maxsize=256)
def clipped_zoom_matrix(size: int, zoom: float) -> np.ndarray:
    """(size, size) linear-interpolation matrix of CIFAR-10-C's ``clipped_zoom`` on one axis.

    The centre ``ceil(size / zoom)`` pixels are zoomed by scipy's ``zoom(order=1)`` (corner
    pixels aligned: output ``j`` samples input ``j (in - 1) / (out - 1)``) to
    ``round(in * zoom)`` pixels and the centre ``size`` of those are kept.
    """
    crop = int(math.ceil(size / zoom))
    top = (size - crop) // 2
    out_size = int(round(crop * zoom))
    trim = (out_size - size) // 2
    j = trim + np.arange(size, dtype=np.float64)
    coord = j * ((crop - 1) / (out_size - 1)) if out_size > 1 else np.zeros(size)
    low = np.clip(np.floor(coord).astype(np.int64), 0, max(crop - 1, 0))
    frac = coord - low
    high = np.minimum(low + 1, crop - 1)
    matrix = np.zeros((size, size))
    rows = np.arange(size)
    np.add.at(matrix, (rows, np.clip(top + low, 0, size - 1)), 1.0 - frac)
    np.add.at(matrix, (rows, np.clip(top + high, 0, size - 1)), frac)
    return matrix
