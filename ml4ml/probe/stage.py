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
from ml4ml.failures import Failure, log_failure
from ml4ml.zoo.layers import DEFAULT_N_LAYERS, check_model_layers, chosen_layers


@dataclass
class ProbeReport:
    probed: list  # (mid, suite, transform)
    skipped: int
    seconds: float
    failed: dict = field(default_factory=dict)  # (mid, suite, transform) -> why it failed
    reprobed: dict = field(default_factory=dict)  # mid -> why its old probes were redone
    untrained: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    models: list = field(default_factory=list)  # the trained models considered

    def failed_models(self) -> dict:
        """{mid: why} of the models of which some (suite, transform) failed."""
        from ml4ml.failures import merge_reasons

        parts = {}
        for (mid, suite, transform), why in self.failed.items():
            parts.setdefault(mid, {})[f"{suite}/{transform}"] = why
        return {mid: merge_reasons(reasons) for mid, reasons in parts.items()}

    def summary(self) -> str:
        """``N probed, K already[, F failed: mid (why), ...]``, counting models."""
        from ml4ml.failures import failed_text

        failed = self.failed_models()
        probed = {mid for mid, _, _ in self.probed if mid not in failed}
        models = self.models or sorted(probed | set(failed))
        already = [m for m in models if m not in probed and m not in failed]
        text = f"{len(probed)} probed, {len(already)} already"
        return text + (f", {failed_text(failed)}" if failed else "")


def probe_template(params, transform: str, labels, n_classes: int, n_layers: int, *,
                   fgsm_epsilon: float = 0.0, lie_derivative: bool = False,
                   interpolation: str = "nearest", units: str = "none") -> xr.Dataset:
    """A lazy probe dataset with the variables, coordinates and attrs ``probe_model`` returns.

    params : (aug_param,) grid; labels : (sample,) int labels. Its arrays are dask zeros,
    never computed: it describes a probe group's layout (with ``lee`` (sample,) float64
    for ``lie_derivative``; attr ``interpolation`` where it is not nearest). units :
    "channel" adds the ``unit`` array with no unit yet (the models' channels extend it as
    they are written).
    """
    import dask.array as da

    from ml4ml.probe.transforms import get_transform, grid_attrs

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
                             grid_attrs(family)),
            dims.SAMPLE: np.arange(n, dtype=np.int64),
            dims.LABEL: (dims.SAMPLE, np.asarray(labels, np.int64)),
            dims.CLASS: np.arange(n_classes, dtype=np.int64),
            dims.STAT: np.array(dims.STATS, dtype=object),
            dims.LAYER: np.arange(n_layers, dtype=np.int64),
        },
        attrs={"transform": family.name,
               "fgsm_epsilon": float(fgsm_epsilon)},
    )
    if lie_derivative:
        ds[dims.LEE] = ((dims.SAMPLE,), da.zeros(n, dtype=np.float64))
    if interpolation != "nearest":
        ds.attrs[store.INTERPOLATION] = interpolation
    if units == "channel":
        ds = ds.assign_coords({
            dims.UNIT_RESPONSE: ((dims.AUG_PARAM, dims.SAMPLE, dims.UNIT),
                                 da.zeros((P, n, 0), dtype=np.float32, chunks=(P, n, 1)),
                                 dict(dims.UNIT_RESPONSE_ATTRS)),
            dims.UNIT_LABEL: (dims.UNIT, np.array([], dtype=object)),
            dims.UNIT_LAYER: (dims.UNIT, np.array([], dtype=object)),
        }).assign({name: (dims.UNIT, np.zeros(0)) for name in (dims.UNIT_TV, dims.UNIT_SV)})
    return dims.describe(ds)



def load_probe_suite(pipeline, suite_spec):
    """The suite a pipeline probes on; loaded once per process and reused by every model
    (your own images: once per content digest, so a changed folder is read anew)."""
    root = None if pipeline.data_root is None else str(pipeline.data_root)
    digest = suite_spec.digest or own_suite_digest(pipeline, suite_spec)
    return _cached_suite(suite_spec, root, digest, str(pipeline.file))


