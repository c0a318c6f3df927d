"""Measures, registry, accuracy and features, checked against plain loops over MEASURES.md."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ml4ml import dims
from ml4ml.errors import InputError
from ml4ml.measure.feature_sets import FEATURE_SETS, features, paper80, selection
from ml4ml.measure.measures import (
    PAPER_MEASURES,
    accuracy,
    measure_database,
    measure_matrices,
    register_measure,
    registered_measures,
    unregister_measure,
    user_measures,
)

# ---------------------------------------------------------------------------------------
# an independent, literal implementation of MEASURES.md (one matrix at a time, loops)


def loop_fill(f):
    """The reference's diagonal fill-in of one m x m matrix."""
    m = f.shape[0]
    h = m // 2
    g = f.copy()
    g[0, m - 1] = f[0, m - 2]
    g[m - 1, 0] = f[m - 1, 1]
    for i in range(1, m - 1):
        if i not in (h - 1, h, h + 1):
            g[i, m - 1 - i] = (f[i, m - i] + f[i + 1, m - 1 - i]) / 2
    block_value = (f[h - 1, h + 2] + f[h + 2, h + 1]) / 2
    for a in (h - 1, h, h + 1):
        for b in (h - 1, h, h + 1):
            g[a, b] = block_value
    return g


def loop_measures(g):
    """Every paper measure except sstv of one filled matrix, by loops."""
    m = g.shape[0]
    h = m // 2
    out = {"mean": g.mean(), "s_mean": (g**2).mean(), "std": g.std(),
           "robusterror": (g > 0.15).mean()}
    mu = g.sum() / (m * m - m)
    out["asymm"] = np.mean([abs(g[i, j] - g[j, i]) for i in range(m) for j in range(i)]) / mu
    total = 0.0
    for i in range(1, m):
        total += (i + 1) * np.std([g[i - t, t] for t in range(i + 1)]) / m
    out["discnty"] = total / mu

    def vertical(matrix):
        diff = np.full_like(matrix, np.nan)
        diff[1:] = matrix[:-1] - matrix[1:]
        segments = [diff[r, 0 : m - r] for r in range(1, m) if r not in (h, h + 1)]
        joined = np.concatenate(segments)
        return joined.mean(), joined.std(), np.mean([np.std(s) for s in segments[:-1]]), diff

    for name, matrix in (("v", g), ("h", g.T)):
        mean, std, wstd, _ = vertical(matrix)
        out.update({f"grad_{name}_mean": mean, f"grad_{name}_std": std,
                    f"grad_{name}_wstd": wstd, f"score_{name}": mean / wstd})
    diff = vertical(g)[3]
    joined = np.concatenate([diff[r, 1 : m - r] for r in range(1, m) if r != h])
    out.update(grad_d_mean=joined.mean(), grad_d_std=joined.std(),
               score_d=joined.mean() / joined.std())
    out["grad_overall"] = (out["score_v"] + out["score_h"] + out["score_d"]) / 3
    return out


def loop_all_measures(l2, subset):
    """{measure: values over intervals} of one l2 matrix D and its subset matrix, by loops."""
    f = l2[::-1]
    p = f.shape[0]
    c = p // 2
    out = {name: [] for name in PAPER_MEASURES}
    for k in range(max(c - 4, 1)):
        values = loop_measures(loop_fill(f[k : p - k, k : p - k]))
        for name in PAPER_MEASURES:
            out[name].append(values.get(name, np.nan))
    out["sstv"][0] = np.abs(f - subset[::-1]).sum()
    return {name: np.array(v) for name, v in out.items()}


# ---------------------------------------------------------------------------------------
# inputs


