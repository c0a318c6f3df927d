"""``torch.export`` programs (``.pt2``) read as data: no pickle runs, no code is evaluated.

``torch.export.load`` (torch 2.14, ``torch/export/pt2_archive/_package.py``) reads weights
and constants marked ``use_pickle`` with ``torch.load(weights_only=False)``, "opaque"
constants with ``pickle.loads`` and custom objects with ``torch._C._pickle_load_obj``;
``torch/_export/serde/serialize.py`` falls back to ``weights_only=False`` for sample inputs
and legacy archives, parses symbolic shapes with ``sympy.sympify`` (an ``eval``), and
``ExportedProgram.module()`` ``exec``\\ s the archive's ``guards_code``. ml4ml never calls
it. ``read_program`` opens the zip itself and:

- reads raw weights and constants from their bytes (``tensor_meta``: dtype, sizes,
  strides, offset) and every ``use_pickle`` member with ``torch.load(weights_only=True)``
  only, which builds tensors and plain containers and nothing else; custom and opaque
  objects, sample inputs, legacy weight files and compiled (AOTInductor) code are never
  read;
- checks the program's JSON before torch's deserializer sees it: every operator on the
  allow-list (``ALLOWED_ATEN``, ``ALLOWED_PYTHON``) unless the file is trusted, every
  symbolic expression plain arithmetic over shape symbols, every module path a dotted
  name, no control character in any string; node metadata other than
  ``nn_module_stack`` and the ``guards_code`` are dropped;
- checks the deserialized graph again (every called function on the allow-list).

``check_archive`` is the pre-check ``add-models`` runs first on the whole archive: each
member read as a pickle (whatever its first byte or what a config says) must load with
``weights_only=True``, no member may be read both raw and pickled, and custom objects
and compiled code are refused, each with a line naming the member. The loader does not
rely on it: it reads nothing unsafely even when called alone.

A program exported with a fixed batch size (``torch.export.export(model, (x,))`` without
``dynamic_shapes``, as PyTorch's tutorial does) runs as ``FixedBatchModel``: batches of
that size, the last padded with copies of its last image and trimmed.
"""

from __future__ import annotations

import io
import json
import operator
import re
import sys
import zipfile

import torch
from torch import nn

from ml4ml.errors import InputError

