"""Speed of variance_matrices + measure_database on a synthetic CIFAR-sized database.

Each model: 10,000 test samples, 31 rotation angles, 2 recorded layers x 8 statistics,
float32 responses, 10 classes. The probe dataset is dask-backed, one model per chunk, and
held in memory (persisted) before timing, as if read from the store; the timed step is
building the graph and computing the matrices and measures datasets together.

    python benchmarks/measures.py                 # 8 models, default threaded scheduler
    python benchmarks/measures.py --models 16 --workers 2   # dask.distributed LocalCluster

``--responses`` times the response measures (ml4ml.measure.responses: every built-in
one, on the softmax probabilities and on each layer's 8 statistics as units) against the
matrix side above on the same in-memory models, e.g. the demo's sizes:

    python benchmarks/measures.py --responses --models 150 --samples 599

``--store DIR`` goes through real stores on disk, the user's path: it writes each model
as the reference's two .npy files (float64), imports them with ``ml4ml import-legacy``'s
function (timed per model), and times ``ml4ml measure``'s function on a store of
``--models`` models and on one of twice as many; the marginal seconds per model is the
difference over the extra models (startup excluded). ``--codec`` picks how the probe
responses are stored, to compare store size, read throughput and measure time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# one BLAS thread per dask worker thread: the scheduler supplies the parallelism
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from ml4ml import dims  # noqa: E402
from ml4ml.measure.matrices import variance_matrices  # noqa: E402
from ml4ml.measure.measures import measure_database  # noqa: E402

N_SAMPLES = 10_000
N_PARAMS = 31
N_LAYERS = 2
N_CLASSES = 10
CLEAN_ACCURACY = 0.85


def _model_block(seed, n_params, n_samples, block_info=None):
    """One model's synthetic responses: (prediction, confidence, act) for model ``seed``."""
    rng = np.random.default_rng(seed)
    labels = np.random.default_rng(0).integers(0, N_CLASSES, n_samples)
    drift = np.abs(np.linspace(-1.0, 1.0, n_params))[:, None]  # worse away from identity
    wrong = rng.random((n_params, n_samples)) > CLEAN_ACCURACY - 0.2 * drift
    prediction = np.where(wrong, rng.integers(0, N_CLASSES, (n_params, n_samples)), labels)
    confidence = (0.5 + 0.5 * rng.random((n_params, n_samples)) - 0.2 * drift).astype(np.float32)
    base = rng.gamma(2.0, 2.0, (1, n_samples, N_LAYERS, len(dims.STATS)))
    noise = rng.normal(0.0, 0.3, (n_params, n_samples, N_LAYERS, len(dims.STATS)))
    act = (base * (1.0 + 0.1 * drift[:, :, None, None]) + noise).astype(np.float32)
    return prediction, confidence, act


def synthetic_probe(n_models: int, n_params: int = N_PARAMS, n_samples: int = N_SAMPLES):
    """A dask-backed probe dataset (mid, aug_param, sample, ...), one model per chunk."""
    blocks = [dask.delayed(_model_block, nout=3)(seed, n_params, n_samples)
              for seed in range(1, n_models + 1)]
    shape_2d = (1, n_params, n_samples)
    prediction = da.concatenate(
        [da.from_delayed(b[0], shape_2d[1:], np.int64)[None] for b in blocks], axis=0
    )
    confidence = da.concatenate(
        [da.from_delayed(b[1], shape_2d[1:], np.float32)[None] for b in blocks], axis=0
    )
    act_shape = (n_params, n_samples, N_LAYERS, len(dims.STATS))
    act = da.concatenate(
        [da.from_delayed(b[2], act_shape, np.float32)[None] for b in blocks], axis=0
    )
    labels = np.random.default_rng(0).integers(0, N_CLASSES, n_samples)
    mids = np.array([f"m{i:04d}" for i in range(n_models)], dtype=object)
    layer_names = np.array([[f"conv{8 + i}" for i in range(N_LAYERS)]] * n_models, dtype=object)
    return xr.Dataset(
        {
            dims.PREDICTION: ((dims.MID, dims.AUG_PARAM, dims.SAMPLE), prediction),
            dims.CONFIDENCE: ((dims.MID, dims.AUG_PARAM, dims.SAMPLE), confidence),
            dims.ACT: ((dims.MID, dims.AUG_PARAM, dims.SAMPLE, dims.LAYER, dims.STAT), act),
            dims.LAYER_NAME: ((dims.MID, dims.LAYER), layer_names),
        },
        coords={
            dims.MID: mids,
            dims.AUG_PARAM: (
                dims.AUG_PARAM,
                np.linspace(-15.0, 15.0, n_params),
                {"units": "degrees", "transform": "rotation"},
            ),
            dims.SAMPLE: np.arange(n_samples),
            dims.LABEL: (dims.SAMPLE, labels),
            dims.STAT: np.array(dims.STATS, dtype=object),
            dims.CLASS: np.arange(N_CLASSES),
        },
    )


