"""Response measures: tmeasures 1.2.11 itself on the same activations (tv, sv, nv, anova,
goodfellow), plain loops for the others, laziness, one read per block, the registry and a
registered measure on a real dask LocalCluster's workers."""

from __future__ import annotations

import collections

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special
import xarray as xr

import response_plugins
from ml4ml import dims
from ml4ml.errors import InputError
from ml4ml.measure.response_kernels import RESPONSE_MEASURES
from ml4ml.measure.responses import (
    register_response_measure,
    registered_response_measures,
    response_measures,
    unregister_response_measure,
    user_response_measures,
)

TMEASURES = ("tv", "sv", "nv", "anova", "goodfellow")


def tmeasures_warnings(test):
    """Ignore tmeasures' own warnings (its DataLoader pins memory, its ANOVA divides 0/0)."""
    test = pytest.mark.filterwarnings("ignore:'pin_memory' argument")(test)
    return pytest.mark.filterwarnings("ignore:.*encountered in divide")(test)


def raise_if_dask_computes(*args, **kwargs):
    """A dask scheduler that fails on any compute (as xarray's raise_if_dask_computes)."""
    raise RuntimeError("dask computed something: the function under test must stay lazy")


def as_array(x, name=None, grid=None):
    """DataArray (mid, aug_param, sample, unit) of x (n_models, P, S, U)."""
    n_params = x.shape[1]
    grid = np.linspace(-20.0, 20.0, n_params) if grid is None else grid
    return xr.DataArray(x, dims=(dims.MID, dims.AUG_PARAM, dims.SAMPLE, dims.UNIT),
                        coords={dims.AUG_PARAM: grid}, name=name)