# aten operators that compute on tensors (any overload): convolution and linear algebra,
# activations, pooling, normalisation, elementwise arithmetic, reductions, shape and
# indexing. Nothing that reads or writes files or raw storage (from_file, set_, resize_,
# as_strided, copy_), allocates without initialising (empty*), draws random numbers,
# or calls other graphs (higher-order operators) is on it.
ALLOWED_ATEN = frozenset("""
conv1d conv2d conv3d convolution _convolution conv_transpose1d conv_transpose2d
conv_transpose3d linear matmul mm bmm addmm addmv addbmm baddbmm mv t einsum
relu relu_ relu6 hardtanh hardtanh_ leaky_relu leaky_relu_ gelu silu silu_ sigmoid sigmoid_
tanh tanh_ hardswish hardswish_ hardsigmoid hardsigmoid_ elu elu_ selu selu_ celu celu_ mish
softplus softmax _softmax log_softmax _log_softmax prelu _prelu_kernel threshold threshold_
glu log_sigmoid
max_pool1d max_pool2d max_pool3d max_pool2d_with_indices max_pool3d_with_indices
avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d
_adaptive_avg_pool2d _adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d
batch_norm _native_batch_norm_legit_no_training native_batch_norm layer_norm
native_layer_norm group_norm native_group_norm instance_norm
dropout dropout_ feature_dropout feature_dropout_ alpha_dropout native_dropout
add add_ sub sub_ rsub mul mul_ div div_ neg abs pow sqrt rsqrt exp log log1p log2 expm1
reciprocal clamp clamp_ clamp_min clamp_max clip maximum minimum floor ceil round trunc
sign remainder fmod floor_divide square erf sin cos atan2 lerp addcmul addcdiv
sum mean amax amin max min prod var std var_mean std_mean argmax argmin logsumexp norm
linalg_vector_norm cumsum all any
view _unsafe_view reshape flatten unflatten permute transpose squeeze unsqueeze expand
expand_as contiguous clone cat concat stack split split_with_sizes chunk unbind slice select
narrow index_select gather index repeat tile roll flip movedim alias detach lift_fresh_copy
pad constant_pad_nd reflection_pad1d reflection_pad2d replication_pad1d replication_pad2d
upsample_nearest1d upsample_nearest2d upsample_bilinear2d upsample_bicubic2d pixel_shuffle
pixel_unshuffle _to_copy to type_as masked_fill where eq ne lt le gt ge logical_not
logical_and logical_or zeros_like ones_like full_like zeros ones full arange scalar_tensor
new_zeros new_ones new_full embedding scaled_dot_product_attention
sym_size sym_numel sym_stride sym_storage_offset _assert_scalar _assert_tensor_metadata
sym_constrain_range_for_size
""".split())
# Python functions a graph may call (on tensors' sizes and tuple outputs)
ALLOWED_PYTHON = {
    "_operator.getitem": operator.getitem, "_operator.add": operator.add,
    "_operator.sub": operator.sub, "_operator.mul": operator.mul,
    "_operator.floordiv": operator.floordiv, "_operator.truediv": operator.truediv,
    "_operator.mod": operator.mod, "_operator.neg": operator.neg,
    "_operator.eq": operator.eq, "_operator.ne": operator.ne, "_operator.lt": operator.lt,
    "_operator.le": operator.le, "_operator.gt": operator.gt, "_operator.ge": operator.ge,
    "torch.sym_max": torch.sym_max, "torch.sym_min": torch.sym_min,
    "torch.sym_float": torch.sym_float, "torch.sym_int": torch.sym_int,
    "torch.sym_not": torch.sym_not,
}
_ATEN = re.compile(r"torch\.ops\.aten\.([a-z0-9_]+)\.([A-Za-z][A-Za-z0-9_]*)\Z")
_PATH = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*\Z")
_NAME = re.compile(r"[A-Za-z0-9_.]*\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_EXPR_CHARS = re.compile(r"[A-Za-z0-9_ +\-*/%()<>=!,.&|~]*\Z")
_SYMBOL = re.compile(r"[A-Za-z]{1,4}\d+\Z")
_EXPR_FUNCTIONS = frozenset("""
FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv LShift
RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator
TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat Identity Max Min Eq Ne Lt Le Gt Ge
And Or Not True False None oo Abs floor ceiling Piecewise Symbol Integer Rational Float
Mul Add Pow positive negative nonnegative nonpositive integer real finite infinite zero
nonzero even odd rational commutative
""".split())
# keys whose string values name modules, parameters or buffers (set as attributes)
_PATH_KEYS = {"parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name",
              "fqn", "target"}
_TRUST = ("if you trust the file, add it with --trust (trust = true in a spec); or save "
          "the model as a state dict: torch.save(model.state_dict(), 'm.pt') with --arch")

__all__ = ["ALLOWED_ATEN", "ALLOWED_PYTHON", "read_program", "check_archive",
           "fixed_batch", "FixedBatchModel", "load_weights_only", "NotWeights"]


class _Archive:
    """The members of a ``.pt2`` zip, by their name inside its root folder."""

    def __init__(self, data: bytes, path):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
            names = self.zip.namelist()
        except (zipfile.BadZipFile, ValueError, EOFError) as exc:
            raise InputError(f"truncated or corrupt: not a readable zip archive ({exc})",
                             file=path, field="checkpoint") from None
        roots = {n.split("/", 1)[0] for n in names if "/" in n}
        self.root = roots.pop() + "/" if len(roots) == 1 else ""
        self.names = {n[len(self.root):]: n for n in names if n.startswith(self.root)}

    def has(self, inner: str) -> bool:
        return inner in self.names

    def read(self, inner: str) -> bytes:
        try:
            return self.zip.read(self.names[inner])
        except KeyError:
            raise InputError(f"truncated or corrupt: the torch.export archive lacks {inner}",
                             file=self.path, field="checkpoint") from None
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
            raise InputError(f"truncated or corrupt: member {inner} cannot be read ({exc})",
                             file=self.path, field="checkpoint") from None

    def json(self, inner: str):
        try:
            return json.loads(self.read(inner).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"truncated or corrupt: {inner} is not valid JSON ({exc})",
                             file=self.path, field="checkpoint") from None

    def refuse(self, what: str, hint: str | None = None):
        raise InputError(f"the torch.export program {what}", file=self.path,
                         field="checkpoint", hint=hint)


def _payload_configs(archive: _Archive) -> dict:
    """{'weights' | 'constants': {fqn: entry}} of the program ``model``."""
    out = {}
    for kind in ("weights", "constants"):
        inner = f"data/{kind}/model_{kind}_config.json"
        if not archive.has(inner):
            if archive.has(f"data/{kind}/model.pt"):
                archive.refuse(f"is in torch.export's legacy format (data/{kind}/model.pt)",
                               "save it again with torch.export.save in torch >= 2.7")
            archive.refuse(f"lacks {inner}")
        config = archive.json(inner).get("config")
        if not isinstance(config, dict):
            archive.refuse(f"has no 'config' table in {inner}")
        for fqn, entry in config.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("path_name"), str) \
                    or not re.fullmatch(r"[A-Za-z0-9_.\-]+", entry["path_name"]) \
                    or ".." in entry["path_name"]:
                archive.refuse(f"has a malformed entry {fqn!r} in {inner}")
            if not _PATH.match(str(fqn)):
                archive.refuse(f"names a {kind[:-1]} {fqn!r} that is not a dotted module path")
        out[kind] = config
    return out


