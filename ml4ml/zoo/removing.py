"""``remove_models``: take models, and every result of theirs, out of a store.

Every row of the models is removed from every group (the models table, probes, matrices,
measures, labels with expert ratings, assessments), crash-safe (``store.removal``): the
other models' rows keep their values bit for bit. Nothing beyond that is lost without
``force``:

- a model that carries expert ratings (a rater labelled or skipped it) is refused: its
  ratings would go with it;
- a model the store's recorded spec lists is refused: the next ``ml4ml run`` of the spec
  would train (or add) it again.

Checkpoint files are deleted only where ml4ml wrote them: a trained model's
``<checkpoints>/<mid>.pt`` in the store's checkpoints folder (``<store>.checkpoints``, or
the recorded spec's ``[store] checkpoints``), and a model held in memory that
``add_models`` saved as ``<store>.checkpoints/<mid>.pt`` or ``.pt2``; and only when no
model left in the store refers to the file. A file you added (``add-models FILE``) is
never deleted. An assessment whose protocol used a removed (labelled) model is marked
stale (``models_removed``): ``check_assessment`` asks for it to be redone. The models
table's attribute ``removed_models`` lists every id removed, so that running the same
removal again (after a crash, say) says "already removed" rather than "unknown".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ml4ml import dims, store
from ml4ml.errors import InputError, ML4MLError, StoreError
from ml4ml.store.layout import committed_nodes

__all__ = ["RemoveReport", "remove_models", "MODELS_REMOVED"]

# assess group attribute: the labelled models removed since the assessment was made
MODELS_REMOVED = "models_removed"
# models table attribute: every id removed from the store (a rerun says "already removed")
REMOVED = "removed_models"


@dataclass
class RemoveReport:
    removed: list  # ids removed now
    already: list = field(default_factory=list)  # removed by an interrupted run, finished now
    groups: list = field(default_factory=list)  # groups that lost rows
    deleted_files: list = field(default_factory=list)  # checkpoints ml4ml wrote
    kept_files: list = field(default_factory=list)  # checkpoints left (and why)
    stale_assessments: list = field(default_factory=list)  # transforms to assess again
    notes: list = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"removed {len(self.removed)} model(s)"
                 + (f" ({', '.join(self.removed)})" if self.removed else "")
                 + f" from {len(self.groups)} group(s)"]
        if self.already:
            parts.append(f"{', '.join(self.already)} already removed (by an earlier run, or "
                         "an interrupted one finished now)")
        parts.append(f"deleted {len(self.deleted_files)} checkpoint file(s) ml4ml wrote")
        if self.kept_files:
            parts.append(f"kept {len(self.kept_files)} checkpoint file(s): "
                         + "; ".join(self.kept_files[:3])
                         + (" ..." if len(self.kept_files) > 3 else ""))
        return ", ".join(parts)


def remove_models(path, mids, *, force: bool = False,
                  command: str = "ml4ml remove-models") -> RemoveReport:
    """Remove ``mids`` and every row of theirs from the store at ``path``.

    Unknown ids are refused before anything is written, as are (without ``force``) models
    with expert ratings or listed in the store's recorded spec. Refused while another
    process writes the store. Returns a ``RemoveReport``.
    """
    from ml4ml.store.removal import clean_partial_files, pending, remove_rows

    mids = list(dict.fromkeys(str(m) for m in mids))
    if not mids:
        raise InputError("give the id of at least one model to remove", field="MID")
    store.require_store(path)
    gone = set((pending(path) or {}).get("mids", [])) | _removed_before(store.read_models(path))
    _refuse_unknown(path, mids, gone)
    with store.writing(path, command) as notes:  # finishes an interrupted removal first
        notes += [f"deleted {name}, a temporary file of an interrupted write"
                  for name in clean_partial_files(path)]
        table = store.read_models(path)
        have = {str(m) for m in table[dims.MID].values}
        gone |= _removed_before(table)
        _refuse_unknown(path, mids, gone, have)
        present = [m for m in mids if m in have]
        report = RemoveReport(removed=present, already=[m for m in mids if m not in have],
                              notes=notes)
        if not present:
            return report
        pipeline, spec = _recorded_spec(path)
        if not force:
            _refuse_without_force(path, present, pipeline, spec)
        report.deleted_files, report.kept_files = _checkpoint_files(path, table, present,
                                                                    pipeline)
        attrs, report.stale_assessments = _assessment_attrs(path, present)
        attrs[store.MODELS_GROUP] = {REMOVED: sorted(_removed_before(table) | set(present))}
        report.groups = remove_rows(path, present, files=report.deleted_files,
                                    group_attrs=attrs, command=command)
    return report


def _removed_before(table) -> set:
    return {str(m) for m in table.attrs.get(REMOVED, []) or []}


def _refuse_unknown(path, mids, gone, have=None) -> None:
    """InputError naming the ids neither in the store nor removed from it before."""
    if have is None:
        have = set(store.model_ids(path))
    unknown = [m for m in mids if m not in have and m not in gone]
    if unknown:
        known = sorted(have)
        raise InputError(f"unknown model id(s) {', '.join(unknown)}; nothing was removed; the "
                         f"store has {len(known)} model(s)"
                         + (f": {', '.join(known[:8])}{' ...' if len(known) > 8 else ''}"
                            if known else ""), file=path, field="MID")


def _refuse_without_force(path, mids, pipeline, spec) -> None:
    """StoreError (one line) for models with expert ratings or in the recorded spec."""
    reasons = []
    rated = _rated(path, mids)
    if rated:
        one = len(rated) == 1
        where = "; ".join((f"{m}: " if not one else "") + ", ".join(sorted(groups))
                          for m, groups in rated.items())
        reasons.append(f"{', '.join(rated)} {'has' if one else 'have'} expert ratings "
                       f"({where}) that would go with {'it' if one else 'them'}")
    listed = [m for m in mids if pipeline is not None and m in set(pipeline.mids)]
    if listed:
        reasons.append(f"{', '.join(listed)} {'is' if len(listed) == 1 else 'are'} in the "
                       f"store's spec {spec}: 'ml4ml run' would train (or add) "
                       f"{'it' if len(listed) == 1 else 'them'} again")
    if reasons:
        raise StoreError(f"nothing was removed: {'; '.join(reasons)}", file=path,
                         field="MID", hint="pass --force to remove them all the same"
                         + (", or take them out of the spec first" if listed else ""))


def _rated(path, mids) -> dict:
    """{mid: {"labels/<transform> (rater ...)"}} of ``mids`` an expert rated or skipped."""
    from ml4ml.store.labels import read_ratings

    out = {}
    for transform in _label_transforms(path):
        ratings = read_ratings(path, transform)
        if ratings is None or ratings.sizes.get("rater", 0) == 0:
            continue
        ids = [str(m) for m in ratings[dims.MID].values]
        when = np.asarray(ratings["rated_at"].values)  # datetime64, NaT where none given
        given = ~np.isnat(when) if when.dtype.kind == "M" else np.isfinite(when)
        raters = [str(r) for r in ratings["rater"].values]
        for m in mids:
            if m in ids:
                who = [r for k, r in enumerate(raters) if given[k, ids.index(m)]]
                if who:
                    out.setdefault(m, set()).add(f"labels/{transform} by {', '.join(who)}")
    return out


def _label_transforms(path) -> list[str]:
    return sorted({node.split("/")[1] for node in (committed_nodes(path) or {})
                   if node.startswith("labels/") and node.count("/") == 1})


def _recorded_spec(path):
    """The store's recorded spec (a ``Pipeline``) and its file, or (None, file or None)."""
    from ml4ml.store.groups import pipeline_file

    spec = pipeline_file(store.store_attrs(path), path)
    if not spec or "://" in spec or not os.path.isfile(spec):
        return None, spec
    from ml4ml.config import load_pipeline

    try:
        return load_pipeline(spec), spec
    except ML4MLError:  # a spec that no longer validates: nothing it lists is known
        return None, spec


