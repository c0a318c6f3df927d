"""Response measures: invariance measured on the responses themselves, lazily on dask.

The second family beside the matrix measures (``measures.py``): tmeasures' ``tv``, ``sv``,
``nv``, ``anova`` and ``goodfellow``, the distances to the orbit centroid ``geed_kl``,
``geed_l2``, ``geed_cos`` (Kvinge et al.), ``consistency`` and the finite-difference Lie
derivative ``lee_fd`` (Gruver et al.), plus the user's (``register_response_measure``).
Every measure of a block of models comes from one read of the block in one fused kernel
(``response_kernels``); dask-backed inputs give one blockwise task per input chunk.
Definitions: docs/measures.md, "Response measures".
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import numpy as np
import xarray as xr

from ml4ml import dims
from ml4ml.cluster import keep_freed_memory_once
from ml4ml.errors import InputError
from ml4ml.measure.matrices import apply_to_blocks
from ml4ml.measure.response_kernels import (
    RESPONSE_MEASURES,
    ResponseBlock,
    anova_critical_value,
    builtin_measures,
    goodfellow_z,
)

__all__ = [
    "RESPONSE_MEASURES",
    "response_measures",
    "register_response_measure",
    "unregister_response_measure",
    "registered_response_measures",
    "user_response_measures",
    "response_plan",
    "responses_block",
]

# keywords a registered function may declare to receive them
USER_KEYWORDS = ("identity_index", "aug_param", "predictions")

# name -> (function of a (..., aug_param, sample, unit) float64 block returning (...),
#          the USER_KEYWORDS its signature accepts)
_REGISTRY: dict[str, tuple[Callable[..., np.ndarray], tuple[str, ...]]] = {}


def register_response_measure(name: str, func: Callable[..., np.ndarray]) -> None:
    """Add a measure of the responses computed beside the built-in response measures.

    Parameters
    ----------
    name : the ``response_measure`` label; must not be a built-in or registered name.
    func : maps a read-only float64 block ``(..., aug_param, sample, unit)`` to ``(...)``.
        It is called once per block with whatever leading dims the block has, so it must
        reduce the last three axes only. If its signature names them it also gets
        ``identity_index`` (int), ``aug_param`` (the grid values (aug_param,), or None) and
        ``predictions`` (int block (..., aug_param, sample), or None). Define it in an
        importable module (not a lambda in ``__main__``) for a dask cluster's workers.
    """
    if not isinstance(name, str) or not name:
        raise InputError(f"a response measure name must be a non-empty string; got {name!r}",
                         field="name")
    if name in RESPONSE_MEASURES:
        raise InputError(f"{name!r} is a built-in response measure and cannot be replaced",
                         field="name", hint="register a variant under a new name")
    if name in _REGISTRY:
        raise InputError(f"a response measure named {name!r} is already registered",
                         field="name", hint="call unregister_response_measure first")
    if not callable(func):
        raise InputError(f"func must be callable; got {type(func).__name__}", field="func")
    _REGISTRY[name] = (func, _accepted_keywords(func))


def unregister_response_measure(name: str) -> None:
    """Remove a measure added with ``register_response_measure``."""
    if name not in _REGISTRY:
        raise InputError(f"no registered response measure named {name!r}; registered: "
                         f"{', '.join(_REGISTRY) or 'none'}", field="name")
    del _REGISTRY[name]


def registered_response_measures() -> tuple[str, ...]:
    """Every response measure: the built-in ones, then the user's in registration order."""
    return RESPONSE_MEASURES + tuple(_REGISTRY)


def user_response_measures() -> tuple[str, ...]:
    """Names added with ``register_response_measure``, in registration order."""
    return tuple(_REGISTRY)


