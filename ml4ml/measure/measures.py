"""The paper's measures of variance matrices, accuracy, and the measures database.

Definitions: docs/measures.md (the contract). Every measure of every model, level, split and
nested interval is computed in one vectorised pass per block of matrices, lazily on dask:
the nested intervals share one filled matrix ``Gf`` (see ``ml4ml._measure_tables``), so
each measure is a masked sum over ``Gf`` (ring sums, suffix sums along rows, prefix sums
along anti-diagonals) plus a correction at the two corners each interval fills
differently. User measures join through ``register_measure``.
"""

from __future__ import annotations

import functools
from typing import Callable

import dask
import numpy as np
import xarray as xr

from ml4ml import dims
from ml4ml.measure.tables import MeasureTables, measure_tables, n_intervals
from ml4ml.errors import InputError
from ml4ml.measure.matrices import apply_to_blocks, ordered_sum, variance_matrices

__all__ = [
    "PAPER_MEASURES",
    "ROBUST_ERROR_THRESHOLD",
    "measure_matrices",
    "register_measure",
    "unregister_measure",
    "registered_measures",
    "user_measures",
    "accuracy",
    "measure_database",
]

PAPER_MEASURES = (
    "sstv",
    "mean",
    "s_mean",
    "std",
    "robusterror",
    "discnty",
    "asymm",
    "grad_v_mean",
    "grad_v_std",
    "grad_v_wstd",
    "score_v",
    "grad_h_mean",
    "grad_h_std",
    "grad_h_wstd",
    "score_h",
    "grad_d_mean",
    "grad_d_std",
    "score_d",
    "grad_overall",
)
# robusterror counts matrix entries strictly above this value
ROBUST_ERROR_THRESHOLD = 0.15

# name -> (function of a (..., m, m) batch returning (...), whether it sees the filled matrix)
_REGISTRY: dict[str, tuple[Callable[[np.ndarray], np.ndarray], bool]] = {}


def register_measure(name: str, func: Callable[[np.ndarray], np.ndarray], *, fill: bool = True):
    """Add a measure computed for every matrix, split and interval beside the paper's.

    Parameters
    ----------
    name : the ``measure`` coordinate label; must not be a paper measure or registered.
    func : maps a float64 batch of interval matrices (..., m, m) to values (...). It gets
        the row-reversed matrix ``F_k`` of docs/measures.md, filled if ``fill``.
    fill : apply the reference's diagonal fill-in before ``func`` (default True).
    """
    if not isinstance(name, str) or not name:
        raise InputError(f"a measure name must be a non-empty string; got {name!r}", field="name")
    if name in PAPER_MEASURES:
        raise InputError(
            f"{name!r} is a paper measure and cannot be replaced",
            field="name",
            hint="register a corrected variant under a new name",
        )
    if name in _REGISTRY:
        raise InputError(
            f"a measure named {name!r} is already registered",
            field="name",
            hint="call unregister_measure first to replace it",
        )
    if not callable(func):
        raise InputError(f"func must be callable; got {type(func).__name__}", field="func")
    _REGISTRY[name] = (func, bool(fill))


def unregister_measure(name: str) -> None:
    """Remove a measure added with ``register_measure``."""
    if name not in _REGISTRY:
        raise InputError(
            f"no registered measure named {name!r}; registered: {sorted(_REGISTRY)}",
            field="name",
        )
    del _REGISTRY[name]


def registered_measures() -> tuple[str, ...]:
    """Every measure ``measure_matrices`` computes: the paper's, then the user's in order."""
    return PAPER_MEASURES + tuple(_REGISTRY)


def user_measures() -> tuple[str, ...]:
    """Names of the measures added with ``register_measure``, in registration order."""
    return tuple(_REGISTRY)


