"""variance_matrices: checked against plain numpy loops, lazy on dask, any leading dims."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from ml4ml import dims
from ml4ml.errors import InputError
from ml4ml.measure.matrices import (matrix_level_modules, matrix_levels, subset_indices,
                                    variance_matrices)
from ml4ml.measure.measures import measure_database


def raise_if_dask_computes(*args, **kwargs):
    """A dask scheduler that fails on any compute (as xarray's raise_if_dask_computes)."""
    raise RuntimeError("dask computed something: the function under test must stay lazy")


def make_probe(n_models=2, n_params=5, n_samples=150, n_layers=2, seed=0, offset=0.0):
    """A numpy-backed probe dataset (mid, aug_param, sample, ...) with mixed splits."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n_samples)
    right = rng.random((n_models, n_params, n_samples)) < 0.7
    prediction = np.where(right, labels, (labels + 1) % 3)
    confidence = rng.random((n_models, n_params, n_samples))
    act = offset + rng.gamma(2.0, 1.0, (n_models, n_params, n_samples, n_layers, len(dims.STATS)))
    return xr.Dataset(
        {
            dims.PREDICTION: ((dims.MID, dims.AUG_PARAM, dims.SAMPLE), prediction),
            dims.CONFIDENCE: ((dims.MID, dims.AUG_PARAM, dims.SAMPLE), confidence),
            dims.ACT: ((dims.MID, dims.AUG_PARAM, dims.SAMPLE, dims.LAYER, dims.STAT), act),
            dims.LAYER_NAME: (
                (dims.MID, dims.LAYER),
                np.array([[f"conv{i}" for i in range(n_layers)]] * n_models, dtype=object),
            ),
        },
        coords={
            dims.MID: np.array([f"m{i}" for i in range(n_models)], dtype=object),
            dims.AUG_PARAM: np.linspace(-1.0, 1.0, n_params),
            dims.SAMPLE: np.arange(n_samples),
            dims.LABEL: (dims.SAMPLE, labels),
            dims.STAT: np.array(dims.STATS, dtype=object),
        },
    )


def loop_matrices(response, mask):
    """l2, cosine distance and correlation (P, P) of rows of response[:, mask], by loops."""
    rows = response[:, mask]
    n_params, count = rows.shape
    l2 = np.full((n_params, n_params), np.nan)
    cosine = np.full((n_params, n_params), np.nan)
    corr = np.full((n_params, n_params), np.nan)
    if count == 0:
        return l2, cosine, corr
    for i in range(n_params):
        for j in range(n_params):
            x, y = rows[i], rows[j]
            l2[i, j] = np.sqrt(np.sum((x - y) ** 2)) / np.sqrt(count)
            cosine[i, j] = 1.0 - np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))
            xc, yc = x - x.mean(), y - y.mean()
            corr[i, j] = np.dot(xc, yc) / np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
    return l2, cosine, corr


def responses(probe, model):
    """Each level's response (P, n) of one model, keyed by level label."""
    one = probe.isel({dims.MID: model})
    out = {dims.CONFIDENCE_LEVEL: one[dims.CONFIDENCE].values}
    n_layers = probe.sizes[dims.LAYER]
    for layer in range(n_layers):
        for stat in dims.STATS:
            # positional labels: the last recorded layer is layer-1
            out[dims.layer_level(f"layer-{n_layers - layer}", stat)] = (
                one[dims.ACT].isel({dims.LAYER: layer}).sel({dims.STAT: stat}).values
            )
    return out


def split_masks(prediction, labels):
    """Boolean sample masks of the splits (dims.SPLITS order), decided at the centre."""
    correct = prediction[prediction.shape[0] // 2] == labels
    return {"all": np.ones_like(correct), "correct": correct, "incorrect": ~correct}


def test_matches_loops_for_every_level_split_and_kind():
    probe = make_probe()
    matrices = variance_matrices(probe)
    labels = probe[dims.LABEL].values
    for model in range(probe.sizes[dims.MID]):
        prediction = probe[dims.PREDICTION].values[model]
        masks = split_masks(prediction, labels)
        assert 0 < masks["correct"].sum() < labels.size
        for level, response in responses(probe, model).items():
            for split, mask in masks.items():
                expected = loop_matrices(response, mask)
                for kind, want in zip(dims.KINDS, expected):
                    got = matrices[dims.MATRIX].isel({dims.MID: model}).sel(
                        {dims.LEVEL: level, dims.SPLIT: split, dims.KIND: kind}
                    )
                    np.testing.assert_allclose(
                        got.values, want, rtol=1e-10, atol=1e-12, err_msg=f"{level} {split} {kind}"
                    )


def test_subset_matrix_matches_loop():
    probe = make_probe(n_models=1, n_samples=40)
    matrices = variance_matrices(probe)
    labels = probe[dims.LABEL].values
    chosen = np.random.RandomState(2).choice(40, int(0.9 * 40), replace=False)
    np.testing.assert_array_equal(subset_indices(40), chosen)
    prediction = probe[dims.PREDICTION].values[0][:, chosen]
    masks = split_masks(prediction, labels[chosen])
    for level, response in responses(probe, 0).items():
        for split, mask in masks.items():
            want = loop_matrices(response[:, chosen], mask)[0]
            got = matrices[dims.MATRIX_SUBSET].isel({dims.MID: 0}).sel(
                {dims.LEVEL: level, dims.SPLIT: split}
            )
            np.testing.assert_allclose(got.values, want, rtol=1e-10, atol=1e-12)


def test_layout_coords_and_layer_names():
    probe = make_probe(n_params=7)
    matrices = variance_matrices(probe)
    assert matrices[dims.MATRIX].dims == (
        dims.MID, dims.LEVEL, dims.SPLIT, dims.KIND, dims.AUG_PARAM_I, dims.AUG_PARAM_J
    )
    assert matrices[dims.MATRIX_SUBSET].dims == (
        dims.MID, dims.LEVEL, dims.SPLIT, dims.AUG_PARAM_I, dims.AUG_PARAM_J
    )
    assert matrices[dims.MATRIX].dtype == np.float64
    # levels are named by position from the output, whatever the modules are called;
    # level_module names them after the modules every model recorded there
    assert list(matrices[dims.LEVEL].values) == matrix_levels(probe)
    assert matrix_levels(probe)[:3] == ["confidence", "layer-2_mean", "layer-2_std"]
    assert matrix_levels(probe)[-1] == "layer-1_max_std"
    assert matrix_levels(probe.drop_vars(dims.LAYER_NAME)) == matrix_levels(probe)
    modules = matrices[dims.LEVEL_MODULE]
    assert modules.dims == (dims.LEVEL,)
    assert modules.values.tolist()[:3] == ["confidence", "conv0_mean", "conv0_std"]
    assert modules.values.tolist()[-1] == "conv1_max_std"
    assert matrices.set_xindex(dims.LEVEL_MODULE).sel({dims.LEVEL_MODULE: "conv1_max"})[
        dims.LEVEL].item() == "layer-1_max"
    mixed = probe.copy()
    mixed[dims.LAYER_NAME] = mixed[dims.LAYER_NAME].copy(data=[["conv0", "conv1"],
                                                               ["features.3", "conv1"]])
    assert matrix_levels(mixed) == matrix_levels(probe)  # other modules: the same levels
    assert matrix_level_modules(mixed)[1::8] == ["", "conv1_mean"]
    assert matrix_level_modules(probe.drop_vars(dims.LAYER_NAME))[1:] == [""] * 16
    assert list(matrices[dims.SPLIT].values) == list(dims.SPLITS)
    assert list(matrices[dims.KIND].values) == list(dims.KINDS)
    np.testing.assert_array_equal(matrices[dims.AUG_PARAM_I].values, probe[dims.AUG_PARAM].values)
    xr.testing.assert_equal(matrices[dims.LAYER_NAME], probe[dims.LAYER_NAME])
    assert matrices[dims.LAYER_NAME].attrs["long_name"] == "layer module name"
    assert matrices[dims.MATRIX].attrs["long_name"] == "variance matrix"
    l2 = matrices[dims.MATRIX].sel({dims.KIND: "l2"}).values
    np.testing.assert_array_equal(np.diagonal(l2, axis1=-2, axis2=-1), 0.0)
    np.testing.assert_array_equal(l2, np.swapaxes(l2, -1, -2))


def test_no_leading_dim_and_extra_leading_dims_match():
    probe = make_probe(n_models=2)
    reference = variance_matrices(probe).compute()
    single = variance_matrices(probe.isel({dims.MID: 1}))
    assert single[dims.MATRIX].dims[0] == dims.LEVEL
    np.testing.assert_array_equal(
        single[dims.MATRIX].values, reference[dims.MATRIX].isel({dims.MID: 1}).values
    )
    stacked = xr.concat([probe, probe], dim="seed")  # (seed, mid, ...)
    extra = variance_matrices(stacked)
    assert extra[dims.MATRIX].dims[:2] == ("seed", dims.MID)
    np.testing.assert_allclose(
        extra[dims.MATRIX].isel(seed=1).values, reference[dims.MATRIX].values, rtol=1e-12
    )


def test_one_block_of_models_equals_one_model_per_chunk():
    """Models with different split sizes in one block give the same as separate chunks."""
    probe = make_probe(n_models=3, n_samples=300, seed=3)
    whole = variance_matrices(probe)  # numpy: all three models in one block
    chunked = variance_matrices(probe.chunk({dims.MID: 1}))
    assert chunked[dims.MATRIX].chunks[0] == (1, 1, 1)
    np.testing.assert_allclose(
        chunked[dims.MATRIX].values, whole[dims.MATRIX].values, rtol=1e-12, atol=1e-15
    )
    np.testing.assert_allclose(
        chunked[dims.MATRIX_SUBSET].values, whole[dims.MATRIX_SUBSET].values, rtol=1e-12, atol=1e-15
    )


def test_large_offset_keeps_l2_accurate():
    """Centring per sample: an offset of 1e6 on every activation loses no L2 precision."""
    small = variance_matrices(make_probe(n_models=1, seed=5))
    shifted = variance_matrices(make_probe(n_models=1, seed=5, offset=1e6))
    l2 = {dims.KIND: "l2"}
    np.testing.assert_allclose(
        shifted[dims.MATRIX].sel(l2).values, small[dims.MATRIX].sel(l2).values, rtol=1e-8, atol=1e-9
    )


def test_empty_split_gives_nan_not_error():
    probe = make_probe(n_models=1)
    probe[dims.PREDICTION] = probe[dims.PREDICTION] * 0 + probe[dims.LABEL]  # all correct
    matrices = variance_matrices(probe)
    assert np.isnan(matrices[dims.MATRIX].sel({dims.SPLIT: "incorrect"}).values).all()
    assert np.isnan(matrices[dims.MATRIX_SUBSET].sel({dims.SPLIT: "incorrect"}).values).all()
    assert np.isfinite(matrices[dims.MATRIX].sel({dims.SPLIT: "correct", dims.KIND: "l2"})).all()
    np.testing.assert_array_equal(
        matrices[dims.MATRIX].sel({dims.SPLIT: "correct"}).values,
        matrices[dims.MATRIX].sel({dims.SPLIT: "all"}).values,
    )


def test_lazy_on_dask_one_chunk_per_model():
    probe = make_probe(n_models=3).assign_coords({dims.CLASS: [0, 1, 2]}).chunk({dims.MID: 1})
    assert isinstance(probe[dims.LABEL].data, da.Array)
    with dask.config.set(scheduler=raise_if_dask_computes):
        matrices = variance_matrices(probe)
        database = measure_database(probe)
    assert isinstance(matrices[dims.MATRIX].data, da.Array)
    assert matrices[dims.MATRIX].data.chunks[0] == (1, 1, 1)
    assert isinstance(database[dims.VALUE].data, da.Array)
    assert database[dims.VALUE].data.chunks[0] == (1, 1, 1)
    for name in ("accuracy", "class_accuracy", "robust_accuracy"):
        assert isinstance(database[name].data, da.Array), name
    with pytest.raises(RuntimeError, match="dask computed something"):
        with dask.config.set(scheduler=raise_if_dask_computes):
            matrices[dims.MATRIX].values  # noqa: B018 - the guard itself must trip
    eager = variance_matrices(make_probe(n_models=3))
    np.testing.assert_allclose(matrices[dims.MATRIX].values, eager[dims.MATRIX].values, rtol=1e-12)


def test_error_even_grid():
    probe = make_probe(n_params=5).isel({dims.AUG_PARAM: slice(0, 4)})
    with pytest.raises(InputError, match="odd number of values .* found 4 values"):
        variance_matrices(probe)


def test_error_missing_variable():
    with pytest.raises(InputError, match="has no variable 'act'"):
        variance_matrices(make_probe().drop_vars(dims.ACT))


def test_error_wrong_stat_count():
    probe = make_probe().isel({dims.STAT: slice(0, 6)})
    with pytest.raises(InputError, match="must hold the 8 statistics"):
        variance_matrices(probe)


def test_chunked_sample_dim_gives_same_matrices():
    """Core dims split into chunks are joined per model before the block function runs."""
    eager = variance_matrices(make_probe(n_models=2))
    chunked = variance_matrices(make_probe(n_models=2).chunk({dims.MID: 1, dims.SAMPLE: 40}))
    assert chunked[dims.MATRIX].data.chunks[0] == (1, 1)
    np.testing.assert_allclose(
        chunked[dims.MATRIX].values, eager[dims.MATRIX].values, rtol=1e-12, atol=1e-15
    )