def own_suite_digest(pipeline, suite_spec) -> str:
    """The content digest of an own suite (``data.own.suite_digest``); "" for another."""
    from ml4ml.data.own import own_spec_of, suite_digest

    if not suite_spec.own:
        return ""
    return suite_digest(own_spec_of(suite_spec), spec_file=pipeline.file)


@functools.lru_cache(maxsize=4)
def _cached_suite(suite_spec, root, digest, spec_file):
    from ml4ml.data.own import load_spec_suite

    return load_spec_suite(suite_spec, root=root, spec_file=spec_file)


def probe_pipeline(pipeline, *, client=None, device: str | None = None, force: bool = False,
                   progress: bool = True) -> ProbeReport:
    """Probe every trained model of ``pipeline`` on every suite and transform.

    A (model, suite, transform) is probed when it is not done, when the model's checkpoint
    differs from the one its probe came from (lineage: ``source_sha256``), or with
    ``force``; redoing one first clears its done flag and those of its matrices and
    measures. A model that fails (its checkpoint missing, damaged or replaced, images it
    cannot take, layers it lacks, a forward that raises, outputs that are not finite) is
    recorded as failed (``error``, its flag left cleared: a rerun retries it) and
    reported; the others go on. device : where to probe (default: the spec's ``[probe]
    device``).
    """
    from ml4ml.progress import progress as stage_progress
    from ml4ml.zoo.sources import store_models

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
        # the spec's models and those trained elsewhere (the spec's and add-models');
        # module: code only if this spec names it
        models = store_models(table, pipeline)
        sha, all_mids, mids = models.sha256, models.mids, models.trained
        untrained = [m for m in all_mids if m not in mids]
        if not mids:
            raise StoreError("no model of this pipeline is trained yet", file=path,
                             hint=f"run 'ml4ml train {pipeline.file}' first")
        n_layers = len(pipeline.probe.layers) or DEFAULT_N_LAYERS
        pipeline = _with_suite_digests(pipeline)
        own = models.layers  # every model's own: the spec's, else those add-models recorded
        # 1. plan without writing: which (model, suite, transform) to probe, and why
        jobs = {m: [] for m in mids}  # mid -> [(suite, transform)]
        reprobed, redo, templates = {}, {}, {}
        skipped = 0
        for suite_spec in pipeline.suites:
            suite = load_probe_suite(pipeline, suite_spec)
            for transform, params in pipeline.transforms.items():
                key = (suite_spec.name, transform)
                interpolation = pipeline.interpolation.get(transform, "nearest")
                templates[key] = probe_template(params, transform, suite.labels.numpy(),
                                                suite.n_classes, n_layers,
                                                fgsm_epsilon=pipeline.probe.fgsm_epsilon,
                                                lie_derivative=pipeline.probe.lie_derivative,
                                                interpolation=interpolation,
                                                units=pipeline.probe.units)
                if suite_spec.own:
                    templates[key].attrs[store.SUITE_DIGEST] = suite_spec.digest
                done, source, recorded, counts = _probe_state(path, *key)
                altered = suite_spec.own and _probed_attr(path, *key, store.SUITE_DIGEST) \
                    not in (None, suite_spec.digest)
                lacking = _lacking_lee(path, *key) if pipeline.probe.lie_derivative else set()
                resampled = _probed_interpolation(path, *key) not in (None, interpolation)
                redo[key] = []
                for m in mids:
                    changed = done.get(m, False) and source.get(m) != sha[m]
                    chosen = chosen_layers(m, own, pipeline.probe.layers)
                    moved = done.get(m, False) and chosen is not None and \
                        recorded.get(m) != chosen
                    unlied = done.get(m, False) and m in lacking
                    no_units = done.get(m, False) and pipeline.probe.units == "channel" and \
                        counts.get(m, -1) < 0
                    redone = changed or moved or unlied or no_units or (
                        (resampled or altered) and done.get(m, False))
                    if force or not done.get(m, False) or redone:
                        jobs[m].append(key)
                        if done.get(m, False):
                            redo[key].append(m)
                            reprobed[m] = (
                                f"the images of suite {suite_spec.name!r} changed"
                                if altered else
                                "its checkpoint changed" if changed else
                                "its layers changed" if moved else
                                f"{transform} is sampled {interpolation} now" if resampled else
                                "its Lie derivative was not recorded" if unlied else
                                "its channels were not recorded" if no_units else "forced")
                    else:
                        skipped += 1
        jobs = {m: j for m, j in jobs.items() if j}
        sources = {m: models.source(m) for m in jobs}
        _check_own_classes(pipeline, jobs, sources)  # refused before anything is written
        # 2. flags cleared (here and in the groups computed from these probes), then the
        # layout (its attrs say what the group is probed with now)
        store.record_suites(path, _suite_records(pipeline))
        for (suite_name, transform), template in templates.items():
            if redo[(suite_name, transform)]:
                for group in (store.probe_group(suite_name, transform),
                              store.matrices_group(suite_name, transform),
                              store.measures_group(suite_name, transform)):
                    store.clear_done(path, group, redo[(suite_name, transform)])
            store.init_probes(path, suite_name, transform, template, all_mids)
        device = device or pipeline.probe.device
        bar = stage_progress("probe", len(jobs), progress)
        for note in notes:
            bar.note(note)
        for m, why in reprobed.items():
            bar.note(f"re-probing {m}: {why}")
        probed, failed = [], {}
        for mid, results in _run_all(pipeline, jobs, sources, device, client):
            if isinstance(results, Failure):  # the model itself failed: every job of it
                results = [((mid, *job), results) for job in jobs[mid]]
            model_failed = False
            for key, outcome in results:
                _, suite_name, transform = key
                if isinstance(outcome, Failure):  # recorded, flag left cleared
                    store.write_probe_failure(path, suite_name, transform, mid, outcome.reason)
                    log_failure("probe", mid, outcome, f"{suite_name}/{transform}")
                    failed[key] = outcome.reason
                    model_failed = True
                else:  # its responses are written: lineage, then done
                    store.finish_probes(path, suite_name, transform, [outcome], {mid: sha[mid]})
                    probed.append(key)
            if model_failed:
                bar.fail()
            else:
                bar.advance(mid)
        bar.close()
    return ProbeReport(probed=probed, skipped=skipped, seconds=time.perf_counter() - start,
                       failed=failed, reprobed=reprobed, untrained=untrained, notes=notes,
                       models=mids)


