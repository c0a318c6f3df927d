"""``ml4ml remove-models``: models, and every row of theirs, out of every group; the other
models' rows bit for bit as they were; refusals that write nothing; a killed removal
finished by the next writer (issue 24, point 2). The fault-injection test at every write
is tests/test_crash.py's "remove" stage."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

import crash_harness
import tree
from ml4ml import dims, store
from ml4ml.cli import cli
from ml4ml.store.groups import read_group
from ml4ml.store.layout import committed_nodes


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Five trained, probed, measured, labelled and assessed CNN5s (crash_harness's spec
    and one more regular model), an expert's ratings of m002 and t001, and a model added
    from a file of the user's."""
    folder = crash_harness.fresh(tmp_path_factory.mktemp("remove") / "base",
                                 crash_harness.SPEC + crash_harness.ASSESS_MODELS + MORE)
    crash_harness.run_stages(folder, "tpmlae")
    from ml4ml.zoo.training import load_checkpoint

    model, _ = load_checkpoint(folder / "db.zarr.checkpoints" / "m001.pt")
    (folder / "mine").mkdir()
    torch.save(model.state_dict(), folder / "mine" / "a001.pt")
    assert run("add-models", folder / "db.zarr", folder / "mine" / "a001.pt", "--arch",
               "cnn5").exit_code == 0
    assert run("probe", folder / "crash.toml", "-q").exit_code == 0
    assert run("measure", folder / "db.zarr", "-q").exit_code == 0
    # labelled (unknown: no recipe) and judged with the others
    assert run("label", folder / "db.zarr", "--transform", "rotation", "--from",
               "recipe").exit_code == 0
    assert run("assess", folder / "db.zarr", "--transform", "rotation", "--repeats", "2",
               "--assessor", "decision_tree", "-q").exit_code == 0
    return folder


MORE = """
[[zoo.models]]
mid = "m003"
aug_range = 0
seed = 4
"""


def copy(base, tmp_path) -> Path:
    """A copy of the base folder whose models table names the copy's own checkpoints (as
    a store trained in place does)."""
    folder = tmp_path / "copy"
    shutil.copytree(base, folder)
    path = str(folder / "db.zarr")
    table = store.read_models(path)
    moved = [str(c).replace(str(base), str(folder)) for c in table["checkpoint"].values]
    with store.writing(path, "test"):
        store.update_models(path, xr.Dataset({"checkpoint": (dims.MID, np.array(
            moved, dtype=object))}, coords={dims.MID: table[dims.MID].values}))
    return folder


def groups(path) -> list[str]:
    nodes = committed_nodes(str(path)) or {}
    return sorted({n.rsplit("/", 1)[0] for n, m in nodes.items()
                   if m.get("node_type") == "array" and "/" in n})


def same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "fmM":  # NaN (NaT: a rating never given) equal to NaN
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))
    return a.shape == b.shape and bool(np.array_equal(a.astype(object), b.astype(object)))


def test_removed_models_leave_every_group_and_the_others_stay_bit_identical(base, tmp_path):
    folder = copy(base, tmp_path)
    path = folder / "db.zarr"
    before = {group: read_group(str(path), group) for group in groups(path)}
    assert {"models", "probes/digits/rotation", "matrices/digits/rotation",
            "measures/digits/rotation", "labels/rotation", "assess/rotation"} <= set(before)
    for group, ds in before.items():
        assert {"m002", "a001"} <= set(ds[dims.MID].values.tolist()), group

    result = run("remove-models", path, "m002", "a001", "--force")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        f"removed 2 model(s) (m002, a001) from 6 group(s), deleted 1 checkpoint file(s) "
        f"ml4ml wrote, kept 1 checkpoint file(s): {folder / 'mine' / 'a001.pt'} (not "
        f"written by ml4ml for this store); store {path}")
    # the assessment's protocol used m002's label: it is to be redone
    assert result.output.splitlines()[1] == (
        f"the assessment of 'rotation' used removed labelled models: run 'ml4ml assess "
        f"{path} --transform rotation' to redo it")

    checked = 0
    for group, old in before.items():
        new = read_group(str(path), group)
        kept = [m for m in old[dims.MID].values.tolist() if m not in ("m002", "a001")]
        assert new[dims.MID].values.tolist() == kept, group
        assert set(new.variables) == set(old.variables), group
        for name, var in old.variables.items():
            if dims.MID in var.dims:
                want = old[name].sel({dims.MID: kept})
                assert new[name].dims == want.dims
                assert same(new[name].values, want.values), f"{group}/{name}"
                checked += 1
            elif name != dims.LEVEL_MODULE:  # level_module: from the kept rows, below
                assert same(new[name].values, var.values), f"{group}/{name}"
        if dims.LEVEL_MODULE in old:  # every model left is a CNN5: conv2, conv3
            assert new[dims.LEVEL_MODULE].values.tolist()[1:3] == ["conv2_mean", "conv2_std"]
        expected_attrs = dict(old.attrs)
        if group == "assess/rotation":
            expected_attrs["models_removed"] = ["m002"]
        if group == "models":  # what was removed, for a rerun to say "already removed"
            expected_attrs["removed_models"] = ["a001", "m002"]
        assert new.attrs == expected_attrs, group
    assert checked > 60
    # the expert's other rating stays; plain xarray reads every group
    labels = xr.open_zarr(path, group="labels/rotation")
    assert labels["rating"].sel(rater="ann", mid="t001").values.item() == 0
    assert "m002" not in labels[dims.MID].values
    # the store is sound, with no trace of the removal
    check = run("store", "check", path)
    assert check.exit_code == 0 and check.output.strip() == f"{path}: ok", check.output
    assert not list(path.rglob("*.partial")) and not (path / ".ml4ml-removing").exists()
    # m002's checkpoint, written by ml4ml's train, is gone; the user's file stays
    checkpoints = folder / "db.zarr.checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["m001.pt", "m003.pt", "t001.pt",
                                                            "t002.pt"]
    assert (folder / "mine" / "a001.pt").is_file()
    # the stale assessment says so; assessing again clears it
    stale = run("assess", path, "--transform", "rotation", "--predict", "t001")
    assert stale.exit_code == 1
    assert "1 labelled model(s) it was made with were removed since: m002" in stale.output
    again = run("assess", path, "--transform", "rotation", "--repeats", "2", "--assessor",
                "decision_tree")
    assert again.exit_code == 0, again.output
    judged = run("assess", path, "--transform", "rotation", "--predict", "t001")
    assert judged.exit_code == 0, judged.output