def _tensor(archive: _Archive, kind: str, fqn: str, entry: dict, raw_cache: dict):
    """One weight or constant: raw bytes viewed through ``tensor_meta``, or a pickled tensor
    read with ``weights_only=True``. Custom and opaque objects are refused."""
    from torch._export.serde.schema import TensorMeta
    from torch._export.serde.serialize import (_dict_to_dataclass, deserialize_scalar_type,
                                               deserialize_size, deserialize_storage_offset,
                                               deserialize_stride)

    name = entry["path_name"]
    member = f"data/{kind}/{name}"
    if kind == "constants" and not name.startswith("tensor_"):
        archive.refuse(f"holds a custom object ({member}): loading it would run code, so "
                       "it is refused")
    if entry.get("use_pickle"):
        value = load_weights_only(archive.read(member))
        if not isinstance(value, torch.Tensor):
            archive.refuse(f"{kind[:-1]} {fqn!r} ({member}) is not plain tensor data "
                           f"(found {type(value).__name__})")
        return value
    try:
        meta = _dict_to_dataclass(TensorMeta, entry.get("tensor_meta"))
        dtype = deserialize_scalar_type(meta.dtype)
        sizes, strides = deserialize_size(meta.sizes), deserialize_stride(meta.strides)
        offset = deserialize_storage_offset(meta.storage_offset)
        if name not in raw_cache:
            data = archive.read(member)
            raw_cache[name] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        flat = raw_cache[name]
        width = torch.empty((), dtype=dtype).element_size()
        if flat.numel() % width:
            raise ValueError(f"{flat.numel()} bytes is not a whole number of {dtype}")
        if flat.numel():
            tensor = torch.as_strided(flat.view(dtype), sizes, strides, offset)
        else:  # an empty member stands for zeros (as torch.export.load reads it)
            tensor = torch.zeros(sizes, dtype=dtype)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - bad metadata or too few bytes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"truncated or corrupt: {kind[:-1]} {fqn!r} ({member}) does not "
                         f"hold the tensor its metadata describes: {first}",
                         file=archive.path, field="checkpoint") from None
    if entry.get("is_param"):
        return nn.Parameter(tensor, requires_grad=bool(meta.requires_grad))
    return tensor


class NotWeights(Exception):
    """``torch.load(weights_only=True)`` refused some bytes.

    reason : one short line; global_name : the Python object a pickle names, if that is
    why; truncated : the bytes end early.
    """

    def __init__(self, reason: str, global_name: str = "", truncated: bool = False):
        super().__init__(reason)
        self.reason, self.global_name, self.truncated = reason, global_name, truncated


