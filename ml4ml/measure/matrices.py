"""Variance matrices of a probe dataset: one lazy, vectorised pass over every model.

For a response ``R[k, s]`` (the confidence, or one layer statistic) restricted to a split
of ``n'`` samples (docs/measures.md, "Variance matrix"):

- ``l2``: ``D[i, j] = ||R[i, :] - R[j, :]||_2 / sqrt(n')`` (not row-reversed);
- ``cosine``: ``1 - cos(R[i, :], R[j, :])``;
- ``corrcoef``: the Pearson correlation of rows ``i`` and ``j``.

All three come from centred Gram matrices in float64. With ``u[s]`` the mean of sample
``s`` over the parameters and ``Y = R - u``, ``D^2 = G_ii + G_jj - 2 G_ij`` for
``G = Y Y^T`` over the split's samples (centring per sample keeps the cancellation small).
Appending the rows ``u - shift`` and ``1`` to ``Y`` makes the same product also give the
row sums and counts that the covariance and raw Gram (hence ``corrcoef`` and ``cosine``)
need. Samples are gathered into fixed-width chunks that each hold one group (split at
the centre x in or out of the 90% ``sstv`` subset), so one batched ``Z @ Z.T`` over
chunks, levels and models, then a weighted sum over chunks, gives every split's matrices:
no Python loop over models, levels, splits or samples.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ml4ml import dims
from ml4ml.cluster import keep_freed_memory_once
from ml4ml.errors import InputError

__all__ = ["variance_matrices", "matrix_levels", "matrix_level_modules", "subset_indices",
           "single_threaded_blas", "ordered_sum", "SUBSET_SEED"]

# seed and fraction of the reference's sensitivity subset (docs/measures.md, "sstv")
SUBSET_SEED = 2
SUBSET_FRACTION = 0.9


@functools.lru_cache(maxsize=32)
def subset_indices(n_samples: int) -> np.ndarray:
    """Sample positions of the reference's 90% subset (``RandomState(2).choice``), (n_subset,)."""
    rng = np.random.RandomState(SUBSET_SEED)
    chosen = rng.choice(n_samples, int(SUBSET_FRACTION * n_samples), replace=False)
    chosen.setflags(write=False)
    return chosen


@functools.lru_cache(maxsize=32)
def _subset_complement(n_samples: int) -> np.ndarray:
    """Sorted sample positions left out of the 90% subset, (n_samples - n_subset,)."""
    left_out = np.ones(n_samples, dtype=bool)
    left_out[subset_indices(n_samples)] = False
    complement = np.flatnonzero(left_out)
    complement.setflags(write=False)
    return complement


def _single_block(block):
    """The array inside the nested one-element lists dask passes for a whole core dim."""
    while isinstance(block, list):
        if len(block) != 1:
            raise ValueError(f"expected one block along each core dim, got {len(block)}")
        block = block[0]
    return block


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


# the process's one BLAS limit: how many blocks are inside ``single_threaded_blas`` now,
# and the limiter that restores the thread count the last of them found
_BLAS_LIMIT = {"depth": 0, "limiter": None}
_BLAS_GUARD = threading.Lock()


@contextlib.contextmanager
def single_threaded_blas():
    """A context in which numpy's BLAS runs on one thread.

    Every block of models is computed with one BLAS thread, whichever scheduler runs it
    (dask's threads supply the parallelism): the blocking of a multi-threaded BLAS depends
    on its thread count, so its sums would round differently in process, on a cluster and
    on another machine. One thread makes every run bitwise identical.

    The thread count is the process's, not the thread's: the first block to enter sets
    it to 1 and the last to leave restores it, so a block that ends never gives BLAS its
    threads back while another (in another dask thread) is still computing, whatever
    the order in which a busy machine lets them finish. (threadpoolctl lets only the first
    thread that set OpenBLAS's count set it again and ignores the others silently: each
    change here takes that role first, so a dask thread's limit is never a no-op.)
    """
    with _BLAS_GUARD:
        if _BLAS_LIMIT["depth"] == 0:
            _take_blas_control()
            _BLAS_LIMIT["limiter"] = _blas_controller().limit(limits=1, user_api="blas")
        _BLAS_LIMIT["depth"] += 1
    try:
        yield
    finally:
        with _BLAS_GUARD:
            _BLAS_LIMIT["depth"] -= 1
            if _BLAS_LIMIT["depth"] == 0:
                _take_blas_control()
                _BLAS_LIMIT["limiter"].restore_original_limits()
                _BLAS_LIMIT["limiter"] = None


