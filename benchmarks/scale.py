"""How the measure stage scales with the number of models, on a dask LocalCluster.

For each size N (default 100, 300, 1000) it builds a synthetic store of N models on disk
(2,000 samples x 31 parameters x 2 layers, float32, through the store's own probe writes),
then, on a fresh LocalCluster (default 2 single-thread worker processes), times
``ml4ml measure``'s function on it and reports:

- seconds per model (wall time / N): linear growth means this stays flat;
- the graph's size in tasks, and tasks per model;
- each worker's peak resident memory (``VmHWM`` of a worker process that did nothing
  else), against the bound stated in docs/speed.md.

Then the incremental costs on the largest store: 10 models added and measured (the cost
of 10 models, not of N); 10 models whose rows are interleaved with finished ones (every
other row) against 10 contiguous ones; and ``update_models`` of every row of a models
table of N.

    python benchmarks/scale.py --dir /tmp/scale                    # 100, 300, 1000
    python benchmarks/scale.py --dir /tmp/scale --sizes 50 100 --workers 2

Building the stores takes longer than measuring them (about 7 MB per model on disk).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from ml4ml import dims, store  # noqa: E402

N_SAMPLES = 2_000
N_PARAMS = 31
N_LAYERS = 2
N_CLASSES = 10
SUITE, TRANSFORM = "synthetic", "rotation"


def synthetic_model(seed: int) -> xr.Dataset:
    """One model's probe dataset (what ``probe_model`` returns), worse away from identity."""
    rng = np.random.default_rng(seed)
    labels = np.random.default_rng(0).integers(0, N_CLASSES, N_SAMPLES)
    grid = np.linspace(-45.0, 45.0, N_PARAMS)
    drift = np.abs(grid / 45.0)[:, None]
    logits = rng.normal(0.0, 1.0, (N_PARAMS, N_SAMPLES, N_CLASSES)).astype(np.float32)
    logits[:, np.arange(N_SAMPLES), labels] += (3.0 * (1.0 - drift)).astype(np.float32)
    prob = np.exp(logits - logits.max(axis=2, keepdims=True))
    prob /= prob.sum(axis=2, keepdims=True)
    base = rng.gamma(2.0, 2.0, (1, N_SAMPLES, N_LAYERS, len(dims.STATS)))
    noise = rng.normal(0.0, 0.3, (N_PARAMS, N_SAMPLES, N_LAYERS, len(dims.STATS)))
    act = (base * (1.0 + 0.1 * drift[:, :, None, None]) + noise).astype(np.float32)
    coords = {
        dims.AUG_PARAM: (dims.AUG_PARAM, grid, {"units": "degrees", "transform": TRANSFORM}),
        dims.SAMPLE: (dims.SAMPLE, np.arange(N_SAMPLES, dtype=np.int64)),
        dims.LABEL: (dims.SAMPLE, labels),
        dims.CLASS: (dims.CLASS, np.arange(N_CLASSES, dtype=np.int64)),
        dims.STAT: (dims.STAT, np.array(dims.STATS, dtype=object)),
        dims.LAYER: (dims.LAYER, np.arange(N_LAYERS, dtype=np.int64)),
    }
    return xr.Dataset({
        dims.PROB: ((dims.AUG_PARAM, dims.SAMPLE, dims.CLASS), prob.astype(np.float32)),
        dims.PREDICTION: ((dims.AUG_PARAM, dims.SAMPLE), prob.argmax(axis=2).astype(np.int64)),
        dims.CONFIDENCE: ((dims.AUG_PARAM, dims.SAMPLE), prob.max(axis=2).astype(np.float32)),
        dims.ACT: ((dims.AUG_PARAM, dims.SAMPLE, dims.LAYER, dims.STAT), act),
        dims.LAYER_NAME: ((dims.LAYER,), np.array(["conv4", "fc1"], dtype=object)),
    }, coords=coords, attrs={"transform": TRANSFORM, "units": "degrees", "fgsm_epsilon": 0.0})


def mids_for(first: int, n: int) -> list[str]:
    return [f"m{i:05d}" for i in range(first, first + n)]


def add_probes(path: Path, mids: list[str], *, done=None) -> float:
    """Lay out (or extend) the probe group for ``mids`` and write their responses; the rows
    in ``done`` (default all) get their ``done`` flags. Returns the seconds taken."""
    start = time.perf_counter()
    done = set(mids if done is None else done)
    with store.writing(str(path), "benchmarks/scale.py"):
        store.create_store(str(path))
        store.init_probes(str(path), SUITE, TRANSFORM, synthetic_model(0), mids)
        with ThreadPoolExecutor(2) as pool:  # zarr and numpy leave the GIL in the writes
            results = list(pool.map(lambda m: store.write_probe_data(
                str(path), SUITE, TRANSFORM, m, synthetic_model(int(m[1:]) + 1)), mids))
        store.finish_probes(str(path), SUITE, TRANSFORM,
                            [r for r in results if r["mid"] in done], {})
    return time.perf_counter() - start


