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
function (timed per model) into a store of ``--models / 2`` models and one of 1.5 x
``--models``, and times ``ml4ml measure`` on fresh copies of both, best of ``--repeat``
(2): the command itself (a ``python -m ml4ml measure`` subprocess, as a user runs it) and
its function ``measure_store`` in this process after a warm-up run, each as marginal
seconds per model (the difference over the extra models, so fixed costs cancel); then
where the time goes (seconds in each part of the pass). ``--codec`` picks how the probe
responses are stored, to compare store size, read throughput and measure time:

    python benchmarks/measures.py --store /tmp/bench --models 8     # 4 vs 12 models
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def run_store(n_models: int, folder, codec: str, repeat: int = 2) -> None:
    """Import 1.5 x n models (timed per model) into stores of n/2 and 3n/2, then time
    ``ml4ml measure`` on them: the command (a subprocess) and its function in process,
    marginal seconds per model, side by side, and where the time goes."""
    from pathlib import Path

    from ml4ml.store.importing import import_legacy

    _set_codec(codec)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = folder / "npy"
    files.mkdir(exist_ok=True)
    small, large = max(n_models // 2, 1), max(n_models // 2, 1) + n_models
    imports, stores = [], {}
    for n in (small, large):
        path = stores[n] = folder / f"store-{codec}-{n}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        for seed in range(1, n + 1):
            results_file, act_file = _write_reference_files(files, seed)
            t0 = time.perf_counter()
            import_legacy(path, f"m{seed:04d}", results_file, act_file)
            if n == large:
                imports.append(time.perf_counter() - t0)
            results_file.unlink()
            act_file.unlink()
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        probe_files = sum(f.stat().st_size for f in (path / "probes").rglob("*") if f.is_file())
        raw = n * N_PARAMS * N_SAMPLES * (8 + 8 + 8 * N_LAYERS * len(dims.STATS))
        print(f"{codec}: {n} models imported: store {size / 2**20:.0f} MiB, probes "
              f"{probe_files / 2**20:.0f} MiB for {raw / 2**20:.0f} MiB raw "
              f"(ratio {raw / probe_files:.2f})")
        if n == large:
            _read_throughput(path, raw)
    print(f"{codec}: import-legacy {np.median(imports):.3f} s per model (median of "
          f"{len(imports)})")
    work = folder / "work"
    command = _command_seconds(stores, work, codec, repeat)
    in_process = _in_process_seconds(stores, work, repeat)
    phases = _phase_seconds(stores, work)
    shutil.rmtree(work, ignore_errors=True)
    per_model = {name: [(seconds[large][k] - seconds[small][k]) / (large - small)
                        for k in (0, 1)]
                 for name, seconds in (("command", command), ("in process", in_process))}
    print(f"{codec}: ml4ml measure, marginal per model ({large} vs {small} models, best of "
          f"{repeat}): command {per_model['command'][0]:.3f} s "
          f"({per_model['command'][1]:.3f} CPU s; a fresh 'ml4ml measure' process, "
          f"{command['nothing'][0]:.2f} s for a run with nothing to measure: start-up, "
          f"imports, opening, lineage) | in process {per_model['in process'][0]:.3f} s "
          f"({per_model['in process'][1]:.3f} CPU s; measure_store after a warm-up run) | "
          f"goal <= 0.06 s")
    _print_phases(phases, small, large)


def _fresh_copy(stores: dict, n: int, work) -> str:
    """A copy of the imported store of ``n`` models to measure (each timed run measures)."""
    target = work / f"copy-{n}.zarr"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(stores[n], target)
    return str(target)


def _command_seconds(stores: dict, work, codec: str, repeat: int) -> dict:
    """Best wall seconds of ``python -m ml4ml measure STORE -q`` per store size, and of a
    second run with nothing left to measure (``"nothing"``: the command's fixed cost)."""
    import resource
    import subprocess

    if CODECS[codec] is not None:  # the command writes with the default codecs
        print(f"  (the command writes with the default codecs, not {codec})")
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    command = [sys.executable, "-m", "ml4ml", "measure", "-q"]

    def timed(path) -> tuple[float, float]:
        """(wall, CPU) seconds of one ``ml4ml measure`` process."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(command + [path], env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)

    best = {}
    for attempt in range(repeat):
        for n in stores:
            path = _fresh_copy(stores, n, work)
            best[n] = min(best.get(n, (np.inf, np.inf)), timed(path))
            best["nothing"] = min(best.get("nothing", (np.inf, np.inf)), timed(path))
            print(f"  run {attempt + 1}: command, {n} models: {best[n][0]:.2f} s, "
                  f"{best[n][1]:.2f} CPU s (best so far)")
    return best


def _in_process_seconds(stores: dict, work, repeat: int) -> dict:
    """Best wall seconds of ``measure_store`` per store size, in this process, after one
    warm-up run (its first call imports and sets up what later calls reuse: timed in the
    smaller store, that would come off the marginal cost)."""
    from ml4ml.measure.stage import measure_store

    small = min(stores)
    measure_store(_fresh_copy(stores, small, work))  # warm-up
    best = {}
    for attempt in range(repeat):
        for n in stores:
            path = _fresh_copy(stores, n, work)
            t0, cpu0 = time.perf_counter(), time.process_time()
            measure_store(path)
            timed = (time.perf_counter() - t0, time.process_time() - cpu0)
            best[n] = min(best.get(n, (np.inf, np.inf)), timed)
            print(f"  run {attempt + 1}: in process, {n} models: {best[n][0]:.2f} s, "
                  f"{best[n][1]:.2f} CPU s (best so far)")
    return best


# where ``ml4ml measure``'s time goes: (module, attribute, what it is); each call's wall
# seconds are summed over the threads that run them (two dask threads on two cores)
PHASES = (
    ("xarray.backends.zarr", "ZarrArrayWrapper.__getitem__", "read probe chunks (zarr)"),
    ("ml4ml.measure.matrices", "_variance_matrices_block", "variance matrices (kernel)"),
    ("ml4ml.measure.measures", "_measures_block", "measures from matrices (kernel)"),
    ("ml4ml.store.rows", "_write_one_row", "write each model's rows (task)"),
    ("ml4ml.store.rows", "RowWrites.finish", "lineage + done flags (driver)"),
    ("ml4ml.store", "prepare_rows", "lay out / extend groups (driver)"),
    ("ml4ml.measure.stage", "_graph_size", "count graph tasks (driver)"),
    ("ml4ml.measure.stage", "refresh_level_modules", "level_module refresh (driver)"),
    ("ml4ml.measure.stage", "_compute_rows", "compute + write, all (driver waits)"),
)


def _phase_seconds(stores: dict, work) -> dict:
    """{n: {phase: seconds}} of one in-process ``measure_store`` per store size (after a
    warm-up), each listed function wrapped by a timer."""
    import functools
    import importlib
    import threading

    from ml4ml.measure.stage import measure_store

    lock = threading.Lock()
    totals: dict = {}
    originals = []

    def timed(function, label):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                with lock:
                    totals[label] = totals.get(label, 0.0) + time.perf_counter() - t0
        return wrapper

    for module_name, attribute, label in PHASES:
        owner = importlib.import_module(module_name)
        *outer, name = attribute.split(".")
        for part in outer:
            owner = getattr(owner, part)
        originals.append((owner, name, getattr(owner, name)))
        setattr(owner, name, timed(getattr(owner, name), label))
    try:
        measure_store(_fresh_copy(stores, min(stores), work))  # warm-up
        out = {}
        for n in stores:
            path = _fresh_copy(stores, n, work)
            totals.clear()
            t0 = time.perf_counter()
            measure_store(path)
            out[n] = dict(totals, **{"measure_store, all": time.perf_counter() - t0})
        return out
    finally:
        for owner, name, function in originals:
            setattr(owner, name, function)


def _print_phases(phases: dict, small: int, large: int) -> None:
    print(f"  where the time goes, in process (seconds summed over threads; marginal per "
          f"model = ({large} - {small} models) / {large - small}):")
    for label in [label for *_, label in PHASES] + ["measure_store, all"]:
        a, b = phases[small].get(label, 0.0), phases[large].get(label, 0.0)
        print(f"    {label:40s} {a:6.2f} s | {b:6.2f} s | {(b - a) / (large - small):.3f} s "
              f"per model")


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
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed runs (default 3; 2 with --store)")
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
        run_store(args.models, args.store, args.codec, args.repeat or 2)
        return 0
    if args.responses:
        run_responses(args.models, args.samples, args.repeat or 3)
        return 0
    best = run(args.models, args.workers, args.repeat or 3)
    print(f"best: {best:.3f} s per model (goal <= 0.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
