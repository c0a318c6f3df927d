"""Model files are data unless the user says they are code; fixed-batch exports; honest
file errors; the store's own recorded suites (issue 24, points 4 and 7)."""

import hashlib
import io
import shutil
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import crafted
import ml4ml
from ml4ml import dims, store
from ml4ml.cli import cli
from ml4ml.data.suites import load_suite
from ml4ml.errors import InputError
from tree import digest

SPEC = """
name = "files"
[store]
path = "files.zarr"
[suites.digits]
n_samples = 21
[transforms.rotation]
grid = [-20, 20, 5]
[probe]
batch_size = 64
[zoo.checkpoints]
glob = "models/*.pt2"
"""
GRID = np.linspace(-20, 20, 5)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_refusal(result, needle):
    assert result.exit_code == 1, result.output
    assert needle in result.output, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A store holding one benign export (its suites recorded by 'train'), and its spec."""
    folder = tmp_path_factory.mktemp("files")
    (folder / "models").mkdir()
    (folder / "models" / "ok.pt2").write_bytes(crafted.real_export())
    (folder / "files.toml").write_text(SPEC)
    result = run("train", folder / "files.toml")
    assert result.exit_code == 0 and "1 added, 0 trained" in result.output, result.output
    return folder


@pytest.fixture
def copy(made, tmp_path):
    """A copy of the made store alone (no spec beside it): what add-models checks with."""
    shutil.copytree(made / "files.zarr", tmp_path / "files.zarr")
    return tmp_path / "files.zarr"


def test_the_crafted_files_are_hostile_to_torchs_own_loaders(tmp_path):
    """Sanity: each crafted file runs its command or writes its file when torch loads it."""
    for build in (crafted.pickled_weight, crafted.second_entry):
        marker = tmp_path / f"marker-{build.__name__}"
        try:
            torch.export.load(io.BytesIO(build(marker)))
        except Exception:  # noqa: BLE001 - it fails after the command ran
            pass
        assert marker.exists(), build.__name__
    marker = tmp_path / "marker-guards"
    torch.export.load(io.BytesIO(crafted.guarded_program(marker))).module()(
        torch.rand(3, 1, 28, 28))
    assert marker.exists()
    marker = tmp_path / "marker-expression"
    try:
        torch.export.load(io.BytesIO(crafted.poisoned_expression(marker)))
    except Exception:  # noqa: BLE001 - it fails after the command ran
        pass
    assert marker.exists()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious data")
    script = crafted.file_writing_script(victim)
    torch.jit.load(io.BytesIO(script))
    assert victim.read_bytes() == b"X" * len(b"precious data")


@pytest.mark.parametrize("build, needle", [
    (crafted.pickled_weight, "the torch.export program member data/weights/weight_0 (entry "
                             "'conv1.weight' marks it use_pickle) is not plain weights: it "
                             "names the Python object posix.system"),
    (crafted.second_entry, "the torch.export program marks member data/weights/weight_0 "
                           "use_pickle in entry 'evil' and raw in entry 'conv1.weight'"),
])
def test_the_pre_check_refuses_a_crafted_pt2_in_one_line_and_nothing_runs(copy, tmp_path,
                                                                           build, needle):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt2"
    evil.write_bytes(build(marker))
    before = digest(copy)
    result = run("add-models", copy, evil, "--mid", "e1")
    one_line_refusal(result, needle)
    assert str(evil) in result.output
    assert not marker.exists()
    assert digest(copy) == before
    # --trust vouches for operators, never for pickles
    one_line_refusal(run("add-models", copy, evil, "--mid", "e1", "--trust"), needle)
    assert not marker.exists() and digest(copy) == before


@pytest.mark.parametrize("build", [crafted.pickled_weight, crafted.second_entry])
def test_the_loader_alone_never_unpickles_unsafely(tmp_path, build):
    """Without the pre-check (the probe's path: load_model), the loader reads every pickled
    member with weights_only=True and refuses; nothing runs."""
    from ml4ml.zoo.checkpoints import load_model
    from ml4ml.zoo.export_files import read_program

    marker = tmp_path / "marker"
    data = build(marker)
    for load in (lambda: read_program(data, "evil.pt2"),
                 lambda: read_program(data, "evil.pt2", trusted=True),
                 lambda: load_model(data, "export", path="evil.pt2")):
        with pytest.raises(InputError, match="has a weight that is not plain tensor data "
                                             r"\(it names the Python object posix.system\)"):
            load()
    assert not marker.exists()


def test_text_in_a_program_is_never_evaluated(tmp_path):
    """guards_code (compiled by ExportedProgram.module()) is dropped; a shape expression
    (sympify, an eval) that is not plain arithmetic is refused; nothing runs."""
    from ml4ml.zoo.export_files import read_program

    marker = tmp_path / "marker"
    program = read_program(crafted.guarded_program(marker), "guarded.pt2")
    program.module()(torch.rand(3, 1, 28, 28))
    assert program._guards_code == [] and not marker.exists()
    with pytest.raises(InputError, match="has a shape expression that is not plain arithmetic"):
        read_program(crafted.poisoned_expression(marker), "poisoned.pt2")
    assert not marker.exists()
    (tmp_path / "p.pt2").write_bytes(crafted.poisoned_expression(marker))
    one_line_refusal(run("add-models", tmp_path / "new.zarr", tmp_path / "p.pt2"),
                     "has a shape expression that is not plain arithmetic")
    assert not marker.exists() and not (tmp_path / "new.zarr").exists()


def test_a_file_writing_torchscript_is_refused_unless_trusted(made, copy, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious data")
    script = tmp_path / "writer.ts"
    script.write_bytes(crafted.file_writing_script(victim))
    before = digest(copy)
    result = run("add-models", copy, script, "--mid", "w1")
    one_line_refusal(result, "a TorchScript file is a program")
    assert "--trust" in result.output and "torch.save(m.state_dict(), 'm.pt')" in result.output
    assert victim.read_bytes() == b"precious data" and digest(copy) == before
    # the same from a spec entry: refused unless 'trust = true'
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace('glob = "models/*.pt2"', f'glob = "{script}"')
                    .replace('path = "files.zarr"', f'path = "{copy}"'))
    one_line_refusal(run("train", spec), "a TorchScript file is a program")
    assert victim.read_bytes() == b"precious data" and digest(copy) == before
    # a TorchScript file you trust: 'trust = true', recorded per model
    torch.jit.save(torch.jit.script(crafted._Net().eval()), tmp_path / "mine.ts")
    spec.write_text(SPEC.replace('glob = "models/*.pt2"', f'glob = "{tmp_path}/mine.ts"\n'
                                 'trust = true').replace('path = "files.zarr"',
                                                         f'path = "{copy}"'))
    result = run("train", spec)
    assert result.exit_code == 0 and "1 added" in result.output, result.output
    table = store.read_models(copy)
    assert table["trusted"].to_series().to_dict() == {"ok": False, "mine": True}
    assert table["checkpoint_format"].sel(mid="mine").item() == "torchscript"


def test_a_program_calling_an_operator_off_the_allow_list_needs_trust(copy, tmp_path):
    @torch.library.custom_op("ml4ml_test::twice", mutates_args=())
    def twice(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @twice.register_fake
    def _(x):
        return torch.empty_like(x)

    class Custom(crafted._Net):
        def forward(self, x):
            return super().forward(torch.ops.ml4ml_test.twice(x))

    file = tmp_path / "custom.pt2"
    torch.export.save(torch.export.export(Custom().eval(), (torch.rand(2, 1, 28, 28),)), file)
    before = digest(copy)
    one_line_refusal(run("add-models", copy, file, "--mid", "c1"),
                     "calls 1 operator(s) outside ml4ml's allow-list (e.g. "
                     "torch.ops.ml4ml_test.twice.default)")
    assert digest(copy) == before
    result = run("add-models", copy, file, "--mid", "c1", "--trust")
    assert result.exit_code == 0 and "1 added, 0 already" in result.output, result.output
    table = store.read_models(copy)
    assert table["trusted"].to_series().to_dict() == {"ok": False, "c1": True}


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_a_fixed_batch_export_probes_as_the_module_in_memory(tmp_path, batch):
    """Exported as PyTorch's tutorial does (no dynamic_shapes): probed in batches of that
    size, the last padded and trimmed; probabilities and layer statistics as in memory."""
    torch.manual_seed(batch)
    net = crafted._Net().eval()
    (tmp_path / "models").mkdir()
    program = torch.export.export(net, (torch.rand(batch, 1, 28, 28),))
    torch.export.save(program, tmp_path / "models" / "fixed.pt2")
    spec = tmp_path / "files.toml"
    spec.write_text(SPEC.replace("batch_size = 64",
                                 'batch_size = 64\nlayers = ["conv1", "conv2"]'))
    assert run("train", spec).exit_code == 0
    result = run("probe", spec)
    assert result.exit_code == 0 and "probe: 1 probed," in result.output, \
        result.output
    suite = load_suite("digits", "test", n_samples=21)
    expected = ml4ml.probe_model(net, suite.images, suite.labels, "rotation", GRID,
                                 layers=["conv1", "conv2"], batch_size=64)
    got = store.open_probes(tmp_path / "files.zarr", "digits", "rotation").sel(
        {dims.MID: "fixed"})
    np.testing.assert_allclose(got[dims.PROB].values, expected[dims.PROB].values, atol=1e-6)
    np.testing.assert_allclose(got[dims.ACT].values, expected[dims.ACT].values, rtol=1e-5,
                               atol=1e-5)
    from ml4ml.probe.responses import forward_sizes

    # the probe's forwards of 64 inputs: in batches of 3, the last of each is padded, trimmed
    sizes = forward_sizes(len(suite.labels), len(GRID), 64)
    assert any(size % batch for size in sizes) == (batch == 3), sizes


def test_the_fixed_batch_is_found_in_the_program():
    from ml4ml.zoo.checkpoints import load_export
    from ml4ml.zoo.export_files import FixedBatchModel

    for batch in (1, 2, 3):
        module, _ = load_export(crafted.real_export(batch))
        assert isinstance(module, FixedBatchModel) and module.batch == batch
        x = torch.rand(7, 1, 28, 28)
        reference = torch.cat([module.wrapped(torch.cat(
            [x[i:i + batch], x[-1:].expand(max(0, i + batch - 7), 1, 28, 28)]))
            for i in range(0, 7, batch)])[:7]
        assert torch.equal(module(x), reference)
    # its parameters are the program's: .to() and .train() reach them (the probe's .to(device))
    assert len(list(module.parameters())) == 6
    module.double()
    assert all(p.dtype == torch.float64 for p in module.wrapped.parameters())
    assert module(x.double()).dtype == torch.float64
    dynamic = io.BytesIO()
    torch.export.save(torch.export.export(crafted._Net().eval(), (torch.rand(2, 1, 28, 28),),
                                          dynamic_shapes=({0: torch.export.Dim("b")},)),
                      dynamic)
    module, _ = load_export(dynamic.getvalue())
    assert not isinstance(module, FixedBatchModel)


def _cut(data: bytes, keep: float) -> bytes:
    return data[:int(len(data) * keep)]


def _flip(data: bytes) -> bytes:
    """One byte in the middle of the largest member changed (its checksum then fails)."""
    import struct

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    header = info.header_offset
    name_length, extra_length = struct.unpack("<HH", data[header + 26:header + 30])
    start = header + 30 + name_length + extra_length + info.file_size // 2
    return data[:start] + bytes([data[start] ^ 0xFF]) + data[start + 1:]


def test_truncated_or_corrupt_files_say_so(copy, tmp_path):
    net = crafted._Net().eval()
    state = io.BytesIO()
    torch.save(net.state_dict(), state)
    legacy = io.BytesIO()
    torch.save(net.state_dict(), legacy, _use_new_zipfile_serialization=False)
    script = io.BytesIO()
    torch.jit.save(torch.jit.script(net), script)
    cases = {
        "empty.pt": b"",
        "cut.pt": _cut(state.getvalue(), 0.6),
        "cut-legacy.pt": _cut(legacy.getvalue(), 0.6),
        "cut.pt2": _cut(crafted.real_export(), 0.7),
        "cut.ts": _cut(script.getvalue(), 0.5),
        "flipped.pt": _flip(state.getvalue()),
        "flipped.pt2": _flip(crafted.real_export()),
    }
    before = digest(copy)
    for name, data in cases.items():
        file = tmp_path / name
        file.write_bytes(data)
        result = run("add-models", copy, file, "--arch", "module:crafted:_Net", "--mid", "x1")
        one_line_refusal(result, f"{file}: field 'checkpoint': truncated or corrupt: ")
        # the hold-out id rule is checked after the file: the bad file is what is reported
        result = run("add-models", copy, file, "--mid", "t1")
        one_line_refusal(result, "truncated or corrupt: ")
        assert digest(copy) == before, name
    (tmp_path / "junk.bin").write_bytes(b"not a model at all")
    one_line_refusal(run("add-models", copy, tmp_path / "junk.bin"), "unknown checkpoint format")


def test_the_hold_out_rule_is_checked_after_the_file(copy, tmp_path):
    file = tmp_path / "good.pt2"
    file.write_bytes(crafted.real_export())
    before = digest(copy)
    one_line_refusal(run("add-models", copy, file, "--mid", "t7"),
                     "hold-out ids start with 't' and only they do; got 't7' not as a "
                     "hold-out model")
    one_line_refusal(run("add-models", copy, file, "--mid", "x7", "--holdout"),
                     "got 'x7' as a hold-out model")
    assert digest(copy) == before
    assert "1 added" in run("add-models", copy, file, "--mid", "t7", "--holdout").output


FLAT = """
from torch import nn


class Flat(nn.Sequential):
    def __init__(self, num_classes=10, in_channels=1):
        super().__init__(nn.Conv2d(in_channels, 4, 5), nn.Conv2d(4, 4, 5), nn.Flatten(),
                         nn.Linear(4 * 20 * 20, num_classes))
"""


def flat(num_classes=10):
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 4, 5), nn.Conv2d(4, 4, 5), nn.Flatten(),
                         nn.Linear(4 * 20 * 20, num_classes)).eval()


def test_add_models_checks_a_copied_store_against_its_own_recorded_suites(made, copy,
                                                                          tmp_path):
    """The spec that made the store is not beside the copy: the store's own record (image
    shape, class count) still refuses a model of 7 classes or 3 channels."""
    import xarray as xr

    assert not (copy.parent / "files.toml").exists()
    recorded = xr.open_datatree(copy, engine="zarr").attrs["suites"]
    assert recorded == {"digits": {"image_shape": [1, 28, 28], "n_classes": 10}}
    torch.save(flat(7).state_dict(), tmp_path / "seven.pt")
    (tmp_path / "flat7.py").write_text(FLAT)
    wide = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 784, 10))
    torch.export.save(torch.export.export(wide, (torch.rand(2, 3, 28, 28),)),
                      tmp_path / "wide.pt2")
    before = digest(copy)
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        one_line_refusal(run("add-models", copy, tmp_path / "seven.pt", "--arch",
                             "module:flat7:Flat"),
                         "has 7 outputs, suite 'digits' has 10 classes")
    finally:
        os.chdir(cwd)
    one_line_refusal(run("add-models", copy, tmp_path / "wide.pt2"),
                     "cannot take the images of suite 'digits'")
    assert digest(copy) == before
    # a store with no suites recorded yet: what can be checked is, and it says what not
    fresh = tmp_path / "fresh.zarr"
    result = run("add-models", fresh, made / "models" / "ok.pt2")
    assert result.exit_code == 0 and "1 added, 0 already" in result.output
    assert "note: the store records no suites yet, so the models' input shape and class " \
           "count were not checked" in result.output
    (tmp_path / "empty.pt2").write_bytes(b"")
    one_line_refusal(run("add-models", fresh, tmp_path / "empty.pt2"),
                     "truncated or corrupt: the file is empty (0 bytes)")


def test_a_module_architecture_is_imported_only_when_the_spec_names_it(tmp_path):
    """A store records a module: arch and its source's sha256; the probe imports it from
    its own spec's folder, only if that spec names it and the source is unchanged."""
    (tmp_path / "models").mkdir()
    (tmp_path / "flat.py").write_text(FLAT)
    torch.manual_seed(0)
    net = flat()
    torch.save(net.state_dict(), tmp_path / "models" / "f1.pt")
    spec = tmp_path / "files.toml"
    spec.write_text(SPEC.replace('glob = "models/*.pt2"', 'glob = "models/*.pt"\n'
                                 'arch = "module:flat:Flat"'))
    assert run("train", spec).exit_code == 0
    path = tmp_path / "files.zarr"
    table = store.read_models(path)
    assert table["arch_sha256"].sel(mid="f1").item() == hashlib.sha256(
        (tmp_path / "flat.py").read_bytes()).hexdigest()
    # another spec over the same store, in another folder, naming no module: arch
    other = tmp_path / "other"
    (other / "models").mkdir(parents=True)
    (other / "models" / "ok.pt2").write_bytes(crafted.real_export())
    (other / "flat.py").write_text(FLAT)  # even the same code beside it
    (other / "other.toml").write_text(SPEC.replace('path = "files.zarr"', f'path = "{path}"'))
    assert "1 added" in run("train", other / "other.toml").output
    result = run("probe", other / "other.toml")  # f1 fails, the other model is probed
    assert result.exit_code == 1 and "model 'f1' has architecture 'module:flat:Flat', which " \
        "the spec does not name" in result.output and "1 probed" in result.output, \
        result.output
    # the spec that names it, with the code changed since the model was added
    source = (tmp_path / "flat.py").read_text()
    (tmp_path / "flat.py").write_text(source + "# changed\n")
    result = run("probe", spec)
    assert result.exit_code == 1 and "the source of its architecture 'module:flat:Flat' " \
        "has sha256" in result.output, result.output
    (tmp_path / "flat.py").write_text(source)
    result = run("probe", spec)
    assert result.exit_code == 0 and "probe: 1 probed, 1 already," in result.output, \
        result.output
    suite = load_suite("digits", "test", n_samples=21)
    expected = ml4ml.probe_model(net, suite.images, suite.labels, "rotation", GRID)
    got = store.open_probes(path, "digits", "rotation").sel({dims.MID: "f1"})
    np.testing.assert_allclose(got[dims.PROB].values, expected[dims.PROB].values, atol=1e-6)
