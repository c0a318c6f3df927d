"""Checkpoint formats of models trained elsewhere: detect, load safely, save from memory.

=================  ===========================================  ==========================
format             written by                                   needs
=================  ===========================================  ==========================
``state_dict``     ``torch.save(model.state_dict(), f)``        an ``arch`` (``cnn5``,
                   (or ml4ml's own checkpoints)                 ``vgg13bn``, ``resnet``,
                                                                ``torchvision:<name>``,
                                                                ``module:<pkg.mod>:<Cls>``)
``export``         ``torch.export.save(program, "m.pt2")``      nothing: any architecture
``torchscript``    ``torch.jit.save(script, f)``                nothing: any architecture
=================  ===========================================  ==========================

A whole pickled ``nn.Module`` (``torch.save(model, f)``) is refused: loading it runs
arbitrary code.

Safety: nothing here unpickles code.

- A state dict is read with ``torch.load(weights_only=True)``: only tensors and plain
  containers can be built.
- ``torch.export.load`` (torch 2.14, ``torch/export/pt2_archive/_package.py``) does call
  ``torch.load(weights_only=False)`` for weights and constants marked ``use_pickle``,
  ``pickle.loads`` for "opaque" constants, ``_pickle_load_obj`` for custom objects, and
  ``torch/_export/serde/serialize.py: deserialize_torch_artifact`` (sample inputs, legacy
  archives) falls back to ``weights_only=False`` when ``weights_only=True`` fails. So before
  calling it, ``load_export`` loads every pickled member of the archive itself with
  ``weights_only=True`` and refuses the file if one fails (the fallback is never reached,
  and a member that passes holds only tensors and plain data whichever way it is read), and
  refuses custom and opaque objects outright.
- ``torch.jit.load`` reads a TorchScript archive with TorchScript's own unpickler: it only
  builds the TorchScript classes compiled from the archive's ``code/`` and never imports or
  calls Python; the program runs TorchScript operators only (as any model's forward does).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import warnings
import zipfile
from contextlib import contextmanager

import torch
from torch import nn

from ml4ml.errors import InputError

FORMATS = ("state_dict", "export", "torchscript")
CONVERT = ("save its weights instead: torch.save(model.state_dict(), 'm.pt') with --arch, "
           "or torch.export.save(torch.export.export(model, (x,)), 'm.pt2'), or "
           "torch.jit.save(torch.jit.trace(model, x), 'm.ts')")

__all__ = ["FORMATS", "read_bytes", "detect_format", "load_model", "save_module",
           "conv_layers", "import_path"]


def read_bytes(path) -> tuple[bytes, str]:
    """The bytes of a checkpoint (local path or fsspec URL) and their sha256."""
    path = os.fspath(path)
    try:
        if "://" in path:
            import fsspec

            from ml4ml.store.backend import storage_options

            with fsspec.open(path, "rb", **storage_options(path)) as file:
                data = file.read()
        else:
            with open(path, "rb") as file:
                data = file.read()
    except FileNotFoundError:
        raise InputError("checkpoint file not found", file=path, field="checkpoint") from None
    except IsADirectoryError:
        raise InputError("is a folder, not a checkpoint file", file=path,
                         field="checkpoint") from None
    except OSError as exc:
        raise InputError(f"cannot read checkpoint: {exc.strerror or exc}", file=path,
                         field="checkpoint") from None
    return data, hashlib.sha256(data).hexdigest()


def detect_format(data: bytes, path="") -> str:
    """``state_dict``, ``export`` or ``torchscript`` from the file's content (not its name).

    InputError for a whole pickled module (with how to convert it) or anything else.
    """
    names = []
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    inner = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if "archive_format" in inner or any(n.startswith("models/") and n.endswith(".json")
                                         for n in inner):
        return "export"
    if any(n.startswith("code/") for n in inner) and "data.pkl" in inner:
        return "torchscript"
    if not names and not data[:2] == b"\x80\x02":  # neither zip nor legacy torch.save
        raise InputError("unknown checkpoint format: expected a state dict (torch.save), a "
                         "torch.export program (.pt2) or TorchScript (torch.jit.save)",
                         file=path, field="checkpoint")
    _load_weights(data, path)  # a pickled object is refused here, with its class
    return "state_dict"


def _load_weights(data: bytes, path):
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a refused file
        text = str(exc)
        if "GLOBAL" in text or "global" in text:
            import re

            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" (class {found.group(1)})" if found else ""
            raise InputError(f"a whole pickled object{what}, not weights: loading it would run "
                             f"arbitrary code, so it is refused; {CONVERT}", file=path,
                             field="checkpoint") from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise InputError(f"unknown checkpoint format ({first}): expected a state dict, a "
                         "torch.export program (.pt2) or TorchScript", file=path,
                         field="checkpoint") from None


@contextmanager
def import_path(folder):
    """``folder`` first on ``sys.path`` for the block (a spec's folder for ``module:``)."""
    if not folder:
        yield
        return
    folder = os.fspath(folder)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass


def load_model(data: bytes, fmt: str, *, path="", arch: str = "", base=None):
    """The model in ``data`` (eval mode, CPU) and its default layers (None: the probe's).

    fmt : one of ``FORMATS``; arch : the architecture of a state dict; base : the folder
    ``module:`` architectures are imported relative to.
    Returns ``(model, layers)``: ``layers`` is a list of module names to record when the
    probe's default (the last two ``nn.Conv2d``) cannot see them (export, TorchScript).
    """
    if fmt == "state_dict":
        return load_state_dict(data, arch, path=path, base=base), None
    if fmt == "export":
        return load_export(data, path)
    if fmt == "torchscript":
        return load_torchscript(data, path)
    raise InputError(f"unknown checkpoint format {fmt!r}; expected one of {', '.join(FORMATS)}",
                     file=path, field="format")


def load_state_dict(data: bytes, arch: str, *, path="", base=None) -> nn.Module:
    """A state dict (or an ml4ml checkpoint) loaded into ``build_model(arch, ...)``."""
    from ml4ml.zoo.architectures import build_model

    state = _load_weights(data, path)
    if isinstance(state, dict) and state.get("format") == "ml4ml-checkpoint":
        arch = arch or state.get("arch", "")
        state = state.get("state_dict")
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"expected a state dict (names -> tensors), found "
                         f"{type(state).__name__}", file=path, field="checkpoint",
                         hint=CONVERT)
    if not arch:
        raise InputError("a state dict needs its architecture", file=path, field="arch",
                         hint="give --arch (cnn5, vgg13bn, resnet, torchvision:<name> or "
                              "module:<package.module>:<Class>), or save it with torch.export")
    weights = [v for v in state.values() if v.is_floating_point()]
    convs = [v for v in weights if v.dim() == 4]
    linears = [v for v in weights if v.dim() == 2]
    in_channels = int(convs[0].shape[1]) if convs else 3
    num_classes = int(linears[-1].shape[0]) if linears else 10
    image_size = 224 if arch == "resnet" and convs and convs[0].shape[-1] == 7 else None
    with import_path(base):
        model = build_model(arch, num_classes=num_classes, in_channels=in_channels,
                            image_size=image_size)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError):
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        extra = [k for k in state if k not in own]
        if missing or extra:
            why = (f"{len(missing)} tensor(s) missing (first {missing[0]!r})" if missing
                   else "") + (", " if missing and extra else "") + (
                f"{len(extra)} unexpected (first {extra[0]!r})" if extra else "")
        else:
            bad = next(k for k in own if own[k].shape != state[k].shape)
            why = (f"tensor {bad!r} has shape {tuple(state[bad].shape)}, expected "
                   f"{tuple(own[bad].shape)}")
        raise InputError(f"the state dict does not fit arch {arch!r}: {why}", file=path,
                         field="arch", hint="give the architecture it was trained as") from None
    return model.eval()


