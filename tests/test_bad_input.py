"""Bad input: one clear line naming the file and field, a non-zero exit, no traceback, and
every store left untouched (its files' bytes compared before and after)."""

import json
import shutil

import golden
import numpy as np
import pytest
from click.testing import CliRunner
from tree import digest

from ml4ml import store
from ml4ml.cli import cli
from ml4ml.data.tiny import write_cifar10

SPEC = """
name = "bad"
[store]
path = "db.zarr"
[suites.digits]
n_samples = 16
[transforms.rotation]
grid = [-4, 4, 5]
[zoo]
arch = "cnn5"
epochs = 1
n_train = 64
[[zoo.models]]
mid = "m001"
[[zoo.models]]
mid = "m002"
seed = 1
"""

NAN_MODEL = '''
import torch
from torch import nn


class EvalNaN(nn.Module):
    """Learns like a small CNN, but answers NaN when evaluated at rotation angle 0 or not."""

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        z = self.conv2(torch.relu(self.conv1(x))).mean(dim=(2, 3))
        out = self.head(z)
        return out if self.training else out * float("nan")
'''


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "spec.toml").write_text(SPEC)
    result = run("train", folder / "spec.toml", "-q")
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def folder(trained, tmp_path):
    for name in ("spec.toml", "db.zarr", "db.zarr.checkpoints"):
        source = trained / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    with store.writing(str(tmp_path / "db.zarr")):  # point the table at the copied files
        import xarray as xr

        table = store.read_models(str(tmp_path / "db.zarr"))
        store.update_models(str(tmp_path / "db.zarr"), xr.Dataset(
            {"checkpoint": ("mid", np.array([str(tmp_path / "db.zarr.checkpoints" / f"{m}.pt")
                                             for m in table.mid.values], dtype=object))},
            coords={"mid": table.mid.values}))
    return tmp_path


@pytest.mark.parametrize("edit, needles", [
    (lambda s: s.replace("[zoo]", "[zoo\n"), ["spec.toml: not valid TOML"]),
    (lambda s: s.replace("epochs = 1", "epochs = 1\nepoch = 2"),
     ["field 'zoo.epoch': unknown field (did you mean 'epochs'?)"]),
    (lambda s: s.replace("[transforms.rotation]", "[transforms.rotatoin]"),
     ["field 'transforms.rotatoin'", "unknown transform 'rotatoin'", "rotation", "scaling"]),
    (lambda s: s.replace("grid = [-4, 4, 5]", "grid = [-4, 4, 4]"),
     ["field 'transforms.rotation.grid'", "odd"]),
    (lambda s: s.replace("grid = [-4, 4, 5]", "grid = [1, 9, 5]"),
     ["field 'transforms.rotation.grid'", "identity"]),
    (lambda s: s.replace("[suites.digits]", "[suites.digitz]"),
     ["field 'suites.digitz'", "unknown suite 'digitz'", "mnist", "cifar10"]),
])
def test_bad_specs_are_one_line_and_touch_nothing(folder, edit, needles):
    spec = folder / "spec.toml"
    spec.write_text(edit(SPEC))
    before = digest(folder / "db.zarr")
    for command in ("validate", "train", "probe", "run"):
        one_line_error(run(command, spec, "-q") if command != "validate" else
                       run(command, spec), str(spec), *needles)
    assert digest(folder / "db.zarr") == before


def test_an_unknown_choice_key_is_one_problem_not_two(folder):
    spec = folder / "spec.toml"
    spec.write_text(SPEC.split("[[zoo.models]]")[0] + "[zoo.sample]\nn_regular = 2\n"
                    "[zoo.sample.choices]\nlrr = [0.1]\n")
    result = run("validate", spec)
    one_line_error(result, "field 'zoo.sample.choices.lrr': not a recipe field "
                           "(did you mean 'lr'?)")
    assert "no models" not in result.stderr


