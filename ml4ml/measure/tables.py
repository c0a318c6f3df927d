"""Index and mask tables of the paper measures, built once per grid size P.

Every nested interval's filled matrix ``G_k`` (docs/measures.md) equals the window
``[lo, hi]^2`` (``lo = k``, ``hi = P-1-k``) of ``Gf``, the fill of the full row-reversed
matrix ``F``, except its two anti-diagonal corners: ``G_k[lo, hi] = F[lo, hi-1]`` and
``G_k[hi, lo] = F[hi, lo+1]``. (The interior anti-diagonal fill and the centre block read
the same entries of ``F`` for every interval.) So every measure of every interval is a
masked sum over ``Gf`` plus a correction at two entries, and the sums over nested windows
are suffix sums over "rings" of ``Gf``. These tables hold the rings, the gather maps of
the fill and of the anti-diagonal lines, and the row segments of the gradients.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ml4ml.errors import InputError

# docs/measures.md: the smallest interval keeps 5 grid steps each side of the centre
MIN_HALF_WIDTH = 5
# the fill-in reads rows h-1 .. h+2 of an m x m matrix, so m >= 5
MIN_PARAMS = 5


def n_intervals(n_params: int) -> int:
    """Number of nested intervals: ``c - 4`` for a grid of ``P = 2c + 1`` values, at least 1."""
    return max(n_params // 2 - (MIN_HALF_WIDTH - 1), 1)


@dataclass(frozen=True)
class MeasureTables:
    """Tables for a grid of ``n_params`` values; arrays are read-only.

    Shapes: K intervals, P parameters, flat indices into a (P*P,) matrix (``P*P`` = the
    zero pad appended to it).
    """

    n_params: int
    lo: np.ndarray  # (K,) first kept index of each interval
    hi: np.ndarray  # (K,) last kept index
    size: np.ndarray  # (K,) m = hi - lo + 1, float
    half_width: np.ndarray  # (K,) c - k
    fill_a: np.ndarray  # (P, P) Gf = (F.flat[fill_a] + F.flat[fill_b]) / 2
    fill_b: np.ndarray  # (P, P)
    corner_top_src: np.ndarray  # (K,) flat index of F[lo, hi-1]
    corner_bottom_src: np.ndarray  # (K,) flat index of F[hi, lo+1]
    corner_top_pos: np.ndarray  # (K,) flat index of (lo, hi)
    corner_bottom_pos: np.ndarray  # (K,) flat index of (hi, lo)
    ring_onehot: np.ndarray  # (P*P, c+1) entry (a, b) -> ring min(a, b, P-1-a, P-1-b)
    lower: np.ndarray  # (P, P) bool, a > b
    line_src: np.ndarray  # (P, P) flat index of Gf[a, d-a] at [d, a] (a <= d), else pad
    line_member: np.ndarray  # (P, P) bool, a <= d
    line_start: np.ndarray  # (K, P) flat index into the (P, P+1) prefix sums: [d, lo]
    line_stop: np.ndarray  # (K, P) flat index [d, d-lo+1]
    line_count: np.ndarray  # (K, P) length d-2lo+1 of line d in interval k, 0 if unused
    segment_member: np.ndarray  # (P, P) bool: row R >= 1 and column C <= P-1-R
    segment_full_count: np.ndarray  # (P,) P-R for R >= 1, 1 for R = 0
    v_rows: np.ndarray  # (K, P) bool: rows of the v (and h) gradients
    v_count: np.ndarray  # (K, P) segment lengths P-R-lo on v rows, else 0
    wstd_rows: np.ndarray  # (K, P) v rows except the last (R = hi), as float weights
    d_rows: np.ndarray  # (K, P) bool: rows of the d gradient
    d_count: np.ndarray  # (K, P) segment lengths P-1-R-lo on d rows, else 0


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@functools.lru_cache(maxsize=16)
def measure_tables(n_params: int) -> MeasureTables:
    """The tables for a grid of ``n_params`` (odd, >= 5) parameters, cached."""
    p = int(n_params)
    if p < MIN_PARAMS or p % 2 == 0:
        raise InputError(
            f"the measures need an odd grid of at least {MIN_PARAMS} parameters; found {p}",
            field="aug_param",
        )
    c = p // 2
    k_count = n_intervals(p)
    lo = np.arange(k_count)
    hi = p - 1 - lo
    size = (hi - lo + 1).astype(np.float64)
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    flat = a * p + b
    pad = p * p

    # fill of the full matrix (docs/measures.md "Diagonal fill-in" with m = P, h = c)
    fill_a = flat.copy()
    fill_b = flat.copy()
    fill_a[0, p - 1] = fill_b[0, p - 1] = flat[0, p - 2]
    fill_a[p - 1, 0] = fill_b[p - 1, 0] = flat[p - 1, 1]
    for row in range(1, p - 1):
        if row in (c - 1, c, c + 1):
            continue
        fill_a[row, p - 1 - row] = flat[row, p - row]
        fill_b[row, p - 1 - row] = flat[row + 1, p - 1 - row]
    block = slice(c - 1, c + 2)
    fill_a[block, block] = flat[c - 1, c + 2]
    fill_b[block, block] = flat[c + 2, c + 1]

    ring = np.minimum(np.minimum(a, b), np.minimum(p - 1 - a, p - 1 - b))
    ring_onehot = (ring.reshape(-1, 1) == np.arange(c + 1)).astype(np.float64)

    # anti-diagonal lines a + b = d (d <= P-1) laid out as rows [d, a]
    d_index, a_index = a, b
    line_member = a_index <= d_index
    line_src = np.where(line_member, a_index * p + (d_index - a_index), pad)
    d_row = np.arange(p)[None, :]
    lo_col = lo[:, None]
    line_used = (d_row >= 2 * lo_col + 1) & (d_row <= p - 1)
    line_count = np.where(line_used, d_row - 2 * lo_col + 1, 0).astype(np.float64)
    line_start = d_row * (p + 1) + lo_col
    line_stop = d_row * (p + 1) + np.clip(d_row - lo_col + 1, 0, p)

    # gradient segments: row R of the vertical differences, columns lo .. P-1-R
    segment_member = (a >= 1) & (b <= p - 1 - a)
    rows = np.arange(p)
    segment_full_count = np.where(rows >= 1, p - rows, 1).astype(np.float64)
    in_window = (rows[None, :] >= lo_col + 1) & (rows[None, :] <= hi[:, None])
    v_rows = in_window & (rows[None, :] != c) & (rows[None, :] != c + 1)
    v_count = np.where(v_rows, p - rows[None, :] - lo_col, 0).astype(np.float64)
    wstd_rows = (v_rows & (rows[None, :] != hi[:, None])).astype(np.float64)
    wstd_rows /= wstd_rows.sum(axis=1, keepdims=True)
    d_rows = in_window & (rows[None, :] != c)
    d_count = np.where(d_rows, p - 1 - rows[None, :] - lo_col, 0).astype(np.float64)

    return MeasureTables(
        n_params=p,
        lo=_read_only(lo),
        hi=_read_only(hi),
        size=_read_only(size),
        half_width=_read_only(c - lo),
        fill_a=_read_only(fill_a),
        fill_b=_read_only(fill_b),
        corner_top_src=_read_only(lo * p + hi - 1),
        corner_bottom_src=_read_only(hi * p + lo + 1),
        corner_top_pos=_read_only(lo * p + hi),
        corner_bottom_pos=_read_only(hi * p + lo),
        ring_onehot=_read_only(ring_onehot),
        lower=_read_only(a > b),
        line_src=_read_only(line_src),
        line_member=_read_only(line_member),
        line_start=_read_only(line_start),
        line_stop=_read_only(line_stop),
        line_count=_read_only(line_count),
        segment_member=_read_only(segment_member),
        segment_full_count=_read_only(segment_full_count),
        v_rows=_read_only(v_rows),
        v_count=_read_only(v_count),
        wstd_rows=_read_only(wstd_rows),
        d_rows=_read_only(d_rows),
        d_count=_read_only(d_count),
    )