_BOILERPLATE = ("Weights only load failed", "Check the documentation", "Please file an issue",
                "Re-running", "In PyTorch 2.6")


def load_weights_only(data: bytes):
    """``torch.load(data, weights_only=True)`` on CPU; ``NotWeights`` on any refusal."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything: not plain weights
        text = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        lines = [line.strip() for line in text.splitlines() if line.strip()
                 and not line.strip().startswith(_BOILERPLATE)]
        reason = (lines[-1] if lines else type(exc).__name__).removeprefix(
            "WeightsUnpickler error: ")
        truncated = isinstance(exc, EOFError) or any(
            word in text for word in ("truncated", "Ran out of input", "EOF", "central "
                                      "directory", "unexpected end"))
        if found:
            reason = f"it names the Python object {found.group(1)}"
        raise NotWeights(reason[:160], found.group(1) if found else "", truncated) from None


def _vet_strings(value, archive: _Archive, key: str = "") -> None:
    """No control character in any string; module paths dotted names; names plain."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or _CONTROL.search(k):
                archive.refuse("has a key with control characters")
            _vet_strings(v, archive, k)
    elif isinstance(value, list):
        for v in value:
            _vet_strings(v, archive, key)
    elif isinstance(value, str):
        if _CONTROL.search(value):
            archive.refuse(f"has a {key or 'value'} with control characters")
        if key == "expr_str":
            _vet_expression(value, archive)
        elif key in _PATH_KEYS and value and not _PATH.match(value) \
                and not value.startswith(("torch.", "_operator.", "#")):
            archive.refuse(f"names a module path {value[:60]!r} that is not a dotted name")
        elif key == "name" and not _NAME.match(value):
            archive.refuse(f"has a node name {value[:60]!r} that is not a plain name")


def _vet_expression(text: str, archive: _Archive) -> None:
    """A symbolic shape expression: arithmetic over shape symbols and sympy's functions."""
    quoted = re.findall(r"'([^']*)'", text)  # Symbol('s0', ...): only symbol names quoted
    plain = re.sub(r"'[^']*'", "s0", text)
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", plain)
    bad = [w for w in words if w not in _EXPR_FUNCTIONS and not _SYMBOL.match(w)]
    if any(not _SYMBOL.match(q) for q in quoted) or not _EXPR_CHARS.match(plain) or bad \
            or re.search(r"[A-Za-z_]\s*\.|\.\s*[A-Za-z_]", plain):
        archive.refuse(f"has a shape expression that is not plain arithmetic: {text[:60]!r}")


def _vet_program(program: dict, archive: _Archive, trusted: bool) -> dict:
    """The program's JSON with its operators checked and its free text dropped."""
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        archive.refuse("has no graph (models/model.json)")
    graph = program["graph_module"].get("graph") or {}
    nodes = graph.get("nodes")
    if not isinstance(nodes, list):
        archive.refuse("has no graph nodes (models/model.json)")
    if not trusted:
        refused = sorted({str(n.get("target")) for n in nodes if isinstance(n, dict)
                          and not _allowed_target(str(n.get("target")))})
        if refused:
            archive.refuse(f"calls {len(refused)} operator(s) outside ml4ml's allow-list "
                           f"(e.g. {refused[0][:80]}): it may touch files or run other code",
                           _TRUST)
    if not all(isinstance(node, dict) for node in nodes):
        archive.refuse("has a malformed graph node")
    _keep_module_stacks(program)
    program["graph_module"]["metadata"] = {}
    program["guards_code"] = []
    _vet_strings(program, archive)
    for symbol in (program.get("range_constraints") or {}):
        if not _SYMBOL.match(str(symbol)):
            archive.refuse(f"has a shape symbol {str(symbol)[:40]!r} that is not a plain name")
    return program