def _accepted_keywords(func) -> tuple[str, ...]:
    """The ``USER_KEYWORDS`` that ``func`` takes by name (all of them with ``**kwargs``)."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # builtins and ufuncs without a signature
        return ()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return USER_KEYWORDS
    names = {p.name for p in parameters
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return tuple(key for key in USER_KEYWORDS if key in names)


def _selected(names) -> tuple[list[str], bool]:
    """The validated measure names and whether the caller named them (None: every one)."""
    known = list(registered_response_measures())
    if names is None:
        return known, False
    names = [names] if isinstance(names, str) else list(names)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InputError(f"unknown response measure(s) {', '.join(map(str, unknown))}; known: "
                         f"{', '.join(known)}", field="names")
    if len(set(names)) != len(names):
        raise InputError(f"names lists a response measure twice: {', '.join(names)}",
                         field="names")
    if not names:
        raise InputError("names is empty; pass None for every response measure", field="names")
    return names, True


def _check_inputs(responses, predictions, identity_index) -> int:
    """Validate the arrays' dims and the identity's position; returns the grid size."""
    core = (dims.AUG_PARAM, dims.SAMPLE, dims.UNIT)
    if not isinstance(responses, xr.DataArray):
        raise InputError(f"responses must be an xarray.DataArray; got {type(responses).__name__}",
                         field="responses")
    missing = [name for name in core if name not in responses.dims]
    if missing:
        hint = ("rename the class, stat or channel dim to unit, e.g. "
                "probe['prob'].rename({'class': 'unit'})" if dims.UNIT in missing else None)
        raise InputError(f"responses lack the dim(s) {', '.join(missing)}; they have "
                         f"{', '.join(map(str, responses.dims))}", field="responses", hint=hint)
    if predictions is not None:
        if not isinstance(predictions, xr.DataArray):
            raise InputError(f"predictions must be an xarray.DataArray; got "
                             f"{type(predictions).__name__}", field="predictions")
        absent = [name for name in core[:2] if name not in predictions.dims]
        if absent or dims.UNIT in predictions.dims:
            raise InputError(f"predictions must have dims (..., aug_param, sample) and no unit "
                             f"dim; they have {', '.join(map(str, predictions.dims))}",
                             field="predictions")
    n_params = responses.sizes[dims.AUG_PARAM]
    if isinstance(identity_index, bool) or not isinstance(identity_index, (int, np.integer)) \
            or not 0 <= identity_index < n_params:
        raise InputError(f"identity_index must be an integer position on aug_param, 0 to "
                         f"{n_params - 1}; got {identity_index!r}", field="identity_index")
    return n_params


def central_spacing(responses, identity_index: int, grid_step) -> float | None:
    """``p[c+1] - p[c-1]``, the central difference's denominator; None if there is none."""
    n_params = responses.sizes[dims.AUG_PARAM]
    if not 0 < identity_index < n_params - 1:
        return None
    if grid_step is not None:
        step = float(grid_step)
        if not np.isfinite(step) or step <= 0:
            raise InputError(f"grid_step must be a positive number; got {grid_step!r}",
                             field="grid_step")
        return 2.0 * step
    if dims.AUG_PARAM not in responses.coords:
        return None
    grid = np.asarray(responses[dims.AUG_PARAM].values, dtype=np.float64)
    spacing = float(grid[identity_index + 1] - grid[identity_index - 1])
    return spacing if np.isfinite(spacing) and spacing > 0 else None


