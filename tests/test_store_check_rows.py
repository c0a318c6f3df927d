"""``store check`` maps a damaged chunk to the model ids it holds past the first row chunk.

Small per-model arrays (``done``, ``digest``, ...) hold ``ROW_CHUNK`` (1,024) models per
chunk along ``mid``, large ones one model per chunk: a store of more models than one row
chunk holds shows whether chunk index -> rows -> ids is right beyond chunk 0.
"""

import numpy as np
import pytest
import xarray as xr

from ml4ml import dims, store
from ml4ml.store.arrays import ROW_CHUNK
from ml4ml.store.check import check_store, repair_store

SUITE, TRANSFORM = "synthetic", "rotation"
GROUP = f"probes/{SUITE}/{TRANSFORM}"
N_MODELS = ROW_CHUNK + 76  # two row chunks: 1,024 models, then 76


def tiny_probe(k: int) -> xr.Dataset:
    """One model's probe responses, 3 parameters x 4 samples x 2 classes (model ``k``)."""
    rng = np.random.default_rng(k)
    prob = rng.dirichlet(np.ones(2), (3, 4)).astype(np.float32)
    coords = {
        dims.AUG_PARAM: (dims.AUG_PARAM, np.array([-5.0, 0.0, 5.0]),
                         {"units": "degrees", "transform": TRANSFORM}),
        dims.SAMPLE: (dims.SAMPLE, np.arange(4, dtype=np.int64)),
        dims.LABEL: (dims.SAMPLE, np.array([0, 1, 0, 1], dtype=np.int64)),
        dims.CLASS: (dims.CLASS, np.arange(2, dtype=np.int64)),
        dims.STAT: (dims.STAT, np.array(dims.STATS, dtype=object)),
        dims.LAYER: (dims.LAYER, np.arange(1, dtype=np.int64)),
    }
    return xr.Dataset({
        dims.PROB: ((dims.AUG_PARAM, dims.SAMPLE, dims.CLASS), prob),
        dims.PREDICTION: ((dims.AUG_PARAM, dims.SAMPLE), prob.argmax(axis=2)),
        dims.CONFIDENCE: ((dims.AUG_PARAM, dims.SAMPLE), prob.max(axis=2)),
        dims.ACT: ((dims.AUG_PARAM, dims.SAMPLE, dims.LAYER, dims.STAT),
                   rng.normal(size=(3, 4, 1, len(dims.STATS))).astype(np.float32)),
        dims.LAYER_NAME: ((dims.LAYER,), np.array(["conv2"], dtype=object)),
    }, coords=coords, attrs={"transform": TRANSFORM, "fgsm_epsilon": 0.0})


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A store of N_MODELS registered and probed models (their probes all done)."""
    path = str(tmp_path_factory.mktemp("rows") / "big.zarr")
    mids = [f"m{k:04d}" for k in range(N_MODELS)]
    table = xr.Dataset({"source": (dims.MID, np.array(["added"] * N_MODELS, dtype=object))},
                       coords={dims.MID: np.array(mids, dtype=object)})
    probes = [tiny_probe(k) for k in range(N_MODELS)]
    with store.writing(path, "test"):
        store.create_store(path)
        store.add_models(path, table)
        store.init_probes(path, SUITE, TRANSFORM, probes[0], mids)
        # every model's responses in one write per array (zarr writes the models' chunks
        # concurrently); the small values and flags as the probe stage writes them
        zgroup = store.zarr_group(path, GROUP, committed=True)
        for name in (dims.PROB, dims.PREDICTION, dims.CONFIDENCE, dims.ACT):
            zgroup[name][:] = np.stack([p[name].values for p in probes])
        results = [{"mid": m, "layer_name": p[dims.LAYER_NAME].values,
                    "digest": store.probe_digest({name: p[name].values.astype(object)
                                                  if name == dims.LAYER_NAME
                                                  else p[name].values
                                                  for name in p.data_vars})}
                   for m, p in zip(mids, probes)]
        store.finish_probes(path, SUITE, TRANSFORM, results, {m: f"sha-{m}" for m in mids})
    return path


@pytest.fixture
def path(big, tmp_path):
    import shutil

    shutil.copytree(big, tmp_path / "big.zarr")
    return str(tmp_path / "big.zarr")


def done_mids(path) -> set:
    ds = store.open_group(path, GROUP)
    return {str(m) for m, d in zip(ds[dims.MID].values, ds[dims.DONE].values) if d}


def test_a_damaged_second_row_chunk_names_exactly_its_models(path):
    from pathlib import Path

    zgroup = store.zarr_group(path, GROUP, mode="r", committed=True)
    assert zgroup[store.DIGEST].metadata.chunks == (ROW_CHUNK,)
    assert zgroup[dims.ACT].metadata.chunks[0] == 1
    # the second chunk of 'digest' (rows 1024..1099) truncated, and one model's own
    # 'act' chunk in the first row chunk corrupted
    digest_chunk = Path(path) / GROUP / store.DIGEST / "c" / "1"
    digest_chunk.write_bytes(digest_chunk.read_bytes()[:7])
    act_chunk = Path(path) / GROUP / dims.ACT / "c" / "1000" / "0" / "0" / "0" / "0"
    act_chunk.write_bytes(b"\x00" * 16)
    second = {f"m{k:04d}" for k in range(ROW_CHUNK, N_MODELS)}

    problems = [p for p in check_store(path) if p.where == GROUP]
    by_array = {p.what.split("'")[1]: p for p in problems}
    assert sorted(by_array) == [dims.ACT, store.DIGEST], [p.line() for p in problems]
    assert set(by_array[store.DIGEST].mids) == second
    assert by_array[dims.ACT].mids == ("m1000",)
    assert all(p.repair == "clear" for p in problems)

    mended, left = repair_store(path)
    assert left == [] and {p.what for p in mended} == {p.what for p in problems}
    all_mids = {f"m{k:04d}" for k in range(N_MODELS)}
    assert done_mids(path) == all_mids - second - {"m1000"}
    assert check_store(path) == []
