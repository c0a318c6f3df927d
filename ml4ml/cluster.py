"""Where a dask graph runs: in process, on a LocalCluster of N processes, or on a scheduler."""

from __future__ import annotations

import functools
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
    from distributed import Client

    from ml4ml.logs import capture_printing_loggers

    capture_printing_loggers()  # distributed's own stderr handler: to the log, if any
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
    with _local_cluster(workers) as client:
        yield client


@contextmanager
def _local_cluster(workers: int):
    """A LocalCluster whose workers never see Ctrl-C; Ctrl-C stops them at once, silently.

    A terminal's Ctrl-C goes to every process of the foreground group, the workers
    included: each would print its own KeyboardInterrupt, and the nanny would wait for
    their running task before killing them, with warnings. So the workers ignore SIGINT
    (inherited from this process while they start, and set again by ``dask_setup`` in
    workers a nanny restarts), and SIGINT here first kills them (every store write is
    atomic, so a killed worker leaves no torn file) and then raises KeyboardInterrupt,
    which releases the store's lock only once no worker can write any more.
    """
    import signal
    import threading

    from distributed import Client, LocalCluster

    from ml4ml.logs import ENV, current_log

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    cluster = client = None
    log = current_log()
    try:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, preload=[__name__],
                               # the workers' messages go to the command's log file
                               env={ENV: log} if log else None,
                               # its HTTP server (health checks) on any free port: no
                               # warning when another cluster has 8787
                               scheduler_kwargs={"dashboard_address": ":0"})
        client = Client(cluster)
    except BaseException:
        _stop_now(client, cluster)
        raise
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)

    def interrupted(signum, frame):
        _kill_workers(cluster)
        raise KeyboardInterrupt

    if main:
        previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield client
    except KeyboardInterrupt:
        _stop_now(client, cluster)
        raise
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    _close_quietly(client, cluster)


def _close_quietly(client, cluster) -> None:
    """Close a finished cluster. Its results are in the store; a worker still busy (a busy
    machine) is killed by its nanny after a few seconds, which distributed reports as a
    warning ("Worker process still alive ... killing"): not the user's concern, so the
    nanny's and the worker's loggers say only errors while the cluster closes."""
    import logging

    loggers = [logging.getLogger(name) for name in ("distributed.nanny", "distributed.worker",
                                                    "distributed.core")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        client.close()
        cluster.close()
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def dask_setup(worker) -> None:
    """distributed's preload hook, run in every worker process as it starts: ignore
    SIGINT (Ctrl-C is the client's to handle; see ``_local_cluster``), and write
    everything the process prints (distributed's messages: "Compute Failed", heartbeat
    errors at shutdown) to the command's log file (``ml4ml.logs``) when it has one."""
    import os
    import signal
    import threading

    from ml4ml.logs import ENV

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    log = os.environ.get(ENV)
    if log:
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError:  # no log: the terminal keeps them
            return
        for stream in (1, 2):
            os.dup2(fd, stream)
        os.close(fd)


def _kill_workers(cluster) -> None:
    import os
    import signal

    for nanny in list(getattr(cluster, "workers", {}).values()):
        pid = getattr(nanny, "pid", None)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:  # gone already
                pass


def _stop_now(client, cluster) -> None:
    """Close a cluster at once after Ctrl-C, its workers killed and its logs silenced."""
    import logging
    import warnings

    if cluster is None:
        return
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _kill_workers(cluster)
            for closing in (client, cluster):
                try:
                    if closing is not None:
                        closing.close(timeout=5)
                except BaseException:  # noqa: BLE001 - closing after Ctrl-C: nothing to add
                    pass
    finally:
        logging.disable(logging.NOTSET)


def run_each(func, jobs: dict, client=None, *, name: str, **kwargs):
    """Yield ``(job, result)`` as each ``func(*args, **kwargs)`` finishes, for ``jobs``
    ``{job: args}``: in process in order, or one dask task each on ``client``.

    A job that raises yields its ``ml4ml.failures.Failure`` instead (a task returns it,
    so the cluster reports nothing); so does a task the cluster lost (its worker died).
    Every other job runs to the end. name : the tasks' key prefix.
    """
    import time

    from ml4ml.failures import guarded

    if client is None:
        for job, args in jobs.items():
            yield job, guarded(func, *args, **kwargs)
        return
    from distributed import as_completed

    futures = [client.submit(guarded, func, *args, **kwargs, pure=False,
                             key=f"{name}-{job}-{time.time_ns()}") for job, args in jobs.items()]
    owner = {future.key: job for future, job in zip(futures, jobs)}
    for future in as_completed(futures):
        yield owner[future.key], future_outcome(future)


def future_outcome(future):
    """A finished dask future's result, or the ``Failure`` of its error (or loss)."""
    from ml4ml.failures import Failure, failure_of

    if future.status == "finished":
        return future.result()
    if future.status == "error":
        exc = future.exception()
        failure = failure_of(exc, future.traceback())
        if type(exc).__name__ == "KilledWorker":
            return Failure("the worker process running it died (out of memory, or a crash "
                           "in native code)", failure.details)
        return failure
    return Failure(f"its task was {future.status} by the cluster")


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


@functools.cache
def keep_freed_memory_once() -> bool:
    """:func:`keep_freed_memory`, the first time this process calls it (for kernels that
    allocate megabyte-sized temporaries per block: otherwise glibc returns them to the OS
    after each block and the page faults cost more than the arithmetic)."""
    return keep_freed_memory()


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