def _checkpoint_files(path, table, mids, pipeline) -> tuple[list, list]:
    """(files to delete: checkpoints ml4ml wrote for ``mids`` that no other model uses,
    the others with why they stay)."""
    from ml4ml.store.backend import local_root
    from ml4ml.zoo.adding import ADDED, SOURCE

    ids = [str(m) for m in table[dims.MID].values]
    files = [str(c) for c in table["checkpoint"].values] if "checkpoint" in table else \
        [""] * len(ids)
    sources = [str(s) for s in table[SOURCE].values] if SOURCE in table else [""] * len(ids)
    root = local_root(path)
    own = Path(str(root).rstrip("/") + ".checkpoints").resolve() if root is not None else None
    folders = {own} if own is not None else set()
    if pipeline is not None and "://" not in str(pipeline.checkpoints):
        folders.add(Path(pipeline.checkpoints).resolve())
    removing = set(mids)
    still_used = {f for m, f in zip(ids, files) if m not in removing and f}
    delete, kept = [], []
    for mid, file, source in zip(ids, files, sources):
        if mid not in removing or not file:
            continue
        if "://" in file:
            kept.append(f"{file} (not a local file)")
            continue
        where = Path(file).resolve()
        mine = where.name in (f"{mid}.pt", f"{mid}.pt2") and (
            where.parent in folders if source != ADDED else where.parent == own)
        if not mine:
            kept.append(f"{file} (not written by ml4ml for this store)")
        elif file in still_used:
            kept.append(f"{file} (another model uses it)")
        else:
            delete.append(str(where))
    return delete, kept


def _assessment_attrs(path, mids) -> tuple[dict, list]:
    """({assess group: {MODELS_REMOVED: ids}}, transforms) of the assessments whose
    protocol used (had labels for) some of ``mids``."""
    attrs, stale = {}, []
    for transform in sorted({node.split("/")[1] for node in (committed_nodes(path) or {})
                             if node.startswith("assess/") and node.count("/") == 1}):
        group = store.assess_group(transform)
        if not store.group_exists(path, group):
            continue
        ds = store.open_group(path, group)
        if "label" not in ds or dims.MID not in ds.dims:
            continue
        ids = [str(m) for m in ds[dims.MID].values]
        labels = np.asarray(ds["label"].values)
        used = [m for m in mids if m in ids and labels[ids.index(m)] >= 0]
        if used:
            before = list(ds.attrs.get(MODELS_REMOVED, []) or [])
            attrs[group] = {MODELS_REMOVED: sorted(set(before) | set(used))}
            stale.append(transform)
    return attrs, stale
