"""`ml4ml probe/measure --scheduler tcp://...` against a `dask scheduler` and two
`dask worker` processes started as a user would start them by hand (docs/scale-out.md)."""

import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from ml4ml import dims, store
import docblocks
from badmodels import write_badnets
from processes import ml4ml

SPEC = """
name = "existing"
[store]
path = "db.zarr"
[suites.digits]
n_samples = 40
[transforms.rotation]
grid = [-10, 10, 5]
[zoo]
arch = "cnn5"
epochs = 1
n_train = 96
batch_size = 32
augmentation = "rotation"
[[zoo.grids]]
aug_range = [0, 20]
seed = [0, 1]
"""



SCALE_OUT = "test_existing_cluster.py::test_the_scale_out_example_runs_on_processes_started_by_hand"
# docs/scale-out.md: two `dask ... &` lines, then the ml4ml commands
DASK_LINES = [line for line in docblocks.command_lines(docblocks.marked(SCALE_OUT)[0])
              if line.startswith("dask ")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def scheduler(tmp_path):
    """tcp://127.0.0.1:PORT of a `dask scheduler` with two single-thread `dask worker`s."""
    # `dask scheduler` / `dask worker` as a user types them, from this interpreter's dask
    # (not whichever `dask` is first on PATH)
    dask_cli = [sys.executable, "-m", "dask"]
    address = f"tcp://127.0.0.1:{free_port()}"
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    port = address.rsplit(":", 1)[1]
    # the scheduler and the workers as docs/scale-out.md starts them, on a free port, with
    # no dashboard (two test runs at once would share its port)
    scheduler_line, worker_line = [docblocks.argv(line.rstrip(" &")) for line in DASK_LINES]
    assert scheduler_line[:2] == ["dask", "scheduler"] and worker_line[:2] == ["dask", "worker"]
    scheduler_args = [port if word == "8786" else word for word in scheduler_line[1:]]
    worker_args = [address if word == "tcp://127.0.0.1:8786" else word for word in worker_line[1:]]
    processes = [subprocess.Popen([*dask_cli, *scheduler_args, "--host", "127.0.0.1",
                                   "--no-dashboard"],
                                  stdout=open(logs / "scheduler.log", "w"),
                                  stderr=subprocess.STDOUT)]
    processes += [subprocess.Popen([*dask_cli, *worker_args, "--no-dashboard"],
                                   stdout=open(logs / "workers.log", "w"),
                                   stderr=subprocess.STDOUT)]
    try:
        from distributed import Client

        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout="5s") as client:
                    client.wait_for_workers(2, timeout=60)
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        for p in processes[::-1]:
            p.terminate()
        for p in processes[::-1]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_the_scale_out_example_runs_on_processes_started_by_hand(tmp_path, scheduler):
    """docs/scale-out.md as written (the scheduler's address, the spec and the store
    replaced): probe and measure on the workers equal a serial run."""
    (block,) = docblocks.marked(
        "test_existing_cluster.py::test_the_scale_out_example_runs_on_processes_started_by_hand")
    steps = [docblocks.argv(line.replace("tcp://127.0.0.1:8786", scheduler)
                            .replace("pipelines/demo-digits.toml", "spec.toml")
                            .replace("stores/demo-digits.zarr", "db.zarr"))
             for line in docblocks.command_lines(block) if line.startswith("ml4ml ")]
    assert [words[1] for words in steps] == ["probe", "measure"]
    assert all(words[-2:] == ["--scheduler", scheduler] for words in steps)
    serial, cluster = tmp_path / "serial", tmp_path / "cluster"
    serial.mkdir()
    (serial / "spec.toml").write_text(SPEC)
    result = ml4ml("train", "spec.toml", "-q", cwd=serial)
    assert result.returncode == 0, result.stderr
    shutil.copytree(serial, cluster)  # the same checkpoints: only the scheduler differs

    for folder, cluster_run in ((serial, False), (cluster, True)):
        words = steps[0] if cluster_run else steps[0][:-2]
        result = ml4ml(*words[1:], cwd=folder)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "probe: 4 probed, 0 already," in result.stdout, result.stdout
        words = steps[1] if cluster_run else steps[1][:-2]
        result = ml4ml(*words[1:], cwd=folder)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "measured 4 model(s)" in result.stdout, result.stdout

    # the workers really did the work: the scheduler knows the tasks they ran
    from distributed import Client

    with Client(scheduler, timeout="10s") as client:
        ran = client.run_on_scheduler(
            lambda dask_scheduler: sorted({str(k) for k in dask_scheduler.task_prefixes}))
    assert "probe" in ran, " ".join(ran)  # probe_one tasks
    assert "write" in ran, " ".join(ran)  # the measure stage's row writes

    a = store.open_probes(str(serial / "db.zarr"), "digits", "rotation").load()
    b = store.open_probes(str(cluster / "db.zarr"), "digits", "rotation").load()
    assert a[dims.DONE].values.all() and b[dims.DONE].values.all()
    for name in (dims.PROB, dims.ACT, dims.PREDICTION, dims.CONFIDENCE, store.DIGEST):
        assert np.array_equal(a[name].values, b[name].values), name
    ma = store.open_group(str(serial / "db.zarr"), "measures/digits/rotation").load()
    mb = store.open_group(str(cluster / "db.zarr"), "measures/digits/rotation").load()
    np.testing.assert_allclose(mb["value"].values, ma["value"].values, rtol=1e-12, atol=0,
                               equal_nan=True)
    assert np.isfinite(ma["value"].values).mean() > 0.5


def test_one_bad_model_on_a_scheduler_started_by_hand_fails_alone(tmp_path, scheduler,
                                                                  monkeypatch):
    import torch
    from click.testing import CliRunner

    from ml4ml.cli import cli

    (tmp_path / "spec.toml").write_text(SPEC)
    write_badnets(tmp_path)
    assert ml4ml("train", "spec.toml", "-q", cwd=tmp_path).returncode == 0
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    from badnets import Raises

    torch.save(Raises().state_dict(), tmp_path / "x01.pt")
    added = CliRunner().invoke(cli, ["add-models", "db.zarr", "x01.pt", "--arch",
                                     "module:badnets:Raises"])
    assert added.exit_code == 0, added.output
    with (tmp_path / "spec.toml").open("a") as spec:  # module: code only from the spec
        spec.write('[[zoo.models]]\nmid = "x01"\ncheckpoint = "x01.pt"\n'
                   'arch = "module:badnets:Raises"\n')

    result = ml4ml("probe", "spec.toml", "--scheduler", scheduler, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    output = result.stdout + result.stderr
    for noise in ("Traceback", "Compute Failed", "CancelledError", "distributed."):
        assert noise not in output, (noise, output)
    (line,) = [line for line in output.splitlines() if "x01" in line]
    assert line.startswith("probe: 4 probed, 0 already, 1 failed: x01 (RuntimeError: "
                           "exploded on a batch of"), line
    result = ml4ml("measure", "db.zarr", "--scheduler", scheduler, "-q", cwd=tmp_path)
    assert result.returncode == 0 and "measured 4 model(s)" in result.stdout, result.stderr
    measures = store.open_group(str(tmp_path / "db.zarr"), "measures/digits/rotation")
    assert len(store.done_mids(measures)) == 4 and "x01" not in store.done_mids(measures)
