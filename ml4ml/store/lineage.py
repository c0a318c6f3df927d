"""Lineage of derived rows: which done rows were computed from the probe data held now.

A row of ``matrices/<suite>/<transform>`` or ``measures/<suite>/<transform>`` records the
``digest`` of the probe responses it was computed from (``probe_digest``). It is *fresh*
when it is done, its model's probe row is done and the two digests agree and are not
empty; a done row that is not fresh is *stale* (its probe data was re-imported, re-probed
or refused since, or nothing records what it came from). ``fresh_rows`` is that rule, the
only one: readers (``row_lineage``, ``fresh_mids``), ``store check`` and the measure stage
all decide with it.
Every reader of derived rows (``features``, ``assess``, ``predict``, ``report``, ``plot``)
reads only fresh rows and refuses, in one line naming the models and ``ml4ml measure``,
where some are stale; the measure stage redoes them.
"""

from __future__ import annotations

import shlex

import numpy as np

from ml4ml import dims
from ml4ml.errors import StoreError
from ml4ml.store.groups import (group_exists, matrices_group, measures_group, open_group,
                                probe_group)
from ml4ml.store.probes import DIGEST
from ml4ml.store.rows import PROBE_DIGEST

__all__ = ["fresh_rows", "probe_state", "row_lineage", "fresh_mids", "stale_message_models"]

_GROUPS = {"measures": measures_group, "matrices": matrices_group}
# models named in a one-line message; the rest are counted
NAMED = 10


def fresh_rows(done, recorded, probe_done, probe_digest) -> np.ndarray:
    """Which derived rows are fresh, (row,) bool: the one rule of lineage.

    done : (row,) the derived rows' ``done`` flags; recorded : (row,) the probe digests
    they recorded (``probe_digest``); probe_done, probe_digest : (row,) the ``done`` flag
    and ``digest`` of each row's model in the probe group now (False and "" for a model
    the group lacks: ``probe_state``). A row is fresh when it and its probe row are done
    and the digest it recorded is the probe's now. An empty recorded digest never matches,
    even an empty probe digest: nothing then says which probe data the row came from.
    """
    recorded = np.asarray(recorded).astype(str)
    return (np.asarray(done, dtype=bool) & np.asarray(probe_done, dtype=bool)
            & (recorded != "") & (recorded == np.asarray(probe_digest).astype(str)))


def probe_state(mids, probe_mids, probe_done, probe_digest) -> tuple[np.ndarray, np.ndarray]:
    """The probe group's ``done`` flag and ``digest`` of each of ``mids``, (len(mids),):
    False and "" for a model the probe group does not hold."""
    mids = np.asarray(mids).astype(str)
    # a repeated id (damage ``store check`` reports on its own): its last row
    position = {m: k for k, m in enumerate(np.asarray(probe_mids).astype(str).tolist())}
    where = np.array([position.get(m, -1) for m in mids.tolist()], dtype=np.int64)
    known = where >= 0
    at = np.where(known, where, 0)
    done = np.asarray(probe_done, dtype=bool)
    digest = np.asarray(probe_digest).astype(str)
    if not len(done):
        return np.zeros(len(mids), dtype=bool), np.full(len(mids), "", dtype=object)
    return known & done[at], np.where(known, digest[at], "")


def row_lineage(path, suite: str, transform: str, kind: str) -> tuple[list[str], list[str]]:
    """(fresh, stale): ids of the done rows of the ``kind`` group ("measures" or
    "matrices") of ``suite``/``transform`` computed from the probe data the store holds
    now, and of those that were not. Rows not done are in neither."""
    group = _GROUPS[kind](suite, transform)
    if not group_exists(path, group):
        return [], []
    derived = open_group(path, group)
    mids = np.asarray(derived[dims.MID].values).astype(str)
    done = np.asarray(derived[dims.DONE].values, dtype=bool)
    recorded = np.asarray(derived[PROBE_DIGEST].values).astype(str)
    probes_name = probe_group(suite, transform)
    probe_done, probe_digest = np.zeros(len(mids), dtype=bool), np.full(len(mids), "")
    if group_exists(path, probes_name):
        probes = open_group(path, probes_name)
        probe_done, probe_digest = probe_state(mids, probes[dims.MID].values,
                                               probes[dims.DONE].values, probes[DIGEST].values)
    fresh = fresh_rows(done, recorded, probe_done, probe_digest)
    stale = done & ~fresh
    return mids[fresh].tolist(), mids[stale].tolist()


def stale_message_models(mids) -> str:
    """``m1, m2, ... (N in all)``: at most ``NAMED`` ids, then the count."""
    mids = list(mids)
    named = ", ".join(mids[:NAMED])
    return named + (f", ... ({len(mids)} in all)" if len(mids) > NAMED else "")


def fresh_mids(path, suite: str, transform: str, kinds=("measures",)) -> list[str]:
    """Ids of the models whose rows in every group of ``kinds`` are fresh (in the first
    group's row order); StoreError naming the stale ones and ``ml4ml measure`` otherwise."""
    fresh = None
    for kind in kinds:
        current, stale = row_lineage(path, suite, transform, kind)
        if stale:
            mend = (f"ml4ml measure {shlex.quote(str(path))} --suite {shlex.quote(suite)} "
                    f"--transform {shlex.quote(transform)}")
            raise StoreError(f"the {kind} of {len(stale)} model(s) are stale (computed from "
                             f"other probe data than the store holds now): "
                             f"{stale_message_models(stale)}", file=path,
                             field=_GROUPS[kind](suite, transform),
                             hint=f"run '{mend}' to redo them")
        fresh = current if fresh is None else [m for m in fresh if m in set(current)]
    return fresh or []
