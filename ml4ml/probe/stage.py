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
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from ml4ml import dims, store
from ml4ml.errors import StoreError


@dataclass
class ProbeReport:
    probed: list  # (mid, suite, transform)
    skipped: int
    seconds: float
    failed: dict = field(default_factory=dict)  # (mid, suite, transform) -> why refused
    reprobed: dict = field(default_factory=dict)  # mid -> why its old probes were redone
    untrained: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def probe_template(params, transform: str, labels, n_classes: int, n_layers: int, *,
                   fgsm_epsilon: float = 0.0) -> xr.Dataset:
    """A lazy probe dataset with the variables, coordinates and attrs ``probe_model`` returns.

    params : (aug_param,) grid; labels : (sample,) int labels. Its arrays are dask zeros,
    never computed: it describes a probe group's layout.
    """
    import dask.array as da

    from ml4ml.probe.transforms import get_transform

    family = get_transform(transform)
    P, n = len(params), len(labels)
    ds = xr.Dataset(
        {
            dims.PROB: ((dims.AUG_PARAM, dims.SAMPLE, dims.CLASS),
                        da.zeros((P, n, n_classes), dtype=np.float32)),
            dims.PREDICTION: ((dims.AUG_PARAM, dims.SAMPLE), da.zeros((P, n), dtype=np.int64)),
            dims.CONFIDENCE: ((dims.AUG_PARAM, dims.SAMPLE),
                              da.zeros((P, n), dtype=np.float32)),
            dims.ACT: ((dims.AUG_PARAM, dims.SAMPLE, dims.LAYER, dims.STAT),
                       da.zeros((P, n, n_layers, len(dims.STATS)), dtype=np.float32)),
            dims.LAYER_NAME: ((dims.LAYER,), np.full(n_layers, "", dtype=object)),
        },
        coords={
            dims.AUG_PARAM: (dims.AUG_PARAM, np.asarray(params, np.float64),
                             {"units": family.units, "transform": family.name}),
            dims.SAMPLE: np.arange(n, dtype=np.int64),
            dims.LABEL: (dims.SAMPLE, np.asarray(labels, np.int64)),
            dims.CLASS: np.arange(n_classes, dtype=np.int64),
            dims.STAT: np.array(dims.STATS, dtype=object),
            dims.LAYER: np.arange(n_layers, dtype=np.int64),
        },
        attrs={"transform": family.name,
               "fgsm_epsilon": float(fgsm_epsilon)},
    )
    return dims.describe(ds)


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
    """Probe every trained model of ``pipeline`` on every suite and transform.

    A (model, suite, transform) is probed when it is not done, when the model's checkpoint
    differs from the one its probe came from (lineage: ``source_sha256``), or with
    ``force``; redoing one first clears its done flag and those of its matrices and
    measures. A model whose outputs are not finite is refused and reported; the others go
    on. device : where to probe (default: the spec's ``[probe] device``).
    """
    from ml4ml.progress import progress as stage_progress
    from ml4ml.zoo.adding import added_info
    from ml4ml.zoo.stage import CHECKPOINT, SHA256, TRAINED

    start = time.perf_counter()
    path = pipeline.store
    with store.writing(path, f"ml4ml probe {pipeline.file}") as notes:
        if not store.store_exists(path) and not store.has_root(path):
            raise StoreError("the store has no models yet", file=path,
                             hint=f"run 'ml4ml train {pipeline.file}' first")
        store.store_attrs(path)  # a malformed store: its own clear line
        table = store.read_models(path)
        if table.sizes.get(dims.MID, 0) == 0:
            raise StoreError("the store has no models yet", file=path,
                             hint=f"run 'ml4ml train {pipeline.file}' first")
        sha = dict(zip([str(m) for m in table[dims.MID].values],
                       [str(s) for s in table[SHA256].values]))
        trained = {str(m) for m, t in zip(table[dims.MID].values, table[TRAINED].values) if t}
        # models trained elsewhere (the spec's and add-models'); module: code only if
        # this spec names it
        added = added_info(table, pipeline)
        all_mids = list(pipeline.mids) + [m for m in added if m not in pipeline.mids]
        mids = [m for m in all_mids if m in trained]
        untrained = [m for m in all_mids if m not in trained]
        if not mids:
            raise StoreError("no model of this pipeline is trained yet", file=path,
                             hint=f"run 'ml4ml train {pipeline.file}' first")
        n_layers = len(pipeline.probe.layers) or 2
        # 1. plan without writing: which (model, suite, transform) to probe, and why
        jobs = {m: [] for m in mids}  # mid -> [(suite, transform)]
        reprobed, redo, templates = {}, {}, {}
        skipped = 0
        for suite_spec in pipeline.suites:
            suite = load_probe_suite(pipeline, suite_spec)
            for transform, params in pipeline.transforms.items():
                key = (suite_spec.name, transform)
                templates[key] = probe_template(params, transform, suite.labels.numpy(),
                                                suite.n_classes, n_layers,
                                                fgsm_epsilon=pipeline.probe.fgsm_epsilon)
                done, source = _probe_state(path, *key)
                redo[key] = []
                for m in mids:
                    changed = done.get(m, False) and source.get(m) != sha[m]
                    if force or not done.get(m, False) or changed:
                        jobs[m].append(key)
                        if done.get(m, False):
                            redo[key].append(m)
                            reprobed[m] = "forced" if force and not changed else \
                                "its checkpoint changed"
                    else:
                        skipped += 1
        jobs = {m: j for m, j in jobs.items() if j}
        rows = {m: (str(table[CHECKPOINT].sel({dims.MID: m}).values), sha[m], added.get(m))
                for m in jobs}
        # 2. bad input is refused before the store is touched
        _preflight(pipeline, jobs, rows)
        # 3. layout, then flags cleared (here and in the groups computed from these probes)
        store.record_suites(path, _suite_records(pipeline))
        for (suite_name, transform), template in templates.items():
            store.init_probes(path, suite_name, transform, template, all_mids)
            if redo[(suite_name, transform)]:
                for group in (store.probe_group(suite_name, transform),
                              store.matrices_group(suite_name, transform),
                              store.measures_group(suite_name, transform)):
                    store.clear_done(path, group, redo[(suite_name, transform)])
        device = device or pipeline.probe.device
        bar = stage_progress("probe", len(jobs), progress)
        for note in notes:
            bar.note(note)
        for m, why in reprobed.items():
            bar.note(f"re-probing {m}: {why}")
        probed, failed = [], {}
        for mid, results in _run_all(pipeline, jobs, rows, device, client):
            for (_, suite_name, transform), outcome in results:
                key = (mid, suite_name, transform)
                if isinstance(outcome, str):  # refused: recorded, flag left cleared
                    store.write_probe_failure(path, suite_name, transform, mid, outcome)
                    failed[key] = outcome
                    bar.note(f"model {mid} refused on {suite_name}/{transform}: {outcome}")
                else:  # its responses are written: lineage, then done
                    store.finish_probes(path, suite_name, transform, [outcome], {mid: sha[mid]})
                    probed.append(key)
            bar.advance(mid)
        bar.close()
    return ProbeReport(probed=probed, skipped=skipped, seconds=time.perf_counter() - start,
                       failed=failed, reprobed=reprobed, untrained=untrained, notes=notes)


