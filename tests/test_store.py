"""The store: region writes, done flags, fill values, growth, models table, memory:// URLs."""

import warnings

import numpy as np
import pytest
import xarray as xr

from ml4ml import dims, store
from ml4ml.errors import StoreError


def one_probe(P=5, n=4, layers=2, scale=1.0, labels=None):
    rng = np.random.RandomState(int(scale * 10))
    return xr.Dataset(
        {
            dims.CONFIDENCE: ((dims.AUG_PARAM, dims.SAMPLE), scale * rng.rand(P, n)),
            dims.PREDICTION: ((dims.AUG_PARAM, dims.SAMPLE), rng.randint(0, 3, (P, n))),
            dims.ACT: ((dims.AUG_PARAM, dims.SAMPLE, dims.LAYER, dims.STAT),
                       rng.rand(P, n, layers, 8)),
            dims.LAYER_NAME: ((dims.LAYER,), np.array([f"conv{8 + i}" for i in range(layers)])),
        },
        coords={
            dims.AUG_PARAM: (dims.AUG_PARAM, np.arange(P) - P // 2.0, {"units": "degrees"}),
            dims.SAMPLE: np.arange(n),
            dims.LABEL: (dims.SAMPLE, np.arange(n) % 3 if labels is None else labels),
            dims.STAT: list(dims.STATS),
        },
    )


@pytest.fixture(params=["local", "memory"])
def path(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "s.zarr")
    return f"memory://test-{request.node.name}-{np.random.randint(1 << 30)}.zarr"


def test_create_store_records_schema_and_precision(path):
    with store.writing(path):
        attrs = store.create_store(path, precision="float64")
        assert attrs[store.SCHEMA_ATTR] == store.SCHEMA_VERSION == 2
        assert store.store_precision(path) == np.float64
        # reopening keeps the store's own precision
        store.create_store(path, precision="float32")
    assert store.store_precision(path) == np.float64


def test_layout_changes_need_the_writer_lock(path):
    with store.writing(path):
        store.create_store(path)
    with pytest.raises(StoreError, match="needs the store's writer lock"):
        store.init_probes(path, "digits", "rotation", one_probe(), ["m1"])
    assert store.list_groups(path, "probes") == []


def test_regions_done_flags_fill_values_and_growth(path):
    a, b = one_probe(scale=1.0), one_probe(scale=2.0)
    with store.writing(path):
        store.create_store(path)
        assert store.init_probes(path, "digits", "rotation", a, ["m1", "m2"]) == ["m1", "m2"]
        laid_out = store.open_probes(path, "digits", "rotation")
        # a new layout: nothing done, every entry reads as its declared fill value
        assert laid_out[dims.DONE].values.tolist() == [False, False]
        assert (laid_out[dims.PREDICTION].values == -1).all()
        assert np.isnan(laid_out[dims.CONFIDENCE].values).all()
        assert laid_out[store.DIGEST].values.tolist() == ["", ""]
        assert laid_out[dims.CONFIDENCE].chunks[0] == (1, 1)  # one chunk per model
        digest = store.write_probe(path, "digits", "rotation", "m2", b, source_sha256="abc")
        assert store.init_probes(path, "digits", "rotation", a, ["m2", "m3"]) == ["m3"]
        store.write_probe(path, "digits", "rotation", "m3", a)
    ds = store.open_probes(path, "digits", "rotation")
    assert ds[dims.MID].values.tolist() == ["m1", "m2", "m3"]
    assert store.done_mids(ds) == ["m2", "m3"]
    np.testing.assert_array_equal(ds[dims.CONFIDENCE].sel(mid="m2").values,
                                  b[dims.CONFIDENCE].values.astype(np.float32))
    np.testing.assert_array_equal(ds[dims.ACT].sel(mid="m3").values,
                                  a[dims.ACT].values.astype(np.float32))
    np.testing.assert_array_equal(ds[dims.PREDICTION].sel(mid="m3").values,
                                  a[dims.PREDICTION].values)
    assert (ds[dims.PREDICTION].sel(mid="m1").values == -1).all()
    assert np.isnan(ds[dims.CONFIDENCE].sel(mid="m1").values).all()
    assert ds[dims.CONFIDENCE].dtype == np.float32
    assert ds[dims.LAYER_NAME].sel(mid="m3").values.tolist() == ["conv8", "conv9"]
    assert ds[dims.AUG_PARAM].attrs["units"] == "degrees"
    assert ds[store.SOURCE].sel(mid="m2").values.item() == "abc"
    assert ds[store.DIGEST].sel(mid="m2").values.item() == digest and len(digest) == 64
    # the digest is that of the stored responses
    stored = {name: ds[name].sel(mid="m2").values for name in
              (dims.PREDICTION, dims.CONFIDENCE, dims.ACT, dims.LAYER_NAME)}
    stored[dims.LAYER_NAME] = stored[dims.LAYER_NAME].astype(object)
    assert store.probe_digest(stored) == digest
    # readers need nothing but xarray, and get no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = xr.open_zarr(path, group="probes/digits/rotation")
    assert dict(plain.sizes) == {"mid": 3, "aug_param": 5, "sample": 4, "layer": 2, "stat": 8}
    assert plain[dims.LAYER].values.tolist() == [0, 1]


def test_a_done_model_written_again_has_its_flag_cleared_first(tmp_path):
    """The flag goes down before the data is overwritten and up only after it."""
    path = str(tmp_path / "s.zarr")
    with store.writing(path):
        store.create_store(path)
        store.init_probes(path, "d", "rotation", one_probe(), ["m1"])
        store.write_probe(path, "d", "rotation", "m1", one_probe())
        group = store.zarr_group(path, "probes/d/rotation")
        events = []
        real = type(group[dims.CONFIDENCE].store).set

        async def recording(self, key, value):
            events.append(key)
            return await real(self, key, value)

        real_delete = type(group[dims.CONFIDENCE].store).delete

        async def recording_delete(self, key):  # an all-False chunk is deleted, not written
            events.append(key)
            return await real_delete(self, key)

        cls = type(group[dims.CONFIDENCE].store)
        cls.set, cls.delete = recording, recording_delete
        try:
            store.write_probe(path, "d", "rotation", "m1", one_probe(scale=3.0))
        finally:
            cls.set, cls.delete = real, real_delete
    keys = events
    data = [k for k, key in enumerate(keys) if "/confidence/c" in key or "/act/c" in key]
    done = [k for k, key in enumerate(keys) if "/done/c" in key]
    digest = [k for k, key in enumerate(keys) if "/digest/c" in key]
    # done cleared first, then the data, the lineage, and done set last
    assert len(done) == 2 and data and digest
    assert done[0] < min(data) and max(data) < digest[0] < done[1] == len(keys) - 1
    assert store.done_mids(store.open_probes(path, "d", "rotation")) == ["m1"]


def test_incompatible_probe_is_refused_and_store_unchanged(path):
    with store.writing(path):
        store.create_store(path)
        store.init_probes(path, "digits", "rotation", one_probe(), ["m1"])
        before = store.open_probes(path, "digits", "rotation").load()
        with pytest.raises(StoreError, match="'label' differs"):
            store.init_probes(path, "digits", "rotation", one_probe(labels=[2, 2, 2, 2]), ["m9"])
        with pytest.raises(StoreError, match="dimension 'layer' has size 3, the group has 2"):
            store.init_probes(path, "digits", "rotation", one_probe(layers=3), ["m9"])
        with pytest.raises(StoreError, match="'aug_param' differs"):
            store.write_probe(path, "digits", "rotation", "m1", one_probe(P=7))
        with pytest.raises(StoreError, match="is not in"):
            store.write_probe(path, "digits", "rotation", "nope", one_probe())
        # one more layer: refused before any array of the region is written
        with pytest.raises(StoreError, match="dimension 'layer' has size 3, the group has 2"):
            store.write_probe(path, "digits", "rotation", "m1", one_probe(layers=3))
        with pytest.raises(StoreError, match="no group 'probes/digits/scaling'"):
            store.write_probe(path, "digits", "scaling", "m1", one_probe())
        nan = one_probe()
        nan[dims.ACT][0, 0, 0, 0] = np.nan
        with pytest.raises(Exception, match="NaN or infinite"):
            store.write_probe(path, "digits", "rotation", "m1", nan)
    xr.testing.assert_identical(before, store.open_probes(path, "digits", "rotation").load())


def test_models_table_append_and_update(path):
    with store.writing(path):
        store.create_store(path)
        t1 = xr.Dataset({"arch": ("mid", np.array(["cnn5", "cnn5"], dtype=object)),
                         "lr": ("mid", [0.1, 0.2])}, coords={"mid": ["m1", "m2"]})
        assert store.add_models(path, t1) == ["m1", "m2"]
        assert store.add_models(path, t1) == []
        t2 = xr.Dataset({"arch": ("mid", np.array(["vgg13bn"], dtype=object)),
                         "epochs": ("mid", [3])}, coords={"mid": ["t1"]})
        assert store.add_models(path, t2) == ["t1"]
        store.update_models(path, xr.Dataset({"test_accuracy": ("mid", [0.75, 0.5]),
                                              "trained": ("mid", [True, True])},
                                             coords={"mid": ["m2", "t1"]}), last=("trained",))
    table = store.read_models(path)
    assert table[dims.MID].values.tolist() == ["m1", "m2", "t1"]
    assert table["arch"].values.tolist() == ["cnn5", "cnn5", "vgg13bn"]
    assert table["epochs"].values.tolist() == [-1, -1, 3]
    np.testing.assert_array_equal(table["lr"].values, [0.1, 0.2, np.nan])
    np.testing.assert_array_equal(table["test_accuracy"].values, [np.nan, 0.75, 0.5])
    assert table["trained"].values.tolist() == [False, True, True]


def test_duplicate_ids_and_non_store_paths_are_refused(tmp_path):
    path = str(tmp_path / "s.zarr")
    with store.writing(path):
        store.create_store(path)
        with pytest.raises(StoreError, match="appears twice"):
            store.init_probes(path, "d", "rotation", one_probe(), ["m1", "m1"])
    with pytest.raises(StoreError, match="no ml4ml store"):
        store.store_attrs(str(tmp_path / "absent.zarr"))
    with pytest.raises(StoreError, match="precision"):
        store.create_store(str(tmp_path / "x.zarr"), precision="float16")
    afile = tmp_path / "file.zarr"
    afile.write_text("not a store")
    with pytest.raises(StoreError, match="is a file, not a store folder"):
        store.store_attrs(str(afile))
    with pytest.raises(StoreError, match="is a file, not a store folder"):
        with store.writing(str(afile)):
            pass
    assert afile.read_text() == "not a store"


def test_select_rows_equals_a_list_selection_without_copying_chunks(tmp_path):
    """store.select_rows gives what ``sel(mid=[...])`` gives (any order, gaps, repeats of
    runs), and its dask graph takes the stored one-model chunks as they are: no task that
    copies a chunk (a list selection adds one fancy-index task per chunk)."""
    path = str(tmp_path / "s.zarr")
    mids = [f"m{i}" for i in range(6)]
    with store.writing(path):
        store.create_store(path)
        store.init_probes(path, "d", "rotation", one_probe(), mids)
        for k, mid in enumerate(mids):
            store.write_probe(path, "d", "rotation", mid, one_probe(scale=1.0 + k))
    ds = store.open_probes(path, "d", "rotation")

    def copying_tasks(selected):
        graph = dict(selected[dims.ACT].data.__dask_graph__())
        return [key for key, task in graph.items()
                if "getitem" in str(key) and type(task).__name__ != "Alias"]

    for chosen in (["m1", "m2", "m3"], ["m0", "m2", "m3", "m5"], ["m5", "m4", "m0"], mids, []):
        selected = store.select_rows(ds, chosen)
        xr.testing.assert_identical(selected.compute(), ds.sel({dims.MID: chosen}).compute())
        np.testing.assert_array_equal(selected[dims.MID].values, chosen)
    assert copying_tasks(ds.sel({dims.MID: ["m1", "m2"]}))  # what select_rows avoids
    assert copying_tasks(store.select_rows(ds, ["m1", "m2"])) == []
    assert copying_tasks(store.select_rows(ds, ["m0", "m2", "m3", "m5"])) == []
    with pytest.raises(StoreError, match="'m9'"):
        store.select_rows(ds, ["m1", "m9"])
