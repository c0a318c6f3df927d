"""The committed layout: readers see only committed changes; the next writer rolls back the rest."""

import warnings

import numpy as np
import pytest
import xarray as xr

from ml4ml import dims, store
from ml4ml.errors import StoreError
from ml4ml.store import arrays, layout
from test_store import one_probe


@pytest.fixture
def path(tmp_path):
    path = str(tmp_path / "s.zarr")
    with store.writing(path):
        store.create_store(path)
        store.init_probes(path, "d", "rotation", one_probe(), ["m1", "m2"])
        store.write_probe(path, "d", "rotation", "m1", one_probe(scale=2.0))
    return path


def plain(path, group):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return xr.open_zarr(path, group=group)


def test_every_commit_leaves_the_layout_equal_to_the_committed_one(path):
    assert layout.committed_nodes(path) == layout.actual_nodes(path)
    # the incremental commit of one group writes what zarr's full consolidation writes
    import json

    incremental = json.loads(open(f"{path}/zarr.json").read())
    with store.writing(path):
        store.commit(path)
    assert json.loads(open(f"{path}/zarr.json").read()) == incremental
    nodes = layout.committed_nodes(path)
    assert {"", "probes", "probes/d", "probes/d/rotation", "probes/d/rotation/act"} <= set(nodes)


def test_an_uncommitted_extension_is_invisible_then_rolled_back(path):
    before = plain(path, "probes/d/rotation").load()
    with store.writing(path, recover=False):
        layout.begin(path, "probes/d/rotation")
    arrays.extend_rows(store.zarr_group(path, "probes/d/rotation"), ["m3", "m4"])
    # as if the writer died here: the arrays are longer, the commit is not
    assert store.zarr_group(path, "probes/d/rotation")[dims.ACT].shape[0] == 4
    during = plain(path, "probes/d/rotation")
    assert during[dims.MID].values.tolist() == ["m1", "m2"]
    xr.testing.assert_identical(during.load(), before)
    with store.writing(path) as notes:  # the next writer
        restored = sorted(n.split("'")[1] for n in notes)
    assert all(n.startswith("restored the committed metadata of ") for n in notes)
    assert restored == sorted(f"probes/d/rotation/{name}" for name in
                              ("act", "confidence", "digest", "done", "error", "layer_name",
                               "mid", "prediction", "source_sha256"))
    assert store.zarr_group(path, "probes/d/rotation")[dims.ACT].shape[0] == 2
    assert layout.committed_nodes(path) == layout.actual_nodes(path)
    xr.testing.assert_identical(plain(path, "probes/d/rotation").load(), before)
    # and the extension can be made again, properly
    with store.writing(path):
        assert store.init_probes(path, "d", "rotation", one_probe(), ["m3"]) == ["m3"]
    assert plain(path, "probes/d/rotation")[dims.MID].values.tolist() == ["m1", "m2", "m3"]


def test_an_uncommitted_group_is_invisible_then_removed(path):
    ds = store.probe_layout(one_probe(P=3), ["m1"], np.float32, "d", "scaling")
    with store.writing(path, recover=False):
        layout.begin(path, "probes/d/scaling")
    arrays.layout_group(store.zarr_group(path), "probes/d/scaling", ds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tree = xr.open_datatree(path, engine="zarr")
    assert "scaling" not in tree["probes/d"].children
    assert store.list_groups(path, "probes") == [("d", "rotation")]
    with store.writing(path) as notes:
        assert notes == ["removed 'probes/d/scaling' (laid out, never committed)"]
    assert "probes/d/scaling" not in layout.actual_nodes(path)
    assert not store.group_exists(path, "probes/d/scaling", committed=False)


def test_a_missing_committed_node_is_damage_never_papered_over(path):
    import shutil

    shutil.rmtree(f"{path}/probes/d/rotation/act")
    with pytest.raises(StoreError, match=r"damaged: 1 committed node\(s\) are missing, e.g. "
                                         r"'probes/d/rotation/act'"):
        with store.writing(path, recover=False):
            store.recover(path, full=True)


def test_groups_committed_one_by_one_in_any_order_open_cleanly(path):
    """zarr's reader needs a parent's children side by side in the committed document;
    groups of two suites committed in turn (probes, then matrices) once broke it."""
    with store.writing(path):
        store.init_probes(path, "e", "rotation", one_probe(), ["m1"])
        store.init_probes(path, "d", "scaling", one_probe(P=3), ["m1"])
        store.init_probes(path, "a", "rotation", one_probe(), ["m1"])
    groups = ["probes/d/rotation", "probes/e/rotation", "probes/d/scaling", "probes/a/rotation"]
    for group in groups:
        assert plain(path, group)[dims.MID].values.tolist()[0] == "m1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tree = xr.open_datatree(path, engine="zarr")
    assert sorted(tree["probes"].children) == ["a", "d", "e"]
    assert sorted(tree["probes/d"].children) == ["rotation", "scaling"]
