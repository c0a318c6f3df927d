"""Train stage: every model of a pipeline's zoo that is not trained yet, into the store.

``train_pipeline(pipeline)`` adds the zoo's recipes to the store's ``models`` table,
trains each untrained model (in process, or one model per dask task on a cluster),
writes its checkpoint beside the store, and records checkpoint path, sha256, clean test
accuracy and training time in ``models`` as soon as that model is done, so a crash
never loses finished models and a rerun resumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from ml4ml import dims, store
from ml4ml.errors import InputError, StoreError
from ml4ml.failures import Failure, log_failure
from ml4ml.zoo.recipe import Recipe
from ml4ml.zoo.table import (CHECKPOINT, N_TRAIN_IMAGES, SHA256,  # noqa: F401 (re-exported)
                             TEST_ACCURACY, TRAIN_ERROR, TRAIN_SECONDS, TRAINED,
                             invalidate_downstream, recipe_from_row, recipe_table)


@dataclass
class TrainReport:
    trained: list
    skipped: list
    seconds: float
    failed: dict = field(default_factory=dict)  # mid -> why it was refused
    retrained: list = field(default_factory=list)  # trained before, redone now
    notes: list = field(default_factory=list)
    added: list = field(default_factory=list)  # models trained elsewhere, registered now
    already_added: list = field(default_factory=list)

    def summary(self) -> str:
        """``N added, M trained, K already[, F failed: mid (why), ...]``."""
        from ml4ml.failures import failed_text

        retrained = f" ({len(self.retrained)} retrained)" if self.retrained else ""
        failed = f", {failed_text(self.failed)}" if self.failed else ""
        return (f"{len(self.added)} added, {len(self.trained)} trained{retrained}, "
                f"{len(self.skipped) + len(self.already_added)} already{failed}")


def register_zoo(pipeline) -> xr.Dataset:
    """Create the store if needed and add the zoo's new recipes; return the models table.

    The caller holds the store's lock.
    """
    store.create_store(pipeline.store, precision=pipeline.precision, pipeline=pipeline.file)
    store.add_models(pipeline.store, recipe_table(pipeline.recipes))
    return store.read_models(pipeline.store)


def _recipe_changes(pipeline, table) -> dict:
    """mid -> first differing field, for models whose stored recipe differs from the spec."""
    changed = {}
    for recipe in pipeline.recipes:
        stored = recipe_from_row(table.sel({dims.MID: recipe.mid}))
        if stored != recipe:
            for name in Recipe.field_names():
                if getattr(stored, name) != getattr(recipe, name):
                    changed[recipe.mid] = (name, getattr(stored, name), getattr(recipe, name))
                    break
    return changed


def remove_orphan_checkpoints(folder) -> list[str]:
    """Delete temporary checkpoint files a killed writer left in ``folder``; return them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for orphan in sorted(folder.glob(".tmp-*.pt")):
        orphan.unlink(missing_ok=True)
        removed.append(orphan.name)
    return removed


def checkpoint_exists(path) -> bool:
    from ml4ml.zoo.training import checkpoint_exists as exists

    return exists(path)


def train_pipeline(pipeline, *, client=None, force: bool = False, changed_only: bool = False,
                   device: str | None = None, progress: bool = True) -> TrainReport:
    """Train every model of ``pipeline`` not yet trained (all with ``force``).

    A model is redone when it is not trained, its checkpoint file is gone, or ``force``.
    A model whose recipe in the spec differs from the stored one is an error, unless
    ``force`` (every model is retrained) or ``changed_only`` (exactly those are). Retraining
    clears the model's later results (probes, matrices, measures), so every later stage
    redoes it, and only it. A model whose training fails (it raises, or its trained
    weights are not finite) is recorded as failed: its ``train_error`` says why, the
    others go on, a rerun retries it. device : where to train (default: the spec's
    ``[probe] device``).
    """
    from ml4ml.progress import progress as stage_progress

    start = time.perf_counter()
    device = device or pipeline.probe.device
    path = pipeline.store
    added = _register_added(pipeline, force)
    if not pipeline.recipes:
        return TrainReport(trained=[], skipped=[], seconds=time.perf_counter() - start,
                           added=added.added + added.replaced, already_added=added.already)
    with store.writing(path, f"ml4ml train {pipeline.file}") as notes:
        table = register_zoo(pipeline)
        _record_suites(pipeline)
        from ml4ml.zoo.layers import sync_layers

        sync_layers(path, table, {r.mid: pipeline.layers.get(r.mid, ())
                                  for r in pipeline.recipes})
        trained = dict(zip(table[dims.MID].values.tolist(),
                           table[TRAINED].values.astype(bool).tolist()))
        changed = _recipe_changes(pipeline, table)  # untrained ones just take the new recipe
        conflicts = {m: why for m, why in changed.items() if trained.get(m)}
        if conflicts and not (force or changed_only):
            mid, (name, old, new) = next(iter(conflicts.items()))
            raise StoreError(
                f"{len(conflicts)} model(s) in the store were trained with other recipes than "
                f"the spec's, e.g. model {mid!r} field '{name}': store {old!r}, spec {new!r}",
                file=pipeline.file, field=f"zoo ({mid}.{name})",
                hint="rerun with --changed to retrain exactly them (--force retrains every "
                     "model), or use a new store path")
        checkpoints = str(pipeline.checkpoints)
        if "://" not in checkpoints:
            notes += [f"removed orphan temporary checkpoint {name}"
                      for name in remove_orphan_checkpoints(checkpoints)]
        files = dict(zip(table[dims.MID].values.tolist(),
                         [str(c) for c in table[CHECKPOINT].values]))
        todo = [r for r in pipeline.recipes if force or r.mid in changed
                or not trained.get(r.mid) or not checkpoint_exists(files.get(r.mid, ""))]
        skipped = [r.mid for r in pipeline.recipes if r not in todo]
        redo = [r.mid for r in todo if trained.get(r.mid) and (force or r.mid in changed)]
        if redo:  # flags first: nothing trained from the old recipe passes as current
            store.update_models(path, _flags(redo, False), last=(TRAINED,))
            invalidate_downstream(path, redo)
        if changed:
            store.update_models(path, recipe_table(
                [r for r in pipeline.recipes if r.mid in changed]))
        if "://" not in checkpoints:
            Path(checkpoints).mkdir(parents=True, exist_ok=True)
        data_root = None if pipeline.data_root is None else str(pipeline.data_root)
        bar = stage_progress("train", len(todo), progress)
        for note in notes:
            bar.note(note)
        done, failed = [], {}
        base = str(Path(pipeline.file).resolve().parent)
        for row in _run_all(todo, checkpoints, data_root, device, client, base):
            if row.get("error"):
                failed[row["mid"]] = row["error"]
                store.update_models(path, _error_row(row["mid"], row["error"]))
                if row.get("failure") is not None:
                    log_failure("train", row["mid"], row["failure"])
                bar.fail()
                continue
            store.update_models(path, _outcome_row(row), last=(TRAINED,))
            done.append(row["mid"])
            bar.advance(row["mid"], f"acc={row[TEST_ACCURACY]:.3f}")
        bar.close()
    return TrainReport(trained=done, skipped=skipped, seconds=time.perf_counter() - start,
                       failed=failed, retrained=redo, notes=notes,
                       added=added.added + added.replaced, already_added=added.already)


