"""Models trained elsewhere, registered in a store as they are (never trained).

An added model is a row of the ``models`` table like a trained one (``trained`` true,
``checkpoint``, ``checkpoint_sha256``, ``arch``, ``normalize_mean``/``normalize_std``,
``holdout``, ``partition``) plus ``source`` = ``"added"``, ``checkpoint_format``
(``checkpoints.FORMATS``), ``input_shape`` (JSON (channel, height, width) it was checked
on), ``num_classes``, ``trusted`` (the user vouched for the file: TorchScript, or a
``.pt2`` calling operators outside the allow-list), ``arch_sha256`` (the sha256 of a
``module:`` architecture's source file) and ``arch_root`` (the folder it was imported
from when added; for information: the probe imports it from its own spec's folder, and
only when that spec names it). The probe loads it through ``load_added``; every later
stage reads the store only.

``register_added`` checks every model (file, format, safety, architecture, input shape,
class count, finite outputs against the suites the store records, then the hold-out id
rule) before the store is touched, then writes all rows at once (``--force``: each
replaced row is marked untrained and its later results cleared first, so a crash leaves
either the old row or a row the next run redoes).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from ml4ml import dims, store
from ml4ml.errors import InputError, StoreError
# plain data, defined below the stages so that the spec layer needs nothing from the zoo
from ml4ml.spec.recipe import AddedModel  # noqa: F401 - re-exported

SOURCE = "source"
ADDED = "added"
FORMAT = "checkpoint_format"
INPUT_SHAPE = "input_shape"
NUM_CLASSES = "num_classes"
ARCH_ROOT = "arch_root"
TRUSTED = "trusted"
ARCH_SHA256 = "arch_sha256"
ATTRS = {
    SOURCE: ("model source", "'added' for a model trained elsewhere; empty for one ml4ml "
             "trained"),
    FORMAT: ("checkpoint format", "state_dict, export or torchscript (added models)"),
    INPUT_SHAPE: ("input shape", "JSON (channel, height, width) the model was checked on"),
    NUM_CLASSES: ("classes", "number of model outputs (added models)"),
    ARCH_ROOT: ("architecture folder", "where a module: architecture was imported from "
                "when the model was added (information: the probe imports it only from the "
                "folder of a spec that names it)"),
    TRUSTED: ("trusted", "the user vouched for the file (add-models --trust, trust = true): "
              "TorchScript, or a .pt2 calling operators outside the allow-list"),
    ARCH_SHA256: ("architecture sha256", "sha256 of a module: architecture's source file "
                  "when the model was added; the probe refuses another"),
}


@dataclass
class AddReport:
    added: list = field(default_factory=list)
    replaced: list = field(default_factory=list)  # its later results are redone
    already: list = field(default_factory=list)
    unchecked: str = ""  # what could not be checked (no suites recorded yet), and why


def check_mid(mid, where="--mid") -> str:
    mid = str(mid)
    if not mid or not mid.replace("_", "").replace("-", "").isalnum():
        raise InputError(f"model id must be letters, digits, '-' or '_', got {mid!r}",
                         field=where)
    return mid


def load_added(checkpoint, sha256, info: dict):
    """``(model, layers)`` of an added model's row (``info``: ``added_info``'s entry).

    The file must still have the recorded sha256. A ``module:`` architecture is imported
    only from the folder of the current spec that names it (``info["module_base"]``) and
    only if its source file still has the recorded sha256; a store alone never chooses
    the code that runs.
    """
    from ml4ml.zoo.checkpoints import load_model, read_bytes

    data, found = read_bytes(checkpoint)
    if sha256 and found != str(sha256):
        raise InputError(f"checkpoint sha256 {found[:12]}... differs from the one recorded "
                         f"when the model was added ({str(sha256)[:12]}...): the file was "
                         "truncated or replaced", file=checkpoint, field="checkpoint_sha256",
                         hint="register the new file with 'ml4ml add-models STORE FILE "
                              "--force' (or 'ml4ml train PIPELINE --force')")
    arch = info.get("arch", "")
    base = None
    if info[FORMAT] == "state_dict" and arch.startswith("module:"):
        base = _module_base(arch, info)
    return load_model(data, info[FORMAT], path=checkpoint, arch=arch, base=base,
                      trusted=bool(info.get(TRUSTED)))


def _module_base(arch: str, info: dict) -> str:
    """The spec folder a ``module:`` arch is imported from; InputError unless the current
    spec names it and its source file is the one recorded when the model was added."""
    import hashlib

    from ml4ml.zoo.checkpoints import module_file

    mid = info.get("mid", "?")
    base = info.get("module_base")
    if not base:
        raise InputError(
            f"model {mid!r} has architecture {arch!r}, which the spec does not name: code is "
            "imported only from the spec or command line, never because a store says so",
            field="arch", hint="name it in a [[zoo.models]] entry of the spec (mid, "
                               "checkpoint, arch), or add the model as a .pt2")
    source = module_file(arch, base)
    with open(source, "rb") as file:
        digest = hashlib.sha256(file.read()).hexdigest()
    recorded = str(info.get(ARCH_SHA256) or "")
    if recorded != digest:
        raise InputError(f"model {mid!r}: the source of its architecture {arch!r} has sha256 "
                         f"{digest[:12]}..., not the {recorded[:12] or 'none'}... recorded when "
                         "it was added: the code changed", file=source, field=ARCH_SHA256,
                         hint="add the model again with --force if the new code is meant")
    return base


def _module_digest(added: AddedModel, path) -> str:
    """sha256 of a ``module:`` arch's source file (imported from ``added.base``), or ""."""
    import hashlib

    from ml4ml.zoo.checkpoints import module_file

    if not added.arch.startswith("module:"):
        return ""
    try:
        source = module_file(added.arch, added.base or None)
    except InputError as exc:
        raise InputError(exc.message, file=path, field="arch") from None
    with open(source, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


@dataclass(frozen=True)
class SuiteCheck:
    """A suite new models must fit: its name, image shape (channel, height, width), class
    count and a few of its images (None: random images of that shape stand in)."""

    name: str
    shape: tuple
    n_classes: int
    images: object = None

    def inputs(self):
        """(2, channel, height, width) images to run a model on."""
        import torch

        if self.images is not None:
            return self.images[:2]
        generator = torch.Generator().manual_seed(0)
        return torch.rand((2,) + tuple(self.shape), generator=generator)


def _check_model(model, added: AddedModel, suites, path) -> tuple[list, int]:
    """(input shape, class count) after one forward per suite; InputError if it does not fit."""
    import torch

    shape, n_classes = [], 0
    for suite in suites:
        x = suite.inputs()
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


def _row(added: AddedModel, checkpoint, sha, fmt, shape, n_classes,
         arch_sha: str = "") -> xr.Dataset:
    from ml4ml.zoo.recipe import Recipe
    from ml4ml.zoo.table import CHECKPOINT, SHA256, TRAINED, recipe_table

    recipe = Recipe(mid=added.mid, arch=added.arch or fmt, holdout=added.holdout,
                    partition=added.partition, normalize_mean=tuple(added.normalize_mean),
                    normalize_std=tuple(added.normalize_std))
    table = recipe_table([recipe])
    from ml4ml.zoo.layers import LAYERS, LAYERS_ATTRS, layers_json

    values = {TRAINED: True, CHECKPOINT: str(checkpoint), SHA256: sha, SOURCE: ADDED,
              FORMAT: fmt, INPUT_SHAPE: json.dumps(shape), NUM_CLASSES: n_classes,
              ARCH_ROOT: os.path.abspath(added.base or ".") if arch_sha else "",
              TRUSTED: bool(added.trusted), ARCH_SHA256: arch_sha,
              LAYERS: layers_json(added.layers)}
    for name, value in values.items():
        table[name] = ((dims.MID,), np.array([value], dtype=object if isinstance(value, str)
                                             else None))
        if name in ATTRS or name == LAYERS:
            long_name, description = ATTRS.get(name, LAYERS_ATTRS)
            table[name].attrs.update(long_name=long_name, description=description)
    return table


def _stored_rows(path) -> dict:
    """mid -> (sha256, checkpoint, source, complete) of the rows already in the store."""
    from ml4ml.zoo.table import CHECKPOINT, SHA256, TRAINED

    table = store.read_models(path) if store.store_exists(path) else None
    if table is None or not table.sizes.get(dims.MID, 0):
        return {}
    n = table.sizes[dims.MID]

    def column(name, default):
        return table[name].values if name in table else [default] * n

    return {str(m): (str(sha), str(c), str(src), bool(done)) for m, sha, c, src, done in zip(
        table[dims.MID].values, column(SHA256, ""), column(CHECKPOINT, ""),
        column(SOURCE, ""), column(TRAINED, False))}


def _check_one(added: AddedModel, data: bytes, sha: str, checkpoint: str, suites,
               recorded: tuple) -> xr.Dataset:
    """The row of one model, every check passed (module doc); InputError otherwise.

    recorded : ``zoo.layers.recorded_layers``: its layers must be found and as many."""
    from ml4ml.zoo.checkpoints import detect_format, load_model
    from ml4ml.zoo.layers import check_model_layers

    fmt = detect_format(data, checkpoint)  # truncated, corrupt, pickled code, .pt2 pre-check
    if fmt == "state_dict" and not added.arch:
        raise InputError(f"model {added.mid!r} is a state dict: it needs its architecture",
                         file=checkpoint, field="arch",
                         hint="give arch (cnn5, vgg13bn, resnet, torchvision:<name> or "
                              "module:<package.module>:<Class>), or save it with "
                              "torch.export")
    arch_sha = _module_digest(added, checkpoint) if fmt == "state_dict" else ""
    model, _ = load_model(data, fmt, path=checkpoint, arch=added.arch,
                          base=added.base or None, trusted=added.trusted)
    shape, n_classes = _check_model(model, added, suites, checkpoint)
    check_model_layers(model, added.mid, added.layers, recorded, checkpoint)
    if not suites:
        shape, n_classes = [], -1
    if added.holdout != added.mid.startswith("t"):  # after the file: a bad file says so first
        raise InputError(f"hold-out ids start with 't' and only they do; got {added.mid!r} "
                         f"{'as' if added.holdout else 'not as'} a hold-out model",
                         file=checkpoint, field="mid",
                         hint="give a hold-out model an id starting with 't' (--mid t001 "
                              "--holdout), any other model one that does not")
    return _row(added, checkpoint, sha, fmt, shape, n_classes, arch_sha)


def register_added(path, models, *, suites=(), force: bool = False, pipeline=None,
                   precision: str = "float32", command: str = "ml4ml add-models") -> AddReport:
    """Check ``models`` (AddedModel) on ``suites`` (``SuiteCheck``) and write their rows.

    A model already in the store with the same checkpoint bytes is left as it is. One whose
    file now has other bytes needs ``force``: its row is marked untrained, its probes,
    matrices and measures are cleared, then the new row is written with ``trained`` last,
    so every later stage redoes it, and only it, and a crash at any point leaves either
    the old row or one the next run (with or without ``force``) writes again. Suites the
    store does not record yet are recorded (``store.record_suites``).
    """
    from ml4ml.zoo.checkpoints import read_bytes
    from ml4ml.zoo.table import TRAINED, invalidate_downstream

    report = AddReport()
    if not models:
        return report
    seen = set()
    for added in models:
        if added.mid in seen:
            raise InputError(f"model id {added.mid!r} is given twice", field="--mid")
        seen.add(added.mid)
    stored = _stored_rows(path)
    from ml4ml.zoo.layers import recorded_layers

    recorded = recorded_layers(path, pipeline)
    rows, replace = [], []
    for added in models:  # 1. everything checked before the store is touched
        checkpoint = os.fspath(added.checkpoint)
        data, sha = read_bytes(checkpoint)
        if added.mid in stored:
            old_sha, old_file, source, complete = stored[added.mid]
            if source != ADDED:
                raise StoreError(f"model id {added.mid!r} is already used by a model "
                                 f"{source or 'ml4ml trained'} in the store", file=path,
                                 field="mid", hint="give the added model another id (--mid)")
            if complete and old_sha == sha and old_file == checkpoint:
                report.already.append(added.mid)
                continue
            if complete and not force:
                raise StoreError(f"model {added.mid!r} is in the store with checkpoint "
                                 f"{old_file} (sha256 {old_sha[:12]}...); the file given now "
                                 f"has sha256 {sha[:12]}...", file=checkpoint, field="checkpoint",
                                 hint="rerun with --force to replace it (its later results "
                                      "are redone)")
        rows.append(_check_one(added, data, sha, checkpoint, suites, recorded))
        (replace if added.mid in stored else report.added).append(added.mid)
    if not suites:
        report.unchecked = ("the store records no suites yet, so the models' input shape and "
                            "class count were not checked (the probe checks them)")
    if not rows:
        return report
    with store.writing(path, command):  # 2. all rows, then lineage
        store.create_store(path, precision=precision, pipeline=pipeline)
        store.record_suites(path, {s.name: (s.shape, s.n_classes) for s in suites})
        new = [r for r in rows if str(r[dims.MID].values[0]) not in replace]
        if new:
            store.add_models(path, xr.concat(new, dim=dims.MID))
        if replace:  # untrained first, then later results cleared, then the row, flag last
            changed = xr.concat([r for r in rows if str(r[dims.MID].values[0]) in replace],
                                dim=dims.MID)
            flags = xr.Dataset({TRAINED: ((dims.MID,), np.zeros(len(replace), dtype=bool))},
                               coords={dims.MID: changed[dims.MID].values})
            store.update_models(path, flags)
            invalidate_downstream(path, replace)
            store.update_models(path, changed, last=(TRAINED,))
    report.replaced = replace
    return report


def added_info(table: xr.Dataset, pipeline=None) -> dict:
    """mid -> {format, arch, arch_root, normalize, trusted, arch_sha256, module_base} of the
    table's added models; ``module_base``: the folder of ``pipeline`` (the current spec)
    when it names the model's ``module:`` arch, else None (the probe then refuses it)."""
    if SOURCE not in table:
        return {}
    modules = spec_modules(pipeline)
    n = table.sizes[dims.MID]

    def column(name, default):
        return table[name].values if name in table else [default] * n

    out = {}
    trusted, arch_sha = column(TRUSTED, False), column(ARCH_SHA256, "")
    for k, mid in enumerate(table[dims.MID].values):
        if str(table[SOURCE].values[k]) != ADDED:
            continue
        arch = str(table["arch"].values[k])
        out[str(mid)] = {"mid": str(mid), FORMAT: str(table[FORMAT].values[k]), "arch": arch,
                         ARCH_ROOT: str(table[ARCH_ROOT].values[k]),
                         TRUSTED: bool(trusted[k]), ARCH_SHA256: str(arch_sha[k]),
                         "module_base": modules.get(arch),
                         "normalize_mean": json.loads(str(table["normalize_mean"].values[k])
                                                      or "[]"),
                         "normalize_std": json.loads(str(table["normalize_std"].values[k])
                                                     or "[]")}
    return out


def spec_modules(pipeline) -> dict:
    """{``module:`` arch: folder it is imported from} of every model a spec names."""
    if pipeline is None:
        return {}
    from pathlib import Path

    folder = str(Path(pipeline.file).resolve().parent) if getattr(pipeline, "file", None) \
        else None
    out = {}
    for model in list(pipeline.recipes) + list(pipeline.added):
        base = getattr(model, "base", "") or folder
        if model.arch.startswith("module:") and base:  # absolute: workers run elsewhere
            out.setdefault(model.arch, str(Path(base).resolve()))
    return out


def pipeline_suites(pipeline) -> list[SuiteCheck]:
    """The suites of a spec, loaded (a few images each) to check new models on."""
    from ml4ml.data.own import load_spec_suite

    root = None if pipeline.data_root is None else str(pipeline.data_root)
    out = []
    for spec in pipeline.suites:  # built-in, registered, or your own images
        suite = load_spec_suite(spec, root=root, spec_file=pipeline.file)
        out.append(SuiteCheck(spec.name, tuple(suite.images.shape[1:]), int(suite.n_classes),
                              suite.images[:2]))
    return out


def store_suites(path, pipeline_obj=None) -> list[SuiteCheck]:
    """The suites an added model must fit: the pipeline's if one is given, else those the
    store records (``store.recorded_suites``), else (a store from before suites were
    recorded) its recorded spec's, if that is still where the store says; else none."""
    if pipeline_obj is not None:
        return pipeline_suites(pipeline_obj)
    if not store.store_exists(path):
        return []
    recorded = store.recorded_suites(path)
    if recorded:
        return [SuiteCheck(name, shape, classes)
                for name, (shape, classes) in recorded.items()]
    from ml4ml.store.groups import pipeline_file

    spec = pipeline_file(store.store_attrs(path), path)
    if spec and os.path.isfile(spec):
        from ml4ml.config import load_pipeline

        return pipeline_suites(load_pipeline(spec))
    return []


def add_models(store_path, models, *, arch: str = "", holdout=None, partition: str = "",
               normalize_mean=(), normalize_std=(), force: bool = False, pipeline=None,
               base=None, layers=None, trusted: bool = False) -> AddReport:
    """Register models trained elsewhere in ``store_path``, as they are (never trained).

    models : ``{mid: module_or_path}``: a checkpoint file (state dict, ``.pt2``,
        TorchScript) or an ``nn.Module`` held in memory (saved beside the store as
        ``<store>.checkpoints/<mid>.pt`` (a state dict, with ``arch``) or ``<mid>.pt2``
        (a ``torch.export`` program), then registered).
    arch : the architecture of state dicts; holdout : default ``mid.startswith("t")``.
    normalize_mean, normalize_std : per-channel input normalisation (after the transform).
    pipeline : a spec file or ``Pipeline`` whose suites the models must fit (default: the
        suites the store records).
    layers : module names to record, for every model (a list) or per model (``{mid:
        list}``); default the spec's ``[probe] layers``, else each model's last
        convolutions (``zoo.layers``).
    base : the folder ``module:`` architectures are imported from (default: the current
        one); trusted : the files may be code (TorchScript; see ``checkpoints``).
    Returns an ``AddReport`` (added, replaced, already, unchecked).
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
            save_module(value, target, arch=arch, example=suites[0].inputs()[:1])
            value = target
        entries.append(AddedModel(
            mid=mid, checkpoint=os.path.abspath(value) if "://" not in str(value) else str(value),
            arch=arch, holdout=mid.startswith("t") if holdout is None else bool(holdout),
            partition=partition, normalize_mean=tuple(float(v) for v in normalize_mean),
            normalize_std=tuple(float(v) for v in normalize_std),
            base=str(base or os.getcwd()), trusted=bool(trusted),
            layers=tuple((layers.get(mid) if isinstance(layers, dict) else layers) or ())))
    spec = pipeline.file if isinstance(pipeline, Pipeline) else None
    precision = pipeline.precision if isinstance(pipeline, Pipeline) else "float32"
    return register_added(store_path, entries, suites=suites, force=force, pipeline=spec,
                          precision=precision)
