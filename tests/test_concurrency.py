"""Real processes at once on one store: one writer works, others are refused, readers read."""

import subprocess
import sys
import threading
import time
import warnings

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


class Reader(threading.Thread):
    """Reads a group over and over as any user would; records every inconsistency seen."""

    def __init__(self, path, group):
        super().__init__(daemon=True)
        self.path, self.group = path, group
        self.reads, self.problems, self.done_seen = 0, [], 0
        self.stop = threading.Event()

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
            self.reads += 1


def test_one_writer_at_a_time_while_readers_read(tmp_path):
    (tmp_path / "spec.toml").write_text(SPEC)
    spec, path = tmp_path / "spec.toml", str(tmp_path / "db.zarr")
    trainers = [ml4ml("train", spec, "-q", cwd=tmp_path) for _ in range(2)]
    results = [finished(t) for t in trainers]
    # exactly one trained the zoo; the other was refused at once, naming it
    assert sorted(code for code, _, _ in results) == [0, 1], results
    code, _, err = next(r for r in results if r[0] == 1)
    assert "another process is writing this store: pid" in err and "'ml4ml train" in err
    table = store.read_models(path)
    assert table.mid.values.tolist() == [f"m{i:03d}" for i in range(1, 7)]
    assert table.trained.values.all()

    reader = Reader(path, "probes/digits/rotation")
    reader.start()
    prober = ml4ml("probe", spec, "--workers", "2", "-q", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while store.holder(path) is None and prober.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    # while it probes (its workers writing their own rows): a second prober and a
    # measurer are refused at once, and nothing they do reaches the store
    refused = [finished(ml4ml("probe", spec, "-q", cwd=tmp_path)),
               finished(ml4ml("measure", path, "-q"))]
    still_probing = prober.poll() is None
    code, out, err = finished(prober)
    reader.stop.set()
    reader.join(30)
    assert code == 0, err
    assert "probed 6 (model, suite, transform), 0 already done" in out
    assert still_probing  # the refusals happened while the prober worked
    for code, _, err in refused:
        assert code == 1 and "another process is writing this store" in err
        assert "Traceback" not in err
    assert reader.problems == [] and reader.reads > 3 and reader.done_seen == 6

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