def failed_models(result, stage: str, summary: str, *needles):
    """A stage that finished the other models: exit 1, its summary line on stdout naming
    the failed model(s) once, one line on stderr that names none, no traceback."""
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), \
        result.stderr
    assert f"failed in {stage}; the others are done" in result.stderr
    assert "Traceback" not in result.output
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(f"{stage}: ")]
    assert summary in line, line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


@pytest.mark.parametrize("damage, needles", [
    ("missing", ["m002.pt", "field 'checkpoint'", "checkpoint file not found"]),
    ("truncated", ["m002.pt", "field 'checkpoint_sha256'", "truncated or replaced"]),
    ("other arch", ["m002.pt", "field 'checkpoint_sha256'", "truncated or replaced"]),
])
def test_a_bad_checkpoint_fails_its_model_only(folder, damage, needles):
    checkpoint = folder / "db.zarr.checkpoints" / "m002.pt"
    good = checkpoint.read_bytes()
    if damage == "missing":
        checkpoint.unlink()
    elif damage == "truncated":
        checkpoint.write_bytes(good[:1000])
    else:  # a checkpoint of another architecture in its place
        from ml4ml.zoo.architectures import build_model
        from ml4ml.zoo.recipe import Recipe
        from ml4ml.zoo.training import save_checkpoint

        save_checkpoint(build_model("resnet", num_classes=10, in_channels=1, image_size=28),
                        Recipe(mid="m002", arch="resnet"), checkpoint)
    line = failed_models(run("probe", folder / "spec.toml", "-q"), "probe",
                         "probe: 1 probed, 0 already, 1 failed: m002 (", *needles)
    assert "m001" not in line
    path = str(folder / "db.zarr")
    probes = store.open_probes(path, "digits", "rotation")
    assert store.done_mids(probes) == ["m001"]
    assert needles[-1] in str(probes.error.sel(mid="m002").values)
    # the file mended: the rerun probes m002 only
    checkpoint.write_bytes(good)
    result = run("probe", folder / "spec.toml", "-q")
    assert result.exit_code == 0 and "probe: 1 probed, 1 already," in result.stdout, \
        result.output
    assert store.done_mids(store.open_probes(path, "digits", "rotation")) == ["m001", "m002"]


def test_images_a_model_cannot_take_fail_each_model_with_the_reason(folder):
    root = write_cifar10(folder / "data", n_train=20, n_test=20)
    spec = folder / "spec.toml"
    spec.write_text(SPEC.replace("[suites.digits]", f'[data]\nroot = "{root}"\n'
                                 "[suites.cifar10]"))
    reason = "cannot take the images of suite 'cifar10', shape (3, 32, 32)"
    line = failed_models(run("probe", spec, "-q"), "probe", "probe: 0 probed, 0 already, "
                         "2 failed: m001 (", "), m002 (", "m001.pt", "field 'suites'", reason)
    assert line.count(reason) == 2
    probes = store.open_probes(str(folder / "db.zarr"), "cifar10", "rotation")
    assert store.done_mids(probes) == []
    assert reason in str(probes.error.sel(mid="m001").values)


def test_a_model_with_nan_outputs_is_refused_the_others_go_on(folder, monkeypatch):
    (folder / "nan_model.py").write_text(NAN_MODEL)
    monkeypatch.syspath_prepend(str(folder))
    spec = folder / "spec.toml"
    spec.write_text(SPEC.replace('mid = "m002"\nseed = 1',
                                 'mid = "m002"\nseed = 1\n[[zoo.models]]\nmid = "m003"\n'
                                 'arch = "module:nan_model:EvalNaN"'))
    result = run("train", spec, "-q")
    assert result.exit_code == 0, result.output  # it trains: the NaNs come when evaluated
    result = run("probe", spec, "-q")
    failed_models(result, "probe", "probe: 2 probed, 0 already, 1 failed: m003 (",
                  "NaN or infinite")
    probes = store.open_probes(str(folder / "db.zarr"), "digits", "rotation")
    assert store.done_mids(probes) == ["m001", "m002"]
    assert "NaN or infinite" in str(probes.error.sel(mid="m003").values)
    result = run("measure", folder / "db.zarr", "-q")
    assert result.exit_code == 0 and "measured 2 model(s)" in result.output


