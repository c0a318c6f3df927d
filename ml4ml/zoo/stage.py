"""Train stage: every model of a pipeline's zoo that is not trained yet, into the store.

``train_pipeline(pipeline)`` adds the zoo's recipes to the store's ``models`` table,
trains each untrained model (in process, or one model per dask task on a cluster),
writes its checkpoint beside the store, and records checkpoint path, sha256, clean test
accuracy and training time in ``models`` as soon as that model is done, so a crash
never loses finished models and a rerun resumes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from ml4ml import dims, store
from ml4ml.errors import StoreError
from ml4ml.zoo.recipe import Recipe

TUPLE_FIELDS = ("normalize_mean", "normalize_std", "anomaly_removed")
TRAINED = "trained"
CHECKPOINT = "checkpoint"
SHA256 = "checkpoint_sha256"
TEST_ACCURACY = "test_accuracy"
TRAIN_SECONDS = "train_seconds"
N_TRAIN_IMAGES = "n_train_images"


@dataclass
class TrainReport:
    trained: list
    skipped: list
    seconds: float


def recipe_table(recipes) -> xr.Dataset:
    """The ``models`` rows of ``recipes``: one variable per recipe field (dim ``mid``).

    Tuple fields (normalisation, removed intervals) are stored as JSON strings; the
    training-outcome variables start empty (``trained`` False).
    """
    names = Recipe.field_names()
    columns = {name: [] for name in names if name != "mid"}
    for r in recipes:
        d = r.to_dict()
        for name in columns:
            value = d[name]
            columns[name].append(json.dumps(list(value)) if name in TUPLE_FIELDS else value)
    data = {}
    for name, values in columns.items():
        arr = np.asarray(values)
        if arr.dtype.kind in "US" or arr.dtype == object:
            arr = arr.astype(object)
        data[name] = ((dims.MID,), arr)
    n = len(recipes)
    data["anomaly_name"] = ((dims.MID,), np.array([r.anomaly_name for r in recipes], dtype=object))
    data[TRAINED] = ((dims.MID,), np.zeros(n, dtype=bool))
    data[CHECKPOINT] = ((dims.MID,), np.full(n, "", dtype=object))
    data[SHA256] = ((dims.MID,), np.full(n, "", dtype=object))
    data[TEST_ACCURACY] = ((dims.MID,), np.full(n, np.nan))
    data[TRAIN_SECONDS] = ((dims.MID,), np.full(n, np.nan))
    data[N_TRAIN_IMAGES] = ((dims.MID,), np.full(n, -1, dtype=np.int64))
    mids = np.array([r.mid for r in recipes], dtype=object)
    return xr.Dataset(data, coords={dims.MID: mids})


def recipe_from_row(row: xr.Dataset) -> Recipe:
    """Rebuild a Recipe from one ``models`` row (the inverse of ``recipe_table``)."""
    values = {"mid": str(row[dims.MID].values)}
    for name in Recipe.field_names():
        if name == "mid" or name not in row:
            continue
        v = row[name].values.item()
        if name in TUPLE_FIELDS:
            v = tuple(tuple(x) if isinstance(x, list) else x for x in json.loads(v or "[]"))
        elif isinstance(v, (np.generic,)):
            v = v.item()
        values[name] = v
    return Recipe(**values)


def register_zoo(pipeline) -> xr.Dataset:
    """Create the store if needed and add the zoo's new recipes; return the models table.

    A model already in the store whose recorded recipe differs from the spec's is an
    error (retrain it with ``--force``), so a table never describes a model wrongly.
    """
    store.create_store(pipeline.store, precision=pipeline.precision)
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


def train_pipeline(pipeline, *, client=None, force: bool = False, device: str = "cpu",
                   progress: bool = True) -> TrainReport:
    """Train every model of ``pipeline`` not yet trained (all with ``force``)."""
    start = time.perf_counter()
    table = register_zoo(pipeline)
    changed = _recipe_changes(pipeline, table)
    if changed and not force:
        mid, (name, old, new) = next(iter(changed.items()))
        raise StoreError(
            f"{len(changed)} model(s) in the store were trained with other recipes than the "
            f"spec's, e.g. model {mid!r} field '{name}': store {old!r}, spec {new!r}",
            file=pipeline.file, field=f"zoo ({mid}.{name})",
            hint="rerun with --force to retrain them, or use a new store path")
    trained = table[TRAINED].values.astype(bool)
    trained_mids = set(np.asarray(table[dims.MID].values)[trained].tolist())
    todo = [r for r in pipeline.recipes if force or r.mid not in trained_mids
            or not Path(str(table[CHECKPOINT].sel({dims.MID: r.mid}).values)).is_file()]
    skipped = [r.mid for r in pipeline.recipes if r not in todo]
    if changed and force:
        store.update_models(pipeline.store, recipe_table(
            [r for r in pipeline.recipes if r.mid in changed]))
    checkpoints = Path(pipeline.checkpoints)
    checkpoints.mkdir(parents=True, exist_ok=True)
    data_root = None if pipeline.data_root is None else str(pipeline.data_root)
    bar = _bar(len(todo), "train", progress)
    done = []
    for row in _run_all(todo, checkpoints, data_root, device, client):
        store.update_models(pipeline.store, _outcome_row(row))
        done.append(row["mid"])
        bar.set_postfix_str(f"{row['mid']} acc={row['test_accuracy']:.3f}")
        bar.update(1)
    bar.close()
    return TrainReport(trained=done, skipped=skipped, seconds=time.perf_counter() - start)


def train_one(recipe: Recipe, checkpoint_dir, data_root=None, device="cpu") -> dict:
    """Train one model, write its checkpoint; return the outcome row (plain dict)."""
    from ml4ml.cluster import prepare_dask_worker, torch_threads
    from ml4ml.zoo.training import save_checkpoint, train_model

    prepare_dask_worker()
    with torch_threads(1):
        result = train_model(recipe, data_root=data_root, device=device)
    path = Path(checkpoint_dir) / f"{recipe.mid}.pt"
    sha = save_checkpoint(result, recipe, path)
    return {"mid": recipe.mid, CHECKPOINT: str(path), SHA256: sha,
            TEST_ACCURACY: float(result.test_accuracy), TRAIN_SECONDS: float(result.seconds),
            N_TRAIN_IMAGES: int(result.n_train_images)}


def _run_all(todo, checkpoints, data_root, device, client):
    """Yield outcome rows as models finish: in process, or as dask tasks on ``client``."""
    if client is None:
        for recipe in todo:
            yield train_one(recipe, checkpoints, data_root, device)
        return
    from distributed import as_completed

    futures = [client.submit(train_one, r, str(checkpoints), data_root, device,
                             key=f"train-{r.mid}-{time.time_ns()}", pure=False) for r in todo]
    for future in as_completed(futures):
        yield future.result()


def _outcome_row(row: dict) -> xr.Dataset:
    data = {name: ((dims.MID,), np.array([row[name]], dtype=object if isinstance(row[name], str)
                                          else None))
            for name in (CHECKPOINT, SHA256, TEST_ACCURACY, TRAIN_SECONDS, N_TRAIN_IMAGES)}
    data[TRAINED] = ((dims.MID,), np.array([True]))
    return xr.Dataset(data, coords={dims.MID: np.array([row["mid"]], dtype=object)})


def _bar(total, desc, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="model", disable=not enabled or total == 0)