def _take_blas_control() -> None:
    """Make this thread the one threadpoolctl lets set OpenBLAS's thread count."""
    try:
        from threadpoolctl import OpenBLASController
    except ImportError:  # a threadpoolctl without the notion: any thread may set it
        return
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


def ordered_sum(values: np.ndarray, axis) -> np.ndarray:
    """Sum of ``values`` over ``axis`` (an int or a tuple) in an order set by the summed
    values alone.

    numpy sums a contiguous last axis pairwise and any other axis one value after another,
    and the memory layout it picks for an intermediate result follows its operands'
    strides, which depend on their shapes: the same numbers summed inside a larger block
    (more models, levels or splits) could round otherwise. Here the summed axes are moved
    last and made one contiguous row, so each sum is numpy's pairwise sum of that row,
    whatever the other dims are.
    """
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = [int(a) % values.ndim for a in axes]
    kept = values.ndim - len(axes)
    moved = np.moveaxis(values, axes, range(kept, values.ndim))
    return np.ascontiguousarray(moved).reshape(moved.shape[:kept] + (-1,)).sum(axis=-1)


def _call_on_blocks(*blocks, block_function, **kwargs):
    """Call ``block_function`` on the unwrapped blocks of one output chunk.

    Undefined values (an empty split, a constant response) become NaN silently. BLAS runs
    single-threaded (``single_threaded_blas``). The first block lets this process's malloc
    keep freed blocks (``cluster.keep_freed_memory_once``): a CIFAR-sized model's
    megabyte-sized temporaries were otherwise mapped afresh each time, about 4,000 page
    faults per model against 1,400 (``benchmarks/measures.py --store``).
    """
    keep_freed_memory_once()
    with np.errstate(invalid="ignore", divide="ignore"), single_threaded_blas():
        return block_function(*(_single_block(block) for block in blocks), **kwargs)


def apply_to_blocks(block_function, *arrays, core_ndims, out_core_sizes, **kwargs):
    """``block_function`` over aligned blocks of the leading dims, lazily if any input is dask.

    arrays: numpy or dask arrays, leading (broadcast) dims aligned to the right as in numpy,
    then ``core_ndims[i]`` core dims each (as ``xr.apply_ufunc(..., dask="allowed")``
    passes them). The function gets whole core dims and returns (lead..., *out_core_sizes) float64.
    Unlike ``dask="parallelized"`` this does not copy each input block to concatenate its
    core dims (``blockwise(concatenate=False)``): they are rechunked to one chunk instead.
    """
    if not any(dask.is_dask_collection(array) for array in arrays):
        with single_threaded_blas():
            return block_function(*arrays, **kwargs)
    n_lead = max(array.ndim - n_core for array, n_core in zip(arrays, core_ndims))
    lead = tuple(f"lead{i}" for i in range(n_lead))
    args = []
    for number, (array, n_core) in enumerate(zip(arrays, core_ndims)):
        array = da.asarray(array)
        own_lead = array.ndim - n_core  # missing leading dims broadcast (numpy rules)
        array = array.rechunk({axis: -1 for axis in range(own_lead, array.ndim)})
        core = tuple(f"in{number}_{i}" for i in range(n_core))
        args += [array, lead[n_lead - own_lead :] + core]
    out_core = tuple(f"out{i}" for i in range(len(out_core_sizes)))
    return da.blockwise(
        _call_on_blocks,
        lead + out_core,
        *args,
        new_axes=dict(zip(out_core, out_core_sizes)),
        concatenate=False,
        dtype=np.float64,
        meta=np.empty((0,) * (n_lead + len(out_core)), np.float64),
        block_function=block_function,
        **kwargs,
    )