def random_matrices(n_params, n_models=2, seed=0):
    """A matrices dataset of arbitrary positive, non-symmetric matrices (kind l2 used)."""
    rng = np.random.default_rng(seed)
    shape = (n_models, 2, len(dims.SPLITS), len(dims.KINDS), n_params, n_params)
    matrix = rng.gamma(2.0, 0.1, shape)
    subset = matrix[:, :, :, 0] + rng.normal(0, 0.01, shape[:3] + shape[4:])
    square = (dims.AUG_PARAM_I, dims.AUG_PARAM_J)
    return xr.Dataset(
        {
            dims.MATRIX: ((dims.MID, dims.LEVEL, dims.SPLIT, dims.KIND) + square, matrix),
            dims.MATRIX_SUBSET: ((dims.MID, dims.LEVEL, dims.SPLIT) + square, subset),
        },
        coords={
            dims.MID: ["a", "b"][:n_models],
            dims.LEVEL: ["confidence", "layer-1_mean"],
            dims.SPLIT: list(dims.SPLITS),
            dims.KIND: list(dims.KINDS),
        },
    )


def tiny_probe():
    """4 samples, 13 parameters (2 intervals), classes 0/1; exact accuracies by hand.

    sample 0 (class 0): always right; sample 1 (class 1): wrong at param 0 only;
    sample 2 (class 0): wrong at the centre (6) only; sample 3 (class 1): wrong at 3 and 12.
    """
    n_params = 13
    labels = np.array([0, 1, 0, 1])
    prediction = np.tile(labels, (n_params, 1))
    for param, sample in ((0, 1), (6, 2), (3, 3), (12, 3)):
        prediction[param, sample] = 1 - labels[sample]
    rng = np.random.default_rng(1)
    return xr.Dataset(
        {
            dims.PREDICTION: ((dims.MID, dims.AUG_PARAM, dims.SAMPLE), prediction[None]),
            dims.CONFIDENCE: ((dims.MID, dims.AUG_PARAM, dims.SAMPLE), rng.random((1, 13, 4))),
            dims.ACT: (
                (dims.MID, dims.AUG_PARAM, dims.SAMPLE, dims.LAYER, dims.STAT),
                rng.random((1, 13, 4, 2, 8)),
            ),
            dims.LAYER_NAME: ((dims.MID, dims.LAYER), np.array([["conv8", "conv9"]], object)),
        },
        coords={
            dims.MID: ["m0"],
            dims.AUG_PARAM: np.arange(-6.0, 7.0),
            dims.SAMPLE: np.arange(4),
            dims.LABEL: (dims.SAMPLE, labels),
            dims.STAT: list(dims.STATS),
        },
    )


@pytest.fixture
def clean_registry():
    before = user_measures()
    yield
    for name in user_measures():
        if name not in before:
            unregister_measure(name)


# ---------------------------------------------------------------------------------------
# paper measures