def response_measures(responses: xr.DataArray, names=None, *, identity_index: int,
                      predictions: xr.DataArray | None = None, grid_step: float | None = None,
                      probabilities: bool | None = None, per_unit: bool = False) -> xr.DataArray:
    """Response measures of every model and level, lazily.

    Parameters
    ----------
    responses : DataArray (..., aug_param, sample, unit)
        Leading dims (mid, level, ...) any; ``unit`` is a softmax class for the
        probabilities, a statistic or channel for a layer. Any float dtype (computed in
        float64); dask-backed stays lazy, one task per chunk of the leading dims.
    names : measure names in output order; default every built-in then every registered.
    identity_index : position of the identity on ``aug_param``.
    predictions : DataArray (..., aug_param, sample) of predicted classes, for
        ``consistency`` (NaN without it unless named, then an error).
    grid_step : one grid step in the transform's units, for ``lee_fd``; default the
        ``aug_param`` coordinate's ``p[c+1] - p[c-1]`` halved.
    probabilities : whether the units are probabilities (``geed_kl`` is NaN otherwise);
        default: whether the array is named ``prob``.
    per_unit : give every measure per unit, (..., unit, response_measure), instead of the
        average over units (docs/measures.md says what each one is per unit).

    Returns
    -------
    DataArray ``response_value`` (..., response_measure) float64, or (..., unit,
    response_measure) with ``per_unit``; coordinate ``response_measure`` (names).
    """
    names, named = _selected(names)
    n_params = _check_inputs(responses, predictions, identity_index)
    if probabilities is None:
        probabilities = responses.name == dims.PROB
    spacing = central_spacing(responses, identity_index, grid_step)
    n_samples, n_units = responses.sizes[dims.SAMPLE], responses.sizes[dims.UNIT]
    grid = (np.asarray(responses[dims.AUG_PARAM].values, dtype=np.float64)
            if dims.AUG_PARAM in responses.coords else None)
    kwargs = response_plan(names, n_params=n_params, n_samples=n_samples, n_units=n_units,
                           identity_index=identity_index, spacing=spacing, grid=grid,
                           predictions=predictions is not None, probabilities=probabilities,
                           per_unit=per_unit, named=named)
    core = [dims.AUG_PARAM, dims.SAMPLE, dims.UNIT]
    args, core_dims = [responses.transpose(..., *core)], [core]
    if predictions is not None:
        args.append(predictions.transpose(..., dims.AUG_PARAM, dims.SAMPLE))
        core_dims.append(core[:2])
    out_core = [dims.UNIT, dims.RESPONSE_MEASURE] if per_unit else [dims.RESPONSE_MEASURE]
    kwargs = {"core_ndims": tuple(len(c) for c in core_dims), **kwargs}
    if predictions is not None:
        try:
            xr.align(responses, predictions, join="exact")
        except ValueError as exc:
            raise InputError(f"responses and predictions do not line up: {exc}"
                             .splitlines()[0], field="predictions") from exc
    value = xr.apply_ufunc(
        functools.partial(apply_to_blocks, _responses_block),
        *args,
        input_core_dims=core_dims,
        output_core_dims=[out_core],
        kwargs=kwargs,
        dask="allowed",
        join="exact",
        keep_attrs=False,
    )
    value = value.assign_coords({dims.RESPONSE_MEASURE: np.array(names, dtype=object)})
    value.name = dims.RESPONSE_VALUE
    long_name, description = dims.DESCRIPTIONS[dims.RESPONSE_VALUE]
    value.attrs.update(long_name=long_name, description=description)
    value[dims.RESPONSE_MEASURE].attrs.update(
        zip(("long_name", "description"), dims.DESCRIPTIONS[dims.RESPONSE_MEASURE]))
    return value


def response_plan(names, *, n_params: int, n_samples: int, n_units: int, identity_index: int,
                  spacing, grid, predictions: bool, probabilities: bool, per_unit: bool = False,
                  named: bool = False, undefined=()) -> dict:
    """The settings of ``responses_block`` for blocks of these sizes (made once, on the
    driver: they carry the registered functions, so a cluster's workers need no registry).

    spacing : ``p[c+1] - p[c-1]`` or None (``lee_fd`` is NaN then); predictions : whether
    the blocks come with predictions (``consistency`` is NaN otherwise); undefined : more
    names that are NaN by definition here. named : the caller chose ``names`` (a measure
    that cannot be computed is then an InputError, not NaN).
    """
    unavailable = {
        "consistency": (not predictions, "it needs predictions=(..., aug_param, sample)"),
        "lee_fd": (spacing is None, "it needs a grid value on each side of the identity and "
                   "grid_step= or an increasing aug_param coordinate"),
        "geed_kl": (not probabilities, "it is defined for probabilities only "
                    "(pass probabilities=True)"),
    }
    for name, (missing, why) in unavailable.items():
        if missing and named and name in names:
            raise InputError(f"response measure {name!r} cannot be computed here: {why}",
                             field="names")
    nan_names = tuple(name for name, (missing, _) in unavailable.items() if missing)
    nan_names += tuple(name for name in undefined if name in names and name not in nan_names)
    return {
        "out_core_sizes": (n_units, len(names)) if per_unit else (len(names),),
        "names": tuple(names),
        "user": {name: _REGISTRY[name] for name in names if name in _REGISTRY},
        "nan_names": nan_names,
        "identity_index": int(identity_index),
        "spacing": spacing,
        "grid": grid,
        "anova_critical": anova_critical_value(n_params, n_samples, n_units),
        "z": goodfellow_z(),
        "per_unit": bool(per_unit),
    }


