"""``ml4ml store check`` and ``store repair``: find what is wrong with a store, mend what is safe.

``check_store`` lists every problem it finds, each with where it is, what is wrong and how
to mend it: the schema; uncommitted or missing layout; the chunk layout; duplicate model
ids; ``done`` flags against the data (a done probe row holds no NaN or -1, and its
responses still hash to the digest recorded when they were written); lineage (a probe made
from another checkpoint than the model's; a matrices or measures row computed from other
probe data); temporary files a killed writer left. ``repair_store`` mends what can be
mended without touching a finished model: it rolls back uncommitted layout, clears the
``done`` flag of rows whose data is missing, damaged or stale (the next run of their stage
redoes them), and deletes temporary files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml4ml import dims
from ml4ml.errors import StoreError
from ml4ml.store import layout
from ml4ml.store.arrays import ROW_CHUNK, ROW_TABLE_VARIABLES
from ml4ml.store.backend import local_root
from ml4ml.store.groups import (MODELS_GROUP, list_groups, matrices_group, measures_group,
                                probe_group, store_attrs, zarr_group)
from ml4ml.store.probes import DIGEST, RESPONSES, SOURCE, probe_digest
from ml4ml.store.rows import PROBE_DIGEST, clear_done

__all__ = ["Problem", "check_store", "repair_store"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store: where, what, how to mend it, and what repair does."""

    where: str
    what: str
    mend: str
    repair: str = ""  # "rollback", "clear", "delete" or "" (repair cannot mend it)
    mids: tuple = ()  # rows a "clear" repair clears
    files: tuple = ()  # files a "delete" repair removes

    def line(self) -> str:
        return f"{self.where}: {self.what} -> {self.mend}"


def check_store(path) -> list[Problem]:
    """Every problem of the store at ``path`` (an empty list for a sound store)."""
    try:
        store_attrs(path)
    except StoreError as exc:
        what = f"field '{exc.field}': {exc.message}" if exc.field else exc.message
        return [Problem("/", what, exc.hint or "this store cannot be checked further")]
    problems = _layout_problems(path)
    if any(p.repair == "" and "missing" in p.what for p in problems):
        return problems
    committed = layout.committed_nodes(path) or {}
    problems += _chunk_problems(committed)
    models = _read_group(path, MODELS_GROUP)
    if models is not None:
        problems += _duplicates(MODELS_GROUP, models)
    for suite, transform in list_groups(path, "probes"):
        group = probe_group(suite, transform)
        probes = _read_group(path, group)
        if probes is None:
            continue
        problems += _duplicates(group, probes)
        problems += _probe_rows(path, group, probes, models)
        for derived in (matrices_group(suite, transform), measures_group(suite, transform)):
            rows = _read_group(path, derived)
            if rows is not None:
                problems += _duplicates(derived, rows)
                problems += _derived_rows(derived, rows, probes)
    problems += _leftover_files(path)
    problems += _old_layout(path, committed)
    return problems


def repair_store(path) -> tuple[list[Problem], list[Problem]]:
    """Mend what can be mended safely; return (mended, left) problems.

    Holds the store's writer lock; never touches a finished model's data.
    """
    from ml4ml.store.lock import writing

    with writing(path, "ml4ml store repair", recover=False):
        problems = check_store(path)
        mended, left = [], []
        if any(p.repair == "rollback" for p in problems):
            layout.recover(path, full=True)
            mended += [p for p in problems if p.repair == "rollback"]
            problems = check_store(path)
        for problem in problems:
            if problem.repair == "clear":
                clear_done(path, problem.where, list(problem.mids))
                mended.append(problem)
            elif problem.repair == "delete":
                for file in problem.files:
                    Path(file).unlink(missing_ok=True)
                mended.append(problem)
            elif problem.repair != "rollback":
                left.append(problem)
    return mended, left


