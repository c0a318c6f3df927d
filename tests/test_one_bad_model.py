"""One bad model never stops the others: `ml4ml probe`, `measure`, `train` and `run` as a
user runs them (processes of their own), in process and on a local dask cluster.

A bad model among good ones is named once, with its reason, in the stage's summary line;
every other model is finished and written; the exit status is 1; a rerun retries only the
bad one; and nothing of dask's reaches the terminal (the log file beside the store keeps
it), in a failed run or a successful one.
"""

import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ml4ml import dims, store
from ml4ml.cli import cli
from ml4ml.probe.responses import forward_sizes
from badmodels import write_badnets
from processes import ml4ml

SPEC = """
name = "onebad"
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
[[zoo.models]]
mid = "m003"
seed = 2
"""

# a registered measure that raises on the matrices of a model whose responses never change
FLAT_MEASURE = '''
import numpy as np

from ml4ml.measure import register_measure


def spread(windows):
    if not np.nan_to_num(windows).any():
        raise ValueError("every matrix of this model is zero")
    return np.nanstd(windows, axis=(1, 2))


register_measure("spread", spread)
'''

NOISE = ("Traceback", "Compute Failed", "CancelledError", "still alive", "CommClosedError",
         "distributed.", "heartbeat", "a warning from the forward")


def quiet_terminal(result) -> str:
    """stdout + stderr of a finished process, checked free of dask's messages."""
    output = result.stdout + result.stderr
    for noise in NOISE:
        assert noise not in output, (noise, output)
    return output


def naming(output: str, mid: str) -> list[str]:
    return [line for line in output.splitlines() if mid in line]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three trained CNN5 models and the bad architectures' module, never changed."""
    folder = tmp_path_factory.mktemp("onebad")
    (folder / "spec.toml").write_text(SPEC)
    write_badnets(folder)
    (folder / "flat_measure.py").write_text(FLAT_MEASURE)
    result = CliRunner().invoke(cli, ["train", str(folder / "spec.toml"), "-q"])
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def folder(trained, tmp_path):
    """A copy of the trained store (its table points at the module's checkpoints)."""
    for name in ("spec.toml", "badnets.py", "flat_measure.py", "db.zarr"):
        source = trained / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    return tmp_path


def add_model(folder, monkeypatch, mid: str, arch: str, weights) -> None:
    torch.save(weights, folder / f"{mid}.pt")
    monkeypatch.chdir(folder)  # module: architectures come from the current folder
    result = CliRunner().invoke(cli, ["add-models", str(folder / "db.zarr"),
                                      str(folder / f"{mid}.pt"), "--arch", arch, "--mid", mid])
    assert result.exit_code == 0 and "1 added" in result.output, result.output
    if arch.startswith("module:"):  # the probe imports module: code only when its spec
        with (folder / "spec.toml").open("a") as spec:  # names it, never as a store does
            spec.write(f'[[zoo.models]]\nmid = "{mid}"\ncheckpoint = "{mid}.pt"\n'
                       f'arch = "{arch}"\n')


