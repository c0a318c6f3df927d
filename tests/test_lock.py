"""One writer per store: real processes hold, lose and contend for the writer lock."""

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading

import pytest
import xarray as xr
from click.testing import CliRunner

from ml4ml import store
from ml4ml.cli import cli
from ml4ml.errors import StoreError
from test_store import one_probe

HOLDER = """
import sys
from ml4ml import store
with store.writing(sys.argv[1], "holder-test"):
    print("holding", flush=True)
    sys.stdin.read()  # holds the lock until the test closes its stdin
"""


@pytest.fixture
def path(tmp_path):
    path = str(tmp_path / "s.zarr")
    with store.writing(path):
        store.create_store(path)
        store.init_probes(path, "d", "rotation", one_probe(), ["m1"])
        store.write_probe(path, "d", "rotation", "m1", one_probe())
    return path


def hold(path):
    """A process holding the store's writer lock until its stdin is closed."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "holding"
    return process


def test_a_second_writer_is_refused_at_once_naming_the_holder(path):
    holder = hold(path)
    try:
        with pytest.raises(StoreError) as raised:
            with store.writing(path, "second"):
                pass
        # at once: refused while the holder still holds it (it lets go only when told)
        assert holder.poll() is None
        message = str(raised.value)
        assert f"another process is writing this store: pid {holder.pid} on " \
               f"{socket.gethostname()} ('holder-test') since 20" in message
        assert store.holder(path)["pid"] == holder.pid
        # the command line says the same, in one line, exit 1
        result = CliRunner().invoke(cli, ["measure", path, "-q"])
        assert result.exit_code == 1 and result.output.count("\n") == 1
        assert f"pid {holder.pid}" in result.output and "Traceback" not in result.output
        # readers are never blocked
        ds = xr.open_zarr(path, group="probes/d/rotation")
        assert ds["done"].values.tolist() == [True]
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_writers_lock_is_taken_over_and_said_so(path):
    holder = hold(path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert store.holder(path) is None  # the kernel dropped it with the process
    with store.writing(path, "next") as notes:
        assert notes[0].startswith(f"took over a stale writer lock left by pid {holder.pid} on "
                                   f"{socket.gethostname()} ('holder-test') since 20")
    with store.writing(path, "after") as notes:  # a clean release leaves nothing stale
        assert notes == []


def partial(path, where="probes/d/rotation/act/c"):
    """A temporary file as zarr's LocalStore leaves it when a write dies half-way."""
    from pathlib import Path

    file = Path(path) / where / "0.0123456789abcdef0123456789abcdef.partial"
    file.write_bytes(b"half a chunk")
    return file


def test_the_next_writer_deletes_what_a_killed_or_interrupted_writer_left(path):
    from ml4ml.errors import InputError
    from ml4ml.store.check import check_store
    from ml4ml.store.lock import writer_now

    holder = hold(path)
    left = [partial(path), partial(path, "")]
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with store.writing(path, "next") as notes:
        assert not any(f.exists() for f in left)
        assert notes[1] == ("removed 2 temporary file(s) of writes a stopped writer left "
                            "unfinished")
    # Ctrl-C (or a failed write): released, but writes may have been in flight
    with pytest.raises(KeyboardInterrupt):
        with store.writing(path, "interrupted"):
            left = partial(path)
            raise KeyboardInterrupt
    assert left.exists() and store.holder(path) is None and writer_now(path) is None
    with store.writing(path, "next") as notes:  # no stale lock: only the clean-up said
        assert notes == ["removed 1 temporary file(s) of writes a stopped writer left "
                         "unfinished"] and not left.exists()
    # a refusal leaves nothing in flight: no clean-up (no walk over the store) after it
    with pytest.raises(InputError):
        with store.writing(path, "refused"):
            raise InputError("bad input")
    with store.writing(path, "after") as notes:
        assert notes == []
    assert not [p for p in check_store(path) if "temporary" in p.what]


def test_a_waiting_writer_goes_on_once_the_holder_is_done(path):
    holder = hold(path)
    taken = []

    def patient():
        with store.writing(path, "patient", wait=600) as notes:
            taken.append(notes)

    waiter = threading.Thread(target=patient)
    waiter.start()
    waiter.join(0.5)  # it waits (however long this takes, it cannot have the lock yet)
    assert taken == [] and holder.poll() is None
    holder.stdin.close()  # the holder lets go and exits
    waiter.join(600)
    assert holder.wait() == 0
    assert taken == [[]]  # taken once, cleanly: no stale lock to take over


def test_the_lock_is_reentrant_within_a_process(path):
    with store.writing(path, "outer"):
        with store.writing(path, "inner"):
            assert store.lock.is_held(path)
        assert store.lock.is_held(path)
    assert not store.lock.is_held(path)


def test_a_read_only_store_is_one_clear_line(path, tmp_path):
    """Without root's override: the command runs without CAP_DAC_OVERRIDE when root."""
    for root, folders, files in os.walk(path):
        for name in folders + files:
            full = os.path.join(root, name)
            os.chmod(full, os.stat(full).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    os.chmod(path, 0o555)
    before = sorted(os.listdir(path))
    command = [sys.executable, "-m", "ml4ml", "measure", path, "-q"]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot drop root's override")
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"] + command
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert f"error: {path}: the store is read-only here: cannot take its writer lock" \
               in result.stderr
        assert sorted(os.listdir(path)) == before
    finally:
        for root, folders, files in os.walk(path):
            os.chmod(root, 0o755)
        os.chmod(path, 0o755)


def test_a_command_whose_stage_is_not_done_names_the_live_writer_not_the_stage(tmp_path):
    """Labels asked of a store whose probes a live writer may be making: the line names
    that writer (not 'run probe'); once it is killed, the stage's own advice comes back.
    ``writer_now`` never takes the lock (a writer starting meanwhile is not refused)."""
    from ml4ml.store.lock import writer_now

    path = str(tmp_path / "empty.zarr")
    with store.writing(path):
        store.create_store(path)
    assert writer_now(path) is None  # released: the lock file is empty
    holder = hold(path)
    try:
        assert writer_now(path)["pid"] == holder.pid
        result = CliRunner().invoke(cli, ["measure", path, "-q"])
        assert result.exit_code == 1 and result.output.count("\n") == 1
        assert f"another process is writing this store: pid {holder.pid} on " in result.output
        assert "the store has no probes yet (it may be making them now)" in result.output
    finally:
        holder.kill()
        holder.wait()
    assert writer_now(path) is None  # a killed writer's lock file names a dead process
    result = CliRunner().invoke(cli, ["measure", path, "-q"])
    assert result.exit_code == 1 and "the store has no probes yet (probe its models" \
        in result.output