def edge_case_responses(seed, n_params=9, n_samples=60, n_units=7):
    """float32 (P, S, U) layer-like responses whose first units hit tmeasures' special cases."""
    rng = np.random.default_rng(seed)
    grid_effect = np.linspace(-1.0, 1.0, n_params)[:, None, None] ** 2
    x = rng.gamma(2.0, 1.0, (n_params, n_samples, n_units)) * (1.0 + 0.3 * grid_effect)
    x[..., 0] = 0.5  # constant: tv = sv = 0 -> nv 1; F = 0/0 -> not significant
    x[..., 1] = rng.normal(size=n_samples)  # constant over the grid: tv = 0 -> nv 0
    x[..., 2] = rng.normal(size=n_params)[:, None]  # constant over samples: nv inf, F inf
    x[n_params // 2, :, 3] = 1.25  # constant identity: never fires there -> goodfellow inf
    return x.astype(np.float32)


# ---------------------------------------------------------------------------------------
# tmeasures 1.2.11, fed the same activations through its own APIs


@pytest.fixture(scope="module")
def tm():
    import tmeasures  # the test extra; a missing install is a failure, not a skip

    return tmeasures


def tmeasures_pytorch(tm, x):
    """tmeasures.pytorch's nv (with its tv and sv) and Goodfellow per unit of x (P, S, U).

    The dataset's items are tokens (sample, grid position), the transformation set moves a
    token to grid position k, and the model's one activation is x at the token, so
    tmeasures' own iterators, running statistics and divisions see exactly x."""
    import torch

    from tmeasures_tokens import token_inputs

    n_params, n_samples, _ = x.shape
    table = torch.from_numpy(x)
    tokens, grid = token_inputs(n_params, n_samples)

    class Lookup(tm.pytorch.ActivationsModule):
        def activation_names(self):
            return ["units"]

        def forward_activations(self, tokens):
            return [table[tokens[:, 1].long(), tokens[:, 0].long()]]

    options = tm.pytorch.PyTorchMeasureOptions(batch_size=16, num_workers=0, verbose=False)
    nv = tm.pytorch.NormalizedVarianceInvariance().eval(tokens, grid, Lookup(), options)
    nv = nv.numpy()  # and its tv (x_result) and sv (y_result)
    goodfellow = tm.pytorch.GoodfellowInvariance().eval(tokens, grid, Lookup(), options)
    return {"nv": nv, "tv": nv.x_result, "sv": nv.y_result, "goodfellow": goodfellow.numpy()}


def tmeasures_numpy(tm, x):
    """tmeasures.np's nv (tv, sv) and ANOVA per unit of x (P, S, U), through an
    ActivationsIterator over the array (its measures' input type)."""
    from tmeasures.np.activations_iterator import ActivationsIterator

    n_params, n_samples, _ = x.shape
    batch = 16

    class ArrayIterator(ActivationsIterator):
        def layer_names(self):
            return ["units"]

        def transformations_first(self):
            for k in range(n_params):
                yield k, ((np.arange(start, min(start + batch, n_samples)),
                           [x[k, start : start + batch]]) for start in range(0, n_samples, batch))

        def samples_first(self):
            for sample in range(n_samples):
                yield sample, ((np.arange(start, min(start + 4, n_params)),
                                [x[start : start + 4, sample]]) for start in range(0, n_params, 4))

        def get_transformations(self):
            return list(range(n_params))

        def get_inverted_activations_iterator(self):
            return self

        def get_both_iterator(self):
            return self

        def get_normal_activations_iterator(self):
            return self

    iterator = ArrayIterator()
    return {
        "nv": tm.np.NormalizedVarianceInvariance().eval(iterator),
        "tv": tm.np.TransformationVarianceInvariance().eval(iterator),
        "sv": tm.np.SampleVarianceInvariance().eval(iterator),
        # float64 copies of the same float32 values: tmeasures.np accumulates in the input dtype
        "anova": tm.np.ANOVAInvariance().eval(_Float64(iterator)),
    }


class _Float64:
    """An ActivationsIterator's transformations_first with float64 activations."""

    def __init__(self, inner):
        self.inner = inner

    def layer_names(self):
        return self.inner.layer_names()

    def transformations_first(self):
        for k, batches in self.inner.transformations_first():
            yield k, ((index, [a.astype(np.float64) for a in acts]) for index, acts in batches)


def assert_per_unit_and_average(ours_per_unit, ours_average, result, name):
    """Our per-unit values and unit average against a tmeasures MeasureResult (1e-5)."""
    theirs = np.asarray(result.layers[0], dtype=np.float64)
    np.testing.assert_allclose(ours_per_unit, theirs, rtol=1e-5, atol=0, err_msg=name)
    np.testing.assert_allclose(ours_average, result.per_layer_average()[0], rtol=1e-5,
                               err_msg=name)


@tmeasures_warnings
@pytest.mark.parametrize("seed", [0, 1])
def test_tv_sv_nv_anova_goodfellow_equal_tmeasures(tm, seed):
    models = np.stack([edge_case_responses(seed), edge_case_responses(seed + 10) * 3.0])
    responses = as_array(models)
    identity = models.shape[1] // 2
    per_unit = response_measures(responses, TMEASURES, identity_index=identity, per_unit=True)
    average = response_measures(responses, TMEASURES, identity_index=identity)
    for m, x in enumerate(models):
        theirs = tmeasures_pytorch(tm, x) | {"anova": tmeasures_numpy(tm, x)["anova"]}
        for name in TMEASURES:
            assert_per_unit_and_average(per_unit.isel(mid=m).sel(response_measure=name).values,
                                        float(average.isel(mid=m).sel(response_measure=name)),
                                        theirs[name], name)
    # the edge cases hit every branch of tmeasures' rules
    first = per_unit.isel(mid=0).to_pandas()
    assert first.loc[0, "nv"] == 1.0 and first.loc[1, "nv"] == 0.0
    assert np.isinf(first.loc[2, "nv"]) and np.isinf(first.loc[3, "goodfellow"])
    assert first.loc[0, "anova"] == 0.0 and first.loc[2, "anova"] == 1.0
    assert 0.0 < float(average.isel(mid=0).sel(response_measure="anova")) < 1.0


@tmeasures_warnings
def test_tv_sv_nv_equal_tmeasures_numpy_api(tm):
    x = edge_case_responses(3)
    per_unit = response_measures(as_array(x[None]), ["tv", "sv", "nv"],
                                 identity_index=x.shape[0] // 2, per_unit=True).isel(mid=0)
    theirs = tmeasures_numpy(tm, x)
    for name in ("tv", "sv", "nv"):
        np.testing.assert_allclose(per_unit.sel(response_measure=name).values,
                                   theirs[name].layers[0], rtol=1e-5, err_msg=name)


# ---------------------------------------------------------------------------------------
# the others against plain loops over (grid value, sample)


def loop_orbit_distance(x, kind):
    """Mean over grid and samples of the distance of x[p, s] to its orbit's centroid."""
    n_params, n_samples, _ = x.shape
    total = 0.0
    for s in range(n_samples):
        centroid = x[:, s].mean(axis=0)
        for p in range(n_params):
            r = x[p, s]
            if kind == "l2":
                total += np.linalg.norm(r - centroid)
            elif kind == "kl":
                total += scipy.special.rel_entr(r, centroid).sum()
            elif not r.any() and not centroid.any():
                total += 0.0
            elif not r.any() or not centroid.any():
                total += 1.0
            else:
                total += scipy.spatial.distance.cosine(r, centroid)
    return total / (n_params * n_samples)


def loop_consistency(predictions, identity):
    n_params, n_samples = predictions.shape
    same = sum(predictions[p, s] == predictions[identity, s]
               for p in range(n_params) for s in range(n_samples))
    return same / (n_params * n_samples)


def loop_lee(x, grid, identity):
    """Gruver et al.'s average: per sample the mean over classes of |df/dt|, then the mean."""
    derivative = np.gradient(x, grid, axis=0)[identity]  # central difference (S, U)
    return np.mean([np.abs(derivative[s]).mean() for s in range(x.shape[1])])


def loop_tv_sv(x):
    tv = np.mean([[np.std(x[:, s, u], ddof=1) for s in range(x.shape[1])]
                  for u in range(x.shape[2])])
    sv = np.mean([[np.std(x[p, :, u], ddof=1) for p in range(x.shape[0])]
                  for u in range(x.shape[2])])
    return tv, sv


def random_probabilities(rng, shape):
    """Softmax-like probabilities (..., U) with some exact zeros (0 log 0)."""
    p = rng.dirichlet(np.full(shape[-1], 0.7), shape[:-1])
    p[rng.random(p.shape) < 0.05] = 0.0
    p[..., 0] += 1e-3
    return (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)


def test_other_measures_equal_plain_loops():
    rng = np.random.default_rng(5)
    n_models, n_params, n_samples, n_units = 2, 11, 40, 10
    prob = random_probabilities(rng, (n_models, n_params, n_samples, n_units))
    prob[0, :, 3] = 0.0  # a sample whose vectors are all zero: cosine's convention
    predictions = prob.argmax(-1)
    grid = np.linspace(-10.0, 10.0, n_params)
    identity = n_params // 2
    value = response_measures(as_array(prob, "prob", grid), identity_index=identity,
                              predictions=xr.DataArray(predictions, dims=("mid", "aug_param",
                                                                          "sample")))
    assert list(value[dims.RESPONSE_MEASURE].values) == list(RESPONSE_MEASURES)
    for m in range(n_models):
        x = prob[m].astype(np.float64)
        got = value.isel(mid=m).to_series()
        expected = {
            "geed_kl": loop_orbit_distance(x, "kl"),
            "geed_l2": loop_orbit_distance(x, "l2"),
            "geed_cos": loop_orbit_distance(x, "cos"),
            "consistency": loop_consistency(predictions[m], identity),
            "lee_fd": loop_lee(x, grid, identity),
        }
        for name, number in expected.items():
            assert got[name] == pytest.approx(number, rel=1e-10, abs=1e-15), name
        assert 0.0 < got["geed_kl"] and 0.0 < got["consistency"] < 1.0


def test_float64_accumulation_of_float32_responses():
    """Large offsets: float32 accumulation would be off by far more than 1e-10."""
    rng = np.random.default_rng(2)
    x = (1e4 + rng.normal(size=(1, 9, 300, 4))).astype(np.float32)
    value = response_measures(as_array(x), ["tv", "sv", "geed_l2", "lee_fd"],
                              identity_index=4, grid_step=5.0).isel(mid=0).to_series()
    x64 = x[0].astype(np.float64)
    tv, sv = loop_tv_sv(x64)
    assert value["tv"] == pytest.approx(tv, rel=1e-10)
    assert value["sv"] == pytest.approx(sv, rel=1e-10)
    assert value["geed_l2"] == pytest.approx(loop_orbit_distance(x64, "l2"), rel=1e-10)
    assert value["lee_fd"] == pytest.approx(
        loop_lee(x64, np.arange(9) * 5.0, 4), rel=1e-10)


def test_per_unit_is_each_unit_alone_for_the_distances():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 7, 30, 3)).astype(np.float32)
    names = ["geed_l2", "geed_cos", "lee_fd", "tv", "sv", "nv", "goodfellow"]
    per_unit = response_measures(as_array(x), names, identity_index=3, per_unit=True)
    assert per_unit.dims == (dims.MID, dims.UNIT, dims.RESPONSE_MEASURE)
    for u in range(3):  # per_unit on one unit: no average over units (an inf stays inf)
        alone = response_measures(as_array(x[..., u : u + 1]), names, identity_index=3,
                                  per_unit=True).isel(unit=0)
        np.testing.assert_allclose(per_unit.isel(unit=u).values, alone.values, rtol=1e-12)
        average = response_measures(as_array(x[..., u : u + 1]), names[:3], identity_index=3)
        np.testing.assert_allclose(per_unit.isel(unit=u).values[:, :3], average.values,
                                   rtol=1e-12)


