"""Models trained elsewhere, registered in a store as they are (never trained).

An added model is a row of the ``models`` table like a trained one (``trained`` true,
``checkpoint``, ``checkpoint_sha256``, ``arch``, ``normalize_mean``/``normalize_std``,
``holdout``, ``partition``) plus ``source`` = ``"added"``, ``checkpoint_format``
(``checkpoints.FORMATS``), ``input_shape`` (JSON (channel, height, width) it was checked
on), ``num_classes`` and ``arch_root`` (the folder ``module:`` architectures import
from). The probe loads it through ``load_added``; every later stage reads the store only.

``register_added`` checks every model (file, format, architecture, input shape, class
count, finite outputs) before the store is touched, then writes all rows at once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from ml4ml import dims, store
from ml4ml.errors import InputError, StoreError

SOURCE = "source"
ADDED = "added"
FORMAT = "checkpoint_format"
INPUT_SHAPE = "input_shape"
NUM_CLASSES = "num_classes"
ARCH_ROOT = "arch_root"
ATTRS = {
    SOURCE: ("model source", "'added' for a model trained elsewhere; empty for one ml4ml "
             "trained"),
    FORMAT: ("checkpoint format", "state_dict, export or torchscript (added models)"),
    INPUT_SHAPE: ("input shape", "JSON (channel, height, width) the model was checked on"),
    NUM_CLASSES: ("classes", "number of model outputs (added models)"),
    ARCH_ROOT: ("architecture folder", "where module: architectures are imported from"),
}


@dataclass(frozen=True)
class AddedModel:
    """A model trained elsewhere: its id, checkpoint file and how to feed it.

    checkpoint : a local path or fsspec URL (state dict, ``.pt2`` or TorchScript).
    arch : the architecture of a state dict ("" for export and TorchScript).
    normalize_mean, normalize_std : per-channel input normalisation applied after the
        transformation (empty: none).
    base : the folder ``module:`` architectures are imported relative to.
    layers : module names the probe records for it (``zoo.layers``); () for the default.
    where : the spec field it came from ("" for the command line), for messages.
    """

    mid: str
    checkpoint: str
    arch: str = ""
    holdout: bool = False
    partition: str = ""
    normalize_mean: tuple = ()
    normalize_std: tuple = ()
    base: str = ""
    layers: tuple = ()
    where: str = ""

    @property
    def normalize(self):
        if not self.normalize_mean:
            return None
        return (tuple(self.normalize_mean), tuple(self.normalize_std))


@dataclass
class AddReport:
    added: list = field(default_factory=list)
    replaced: list = field(default_factory=list)  # its later results are redone
    already: list = field(default_factory=list)


def check_mid(mid, where="--mid") -> str:
    mid = str(mid)
    if not mid or not mid.replace("_", "").replace("-", "").isalnum():
        raise InputError(f"model id must be letters, digits, '-' or '_', got {mid!r}",
                         field=where)
    return mid


def load_added(checkpoint, sha256, info: dict):
    """``(model, layers)`` of an added model's row (``info``: format, arch, arch_root)."""
    from ml4ml.zoo.checkpoints import load_model, read_bytes

    data, found = read_bytes(checkpoint)
    if sha256 and found != str(sha256):
        raise InputError(f"checkpoint sha256 {found[:12]}... differs from the one recorded "
                         f"when the model was added ({str(sha256)[:12]}...): the file was "
                         "replaced", file=checkpoint, field="checkpoint_sha256",
                         hint="register the new file with 'ml4ml add-models STORE FILE "
                              "--force' (or 'ml4ml train PIPELINE --force')")
    return load_model(data, info[FORMAT], path=checkpoint, arch=info.get("arch", ""),
                      base=info.get(ARCH_ROOT) or None)


def _check_model(model, added: AddedModel, suites, path) -> tuple[list, int]:
    """(input shape, class count) after one forward per suite; InputError if it does not fit."""
    import torch

    shape, n_classes = [], 0
    for suite in suites:
        x = suite.images[:2]
        shape = list(x.shape[1:])
        if added.normalize is not None:
            mean, std = (torch.as_tensor(v, dtype=x.dtype).reshape(1, -1, 1, 1)
                         for v in added.normalize)
            if mean.numel() not in (1, x.shape[1]):
                raise InputError(f"model {added.mid!r}: normalize_mean has {mean.numel()} "
                                 f"values, suite {suite.name!r} images have {x.shape[1]} "
                                 "channels", file=path, field="normalize_mean")
            x = (x - mean) / std
        with torch.inference_mode():
            try:
                logits = model(x)
            except Exception as exc:  # noqa: BLE001 - any failure: the shape does not fit
                text = str(exc).strip()
                first = text.splitlines()[0] if text else type(exc).__name__
                raise InputError(f"model {added.mid!r} cannot take the images of suite "
                                 f"{suite.name!r}: expected input of the model's own shape, "
                                 f"found (channel, height, width) {tuple(shape)}: {first}",
                                 file=path, field="input_shape",
                                 hint="add it to a store whose suites have the shape it was "
                                      "trained on") from None
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            found = tuple(logits.shape) if isinstance(logits, torch.Tensor) else \
                type(logits).__name__
            raise InputError(f"model {added.mid!r} must return logits (n_images, n_classes), "
                             f"found {found}", file=path, field="checkpoint")
        if logits.shape[1] != suite.n_classes:
            raise InputError(f"model {added.mid!r} has {logits.shape[1]} outputs, suite "
                             f"{suite.name!r} has {suite.n_classes} classes: expected "
                             f"{suite.n_classes}, found {logits.shape[1]}", file=path,
                             field="num_classes")
        if not bool(torch.isfinite(logits).all()):
            raise InputError(f"model {added.mid!r} gives NaN or infinite outputs on suite "
                             f"{suite.name!r}", file=path, field="checkpoint")
        n_classes = int(logits.shape[1])
    return shape, n_classes