def mark_done(path: Path, mids: list[str]) -> None:
    """Set ``done`` for rows whose responses were written by ``add_probes`` earlier."""
    from ml4ml.store.arrays import set_flags

    group = store.probe_group(SUITE, TRANSFORM)
    with store.writing(str(path), "benchmarks/scale.py"):
        zgroup = store.zarr_group(str(path), group, committed=True)
        set_flags(zgroup, dims.DONE, store.mid_positions(zgroup, mids, str(path), group), True)


def _peak_rss_mib() -> float:
    """This process's peak resident memory (``VmHWM``, MiB). Not ``ru_maxrss``: Linux keeps
    that across exec, so a worker would report the peak of the process that spawned it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_on_cluster(path: Path, workers: int) -> dict:
    """``measure_store`` on a fresh LocalCluster; seconds, tasks and worker peak memory."""
    from dask.distributed import Client, LocalCluster

    from ml4ml.measure.stage import measure_store

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        before = client.run(_peak_rss_mib)
        start = time.perf_counter()
        (report,) = measure_store(str(path))
        seconds = time.perf_counter() - start
        peaks = client.run(_peak_rss_mib)
    return {"seconds": seconds, "measured": len(report.measured), "tasks": report.tasks,
            "worker_peak_mib": sorted(peaks.values()),
            "worker_start_mib": sorted(before.values())}


def time_update_models(path: Path, n: int) -> float:
    """Seconds of one ``update_models`` call writing every row of a models table of ``n``."""
    mids = mids_for(0, n)
    table = xr.Dataset({"seed": (dims.MID, np.arange(n, dtype=np.int64)),
                        "recipe": (dims.MID, np.array(["r"] * n, dtype=object))},
                       coords={dims.MID: np.array(mids, dtype=object)})
    rows = xr.Dataset({"accuracy": (dims.MID, np.linspace(0.5, 0.9, n)),
                       "trained": (dims.MID, np.ones(n, dtype=bool))},
                      coords={dims.MID: np.array(mids, dtype=object)})
    with store.writing(str(path), "benchmarks/scale.py"):
        store.create_store(str(path))
        store.add_models(str(path), table)
        start = time.perf_counter()
        store.update_models(str(path), rows, last=("trained",))
        return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="folder for the synthetic stores")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    parser.add_argument("--add", type=int, default=10, help="models added at the end")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    args = parser.parse_args(argv)
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sorted(args.sizes):
        path = folder / f"scale-{n}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        built = add_probes(path, mids_for(0, n))
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        result = measure_on_cluster(path, args.workers)
        assert result["measured"] == n, result
        rows.append((n, result))
        print(f"N={n}: built in {built:.0f} s ({size / 2**30:.2f} GiB); measured in "
              f"{result['seconds']:.1f} s = {result['seconds'] / n:.4f} s per model; "
              f"{result['tasks']} tasks ({result['tasks'] / n:.1f} per model); worker "
              f"peak RSS {', '.join(f'{m:.0f}' for m in result['worker_peak_mib'])} MiB "
              f"(at start {', '.join(f'{m:.0f}' for m in result['worker_start_mib'])})",
              flush=True)
        if n != max(args.sizes) and not args.keep:
            shutil.rmtree(path)
    n, _ = rows[-1]
    path = folder / f"scale-{n}.zarr"
    k = args.add
    # k new models in a store of n
    add_probes(path, mids_for(n, k))
    added = measure_on_cluster(path, args.workers)
    assert added["measured"] == k, added
    # k models interleaved with finished ones (every other row) against k contiguous
    fresh = mids_for(n + k, 2 * k)
    add_probes(path, fresh, done=fresh[0::2])
    measure_on_cluster(path, args.workers)  # the rows between: measured now
    mark_done(path, fresh[1::2])
    interleaved = measure_on_cluster(path, args.workers)
    assert interleaved["measured"] == k, interleaved
    print(f"+{k} models to N={n}: {added['seconds']:.2f} s ({added['tasks']} tasks), "
          f"{added['seconds'] / k:.3f} s per model added; {k} interleaved rows: "
          f"{interleaved['seconds']:.2f} s ({interleaved['tasks']} tasks)", flush=True)
    table = folder / "update-models.zarr"
    shutil.rmtree(table, ignore_errors=True)
    print(f"update_models of {n} rows: {time_update_models(table, n):.3f} s", flush=True)
    shutil.rmtree(table)
    if not args.keep:
        shutil.rmtree(path)
    sizes = np.array([r[0] for r in rows], dtype=float)
    per_model = np.array([r[1]["seconds"] / r[0] for r in rows])
    tasks = np.array([r[1]["tasks"] / r[0] for r in rows])
    peaks = np.array([max(r[1]["worker_peak_mib"]) for r in rows])
    print("summary: N " + " ".join(f"{int(s):>7d}" for s in sizes))
    print("  s/model " + " ".join(f"{v:7.4f}" for v in per_model))
    print("  tasks/model " + " ".join(f"{v:7.1f}" for v in tasks))
    print("  worker peak MiB " + " ".join(f"{v:7.0f}" for v in peaks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
