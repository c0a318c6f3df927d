"""One model's failure, kept to itself: its reason in one line, its traceback for the log.

A stage runs every model as its own unit of work (``guarded``): whatever one model raises
(a checkpoint missing or replaced, a forward that raises, outputs that are not finite, a
registered measure that raises on its block) becomes a ``Failure`` of that model; the
other models are finished and written, and the stage ends with one summary line
(``failed_text``) and exit 1. The full traceback goes to the command's log file
(``ml4ml.logs``), never to the terminal.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass

from ml4ml.errors import ML4MLError

__all__ = ["Failure", "guarded", "failure_of", "failure_reason", "failed_text", "log_failure",
           "merge_reasons", "SHOWN"]

REASON_CHARS = 300  # a reason longer than this is cut (the log keeps all of it)
SHOWN = 5  # failed models named in a summary line; the log and the store name every one
logger = logging.getLogger("ml4ml")
if not logger.handlers:  # a library: nothing printed unless a command routes it (ml4ml.logs)
    logger.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class Failure:
    """Why one model failed: ``reason`` (one line, for the terminal and the store) and
    ``details`` (the traceback, for the log)."""

    reason: str
    details: str = ""


def failure_reason(exc: BaseException) -> str:
    """One line saying what went wrong: an ml4ml error as it reads (file, field, message,
    hint), any other exception as ``Type: first line``."""
    if isinstance(exc, ML4MLError):
        text = str(exc)
    else:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."


def failure_of(exc: BaseException, tb=None) -> Failure:
    """The Failure of an exception (``tb``: its traceback where it is not attached)."""
    details = "".join(traceback.format_exception(type(exc), exc,
                                                 tb if tb is not None else exc.__traceback__))
    return Failure(failure_reason(exc), details)


def guarded(func, *args, **kwargs):
    """``func(*args, **kwargs)``, or the ``Failure`` of whatever Exception it raised.

    A dask task that returns its Failure instead of raising leaves the cluster quiet (no
    "Compute Failed" report) and every other task running; Ctrl-C (KeyboardInterrupt) and
    exits still propagate.
    """
    try:
        return func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure of one model is that model's
        return failure_of(exc)


def merge_reasons(reasons: dict) -> str:
    """One reason for a model from its reasons per part (e.g. ``{"digits/rotation": why}``):
    the reason itself when every part failed alike, else ``part: why; ...``."""
    distinct = list(dict.fromkeys(reasons.values()))
    if len(distinct) == 1:
        return distinct[0]
    return "; ".join(f"{part}: {why}" for part, why in reasons.items())


def failed_text(failed: dict, shown: int = SHOWN) -> str:
    """``N failed: a (why), b (why)``, naming at most ``shown`` models (then ``and K more``);
    "" when nothing failed. failed : {mid: reason}."""
    if not failed:
        return ""
    items = list(failed.items())
    named = ", ".join(f"{mid} ({why})" for mid, why in items[:shown])
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return f"{len(items)} failed: {named}{more}"


def log_failure(stage: str, mid: str, failure: Failure, where: str = "") -> None:
    """Write a failed model's reason and traceback to the log (``ml4ml.logs``)."""
    place = f" on {where}" if where else ""
    logger.warning("%s: model %s failed%s: %s\n%s", stage, mid, place, failure.reason,
                   failure.details.rstrip() or "(no traceback)")