def matrix_levels(probe: xr.Dataset) -> list[str]:
    """Level labels of a probe dataset: ``["confidence", "layer-2_mean", ...,
    "layer-1_max_std"]`` (``dims.level_names`` of its ``layer`` size): by position from the
    output, the same for every model whatever its modules are called."""
    return dims.level_names(probe.sizes[dims.LAYER])


def matrix_level_modules(probe: xr.Dataset) -> list[str]:
    """The ``level_module`` labels of a probe dataset (``dims.level_modules``): each level
    by the module name every model of ``probe`` recorded at its layer, "" where they differ.

    ``layer_name`` is small and read at once, even from a dask-backed dataset.
    """
    n_layers = probe.sizes[dims.LAYER]
    if dims.LAYER_NAME not in probe:
        return dims.level_modules([""] * n_layers)
    names = probe[dims.LAYER_NAME].transpose(..., dims.LAYER).data
    if dask.is_dask_collection(names):
        names = names.compute(scheduler="sync")  # a few strings; not the responses
    return dims.level_modules(dims.shared_modules(np.asarray(names)))


def variance_matrices(probe: xr.Dataset) -> xr.Dataset:
    """Variance matrices of every model, level and split, lazily.

    Parameters
    ----------
    probe : xr.Dataset
        Probe dataset (``ml4ml.dims``): ``prediction`` (..., aug_param, sample),
        ``confidence`` (..., aug_param, sample), ``act`` (..., aug_param, sample, layer,
        stat), coordinate ``label`` (sample,), optional ``layer_name`` (..., layer).
        ``...`` is any leading dims (usually ``mid``), or none. ``aug_param`` must have an
        odd size; its centre is the identity, where the split is decided.

    Returns
    -------
    xr.Dataset
        ``matrix`` (..., level, split, kind, aug_param_i, aug_param_j) float64 and
        ``matrix_subset`` (..., level, split, aug_param_i, aug_param_j) float64 (the L2
        matrix of the seeded 90% subset), plus ``layer_name``; coordinates ``level``
        (``matrix_levels``) and ``level_module`` (``matrix_level_modules``). Dask-backed inputs give
        dask-backed outputs with the input's chunks along the leading dims; nothing is
        computed. An empty split gives NaN matrices.
    """
    _check_probe(probe)
    n_params = probe.sizes[dims.AUG_PARAM]
    n_samples = probe.sizes[dims.SAMPLE]
    levels = matrix_levels(probe)
    act = probe[dims.ACT].transpose(..., dims.AUG_PARAM, dims.SAMPLE, dims.LAYER, dims.STAT)
    act = act.sel({dims.STAT: list(dims.STATS)}) if dims.STAT in act.coords else act
    core = [dims.AUG_PARAM, dims.SAMPLE]
    square = [dims.AUG_PARAM_I, dims.AUG_PARAM_J]
    n_kinds = len(dims.KINDS) + 1  # the kinds, then the subset's l2
    matrix, matrix_subset = xr.apply_ufunc(
        _split_subset,
        probe[dims.CONFIDENCE],
        probe[dims.PREDICTION],
        act,
        probe[dims.LABEL].variable,
        input_core_dims=[core, core, core + [dims.LAYER, dims.STAT], [dims.SAMPLE]],
        output_core_dims=[
            [dims.LEVEL, dims.SPLIT, dims.KIND] + square,
            [dims.LEVEL, dims.SPLIT] + square,
        ],
        kwargs={
            "subset_complement": _subset_complement(n_samples),
            "out_core_sizes": (len(levels), len(dims.SPLITS), n_kinds, n_params, n_params),
        },
        dask="allowed",
        keep_attrs=False,
    )
    param = probe[dims.AUG_PARAM]
    coords = {
        dims.LEVEL: np.array(levels, dtype=object),
        dims.LEVEL_MODULE: (dims.LEVEL, np.array(matrix_level_modules(probe), dtype=object)),
        dims.SPLIT: np.array(dims.SPLITS, dtype=object),
        dims.KIND: np.array(dims.KINDS, dtype=object),
        dims.AUG_PARAM_I: (dims.AUG_PARAM_I, param.values, dict(param.attrs)),
        dims.AUG_PARAM_J: (dims.AUG_PARAM_J, param.values, dict(param.attrs)),
    }
    out = xr.Dataset({dims.MATRIX: matrix, dims.MATRIX_SUBSET: matrix_subset})
    out = out.drop_vars([dims.LABEL], errors="ignore").assign_coords(coords)
    if dims.LAYER_NAME in probe:
        out[dims.LAYER_NAME] = probe[dims.LAYER_NAME]
    return dims.describe(out)


