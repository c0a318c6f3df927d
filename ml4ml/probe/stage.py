"""Probe stage: every trained model of a pipeline x its suites x its transforms -> the store.

One model is one unit of work (a dask task on a cluster): it loads its checkpoint once,
probes every (suite, transform) not yet done, and writes each result into its own
region of ``probes/<suite>/<transform>`` followed by its ``done`` flag. Groups are
created (or extended with new models) by the driver before any task runs, so workers
only ever fill their own chunks.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

import numpy as np
import xarray as xr

from ml4ml import dims, store
from ml4ml.errors import StoreError


@dataclass
class ProbeReport:
    probed: list  # (mid, suite, transform)
    skipped: int
    seconds: float


def probe_template(params, transform: str, labels, n_classes: int, n_layers: int) -> xr.Dataset:
    """An all-zero probe dataset with the shapes and coordinates one model's probe will have.

    params : (aug_param,) grid; labels : (sample,) int labels.
    """
    from ml4ml.probe.transforms import get_transform

    family = get_transform(transform)
    P, n = len(params), len(labels)
    return xr.Dataset(
        {
            dims.PROB: ((dims.AUG_PARAM, dims.SAMPLE, dims.CLASS), np.zeros((P, n, n_classes), np.float32)),
            dims.PREDICTION: ((dims.AUG_PARAM, dims.SAMPLE), np.zeros((P, n), np.int64)),
            dims.CONFIDENCE: ((dims.AUG_PARAM, dims.SAMPLE), np.zeros((P, n), np.float32)),
            dims.ACT: ((dims.AUG_PARAM, dims.SAMPLE, dims.LAYER, dims.STAT),
                       np.zeros((P, n, n_layers, len(dims.STATS)), np.float32)),
            dims.LAYER_NAME: ((dims.LAYER,), np.full(n_layers, "", dtype=object)),
        },
        coords={
            dims.AUG_PARAM: (dims.AUG_PARAM, np.asarray(params, np.float64),
                             {"units": family.units, "transform": family.name}),
            dims.SAMPLE: np.arange(n, dtype=np.int64),
            dims.LABEL: (dims.SAMPLE, np.asarray(labels, np.int64)),
            dims.STAT: np.array(dims.STATS, dtype=object),
            dims.CLASS: np.arange(n_classes, dtype=np.int64),
        },
    )


def load_probe_suite(pipeline, suite_spec):
    """The suite a pipeline probes on; loaded once per process and reused by every model."""
    root = None if pipeline.data_root is None else str(pipeline.data_root)
    return _cached_suite(suite_spec.name, suite_spec.split, root, suite_spec.n_samples,
                         suite_spec.seed)


@functools.lru_cache(maxsize=4)
def _cached_suite(name, split, root, n_samples, seed):
    from ml4ml.data.suites import load_suite

    return load_suite(name, split, root=root, n_samples=n_samples, seed=seed)


def probe_pipeline(pipeline, *, client=None, device: str | None = None, force: bool = False,
                   progress: bool = True) -> ProbeReport:
    """Probe every trained model of ``pipeline``; done (model, suite, transform) are skipped."""
    from ml4ml.zoo.stage import CHECKPOINT, SHA256, TRAINED

    start = time.perf_counter()
    path = pipeline.store
    table = store.read_models(path)
    if table.sizes.get(dims.MID, 0) == 0:
        raise StoreError("the store has no models yet", file=path,
                         hint=f"run 'ml4ml train {pipeline.file}' first")
    trained = {str(m) for m, t in zip(table[dims.MID].values, table[TRAINED].values) if t}
    mids = [m for m in pipeline.mids if m in trained]
    untrained = [m for m in pipeline.mids if m not in trained]
    if not mids:
        raise StoreError("no model of this pipeline is trained yet", file=path,
                         hint=f"run 'ml4ml train {pipeline.file}' first")
    n_layers = len(pipeline.probe.layers) or 2
    jobs = {m: [] for m in mids}  # mid -> [(suite, transform)]
    skipped = 0
    for suite_spec in pipeline.suites:
        suite = load_probe_suite(pipeline, suite_spec)
        for transform, params in pipeline.transforms.items():
            template = probe_template(params, transform, suite.labels.numpy(),
                                      suite.n_classes, n_layers)
            store.init_probes(path, suite_spec.name, transform, template, pipeline.mids)
            ds = store.open_probes(path, suite_spec.name, transform)
            done = set(store.done_mids(ds))
            for m in mids:
                if force or m not in done:
                    jobs[m].append((suite_spec.name, transform))
                else:
                    skipped += 1
    jobs = {m: j for m, j in jobs.items() if j}
    rows = {m: (str(table[CHECKPOINT].sel({dims.MID: m}).values),
                str(table[SHA256].sel({dims.MID: m}).values)) for m in jobs}
    device = device or pipeline.probe.device
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="probe", unit="model", disable=not progress or not jobs)
    probed = []
    for result in _run_all(pipeline, jobs, rows, device, client, progress):
        probed.extend(result)
        bar.update(1)
    bar.close()
    if untrained:
        bar.write(f"not probed (not trained yet): {', '.join(untrained)}")
    return ProbeReport(probed=probed, skipped=skipped, seconds=time.perf_counter() - start)


def probe_one(pipeline, mid: str, jobs, checkpoint: str, sha256: str, device: str = "cpu",
              progress: bool = False, threads: int | None = None) -> list:
    """Probe one model on its pending (suite, transform) jobs and write each result.

    threads : torch threads for this model (default: all cores in process, 1 in a worker).
    """
    from tqdm.auto import tqdm

    from ml4ml.cluster import prepare_dask_worker, torch_threads
    from ml4ml.probe.responses import probe_model
    from ml4ml.zoo.training import load_checkpoint

    prepare_dask_worker()
    model, recipe = load_checkpoint(checkpoint, sha256=sha256 or None)
    suites = {s.name: s for s in pipeline.suites}
    loaded = {}
    out = []
    for suite_name, transform in jobs:
        if suite_name not in loaded:
            loaded[suite_name] = load_probe_suite(pipeline, suites[suite_name])
        suite = loaded[suite_name]
        bar = tqdm(total=len(suite), desc=f"  {mid} {suite_name}/{transform}", unit="img",
                   leave=False, disable=not progress)
        with torch_threads(threads):
            result = probe_model(
                model, suite.images, suite.labels, transform, pipeline.transforms[transform],
                normalize=recipe.normalize, layers=list(pipeline.probe.layers) or None,
                batch_size=pipeline.probe.batch_size, device=device,
                fgsm_epsilon=pipeline.probe.fgsm_epsilon, progress=bar,
            )
        bar.close()
        store.write_probe(pipeline.store, suite_name, transform, mid, result)
        out.append((mid, suite_name, transform))
    return out


def _run_all(pipeline, jobs, rows, device, client, progress):
    if client is None:
        for mid, todo in jobs.items():
            yield probe_one(pipeline, mid, todo, *rows[mid], device=device, progress=progress,
                            threads=os.cpu_count() or 1)
        return
    from distributed import as_completed

    futures = [client.submit(probe_one, pipeline, mid, todo, *rows[mid], device=device, threads=1,
                             key=f"probe-{mid}-{time.time_ns()}", pure=False)
               for mid, todo in jobs.items()]
    for future in as_completed(futures):
        yield future.result()
