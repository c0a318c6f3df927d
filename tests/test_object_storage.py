"""A store on object storage: a real S3-compatible server (moto's) on 127.0.0.1, reached
through s3fs with nothing but the standard AWS environment settings."""

import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from ml4ml import store
from ml4ml.cli import cli

BUCKET = "ml4ml-test"
SPEC = """
name = "s3"
[store]
path = "STORE"
[suites.digits]
n_samples = 30
[transforms.rotation]
grid = [-10, 10, 5]
[zoo]
arch = "cnn5"
epochs = 1
n_train = 96
augmentation = "rotation"
[[zoo.grids]]
aug_range = [0, 30]
seed = [0, 1]
[[zoo.models]]
mid = "t001"
holdout = true
aug_range = 30
[[zoo.models]]
mid = "t002"
holdout = true
[assess]
repeats = 2
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """moto's S3 server in a process of its own (so it does not share our GIL)."""
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("moto's server did not start") from None
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(10)
    log.close()


@pytest.fixture
def s3(server, monkeypatch, request):
    """A fresh bucket prefix, and the standard AWS settings in the environment only."""
    import boto3

    for name, value in (("AWS_ENDPOINT_URL", server), ("AWS_ACCESS_KEY_ID", "testing"),
                        ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "us-east-1"),
                        ("ML4ML_LOCK_STALE_AFTER_S", "3")):
        monkeypatch.setenv(name, value)
    client = boto3.client("s3")
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}/{request.node.name}"


def run(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def test_every_stage_works_on_a_store_in_s3(s3, tmp_path, monkeypatch):
    url = f"{s3}/db.zarr"
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace("STORE", url))
    monkeypatch.chdir(tmp_path)
    result = run("run", spec, "-q")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "train: 0 added, 6 trained" in out and "probe: 6 probed" in out and "measured 6 model(s)" in out
    assert f"store:    {url} (6 models, 6 measured)" in out
    csv = tmp_path / "db.zarr.rotation.paper80.csv"
    index = tmp_path / "db.zarr.report" / "index.html"
    assert f"features: {csv}" in out and f"report:   {index}" in out
    assert csv.is_file() and index.is_file()
    # every model's judgement, here too (the store is in the bucket)
    judgements = tmp_path / "db.zarr.rotation.judgements.csv"
    assert f"judgements: {judgements}  (" in out
    assert judgements.read_text().splitlines()[0].startswith("mid,label,oof_prediction,")
    assert len(judgements.read_text().splitlines()) == 1 + 6
    # checkpoints beside the store, in the bucket
    import s3fs

    fs = s3fs.S3FileSystem()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3}/db.zarr.checkpoints"))
    assert names == ["m001.pt", "m002.pt", "m003.pt", "m004.pt", "t001.pt", "t002.pt"]
    # users read it with plain xarray, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probes = xr.open_zarr(url, group="probes/digits/rotation")
        tree = xr.open_datatree(url, engine="zarr")
    assert bool(probes["done"].all()) and "assess" in tree.children
    assert run("store", "check", url).output == f"{url}: ok\n"
    again = run("run", spec, "-q")
    assert "train: 0 added, 0 trained, 6 already" in again.output
    assert "probe: 0 probed, 6 already" in again.output


def test_cluster_region_writes_into_s3_equal_a_serial_run(s3, tmp_path, monkeypatch):
    serial, parallel = f"{s3}/serial.zarr", f"{s3}/parallel.zarr"
    monkeypatch.chdir(tmp_path)  # the logs of a store at a URL go to the current folder
    for name, url in (("serial", serial), ("parallel", parallel)):
        (tmp_path / f"{name}.toml").write_text(SPEC.replace("STORE", url))
        assert run("train", tmp_path / f"{name}.toml", "-q").exit_code == 0
    assert run("probe", tmp_path / "serial.toml", "-q").exit_code == 0
    result = run("probe", tmp_path / "parallel.toml", "--workers", "2", "-q")
    assert result.exit_code == 0, result.output
    assert run("measure", serial, "-q").exit_code == 0
    result = run("measure", parallel, "--workers", "2", "-q")
    assert result.exit_code == 0, result.output
    for group in ("probes/digits/rotation", "measures/digits/rotation"):
        a = store.open_group(serial, group).load()
        b = store.open_group(parallel, group).load()
        for name in a.data_vars:
            if a[name].dtype.kind == "f":
                np.testing.assert_allclose(b[name].values, a[name].values, rtol=1e-5,
                                           atol=1e-6, equal_nan=True, err_msg=name)
            elif name not in ("source_sha256",):
                assert np.array_equal(b[name].values, a[name].values), name


HOLDER = """
import sys, time
from ml4ml import store
with store.writing(sys.argv[1], "holder-test"):
    print("holding", flush=True)
    time.sleep(120)
"""


