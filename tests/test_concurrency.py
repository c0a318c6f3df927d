"""Real processes at once on one store: one writer works, others are refused, readers read."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from ml4ml import store

SPEC = """
name = "busy"
[store]
path = "db.zarr"
[suites.digits]
n_samples = 240
[transforms.rotation]
grid = [-15, 15, 31]
[zoo]
arch = "cnn5"
epochs = 1
n_train = 64
[[zoo.grids]]
seed = [0, 1, 2, 3, 4, 5]
"""


def ml4ml(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "ml4ml", *[str(a) for a in args]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def finished(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def lock_pid(path):
    """The pid a writer wrote into the store's lock file once it held the lock (it empties
    the file before letting go). Read without taking the lock, so never in anyone's way."""
    try:
        return json.loads((Path(path) / ".ml4ml-writer").read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None


def _state(pid) -> str:
    """The process's state letter from /proc (T: stopped, Z: exited), '' once reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return ""


def paused_holding_the_lock(process, path) -> bool:
    """Stop ``process`` and its dask workers (SIGSTOP to its process group: it was started
    with ``start_new_session=True``) at a moment it holds the store's writer lock. True once
    it is stopped with the lock held; False if it finished before it could be caught so.

    Decided by what the process did (the lock file names it, /proc says it is stopped), not
    by how fast anything ran. ``resume(process)`` lets the whole run go on.
    """
    while process.poll() is None:
        if lock_pid(path) == process.pid:
            os.killpg(process.pid, signal.SIGSTOP)
            while _state(process.pid) not in ("T", "t", "Z", ""):
                time.sleep(0.01)
            if _state(process.pid) in ("T", "t") and lock_pid(path) == process.pid:
                return True
            resume(process)  # it let go just before it stopped
        time.sleep(0.02)
    return False


def resume(process):
    os.killpg(process.pid, signal.SIGCONT)


class Reader(threading.Thread):
    """Reads a group over and over as any user would; records every inconsistency seen."""

    def __init__(self, path, group):
        super().__init__(daemon=True)
        self.path, self.group = path, group
        self.reads, self.problems, self.done_seen, self.reads_after_done = 0, [], 0, 0
        self.stop = threading.Event()

    def until(self, condition):
        """Go on reading until ``condition(self)`` holds; then stop."""
        while self.is_alive() and not condition(self):
            time.sleep(0.05)
        self.stop.set()
        self.join(60)
        assert condition(self), (self.reads, self.done_seen, self.problems)

    def run(self):
        while not self.stop.is_set():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = xr.open_zarr(self.path, group=self.group)
            except Exception:  # the group is not committed yet
                time.sleep(0.05)
                continue
            mids = [str(m) for m in ds["mid"].values]
            if len(set(mids)) != len(mids):
                self.problems.append(f"duplicated rows {mids}")
            done = np.asarray(ds["done"].values, dtype=bool)
            for name in ("confidence", "value"):
                if name in ds and done.any():
                    values = ds[name].isel(mid=np.flatnonzero(done)).values
                    if name == "confidence" and not np.isfinite(values).all():
                        self.problems.append(f"torn row: a done model's {name} holds NaN")
            if "prediction" in ds and done.any():
                if (ds["prediction"].isel(mid=np.flatnonzero(done)).values < 0).any():
                    self.problems.append("torn row: a done model's prediction reads -1")
            self.done_seen = max(self.done_seen, int(done.sum()))
            self.reads_after_done += bool(done.size and done.all())
            self.reads += 1


def test_one_writer_at_a_time_while_readers_read(tmp_path):
    (tmp_path / "spec.toml").write_text(SPEC)
    spec, path = tmp_path / "spec.toml", str(tmp_path / "db.zarr")
    trainer = ml4ml("train", spec, "-q", cwd=tmp_path, start_new_session=True)
    paused = paused_holding_the_lock(trainer, path)
    second = finished(ml4ml("train", spec, "-q", cwd=tmp_path))
    if paused:
        resume(trainer)
    first = finished(trainer)
    assert first[0] == 0 and first[1].startswith("train: 0 added, 6 trained, 0 already"), first
    if paused:  # the second started while the first held the lock: refused at once, naming it
        code, out, err = second
        assert code == 1 and out == "", second
        assert f"another process is writing this store: pid {trainer.pid} on " in err
        assert "'ml4ml train" in err and "Traceback" not in err
    else:  # the first was done before it could be caught: the second found the zoo trained
        assert second[0] == 0 and second[1].startswith("train: 0 added, 0 trained, 6 already"), second
    table = store.read_models(path)
    assert table.mid.values.tolist() == [f"m{i:03d}" for i in range(1, 7)]
    assert table.trained.values.all()

    reader = Reader(path, "probes/digits/rotation")
    reader.start()
    prober = ml4ml("probe", spec, "--workers", "2", "-q", cwd=tmp_path, start_new_session=True)
    paused = paused_holding_the_lock(prober, path)
    # while it holds the lock (its workers writing their own rows): a second prober and a
    # measurer are refused at once, and nothing they do reaches the store
    others = [ml4ml("probe", spec, "-q", cwd=tmp_path)]
    if paused:
        others.append(ml4ml("measure", path, "-q"))
    others = [finished(other) for other in others]
    if paused:
        resume(prober)
    code, out, err = finished(prober)
    assert code == 0, err
    assert "probe: 6 probed, 0 already," in out
    if paused:
        for code, out, err in others:
            assert code == 1 and out == "" and "Traceback" not in err
            assert f"another process is writing this store: pid {prober.pid} on " in err
    else:  # the prober was done before it could be caught: the second found nothing to do
        code, out, err = others[0]
        assert code == 0 and "probe: 0 probed, 6 already," in out, err
    # the reader goes on until it has read the finished group a few times
    reader.until(lambda r: r.done_seen == 6 and r.reads_after_done > 3)
    assert reader.problems == []

    reader = Reader(path, "measures/digits/rotation")
    reader.start()
    code, out, err = finished(ml4ml("measure", path, "-q"))
    reader.stop.set()
    reader.join(30)
    assert code == 0 and "measured 6 model(s)" in out, err
    assert reader.problems == []
    ds = store.open_group(path, "measures/digits/rotation")
    assert ds.mid.values.tolist() == [f"m{i:03d}" for i in range(1, 7)]
    assert bool(ds.done.all()) and np.isfinite(ds.value.sel(split="all", interval=0,
                                                             measure="mean").values).all()
    from ml4ml.store.check import check_store

    assert check_store(path) == []