# --------------------------------------------------------------------------- checks
def _layout_problems(path) -> list[Problem]:
    committed = layout.committed_nodes(path)
    if committed is None:
        return [Problem("/", "the store has no committed layout (consolidated metadata)",
                        "it was not written by this ml4ml; rebuild it")]
    actual = layout.actual_nodes(path)
    out = []
    for node in sorted(p for p in committed if p not in actual):
        out.append(Problem(node or "/", "listed in the committed layout but missing",
                           "its data is lost: rebuild the store, or rerun the stage that "
                           "wrote it into a new store"))
    extra = sorted(p for p in actual if p not in committed)
    changed = sorted(p for p in actual if p in committed and actual[p] != committed[p])
    if extra or changed:
        names = ", ".join((extra + changed)[:3])
        out.append(Problem("/", f"a layout change was never committed ({len(extra)} new, "
                           f"{len(changed)} changed node(s), e.g. {names}): a writer died",
                           "run 'ml4ml store repair' (or any stage) to roll it back",
                           repair="rollback"))
    return out


def _chunk_problems(committed: dict) -> list[Problem]:
    out = []
    for node, metadata in committed.items():
        if metadata.get("node_type") != "array":
            continue
        names = metadata.get("dimension_names") or []
        if dims.MID not in names:
            continue
        chunks = metadata["chunk_grid"]["configuration"]["chunk_shape"]
        shape = metadata["shape"]
        axis = names.index(dims.MID)
        name = node.rsplit("/", 1)[-1]
        # tables written by the driver alone: the models table, labels and assess groups
        table_group = node.split("/")[0] in (MODELS_GROUP, "labels", "assess")
        table = name in ROW_TABLE_VARIABLES or name == dims.MID or table_group
        expected = ROW_CHUNK if table else 1
        # expert ratings: one chunk row per rater (raters write their own rows)
        others_whole = all(c >= s or (names[k] == "rater" and c == 1)
                           for k, (c, s) in enumerate(zip(chunks, shape)) if k != axis)
        if chunks[axis] != expected or not others_whole:
            out.append(Problem(node, f"chunks {chunks} for shape {shape}; expected "
                               f"{expected} row(s) per chunk along mid and whole chunks "
                               f"elsewhere", "rebuild this group: its writers could share "
                               "chunks"))
    return out


def _old_layout(path, committed: dict) -> list[Problem]:
    """Groups in the layout of earlier ml4ml versions, each with the command that rewrites
    it: an assess group whose dim is 'method' (now 'estimator'), matrices and measures
    whose levels are named layer<i>_<stat> (now after the layers' modules)."""
    out = []
    for node, metadata in sorted(committed.items()):
        parts = node.split("/")
        if metadata.get("node_type") != "array" or len(parts) < 2:
            continue
        if parts[0] == "assess" and len(parts) == 3 and parts[2] == "method":
            out.append(Problem(f"assess/{parts[1]}", f"dim 'method' is the old name of "
                               f"'{dims.ESTIMATOR}'", f"run 'ml4ml assess {path} --transform "
                               f"{parts[1]} --force' to rewrite it"))
        if parts[0] in ("matrices", "measures") and len(parts) == 4 and parts[3] == dims.LEVEL:
            group = "/".join(parts[:3])
            zgroup = _read_group(path, group)
            if zgroup is None or dims.LAYER_NAME not in zgroup:
                continue
            levels = [str(v) for v in zgroup[dims.LEVEL][:].tolist()]
            done = np.asarray(zgroup[dims.DONE][:], dtype=bool)
            names = np.asarray(zgroup[dims.LAYER_NAME][:], dtype=object)[done]
            if not len(names):
                continue
            expected = dims.level_names(dims.layer_prefixes(names))
            if levels != expected:
                out.append(Problem(group, f"levels named {levels[1]}, ... (before levels "
                                   f"took the layers' module names, {expected[1]}, ...)",
                                   f"run 'ml4ml measure {path} --force' to measure every "
                                   f"model again"))
    return out


def _read_group(path, group):
    try:
        return zarr_group(path, group, mode="r")
    except Exception:
        return None


def _mids(zgroup) -> list[str]:
    return [str(m) for m in zgroup[dims.MID][:].tolist()]


def _duplicates(group: str, zgroup) -> list[Problem]:
    mids = _mids(zgroup)
    seen, twice = set(), []
    for m in mids:
        if m in seen:
            twice.append(m)
        seen.add(m)
    if not twice:
        return []
    return [Problem(group, f"model id(s) {sorted(set(twice))} appear more than once",
                    "rebuild this group (rerun its stage with --force into a new store)")]