def _keep_module_stacks(value) -> None:
    """Every node's metadata (subgraphs' included) cut to its ``nn_module_stack``."""
    if isinstance(value, dict):
        if "target" in value and "metadata" in value:
            meta = value["metadata"] if isinstance(value["metadata"], dict) else {}
            stack = meta.get("nn_module_stack")
            value["metadata"] = {"nn_module_stack": stack} if isinstance(stack, str) else {}
        for item in value.values():
            _keep_module_stacks(item)
    elif isinstance(value, list):
        for item in value:
            _keep_module_stacks(item)


def _allowed_target(target: str) -> bool:
    found = _ATEN.match(target)
    return bool(found and found.group(1) in ALLOWED_ATEN) or target in ALLOWED_PYTHON


def _vet_graph(program, archive: _Archive) -> None:
    """After deserialization: every called function is an allowed aten op or Python op."""
    allowed_python = set(ALLOWED_PYTHON.values())
    for node in program.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        target = node.target
        if node.op == "call_function" and isinstance(target, torch._ops.OpOverload):
            packet = target.overloadpacket
            if target.namespace == "aten" and packet.__name__ in ALLOWED_ATEN:
                continue
        elif node.op == "call_function" and target in allowed_python:
            continue
        archive.refuse(f"calls {node.op} {target!s:.80} outside ml4ml's allow-list", _TRUST)


def read_program(data: bytes, path="", *, trusted: bool = False):
    """The ``ExportedProgram`` in a ``.pt2`` file's bytes, read as data (module doc).

    trusted : operators outside the allow-list are accepted (the user vouches for the
        file); pickles are still read with ``weights_only=True`` only.
    InputError, naming the file, for a truncated, corrupt or refused archive.
    """
    from torch._export.serde import schema
    from torch._export.serde.serialize import (ExportedProgramDeserializer,
                                               _dict_to_dataclass)

    archive = _Archive(data, path)
    if not archive.has("models/model.json"):
        archive.refuse("has no program 'model' (models/model.json)")
    if archive.has("byteorder") and archive.read("byteorder").decode(
            "ascii", "replace").strip() != sys.byteorder:
        archive.refuse(f"was saved on a {archive.read('byteorder')[:8]!r}-endian machine; "
                       f"this one is {sys.byteorder}-endian")
    program = _vet_program(archive.json("models/model.json"), archive, trusted)
    configs = _payload_configs(archive)
    tensors = {}
    for kind in ("weights", "constants"):
        raw = {}
        try:
            tensors[kind] = {fqn: _tensor(archive, kind, fqn, entry, raw)
                             for fqn, entry in configs[kind].items()}
        except NotWeights as exc:
            archive.refuse(f"has a {kind[:-1]} that is not plain tensor data "
                           f"({exc.reason}): loading it could run code, so it is refused")
    try:
        serialized = _dict_to_dataclass(schema.ExportedProgram, program)
        result = ExportedProgramDeserializer().deserialize(
            serialized, tensors["weights"], tensors["constants"], None)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means a bad program
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load the torch.export program: {first[:200]}", file=path,
                         field="checkpoint") from None
    if not trusted:
        _vet_graph(result, archive)
    return result


def check_archive(data: bytes, path="") -> None:
    """The pre-check of a whole ``.pt2`` archive (module doc); InputError naming a member."""
    archive = _Archive(data, path)
    inner_names = list(archive.names)
    compiled = [n for n in inner_names if n.startswith(("data/aotinductor/",
                                                        "data/executorch/", "data/mtia/"))]
    if compiled:
        archive.refuse(f"holds compiled code ({compiled[0]}), which ml4ml does not run",
                       "save the program itself: torch.export.save(torch.export.export("
                       "model, (x,)), 'm.pt2')")
    configs = _payload_configs(archive)
    raw, pickled = {}, {}
    for kind, config in configs.items():
        for fqn, entry in config.items():
            member = f"data/{kind}/{entry['path_name']}"
            if kind == "constants" and not entry["path_name"].startswith("tensor_"):
                archive.refuse(f"holds a custom object ({member}, entry {fqn!r}): loading it "
                               "would run code, so it is refused")
            (pickled if entry.get("use_pickle") else raw).setdefault(member, fqn)
    both = sorted(set(raw) & set(pickled))
    if both:
        archive.refuse(f"marks member {both[0]} use_pickle in entry {pickled[both[0]]!r} "
                       f"and raw in entry {raw[both[0]]!r}: a member is one or the other, "
                       "so the file is refused")
    # every member that any reader could take for a pickle, whatever its first byte
    suspects = sorted(set(pickled) | {n for n in inner_names if n not in raw and (
        n.endswith((".pt", ".pkl")) or n.startswith(("data/weights/", "data/constants/",
                                                     "data/sample_inputs/")))
        and not n.endswith(".json")})
    for member in suspects:
        try:
            load_weights_only(archive.read(member))
        except NotWeights as exc:
            entry = pickled.get(member)
            how = f"entry {entry!r} marks it use_pickle" if entry else "read as a pickle"
            archive.refuse(f"member {member} ({how}) is not plain weights: {exc.reason}; "
                           "loading it could run code, so the file is refused")