def test_one_writer_holds_in_s3_too_and_a_dead_ones_lock_goes_stale(s3):
    from ml4ml.errors import StoreError

    url = f"{s3}/locked.zarr"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "holding"
    try:
        with pytest.raises(StoreError, match=rf"another process is writing this store: pid "
                                             rf"{holder.pid} on .* \('holder-test'\)"):
            with store.writing(url, "second"):
                pass
        assert store.holder(url)["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed holder's heartbeat stops: its lock goes stale (3 s here) and is taken over
    with store.writing(url, "next", wait=20) as notes:
        assert notes[0].startswith(f"took over a stale writer lock left by pid {holder.pid}")
    assert store.holder(url) is None  # released: the lock object is gone


SKEWED_HOLDER = """
import sys, time
from ml4ml import store
from ml4ml.store import object_lock
skew = float(sys.argv[2])
object_lock._clock = lambda: time.time() + skew  # this writer's clock runs off by skew
with store.writing(sys.argv[1], "skewed-holder"):
    print("holding", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("skew", [120.0, -120.0])
def test_lock_staleness_is_judged_by_the_object_stores_clock_not_a_writers(s3, monkeypatch,
                                                                           skew):
    """Holder and taker with clocks 240 s apart, both ways: the live lock is never taken
    over, the dead one is, once the object store's clock says it is stale."""
    import time

    from ml4ml.errors import StoreError
    from ml4ml.store import object_lock

    monkeypatch.setenv("ML4ML_LOCK_STALE_AFTER_S", "6")
    monkeypatch.setattr(object_lock, "_clock", lambda: time.time() - skew)
    url = f"{s3}/skewed.zarr"
    holder = subprocess.Popen([sys.executable, "-c", SKEWED_HOLDER, url, str(skew)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    try:
        info = store.holder(url)
        assert info["pid"] == holder.pid
        assert abs(info["heartbeat"] - (time.time() + skew)) < 60  # its clock is off
        # live (heartbeating): refused after waiting twice its staleness time
        with pytest.raises(StoreError, match=rf"another process is writing this store: pid "
                                             rf"{holder.pid} on .* \('skewed-holder'\)"):
            with store.writing(url, "second", wait=12):
                pass
        assert store.holder(url)["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # dead: its heartbeat stops, the store's clock ages the lock past 6 s, it is taken over
    with store.writing(url, "next", wait=60) as notes:
        assert notes[0].startswith(f"took over a stale writer lock left by pid {holder.pid}")
        assert store.holder(url)["command"] == "next"
    assert store.holder(url) is None


class _TakerClient:
    """A boto3 client that, just before its first conditional takeover PUT, lets another
    writer run (``before``): the two takers race for the same stale lock."""

    def __init__(self, client, before):
        self._client, self._before = client, before

    def __getattr__(self, name):
        return getattr(self._client, name)

    def put_object(self, **kwargs):
        if "IfNoneMatch" not in kwargs and self._before is not None:
            before, self._before = self._before, None
            before()
        return self._client.put_object(**kwargs)


def test_two_takers_of_one_stale_lock_exactly_one_wins(s3, monkeypatch):
    """A dead writer's lock, stale; taker A reads it, then taker B takes it over before A's
    PUT lands: A's PUT carries If-Match on the stale ETag, so it fails, and A is refused
    (B's lock is fresh). Without the condition both would hold the lock."""
    import json
    import time

    import boto3

    from ml4ml.errors import StoreError
    from ml4ml.store import object_lock
    from ml4ml.store.lock import _describe

    url = f"{s3}/raced.zarr"
    key = f"{url[len('s3://'):].partition('/')[2]}/{object_lock.LOCK_NAME}"
    client = boto3.client("s3")
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(
        {"pid": 1, "host": "dead", "command": "dead-writer", "heartbeat": 0}).encode())
    while store.holder(url)["age_s"] <= 1.0:  # stale, by the object store's clock
        time.sleep(0.25)
    held = {}
    real = object_lock._client_and_key

    def taker_b():
        monkeypatch.setattr(object_lock, "_client_and_key", real)
        held["b"] = object_lock.acquire_object_lock(url, {"pid": 2, "command": "taker-b"},
                                                    0.0, 1.0, _describe)

    def racing(target):
        client, bucket, key = real(target)
        return _TakerClient(client, taker_b), bucket, key

    monkeypatch.setattr(object_lock, "_client_and_key", racing)
    try:
        # refused at once (wait 0): it names the holder it read, the dead one
        with pytest.raises(StoreError, match=r"another process is writing this store: pid 1 "
                                             r"on dead \('dead-writer'\)"):
            held["a"] = object_lock.acquire_object_lock(url, {"pid": 3, "command": "taker-a"},
                                                        0.0, 1.0, _describe)
        assert held["b"][1][0].startswith("took over a stale writer lock left by pid 1 on "
                                          "dead ('dead-writer')")
        assert store.holder(url)["command"] == "taker-b"
    finally:
        for release, _ in held.values():
            release()
    assert store.holder(url) is None
