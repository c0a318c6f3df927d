"""Where a dask graph runs: in process, on a LocalCluster of N processes, or on a scheduler."""

from __future__ import annotations

from contextlib import contextmanager

from ml4ml.errors import InputError


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None):
    """Yield a ``distributed.Client`` (or None for the in-process default scheduler).

    workers : start a LocalCluster of this many single-threaded worker processes.
    scheduler : address of an existing scheduler, e.g. ``tcp://127.0.0.1:8786``.
    """
    if workers is not None and scheduler is not None:
        raise InputError("give --workers or --scheduler, not both", field="workers")
    if workers is None and scheduler is None:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise InputError(f"cannot reach the dask scheduler at {scheduler!r}: {exc}",
                             field="scheduler") from exc
        try:
            yield client
        finally:
            client.close()
        return
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}", field="workers")
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mmap_threshold: int = 32 * 2**20, trim_threshold: int = 64 * 2**20) -> bool:
    """Let this process's malloc reuse freed blocks instead of unmapping them at once.

    dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also pins
    glibc's mmap threshold at 128 KiB: every tensor over 128 KiB is then mapped afresh and
    unmapped when freed, and the page faults double the time of a probe (about 390,000
    faults for CNN5 on 512 images x 31 angles, against 2,000 in a plain process). The
    defaults here are glibc's own upper limits, so memory still goes back to the OS in large
    pieces. Returns False where the C library has no ``mallopt`` (not glibc).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))
                and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))


def prepare_dask_worker() -> bool:
    """In a dask worker process, :func:`keep_freed_memory`; elsewhere nothing.

    Returns whether this runs in a dask worker.
    """
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    keep_freed_memory()
    return True


@contextmanager
def torch_threads(n: int | None = 1):
    """Run torch with ``n`` intra-op threads, restoring the previous count after.

    One thread per model is much faster than the default on small models when several
    processes share the cores, and it keeps training bit-for-bit deterministic.
    """
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
