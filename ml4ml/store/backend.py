"""Where a store's bytes live: a local folder or any fsspec URL (``memory://``, ``s3://``).

``zarr_store(path)`` is the one place a zarr ``Store`` object is made. Local folders get
``LocalFolderStore``: zarr's own ``LocalStore`` (every key written to a temporary file, then
renamed into place, so a crash never leaves a torn chunk or metadata file) whose reads land
in numpy-allocated buffers. A URL gets zarr's ``FsspecStore`` (an object store's PUT is
atomic), with the standard AWS settings taken from the environment for ``s3://``.

Fault injection (``ML4ML_FAULT_AFTER_WRITES``): the crash tests set it to ``k`` (and
``ML4ML_FAULT_SIGNAL`` to ``KILL``, the default, or ``INT``); the process then kills itself
(or gets a Ctrl-C) right after its k-th write of a store key or checkpoint file.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
from pathlib import Path

import numpy as np
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import FsspecStore, LocalStore

from ml4ml.errors import StoreError

__all__ = ["zarr_store", "is_url", "local_root", "fault_point", "FAULT_AFTER_ENV",
           "FAULT_SIGNAL_ENV", "writes_done", "require_s3", "partial_files"]

FAULT_AFTER_ENV = "ML4ML_FAULT_AFTER_WRITES"
FAULT_SIGNAL_ENV = "ML4ML_FAULT_SIGNAL"
_WRITES = {"count": 0}


def is_url(path) -> bool:
    """Whether ``path`` is an fsspec URL (``memory://...``, ``s3://...``) and not a folder."""
    return "://" in str(path)


def local_root(path) -> Path | None:
    """The absolute folder of a local store (``file://`` URLs included), or None for other
    URLs. Absolute, so the workers of a cluster, started elsewhere, open the same folder."""
    text = str(path)
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif is_url(text):
        return None
    return Path(os.path.abspath(text))


PARTIAL_SUFFIX = ".partial"


def partial_files(root) -> list[Path]:
    """The temporary files of interrupted writes in the local store folder ``root``: zarr's
    ``LocalStore`` writes each key to ``<key>.<random>.partial`` and then renames it, so a
    writer killed mid-write leaves one behind (sorted; none for a folder that is not there).
    """
    found = []
    for folder, _, files in os.walk(root):
        found += [Path(folder) / f for f in files if f.endswith(PARTIAL_SUFFIX)]
    return sorted(found)


def writes_done() -> int:
    """Store keys and checkpoint files this process has written so far."""
    return _WRITES["count"]


def fault_point() -> None:
    """Count one write; kill this process (or interrupt it) after the k-th if asked to."""
    _WRITES["count"] += 1
    after = os.environ.get(FAULT_AFTER_ENV)
    if after and _WRITES["count"] == int(after):
        # a real signal: SIGINT raises KeyboardInterrupt in the main thread, as Ctrl-C does
        # (zarr writes from its own event-loop thread)
        kind = os.environ.get(FAULT_SIGNAL_ENV, "KILL").upper()
        os.kill(os.getpid(), signal.SIGINT if kind == "INT" else signal.SIGKILL)


class _CountedWrites:
    """Mixin: every ``set`` and ``delete`` passes through ``fault_point``."""

    async def set(self, key, value):
        await super().set(key, value)
        fault_point()

    async def delete(self, key):
        await super().delete(key)
        fault_point()

    async def delete_dir(self, prefix):
        await super().delete_dir(prefix)
        fault_point()


class LocalFolderStore(_CountedWrites, LocalStore):
    """zarr's LocalStore (atomic writes) reading whole keys into numpy-allocated buffers.

    A 40 MB chunk read into a ``bytes`` object pays a page fault per 4 KiB page; numpy's
    allocator asks for transparent huge pages, so reads of large chunks run about three
    times faster (measured in ``benchmarks/measures.py --store``).
    """

    async def get(self, key, prototype=None, byte_range=None):
        if byte_range is not None:
            return await super().get(key, prototype, byte_range)
        if not self._is_open:
            await self._open()
        path = self.root / key
        try:
            data = await asyncio.to_thread(_read_into_numpy, path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return (prototype or default_buffer_prototype()).buffer.from_array_like(data)


class UrlStore(_CountedWrites, FsspecStore):
    """zarr's FsspecStore, with writes counted for fault injection."""


def _read_into_numpy(path: Path) -> np.ndarray:
    with open(path, "rb", buffering=0) as file:
        size = os.fstat(file.fileno()).st_size
        data = np.empty(size, dtype=np.uint8)
        view = memoryview(data)
        read = 0
        while read < size:
            n = file.readinto(view[read:])
            if not n:
                break
            read += n
    return data[:read]


def require_s3(url) -> None:
    """For an ``s3://`` URL: the packages of the ``s3`` extra are installed, or one clear
    line naming the extra (s3fs reads and writes the store, boto3 holds its writer lock)."""
    if not str(url).startswith("s3://"):
        return
    missing = [name for name in ("s3fs", "boto3") if importlib.util.find_spec(name) is None]
    if missing:
        raise StoreError(f"an s3:// store needs the s3 extra, and {' and '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not installed", file=url,
                         hint="pip install 'ml4ml[s3]'")


def storage_options(url: str) -> dict:
    """fsspec options for ``url``: for ``s3://``, the standard AWS environment settings."""
    if not str(url).startswith("s3://"):
        return {}
    require_s3(url)
    # one GET per key: s3fs otherwise asks for each object's size first (a HEAD)
    options: dict = {"max_concurrency": 1}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options.setdefault("client_kwargs", {})["region_name"] = region
    return options


def zarr_store(path, *, read_only: bool = False):
    """The zarr Store object for a store path or URL."""
    root = local_root(path)
    if root is not None:
        return LocalFolderStore(root, read_only=read_only)
    return UrlStore.from_url(str(path), storage_options=storage_options(str(path)) or None,
                             read_only=read_only)
