"""Checkpoint formats of models trained elsewhere: detect, load safely, save from memory.

=================  ===========================================  ==========================
format             written by                                   needs
=================  ===========================================  ==========================
``state_dict``     ``torch.save(model.state_dict(), f)``        an ``arch`` (``cnn5``,
                   (or ml4ml's own checkpoints)                 ``vgg13bn``, ``resnet``,
                                                                ``torchvision:<name>``,
                                                                ``module:<pkg.mod>:<Cls>``)
``export``         ``torch.export.save(program, "m.pt2")``      nothing: any architecture
``torchscript``    ``torch.jit.save(script, f)``                ``trusted``: it is a program
=================  ===========================================  ==========================

Model files are data unless the user says they are code:

- A state dict is read with ``torch.load(weights_only=True)``: only tensors and plain
  containers can be built. A whole pickled ``nn.Module`` (``torch.save(model, f)``) is
  refused: loading it runs arbitrary code.
- A ``.pt2`` is read by ``export_files.read_program``, never by ``torch.export.load``: no
  member is unpickled except with ``weights_only=True``, nothing from the file is
  evaluated, and its graph may call only the operators of ``export_files.ALLOWED_ATEN``
  unless the file is trusted. ``export_files.check_archive`` checks the whole archive
  first (``detect_format``).
- TorchScript is a program: its ``__setstate__`` and ``forward`` may call any TorchScript
  operator, file-writing ones (``torch.from_file(path, shared=True).fill_(...)``)
  included, and nothing can tell what it does without running it. It is loaded only when
  ``trusted``; otherwise refused before ``torch.jit.load`` with how to convert it.
- ``module:`` architectures are code too: they are imported from the folder of the spec
  or command line that names them (``import_path``), never because a store says so.

A file cut short or damaged says ``truncated or corrupt: ...``, naming it.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
import zipfile

import torch
from torch import nn

from ml4ml.errors import InputError
from ml4ml.spec.registry import import_path  # noqa: F401 - re-exported (module: archs)
from ml4ml.zoo.convolutions import CONV_KINDS, conv_layers  # noqa: F401 (re-exported)

FORMATS = ("state_dict", "export", "torchscript")
CONVERT = ("save its weights instead: torch.save(model.state_dict(), 'm.pt') with --arch, "
           "or torch.export.save(torch.export.export(model, (x,)), 'm.pt2')")
UNTRUSTED_SCRIPT = (
    "a TorchScript file is a program (its __setstate__ and forward can call any TorchScript "
    "operator, file-writing ones such as torch.from_file included), so it is refused unless "
    "you trust it")
TRUST_HINT = ("add it with --trust (trust = true in a spec) if you trust the file, or convert "
              "it once: m = torch.jit.load('m.ts'); torch.save(m.state_dict(), 'm.pt'), then "
              "add m.pt with --arch; or save a .pt2 from the original module: "
              "torch.export.save(torch.export.export(model, (x,)), 'm.pt2')")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")

__all__ = ["FORMATS", "read_bytes", "detect_format", "load_model", "save_module",
           "conv_layers", "import_path", "module_file"]


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


def _corrupt(what: str, path) -> InputError:
    return InputError(f"truncated or corrupt: {what}", file=path, field="checkpoint",
                      hint="copy or save the file again")


def _zip_names(data: bytes, path) -> list[str]:
    """The members of a zip archive (every member's checksum verified); [] if not a zip.
    A zip cut short or damaged is ``truncated or corrupt``."""
    if not data.startswith(_ZIP_MAGIC):
        return []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        raise _corrupt(f"a zip archive (as torch.save, torch.export.save and torch.jit.save "
                       f"write) that cannot be read to its end ({len(data)} bytes: {exc})",
                       path) from None
    if bad is not None:
        raise _corrupt(f"member {bad} of the zip archive fails its checksum", path)
    return names


def detect_format(data: bytes, path="") -> str:
    """``state_dict``, ``export`` or ``torchscript`` from the file's content (not its name).

    InputError for an empty, truncated or corrupt file (``truncated or corrupt: ...``), a
    whole pickled module (with how to convert it), a ``.pt2`` the pre-check refuses
    (``export_files.check_archive``) or anything else.
    """
    if not data:
        raise _corrupt("the file is empty (0 bytes)", path)
    names = _zip_names(data, path)
    inner = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if "archive_format" in inner or any(n.startswith("models/") and n.endswith(".json")
                                         for n in inner):
        from ml4ml.zoo.export_files import check_archive

        check_archive(data, path)
        return "export"
    if any(n.startswith("code/") for n in inner) and "data.pkl" in inner:
        return "torchscript"
    if names and "data.pkl" not in inner:
        raise InputError("unknown checkpoint format: a zip archive that is none of a state "
                         "dict (torch.save), a torch.export program (.pt2) or TorchScript",
                         file=path, field="checkpoint")
    if not names and data[:1] != b"\x80":  # neither zip nor pickle (torch.save's legacy)
        raise InputError("unknown checkpoint format: expected a state dict (torch.save), a "
                         "torch.export program (.pt2) or TorchScript (torch.jit.save)",
                         file=path, field="checkpoint")
    _load_weights(data, path)  # a pickled object is refused here, with its class
    return "state_dict"


def _load_weights(data: bytes, path):
    from ml4ml.zoo.export_files import NotWeights, load_weights_only

    try:
        return load_weights_only(data)
    except NotWeights as exc:
        if exc.global_name:
            raise InputError(f"a whole pickled object (class {exc.global_name}), not "
                             f"weights: loading it would run arbitrary code, so it is "
                             f"refused; {CONVERT}", file=path, field="checkpoint") from None
        if data.startswith(_ZIP_MAGIC):  # a torch.save archive whose pickle is damaged
            raise _corrupt(f"the archive's pickle cannot be read ({exc.reason})",
                           path) from None
        if exc.truncated:
            raise _corrupt(f"the pickle ends early ({exc.reason})", path) from None
        raise InputError(f"unknown checkpoint format ({exc.reason}): expected a state dict, "
                         "a torch.export program (.pt2) or TorchScript", file=path,
                         field="checkpoint") from None


def module_file(arch: str, base=None) -> str:
    """The source file a ``module:<package.module>:<Class>`` arch imports (from ``base``)."""
    import importlib.util

    name = arch.split(":")[1]
    with import_path(base):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        raise InputError(f"cannot find the module {name!r} of arch {arch!r} "
                         f"(relative to {base or os.getcwd()})", field="arch")
    return spec.origin


def load_model(data: bytes, fmt: str, *, path="", arch: str = "", base=None,
               trusted: bool = False):
    """The model in ``data`` (eval mode, CPU) and its default layers (None: the probe's).

    fmt : one of ``FORMATS``; arch : the architecture of a state dict; base : the folder
    ``module:`` architectures are imported relative to (the spec's or the command's, never
    one a store names); trusted : the user vouches for the file (TorchScript, or a
    ``.pt2`` calling operators outside the allow-list).
    Returns ``(model, layers)``: ``layers`` is a list of module names to record when the
    probe's default (the last two ``nn.Conv2d``) cannot see them (export, TorchScript).
    """
    if fmt == "state_dict":
        return load_state_dict(data, arch, path=path, base=base), None
    if fmt == "export":
        return load_export(data, path, trusted=trusted)
    if fmt == "torchscript":
        return load_torchscript(data, path, trusted=trusted)
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


def load_export(data: bytes, path="", *, trusted: bool = False):
    """A ``torch.export`` program as an unflattened module (hooks see its submodules).

    Read by ``export_files.read_program`` (no pickle, no ``eval``; operators on the
    allow-list unless ``trusted``). A program exported for a fixed batch size runs as a
    ``FixedBatchModel`` that takes any number of inputs.
    """
    from ml4ml.zoo.export_files import FixedBatchModel, fixed_batch, read_program

    program = read_program(data, path, trusted=trusted)
    try:
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
    batch = fixed_batch(program)
    if batch is not None:
        module = FixedBatchModel(module, batch)
    return module.eval(), layers[-2:] or None


class _Tap(nn.Identity):
    """Stands for one TorchScript submodule: called with its output, so hooks see it."""




def _module_path(hierarchy: str) -> tuple:
    """``("body", "0")`` from a TorchScript node's module hierarchy
    ``"body(Sequential).0(Conv2d).SELF(Conv2d)"`` (method calls and functions left out)."""
    import re

    names = re.findall(r"([^.()]+)\(([^()]*)\)", hierarchy or "")
    return tuple(name for name, _ in names if name not in ("SELF", "UNKNOWN_INSTANCE"))


def _module_outputs(graph) -> dict:
    """{dotted module name: (output value, producing node kind)} of the submodules of an
    inlined TorchScript forward graph that return one tensor, called once, in call order.

    A module's output is the tensor computed inside it (the nodes its module hierarchy
    names) that a node outside it (or the graph's return) uses. Submodules called inside
    a loop or branch, called twice, or returning several values are left out.
    """
    found, refused = {}, set()
    for node in graph.nodes():
        path = _module_path(node.getModuleHierarchy())
        for value in node.outputs():
            if not isinstance(value.type(), torch._C.TensorType):
                continue
            users = [_module_path(use.user.getModuleHierarchy())
                     if use.user.kind() != "prim::Return" else () for use in value.uses()]
            for depth in range(len(path), 0, -1):  # innermost first
                module = path[:depth]
                if any(user[:depth] != module for user in users):
                    name = ".".join(module)
                    if name in found and found[name][0].unique() != value.unique():
                        refused.add(name)
                    found[name] = (value, node.kind())
    return {name: out for name, out in found.items() if name not in refused}


class TorchScriptModel(nn.Module):
    """A loaded TorchScript module whose submodules' outputs forward hooks can see.

    TorchScript modules take no hooks; this wrapper registers a ``_Tap`` under the dotted
    name of every submodule whose output its inlined forward graph exposes (nested ones
    too: ``body.0`` inside an ``nn.Sequential``), and, while some taps have hooks, runs a
    copy of the forward graph that also returns those submodules' outputs and passes each
    through its tap. Without hooks it runs the script itself.
    """

    def __init__(self, script):
        super().__init__()
        self.script = script
        self._taps = []
        self._kinds = {}
        self._functions = {}
        outputs = _module_outputs(self._inlined())
        for name in sorted(outputs, key=lambda n: n.count(".")):  # parents first
            if name.split(".")[0] != "script" and self._add_tap(name):
                self._kinds[name] = outputs[name][1]
        order = list(outputs)
        self._taps.sort(key=order.index)  # call order

    def _inlined(self):
        graph = self.script.forward.graph.copy()
        torch._C._jit_pass_inline(graph)
        return graph

    def callable_layers(self) -> list[str]:
        """Submodules whose outputs the probe can record (dotted names), in call order."""
        return list(self._taps)

    def conv_layers(self) -> list[str]:
        """The recordable submodules whose output is a 2-d convolution's, in call order."""
        return [name for name in self._taps if self._kinds[name] in CONV_KINDS]

    def _add_tap(self, name: str) -> bool:
        parent = self
        parts = name.split(".")
        try:
            for part in parts[:-1]:
                if part not in parent._modules:
                    parent.add_module(part, nn.Module())
                parent = parent._modules[part]
            parent.add_module(parts[-1], _Tap())
        except (KeyError, TypeError):  # a name nn.Module reserves: not recordable
            return False
        self._taps.append(name)
        return True

    def default_layers(self) -> list[str] | None:
        return self.conv_layers()[-2:] or None

    def _hooked(self) -> tuple:
        return tuple(name for name in self._taps
                     if self.get_submodule(name)._forward_hooks)

    def _tapped(self, names: tuple):
        """The forward graph returning (output, *outputs of ``names``), compiled once."""
        if names not in self._functions:
            graph = self._inlined()
            outputs = _module_outputs(graph)
            values = [graph.return_node().inputsAt(0)] + [outputs[n][0] for n in names]
            ret = graph.return_node()
            tup = graph.create("prim::TupleConstruct", values)
            graph.insertNode(tup)
            tup.moveBefore(ret)
            tup.output().setType(torch._C.TupleType([v.type() for v in values]))
            ret.replaceInput(0, tup.output())
            self._functions[names] = torch._C._create_function_from_graph("ml4ml_taps",
                                                                          graph)
        return self._functions[names]

    def forward(self, x):
        names = self._hooked()
        if not names:
            return self.script(x)
        outputs = self._tapped(names)(self.script._c, x)
        for name, value in zip(names, outputs[1:]):
            self.get_submodule(name)(value)
        return outputs[0]


def load_torchscript(data: bytes, path="", *, trusted: bool = False):
    """A TorchScript file as a ``TorchScriptModel`` (eval mode, CPU) and its conv layers.

    Only when ``trusted``: loading it runs its ``__setstate__``, probing its ``forward``,
    and either may write files. Otherwise InputError before anything of it runs.
    """
    if not trusted:
        raise InputError(UNTRUSTED_SCRIPT, file=path, field="checkpoint", hint=TRUST_HINT)
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