def _selected_measures(measures) -> list[str]:
    """The measure names to compute, validated; None means every paper and user measure."""
    known = list(registered_measures())
    if measures is None:
        return known
    if isinstance(measures, str):
        measures = [measures]
    names = list(measures)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InputError(
            f"unknown measure(s) {unknown}; known: {known}",
            field="measures",
            hint="register user measures with ml4ml.measure.register_measure",
        )
    if len(set(names)) != len(names):
        raise InputError(f"measures lists a name twice: {names}", field="measures")
    if not names:
        raise InputError("measures is empty; pass None for every measure", field="measures")
    return names


def measure_matrices(matrices: xr.Dataset, measures=None) -> xr.DataArray:
    """Measures of every L2 variance matrix, split and nested interval, lazily.

    Parameters
    ----------
    matrices : xr.Dataset
        The matrices dataset (``variance_matrices``): ``matrix`` (..., level, split, kind,
        aug_param_i, aug_param_j) and ``matrix_subset`` (..., level, split, aug_param_i,
        aug_param_j); ``...`` any leading dims (usually ``mid``). Only kind ``l2`` is used.
    measures : list of names, optional
        Which measures, in this order; default every paper measure then every
        registered one.

    Returns
    -------
    xr.DataArray ``value`` (..., level, split, interval, measure) float64, with coords
    ``interval`` (0..K-1), ``half_width`` (interval,) in grid steps and ``measure``.
    ``sstv`` is defined for the full interval (0) only and NaN elsewhere.
    """
    names = _selected_measures(measures)
    for name in (dims.MATRIX, dims.MATRIX_SUBSET):
        if name not in matrices:
            raise InputError(
                f"the matrices dataset has no variable '{name}'; found "
                f"{sorted(matrices.data_vars)}",
                field=name,
                hint="compute it with ml4ml.measure.variance_matrices",
            )
    n_params = matrices.sizes[dims.AUG_PARAM_I]
    tables = measure_tables(n_params)
    l2 = matrices[dims.MATRIX]
    if dims.KIND in l2.dims:
        l2 = l2.sel({dims.KIND: "l2"}, drop=True)
    user = {name: _REGISTRY[name] for name in names if name in _REGISTRY}
    square = [dims.AUG_PARAM_I, dims.AUG_PARAM_J]
    value = xr.apply_ufunc(
        functools.partial(apply_to_blocks, _measures_block),
        l2,
        matrices[dims.MATRIX_SUBSET],
        input_core_dims=[square, square],
        output_core_dims=[[dims.INTERVAL, dims.MEASURE]],
        kwargs={
            "core_ndims": (2, 2),
            "out_core_sizes": (tables.lo.size, len(names)),
            "names": tuple(names),
            "user": user,
        },
        dask="allowed",
    )
    value = value.assign_coords(
        {
            dims.INTERVAL: np.arange(tables.lo.size),
            dims.HALF_WIDTH: (dims.INTERVAL, tables.half_width.copy()),
            dims.MEASURE: np.array(names, dtype=object),
        }
    )
    value.name = dims.VALUE
    long_name, description = dims.DESCRIPTIONS[dims.VALUE]
    value.attrs.update(long_name=long_name, description=description)
    for name in (dims.INTERVAL, dims.HALF_WIDTH, dims.MEASURE):
        value[name].attrs.update(zip(("long_name", "description"), dims.DESCRIPTIONS[name]))
    value[dims.HALF_WIDTH].attrs["units"] = dims.UNITS[dims.HALF_WIDTH]
    return value