def test_a_model_whose_training_diverges_is_refused_the_others_go_on(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace('mid = "m002"\nseed = 1', 'mid = "m002"\nseed = 1\n'
                                 'lr = 1e30\nbatch_size = 16'))
    result = run("train", spec, "-q")
    failed_models(result, "train", "", "1 trained, 0 already, 1 failed: m002 (training "
                  "produced non-finite")
    table = store.read_models(str(tmp_path / "db.zarr"))
    assert table.trained.values.tolist() == [True, False]
    assert "non-finite" in str(table.train_error.sel(mid="m002").values)


@pytest.mark.parametrize("attrs, needles", [
    ({"ml4ml_schema_version": "2"}, ["field 'ml4ml_schema_version'", "must be an integer"]),
    ({"ml4ml_schema_version": 1}, ["field 'ml4ml_schema_version'", "older"]),
    ({"ml4ml_schema_version": 0}, ["field 'ml4ml_schema_version'", "older"]),
    ({"ml4ml_schema_version": 99}, ["field 'ml4ml_schema_version'", "newer", "upgrade"]),
    ({"ml4ml_schema_version": None}, ["field 'ml4ml_schema_version'", "no schema version"]),
    ({"ml4ml_float_dtype": "float16"}, ["field 'ml4ml_float_dtype'", "float16"]),
])
def test_bad_store_attributes_are_one_line_in_every_command(folder, attrs, needles):
    path = folder / "db.zarr"
    root = json.loads((path / "zarr.json").read_text())
    for key, value in attrs.items():
        if value is None:
            root["attributes"].pop(key)
        else:
            root["attributes"][key] = value
    (path / "zarr.json").write_text(json.dumps(root))
    before = digest(path)
    for args in (("probe", folder / "spec.toml"), ("train", folder / "spec.toml"),
                 ("measure", path), ("features", path, "--transform", "rotation", "-o",
                                     folder / "f.csv"), ("store", "check", path)):
        result = run(*args, *(["-q"] if args[0] in ("probe", "train", "measure") else []))
        if args[0] == "store":
            assert result.exit_code == 1 and all(n in result.output for n in needles[:1])
            continue
        one_line_error(result, str(path), *needles)
    assert digest(path) == before


def test_a_store_path_that_is_a_file(tmp_path):
    afile = tmp_path / "db.zarr"
    afile.write_text("not a store")
    (tmp_path / "spec.toml").write_text(SPEC)
    for args in (("probe", tmp_path / "spec.toml", "-q"), ("train", tmp_path / "spec.toml", "-q"),
                 ("measure", afile, "-q"), ("store", "check", afile)):
        result = run(*args)
        assert result.exit_code == 1 and "is a file, not a store folder" in result.output, args
    assert afile.read_text() == "not a store"


def test_outputs_into_missing_folders_and_unknown_names_list_what_exists(tmp_path):
    path = tmp_path / "ref.zarr"
    assert run("import-legacy", path, "--mid", "m1", "--results", golden.results("small1"),
               "--act", golden.act("small1")).exit_code == 0
    assert run("measure", path, "-q").exit_code == 0
    before = digest(path)
    one_line_error(run("features", path, "--transform", "rotation", "-o",
                       tmp_path / "nowhere" / "f.csv"), "nowhere/f.csv", "field '-o'",
                   "does not exist")
    one_line_error(run("features", path, "--transform", "scaling", "-o", tmp_path / "f.csv"),
                   "field '--transform'", "the store has: rotation")
    one_line_error(run("features", path, "--transform", "rotation", "--suite", "nope", "-o",
                       tmp_path / "f.csv"), "field '--suite'", "legacy")
    one_line_error(run("measure", path, "--transform", "scaling"), "field '--transform'",
                   "unknown transform 'scaling'; the store has: rotation")
    assert not (tmp_path / "nowhere").exists() and digest(path) == before
