"""Where a dask graph runs: in process, on a LocalCluster of N processes, or on a scheduler."""

from __future__ import annotations

from contextlib import contextmanager

from .errors import InputError


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
