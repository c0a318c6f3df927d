"""Hostile model files built from REAL ``torch.export.save`` and ``torch.jit.save`` outputs.

Each would run a command or write a file if loaded the way ``torch.export.load`` or
``torch.jit.load`` load it; the tests check that ml4ml refuses them and nothing happens:

- ``pickled_weight``: a ``.pt2`` whose first weight is marked ``use_pickle: true`` and
  holds a protocol-0 pickle (first byte ``c``, not ``0x80``) whose reduce runs a shell
  command that creates ``marker``;
- ``second_entry``: a ``.pt2`` whose raw weight member (``use_pickle: false`` in its own
  entry) holds such a pickle (protocol 2, padded to the weight's size) and a second entry
  marked ``use_pickle: true`` points at the same member;
- ``file_writing_script``: a TorchScript file whose ``forward`` (and ``__setstate__``)
  calls ``torch.from_file(victim, shared=True).fill_(88)``, overwriting ``victim``;
- ``guarded_program``: a ``.pt2`` whose ``guards_code`` holds Python that
  ``ExportedProgram.module()`` compiles and runs on the first call;
- ``poisoned_expression``: a ``.pt2`` whose symbolic batch size is Python that
  ``torch.export.load`` evaluates (``sympy.sympify``).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shlex
import zipfile

import torch
from torch import nn


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 5)
        self.conv2 = nn.Conv2d(4, 8, 5)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


class _Command:
    """Pickles to a call of ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def real_export(batch: int = 2) -> bytes:
    """The bytes of a real ``torch.export.save`` of a small CNN (batch size fixed)."""
    torch.manual_seed(0)
    program = torch.export.export(_Net().eval(), (torch.rand(batch, 1, 28, 28),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def dynamic_export() -> bytes:
    """The bytes of a real ``torch.export.save`` of a small CNN with a dynamic batch size."""
    torch.manual_seed(0)
    program = torch.export.export(_Net().eval(), (torch.rand(2, 1, 28, 28),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _rewrite(data: bytes, change) -> bytes:
    """The archive with ``change(members)`` applied ({inner name: bytes}), root kept."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        root = names[0].split("/", 1)[0] + "/"
        members = {n[len(root):]: archive.read(n) for n in names}
    change(members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, payload in members.items():
            archive.writestr(root + name, payload)
    return out.getvalue()


def _touch(marker) -> str:
    return f"touch {shlex.quote(os.fspath(marker))}"


def pickled_weight(marker) -> bytes:
    """Crafted file (a): a ``use_pickle: true`` weight holding a protocol-0 pickle."""
    def change(members):
        key = "data/weights/model_weights_config.json"
        config = json.loads(members[key])
        entry = config["config"]["conv1.weight"]
        entry["use_pickle"] = True
        members[key] = json.dumps(config).encode()
        members["data/weights/" + entry["path_name"]] = pickle.dumps(_Command(_touch(marker)),
                                                                     protocol=0)
    return _rewrite(real_export(), change)


def second_entry(marker) -> bytes:
    """Crafted file (b): a second ``use_pickle: true`` entry on a raw weight member."""
    def change(members):
        key = "data/weights/model_weights_config.json"
        config = json.loads(members[key])
        raw = config["config"]["conv1.weight"]
        member = "data/weights/" + raw["path_name"]
        payload = pickle.dumps(_Command(_touch(marker)), protocol=2)
        size = max(len(members[member]), len(payload) + (-len(payload)) % 4)
        members[member] = payload + b"\0" * (size - len(payload))
        # the pickled entry first: torch.export.load unpickles it before it views the raw one
        config["config"] = {"evil": {**raw, "use_pickle": True, "is_param": False},
                            **config["config"]}
        members[key] = json.dumps(config).encode()
    return _rewrite(real_export(), change)


def file_writing_script(victim) -> bytes:
    """Crafted file (c): TorchScript that overwrites ``victim`` on load and on forward."""
    path = os.fspath(victim)

    class Writer(nn.Module):
        def __init__(self):
            super().__init__()
            self.path = path
            self.size = os.path.getsize(path)

        def forward(self, x):
            written = torch.from_file(self.path, shared=True, size=self.size,
                                      dtype=torch.uint8).fill_(88)
            # used in the output, so TorchScript keeps the call
            return x.flatten(1)[:, :10] + 0.0 * written[0].float()

        @torch.jit.export
        def __getstate__(self):
            return (self.path, self.size, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[str, int, bool]):
            self.path = state[0]
            self.training = state[2]
            written = torch.from_file(self.path, shared=True, size=state[1],
                                      dtype=torch.uint8).fill_(88)
            self.size = state[1] + 0 * int(written[0])

    script = torch.jit.script(Writer())
    buffer = io.BytesIO()
    torch.jit.save(script, buffer)
    return buffer.getvalue()


def _edit_program(data: bytes, change) -> bytes:
    def edit(members):
        program = json.loads(members["models/model.json"])
        change(program)
        members["models/model.json"] = json.dumps(program).encode()
    return _rewrite(data, edit)


def _python(marker) -> str:
    return f"__import__('os').system({_touch(marker)!r})"


def guarded_program(marker) -> bytes:
    """Python in ``guards_code``: run by the module ``ExportedProgram.module()`` returns."""
    return _edit_program(dynamic_export(), lambda program: program.__setitem__(
        "guards_code", [_python(marker) + " or True"]))


def poisoned_expression(marker) -> bytes:
    """Python as the symbolic batch size: evaluated by ``torch.export.load``."""
    def change(program):
        for value in program["graph_module"]["graph"]["tensor_values"].values():
            for size in value["sizes"]:
                if "as_expr" in size:
                    size["as_expr"]["expr_str"] = _python(marker)
                    return
        raise AssertionError("no symbolic size in the program")
    return _edit_program(dynamic_export(), change)