def _check_probe(probe: xr.Dataset) -> None:
    """Raise InputError unless ``probe`` has the variables and sizes variance_matrices needs."""
    for name in (dims.CONFIDENCE, dims.PREDICTION, dims.ACT):
        if name not in probe:
            raise InputError(
                f"the probe dataset has no variable '{name}'; found {sorted(probe.data_vars)}",
                field=name,
                hint="pass a probe dataset as laid out in ml4ml.dims",
            )
    if dims.LABEL not in probe.coords and dims.LABEL not in probe:
        raise InputError("the probe dataset has no 'label' (sample,) coordinate", field=dims.LABEL)
    if probe[dims.LABEL].dims != (dims.SAMPLE,):
        raise InputError(
            f"'label' must have dims ('sample',), found {probe[dims.LABEL].dims}",
            field=dims.LABEL,
        )
    for name, core in (
        (dims.CONFIDENCE, (dims.AUG_PARAM, dims.SAMPLE)),
        (dims.PREDICTION, (dims.AUG_PARAM, dims.SAMPLE)),
        (dims.ACT, (dims.AUG_PARAM, dims.SAMPLE, dims.LAYER, dims.STAT)),
    ):
        missing = [d for d in core if d not in probe[name].dims]
        if missing:
            raise InputError(
                f"'{name}' must have dims (..., {', '.join(core)}); missing {missing}, "
                f"found {probe[name].dims}",
                field=name,
            )
    n_stats = probe.sizes[dims.STAT]
    if n_stats != len(dims.STATS):
        raise InputError(
            f"'act' must hold the {len(dims.STATS)} statistics {dims.STATS}, found {n_stats}",
            field=dims.STAT,
        )
    n_params = probe.sizes[dims.AUG_PARAM]
    if n_params % 2 == 0:
        raise InputError(
            f"the parameter grid must have an odd number of values with the identity at "
            f"the centre; found {n_params} values",
            field=dims.AUG_PARAM,
        )


def _split_subset(confidence, prediction, act, label, *, subset_complement, out_core_sizes):
    """Matrices (..., level, split, kind, P, P) and subset L2 (..., level, split, P, P)."""
    combined = apply_to_blocks(
        _variance_matrices_block,
        confidence,
        prediction,
        act,
        label,
        core_ndims=(2, 2, 4, 1),
        out_core_sizes=out_core_sizes,
        subset_complement=subset_complement,
    )
    return combined[..., :-1, :, :], combined[..., -1, :, :]


