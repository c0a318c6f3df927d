"""read_legacy: the reference's results/act files into one model's probe dataset."""

from __future__ import annotations

import gzip
import io
import json

import numpy as np
import pytest

import golden
from ml4ml import dims
from ml4ml.errors import InputError
from ml4ml.store.legacy import read_legacy



def _reference_arrays(params=(-2.0, -1.0, 0.0, 1.0, 2.0), n_samples=4, layers=(8, 9), seed=0):
    """Results (P, n, 5) and act (P, n, L, 13) arrays laid out as the reference writes them."""
    rng = np.random.default_rng(seed)
    n_params = len(params)
    idx = np.arange(10, 10 + n_samples, dtype=float)
    labels = rng.integers(0, 3, n_samples).astype(float)
    predictions = rng.integers(0, 3, (n_params, n_samples)).astype(float)
    confidence = rng.random((n_params, n_samples))
    param = np.broadcast_to(np.asarray(params, float)[:, None], (n_params, n_samples))
    results = np.stack(
        [np.broadcast_to(idx, param.shape), np.broadcast_to(labels, param.shape), predictions,
         confidence, param],
        axis=-1,
    )
    stats = rng.random((n_params, n_samples, len(layers), len(dims.STATS)))
    grid = param[:, :, None]
    shape3 = (n_params, n_samples, len(layers))
    act = np.concatenate(
        [
            np.broadcast_to(idx[None, :, None], shape3)[..., None],
            np.broadcast_to(labels[None, :, None], shape3)[..., None],
            np.broadcast_to(predictions[:, :, None], shape3)[..., None],
            np.broadcast_to(np.asarray(layers, float), shape3)[..., None],
            stats,
            np.broadcast_to(grid, shape3)[..., None],
        ],
        axis=-1,
    )
    return np.ascontiguousarray(results), np.ascontiguousarray(act)


def _write(tmp_path, results, act, compress=False):
    """Write both arrays as .npy (or .npy.gz); return their paths."""
    paths = []
    for name, array in (("results", results), ("act", act)):
        if compress:
            path = tmp_path / f"{name}.npy.gz"
            with gzip.open(path, "wb") as stream:
                np.save(stream, array)
        else:
            path = tmp_path / f"{name}.npy"
            np.save(path, array)
        paths.append(path)
    return paths


@pytest.mark.parametrize("compress", [False, True])
def test_reads_layout_values_and_dtypes(tmp_path, compress):
    results, act = _reference_arrays()
    probe = read_legacy(*_write(tmp_path, results, act, compress))
    assert dims.MID not in probe.dims
    assert dims.PROB not in probe
    assert probe[dims.PREDICTION].dims == (dims.AUG_PARAM, dims.SAMPLE)
    assert probe[dims.PREDICTION].dtype == np.int64
    assert probe[dims.CONFIDENCE].dtype == np.float64
    assert probe[dims.ACT].dims == (dims.AUG_PARAM, dims.SAMPLE, dims.LAYER, dims.STAT)
    assert probe[dims.ACT].dtype == np.float64
    np.testing.assert_array_equal(probe[dims.AUG_PARAM].values, [-2.0, -1.0, 0.0, 1.0, 2.0])
    assert probe[dims.AUG_PARAM].dtype == np.float64
    assert probe[dims.AUG_PARAM].attrs == {"units": "degrees", "transform": "rotation"}
    np.testing.assert_array_equal(probe[dims.SAMPLE].values, [10, 11, 12, 13])
    assert probe[dims.SAMPLE].dtype == np.int64
    np.testing.assert_array_equal(probe[dims.LABEL].values, results[0, :, 1].astype(np.int64))
    assert probe[dims.LABEL].dtype == np.int64
    assert list(probe[dims.STAT].values) == list(dims.STATS)
    assert list(probe[dims.LAYER_NAME].values) == ["conv8", "conv9"]
    assert probe[dims.LAYER_NAME].dtype == object
    np.testing.assert_array_equal(probe[dims.PREDICTION].values, results[:, :, 2].astype(np.int64))
    np.testing.assert_array_equal(probe[dims.CONFIDENCE].values, results[:, :, 3])
    # stats in the file's column order: column 4 + i is dims.STATS[i]
    np.testing.assert_array_equal(
        probe[dims.ACT].sel({dims.STAT: "max_mean"}).values, act[:, :, :, 4 + 6]
    )
    np.testing.assert_array_equal(probe[dims.ACT].values, act[:, :, :, 4:12])


def test_scaling_units_and_identity(tmp_path):
    results, act = _reference_arrays(params=(0.8, 0.9, 1.0, 1.1, 1.2))
    probe = read_legacy(*_write(tmp_path, results, act), transform="scaling")
    assert probe[dims.AUG_PARAM].attrs == {"units": "factor", "transform": "scaling"}
    np.testing.assert_allclose(probe[dims.AUG_PARAM].values, [0.8, 0.9, 1.0, 1.1, 1.2])


