"""Which layers of a model are recorded: chosen per model, checked, or found by default.

Every model of a store records the same number of layers (the probe group's ``layer``
dim, ``[probe] layers``' count or ``DEFAULT_N_LAYERS``); levels compare them by position
from the output (docs/measures.md, "Levels"). A model's layers are, first to last found:

1. its own, chosen in the spec (``[[zoo.models]] layers = [...]``, ``[zoo.checkpoints]
   layers``) or with ``ml4ml add-models --layers``, recorded in the ``models`` table
   (``LAYERS``, a JSON list; "" when none);
2. the spec's ``[probe] layers`` (the default of every model without its own);
3. its last 2-d convolutions (``select_layers``): ``nn.Conv2d`` modules (nested ones
   too) and the convolutions of TorchScript and ``torch.export`` models
   (``zoo.convolutions.conv_layers``).
"""

from __future__ import annotations

import json
from typing import Sequence

from ml4ml import dims
from ml4ml.errors import InputError
# the spec-side checks of a spec's layers live with the spec (below the stages)
from ml4ml.spec.zoo import check_layer_counts, parse_layers  # noqa: F401 - re-exported

__all__ = ["select_layers", "DEFAULT_N_LAYERS", "LAYERS", "LAYERS_ATTRS", "parse_layers",
           "check_layer_counts", "layers_json", "table_layers", "chosen_layers",
           "recorded_layers", "check_model_layers", "sync_layers"]

# number of layers recorded when ``layers`` is not given: the last this many convolutions
DEFAULT_N_LAYERS = dims.DEFAULT_N_LAYERS
# the models table's column of each model's own layers
LAYERS = "layers"
LAYERS_ATTRS = ("recorded layers", "JSON list of the module names the probe records for this "
                "model; empty: the spec's [probe] layers, else its last convolutions")


def layers_json(layers) -> str:
    """The ``LAYERS`` column value of ``layers`` ("" for none)."""
    return json.dumps(list(layers)) if layers else ""


def table_layers(table) -> dict:
    """{mid: tuple of names} of the models table's rows that name their own layers."""
    if LAYERS not in table:
        return {}
    out = {}
    for mid, value in zip(table[dims.MID].values, table[LAYERS].values):
        if str(value or ""):
            out[str(mid)] = tuple(json.loads(str(value)))
    return out


def chosen_layers(mid: str, own: dict, default=()) -> list | None:
    """The layers model ``mid`` records: its own (``own``: the spec's and the table's,
    ``table_layers``), else ``default`` (the spec's ``[probe] layers``), else None (its
    last convolutions, ``select_layers``)."""
    layers = own.get(mid) or tuple(default)
    return list(layers) if layers else None


def select_layers(model, layers: Sequence[str] | None = None,
                  n_layers: int | None = None) -> list[str]:
    """Names of the modules to record: ``layers`` checked, or the model's last convolutions.

    The default is the last ``n_layers`` 2-d convolutions ``zoo.convolutions.conv_layers``
    finds: ``nn.Conv2d`` modules, nested ones included, and the convolutions of
    TorchScript and ``torch.export`` models. n_layers : the number of layers every model
    of the store records; a list of another length, or a model with fewer convolutions,
    is refused. None: any list, and by default the last ``DEFAULT_N_LAYERS`` convolutions
    (or fewer, if the model has fewer).
    """
    from ml4ml.zoo.convolutions import conv_layers

    convs = conv_layers(model)
    wanted = DEFAULT_N_LAYERS if n_layers is None else int(n_layers)
    if layers is None:
        if len(convs) < (1 if n_layers is None else wanted):
            found = (f"only {len(convs)} 2-d convolution(s) ({_some(convs)[1:-1]})" if convs
                     else "no 2-d convolution (nn.Conv2d, or one in a TorchScript or "
                          "torch.export graph)")
            if n_layers is None:
                raise InputError(f"the model has {found} to record by default",
                                 field="layers", hint=f"pass layers=[...] with names from "
                                 f"model.named_modules(): {_some(_recordable(model))}")
            raise InputError(
                f"the model has {found} to record by default; {wanted} layer(s) are "
                f"recorded per model", field="layers",
                hint=f"name {wanted} of its modules: layers = [...] for the model in the "
                     f"spec, or 'ml4ml add-models --layers NAME' (names from "
                     f"model.named_modules(): {_some(_recordable(model))})")
        return convs[-wanted:]
    if isinstance(layers, str):
        layers = [layers]
    names = list(layers)
    if not names:
        raise InputError("expected at least one layer name, found an empty list",
                         field="layers", hint="pass layers=None for the last two conv layers")
    modules = dict(model.named_modules())
    for name in names:
        if not isinstance(name, str) or name not in modules or name == "":
            raise InputError(
                f"unknown layer {name!r}; the model's convolutions are {_some(convs)}",
                field="layers", hint=f"any name from model.named_modules() may be used: "
                                     f"{_some(_recordable(model))}",
            )
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"each layer may be named once; found {duplicated} more than once",
                         field="layers")
    if n_layers is not None and len(names) != wanted:
        raise InputError(f"{len(names)} layer(s) named ({', '.join(names)}); every model of "
                         f"the store records {wanted}", field="layers",
                         hint=f"name {wanted} modules, the last {wanted} recorded layers "
                              f"being compared across models (docs/measures.md, 'Levels')")
    return names