def _probabilities_block(seed, n_params, n_samples):
    """One model's synthetic softmax outputs (aug_param, sample, class), float32."""
    rng = np.random.default_rng(10_000 + seed)
    drift = np.abs(np.linspace(-1.0, 1.0, n_params))[:, None, None]
    logits = rng.normal(0.0, 2.0, (1, n_samples, N_CLASSES)) * (1.0 - 0.5 * drift)
    logits = logits + rng.normal(0.0, 0.5 + drift, (n_params, n_samples, N_CLASSES))
    prob = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (prob / prob.sum(axis=-1, keepdims=True)).astype(np.float32)


def synthetic_probabilities(n_models: int, n_params: int = N_PARAMS,
                            n_samples: int = N_SAMPLES) -> xr.DataArray:
    """Dask-backed ``prob`` (mid, aug_param, sample, class), one model per chunk."""
    shape = (n_params, n_samples, N_CLASSES)
    prob = da.concatenate([
        da.from_delayed(dask.delayed(_probabilities_block)(seed, n_params, n_samples), shape,
                        np.float32)[None] for seed in range(1, n_models + 1)], axis=0)
    return xr.DataArray(prob, dims=(dims.MID, dims.AUG_PARAM, dims.SAMPLE, dims.CLASS),
                        name=dims.PROB)


def response_graph(probe: xr.Dataset):
    """The response measures of every model: the probabilities (units: classes) and each
    layer (units: its 8 statistics), as ``ml4ml measure`` would ask for them."""
    from ml4ml.measure.responses import response_measures

    identity = probe.sizes[dims.AUG_PARAM] // 2
    prob = probe[dims.PROB].rename({dims.CLASS: dims.UNIT})
    act = probe[dims.ACT].rename({dims.STAT: dims.UNIT})
    predictions = probe[dims.PREDICTION]
    return (response_measures(prob, identity_index=identity, predictions=predictions),
            response_measures(act, identity_index=identity, predictions=predictions))


def run_responses(n_models: int, n_samples: int, repeat: int) -> None:
    """Seconds per model of the matrix side, the response measures, and both in one graph."""
    from ml4ml.cluster import keep_freed_memory_once

    keep_freed_memory_once()  # the response kernel sets it on its first block: both sides alike
    probe = synthetic_probe(n_models, n_samples=n_samples)
    probe[dims.PROB] = synthetic_probabilities(n_models, n_samples=n_samples)
    probe = probe.persist()
    graphs = {
        "matrices + measures": lambda: (variance_matrices(probe), measure_database(probe)),
        "response measures": lambda: response_graph(probe),
        "both, one graph": lambda: (variance_matrices(probe), measure_database(probe),
                                    *response_graph(probe)),
    }
    best = {}
    for attempt in range(repeat):
        for name, graph in graphs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            dask.compute(*graph())
            elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            best[name] = min(best.get(name, (np.inf, np.inf)), (elapsed, cpu))
            print(f"run {attempt + 1}: {name}: {elapsed / n_models * 1e3:.2f} ms per model "
                  f"({cpu / n_models * 1e3:.2f} CPU ms)")
    matrix, response = best["matrices + measures"], best["response measures"]
    print(f"best of {repeat}, {n_models} models x {N_PARAMS} x {n_samples} samples: matrices "
          f"{matrix[0] / n_models * 1e3:.2f} ms per model, responses "
          f"{response[0] / n_models * 1e3:.2f} ms per model = {response[0] / matrix[0]:.0%} of "
          f"the matrix side ({response[1] / matrix[1]:.0%} in CPU time); both in one graph "
          f"{best['both, one graph'][0] / n_models * 1e3:.2f} ms per model")