def fixed_batch(program) -> int | None:
    """The batch size a program's one tensor input is fixed to, or None (dynamic)."""
    users = list(program.graph_signature.user_inputs)
    if len(users) != 1:
        return None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == users[0]:
            value = node.meta.get("val")
            if isinstance(value, torch.Tensor) and value.dim() >= 1 \
                    and isinstance(value.shape[0], int):
                return int(value.shape[0])
    return None


class _Tap(nn.Identity):
    """Stands for one submodule of the wrapped program: called with its whole output."""


class FixedBatchModel(nn.Module):
    """A module that takes batches of exactly ``batch`` inputs, run on any number of them.

    Inputs are split into batches of ``batch`` (the last padded with copies of its last
    input); outputs are concatenated and trimmed. The wrapped module's submodules appear
    here under their own names as taps: a forward hook registered on one (the probe's)
    sees that submodule's output for all inputs at once, trimmed likewise.
    """

    def __init__(self, module: nn.Module, batch: int):
        super().__init__()
        self.batch = int(batch)
        self.__dict__["wrapped"] = module  # not a submodule: hooks go on the taps
        self._names = [name for name, _ in module.named_modules() if name]
        for name in self._names:
            parent = self
            parts = name.split(".")
            for part in parts[:-1]:
                parent = parent._modules[part]
            parent.add_module(parts[-1], _Tap())
        self._handles = {}
        self._seen = {}

    def train(self, mode: bool = True):
        self.wrapped.train(mode)
        return super().train(mode)

    def conv_layers(self) -> list[str]:
        """The wrapped program's convolutions (``convolutions.conv_layers``): the taps
        here stand for its submodules under the same names."""
        from ml4ml.zoo.convolutions import conv_layers

        return conv_layers(self.wrapped)

    def _apply(self, fn, recurse=True):
        self.wrapped._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        return self.wrapped.named_parameters(prefix, recurse, remove_duplicate)

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self.wrapped.named_buffers(prefix, recurse, remove_duplicate)

    def _watch(self, names) -> None:
        for name in names:
            if name not in self._handles:
                def hook(module, inputs, output, name=name):
                    self._seen.setdefault(name, []).append(output)
                self._handles[name] = self.wrapped.get_submodule(name).register_forward_hook(
                    hook)

    def forward(self, x):
        n = x.shape[0]
        watched = [name for name in self._names if self.get_submodule(name)._forward_hooks]
        self._watch(watched)
        outputs, seen = [], {name: [] for name in watched}
        for start in range(0, n, self.batch):
            chunk = x[start:start + self.batch]
            if chunk.shape[0] < self.batch:
                pad = chunk[-1:].expand((self.batch - chunk.shape[0],) + tuple(chunk.shape[1:]))
                chunk = torch.cat([chunk, pad])
            self._seen = {}
            outputs.append(self.wrapped(chunk))
            for name in watched:
                seen[name].append(self._seen.get(name, []))
        self._seen = {}
        for name in watched:  # each run of the submodule in one forward, for all inputs
            runs = min(len(calls) for calls in seen[name]) if seen[name] else 0
            for run in range(runs):
                self.get_submodule(name)(torch.cat([calls[run] for calls in seen[name]])[:n])
        return torch.cat(outputs)[:n]
