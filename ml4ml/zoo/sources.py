"""Model sources: ``load(mid) -> (module, preprocessing)``, whatever a model came from.

The probe needs one thing from the zoo: model X as a torch module, with what to do to an
image before it (``Preprocessing``: the normalisation, the layers the model records). Each
source of models answers that through the same small interface, ``ModelSource``:

- ``TrainedHere``: models ml4ml trained (an ml4ml checkpoint, its recipe inside);
- ``Added``: models trained elsewhere and registered with ``add-models`` or ``[[zoo.models]]``
  (``zoo.adding``: a state dict, ``.pt2`` or TorchScript, data unless trusted);
- later others (a hub) with the same ``load``.

``store_models(table, pipeline)`` reads the store's ``models`` table once and gives the
``StoreModels`` of a pipeline: which models it probes, their checkpoints' sha256 and
layers, and ``source(mid)``: a small picklable ``ModelSource`` of that one model for a dask
task. Every source checks the file against the sha256 recorded when the model was trained
or added, and raises InputError naming the file when it is missing, truncated or replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ml4ml import dims

__all__ = ["Preprocessing", "ModelSource", "TrainedHere", "Added", "StoreModels",
           "store_models"]


@dataclass(frozen=True)
class Preprocessing:
    """What the probe needs of a model besides its module.

    mid, arch : its id and architecture (for messages); file : where it was loaded from.
    normalize_mean, normalize_std : per-channel input normalisation after the
        transformation (empty: none).
    layers : the module names it records (the spec's, else those recorded in the store),
        None for the default (``zoo.layers.chosen_layers``).
    """

    mid: str
    arch: str = ""
    file: str = ""
    normalize_mean: tuple = ()
    normalize_std: tuple = ()
    layers: tuple | None = None

    @property
    def normalize(self):
        """``(mean, std)`` or None, as ``probe_model`` takes it."""
        if not self.normalize_mean:
            return None
        return (tuple(self.normalize_mean), tuple(self.normalize_std))


@runtime_checkable
class ModelSource(Protocol):
    """Where models come from: ``load(mid)`` gives ``(module in eval mode on the CPU,
    Preprocessing)``, or raises InputError naming the file."""

    def load(self, mid: str) -> tuple: ...


@dataclass(frozen=True)
class TrainedHere:
    """Models ml4ml trained. files : {mid: (checkpoint, sha256)}; layers : {mid: layers}."""

    files: dict
    layers: dict = field(default_factory=dict)

    def load(self, mid: str) -> tuple:
        from ml4ml.zoo.checkpoint_files import load_checkpoint, verify_checkpoint

        checkpoint, sha256 = self.files[mid]
        verify_checkpoint(checkpoint, sha256 or None)
        model, recipe = load_checkpoint(checkpoint, sha256=sha256 or None)
        return model, Preprocessing(mid, recipe.arch, checkpoint, recipe.normalize_mean,
                                    recipe.normalize_std, self.layers.get(mid))


@dataclass(frozen=True)
class Added:
    """Models trained elsewhere. files : {mid: (checkpoint, sha256, info)} (info:
    ``zoo.adding.added_info``'s entry); layers : {mid: layers}."""

    files: dict
    layers: dict = field(default_factory=dict)

    def load(self, mid: str) -> tuple:
        from ml4ml.zoo.adding import load_added

        checkpoint, sha256, info = self.files[mid]
        model, _ = load_added(checkpoint, sha256, info)
        return model, Preprocessing(mid, info["arch"], checkpoint,
                                    tuple(info["normalize_mean"]),
                                    tuple(info["normalize_std"]), self.layers.get(mid))


@dataclass(frozen=True)
class StoreModels:
    """The models of a store a pipeline probes, whatever their source.

    mids : the spec's models, then the store's added models the spec does not name;
    trained : those of them trained (or added); sha256 : {mid: checkpoint sha256};
    layers : {mid: its own layers} (the spec's, else those the store records);
    sources : {mid: the ``ModelSource`` that loads it}.
    """

    mids: list
    trained: list
    sha256: dict
    layers: dict
    sources: dict

    def load(self, mid: str) -> tuple:
        return self.sources[mid].load(mid)

    def source(self, mid: str) -> ModelSource:
        """A source of model ``mid`` alone (small, picklable: what a dask task gets)."""
        whole = self.sources[mid]
        return type(whole)({mid: whole.files[mid]},
                           {mid: whole.layers[mid]} if mid in whole.layers else {})


def store_models(table, pipeline) -> StoreModels:
    """The ``StoreModels`` of ``pipeline`` in a store's ``models`` table (``store.
    read_models``); ``module:`` code of added models only if this spec names it."""
    from ml4ml.zoo.adding import added_info
    from ml4ml.zoo.layers import table_layers
    from ml4ml.zoo.table import CHECKPOINT, SHA256, TRAINED

    ids = [str(m) for m in table[dims.MID].values]
    sha = dict(zip(ids, [str(s) for s in table[SHA256].values]))
    files = dict(zip(ids, [str(c) for c in table[CHECKPOINT].values]))
    done = {m for m, t in zip(ids, table[TRAINED].values) if t}
    added = added_info(table, pipeline)
    mids = list(pipeline.mids) + [m for m in added if m not in pipeline.mids]
    layers = {**table_layers(table), **pipeline.layers}
    here = TrainedHere({m: (files[m], sha[m]) for m in ids if m not in added}, layers)
    elsewhere = Added({m: (files[m], sha[m], added[m]) for m in added}, layers)
    return StoreModels(mids=mids, trained=[m for m in mids if m in done], sha256=sha,
                       layers=layers, sources={m: elsewhere if m in added else here
                                               for m in ids})
