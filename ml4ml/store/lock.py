"""One writer per store: a lock that names its holder, taken by every command that writes.

``writing(path, command)`` holds the store's writer lock for the duration of a stage. A
second process that tries to write the same store is refused at once with a line naming
the holder (pid, host, command, since when); ``wait=`` seconds lets a short writer (the
labelling page) queue behind another instead. Readers never take the lock.

On a local disk the lock is ``fcntl.flock`` on ``STORE/.ml4ml-writer``, a lock the kernel
drops when its process dies, so a killed writer never blocks the next one: the holder's
description it left in the file marks the lock as stale, and the next writer says that it
took it over. On object storage (``s3://``) the lock is an object created only if absent
and refreshed while held; one not refreshed for ``STALE_AFTER_S`` seconds by the object
store's clock is stale (README, "Object
storage", says what that guarantees). Within one process the lock is re-entrant, and the
dask workers of the holder's run write their own regions without it.

Taking the lock first rolls back whatever layout change a crashed writer left uncommitted
(``layout.recover``), so every writer starts from a committed layout, and finishes the
removal of models a killed ``remove-models`` left in its journal (``removal.resume``). On a
local disk, a
writer that was killed (its description is still in the lock file) or interrupted (it
leaves ``"interrupted": true`` there on its way out) may also have left temporary files
of writes in flight (``*.partial``, ``backend.partial_files``): the next writer deletes
them before it writes (no live writer can own them: the lock is its now).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import threading
import time
from contextlib import contextmanager

from ml4ml.errors import ML4MLError, StoreError
from ml4ml.store.backend import local_root, partial_files
from ml4ml.store.held import _guard, _held, _key, _locks, is_held

__all__ = ["writing", "holder", "is_held", "LOCK_NAME", "STALE_AFTER_S"]

LOCK_NAME = ".ml4ml-writer"
# an object-storage lock whose heartbeat is older than this is stale
STALE_AFTER_S = 60.0


def stale_after() -> float:
    """Seconds after which an object-storage lock is stale (``ML4ML_LOCK_STALE_AFTER_S``)."""
    return float(os.environ.get("ML4ML_LOCK_STALE_AFTER_S", STALE_AFTER_S))
_POLL_S = 0.1
_THREAD_WAIT_S = 120.0


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _description(command: str) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": _now(), "heartbeat": time.time()}


def _describe(info: dict) -> str:
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} "
            f"('{info.get('command', '?')}') since {info.get('since', '?')}")


@contextmanager
def writing(path, command: str = "ml4ml", *, wait: float = 0.0, recover: bool = True):
    """Hold the single-writer lock of the store at ``path`` (re-entrant in a thread).

    command : what the holder is doing, shown to a refused writer.
    wait : seconds to wait for another writer to finish before refusing.
    recover : roll back uncommitted layout changes when the lock is first taken.
    Yields a list of notes (a stale lock taken over, layout changes rolled back).

    Threads of one process take turns (the labelling page saves from several); another
    process is refused at once, or after ``wait`` seconds.
    """
    key = _key(path)
    with _guard:
        local = _locks.setdefault(key, threading.RLock())
    if not local.acquire(timeout=max(wait, _THREAD_WAIT_S)):
        raise StoreError("another thread of this process is writing this store", file=path)
    try:
        with _guard:
            entry = _held.get(key)
            if entry is not None:
                entry[0] += 1
        if entry is not None:  # this thread holds it already
            try:
                yield []
            finally:
                with _guard:
                    entry[0] -= 1
            return
        if local_root(path) is not None:
            from ml4ml.store.groups import _refuse_non_store, store_exists

            if not store_exists(path):  # never leave a lock file in someone else's folder
                _refuse_non_store(path)
        release, notes = _acquire(path, command, wait)
        with _guard:
            _held[key] = [1, release]
        interrupted = False
        try:
            if recover:
                from ml4ml.store.layout import recover as roll_back

                notes += roll_back(path)
            from ml4ml.store.removal import resume  # a removal a killed writer began

            notes += resume(path)
            yield notes
        except ML4MLError:  # a refusal: raised between writes, none is in flight
            raise
        except BaseException:  # Ctrl-C, a failed write: writes may still be in flight
            interrupted = True
            raise
        finally:
            with _guard:
                del _held[key]
            release(interrupted)
    finally:
        local.release()


def holder(path) -> dict | None:
    """The description of the process holding the store's lock, or None if it is free."""
    root = local_root(path)
    if root is None:
        return _url_holder(str(path))
    import fcntl

    file = root / LOCK_NAME
    if not file.is_file():
        return None
    with open(file, "r+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _parse(file.read_bytes()) or {}
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def writer_now(path) -> dict | None:
    """The description of the writer that seems to hold the store now, without touching
    the lock (``holder`` takes it for an instant, which could refuse a writer starting at
    that moment): the lock file's holder while its process is alive on this host (a
    released lock file is empty); for a URL store, ``holder``. For messages only."""
    root = local_root(path)
    if root is None:
        try:
            return _url_holder(str(path))
        except Exception:  # noqa: BLE001 - only a message depends on it
            return None
    try:
        info = _parse((root / LOCK_NAME).read_bytes())
    except OSError:
        return None
    if not info or info.get("interrupted"):
        return None  # released (an interrupted writer says so)
    if info.get("host") != socket.gethostname():
        return info
    try:
        os.kill(int(info.get("pid")), 0)
    except (OSError, TypeError, ValueError):
        return None  # a killed writer's lock: free
    return info


def _acquire(path, command, wait):
    root = local_root(path)
    if root is not None:
        return _acquire_local(root, path, command, wait)
    return _acquire_url(str(path), command, wait)


def _acquire_local(root, path, command, wait):
    import fcntl

    if root.exists() and not root.is_dir():
        raise StoreError("is a file, not a store folder", file=path,
                         hint="give the path of a store folder (e.g. stores/db.zarr)")
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError as exc:
        raise StoreError("the store is read-only here: cannot take its writer lock "
                         f"({exc.strerror})", file=path,
                         hint="write to a copy, or ask the owner for write access") from None
    except OSError as exc:
        raise StoreError(f"cannot take the store's writer lock: {exc}", file=path) from None
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                info = _parse(_read_fd(fd)) or {}
                os.close(fd)
                raise StoreError(f"another process is writing this store: {_describe(info)}",
                                 file=path, hint="wait for it to finish (readers are not "
                                 "blocked), or stop it; a killed writer frees the store "
                                 "at once") from None
            time.sleep(_POLL_S)
    notes = []
    previous = _parse(_read_fd(fd))
    if previous and not previous.get("interrupted"):
        notes.append(f"took over a stale writer lock left by {_describe(previous)}")
    description = _description(command)
    _write_fd(fd, json.dumps(description).encode())
    if previous:  # killed or interrupted: writes in flight may have left temporary files
        left = partial_files(root)
        for file in left:
            file.unlink(missing_ok=True)
        if left:
            notes.append(f"removed {len(left)} temporary file(s) of writes a stopped writer "
                         "left unfinished")

    def release(interrupted: bool = False):
        """Free the lock; an interrupted holder says so in the file (a killed one's
        description stays there anyway), so the next writer cleans up after it."""
        try:
            if interrupted:
                _write_fd(fd, json.dumps({**description, "interrupted": True}).encode())
            else:
                os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    return release, notes


def _read_fd(fd) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        block = os.read(fd, 65536)
        if not block:
            return b"".join(chunks)
        chunks.append(block)


def _write_fd(fd, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.fsync(fd)


def _parse(data: bytes) -> dict | None:
    if not data.strip():
        return None
    try:
        info = json.loads(data)
    except ValueError:
        return {"pid": "?", "host": "?", "command": "unreadable lock file"}
    return info if isinstance(info, dict) else None


# ------------------------------------------------------------------- URL stores
_memory_locks: dict[str, dict] = {}


def _url_holder(url: str) -> dict | None:
    if url.startswith("memory://"):
        return _memory_locks.get(url.rstrip("/"))
    from ml4ml.store.object_lock import read_lock

    info = read_lock(url)
    if info and info["age_s"] > stale_after():  # by the object store's clock
        return None
    return info


def _acquire_url(url: str, command: str, wait: float):
    key = url.rstrip("/")
    if url.startswith("memory://"):  # one process holds a memory:// store
        deadline = time.monotonic() + wait
        while True:
            with _guard:
                if key not in _memory_locks:
                    _memory_locks[key] = _description(command)
                    break
                info = _memory_locks[key]
            if time.monotonic() >= deadline:
                raise StoreError(f"another writer holds this store: {_describe(info)}",
                                 file=url)
            time.sleep(_POLL_S)

        def release(interrupted: bool = False):
            with _guard:
                _memory_locks.pop(key, None)

        return release, []
    from ml4ml.store.object_lock import acquire_object_lock

    return acquire_object_lock(url, _description(command), wait, stale_after(), _describe)