def _suite_records(pipeline) -> dict:
    """{suite: ((channel, height, width), n_classes)}: what the store records of them."""
    out = {}
    for spec in pipeline.suites:
        suite = load_probe_suite(pipeline, spec)
        out[spec.name] = (tuple(suite.images.shape[1:]), int(suite.n_classes))
    return out


def _probe_state(path, suite: str, transform: str) -> tuple[dict, dict]:
    """{mid: done} and {mid: source sha256} of a probe group; empty if there is none yet."""
    group = store.probe_group(suite, transform)
    if not store.group_exists(path, group):
        return {}, {}
    ds = store.open_probes(path, suite, transform)
    mids = [str(m) for m in ds[dims.MID].values]
    return (dict(zip(mids, np.asarray(ds[dims.DONE].values, dtype=bool).tolist())),
            dict(zip(mids, [str(s) for s in ds[store.SOURCE].values])))


def _preflight(pipeline, jobs: dict, rows: dict) -> None:
    """InputError, before anything is written, for a checkpoint that is missing, truncated
    or replaced (its sha256 differs from the one recorded at training), or a model that
    cannot take a suite's images."""
    from ml4ml.zoo.training import verify_checkpoint

    for mid in jobs:
        if rows[mid][2] is None:
            verify_checkpoint(*rows[mid][:2])
    suites = {s.name: s for s in pipeline.suites}
    tried = set()
    recipes = {r.mid: r for r in pipeline.recipes}
    for mid, todo in jobs.items():
        checkpoint, sha256, info = rows[mid]
        for suite_name, _ in todo:
            arch = recipes[mid].arch if mid in recipes and info is None else mid
            if (arch, suite_name) in tried:
                continue
            tried.add((arch, suite_name))
            model, recipe, _ = load_row_model(mid, checkpoint, sha256, info)
            suite = load_probe_suite(pipeline, suites[suite_name])
            _check_model_takes(model, recipe, suite, checkpoint)