def _probe_rows(path, group, zgroup, models) -> list[Problem]:
    out = []
    mids = _mids(zgroup)
    done = np.asarray(zgroup[dims.DONE][:], dtype=bool)
    recorded = [str(d) for d in zgroup[DIGEST][:].tolist()]
    source = [str(s) for s in zgroup[SOURCE][:].tolist()]
    damaged, altered = [], []
    arrays = {name: zgroup[name] for name in RESPONSES if name in zgroup}
    for row in np.flatnonzero(done):
        values = {name: array[int(row)] for name, array in arrays.items()}
        bad = [name for name, v in values.items()
               if (v.dtype.kind == "f" and not np.isfinite(v).all())
               or (name == dims.PREDICTION and (v < 0).any())]
        if bad:
            damaged.append((mids[row], bad[0]))
        elif probe_digest({k: v.astype(object) if v.dtype.kind == "T" else v
                           for k, v in values.items()}) != recorded[row]:
            altered.append(mids[row])
    if damaged:
        out.append(Problem(group, f"{len(damaged)} done model(s) hold missing or non-finite "
                           f"values, e.g. {damaged[0][0]} in '{damaged[0][1]}'",
                           "run 'ml4ml store repair' to clear their done flags, then "
                           "'ml4ml probe' again", repair="clear",
                           mids=tuple(m for m, _ in damaged)))
    if altered:
        out.append(Problem(group, f"{len(altered)} done model(s) no longer match the checksum "
                           f"recorded when they were written, e.g. {altered[0]}",
                           "run 'ml4ml store repair' to clear their done flags, then "
                           "'ml4ml probe' again", repair="clear", mids=tuple(altered)))
    if models is not None and "checkpoint_sha256" in models:
        model_sha = dict(zip(_mids(models), [str(s) for s in models["checkpoint_sha256"][:]]))
        stale = [m for m, ok, s in zip(mids, done, source)
                 if ok and model_sha.get(m) and s != model_sha[m]]
        if stale:
            out.append(Problem(group, f"{len(stale)} done model(s) were probed from another "
                               f"checkpoint than the model's now, e.g. {stale[0]}",
                               "run 'ml4ml probe' (it redoes them), or 'ml4ml store "
                               "repair' to clear their done flags", repair="clear",
                               mids=tuple(stale)))
    return out


def _derived_rows(group, zgroup, probes) -> list[Problem]:
    mids = _mids(zgroup)
    done = np.asarray(zgroup[dims.DONE][:], dtype=bool)
    digests = [str(d) for d in zgroup[PROBE_DIGEST][:].tolist()]
    probe_done = dict(zip(_mids(probes), np.asarray(probes[dims.DONE][:], dtype=bool)))
    probe_digests = dict(zip(_mids(probes), [str(d) for d in probes[DIGEST][:].tolist()]))
    stale = [m for m, ok, d in zip(mids, done, digests)
             if ok and (not probe_done.get(m) or probe_digests.get(m) != d)]
    if not stale:
        return []
    return [Problem(group, f"{len(stale)} done row(s) were computed from other probe data "
                    f"than the store holds now, e.g. {stale[0]}",
                    "run 'ml4ml measure' (it redoes them), or 'ml4ml store repair' to "
                    "clear their done flags", repair="clear", mids=tuple(stale))]


def _leftover_files(path) -> list[Problem]:
    root = local_root(path)
    if root is None or not root.is_dir():
        return []
    partial = sorted(str(f) for f in root.rglob("*.partial"))
    out = []
    if partial:
        out.append(Problem("/", f"{len(partial)} temporary file(s) of an interrupted write, "
                           f"e.g. {Path(partial[0]).relative_to(root)}",
                           "run 'ml4ml store repair' to delete them", repair="delete",
                           files=tuple(partial)))
    checkpoints = Path(str(root).rstrip("/") + ".checkpoints")
    if checkpoints.is_dir():
        orphans = sorted(str(f) for f in checkpoints.glob(".tmp-*.pt"))
        if orphans:
            out.append(Problem(str(checkpoints), f"{len(orphans)} temporary checkpoint(s) "
                               "of an interrupted training", "run 'ml4ml store repair' (or "
                               "'ml4ml train') to delete them", repair="delete",
                               files=tuple(orphans)))
    return out
