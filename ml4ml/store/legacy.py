"""Read the reference implementation's per-model result files into a probe dataset.

The reference writes, per model, two float64 arrays (plain ``.npy`` or ``.npy.gz``):

- results (CONF), shape (P, n, 5), columns ``idx, label, prediction, confidence, param``;
- act (CONV), shape (P, n, L, 13), columns ``idx, label, prediction, layer_number``, the
  eight statistics in ``ml4ml.dims.STATS`` order, then ``param``.

Row ``k`` of axis 0 is one transformation parameter; the centre row is the identity.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import xarray as xr

from ml4ml import dims
from ml4ml.errors import InputError

__all__ = ["read_legacy", "IDENTITY", "UNITS"]

# identity parameter and units of each transformation family the reference tests
IDENTITY = {"rotation": 0.0, "scaling": 1.0, "brightness": 1.0}
UNITS = {"rotation": "degrees", "scaling": "factor", "brightness": "factor"}

RESULTS_COLUMNS = ("idx", "label", "prediction", "confidence", "param")
ACT_COLUMNS = ("idx", "label", "prediction", "layer_number", *dims.STATS, "param")


def read_legacy(results_path, act_path, *, transform: str = "rotation") -> xr.Dataset:
    """One model's probe dataset from the reference's results and act files.

    Parameters
    ----------
    results_path : path to the (P, n, 5) results file (``.npy`` or ``.npy.gz``).
    act_path : path to the (P, n, L, 13) activation-statistics file.
    transform : "rotation" (identity 0, degrees), "scaling" or "brightness" (identity 1.0).

    Returns
    -------
    xr.Dataset
        ``prediction`` (aug_param, sample) int64, ``confidence`` (aug_param, sample)
        float64, ``act`` (aug_param, sample, layer, stat) float64, ``layer_name`` (layer,)
        e.g. "conv8"; coords ``aug_param`` (attrs units, transform), ``sample``, ``label``
        (sample,), ``stat`` and ``class`` (0 .. the largest label or prediction; the files
        do not say how many classes the model has). No ``mid`` dim.

    Raises
    ------
    InputError
        When either file is unreadable, has the wrong shape, contains NaNs, or the files
        disagree, or the parameter grid is not odd, strictly ascending and centred on the
        identity.
    """
    if transform not in IDENTITY:
        raise InputError(
            f"unknown transform {transform!r}; expected one of {sorted(IDENTITY)}",
            field="transform",
        )
    results = _load(results_path)
    act = _load(act_path)
    _check_shape(results, 3, len(RESULTS_COLUMNS), results_path, "(P, n, 5)")
    _check_shape(act, 4, len(ACT_COLUMNS), act_path, "(P, n, L, 13)")
    for array, path in ((results, results_path), (act, act_path)):
        if np.isnan(array).any():
            where = np.argwhere(np.isnan(array))[0]
            raise InputError(
                f"contains NaN values (first at index {tuple(int(i) for i in where)})",
                file=path,
                field="values",
                hint="re-run the probe for this model",
            )
    n_params, n_samples = results.shape[:2]
    if act.shape[:2] != (n_params, n_samples):
        raise InputError(
            f"has {act.shape[0]} parameters x {act.shape[1]} samples but the results file "
            f"{results_path} has {n_params} x {n_samples}; both must come from one probe run",
            file=act_path,
            field="shape",
        )
    params = _check_grid(results, act, results_path, act_path, transform)
    sample_idx, labels, predictions = _check_agreement(results, act, results_path, act_path)
    layer_numbers = _check_layers(act, act_path)

    n_classes = max(int(max(labels.max(), predictions.max())) + 1, 2)
    param_attrs = {"units": UNITS[transform], "transform": transform}
    layer_name = np.array([f"conv{number}" for number in layer_numbers], dtype=object)
    return xr.Dataset(
        {
            dims.PREDICTION: ((dims.AUG_PARAM, dims.SAMPLE), predictions),
            dims.CONFIDENCE: ((dims.AUG_PARAM, dims.SAMPLE), results[:, :, 3].copy()),
            dims.ACT: (
                (dims.AUG_PARAM, dims.SAMPLE, dims.LAYER, dims.STAT),
                act[:, :, :, 4 : 4 + len(dims.STATS)].copy(),
            ),
            dims.LAYER_NAME: ((dims.LAYER,), layer_name),
        },
        coords={
            dims.AUG_PARAM: (dims.AUG_PARAM, params, param_attrs),
            dims.SAMPLE: (dims.SAMPLE, sample_idx),
            dims.LABEL: (dims.SAMPLE, labels),
            dims.STAT: (dims.STAT, np.array(dims.STATS, dtype=object)),
            dims.CLASS: (dims.CLASS, np.arange(n_classes, dtype=np.int64)),
        },
        attrs={"source": f"reference files {Path(results_path).name}, {Path(act_path).name}"},
    )


def _load(path) -> np.ndarray:
    """The float64 array stored in a ``.npy`` or ``.npy.gz`` file."""
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                array = np.load(stream, allow_pickle=False)
        else:
            array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except (OSError, ValueError, EOFError) as error:
        raise InputError(
            f"cannot be read as a .npy array ({error})",
            file=path,
            hint="expected the reference's .npy or gzip-compressed .npy.gz files",
        ) from None
    if not np.issubdtype(array.dtype, np.number):
        raise InputError(f"holds dtype {array.dtype}; expected float64 numbers", file=path)
    return np.asarray(array, dtype=np.float64)


def _check_shape(array, ndim, n_columns, path, layout) -> None:
    """Raise unless ``array`` has ``ndim`` axes and ``n_columns`` in the last."""
    if array.ndim != ndim or array.shape[-1] != n_columns:
        raise InputError(
            f"has shape {array.shape}; expected {layout} with {ndim} axes and "
            f"{n_columns} columns in the last",
            file=path,
            field="shape",
        )
    if min(array.shape) == 0:
        raise InputError(f"has shape {array.shape}; expected no empty axis", file=path)


def _check_grid(results, act, results_path, act_path, transform) -> np.ndarray:
    """The parameter grid (P,), checked constant per row, ascending, odd, identity-centred."""
    params = results[:, 0, -1]
    for array, path in ((results, results_path), (act, act_path)):
        per_row = array[..., -1].reshape(array.shape[0], -1)
        bad_rows = np.flatnonzero((per_row != per_row[:, :1]).any(axis=1))
        if bad_rows.size:
            row = int(bad_rows[0])
            raise InputError(
                f"row {row} mixes parameters {np.unique(per_row[row])[:5].tolist()}; every "
                f"sample of a row must share one parameter",
                file=path,
                field="param",
            )
    act_params = act[:, 0, 0, -1]
    if not np.array_equal(params, act_params):
        raise InputError(
            f"has parameters {act_params.tolist()} but the results file {results_path} "
            f"has {params.tolist()}",
            file=act_path,
            field="param",
        )
    if params.size > 1 and not (np.diff(params) > 0).all():
        raise InputError(
            f"parameter grid {params.tolist()} is not strictly ascending",
            file=results_path,
            field="param",
        )
    if params.size % 2 == 0:
        raise InputError(
            f"has {params.size} parameters; expected an odd number with the identity at the "
            f"centre",
            file=results_path,
            field="param",
        )
    centre = params[params.size // 2]
    if not np.isclose(centre, IDENTITY[transform], rtol=0.0, atol=1e-9):
        raise InputError(
            f"the centre parameter is {centre}; expected the {transform} identity "
            f"{IDENTITY[transform]}",
            file=results_path,
            field="param",
            hint="pass the right transform=, or a grid symmetric about the identity",
        )
    return params.copy()


def _integer_column(values, path, field) -> np.ndarray:
    """``values`` as int64, raising if any is not a whole number."""
    as_int = np.rint(values).astype(np.int64)
    if not np.array_equal(as_int, values):
        raise InputError("holds non-integer values; expected whole numbers", file=path, field=field)
    return as_int


def _check_agreement(results, act, results_path, act_path):
    """Sample ids (n,), labels (n,) and predictions (P, n), checked across rows and files."""
    for column, field in ((0, "idx"), (1, "label")):
        values = results[:, :, column]
        if not (values == values[:1]).all():
            row = int(np.flatnonzero((values != values[:1]).any(axis=1))[0])
            raise InputError(
                f"row {row} lists different {field} values than row 0; every parameter row "
                f"must hold the same samples in the same order",
                file=results_path,
                field=field,
            )
    for column, field in ((0, "idx"), (1, "label"), (2, "prediction")):
        expected = results[:, :, column][:, :, None]
        found = act[:, :, :, column]
        if not (found == expected).all():
            where = tuple(int(i) for i in np.argwhere(found != expected)[0])
            raise InputError(
                f"{field} at (param, sample, layer) {where} is {found[where]} but the results "
                f"file {results_path} has {expected[where[:2]][0]}",
                file=act_path,
                field=field,
            )
    sample_idx = _integer_column(results[0, :, 0], results_path, "idx")
    if np.unique(sample_idx).size != sample_idx.size:
        raise InputError(
            "repeats sample ids; expected each sample once", file=results_path, field="idx"
        )
    labels = _integer_column(results[0, :, 1], results_path, "label")
    predictions = _integer_column(results[:, :, 2], results_path, "prediction")
    return sample_idx, labels, predictions


def _check_layers(act, act_path) -> list[int]:
    """Layer numbers (L,), checked constant over rows and samples."""
    numbers = act[:, :, :, 3]
    if not (numbers == numbers[:1, :1]).all():
        raise InputError(
            "layer_number differs between rows or samples for one layer position",
            file=act_path,
            field="layer_number",
        )
    return _integer_column(numbers[0, 0], act_path, "layer_number").tolist()