def load_row_model(mid, checkpoint, sha256, info):
    """``(model, recipe, layers)`` of one ``models`` row: an ml4ml checkpoint, or a model
    trained elsewhere (``info``: its format, arch, normalisation; see ``zoo.adding``)."""
    from ml4ml.zoo.training import load_checkpoint

    if info is None:
        model, recipe = load_checkpoint(checkpoint, sha256=sha256 or None)
        return model, recipe, None
    from ml4ml.zoo.adding import load_added
    from ml4ml.zoo.recipe import Recipe

    model, layers = load_added(checkpoint, sha256, info)
    recipe = Recipe(mid=mid, arch=info["arch"],
                    normalize_mean=tuple(info["normalize_mean"]),
                    normalize_std=tuple(info["normalize_std"]))
    return model, recipe, layers


def _check_model_takes(model, recipe, suite, checkpoint) -> None:
    import torch

    from ml4ml.errors import InputError

    x = suite.images[:1]
    if recipe.normalize is not None:
        mean, std = (torch.as_tensor(v, dtype=x.dtype).reshape(1, -1, 1, 1)
                     for v in recipe.normalize)
        x = (x - mean) / std
    with torch.inference_mode():
        try:
            logits = model(x)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"model {recipe.mid!r} ({recipe.arch}) cannot take the images of "
                             f"suite {suite.name!r}, shape {tuple(x.shape[1:])} (channel, "
                             f"height, width): {first}", file=checkpoint, field="suites",
                             hint="probe a model on a suite of the shape it was trained on") \
                from None
    if logits.dim() != 2 or logits.shape[1] < suite.n_classes:
        raise InputError(f"model {recipe.mid!r} has {tuple(logits.shape)} outputs for one image; "
                         f"suite {suite.name!r} has {suite.n_classes} classes", file=checkpoint,
                         field="suites")


def probe_one(pipeline, mid: str, jobs, checkpoint: str, sha256: str, info=None,
              device: str = "cpu", threads: int | None = None) -> tuple[str, list]:
    """Probe one model on its pending (suite, transform) jobs and write each result.

    Writes each result's response arrays (``store.write_probe_data``) and returns
    ``(mid, [((mid, suite, transform), outcome)])``: the small values for the driver to
    finish with (``store.finish_probes``), or why the responses were refused (outputs not
    finite). threads : torch threads for this model (default: all cores in process, 1 in a
    worker).
    """
    from ml4ml.cluster import prepare_dask_worker, torch_threads
    from ml4ml.errors import InputError
    from ml4ml.probe.responses import probe_model

    prepare_dask_worker()
    model, recipe, own_layers = load_row_model(mid, checkpoint, sha256, info)
    suites = {s.name: s for s in pipeline.suites}
    loaded = {}
    out = []
    for suite_name, transform in jobs:
        if suite_name not in loaded:
            loaded[suite_name] = load_probe_suite(pipeline, suites[suite_name])
        suite = loaded[suite_name]
        with torch_threads(threads):
            result = probe_model(
                model, suite.images, suite.labels, transform, pipeline.transforms[transform],
                normalize=recipe.normalize, layers=list(pipeline.probe.layers) or own_layers,
                batch_size=pipeline.probe.batch_size, device=device,
                fgsm_epsilon=pipeline.probe.fgsm_epsilon,
            )
        key = (mid, suite_name, transform)
        try:
            out.append((key, store.write_probe_data(pipeline.store, suite_name, transform,
                                                    mid, result)))
        except InputError as exc:  # outputs not finite: refused
            out.append((key, exc.message))
    return mid, out


def _run_all(pipeline, jobs, rows, device, client):
    if client is None:
        for mid, todo in jobs.items():
            yield probe_one(pipeline, mid, todo, *rows[mid], device=device,
                            threads=os.cpu_count() or 1)
        return
    from distributed import as_completed

    futures = [client.submit(probe_one, pipeline, mid, todo, *rows[mid], device=device, threads=1,
                             key=f"probe-{mid}-{time.time_ns()}", pure=False)
               for mid, todo in jobs.items()]
    for future in as_completed(futures):
        yield future.result()