def load_export(data: bytes, path=""):
    """A ``torch.export`` program as an unflattened module (hooks see its submodules)."""
    _check_export_archive(data, path)
    try:
        program = torch.export.load(io.BytesIO(data))
        module = torch.export.unflatten(program)
    except Exception as exc:  # noqa: BLE001 - any failure means a bad program
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load the torch.export program: {first}", file=path,
                         field="checkpoint") from None
    layers = []
    for node in program.graph.nodes:
        for fqn, kind in (node.meta.get("nn_module_stack") or {}).values():
            name = getattr(kind, "__name__", str(kind))
            if name.endswith("Conv2d") and fqn and fqn not in layers:
                layers.append(fqn)
    return module.eval(), layers[-2:] or None


def _check_export_archive(data: bytes, path) -> None:
    """Load every pickled member with ``weights_only=True``; refuse custom objects."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InputError("not a torch.export archive (.pt2)", file=path,
                         field="checkpoint") from None
    with archive:
        raw = _raw_members(archive)
        for name in archive.namelist():
            inner = name.split("/", 1)[-1]
            if inner.startswith("data/constants/") and ("custom_obj" in inner
                                                         or "opaque" in inner):
                raise InputError(f"the torch.export program holds a custom object ({inner}): "
                                 "loading it would run arbitrary code, so it is refused",
                                 file=path, field="checkpoint", hint=CONVERT)
            pickled = inner.endswith(".pt") or (inner.startswith(("data/weights/",
                                                                  "data/constants/"))
                                                and not inner.endswith(".json"))
            if not pickled:
                continue
            if name in raw:
                continue  # raw tensor bytes (the archive's config says: not pickled)
            member = archive.read(name)
            if inner.startswith(("data/weights/", "data/constants/")) and not _is_pickle(member):
                continue  # raw tensor bytes
            try:
                torch.load(io.BytesIO(member), map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001
                raise InputError(f"the torch.export program's member {inner} is not plain "
                                 "weights: loading it would run arbitrary code, so it is "
                                 "refused", file=path, field="checkpoint",
                                 hint=CONVERT) from None


def _raw_members(archive) -> set:
    """Members the archive's weights and constants configs mark ``use_pickle: false``: raw
    tensor bytes (whose first byte may be anything, 0x80 included)."""
    raw = set()
    for name in archive.namelist():
        folder, _, base = name.rpartition("/")
        if not (base.endswith("_config.json")
                and folder.endswith(("data/weights", "data/constants"))):
            continue
        try:
            config = json.loads(archive.read(name)).get("config", {})
        except (ValueError, AttributeError):
            continue
        for entry in config.values() if isinstance(config, dict) else ():
            if isinstance(entry, dict) and entry.get("use_pickle") is False \
                    and entry.get("path_name"):
                raw.add(f"{folder}/{entry['path_name']}")
    return raw


def _is_pickle(member: bytes) -> bool:
    return member[:1] == b"\x80" or zipfile.is_zipfile(io.BytesIO(member))


class _Tap(nn.Identity):
    """Stands for one TorchScript submodule: called with its output, so hooks see it."""


class TorchScriptModel(nn.Module):
    """A loaded TorchScript module whose chosen submodules' outputs forward hooks can see.

    TorchScript modules take no hooks; this wrapper runs a copy of the forward graph that
    also returns the outputs of the submodules called from the top-level forward, and
    passes each through a ``_Tap`` registered under the submodule's name.
    """

    def __init__(self, script):
        super().__init__()
        self.script = script
        self._taps = []
        self._function = None
        for name in self.callable_layers():
            if name.split(".")[0] != "script":
                self._add_tap(name)

    def callable_layers(self) -> list[str]:
        """Submodules called from the top-level forward (dotted names), in call order."""
        return [name for name, _ in self._calls()]

    def _calls(self):
        graph = self.script.forward.graph
        attr = {}
        for node in graph.nodes():
            if node.kind() == "prim::GetAttr":
                owner = attr.get(node.input().debugName())
                attr[node.output().debugName()] = (f"{owner}." if owner else "") + node.s("name")
        out = []
        for node in graph.nodes():
            if node.kind() == "prim::CallMethod" and node.s("name") == "forward":
                name = attr.get(next(node.inputs()).debugName())
                if name and name not in [n for n, _ in out]:
                    out.append((name, node))
        return out

    def _add_tap(self, name: str) -> None:
        parent = self
        parts = name.split(".")
        for part in parts[:-1]:
            if part not in parent._modules:
                parent.add_module(part, nn.Module())
            parent = parent._modules[part]
        parent.add_module(parts[-1], _Tap())
        self._taps.append(name)

    def default_layers(self) -> list[str] | None:
        def original(name):
            module = self.script
            for part in name.split("."):
                module = getattr(module, part)
            return getattr(module, "original_name", "")

        names = [n for n in self._taps if original(n) == "Conv2d"]
        return names[-2:] or None

    def _tapped(self):
        if self._function is None:
            graph = self.script.forward.graph.copy()
            calls = dict(self._calls_in(graph))
            outputs = [calls[name].output() for name in self._taps]
            ret = graph.return_node()
            values = [ret.inputsAt(0)] + outputs
            tup = graph.create("prim::TupleConstruct", values)
            graph.insertNode(tup)
            tup.moveBefore(ret)
            tup.output().setType(torch._C.TupleType([v.type() for v in values]))
            ret.replaceInput(0, tup.output())
            self._function = torch._C._create_function_from_graph("ml4ml_taps", graph)
        return self._function

    def _calls_in(self, graph):
        attr = {}
        for node in graph.nodes():
            if node.kind() == "prim::GetAttr":
                owner = attr.get(node.input().debugName())
                attr[node.output().debugName()] = (f"{owner}." if owner else "") + node.s("name")
        for node in graph.nodes():
            if node.kind() == "prim::CallMethod" and node.s("name") == "forward":
                name = attr.get(next(node.inputs()).debugName())
                if name:
                    yield name, node

    def forward(self, x):
        outputs = self._tapped()(self.script._c, x)
        for name, value in zip(self._taps, outputs[1:]):
            self.get_submodule(name)(value)
        return outputs[0]


def load_torchscript(data: bytes, path=""):
    """A TorchScript file as a ``TorchScriptModel`` (eval mode, CPU) and its conv layers."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            script = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load the TorchScript file: {first}", file=path,
                         field="checkpoint") from None
    model = TorchScriptModel(script).eval()
    return model, model.default_layers()


def conv_layers(model) -> list[str]:
    """Names of the model's ``nn.Conv2d`` modules (probe layers), in module order."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def save_module(module: nn.Module, path, *, arch: str = "", example=None) -> str:
    """Save an in-memory model beside a store; return the format written.

    With ``arch``: its state dict (``torch.save``). Else a ``torch.export`` program traced
    on ``example`` (a (1, channel, height, width) tensor), with a dynamic batch size.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if arch:
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, path)
        return "state_dict"
    batch = torch.export.Dim("batch")
    example = torch.cat([example[:1], example[:1]])
    was_training = module.training
    module.eval()
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot torch.export the model: {first}", field="models",
                         hint="pass arch=... to save its state dict instead") from None
    finally:
        module.train(was_training)
    torch.export.save(program, path)
    return "export"