# sample groups of the Gram chunks: (split at the centre) x (in the 90% subset or not)
_GROUP_CORRECT_LEFT_OUT, _GROUP_CORRECT_SUBSET = 0, 1
_GROUP_INCORRECT_LEFT_OUT, _GROUP_INCORRECT_SUBSET = 2, 3
_N_GROUPS = 4
# which groups each output Gram sums: rows = group (last row: padding chunk), columns =
# splits all, correct, incorrect of every sample, then of the 90% subset
_GROUP_TO_GRAM = np.array(
    [
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 1, 1, 0],
        [1, 0, 1, 0, 0, 0],
        [1, 0, 1, 1, 0, 1],
        [0, 0, 0, 0, 0, 0],
    ],
    dtype=np.float64,
)


def _chunk_width(n_samples: int) -> int:
    """Samples per Gram chunk: large enough for BLAS, small enough to waste little padding."""
    return int(np.clip(2 ** int(np.log2(max(n_samples, 1) / 32)), 16, 512))


def _chunk_layout(group, width):
    """Gather plan that lays each model's samples out in chunks holding one group each.

    group (B, n) int in 0..3. Returns slot_sample (B, n_slots) sample index of each slot,
    slot_valid (B, n_slots) bool (False for padding), chunk_weight (B, n_chunks, 6): the
    weight of each chunk's Gram in the six output Grams (``_GROUP_TO_GRAM``).
    """
    n_models, n_samples = group.shape
    group_ids = np.arange(_N_GROUPS)
    counts = (group[:, :, None] == group_ids).sum(axis=1)  # (B, 4)
    chunks = -(-counts // width)  # (B, 4)
    chunk_end = np.cumsum(chunks, axis=1)
    chunk_start = chunk_end - chunks
    n_chunks = max(int(chunk_end[:, -1].max()), 1)
    order = np.argsort(group, axis=1, kind="stable")  # samples sorted by group
    sorted_start = np.cumsum(counts, axis=1) - counts  # (B, 4)

    chunk = np.arange(n_chunks)
    chunk_group = (chunk[None, :, None] >= chunk_end[:, None, :]).sum(axis=2)  # (B, C), 4 = pad
    real = chunk_group < _N_GROUPS
    chunk_group_safe = np.minimum(chunk_group, _N_GROUPS - 1)
    rows = np.arange(n_models)[:, None]
    slot = np.arange(n_chunks * width)
    slot_chunk_group = np.repeat(chunk_group_safe, width, axis=1)  # (B, S)
    offset = slot[None, :] - chunk_start[rows, slot_chunk_group] * width  # within the group
    slot_valid = np.repeat(real, width, axis=1) & (offset < counts[rows, slot_chunk_group])
    position = np.clip(sorted_start[rows, slot_chunk_group] + offset, 0, n_samples - 1)
    slot_sample = order[rows, position]
    chunk_weight = _GROUP_TO_GRAM[chunk_group]  # (B, C, 6)
    return slot_sample, slot_valid, chunk_weight


_THREAD = threading.local()


def _scratch(name: str, shape, dtype) -> np.ndarray:
    """A work array of this thread, reused from call to call while its shape holds.

    The block function fills every entry of its large work arrays before reading them; a
    fresh 40-50 MB array per model costs more in page faults than the arithmetic on it
    (about 60% of a CIFAR-sized model's time), so each dask thread keeps its own.
    """
    cache = getattr(_THREAD, "arrays", None)
    if cache is None:
        cache = _THREAD.arrays = {}
    array = cache.get(name)
    if array is None or array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
        array = cache[name] = np.empty(shape, dtype=dtype)
    return array


def _require_finite(**responses) -> None:
    """InputError naming the first response array that holds NaN or infinite values."""
    for name, values in responses.items():
        with np.errstate(over="ignore", invalid="ignore"):
            total = np.sum(values, dtype=np.float64)
        if np.isfinite(total):
            continue  # a NaN or infinity makes the sum one: a finite sum clears the array
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise InputError(f"its probe data hold {bad} NaN or infinite '{name}' values",
                             field=name, hint="probe the model again (ml4ml probe --force)")


def _variance_matrices_block(confidence, prediction, act, label, *, subset_complement):
    """Matrices of one block of models.

    confidence, prediction (..., P, n); act (..., P, n, L, S); label (..., n).
    Returns (..., level, split, 4, P, P): kinds l2, cosine, corrcoef, then the subset's l2.

    Each model's samples are gathered into chunks of one group each (split x subset), every
    response centred per sample, and two extra rows appended (the sample means ``u`` and
    ones), so one batched ``Z @ Z.T`` per chunk gives every Gram, row sum and count the
    three matrix kinds need; chunk Grams are summed into groups with a weight table.
    InputError if a response is NaN or infinite (it would spread through every matrix).
    """
    _require_finite(confidence=confidence, act=act)
    n_params, n_samples = confidence.shape[-2:]
    n_layers, n_stats = act.shape[-2:]
    lead = np.broadcast_shapes(confidence.shape[:-2], prediction.shape[:-2], act.shape[:-4])
    n_models = int(np.prod(lead, dtype=np.int64))
    n_levels = 1 + n_layers * n_stats
    confidence = np.broadcast_to(confidence, lead + (n_params, n_samples))
    confidence = confidence.reshape(n_models, n_params, n_samples)
    prediction = np.broadcast_to(prediction, lead + (n_params, n_samples))
    prediction = prediction.reshape(n_models, n_params, n_samples)
    act = np.broadcast_to(act, lead + (n_params, n_samples, n_layers, n_stats))
    act = act.reshape(n_models, n_params, n_samples, n_layers * n_stats)

    centre = n_params // 2
    label = np.asarray(label).reshape(-1, n_samples)  # (1, n) or (B, n)
    correct = prediction[:, centre, :] == label  # (B, n)
    in_subset = np.ones(n_samples, dtype=np.int64)
    in_subset[subset_complement] = 0
    group = np.where(correct, _GROUP_CORRECT_LEFT_OUT, _GROUP_INCORRECT_LEFT_OUT) + in_subset
    width = _chunk_width(n_samples)
    slot_sample, slot_valid, chunk_weight = _chunk_layout(group, width)
    n_chunks = chunk_weight.shape[1]

    # gather samples into chunk slots; flat row indices avoid a per-model loop
    model = np.arange(n_models)[:, None, None]
    param = np.arange(n_params)[None, :, None]
    flat = (model * n_params + param) * n_samples + slot_sample[:, None, :]  # (B, P, S)
    conf_slots = np.take(confidence.reshape(-1), flat)  # (B, P, S)
    act_slots = np.take(act.reshape(-1, n_layers * n_stats), flat, axis=0, mode="clip",
                        out=_scratch("act_slots", flat.shape + (n_layers * n_stats,),
                                     act.dtype))  # (B, P, S, LS)

    # Z (B, chunk, P + 2, level, width): rows = centred responses, u - shift, ones
    z = _scratch("z", (n_models, n_chunks, n_params + 2, n_levels, width), np.float64)
    responses = z[:, :, :n_params]
    responses[:, :, :, 0] = conf_slots.reshape(n_models, n_params, n_chunks, width).transpose(
        0, 2, 1, 3
    )
    responses[:, :, :, 1:] = act_slots.reshape(
        n_models, n_params, n_chunks, width, n_layers * n_stats
    ).transpose(0, 2, 1, 4, 3)
    valid = slot_valid.reshape(n_models, n_chunks, width)
    sample_mean = responses.mean(axis=2)  # u (B, chunk, level, width)
    # a per-level shift keeps the sums over u - shift small (mean of u over real samples)
    mean_shift = (sample_mean * valid[:, :, None, :]).sum(axis=(1, 3)) / n_samples  # (B, lvl)
    responses -= sample_mean[:, :, None]
    z[:, :, n_params] = sample_mean - mean_shift[:, None, :, None]
    z[:, :, n_params + 1] = 1.0
    # padding slots (only in the last chunk of each group) must add nothing
    padded_model, padded_chunk = np.nonzero(~valid.all(axis=-1))
    z[padded_model, padded_chunk] *= valid[padded_model, padded_chunk][:, None, None, :]

    rows = z.transpose(0, 1, 3, 2, 4)  # (B, chunk, level, P + 2, width), strided rows
    gram_chunks = rows @ np.swapaxes(rows, -1, -2)  # (B, chunk, level, P + 2, P + 2)
    # sum chunk Grams into the six group Grams: (B, 6, C) @ (B, C, level * (P+2)^2)
    grams = np.swapaxes(chunk_weight, -1, -2) @ gram_chunks.reshape(n_models, n_chunks, -1)
    grams = grams.reshape((n_models, 6, n_levels) + gram_chunks.shape[-2:]).swapaxes(1, 2)
    grams = 0.5 * (grams + np.swapaxes(grams, -1, -2))
    gram, gram_subset = grams[:, :, :3], grams[:, :, 3:]

    with np.errstate(invalid="ignore", divide="ignore"):
        l2 = _l2_from_gram(gram[..., :n_params, :n_params], gram[..., -1, -1])
        l2_subset = _l2_from_gram(
            gram_subset[..., :n_params, :n_params], gram_subset[..., -1, -1]
        )
        cosine, corrcoef = _cosine_corrcoef(gram, mean_shift, n_params)
    combined = np.stack([l2, cosine, corrcoef, l2_subset], axis=-3)
    return combined.reshape(lead + combined.shape[1:])


def _l2_from_gram(gram, counts):
    """L2 matrix ``sqrt(G_ii + G_jj - 2 G_ij) / sqrt(n')``: gram (..., P, P), counts (...)."""
    diag = np.diagonal(gram, axis1=-2, axis2=-1)
    squared = diag[..., :, None] + diag[..., None, :] - 2.0 * gram
    np.maximum(squared, 0.0, out=squared)
    return np.sqrt(squared) / np.sqrt(counts)[..., None, None]


def _cosine_corrcoef(gram, mean_shift, n_params):
    """Cosine distance and Pearson correlation between rows, from the augmented Gram.

    gram (B, level, split, P + 2, P + 2) of the rows ``[Y; u - shift; 1]`` over a split's
    samples (``Y = R - u`` centred per sample); mean_shift (B, level). Returns two
    (B, level, split, P, P) arrays.
    """
    p = n_params
    count = gram[..., p + 1, p + 1][..., None]  # n' (B, level, split, 1)
    sum_y = gram[..., :p, p + 1]  # sum_s Y_k
    sum_yu = gram[..., :p, p]  # sum_s Y_k (u_s - shift)
    sum_u = gram[..., p, p + 1][..., None]
    sum_uu = gram[..., p, p][..., None]
    mean_y = sum_y / count
    mean_u = sum_u / count
    cross = sum_yu - mean_u * sum_y  # sum_s (Y_k - mean_y_k)(u_s - mean_u)
    u_scatter = (sum_uu - count * mean_u * mean_u)[..., None]
    # covariance sums: sum_s (R_k - m_k)(R_l - m_l), R = Y + u
    cov = (
        gram[..., :p, :p]
        - count[..., None] * mean_y[..., :, None] * mean_y[..., None, :]
        + cross[..., :, None]
        + cross[..., None, :]
        + u_scatter
    )
    sd = np.sqrt(np.maximum(np.diagonal(cov, axis1=-2, axis2=-1), 0.0))
    corrcoef = np.clip(cov / (sd[..., :, None] * sd[..., None, :]), -1.0, 1.0)
    row_mean = mean_y + mean_u + mean_shift[:, :, None, None]  # m_k
    raw = cov + count[..., None] * row_mean[..., :, None] * row_mean[..., None, :]
    norm = np.sqrt(np.maximum(np.diagonal(raw, axis1=-2, axis2=-1), 0.0))
    cosine = 1.0 - np.clip(raw / (norm[..., :, None] * norm[..., None, :]), -1.0, 1.0)
    return cosine, corrcoef
