"""Blur corruptions and the elastic transform of ``ml4ml.probe.corruptions``.

Each family is ``f(images (B, C, H, W), params, draws) -> (P', B, C, H, W)`` with ``params``
one dict per wanted severity (``corruptions.severity_parameters``, already adapted to the
image size) and ``draws`` the batch's counter-based random numbers (``Draws``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from ml4ml.probe.corruption_ops import (clipped_zoom_matrix, filter_separable, gaussian_kernel,
                                        line_blur, line_kernel, pad2d)

# CIFAR-10-C's zoom blur: the zooms np.arange(1, stop, 0.01) of severities 1..5
ZOOM_STOPS = (1.06, 1.11, 1.16, 1.21, 1.26)

__all__ = ["ZOOM_STOPS", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
           "elastic_transform", "defocus_kernel", "zoom_operators"]


@functools.lru_cache(maxsize=64)
def defocus_kernel(radius: float, alias_sigma: float) -> np.ndarray:
    """CIFAR-10-C's ``disk``: the pixels within ``radius`` of the centre (normalised), blurred
    by a gaussian of ``alias_sigma`` (OpenCV's kernel, half-width 1 if radius <= 8 else 2,
    or ``round(2 alias_sigma)`` if larger), in an array wide enough to hold all of it."""
    half = max(1 if radius <= 8 else 2, int(round(2 * alias_sigma)))
    reach = int(math.ceil(radius)) + half
    axis = np.arange(-reach, reach + 1)
    x, y = np.meshgrid(axis, axis)
    disk = (x ** 2 + y ** 2 <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    taps = np.arange(-half, half + 1)
    gauss = np.exp(-taps ** 2 / (2.0 * alias_sigma ** 2))
    gauss /= gauss.sum()
    disk = np.apply_along_axis(np.convolve, 0, disk, gauss, mode="same")
    return np.apply_along_axis(np.convolve, 1, disk, gauss, mode="same")


def defocus_blur(images, params, draws):
    """Correlate with ``defocus_kernel`` (edges reflect-101, OpenCV's ``filter2D``)."""
    batch, channels, height, width = images.shape
    flat = images.reshape(batch * channels, 1, height, width)
    out = []
    for p in params:  # one kernel at a time: a severity never depends on the others asked for
        kernel = defocus_kernel(p["radius"], p["alias_sigma"])
        weight = torch.as_tensor(kernel, dtype=images.dtype, device=images.device)
        padded = pad2d(flat, kernel.shape[0] // 2, kernel.shape[1] // 2, "reflect101")
        out.append(F.conv2d(padded, weight[None, None]).view(images.shape))
    return torch.stack(out).clamp_(0.0, 1.0)


def glass_blur(images, params, draws):
    """Gaussian blur (``sigma``, scipy ``truncate=4``, edges repeated), cut to 8 bits, local
    pixel shuffle ``iterations`` times, gaussian blur again.

    The shuffle (a vectorised stand-in for CIFAR-10-C's raster-order swaps with neighbours
    up to ``max_delta`` away) permutes each row by sorting ``column + (2 max_delta + 1) u``,
    then each column likewise: every pixel moves by at most 2 ``max_delta`` along each axis,
    whole pixels (all channels) move together and no value is lost or duplicated.
    Iteration ``i`` uses streams ``2i`` (rows) and ``2i + 1`` (columns), at every severity.
    """
    batch, channels, height, width = images.shape
    shuffles, jitters = {}, {}
    out = []
    for p in params:
        delta = max(1, int(round(p["max_delta"])))
        iterations = int(p["iterations"])
        if (delta, iterations) not in shuffles:
            shuffles[(delta, iterations)] = _shuffle_index(draws, delta, iterations, height,
                                                           width, jitters)
        index = shuffles[(delta, iterations)].unsqueeze(1).expand(-1, channels, -1)
        kernel = gaussian_kernel(p["sigma"], 4.0)
        x = filter_separable(images, kernel, "edge")
        x = torch.floor(x.clamp(0.0, 1.0) * 255.0) / 255.0
        x = torch.gather(x.reshape(batch, channels, -1), 2, index)
        out.append(filter_separable(x.view(images.shape), kernel, "edge").clamp_(0.0, 1.0))
    return torch.stack(out)


def _shuffle_index(draws, delta: int, iterations: int, height: int, width: int,
                   jitters: dict):
    """(B, H*W) source pixel of every pixel after ``iterations`` row-then-column shuffles;
    ``jitters`` keeps each stream's numbers and each iteration's shuffle for the other
    severities of the batch."""

    def jitter(stream: int) -> torch.Tensor:
        if stream not in jitters:
            bits = draws.bits((height, width), stream)
            jitters[stream] = ((bits >> 8) & 0xFFFFFF).to(torch.int64)
        return jitters[stream]

    device = draws.device
    spread = 2 * delta + 1
    columns = torch.arange(width, device=device, dtype=torch.int64).view(1, 1, -1) << 24
    rows = torch.arange(height, device=device, dtype=torch.int64).view(1, -1, 1) << 24
    base = (rows >> 24) * width
    total = None
    for it in range(iterations):
        if ("step", delta, it) not in jitters:
            along_rows = torch.argsort(columns + spread * jitter(2 * it), dim=2,
                                       stable=True)  # (B, H, W)
            along_cols = torch.argsort(rows + spread * jitter(2 * it + 1), dim=1, stable=True)
            # row pass then column pass: pixel (h, w) <- (along_cols[h, w], along_rows[., w])
            jitters[("step", delta, it)] = torch.gather(base + along_rows, 1,
                                                        along_cols).view(draws.n, -1)
        step = jitters[("step", delta, it)]
        total = step if total is None else torch.gather(total, 1, step)
    return total


def motion_blur(images, params, draws):
    """ImageMagick's ``motion_blur(radius, sigma, angle)``: a one-sided gaussian line of
    ``2 ceil(radius) + 1`` taps, angle uniform in (-45, 45) degrees per sample (stream 0)."""
    angles = draws.uniform((), 0).to(torch.float64) * 90.0 - 45.0
    kernels = [line_kernel(p["radius"], p["sigma"]) for p in params]
    weights = np.zeros((len(kernels), max(k.size for k in kernels)))
    for i, k in enumerate(kernels):
        weights[i, :k.size] = k
    return line_blur(images.unsqueeze(0), angles, weights).clamp_(0.0, 1.0)


@functools.lru_cache(maxsize=16)
def zoom_operators(height: int, width: int, stops: tuple[float, ...], dtype=torch.float64,
                   device: str = "cpu"):
    """The sums of clipped zooms as (sources (H*W, K), weights (H*W, K)) and counts.

    Operator k sums the zooms ``np.arange(1, stops[k], 0.01)`` not already in operator
    k - 1: output pixel p is ``sum_j weights[p, j] * image[sources[p, j]]`` (a row of the
    sparse (H*W, H*W) matrix, zero-padded to K entries); count k is the number of zooms in
    ``np.arange(1, stops[k], 0.01)``.
    """
    from scipy.sparse import coo_matrix

    zooms = np.arange(1, max(stops), 0.01)
    counts = [len(np.arange(1, s, 0.01)) for s in stops]
    size = height * width
    operators, first = [], 0
    for last in counts:
        rows, cols, vals = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
        for z in zooms[first:last]:
            ry, rx = clipped_zoom_matrix(height, z), clipped_zoom_matrix(width, z)
            yr, yc = np.nonzero(ry)
            xr, xc = np.nonzero(rx)
            rows.append((yr[:, None] * width + xr[None, :]).ravel())
            cols.append((yc[:, None] * width + xc[None, :]).ravel())
            vals.append(np.outer(ry[yr, yc], rx[xr, xc]).ravel())
        total = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(size, size)).tocsr()  # duplicates summed
        total.sort_indices()
        lengths = np.diff(total.indptr)
        per_row = max(1, int(lengths.max()))
        slot = np.arange(per_row)[None, :]
        position = np.minimum(total.indptr[:-1, None] + slot, max(total.nnz - 1, 0))
        present = slot < lengths[:, None]
        sources = np.where(present, total.indices[position] if total.nnz else 0, 0)
        weights = np.where(present, total.data[position] if total.nnz else 0.0, 0.0)
        operators.append((torch.from_numpy(sources).to(device),
                          torch.from_numpy(weights).to(device=device, dtype=dtype)))
        first = last
    return operators, counts


def zoom_blur(images, params, draws):
    """Mean of the image and its clipped zooms by 1, 1.01, ..., below ``zoom_stop``
    (scipy's linear ``zoom`` of the centre crop, as CIFAR-10-C)."""
    batch, channels, height, width = images.shape
    stops = tuple(p["zoom_stop"] for p in params)
    # partial sums always at the same stops, so a severity never depends on the others asked for
    all_stops = tuple(sorted(set(stops) | {s for s in ZOOM_STOPS if s < max(stops)}))
    operators, counts = zoom_operators(height, width, all_stops, images.dtype,
                                       str(images.device))
    flat = images.reshape(batch * channels, height * width)
    total = flat.clone()
    by_stop = {}
    for stop, (sources, weights), count in zip(all_stops, operators, counts):
        for j in range(sources.shape[1]):
            total.addcmul_(flat[:, sources[:, j]], weights[:, j])
        by_stop[stop] = total / (count + 1)
    out = torch.stack([by_stop[s].view(batch, channels, height, width) for s in stops])
    return out.clamp_(0.0, 1.0)


def elastic_transform(images, params, draws):
    """CIFAR-10-C's elastic transform: a random affine warp (the three points
    ``centre +- min(H, W) // 3`` each moved by up to ``affine`` pixels along x and y,
    stream 0), bilinear with reflect-101 edges (OpenCV's ``warpAffine``), then a
    displacement field (uniform noise in (-1, 1), streams 1 and 2, smoothed by a gaussian of
    ``sigma`` with scipy's ``truncate=3`` and symmetric edges, times ``alpha``), bilinear
    with symmetric edges (scipy's ``map_coordinates(order=1, mode="reflect")``)."""
    batch, channels, height, width = images.shape
    dtype, device = images.dtype, images.device
    f64 = dict(dtype=torch.float64, device=device)
    moves = draws.uniform((3, 2), 0).to(torch.float64) * 2.0 - 1.0  # (B, 3, 2)
    noise = torch.stack([draws.uniform((height, width), s) for s in (1, 2)], dim=1)
    noise = noise.to(dtype) * 2.0 - 1.0  # (B, 2, H, W): x then y displacement
    cx, cy, half = width // 2, height // 2, min(height, width) // 3
    source = torch.tensor([[cx + half, cy + half], [cx + half, cy - half],
                           [cx - half, cy - half]], **f64)
    solve = torch.linalg.inv(torch.cat([source, torch.ones(3, 1, **f64)], dim=1))
    ys, xs = torch.meshgrid(torch.arange(height, **f64), torch.arange(width, **f64),
                            indexing="ij")
    pixels = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(height * width, **f64)],
                         dim=1)  # (H*W, 3)
    n = len(params)
    # destination pixel -> source pixel of every (severity, sample): inverse of the affine map
    target = source + torch.tensor([p["affine"] for p in params], **f64).view(n, 1, 1, 1) \
        * moves  # (P', B, 3, 2)
    forward = (solve @ target).transpose(-1, -2)  # (P', B, 2, 3): target = M [x, y, 1]
    bottom = torch.tensor([0.0, 0.0, 1.0], **f64).expand(n, batch, 1, 3)
    back = torch.linalg.inv(torch.cat([forward, bottom], dim=2))[:, :, :2]
    src = (pixels @ back.transpose(-1, -2)).view(n * batch, height, width, 2)
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], **f64)
    stacked = images.unsqueeze(0).expand(n, -1, -1, -1, -1).reshape(n * batch, channels,
                                                                     height, width)
    out = F.grid_sample(stacked, (src * scale - 1.0).to(dtype), mode="bilinear",
                        padding_mode="reflection", align_corners=True)
    grids = []
    for p in params:
        smooth = filter_separable(noise, gaussian_kernel(p["sigma"], 3.0), "symmetric")
        grids.append(torch.stack([(2 * (xs.to(dtype) + p["alpha"] * smooth[:, 0]) + 1) / width,
                                  (2 * (ys.to(dtype) + p["alpha"] * smooth[:, 1]) + 1) / height],
                                 dim=-1) - 1.0)
    out = F.grid_sample(out, torch.cat(grids), mode="bilinear", padding_mode="reflection",
                        align_corners=False)
    return out.view(n, batch, channels, height, width).clamp_(0.0, 1.0)