def _recordable(model) -> list[str]:
    own = getattr(model, "callable_layers", None)
    return list(own()) if callable(own) else [n for n, _ in model.named_modules() if n]


def _some(names, most: int = 8) -> str:
    """``names`` listed, the last ``most`` of a long list (the ones nearest the output)."""
    names = list(names)
    if len(names) <= most:
        return "[" + ", ".join(map(repr, names)) + "]"
    return f"[... {len(names) - most} more, " + ", ".join(map(repr, names[-most:])) + "]"


def recorded_layers(path, pipeline=None) -> tuple[int, tuple]:
    """(layers every model of the store records, the default layers): the store's probe
    groups' ``layer`` size, else the spec's ``[probe] layers`` count, else
    ``DEFAULT_N_LAYERS``; the default is the spec's ``[probe] layers`` (() for none).

    pipeline : a ``Pipeline``, a spec file, or None for the spec the store records.
    """
    import os

    from ml4ml import store

    spec = pipeline
    if spec is None and store.store_exists(path):
        from ml4ml.store.groups import pipeline_file

        spec = pipeline_file(store.store_attrs(path), path)
        spec = spec if spec and os.path.isfile(spec) else None
    if spec is not None and not hasattr(spec, "probe"):
        from ml4ml.config import load_pipeline

        spec = load_pipeline(spec)
    default = tuple(spec.probe.layers) if spec is not None else ()
    n_layers = len(default) or DEFAULT_N_LAYERS
    if store.store_exists(path):
        from ml4ml.store.layout import committed_nodes

        sizes = [node["shape"][0] for name, node in (committed_nodes(path) or {}).items()
                 if name.startswith("probes/") and name.count("/") == 3
                 and name.endswith(f"/{dims.LAYER}") and node.get("node_type") == "array"]
        n_layers = max(sizes) if sizes else n_layers
    return n_layers, default


def check_model_layers(model, mid: str, own, recorded: tuple, file="") -> list:
    """The layers model ``mid`` records (``chosen_layers``, ``select_layers``), or
    InputError naming the model: a name it lacks, another count than ``recorded[0]``, or
    no convolutions to find by default."""
    n_layers, default = recorded
    try:
        return select_layers(model, chosen_layers(mid, {mid: tuple(own or ())}, default),
                             n_layers)
    except InputError as exc:
        raise InputError(f"model {mid!r}: {exc.message}", file=file or None,
                         field=LAYERS, hint=exc.hint) from None


def sync_layers(path, table, wanted: dict) -> list[str]:
    """Record ``wanted`` ({mid: layers}, () for none) in the models table's ``LAYERS``
    column where it differs from ``table``'s; return those ids. The caller holds the lock."""
    import numpy as np
    import xarray as xr

    from ml4ml import store

    have = table_layers(table)
    changed = [m for m, layers in wanted.items() if tuple(have.get(m, ())) != tuple(layers)]
    if changed:
        rows = xr.Dataset({LAYERS: ((dims.MID,), np.array([layers_json(wanted[m])
                                                           for m in changed], dtype=object),
                                    {"long_name": LAYERS_ATTRS[0],
                                     "description": LAYERS_ATTRS[1]})},
                          coords={dims.MID: np.array(changed, dtype=object)})
        store.update_models(path, rows)
    return changed