def responses_block(responses, predictions=None, *, plan: dict) -> np.ndarray:
    """Every measure of ``plan`` (``response_plan``) of a numpy block (lead..., P, S, U)
    and its predictions (lead..., P, S) or None: (lead..., [U,] len(names)) float64."""
    kwargs = {key: value for key, value in plan.items() if key != "out_core_sizes"}
    return _responses_block(responses, predictions, **kwargs)


def _responses_block(responses, predictions=None, *, names, user, nan_names, identity_index,
                     spacing, grid, anova_critical, z, per_unit):
    """Measures (lead..., [U,] len(names)) of a block (lead..., P, S, U), in one read."""
    keep_freed_memory_once()  # the kernel's temporaries: reused, not mapped afresh per block
    p, s, u = responses.shape[-3:]
    lead = responses.shape[:-3]
    if predictions is not None:
        lead = np.broadcast_shapes(lead, predictions.shape[:-2])
        predictions = np.broadcast_to(predictions, lead + (p, s)).reshape(-1, p, s)
    x = np.array(responses, dtype=np.float64, order="C")  # one copy, whatever the layout
    if x.shape[:-3] != lead:
        x = np.broadcast_to(x, lead + (p, s, u))
    x = x.reshape(-1, p, s, u)
    x.flags.writeable = False  # shared by every measure; user functions must not write it
    block = ResponseBlock(x, predictions, identity_index=identity_index, spacing=spacing,
                          anova_critical=anova_critical, z=z)
    out_shape = (x.shape[0], u) if per_unit else (x.shape[0],)
    builtin = [name for name in names if name not in user and name not in nan_names]
    with np.errstate(invalid="ignore", divide="ignore"):  # undefined values are NaN / inf
        values = builtin_measures(block, builtin, per_unit=per_unit)
        for name, (func, keywords) in user.items():
            values[name] = _user_measure(name, func, keywords, block, lead, per_unit, grid)
    for name in nan_names:
        values[name] = np.full(out_shape, np.nan)
    out = np.stack([values[name] for name in names], axis=-1)
    return out.reshape(lead + out.shape[1:])


def _user_measure(name, func, keywords, block: ResponseBlock, lead, per_unit, grid):
    """A registered measure of the block: (B,) or per unit (B, U)."""
    x = block.x
    p, s, u = x.shape[1:]
    if per_unit:  # every unit alone: (lead..., U, P, S, 1)
        x = np.moveaxis(x, -1, 1)[..., None]
        lead = lead + (u,)
    x = x.reshape(lead + x.shape[-3:])
    given = {"identity_index": block.identity_index, "aug_param": grid,
             "predictions": None}
    if block.predictions is not None:
        predictions = block.predictions
        if per_unit:  # the same predictions for every unit
            predictions = np.broadcast_to(predictions[:, None], (predictions.shape[0], u, p, s))
        given["predictions"] = predictions.reshape(lead + (p, s))
    result = np.asarray(func(x, **{key: given[key] for key in keywords}), dtype=np.float64)
    if result.shape != lead:
        raise ValueError(f"response measure {name!r} returned shape {result.shape} for a block "
                         f"of shape {x.shape}; it must reduce the last three axes to {lead}")
    return result.reshape((-1, u) if per_unit else (-1,))