def _suite_records(pipeline) -> dict:
    """{suite: ((channel, height, width), n_classes)}: what the store records of them."""
    out = {}
    for spec in pipeline.suites:
        suite = load_probe_suite(pipeline, spec)
        out[spec.name] = (tuple(suite.images.shape[1:]), int(suite.n_classes))
    return out


def _probe_state(path, suite: str, transform: str) -> tuple[dict, dict, dict, dict]:
    """{mid: done}, {mid: source sha256}, {mid: recorded layer names} and {mid: recorded
    units (-1: none)} of a probe group; empty if there is none yet."""
    group = store.probe_group(suite, transform)
    if not store.group_exists(path, group):
        return {}, {}, {}, {}
    ds = store.open_probes(path, suite, transform)
    mids = [str(m) for m in ds[dims.MID].values]
    names = np.asarray(ds[dims.LAYER_NAME].transpose(dims.MID, dims.LAYER).values,
                       dtype=object) if dims.LAYER_NAME in ds else np.empty((len(mids), 0))
    return (dict(zip(mids, np.asarray(ds[dims.DONE].values, dtype=bool).tolist())),
            dict(zip(mids, [str(s) for s in ds[store.SOURCE].values])),
            dict(zip(mids, [[str(n) for n in row] for row in names])),
            dict(zip(mids, np.asarray(ds[dims.UNIT_COUNT].values).min(axis=-1).tolist()))
            if dims.UNIT_COUNT in ds else {})