@pytest.mark.parametrize("n_params", [31, 13, 11, 9, 5])
def test_paper_measures_match_loops(n_params):
    matrices = random_matrices(n_params)
    value = measure_matrices(matrices)
    n_intervals = max(n_params // 2 - 4, 1)
    assert value.dims == (dims.MID, dims.LEVEL, dims.SPLIT, dims.INTERVAL, dims.MEASURE)
    assert list(value[dims.MEASURE].values) == list(PAPER_MEASURES)
    np.testing.assert_array_equal(value[dims.INTERVAL].values, np.arange(n_intervals))
    np.testing.assert_array_equal(
        value[dims.HALF_WIDTH].values, n_params // 2 - np.arange(n_intervals)
    )
    l2 = matrices[dims.MATRIX].sel({dims.KIND: "l2"}).values
    subset = matrices[dims.MATRIX_SUBSET].values
    for index in np.ndindex(l2.shape[:3]):
        expected = loop_all_measures(l2[index], subset[index])
        for name in PAPER_MEASURES:
            np.testing.assert_allclose(
                value.values[index + (slice(None), PAPER_MEASURES.index(name))],
                expected[name],
                rtol=1e-9,
                atol=1e-12,
                err_msg=f"P={n_params} {index} {name}",
            )


def test_measures_of_real_variance_matrices_match_loops():
    """The whole chain on probe responses: matrices then measures, against the loops."""
    probe = tiny_probe()
    rng = np.random.default_rng(4)
    probe = probe.isel({dims.SAMPLE: np.arange(4).repeat(10)})
    probe = probe.assign_coords({dims.SAMPLE: np.arange(40)})
    probe[dims.ACT] = probe[dims.ACT] + rng.normal(0, 0.1, probe[dims.ACT].shape)
    noise = rng.normal(0, 0.1, probe[dims.CONFIDENCE].shape)
    probe[dims.CONFIDENCE] = probe[dims.CONFIDENCE] + noise
    database = measure_database(probe)
    value = database[dims.VALUE].isel({dims.MID: 0})
    from ml4ml.measure.matrices import variance_matrices

    matrices = variance_matrices(probe).isel({dims.MID: 0})
    for level in ("confidence", "layer-1_max"):
        for split in dims.SPLITS:
            where = {dims.LEVEL: level, dims.SPLIT: split}
            expected = loop_all_measures(
                matrices[dims.MATRIX].sel(where).sel({dims.KIND: "l2"}).values,
                matrices[dims.MATRIX_SUBSET].sel(where).values,
            )
            for name in PAPER_MEASURES:
                np.testing.assert_allclose(
                    value.sel({dims.LEVEL: level, dims.SPLIT: split, dims.MEASURE: name}).values,
                    expected[name], rtol=1e-9, atol=1e-12, err_msg=f"{level} {split} {name}",
                )


def test_sstv_only_for_full_interval():
    value = measure_matrices(random_matrices(13), measures=["sstv"])
    assert np.isfinite(value.isel({dims.INTERVAL: 0})).all()
    assert np.isnan(value.isel({dims.INTERVAL: slice(1, None)})).all()


def test_nan_matrix_gives_nan_measures():
    matrices = random_matrices(11)
    matrices[dims.MATRIX][:, :, 2] = np.nan  # an empty "incorrect" split
    matrices[dims.MATRIX_SUBSET][:, :, 2] = np.nan
    value = measure_matrices(matrices)
    assert np.isnan(value.sel({dims.SPLIT: "incorrect"})).all()
    assert np.isfinite(value.sel({dims.SPLIT: "correct"})).all()


def test_no_leading_dims():
    matrices = random_matrices(11, n_models=1)
    whole = measure_matrices(matrices)
    single = measure_matrices(matrices.isel({dims.MID: 0}))
    assert single.dims[0] == dims.LEVEL
    np.testing.assert_array_equal(single.values, whole.isel({dims.MID: 0}).values)


def test_error_grid_too_small():
    with pytest.raises(InputError, match="odd grid of at least 5 parameters; found 3"):
        measure_matrices(random_matrices(3))


def test_error_even_grid():
    with pytest.raises(InputError, match="odd grid of at least 5 parameters; found 8"):
        measure_matrices(random_matrices(8))


def test_error_unknown_measure():
    with pytest.raises(InputError, match=r"unknown measure\(s\) \['nope'\]"):
        measure_matrices(random_matrices(5), measures=["mean", "nope"])


def test_error_missing_subset_matrix():
    with pytest.raises(InputError, match="has no variable 'matrix_subset'"):
        measure_matrices(random_matrices(5).drop_vars(dims.MATRIX_SUBSET))


# ---------------------------------------------------------------------------------------
# registry


def test_registered_measure_values_and_selection(clean_registry):
    register_measure("frobenius", lambda m: np.sqrt((m * m).sum(axis=(-2, -1))))
    register_measure("corner_raw", lambda m: m[..., 0, -1], fill=False)
    matrices = random_matrices(13)
    value = measure_matrices(matrices)
    assert list(value[dims.MEASURE].values) == list(PAPER_MEASURES) + ["frobenius", "corner_raw"]
    f = matrices[dims.MATRIX].sel({dims.KIND: "l2"}).values[..., ::-1, :]
    for k in range(2):
        window = f[..., k : 13 - k, k : 13 - k]
        filled = np.apply_along_axis(lambda x: loop_fill(x.reshape(window.shape[-2:])).ravel(), -1,
                                     window.reshape(window.shape[:-2] + (-1,)))
        filled = filled.reshape(window.shape)
        np.testing.assert_allclose(
            value.sel({dims.MEASURE: "frobenius"}).isel({dims.INTERVAL: k}).values,
            np.sqrt((filled**2).sum(axis=(-2, -1))), rtol=1e-12,
        )
        np.testing.assert_array_equal(
            value.sel({dims.MEASURE: "corner_raw"}).isel({dims.INTERVAL: k}).values,
            window[..., 0, -1],
        )
    chosen = measure_matrices(matrices, measures=["frobenius", "mean"])
    assert list(chosen[dims.MEASURE].values) == ["frobenius", "mean"]
    np.testing.assert_array_equal(
        chosen.sel({dims.MEASURE: "mean"}).values, value.sel({dims.MEASURE: "mean"}).values
    )


def test_unregister_removes_measure(clean_registry):
    register_measure("temporary", lambda m: m.mean(axis=(-2, -1)))
    assert registered_measures() == PAPER_MEASURES + ("temporary",)
    assert user_measures() == ("temporary",)
    unregister_measure("temporary")
    assert registered_measures() == PAPER_MEASURES
    assert user_measures() == ()
    with pytest.raises(InputError, match=r"unknown measure\(s\) \['temporary'\]"):
        measure_matrices(random_matrices(5), measures=["temporary"])


def test_registry_errors(clean_registry):
    with pytest.raises(InputError, match="'mean' is a paper measure"):
        register_measure("mean", lambda m: m.sum())
    register_measure("twice", lambda m: m.sum())
    with pytest.raises(InputError, match="'twice' is already registered"):
        register_measure("twice", lambda m: m.sum())
    with pytest.raises(InputError, match="func must be callable"):
        register_measure("not_callable", 3)
    with pytest.raises(InputError, match="no registered measure named 'absent'"):
        unregister_measure("absent")


# ---------------------------------------------------------------------------------------
# accuracy


def test_accuracy_exact_numbers():
    result = accuracy(tiny_probe())
    expected = np.ones(13)
    expected[[0, 3, 6, 12]] = 0.75
    np.testing.assert_array_equal(result["accuracy"].sel({dims.MID: "m0"}).values, expected)
    class_accuracy = result["class_accuracy"].sel({dims.MID: "m0"})
    assert class_accuracy.dims == (dims.AUG_PARAM, dims.CLASS)
    np.testing.assert_array_equal(class_accuracy[dims.CLASS].values, [0, 1])
    class0 = np.ones(13)
    class0[6] = 0.5
    class1 = np.ones(13)
    class1[[0, 3, 12]] = 0.5
    np.testing.assert_array_equal(class_accuracy.sel({dims.CLASS: 0}).values, class0)
    np.testing.assert_array_equal(class_accuracy.sel({dims.CLASS: 1}).values, class1)
    # interval 0: params 0..12, only sample 0 always right; interval 1: params 1..11, also sample 1
    robust = result["robust_accuracy"].sel({dims.MID: "m0"})
    np.testing.assert_array_equal(robust.values, [0.25, 0.5])
    np.testing.assert_array_equal(result[dims.HALF_WIDTH].values, [6, 5])


def test_measure_database_layout():
    database = measure_database(tiny_probe())
    assert set(database.data_vars) == {
        dims.VALUE, "accuracy", "class_accuracy", "robust_accuracy", dims.LAYER_NAME
    }
    assert database[dims.VALUE].dims == (
        dims.MID, dims.LEVEL, dims.SPLIT, dims.INTERVAL, dims.MEASURE
    )
    assert database["robust_accuracy"].dims == (dims.MID, dims.INTERVAL)
    assert database.sizes[dims.INTERVAL] == 2
    assert database.sizes[dims.LEVEL] == 17
    assert list(database[dims.LAYER_NAME].values[0]) == ["conv8", "conv9"]


# ---------------------------------------------------------------------------------------
# features


def test_paper80_names_order_and_values():
    database = measure_database(tiny_probe())
    table = paper80(database)
    assert isinstance(table, pd.DataFrame)
    assert table.shape == (1, 81)
    assert list(table[dims.MID]) == ["m0"]
    assert list(table.columns[:4]) == [
        dims.MID, "confidence_sstv", "confidence_mean", "confidence_s_mean"
    ]
    # the last two recorded layers by position (conv8, conv9 here: layer-2, layer-1)
    assert table.columns[17] == "layer-2_max_sstv"
    assert table.columns[33] == "layer-2_max_mean_sstv"
    assert table.columns[-1] == "layer-1_max_mean_grad_d_std"
    value = database[dims.VALUE].sel({dims.SPLIT: "correct", dims.INTERVAL: 0, dims.MID: "m0"})
    assert table.loc[0, "layer-1_max_grad_overall"] == value.sel(
        {dims.LEVEL: "layer-1_max", dims.MEASURE: "grad_overall"}).item()
    # the same level by its module name (level_module)
    by_module = value.set_xindex(dims.LEVEL_MODULE).sel({dims.LEVEL_MODULE: "conv9_max"})
    assert by_module.sel({dims.MEASURE: "grad_overall"}).item() == table.loc[
        0, "layer-1_max_grad_overall"]
    assert table.loc[0, "confidence_asymm"] == value.sel(
        {dims.LEVEL: "confidence", dims.MEASURE: "asymm"}).item()
    incorrect = features(database, set="paper80", split="incorrect")
    assert incorrect.loc[0, "confidence_mean"] == database[dims.VALUE].sel(
        {dims.SPLIT: "incorrect", dims.INTERVAL: 0, dims.MID: "m0", dims.LEVEL: "confidence",
         dims.MEASURE: "mean"}).item()
    assert FEATURE_SETS["paper80"] is paper80


def test_paper80_columns_do_not_depend_on_module_names():
    """Other modules (a VGG's features.24 and .28 beside a CNN's conv8 and conv9) give the
    same columns: features compare layers by position from the output; selection takes
    the module names where every model recorded the same."""
    probe = tiny_probe()
    plain = paper80(measure_database(probe))
    mixed = xr.concat([probe, probe.assign_coords({dims.MID: ["v0"]})], dims.MID)
    names = np.array([["conv8", "conv9"], ["features.24", "features.28"]], dtype=object)
    mixed[dims.LAYER_NAME] = ((dims.MID, dims.LAYER), names)
    database = measure_database(mixed)
    table = paper80(database)
    assert list(table.columns) == list(plain.columns)
    assert "layer-2_max_sstv" in table.columns
    assert table.columns[-1] == "layer-1_max_mean_grad_d_std"
    np.testing.assert_array_equal(table.iloc[0, 1:].to_numpy(float),
                                  plain.iloc[0, 1:].to_numpy(float))
    # no module is shared: level_module is empty beyond the confidence
    assert set(database[dims.LEVEL_MODULE].values.tolist()[1:]) == {""}
    one = measure_database(probe)
    picked = selection(one, levels=["conv9_max"], names=["mean"])
    assert list(picked.columns) == [dims.MID, "layer-1_max_mean"]
    with pytest.raises(InputError, match="unknown level 'conv9_max'"):
        selection(database, levels=["conv9_max"], names=["mean"])


def test_feature_errors():
    database = measure_database(tiny_probe())
    with pytest.raises(InputError, match="unknown feature set 'paper81'"):
        features(database, set="paper81")
    with pytest.raises(InputError, match="unknown split 'wrong'"):
        paper80(database, split="wrong")
