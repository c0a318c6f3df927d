"""Speed of variance_matrices + measure_database on a synthetic CIFAR-sized database.

Each model: 10,000 test samples, 31 rotation angles, 2 recorded layers x 8 statistics,
float32 responses, 10 classes. The probe dataset is dask-backed, one model per chunk, and
held in memory (persisted) before timing, as if read from the store; the timed step is
building the graph and computing the matrices and measures datasets together.

    python benchmarks/measures.py                 # 8 models, default threaded scheduler
    python benchmarks/measures.py --models 16 --workers 2   # dask.distributed LocalCluster
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=8, help="number of models (default 8)")
    parser.add_argument(
        "--workers", type=int, default=None,
        help="run on a dask.distributed LocalCluster of N single-thread processes",
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (default 3)")
    args = parser.parse_args(argv)
    if args.models < 1:
        parser.error("--models must be at least 1")
    best = run(args.models, args.workers, args.repeat)
    print(f"best: {best:.3f} s per model (goal <= 0.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