def _lacking_lee(path, suite: str, transform: str) -> set:
    """The models of a probe group whose Lie derivative is not recorded (the group has no
    ``lee``, or their row of it is NaN: probed without it); empty if there is no group."""
    group = store.probe_group(suite, transform)
    if not store.group_exists(path, group):
        return set()
    ds = store.open_probes(path, suite, transform)
    mids = [str(m) for m in ds[dims.MID].values]
    if dims.LEE not in ds:
        return set(mids)
    missing = np.isnan(np.asarray(ds[dims.LEE].values)).any(axis=-1)
    return {m for m, lack in zip(mids, missing.tolist()) if lack}


def _probed_interpolation(path, suite: str, transform: str) -> str | None:
    """How a probe group's images were sampled ("nearest" by default); None: no group."""
    group = store.probe_group(suite, transform)
    if not store.group_exists(path, group):
        return None
    return str(store.open_probes(path, suite, transform).attrs.get(store.INTERPOLATION,
                                                                   "nearest"))


def _probed_attr(path, suite: str, transform: str, name: str) -> str | None:
    """A probe group's attr ``name``; None: no group, or the group lacks it."""
    group = store.probe_group(suite, transform)
    if not store.group_exists(path, group):
        return None
    value = store.open_probes(path, suite, transform).attrs.get(name)
    return None if value is None else str(value)


def _with_suite_digests(pipeline):
    """``pipeline`` with each own suite's content digest found now (``SuiteSpec.digest``):
    the models' tasks load the images it names without hashing them again."""
    from dataclasses import replace

    return replace(pipeline, suites=tuple(
        replace(s, digest=own_suite_digest(pipeline, s)) if s.own else s
        for s in pipeline.suites))


def _check_own_classes(pipeline, jobs, sources) -> None:
    """InputError (one line naming the model and the suite) for a model to be probed on
    the user's own images whose output count is not the suite's class count. A model that
    cannot be loaded or run is left to its task (recorded as failed there)."""
    import torch

    from ml4ml.errors import InputError

    own = {s.name: s for s in pipeline.suites if s.own}
    for mid, todo in jobs.items():
        names = sorted({suite for suite, _ in todo if suite in own})
        if not names:
            continue
        try:
            model, prep = sources[mid].load(mid)
        except Exception:  # noqa: BLE001, S112 - its task records why
            continue
        for name in names:
            suite = load_probe_suite(pipeline, own[name])
            try:
                with torch.inference_mode():
                    logits = model(_normalized(suite.images[:1], prep))
            except Exception:  # noqa: BLE001, S112 - its task records why
                continue
            if logits.dim() == 2 and logits.shape[1] != suite.n_classes:
                raise InputError(
                    f"model {mid!r} has {logits.shape[1]} outputs but suite {name!r} has "
                    f"{suite.n_classes} classes; nothing was probed", file=pipeline.file,
                    field=f"suites.{name}.classes",
                    hint="list the model's classes in its output order, or probe it on a "
                         "suite of its classes")


def _normalized(x, prep):
    import torch

    if prep.normalize is None:
        return x
    mean, std = (torch.as_tensor(v, dtype=x.dtype).reshape(1, -1, 1, 1)
                 for v in prep.normalize)
    return (x - mean) / std