def _record_suites(pipeline) -> None:
    """Record the spec's suites in the store (what ``add-models`` checks new models on);
    a suite that cannot be loaded here is left for the probe to record (and report)."""
    from ml4ml.zoo.adding import pipeline_suites

    try:
        suites = pipeline_suites(pipeline)
    except InputError:
        return
    store.record_suites(pipeline.store, {s.name: (s.shape, s.n_classes) for s in suites})


def _register_added(pipeline, force: bool):
    """The spec's models trained elsewhere, checked on its suites and registered."""
    from ml4ml.zoo.adding import register_added, store_suites

    if not pipeline.added:
        from ml4ml.zoo.adding import AddReport

        return AddReport()
    return register_added(pipeline.store, list(pipeline.added),
                          suites=store_suites(pipeline.store, pipeline), force=force,
                          pipeline=pipeline.file, precision=pipeline.precision,
                          command=f"ml4ml train {pipeline.file}")


def train_one(recipe: Recipe, checkpoint_dir, data_root=None, device="cpu", base=None) -> dict:
    """Train one model, write its checkpoint; return the outcome row (plain dict).

    A model whose trained weights or test accuracy are not finite gets no checkpoint; its
    row has ``error`` saying why.
    """
    import math

    import torch

    from ml4ml.cluster import prepare_dask_worker, torch_threads
    from ml4ml.zoo.checkpoints import import_path
    from ml4ml.zoo.training import checkpoint_path, save_checkpoint, train_model

    prepare_dask_worker()
    with torch_threads(1), import_path(base):  # module: archs import from the spec's folder
        result = train_model(recipe, data_root=data_root, device=device)
    bad = [name for name, p in result.model.state_dict().items()
           if p.is_floating_point() and not bool(torch.isfinite(p).all())]
    if bad or not math.isfinite(result.test_accuracy):
        what = f"weights {bad[:3]}" if bad else "test accuracy"
        return {"mid": recipe.mid, "error": f"training produced non-finite {what} "
                f"(lr {recipe.lr:g} too high?)"}
    path = checkpoint_path(checkpoint_dir, recipe.mid)
    sha = save_checkpoint(result, recipe, path)
    return {"mid": recipe.mid, CHECKPOINT: str(path), SHA256: sha,
            TEST_ACCURACY: float(result.test_accuracy), TRAIN_SECONDS: float(result.seconds),
            N_TRAIN_IMAGES: int(result.n_train_images)}


def _run_all(todo, checkpoints, data_root, device, client, base=None):
    """Yield outcome rows as models finish: in process, or as dask tasks on ``client``.

    A model whose training raises gives an error row (its ``failure`` for the log); the
    others train to the end.
    """
    from ml4ml.cluster import run_each

    jobs = {r.mid: (r, checkpoints, data_root, device, base) for r in todo}
    for mid, row in run_each(train_one, jobs, client, name="train"):
        if isinstance(row, Failure):
            row = {"mid": mid, "error": row.reason, "failure": row}
        yield row


def _outcome_row(row: dict) -> xr.Dataset:
    data = {name: ((dims.MID,), np.array([row[name]], dtype=object if isinstance(row[name], str)
                                          else None))
            for name in (CHECKPOINT, SHA256, TEST_ACCURACY, TRAIN_SECONDS, N_TRAIN_IMAGES)}
    data[TRAIN_ERROR] = ((dims.MID,), np.array([""], dtype=object))
    data[TRAINED] = ((dims.MID,), np.array([True]))
    return xr.Dataset(data, coords={dims.MID: np.array([row["mid"]], dtype=object)})


def _error_row(mid: str, error: str) -> xr.Dataset:
    return xr.Dataset({TRAIN_ERROR: ((dims.MID,), np.array([error], dtype=object)),
                       TRAINED: ((dims.MID,), np.array([False]))},
                      coords={dims.MID: np.array([mid], dtype=object)})


def _flags(mids, value: bool) -> xr.Dataset:
    return xr.Dataset({TRAINED: ((dims.MID,), np.full(len(mids), value))},
                      coords={dims.MID: np.asarray(list(mids), dtype=object)})