def _row(added: AddedModel, checkpoint, sha, fmt, shape, n_classes) -> xr.Dataset:
    from ml4ml.zoo.recipe import Recipe
    from ml4ml.zoo.stage import CHECKPOINT, SHA256, TRAINED, recipe_table

    recipe = Recipe(mid=added.mid, arch=added.arch or fmt, holdout=added.holdout,
                    partition=added.partition, normalize_mean=tuple(added.normalize_mean),
                    normalize_std=tuple(added.normalize_std))
    table = recipe_table([recipe])
    from ml4ml.zoo.layers import LAYERS, LAYERS_ATTRS, layers_json

    values = {TRAINED: True, CHECKPOINT: str(checkpoint), SHA256: sha, SOURCE: ADDED,
              FORMAT: fmt, INPUT_SHAPE: json.dumps(shape), NUM_CLASSES: n_classes,
              ARCH_ROOT: str(added.base or ""), LAYERS: layers_json(added.layers)}
    for name, value in values.items():
        table[name] = ((dims.MID,), np.array([value], dtype=object if isinstance(value, str)
                                             else None))
        if name in ATTRS or name == LAYERS:
            long_name, description = ATTRS.get(name, LAYERS_ATTRS)
            table[name].attrs.update(long_name=long_name, description=description)
    return table


def register_added(path, models, *, suites=(), force: bool = False, pipeline=None,
                   precision: str = "float32", command: str = "ml4ml add-models") -> AddReport:
    """Check ``models`` (AddedModel) on ``suites`` and write their rows; see the module doc.

    A model already in the store with the same checkpoint bytes is left as it is. One whose
    file now has other bytes needs ``force``: its row is replaced and its probes, matrices
    and measures are cleared, so every later stage redoes it, and only it.
    """
    from ml4ml.zoo.checkpoints import detect_format, load_model, read_bytes
    from ml4ml.zoo.stage import CHECKPOINT, SHA256, invalidate_downstream

    report = AddReport()
    if not models:
        return report
    seen = set()
    for added in models:
        if added.mid in seen:
            raise InputError(f"model id {added.mid!r} is given twice", field="--mid")
        seen.add(added.mid)
    table = store.read_models(path) if store.store_exists(path) else None
    stored = {}
    if table is not None and table.sizes.get(dims.MID, 0):
        sources = (table[SOURCE].values if SOURCE in table
                   else np.full(table.sizes[dims.MID], "", dtype=object))
        stored = {str(m): (str(s), str(c), str(src)) for m, s, c, src in zip(
            table[dims.MID].values, table[SHA256].values if SHA256 in table else
            [""] * len(sources), table[CHECKPOINT].values if CHECKPOINT in table else
            [""] * len(sources), sources)}
    from ml4ml.zoo.layers import check_model_layers, recorded_layers

    recorded = recorded_layers(path, pipeline)
    rows, replace = [], []
    for added in models:  # 1. everything checked before the store is touched
        checkpoint = os.fspath(added.checkpoint)
        data, sha = read_bytes(checkpoint)
        if added.mid in stored:
            old_sha, old_file, source = stored[added.mid]
            if source != ADDED:
                raise StoreError(f"model id {added.mid!r} is already used by a model "
                                 f"{source or 'ml4ml trained'} in the store", file=path,
                                 field="mid", hint="give the added model another id (--mid)")
            if old_sha == sha and old_file == checkpoint:
                report.already.append(added.mid)
                continue
            if not force:
                raise StoreError(f"model {added.mid!r} is in the store with checkpoint "
                                 f"{old_file} (sha256 {old_sha[:12]}...); the file given now "
                                 f"has sha256 {sha[:12]}...", file=checkpoint, field="checkpoint",
                                 hint="rerun with --force to replace it (its later results "
                                      "are redone)")
        fmt = detect_format(data, checkpoint)
        if fmt == "state_dict" and not added.arch:
            raise InputError(f"model {added.mid!r} is a state dict: it needs its architecture",
                             file=checkpoint, field="arch",
                             hint="give arch (cnn5, vgg13bn, resnet, torchvision:<name> or "
                                  "module:<package.module>:<Class>), or save it with "
                                  "torch.export")
        model, _ = load_model(data, fmt, path=checkpoint, arch=added.arch,
                              base=added.base or None)
        shape, n_classes = _check_model(model, added, suites, checkpoint)
        check_model_layers(model, added.mid, added.layers, recorded, checkpoint)
        if not suites:
            shape, n_classes = [], -1
        rows.append(_row(added, checkpoint, sha, fmt, shape, n_classes))
        (replace if added.mid in stored else report.added).append(added.mid)
    if not rows:
        return report
    with store.writing(path, command):  # 2. all rows, then lineage
        store.create_store(path, precision=precision, pipeline=pipeline)
        new = [r for r in rows if str(r[dims.MID].values[0]) not in replace]
        if new:
            store.add_models(path, xr.concat(new, dim=dims.MID))
        if replace:
            changed = [r for r in rows if str(r[dims.MID].values[0]) in replace]
            invalidate_downstream(path, replace)
            store.update_models(path, xr.concat(changed, dim=dims.MID),
                                last=("trained",))
    report.replaced = replace
    return report