def test_leading_dims_and_broadcast_predictions():
    """A level dim on the responses only: the predictions broadcast over it."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 3, 5, 20, 4))
    responses = xr.DataArray(x, dims=("mid", "level", "aug_param", "sample", "unit"),
                             coords={"level": ["a", "b", "c"]})
    predictions = xr.DataArray(rng.integers(0, 3, (2, 5, 20)),
                               dims=("mid", "aug_param", "sample"))
    value = response_measures(responses, ["consistency", "tv"], identity_index=2,
                              predictions=predictions)
    assert value.dims == ("mid", "level", "response_measure")
    lazy = response_measures(responses.chunk({"mid": 1}), ["consistency", "tv"],
                             identity_index=2, predictions=predictions.chunk({"mid": 1}))
    assert lazy.data.chunks[:2] == ((1, 1), (3,))
    xr.testing.assert_allclose(lazy.compute(), value, rtol=1e-14)
    for m in range(2):
        expected = loop_consistency(predictions.values[m], 2)
        np.testing.assert_allclose(value.sel(response_measure="consistency").values[m],
                                   expected, rtol=1e-12)
        for level in range(3):
            tv, _ = loop_tv_sv(x[m, level])
            assert float(value.isel(mid=m, level=level).sel(response_measure="tv")) == \
                pytest.approx(tv, rel=1e-12)


# ---------------------------------------------------------------------------------------
# lazy: nothing computed while building, one scheduler call, each block read once


def test_lazy_one_compute_one_read_per_block():
    rng = np.random.default_rng(7)
    prob = random_probabilities(rng, (4, 9, 50, 10))
    predictions = prob.argmax(-1)
    reads = collections.Counter()

    def load(m):
        reads[m] += 1
        return prob[m : m + 1]

    lazy_prob = da.concatenate([da.from_delayed(dask.delayed(load)(m), (1, 9, 50, 10),
                                                np.float32) for m in range(4)])
    lazy = as_array(lazy_prob, "prob")
    lazy_predictions = xr.DataArray(da.from_array(predictions, chunks=(1, 9, 50)),
                                    dims=("mid", "aug_param", "sample"))
    with dask.config.set(scheduler=raise_if_dask_computes):
        value = response_measures(lazy, identity_index=4, predictions=lazy_predictions)
        per_unit = response_measures(lazy, identity_index=4, predictions=lazy_predictions,
                                     per_unit=True)
    assert isinstance(value.data, da.Array) and value.data.chunks[0] == (1, 1, 1, 1)
    calls = []

    def counting_get(graph, keys, **kwargs):
        calls.append(keys)
        return dask.get(graph, keys, **kwargs)

    with dask.config.set(scheduler=counting_get):
        computed = value.compute()
    assert len(calls) == 1 and dict(reads) == {0: 1, 1: 1, 2: 1, 3: 1}
    eager = response_measures(as_array(prob, "prob"), identity_index=4,
                              predictions=xr.DataArray(predictions,
                                                       dims=("mid", "aug_param", "sample")))
    xr.testing.assert_allclose(computed, eager, rtol=1e-14)
    assert isinstance(per_unit.data, da.Array)
    np.testing.assert_allclose(per_unit.sel(response_measure="tv").mean(dims.UNIT),
                               eager.sel(response_measure="tv"), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# registry, errors


@pytest.fixture
def registered():
    names = []

    def register(name, func):
        register_response_measure(name, func)
        names.append(name)

    yield register
    for name in names:
        if name in user_response_measures():
            unregister_response_measure(name)


def test_registered_measure_values_keywords_and_per_unit(registered):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 5, 30, 3))
    predictions = xr.DataArray(rng.integers(0, 2, (2, 5, 30)), dims=("mid", "aug_param",
                                                                      "sample"))
    registered("orbit_range", response_plugins.orbit_range)
    registered("identity_gap", response_plugins.identity_gap)
    assert registered_response_measures() == RESPONSE_MEASURES + ("orbit_range", "identity_gap")
    value = response_measures(as_array(x, grid=np.arange(5) * 2.0 - 4.0), identity_index=2,
                              predictions=predictions)
    expected_range = np.ptp(x, axis=1).mean(axis=(1, 2))
    np.testing.assert_allclose(value.sel(response_measure="orbit_range"), expected_range,
                               rtol=1e-12)
    gap = np.abs(x - x[:, 2:3]).mean(axis=(1, 2, 3)) + 0.0 + (predictions.values == 0).mean(
        axis=(1, 2))
    np.testing.assert_allclose(value.sel(response_measure="identity_gap"), gap, rtol=1e-12)
    per_unit = response_measures(as_array(x, grid=np.arange(5) * 2.0 - 4.0),
                                 ["orbit_range", "identity_gap"], identity_index=2,
                                 predictions=predictions, per_unit=True)
    np.testing.assert_allclose(per_unit.sel(response_measure="orbit_range"),
                               np.ptp(x, axis=1).mean(axis=1), rtol=1e-12)
    gap_per_unit = np.abs(x - x[:, 2:3]).mean(axis=(1, 2)) + (predictions.values == 0).mean(
        axis=(1, 2))[:, None]
    np.testing.assert_allclose(per_unit.sel(response_measure="identity_gap"), gap_per_unit,
                               rtol=1e-12)


def test_registered_measure_runs_on_a_local_cluster_worker(registered):
    from ml4ml.cluster import dask_client

    rng = np.random.default_rng(9)
    x = rng.normal(size=(3, 5, 40, 4)).astype(np.float32)
    registered("worker_orbit_range", response_plugins.worker_orbit_range)
    lazy = response_measures(as_array(x).chunk({dims.MID: 1}), ["tv", "worker_orbit_range"],
                             identity_index=2)
    with pytest.raises(ValueError, match="[Nn]o worker"):  # not in this process
        lazy.compute(scheduler="sync")
    with dask_client(workers=1) as client:
        assert client.cluster.workers  # a real worker process
        value = lazy.compute()
    np.testing.assert_allclose(value.sel(response_measure="worker_orbit_range"),
                               np.ptp(x.astype(np.float64), axis=1).mean(axis=(1, 2)),
                               rtol=1e-12)


def test_registry_errors(registered):
    with pytest.raises(InputError, match="'nv' is a built-in response measure"):
        register_response_measure("nv", np.mean)
    registered("orbit_range", response_plugins.orbit_range)
    with pytest.raises(InputError, match="already registered"):
        register_response_measure("orbit_range", response_plugins.orbit_range)
    with pytest.raises(InputError, match="must be callable"):
        register_response_measure("x", 3)
    with pytest.raises(InputError, match="no registered response measure named 'nope'"):
        unregister_response_measure("nope")
    registered("bad_shape", lambda block: block.mean(axis=-1))
    with pytest.raises(ValueError, match="'bad_shape' returned shape"):
        response_measures(as_array(np.ones((1, 3, 4, 2))), ["bad_shape"], identity_index=1)


def test_input_errors():
    responses = as_array(np.random.default_rng(0).random((1, 5, 10, 3)))
    with pytest.raises(InputError) as error:
        response_measures(responses, ["nv", "foo"], identity_index=2)
    message = str(error.value)
    assert "\n" not in message and "unknown response measure(s) foo" in message
    assert "known: tv, sv, nv, anova, goodfellow, geed_kl" in message
    with pytest.raises(InputError, match="lack the dim.*unit.*rename"):
        response_measures(responses.rename(unit="class"), identity_index=2)
    with pytest.raises(InputError, match="identity_index must be .* 0 to 4; got 5"):
        response_measures(responses, identity_index=5)
    with pytest.raises(InputError, match="'consistency' cannot be computed.*predictions"):
        response_measures(responses, ["consistency"], identity_index=2)
    with pytest.raises(InputError, match="'geed_kl' cannot be computed.*probabilities"):
        response_measures(responses, ["geed_kl"], identity_index=2)
    with pytest.raises(InputError, match="'lee_fd' cannot be computed"):
        response_measures(responses, ["lee_fd"], identity_index=0)
    with pytest.raises(InputError, match="grid_step must be a positive number"):
        response_measures(responses, ["lee_fd"], identity_index=2, grid_step=-1.0)
    shifted = xr.DataArray(np.zeros((1, 5, 10), int), dims=("mid", "aug_param", "sample"),
                           coords={"sample": np.arange(10) + 1})
    with pytest.raises(InputError, match="responses and predictions do not line up"):
        response_measures(responses.assign_coords(sample=np.arange(10)), ["consistency"],
                          identity_index=2, predictions=shifted)
    with pytest.raises(InputError, match="twice"):
        response_measures(responses, ["nv", "nv"], identity_index=2)
    value = response_measures(responses, identity_index=2)  # unavailable ones are NaN
    missing = value.isel(mid=0).to_series()
    assert np.isnan(missing["geed_kl"]) and np.isnan(missing["consistency"])
    assert np.isfinite(missing[["tv", "sv", "nv", "lee_fd", "geed_l2"]]).all()