def _measures_block(l2, subset, *, names, user):
    """Measures (..., K, len(names)) of l2 and subset matrices (..., P, P)."""
    n_params = l2.shape[-1]
    lead = l2.shape[:-2]
    tables = measure_tables(n_params)
    l2 = np.asarray(l2, dtype=np.float64).reshape(-1, n_params, n_params)
    subset = np.broadcast_to(subset, lead + subset.shape[-2:]).reshape(l2.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        reversed_matrix = np.ascontiguousarray(l2[:, ::-1, :])  # F (B, P, P)
        filled, top, bottom = _fill(reversed_matrix, tables)
        values = _paper_measures(filled, top, bottom, tables)
        sstv = np.full(values["mean"].shape, np.nan)
        sstv[:, 0] = ordered_sum(np.abs(l2 - subset), (-2, -1))
        values["sstv"] = sstv
        for name, (func, fill) in user.items():
            matrix = filled if fill else reversed_matrix
            try:
                values[name] = _user_measure(func, matrix, top, bottom, fill, tables)
            except Exception as exc:  # noqa: BLE001 - say which measure, keep the cause
                text = " ".join(str(exc).split()) or "no message"
                raise InputError(f"registered measure {name!r} raised {type(exc).__name__}: "
                                 f"{text}", field="measure") from exc
    out = np.stack([values[name] for name in names], axis=-1)  # (B, K, n_measures)
    return out.reshape(lead + out.shape[1:])


def _fill(reversed_matrix, tables: MeasureTables):
    """Full fill ``Gf`` (B, P, P) and each interval's corner values (B, K), top and bottom."""
    flat = reversed_matrix.reshape(reversed_matrix.shape[0], -1)
    filled = 0.5 * (flat[:, tables.fill_a] + flat[:, tables.fill_b])
    top = flat[:, tables.corner_top_src]  # G_k[lo, hi] = F[lo, hi-1]
    bottom = flat[:, tables.corner_bottom_src]  # G_k[hi, lo] = F[hi, lo+1]
    return filled, top, bottom


def _user_measure(func, matrix, top, bottom, fill, tables: MeasureTables):
    """A registered measure (B, K): ``func`` on each interval's (B, m, m) matrices."""
    columns = []
    for k, (lo, hi) in enumerate(zip(tables.lo, tables.hi)):  # user measures only
        window = matrix[:, lo : hi + 1, lo : hi + 1].copy()
        if fill:
            window[:, 0, -1] = top[:, k]
            window[:, -1, 0] = bottom[:, k]
        columns.append(np.asarray(func(window), dtype=np.float64).reshape(matrix.shape[0]))
    return np.stack(columns, axis=-1)


def _paper_measures(filled, top, bottom, tables: MeasureTables) -> dict[str, np.ndarray]:
    """Every paper measure except sstv, each (B, K), from the full fill and the corners."""
    n_models = filled.shape[0]
    flat = filled.reshape(n_models, -1)
    top_full = flat[:, tables.corner_top_pos]  # Gf[lo, hi] (B, K)
    bottom_full = flat[:, tables.corner_bottom_pos]  # Gf[hi, lo]
    size = tables.size
    cells = size * size

    # window sums over rings >= k, corrected at the two corners
    shift = (ordered_sum(filled, (-2, -1)) / (filled.shape[-2] * filled.shape[-1]))[:, None]
    centred = filled - shift[:, :, None]
    asym = np.where(tables.lower, np.abs(filled - np.swapaxes(filled, -1, -2)), 0.0)
    quantities = np.stack(
        [centred, centred * centred, filled * filled, filled > ROBUST_ERROR_THRESHOLD, asym],
        axis=1,
    ).reshape(n_models, 5, -1)
    ring_sums = quantities @ tables.ring_onehot  # (B, 5, rings)
    window = np.cumsum(ring_sums[:, :, ::-1], axis=-1)[:, :, ::-1][:, :, : size.size]

    def corner_change(func):
        return func(top) + func(bottom) - func(top_full) - func(bottom_full)

    sum_centred = window[:, 0] + corner_change(lambda x: x)
    sum_centred_sq = window[:, 1] + corner_change(lambda x: (x - shift) ** 2)
    sum_sq = window[:, 2] + corner_change(lambda x: x * x)
    above = window[:, 3] + corner_change(lambda x: (x > ROBUST_ERROR_THRESHOLD).astype(float))
    asym_sum = window[:, 4] + np.abs(bottom - top) - np.abs(bottom_full - top_full)

    mean_dev = sum_centred / cells
    mean = shift + mean_dev
    out = {
        "mean": mean,
        "s_mean": sum_sq / cells,
        "std": np.sqrt(np.maximum(sum_centred_sq / cells - mean_dev * mean_dev, 0.0)),
        "robusterror": above / cells + 0.0 * mean,  # NaN where the matrix is NaN
    }
    off_diagonal_mean = mean * cells / (cells - size)  # mu = sum(M) / (m*m - m)
    out["asymm"] = asym_sum / (size * (size - 1) / 2) / off_diagonal_mean
    out["discnty"] = _discontinuity(filled, top, bottom, top_full, bottom_full, tables)
    out["discnty"] = out["discnty"] / off_diagonal_mean

    # v: vertical differences of G; h: the same of G transposed (its corners swap)
    vertical = _row_segments(filled, tables)
    for axis_name, matrix, segments, corner in (
        ("v", filled, vertical, bottom),
        ("h", np.swapaxes(filled, -1, -2), None, top),
    ):
        if segments is None:
            segments = _row_segments(matrix, tables)
        grad_mean, grad_std, grad_wstd = _row_gradients(matrix, segments, corner, tables)
        out[f"grad_{axis_name}_mean"] = grad_mean
        out[f"grad_{axis_name}_std"] = grad_std
        out[f"grad_{axis_name}_wstd"] = grad_wstd
        out[f"score_{axis_name}"] = grad_mean / grad_wstd
    out["grad_d_mean"], out["grad_d_std"] = _diagonal_gradients(vertical, tables)
    out["score_d"] = out["grad_d_mean"] / out["grad_d_std"]
    out["grad_overall"] = (out["score_v"] + out["score_h"] + out["score_d"]) / 3.0
    return out


def _discontinuity(filled, top, bottom, top_full, bottom_full, tables: MeasureTables):
    """``sum_i (i+1) sigma_i / m`` (B, K) over the lines a + b = 2lo + i of each interval.

    Lines are gathered as rows ``[d, a]``; each interval keeps ``a`` in ``lo .. d-lo``, a
    range of prefix sums. Only line ``d = P-1`` holds the corners.
    """
    n_models, p = filled.shape[0], tables.n_params
    padded = np.concatenate([filled.reshape(n_models, -1), np.zeros((n_models, 1))], axis=1)
    lines = padded[:, tables.line_src]  # (B, d, a)
    line_shift = ordered_sum(lines, -1) / np.arange(1, p + 1)  # full-line means (B, P)
    deviation = np.where(tables.line_member, lines - line_shift[:, :, None], 0.0)
    prefix = np.zeros((2, n_models, p, p + 1))
    np.cumsum(deviation, axis=-1, out=prefix[0, :, :, 1:])
    np.cumsum(deviation * deviation, axis=-1, out=prefix[1, :, :, 1:])
    prefix = prefix.reshape(2, n_models, -1)
    sums = prefix[:, :, tables.line_stop] - prefix[:, :, tables.line_start]  # (2, B, K, P)
    last_shift = line_shift[:, -1:]  # shift of line d = P-1 (B, 1)
    sums[0, :, :, -1] += (top - top_full) + (bottom - bottom_full)
    sums[1, :, :, -1] += (
        (top - last_shift) ** 2
        + (bottom - last_shift) ** 2
        - (top_full - last_shift) ** 2
        - (bottom_full - last_shift) ** 2
    )
    count = tables.line_count
    used = count > 0
    safe = np.where(used, count, 1.0)
    line_mean = sums[0] / safe
    variance = np.maximum(sums[1] / safe - line_mean * line_mean, 0.0)
    sigma = np.where(used, np.sqrt(variance), 0.0)
    return ordered_sum(count * sigma, -1) / tables.size


def _row_segments(matrix, tables: MeasureTables):
    """Suffix sums of the vertical differences along each row's segment.

    matrix (B, P, P). Returns the per-row shift (B, P) and the suffix sums (2, B, P, P) of
    ``V - shift`` and its square over columns ``C .. P-1-R`` at [., ., R, C], where
    ``V[R, C] = matrix[R-1, C] - matrix[R, C]``.
    """
    diff = np.zeros_like(matrix)
    diff[:, 1:] = matrix[:, :-1] - matrix[:, 1:]
    diff = np.where(tables.segment_member, diff, 0.0)
    row_shift = ordered_sum(diff, -1) / tables.segment_full_count  # (B, P)
    deviation = np.where(tables.segment_member, diff - row_shift[:, :, None], 0.0)
    suffix = np.stack([deviation, deviation * deviation])[..., ::-1]
    suffix = np.cumsum(suffix, axis=-1)[..., ::-1]
    return row_shift, suffix


def _joined_stats(dev_sum, dev_sq_sum, row_shift, rows, count):
    """Mean and population std (B, K) of all row segments joined.

    dev_sum, dev_sq_sum (B, K, P): sums of ``x - row_shift`` and its square per segment;
    rows (K, P) the segments used, count (K, P) their lengths.
    """
    weight = np.where(rows, 1.0, 0.0)
    total = count.sum(axis=-1)
    seg_sum = dev_sum + count * row_shift[:, None, :]
    mean = ordered_sum(weight * seg_sum, -1) / total
    offset = mean[:, :, None] - row_shift[:, None, :]
    scatter = dev_sq_sum - 2.0 * offset * dev_sum + count * offset * offset
    std = np.sqrt(np.maximum(ordered_sum(weight * scatter, -1) / total, 0.0))
    return mean, std


def _row_gradients(matrix, segments, corner, tables: MeasureTables):
    """``grad_v_mean``, ``grad_v_std``, ``grad_v_wstd`` (B, K) of ``matrix`` (B, P, P).

    segments: ``_row_segments(matrix)``. corner (B, K): each interval's value at (hi, lo),
    the one entry of its segments that differs from ``matrix`` (it sits in the last,
    single-entry segment R = hi).
    """
    row_shift, suffix = segments
    at_lo = suffix[:, :, :, tables.lo].transpose(0, 1, 3, 2).copy()  # (2, B, K, R)
    interval = np.arange(tables.lo.size)
    last = matrix[:, tables.hi - 1, tables.lo] - corner  # V[hi, lo] of each interval
    last_dev = last - row_shift[:, tables.hi]
    at_lo[0][:, interval, tables.hi] = last_dev
    at_lo[1][:, interval, tables.hi] = last_dev * last_dev
    mean, std = _joined_stats(at_lo[0], at_lo[1], row_shift, tables.v_rows, tables.v_count)
    count = np.where(tables.v_count > 0, tables.v_count, 1.0)
    seg_mean_dev = at_lo[0] / count
    seg_std = np.sqrt(np.maximum(at_lo[1] / count - seg_mean_dev * seg_mean_dev, 0.0))
    wstd = ordered_sum(tables.wstd_rows * seg_std, -1)
    return mean, std, wstd


def _diagonal_gradients(segments, tables: MeasureTables):
    """``grad_d_mean``, ``grad_d_std`` (B, K): segments V[R, lo+1 .. P-1-R] (no corner).

    segments: ``_row_segments`` of the filled matrix.
    """
    row_shift, suffix = segments
    start = np.minimum(tables.lo + 1, tables.n_params - 1)
    at_start = suffix[:, :, :, start].transpose(0, 1, 3, 2)  # (2, B, K, R)
    return _joined_stats(at_start[0], at_start[1], row_shift, tables.d_rows, tables.d_count)


def accuracy(probe: xr.Dataset) -> xr.Dataset:
    """Accuracy per parameter and class, and robust accuracy per nested interval, lazily.

    Parameters
    ----------
    probe : xr.Dataset with ``prediction`` (..., aug_param, sample) and coordinate
        ``label`` (sample,); the classes are the ``class`` coordinate if present, else the
        distinct labels (which must then be in memory).

    Returns
    -------
    xr.Dataset: ``accuracy`` (..., aug_param), ``class_accuracy`` (..., aug_param, class)
    (NaN for a class with no samples) and ``robust_accuracy`` (..., interval): the fraction
    of samples correct at every parameter of interval k (params k .. P-1-k).
    """
    if dims.PREDICTION not in probe:
        raise InputError("the probe dataset has no variable 'prediction'", field=dims.PREDICTION)
    label = probe[dims.LABEL]
    if dims.CLASS in probe.coords:
        classes = probe[dims.CLASS].values
    elif not dask.is_dask_collection(label.variable):
        classes = np.unique(label.values)
    else:
        raise InputError(
            "the probe dataset has no 'class' coordinate and its 'label' coordinate is not "
            "in memory, so the classes are unknown without computing",
            field=dims.CLASS,
            hint="assign the class coordinate, e.g. probe.assign_coords({'class': range(10)})",
        )
    correct = probe[dims.PREDICTION] == label
    result = xr.Dataset()
    result["accuracy"] = correct.mean(dims.SAMPLE)
    one_hot = (label == xr.DataArray(classes, dims=dims.CLASS)).astype(np.float64)
    one_hot = one_hot.assign_coords({dims.CLASS: classes}).drop_vars(dims.LABEL, errors="ignore")
    per_class = xr.apply_ufunc(  # (..., aug_param, sample) @ (sample, class), on BLAS
        np.matmul,
        correct.astype(np.float64),
        one_hot.transpose(dims.SAMPLE, dims.CLASS),
        input_core_dims=[[dims.SAMPLE], [dims.SAMPLE, dims.CLASS]],
        output_core_dims=[[dims.CLASS]],
        dask="parallelized",
        output_dtypes=[np.float64],
    )
    per_class_count = one_hot.sum(dims.SAMPLE)
    # a class with no samples: divide by NaN, not 0 (lazy, so no errstate at compute time)
    result["class_accuracy"] = per_class / per_class_count.where(per_class_count > 0)
    # a sample is correct over interval k iff every wrong parameter lies in a ring < k,
    # ring(p) = min(p, P-1-p) being the last interval that keeps parameter p
    n_params = probe.sizes[dims.AUG_PARAM]
    k_count = n_intervals(n_params)
    steps = np.arange(n_params)
    ring = xr.DataArray(np.minimum(steps, n_params - 1 - steps), dims=dims.AUG_PARAM)
    outermost_wrong = ring.where(~correct.variable, -1).max(dims.AUG_PARAM)
    intervals = xr.DataArray(np.arange(k_count), dims=dims.INTERVAL)
    result["robust_accuracy"] = (outermost_wrong < intervals).mean(dims.SAMPLE)
    result = result.drop_vars(dims.LABEL, errors="ignore")
    return result.assign_coords(
        {
            dims.INTERVAL: np.arange(k_count),
            dims.HALF_WIDTH: (dims.INTERVAL, n_params // 2 - np.arange(k_count)),
        }
    )


def measure_database(probe: xr.Dataset, measures=None) -> xr.Dataset:
    """The measures dataset of a probe dataset: matrices, measures and accuracies, lazily.

    Returns ``value`` (..., level, split, interval, measure), ``accuracy``,
    ``class_accuracy``, ``robust_accuracy`` and ``layer_name`` as laid out in
    ``ml4ml.dims``; dask-backed inputs give one dask graph for the caller to compute.
    """
    value = measure_matrices(variance_matrices(probe), measures)
    result = accuracy(probe)
    result[dims.VALUE] = value
    names = [dims.VALUE, "accuracy", "class_accuracy", "robust_accuracy"]
    if dims.LAYER_NAME in probe:
        result[dims.LAYER_NAME] = probe[dims.LAYER_NAME]
        names.append(dims.LAYER_NAME)
    return dims.describe(result[names])
