"""A command's log file: what the terminal is spared.

While a stage command runs (``log_to``), every logging record of dask, distributed (client,
scheduler, nannies), tornado and any other library, Python warnings, and the traceback of
every model that failed (``ml4ml.failures``) are appended to one file; the worker processes
of a local cluster write theirs there too (``ml4ml.cluster.dask_setup``). The terminal gets
ml4ml's own lines only: progress, one summary line per stage, one line per error.

The commands choose the file: ``STORE.log`` beside a local store, ``./NAME.log`` for a
store at a URL, or ``--log FILE``. It is opened at its first record, so a quiet in-process
run leaves none.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

__all__ = ["log_to", "current_log", "capture_printing_loggers", "ENV"]

ENV = "ML4ML_LOG"  # the log file, for the worker processes of a local cluster
FORMAT = "%(asctime)s - pid %(process)d - %(name)s - %(levelname)s - %(message)s"
_active: list = []  # the routings in force, innermost last


def current_log() -> str | None:
    """The file the running command logs to, or None outside ``log_to``."""
    return _active[-1].path if _active else None


class _LogFile(logging.FileHandler):
    """Appends to ``path`` from its first record on (its folder made then); a log that
    cannot be written never prints anything (the log is the terminal's overflow)."""

    def __init__(self, path):
        super().__init__(os.fspath(path), mode="a", encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter(FORMAT))
        self.setLevel(logging.WARNING)  # what went wrong, not distributed's every step

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def handleError(self, record):  # noqa: N802 - logging's name
        pass


def _prints(handler) -> bool:
    """Whether ``handler`` writes to a terminal stream (not a file, not ours)."""
    return (isinstance(handler, logging.StreamHandler)
            and not isinstance(handler, logging.FileHandler))


class _Routing:
    def __init__(self, path):
        self.path = os.fspath(path)
        self.handler = _LogFile(path)
        self.saved = {}  # logger -> its handlers before

    def capture(self) -> None:
        """Route every logger that prints by itself (distributed's, tornado's: a stderr
        handler and no propagation) to the file; the others reach it through the root."""
        loggers = [logger for logger in logging.root.manager.loggerDict.values()
                   if isinstance(logger, logging.Logger)]
        for logger in loggers:
            if logger in self.saved or not any(_prints(h) for h in logger.handlers):
                continue
            self.saved[logger] = logger.handlers[:]
            kept = [h for h in logger.handlers if not _prints(h)]
            logger.handlers = kept + ([] if logger.propagate else [self.handler])

    def restore(self) -> None:
        for logger, handlers in self.saved.items():
            logger.handlers = handlers
        self.saved.clear()


@contextmanager
def log_to(path):
    """Send every library's log records and Python warnings to ``path`` meanwhile."""
    routing = _Routing(path)
    root = logging.getLogger()
    capturing = getattr(logging, "_warnings_showwarning", None) is not None
    root.addHandler(routing.handler)
    routing.capture()
    logging.captureWarnings(True)
    _active.append(routing)
    try:
        yield Path(path)
    finally:
        _active.remove(routing)
        logging.captureWarnings(capturing)
        routing.restore()
        root.removeHandler(routing.handler)
        routing.handler.close()


def capture_printing_loggers() -> None:
    """Route loggers set up since ``log_to`` began (importing distributed gives its own
    stderr handler) to the log file too; nothing outside ``log_to``."""
    if _active:
        _active[-1].capture()