def run(n_models: int, workers: int | None, repeat: int) -> float:
    """Best seconds per model over ``repeat`` runs; prints each run."""
    client = cluster = None
    if workers:
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
        client = Client(cluster)
    try:
        probe = synthetic_probe(n_models).persist()
        if client is not None:
            from dask.distributed import wait

            wait(probe)
        best = float("inf")
        for attempt in range(repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            # both outputs of the measure stage in one graph: the matrices are shared
            matrices, database = dask.compute(variance_matrices(probe), measure_database(probe))
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - start_cpu  # this process's threads only
            per_model = elapsed / n_models
            best = min(best, per_model)
            cpu_note = "" if client is not None else f", {cpu / n_models:.3f} CPU s per model"
            print(
                f"run {attempt + 1}: {n_models} models in {elapsed:.2f} s = "
                f"{per_model:.3f} s per model{cpu_note}"
            )
        value = database[dims.VALUE]
        finite = float(np.isfinite(value.sel({dims.SPLIT: "correct"}).values).mean())
        print(f"matrix {dict(matrices[dims.MATRIX].sizes)}")
        print(f"value {dict(value.sizes)}; finite (correct split): {finite:.3f}")
        return best
    finally:
        if client is not None:
            client.close()
            cluster.close()


CODECS = {
    "default": None,  # act/confidence raw, everything else zstd level 1 (arrays.py)
    "zstd0-all": ("zstd", 0),
    "zstd1-all": ("zstd", 1),
    "blosc-lz4-shuffle-all": ("blosc-lz4", 5),
    "raw-all": ("raw", 0),
}


def _set_codec(name: str) -> None:
    from zarr.codecs import BloscCodec, ZstdCodec

    from ml4ml.store import arrays

    choice = CODECS[name]
    if choice is None:
        return
    kind, level = choice
    arrays.RAW_VARIABLES = frozenset()
    arrays.COMPRESSOR = {"zstd": lambda: ZstdCodec(level=level),
                         "blosc-lz4": lambda: BloscCodec(cname="lz4", clevel=level,
                                                         shuffle="shuffle"),
                         "raw": lambda: None}[kind]()


def _write_reference_files(folder, seed: int):
    """One model's results (P, n, 5) and act (P, n, L, 13) files, the reference's layout."""
    prediction, confidence, act = _model_block(seed, N_PARAMS, N_SAMPLES)
    labels = np.random.default_rng(0).integers(0, N_CLASSES, N_SAMPLES)
    params = np.linspace(-15.0, 15.0, N_PARAMS)
    idx = np.arange(N_SAMPLES, dtype=np.float64)
    results = np.empty((N_PARAMS, N_SAMPLES, 5))
    results[..., 0] = idx
    results[..., 1] = labels
    results[..., 2] = prediction
    results[..., 3] = confidence
    results[..., 4] = params[:, None]
    acts = np.empty((N_PARAMS, N_SAMPLES, N_LAYERS, 13))
    acts[..., 0] = idx[None, :, None]
    acts[..., 1] = labels[None, :, None]
    acts[..., 2] = prediction[:, :, None]
    acts[..., 3] = np.array([8, 9])[None, None, :]
    acts[..., 4:12] = act.astype(np.float64) * (1.0 + 1e-9 * seed)  # float64, not f32 values
    acts[..., 12] = params[:, None, None]
    results_file, act_file = folder / f"results{seed}.npy", folder / f"act{seed}.npy"
    np.save(results_file, results)
    np.save(act_file, acts)
    return results_file, act_file


def run_store(n_models: int, folder, codec: str) -> None:
    """Import 1.5 x n models (timed per model), then measure stores of n/2 and 3n/2."""
    import shutil
    from pathlib import Path

    from ml4ml.measure.stage import measure_store
    from ml4ml.store.importing import import_legacy

    _set_codec(codec)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = folder / "npy"
    files.mkdir(exist_ok=True)
    small, large = max(n_models // 2, 1), max(n_models // 2, 1) + n_models
    seconds = {}
    for n in (small, large):
        path = folder / f"store-{codec}-{n}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        for seed in range(1, n + 1):
            results_file, act_file = _write_reference_files(files, seed)
            t0 = time.perf_counter()
            import_legacy(path, f"m{seed:04d}", results_file, act_file)
            if n == large:
                seconds.setdefault("import", []).append(time.perf_counter() - t0)
            results_file.unlink()
            act_file.unlink()
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        probe_files = sum(f.stat().st_size for f in (path / "probes").rglob("*") if f.is_file())
        t0 = time.perf_counter()
        (report,) = measure_store(str(path))
        seconds[n] = time.perf_counter() - t0
        raw = n * N_PARAMS * N_SAMPLES * (8 + 8 + 8 * N_LAYERS * len(dims.STATS))
        print(f"{codec}: {n} models imported and measured: measure {seconds[n]:.2f} s "
              f"({report.summary()}); store {size / 2**20:.0f} MiB, probes "
              f"{probe_files / 2**20:.0f} MiB for {raw / 2**20:.0f} MiB raw "
              f"(ratio {raw / probe_files:.2f})")
        if n == large:
            _read_throughput(path, raw)
    marginal = (seconds[large] - seconds[small]) / (large - small)
    imports = np.asarray(seconds["import"])
    print(f"{codec}: import-legacy {np.median(imports):.3f} s per model (median of "
          f"{imports.size}); measure marginal {marginal:.3f} s per model (goal <= 0.1)")


def _read_throughput(path, raw_bytes: float) -> None:
    """Seconds to read every probe response the measure pass reads, through the store."""
    from ml4ml import store

    ds = store.open_probes(str(path), "legacy", "rotation")
    parts = [ds[dims.ACT].data, ds[dims.CONFIDENCE].data, ds[dims.PREDICTION].data]
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        dask.compute(*[p.sum() for p in parts])
        best = min(best, time.perf_counter() - t0)
    print(f"  read act + confidence + prediction: {raw_bytes / best / 1e9:.2f} GB/s raw "
          f"({best:.2f} s for {raw_bytes / 2**20:.0f} MiB)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=8, help="number of models (default 8)")
    parser.add_argument(
        "--workers", type=int, default=None,
        help="run on a dask.distributed LocalCluster of N single-thread processes",
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument("--store", metavar="DIR", help="go through real stores in DIR")
    parser.add_argument("--responses", action="store_true",
                        help="time the response measures against the matrix side")
    parser.add_argument("--samples", type=int, default=N_SAMPLES,
                        help=f"test samples per model with --responses (default {N_SAMPLES})")
    parser.add_argument("--codec", default="default", choices=sorted(CODECS),
                        help="how probe responses are stored (with --store)")
    args = parser.parse_args(argv)
    if args.models < 1:
        parser.error("--models must be at least 1")
    if args.store:
        run_store(args.models, args.store, args.codec)
        return 0
    if args.responses:
        run_responses(args.models, args.samples, args.repeat)
        return 0
    best = run(args.models, args.workers, args.repeat)
    print(f"best: {best:.3f} s per model (goal <= 0.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
