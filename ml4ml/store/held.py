"""Which stores this process holds the writer lock of (the bottom of ``store/``).

``lock.writing`` takes and releases the lock; the modules it calls while it holds it
(``layout``, ``groups``, ``suites``) only ask ``is_held`` before a layout change, so they
import this small module, never ``lock`` (which imports them).
"""

from __future__ import annotations

import threading

from ml4ml.store.backend import local_root

__all__ = ["is_held"]

_held: dict[str, list] = {}  # key -> [depth, release function]
_locks: dict[str, threading.RLock] = {}  # key -> the process's own lock (threads take turns)
_guard = threading.Lock()


def _key(path) -> str:
    """The store's identity: its resolved folder, or its URL without a trailing slash."""
    root = local_root(path)
    return str(root.resolve()) if root is not None else str(path).rstrip("/")


def is_held(path) -> bool:
    """Whether this process holds the store's writer lock."""
    with _guard:
        return _key(path) in _held