@pytest.mark.parametrize("case", golden.cases())
def test_reads_golden_case(case):
    """The reference's own files of every golden case, against their raw columns."""
    expected = json.loads(golden.expected(case).read_text())
    results = np.load(io.BytesIO(gzip.open(golden.results(case)).read()))
    act = np.load(io.BytesIO(gzip.open(golden.act(case)).read()))
    probe = read_legacy(golden.results(case), golden.act(case))
    assert dict(probe.sizes) == {
        dims.AUG_PARAM: expected["n_params"], dims.SAMPLE: expected["n_samples"],
        dims.LAYER: 2, dims.STAT: 8, dims.CLASS: 10
    }
    np.testing.assert_array_equal(probe[dims.CLASS].values, np.arange(10))
    np.testing.assert_array_equal(probe[dims.AUG_PARAM].values, results[:, 0, 4])
    assert list(probe[dims.LAYER_NAME].values) == [f"conv{int(n)}" for n in act[0, 0, :, 3]]
    np.testing.assert_array_equal(probe[dims.CONFIDENCE].values, results[..., 3])
    np.testing.assert_array_equal(probe[dims.ACT].values, act[..., 4:12])


def _raises(tmp_path, results, act, match, field, which="results", **kwargs):
    """Assert read_legacy raises InputError matching ``match`` naming ``field`` and the file."""
    paths = _write(tmp_path, results, act)
    with pytest.raises(InputError, match=match) as info:
        read_legacy(*paths, **kwargs)
    assert info.value.field == field
    if which is not None:
        assert info.value.file == str(paths[0] if which == "results" else paths[1])


def test_error_results_wrong_ndim(tmp_path):
    results, act = _reference_arrays()
    _raises(tmp_path, results[0], act, r"has shape \(4, 5\); expected \(P, n, 5\)", "shape")


def test_error_act_wrong_columns(tmp_path):
    results, act = _reference_arrays()
    _raises(tmp_path, results, act[..., :12], r"expected \(P, n, L, 13\)", "shape", "act")


def test_error_files_disagree_on_params_count(tmp_path):
    results, act = _reference_arrays()
    _raises(tmp_path, results, act[:3], r"has 3 parameters x 4 samples .* has 5 x 4", "shape",
            "act")


def test_error_files_disagree_on_samples_count(tmp_path):
    results, act = _reference_arrays()
    _raises(tmp_path, results, act[:, :3], r"has 5 parameters x 3 samples", "shape", "act")


@pytest.mark.parametrize("column, field", [(0, "idx"), (1, "label"), (2, "prediction")])
def test_error_files_disagree_on_samples(tmp_path, column, field):
    results, act = _reference_arrays()
    act[1, 2, 0, column] += 1
    match = rf"{field} at \(param, sample, layer\) \(1, 2, 0\)"
    _raises(tmp_path, results, act, match, field, "act")


def test_error_rows_list_different_samples(tmp_path):
    results, act = _reference_arrays()
    results[3, :, 0] = results[3, ::-1, 0]
    act[3, :, :, 0] = act[3, ::-1, :, 0]
    _raises(tmp_path, results, act, r"row 3 lists different idx values", "idx")


def test_error_param_differs_within_row(tmp_path):
    results, act = _reference_arrays()
    results[1, 3, 4] = -1.5
    _raises(tmp_path, results, act, r"row 1 mixes parameters", "param")


def test_error_grid_not_ascending(tmp_path):
    results, act = _reference_arrays(params=(-2.0, -1.0, 0.0, 2.0, 1.0))
    _raises(tmp_path, results, act, r"is not strictly ascending", "param")


def test_error_even_grid(tmp_path):
    results, act = _reference_arrays(params=(-1.0, 0.0, 1.0, 2.0))
    _raises(tmp_path, results, act, r"has 4 parameters; expected an odd number", "param")


def test_error_no_identity_at_centre(tmp_path):
    results, act = _reference_arrays(params=(-1.0, 0.5, 1.0, 2.0, 3.0))
    _raises(tmp_path, results, act, r"centre parameter is 1.0; expected the rotation identity 0.0",
            "param")


def test_error_scaling_identity(tmp_path):
    results, act = _reference_arrays()
    _raises(tmp_path, results, act, r"expected the scaling identity 1.0", "param",
            transform="scaling")


def test_error_nan(tmp_path):
    results, act = _reference_arrays()
    act[2, 1, 1, 6] = np.nan
    _raises(tmp_path, results, act, r"contains NaN values \(first at index \(2, 1, 1, 6\)\)",
            "values", "act")


def test_error_unknown_transform(tmp_path):
    results, act = _reference_arrays()
    _raises(tmp_path, results, act, r"unknown transform 'shear'", "transform", None,
            transform="shear")


def test_error_missing_file(tmp_path):
    results, act = _reference_arrays()
    paths = _write(tmp_path, results, act)
    with pytest.raises(InputError, match="file not found") as info:
        read_legacy(tmp_path / "absent.npy", paths[1])
    assert info.value.file == str(tmp_path / "absent.npy")


def test_error_not_npy(tmp_path):
    bad = tmp_path / "results.npy"
    bad.write_text("not an array")
    act = tmp_path / "act.npy"
    np.save(act, _reference_arrays()[1])
    with pytest.raises(InputError, match=r"cannot be read as a \.npy array"):
        read_legacy(bad, act)