def added_info(table: xr.Dataset) -> dict:
    """mid -> {format, arch, arch_root, normalize} of the table's added models."""
    if SOURCE not in table:
        return {}
    out = {}
    for k, mid in enumerate(table[dims.MID].values):
        if str(table[SOURCE].values[k]) != ADDED:
            continue
        out[str(mid)] = {FORMAT: str(table[FORMAT].values[k]),
                         "arch": str(table["arch"].values[k]),
                         ARCH_ROOT: str(table[ARCH_ROOT].values[k]),
                         "normalize_mean": json.loads(str(table["normalize_mean"].values[k])
                                                      or "[]"),
                         "normalize_std": json.loads(str(table["normalize_std"].values[k])
                                                     or "[]")}
    return out


def store_suites(path, pipeline_obj=None):
    """The suites an added model must fit: the pipeline's, else the store's recorded spec's."""
    from ml4ml.probe.stage import load_probe_suite

    if pipeline_obj is None and store.store_exists(path):
        from ml4ml.store.groups import pipeline_file

        spec = pipeline_file(store.store_attrs(path), path)
        if spec and os.path.isfile(spec):
            from ml4ml.config import load_pipeline

            pipeline_obj = load_pipeline(spec)
    if pipeline_obj is None:
        return []
    return [load_probe_suite(pipeline_obj, s) for s in pipeline_obj.suites]


def add_models(store_path, models, *, arch: str = "", holdout=None, partition: str = "",
               normalize_mean=(), normalize_std=(), force: bool = False, pipeline=None,
               base=None, layers=None) -> AddReport:
    """Register models trained elsewhere in ``store_path``, as they are (never trained).

    models : ``{mid: module_or_path}``: a checkpoint file (state dict, ``.pt2``,
        TorchScript) or an ``nn.Module`` held in memory (saved beside the store as
        ``<store>.checkpoints/<mid>.pt`` (a state dict, with ``arch``) or ``<mid>.pt2``
        (a ``torch.export`` program), then registered).
    arch : the architecture of state dicts; holdout : default ``mid.startswith("t")``.
    normalize_mean, normalize_std : per-channel input normalisation (after the transform).
    pipeline : a spec file or ``Pipeline`` whose suites the models must fit (default: the
        spec the store records).
    layers : module names to record, for every model (a list) or per model (``{mid:
        list}``); default the spec's ``[probe] layers``, else each model's last
        convolutions (``zoo.layers``).
    Returns an ``AddReport`` (added, replaced, already).
    """
    import torch

    from ml4ml.config import Pipeline, load_pipeline

    if isinstance(pipeline, (str, os.PathLike)):
        pipeline = load_pipeline(pipeline)
    suites = store_suites(store_path, pipeline if isinstance(pipeline, Pipeline) else None)
    if not isinstance(models, dict):
        raise InputError(f"models must be a dict {{mid: module or path}}, got "
                         f"{type(models).__name__}", field="models")
    entries = []
    for mid, value in models.items():
        mid = check_mid(mid, "models")
        if isinstance(value, torch.nn.Module):
            if not suites:
                raise InputError("a model held in memory needs the suites it runs on",
                                 file=store_path, field="pipeline",
                                 hint="pass pipeline='spec.toml'")
            from ml4ml.zoo.checkpoints import save_module

            folder = str(store_path).rstrip("/") + ".checkpoints"
            target = os.path.join(folder, f"{mid}.pt" if arch else f"{mid}.pt2")
            save_module(value, target, arch=arch, example=suites[0].images[:1])
            value = target
        entries.append(AddedModel(
            mid=mid, checkpoint=os.path.abspath(value) if "://" not in str(value) else str(value),
            arch=arch, holdout=mid.startswith("t") if holdout is None else bool(holdout),
            partition=partition, normalize_mean=tuple(float(v) for v in normalize_mean),
            normalize_std=tuple(float(v) for v in normalize_std),
            base=str(base or os.getcwd()),
            layers=tuple((layers.get(mid) if isinstance(layers, dict) else layers) or ())))
    spec = pipeline.file if isinstance(pipeline, Pipeline) else None
    precision = pipeline.precision if isinstance(pipeline, Pipeline) else "float32"
    return register_added(store_path, entries, suites=suites, force=force, pipeline=spec,
                          precision=precision)