def test_unknown_ids_and_models_kept_without_force_are_refused_writing_nothing(base,
                                                                               tmp_path):
    folder = copy(base, tmp_path)
    path = folder / "db.zarr"
    digest = tree.digest(folder)
    unknown = run("remove-models", path, "m001", "zz9", "m0002")
    assert unknown.exit_code == 1 and unknown.output.count("\n") == 1
    assert unknown.output == (f"error: {path}: field 'MID': unknown model id(s) zz9, m0002; "
                              "nothing was removed; the store has 6 model(s): a001, m001, "
                              "m002, m003, t001, t002\n")
    # m002 carries a rating and is in the spec; a001 (added, unrated) would go alone
    kept = run("remove-models", path, "m002", "a001")
    assert kept.exit_code == 1 and kept.output.count("\n") == 1
    assert kept.output == (
        f"error: {path}: field 'MID': nothing was removed: m002 has expert ratings "
        f"(labels/rotation by ann) that would go with it; m002 is in the store's spec "
        f"{folder / 'crash.toml'}: 'ml4ml run' would train (or add) it again (pass --force "
        f"to remove them all the same, or take them out of the spec first)\n")
    assert tree.digest(folder) == digest
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        digest = tree.digest(folder)
        held = run("remove-models", path, "a001")
        assert held.exit_code == 1 and held.output.count("\n") == 1
        assert f"another process is writing this store: pid {holder.pid}" in held.output
        assert tree.digest(folder) == digest
    finally:
        holder.kill()
        holder.wait()
    # an added model nobody rated goes without --force; its file (the user's) stays
    alone = run("remove-models", path, "a001")
    assert alone.exit_code == 0, alone.output
    assert "a001" not in store.model_ids(path) and (folder / "mine" / "a001.pt").is_file()


HOLD = """
import sys
from ml4ml import store
with store.writing(sys.argv[1], "holder-test"):
    print("holding", flush=True)
    sys.stdin.read()
"""


def test_a_killed_removal_is_finished_by_the_next_writer_and_readers_see_whole_groups(
        base, tmp_path):
    folder = copy(base, tmp_path)
    path = folder / "db.zarr"
    probes_before = read_group(str(path), "probes/digits/rotation")
    env = {**os.environ, "ML4ML_FAULT_AFTER_WRITES": "40", "PYTHONPATH": os.getcwd()}
    killed = subprocess.run([sys.executable, "-m", "ml4ml", "remove-models", str(path),
                             "m001", "--force"], env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL
    assert (path / ".ml4ml-removing").exists()
    # a reader meanwhile sees each group whole: the old rows or the new, never a mix
    probes = read_group(str(path), "probes/digits/rotation")
    mids = probes[dims.MID].values.tolist()
    old = probes_before.sel({dims.MID: mids})
    for name in ("act", "prob", "done", "digest", "layer_name"):
        assert same(probes[name].values, old[name].values), name
    check = run("store", "check", path)
    assert check.exit_code == 1
    assert ("/: the removal of model(s) m001 was interrupted" in check.output
            and f"run 'ml4ml remove-models {path} m001' (or any command that writes the "
                "store) to finish it" in check.output)
    # any writer finishes it: here the measure stage
    assert run("measure", path, "-q").exit_code == 0
    assert not (path / ".ml4ml-removing").exists()
    for group in groups(path):
        ids = read_group(str(path), group)[dims.MID].values.tolist()
        assert "m001" not in ids and "t001" in ids, group
    assert run("store", "check", path).exit_code == 0
    # the same command again: nothing left to do, said so
    again = run("remove-models", path, "m001", "--force")
    assert again.exit_code == 0, again.output
    assert again.output.startswith("removed 0 model(s) from 0 group(s), m001 already removed "
                                   "(by an earlier run, or an interrupted one finished now)")


def test_rerunning_a_killed_removal_finishes_it_and_says_so(base, tmp_path):
    folder = copy(base, tmp_path)
    path = folder / "db.zarr"
    env = {**os.environ, "ML4ML_FAULT_AFTER_WRITES": "5", "PYTHONPATH": os.getcwd()}
    killed = subprocess.run([sys.executable, "-m", "ml4ml", "remove-models", str(path),
                             "a001"], env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL
    again = run("remove-models", path, "a001")
    assert again.exit_code == 0, again.output
    assert ("removed 0 model(s) from 0 group(s), a001 already removed (by an earlier run, or "
            "an interrupted one finished now)") in again.output
    assert "a001" not in store.model_ids(path)
    assert run("store", "check", path).exit_code == 0