def state_dict(folder, name: str) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("badnets_for_weights",
                                                  folder / "badnets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    return getattr(module, name)().state_dict()


def probe_digests(path) -> dict:
    probes = store.open_probes(str(path), "digits", "rotation")
    return {str(m): str(d) for m, d, done in zip(probes[dims.MID].values,
                                                 probes[store.DIGEST].values,
                                                 probes[dims.DONE].values) if done}


@pytest.mark.parametrize("kind, workers", [
    ("raises", None), ("raises", 2), ("nan", 2), ("replaced", None), ("dies", 2)])
def test_probe_finishes_every_other_model_and_names_the_bad_one_once(folder, monkeypatch,
                                                                      kind, workers):
    if kind == "replaced":  # a state dict replaced by other bytes after it was added
        from ml4ml.zoo.architectures import build_model

        add_model(folder, monkeypatch, "x01", "cnn5",
                  build_model("cnn5", num_classes=10, in_channels=1, image_size=28).state_dict())
        torch.save(build_model("cnn5", num_classes=10, in_channels=1, image_size=28).state_dict(),
                   folder / "x01.pt")
        reason = "sha256"
    else:
        arch = {"raises": "Raises", "nan": "NaNs", "dies": "Dies"}[kind]
        add_model(folder, monkeypatch, "x01", f"module:badnets:{arch}",
                  state_dict(folder, arch))
        # every forward has the probe's width: 16 samples x 5 angles padded to one batch
        width = forward_sizes(n_samples=16, n_params=5)[0]
        reason = {"raises": f"(RuntimeError: exploded on a batch of {width})",
                  "nan": "'prob' values are NaN or infinite",
                  "dies": "the worker process running it died"}[kind]
    extra = ["--workers", str(workers)] if workers else []
    # a task whose worker died is not tried on another (the default tries 3 more workers)
    env = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"} if kind == "dies" else None
    result = ml4ml("probe", "spec.toml", *extra, cwd=folder, env=env)  # with progress lines

    assert result.returncode == 1, result.stdout + result.stderr
    output = quiet_terminal(result)
    (line,) = naming(output, "x01")  # named once, in the summary, with its reason
    assert line.startswith("probe: 3 probed, 0 already, 1 failed: x01 (") and reason in line, \
        line
    assert "1 model(s) failed in probe; the others are done" in result.stderr
    probes = store.open_probes(str(folder / "db.zarr"), "digits", "rotation")
    assert store.done_mids(probes) == ["m001", "m002", "m003"]
    assert reason.strip("()") in str(probes[store.ERROR].sel({dims.MID: "x01"}).values)
    log = (folder / "db.zarr.log").read_text()
    assert "probe: model x01 failed on digits/rotation" in log
    assert ("KilledWorker" if kind == "dies" else "Traceback") in log
    if kind == "raises":  # what its forward warned and logged went to the log only
        assert "a warning from the forward of Raises" in log
        assert "Failed to communicate with scheduler during heartbeat" in log

    if kind == "dies":
        return  # its rerun would be the same again
    # a rerun retries x01 only: the others' probes stay as they are
    before = probe_digests(folder / "db.zarr")
    again = ml4ml("probe", "spec.toml", "-q", cwd=folder)
    assert again.returncode == 1
    (line,) = naming(quiet_terminal(again), "x01")
    assert line.startswith("probe: 0 probed, 3 already, 1 failed: x01 (")
    assert probe_digests(folder / "db.zarr") == before


def test_a_replaced_checkpoint_put_back_is_probed_by_the_rerun(folder, monkeypatch):
    from ml4ml.zoo.architectures import build_model

    weights = build_model("cnn5", num_classes=10, in_channels=1, image_size=28).state_dict()
    add_model(folder, monkeypatch, "x01", "cnn5", weights)
    good = (folder / "x01.pt").read_bytes()
    (folder / "x01.pt").write_bytes(good[: len(good) // 2])
    missing = ml4ml("probe", "spec.toml", "-q", "--log", "logs/probe.log", cwd=folder)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr == "error: logs/probe.log: field '--log': folder 'logs' does not " \
                             "exist (create it first, or write somewhere else)\n"
    result = ml4ml("probe", "spec.toml", "-q", "--log", "probe.log", cwd=folder)
    assert result.returncode == 1 and "1 failed: x01 (" in result.stdout
    assert "probe: model x01 failed" in (folder / "probe.log").read_text()
    assert not (folder / "db.zarr.log").exists()
    (folder / "x01.pt").write_bytes(good)
    again = ml4ml("probe", "spec.toml", "-q", cwd=folder)
    assert again.returncode == 0, again.stderr
    assert "probe: 1 probed, 3 already, in" in again.stdout and again.stderr == ""


@pytest.mark.parametrize("workers", [None, 2])
def test_measure_finishes_every_other_model_when_a_measure_raises_on_one(folder, monkeypatch,
                                                                        workers):
    add_model(folder, monkeypatch, "x01", "module:badnets:Flat", state_dict(folder, "Flat"))
    assert ml4ml("probe", "spec.toml", "-q", cwd=folder).returncode == 0
    extra = ["--workers", str(workers)] if workers else []
    result = ml4ml("measure", "db.zarr", "--plugin", "flat_measure.py", *extra, cwd=folder)

    assert result.returncode == 1, result.stdout + result.stderr
    output = quiet_terminal(result)
    (line,) = naming(output, "x01")
    assert line.startswith("measure: digits/rotation: measured 3 model(s), 0 already "
                           "measured, 1 failed: x01 (")
    assert "registered measure 'spread' raised ValueError: every matrix of this model is " \
           "zero" in line
    assert "1 model(s) failed in measure; the others are done" in result.stderr
    path = str(folder / "db.zarr")
    measures = store.open_group(path, "measures/digits/rotation").load()
    assert store.done_mids(measures) == ["m001", "m002", "m003"]
    assert not bool(measures[dims.DONE].sel({dims.MID: "x01"}))
    spread = measures[dims.VALUE].sel({dims.MEASURE: "spread", dims.MID: "m001"})
    assert np.isfinite(spread.sel(split="all")).all()
    assert "measure: model x01 failed on digits/rotation" in (folder / "db.zarr.log").read_text()

    # the rerun retries x01 only
    before = measures[dims.VALUE].sel({dims.MID: ["m001", "m002", "m003"]}).values
    again = ml4ml("measure", "db.zarr", "--plugin", "flat_measure.py", "-q", cwd=folder)
    assert again.returncode == 1
    (line,) = naming(quiet_terminal(again), "x01")
    assert "measured 0 model(s), 3 already measured, 1 failed: x01 (" in line
    after = store.open_group(path, "measures/digits/rotation")[dims.VALUE].sel(
        {dims.MID: ["m001", "m002", "m003"]}).values
    np.testing.assert_array_equal(after, before)


def test_measure_fails_a_model_whose_probe_data_are_not_finite(folder):
    """Probe data damaged after they were written (NaN in one model's activations)."""
    import zarr

    path = folder / "db.zarr"
    assert ml4ml("probe", "spec.toml", "-q", cwd=folder).returncode == 0
    act = zarr.open_group(str(path / "probes" / "digits" / "rotation"), mode="r+")["act"]
    row = act[1]
    row[0, 0, 0, 0] = np.nan
    act[1] = row  # m002
    result = ml4ml("measure", "db.zarr", cwd=folder)
    assert result.returncode == 1
    (line,) = naming(quiet_terminal(result), "m002")
    assert "measured 2 model(s), 0 already measured, 1 failed: m002 (" in line
    assert "its probe data hold 1 NaN or infinite 'act' values" in line
    measures = store.open_group(str(path), "measures/digits/rotation")
    assert store.done_mids(measures) == ["m001", "m003"]


def test_train_finishes_every_other_model_when_one_recipe_raises(folder, monkeypatch):
    spec = folder / "spec.toml"
    spec.write_text(SPEC + '[[zoo.models]]\nmid = "m004"\narch = "module:badnets:Raises"\n'
                           '[[zoo.models]]\nmid = "m005"\nseed = 5\n')
    result = ml4ml("train", "spec.toml", "--workers", "2", cwd=folder)
    assert result.returncode == 1
    (line,) = naming(quiet_terminal(result), "m004")
    assert line.startswith("train: 0 added, 1 trained, 3 already, 1 failed: m004 "
                           "(RuntimeError: exploded on a batch of 64)"), line
    table = store.read_models(str(folder / "db.zarr"))
    trained = dict(zip(table[dims.MID].values.tolist(), table["trained"].values.tolist()))
    assert trained == {"m001": True, "m002": True, "m003": True, "m004": False, "m005": True}
    assert "exploded" in str(table["train_error"].sel({dims.MID: "m004"}).values)


def test_a_successful_run_on_a_local_cluster_prints_nothing_of_dask(folder):
    result = ml4ml("run", "spec.toml", "--workers", "2", cwd=folder, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    quiet_terminal(result)
    assert "probe: 3 probed, 0 already" in result.stdout
    assert "measure: digits/rotation: measured 3 model(s)" in result.stdout
