"""A truncated, corrupt or deleted chunk of any group of a real store: ``store check`` names
it (group, variable, model ids) with the command that mends it, without a traceback;
``store repair`` then that command give back a store that checks clean and holds what the
original held."""

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from ml4ml import store
from ml4ml.cli import cli
from test_object_storage import SPEC as S3_SPEC

# the 6-model spec of the object-storage tests, in a local folder
SPEC = S3_SPEC.replace('name = "s3"', 'name = "damage"').replace('path = "STORE"',
                                                                 'path = "db.zarr"')
assert 'name = "damage"' in SPEC and 'path = "db.zarr"' in SPEC
MIDS = ["m001", "m002", "m003", "m004", "t001", "t002"]
# values that differ from run to run by nature: a duration, where or when a file was
# written, the stored assessor (a zip archive, which stamps its members' write times)
VOLATILE = {"train_seconds", "checkpoint", "written_at", "assessor"}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def built(tmp_path_factory, one_thread):
    folder = tmp_path_factory.mktemp("damage")
    (folder / "spec.toml").write_text(SPEC)
    result = run("run", folder / "spec.toml", "-q")
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def copy(built, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(built, folder)
    return folder / "spec.toml", folder / "db.zarr"


def truncate(file):
    data = file.read_bytes()
    file.write_bytes(data[:min(100, len(data) // 2)])


def corrupt(file):  # the frame header of a compressed chunk
    data = bytearray(file.read_bytes())
    data[:16] = b"\xde\xad\xbe\xef" * 4
    file.write_bytes(bytes(data))


def delete(file):
    file.unlink()


def chunk(path, group, name, index):
    file = Path(path, group, name, "c", *[str(i) for i in index])
    assert file.is_file(), file
    return file


def check(path):
    result = run("store", "check", path)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def load(path, group) -> xr.Dataset:
    return store.open_group(str(path), group).load()


def assert_same(a: xr.Dataset, b: xr.Dataset):
    assert sorted(a.data_vars) == sorted(b.data_vars)
    for name in a.variables:
        if name in VOLATILE:
            continue
        x, y = np.asarray(a[name].values), np.asarray(b[name].values)
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            assert np.array_equal(x.astype(object), y.astype(object)), name


CASES = [
    # group, variable, chunk index, damage, models it holds, state
    ("probes/digits/rotation", "prob", (1, 0, 0, 0), truncate, ["m002"], "unreadable"),
    ("probes/digits/rotation", "prediction", (3, 0, 0), corrupt, ["m004"], "unreadable"),
    ("probes/digits/rotation", "act", (2, 0, 0, 0, 0), delete, ["m003"], "missing"),
    ("probes/digits/rotation", "digest", (0,), corrupt, MIDS, "unreadable"),
    ("matrices/digits/rotation", "matrix", (4, 0, 0, 0, 0, 0), truncate, ["t001"],
     "unreadable"),
    ("matrices/digits/rotation", "matrix_subset", (5, 0, 0, 0, 0), delete, ["t002"],
     "missing"),
    ("measures/digits/rotation", "value", (0, 0, 0, 0, 0), corrupt, ["m001"], "unreadable"),
    ("measures/digits/rotation", "done", (0,), delete, MIDS, "missing"),
    ("models", "test_accuracy", (0,), truncate, MIDS, "unreadable"),
    ("models", "checkpoint_sha256", (0,), delete, MIDS, "missing"),
    ("labels/rotation", "label", (0, 0), corrupt, MIDS, "unreadable"),
    ("assess/rotation", "predicted", (0,), truncate, MIDS, "unreadable"),
]


@pytest.mark.parametrize("group, name, index, damage, held, state", CASES,
                         ids=[f"{c[0].split('/')[0]}-{c[1]}-{c[3].__name__}" for c in CASES])
def test_a_damaged_chunk_is_listed_repaired_and_redone(copy, built, group, name, index,
                                                       damage, held, state):
    spec, path = copy
    before = load(path, group)
    damage(chunk(path, group, name, index))
    code, out = check(path)
    said = ("cannot be read (truncated or corrupt: " if state == "unreadable" else
            "are missing (written once, now gone)")
    assert code == 1
    line = next(line for line in out.splitlines() if f"of '{name}' " in line)
    assert line.startswith(f"{path}: {group}: 1 chunk(s) of '{name}' {said}")
    assert f"holding model(s) {', '.join(held)} -> " in line, line
    others = {f"{g}:" for g in ("models", "probes", "matrices", "measures", "labels",
                                "assess")} - {group.split("/")[0] + ":"}
    assert not any(f"{path}: {g}" in out for g in others), out  # nothing else is blamed
    commands = re.findall(r"'(ml4ml [^']+)'", line.split(" -> ", 1)[1])
    repair = run("store", "repair", path)
    assert "Traceback" not in repair.output
    if group.startswith("assess"):  # written whole by its stage: nothing to clear
        assert repair.exit_code == 1 and commands[0].startswith("ml4ml assess")
    else:
        assert repair.exit_code == 0, repair.output
        assert commands[0] == f"ml4ml store repair {path}"
        commands = commands[1:]
        flag = "trained" if group == "models" else "done"
        if flag in load(path, group):
            flags = load(path, group)[flag]
            assert [str(m) for m in flags["mid"].values[~flags.values]] == held
    assert commands
    for command in commands:  # the mend, runnable as listed (the store records its spec)
        assert "PIPELINE" not in command and "SPEC" not in command, command
        args = shlex.split(command)[1:]
        result = run(*args, "-q") if args[0] in ("train", "probe", "measure", "assess") \
            else run(*args)
        assert result.exit_code == 0, (command, result.output)
    assert check(path) == (0, f"{path}: ok\n")
    assert_same(load(path, group), before)


def test_lost_model_ids_are_listed_by_row_and_left_for_a_rebuild(copy):
    _, path = copy
    truncate(chunk(path, "probes/digits/rotation", "mid", (0,)))
    code, out = check(path)
    assert code == 1 and "Traceback" not in out
    assert (f"{path}: probes/digits/rotation: 1 chunk(s) of 'mid' cannot be read (truncated "
            f"or corrupt: ") in out
    assert "holding the model ids of rows 0, 1, 2, 3, 4, 5 -> the group's layout or model " \
           "ids are lost: rebuild it" in out
    result = run("store", "repair", path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "left probes/digits/rotation: 1 chunk(s) of 'mid'" in result.output


def test_a_chunk_never_written_is_not_damage(copy):
    """Chunks that hold only the fill value are never written: no error column, a model
    not done yet. Neither is reported."""
    _, path = copy
    assert not Path(path, "probes/digits/rotation/error/c/0").exists()
    with store.writing(str(path)):
        store.clear_done(str(path), "probes/digits/rotation", ["m002"])
    delete(chunk(path, "probes/digits/rotation", "prob", (1, 0, 0, 0)))
    code, out = check(path)
    assert "chunk(s)" not in out
    assert "matrices/digits/rotation: 1 done row(s) were computed from other probe data" in out