def _check_model_takes(model, prep, suite, exact: bool = False) -> None:
    import torch

    from ml4ml.errors import InputError

    x = _normalized(suite.images[:1], prep)
    with torch.inference_mode():
        try:
            logits = model(x)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"model {prep.mid!r} ({prep.arch}) cannot take the images of "
                             f"suite {suite.name!r}, shape {tuple(x.shape[1:])} (channel, "
                             f"height, width): {first}", file=prep.file, field="suites",
                             hint="probe a model on a suite of the shape it was trained on") \
                from None
    if logits.dim() != 2 or logits.shape[1] < suite.n_classes or (
            exact and logits.shape[1] != suite.n_classes):
        raise InputError(f"model {prep.mid!r} has {tuple(logits.shape)} outputs for one image; "
                         f"suite {suite.name!r} has {suite.n_classes} classes", file=prep.file,
                         field="suites")


def probe_one(pipeline, mid: str, jobs, source, device: str = "cpu",
              threads: int | None = None) -> tuple[str, list]:
    """Probe one model on its pending (suite, transform) jobs and write each result.

    source : the ``zoo.sources.ModelSource`` that loads it (``StoreModels.source``).

    Writes each result's response arrays (``store.write_probe_data``) and returns
    ``(mid, [((mid, suite, transform), outcome)])``: the small values for the driver to
    finish with (``store.finish_probes``), or the ``Failure`` of that job (images the
    model cannot take, layers it lacks, a forward that raises, outputs not finite). A
    model that cannot be loaded raises (``run_each`` makes that the model's Failure).
    threads : torch threads for this model (default: all cores in process, 1 in a worker).
    """
    from ml4ml.cluster import prepare_dask_worker, torch_threads
    from ml4ml.failures import failure_of
    from ml4ml.probe.responses import probe_model
    from ml4ml.probe.transforms import with_interpolation

    prepare_dask_worker()
    model, prep = source.load(mid)
    # its own layers, else the spec's [probe] layers, else its last convolutions
    layers = check_model_layers(model, mid, prep.layers,
                                (len(pipeline.probe.layers) or DEFAULT_N_LAYERS,
                                 pipeline.probe.layers), prep.file)
    suites = {s.name: s for s in pipeline.suites}
    loaded, refused = {}, {}  # suite name -> suite, or why the model cannot take it
    out = []
    for suite_name, transform in jobs:
        key = (mid, suite_name, transform)
        if suite_name in refused:
            out.append((key, refused[suite_name]))
            continue
        try:
            if suite_name not in loaded:
                suite = load_probe_suite(pipeline, suites[suite_name])
                try:
                    _check_model_takes(model, prep, suite, suites[suite_name].own)
                except Exception as exc:  # noqa: BLE001 - the same for each transform
                    refused[suite_name] = failure_of(exc)
                    out.append((key, refused[suite_name]))
                    continue
                loaded[suite_name] = suite
            suite = loaded[suite_name]
            family = with_interpolation(transform,
                                        pipeline.interpolation.get(transform, "nearest"))
            with torch_threads(threads):
                result = probe_model(
                    model, suite.images, suite.labels, family,
                    pipeline.transforms[transform], normalize=prep.normalize,
                    layers=layers,
                    batch_size=pipeline.probe.batch_size, device=device,
                    fgsm_epsilon=pipeline.probe.fgsm_epsilon,
                    lie_derivative=pipeline.probe.lie_derivative, units=pipeline.probe.units,
                )
            out.append((key, store.write_probe_data(pipeline.store, suite_name, transform,
                                                    mid, result)))
        except Exception as exc:  # noqa: BLE001 - this job's failure; the others go on
            out.append((key, failure_of(exc)))
    return mid, out


def _run_all(pipeline, jobs, sources, device, client):
    """Yield ``(mid, results)`` as models finish (``probe_one``), or ``(mid, Failure)``
    for a model that failed as a whole; every model runs to the end."""
    from ml4ml.cluster import run_each

    args = {mid: (pipeline, mid, todo, sources[mid]) for mid, todo in jobs.items()}
    threads = 1 if client is not None else os.cpu_count() or 1
    for mid, outcome in run_each(probe_one, args, client, name="probe", device=device,
                                 threads=threads):
        yield mid, outcome if isinstance(outcome, Failure) else outcome[1]
