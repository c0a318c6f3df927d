"""``ml4ml store check`` and ``store repair``: find what is wrong with a store, mend what is safe.

``check_store`` lists every problem it finds, each with where it is, what is wrong and how
to mend it: the schema; uncommitted or missing layout; the chunk layout; every chunk of
every group, read once (``store.chunks``): a truncated, corrupt or missing one is named
with its group, variable and the model ids it holds, a missing one counting as damage
only where a complete (``done``) row must have written it (the chunk scan:
``store.check_chunks``); duplicate model ids; ``done`` flags against the data (a done probe row holds no NaN or -1, and its
responses still hash to the digest recorded when they were written); lineage (a probe made
from another checkpoint than the model's; a matrices or measures row computed from other
probe data); rows of probes, matrices, measures, labels and assess whose model id the
``models`` table lacks (``_unregistered``); matrices and measures whose level labels are an
earlier version's or whose ``level_module`` is out of date (``check_levels``); temporary
files a killed writer left. ``repair_store`` mends what can be
mended without touching a finished model: it rolls back uncommitted layout, clears the
``done`` flag of rows whose data is missing, damaged or stale (the next run of their stage
redoes them), first deleting unreadable chunks (they read as the fill value then), and
deletes temporary files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml4ml import dims
from ml4ml.errors import StoreError
from ml4ml.store import layout
from ml4ml.store.backend import local_root
from ml4ml.store.check_chunks import (CHECKPOINT_SHA, FLAGS, KEEP, Problem, assess_command,
                                      chunk_damage, chunk_layout_problems, data_groups,
                                      listed, scanned_values, spec_command)
from ml4ml.store.check_levels import level_problems
from ml4ml.store.removal import pending_problems
from ml4ml.store.chunks import read_rows, scan_group
from ml4ml.store.groups import (MODELS_GROUP, list_groups, matrices_group, measures_group,
                                probe_group, store_attrs, zarr_group)
from ml4ml.store.lineage import fresh_rows, probe_state
from ml4ml.store.probes import (DIGEST, RESPONSES, SOURCE, UNIT_ARRAYS, probe_digest,
                                unit_digest_values)
from ml4ml.store.rows import PROBE_DIGEST, clear_done

__all__ = ["Problem", "check_store", "repair_store"]


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
    problems += chunk_layout_problems(committed)
    # every chunk of every group read once: damaged rows are listed here and left out of
    # the row checks below (their values are unknown)
    scans, hurt = {}, {}
    for group in data_groups(committed):
        scans[group] = scan_group(path, group, keep=KEEP)
        found, hurt[group] = chunk_damage(path, group, scans[group], committed)
        problems += found
    models = scans.get(MODELS_GROUP)
    if models is not None and dims.MID in models:
        problems += _duplicates(MODELS_GROUP, models)
    for suite, transform in list_groups(path, "probes"):
        group = probe_group(suite, transform)
        probes = scans.get(group)
        if probes is None or dims.MID not in probes:
            continue
        problems += _duplicates(group, probes)
        problems += _probe_rows(path, group, probes, hurt[group], models)
        for derived in (matrices_group(suite, transform), measures_group(suite, transform)):
            rows = scans.get(derived)
            if rows is not None and dims.MID in rows:
                problems += _duplicates(derived, rows)
                problems += _derived_rows(derived, rows, hurt[derived], probes, hurt[group])
    problems += _unregistered(path, scans, hurt)
    problems += _leftover_files(path)
    problems += [Problem(*found) for found in pending_problems(path)]
    problems += _old_layout(path, committed)
    problems += _level_problems(path, committed)
    return problems


def repair_store(path) -> tuple[list[Problem], list[Problem]]:
    """Mend what can be mended safely; return (mended, left) problems.

    Holds the store's writer lock; never touches a finished model's data. Unreadable
    chunks are deleted (they read as the fill value then) before the flags of the models
    they held are cleared, so the stage that wrote them writes them again.
    """
    from zarr.core.sync import sync

    from ml4ml.store.backend import zarr_store
    from ml4ml.store.lock import writing

    with writing(path, "ml4ml store repair", recover=False):
        problems = check_store(path)
        mended, left = [], []
        if any(p.repair == "rollback" for p in problems):
            layout.recover(path, full=True)
            mended += [p for p in problems if p.repair == "rollback"]
            problems = check_store(path)
        store = zarr_store(path)
        for problem in problems:  # first every unreadable chunk, then the flags
            for key in problem.chunks if problem.repair == "clear" else ():
                sync(store.delete(key))
        for problem in problems:
            if problem.repair == "clear":
                if problem.mids and problem.flag:
                    clear_done(path, problem.where, list(problem.mids), flag=problem.flag)
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


def _old_layout(path, committed: dict) -> list[Problem]:
    """Groups in the layout of earlier ml4ml versions, each with the command that rewrites
    it: an assess group whose dim is 'method' (now 'estimator'); a measures group without
    ``response_value``."""
    out = []
    for node, metadata in sorted(committed.items()):
        parts = node.split("/")
        if metadata.get("node_type") != "array" or len(parts) < 2:
            continue
        if parts[0] == "measures" and len(parts) == 4 and parts[3] == dims.VALUE and \
                "/".join(parts[:3] + [dims.RESPONSE_VALUE]) not in committed:
            out.append(Problem("/".join(parts[:3]), f"has no response measures "
                               f"('{dims.RESPONSE_VALUE}'; measured by an earlier ml4ml)",
                               f"run 'ml4ml measure {path} --force' to add them (a plain "
                               f"'ml4ml measure {path}' adds them too, from the stored "
                               f"probes)"))
        if parts[0] == "assess" and len(parts) == 3 and parts[2] == "method":
            out.append(Problem(f"assess/{parts[1]}", f"dim 'method' is the old name of "
                               f"'{dims.ESTIMATOR}'", f"run 'ml4ml assess {path} --transform "
                               f"{parts[1]}' to rewrite it"))
    return out


def _level_problems(path, committed: dict) -> list[Problem]:
    """Matrices and measures groups whose levels are not this version's, or whose
    ``level_module`` is out of date (``store.check_levels``), each with its mend."""
    return [Problem(group, what, mend) for group, what, mend in level_problems(path, committed)]


def _read_group(path, group):
    try:
        return zarr_group(path, group, mode="r")
    except Exception:
        return None


# ------------------------------------------------------------------------ row checks
def _mids(scans) -> list[str]:
    return [str(m) for m in scans[dims.MID].values.tolist()]


def _duplicates(group: str, scans) -> list[Problem]:
    lost = scans[dims.MID].bad_rows()
    mids = [m for k, m in enumerate(_mids(scans)) if k not in lost]
    seen, twice = set(), []
    for m in mids:
        if m in seen:
            twice.append(m)
        seen.add(m)
    if not twice:
        return []
    return [Problem(group, f"model id(s) {sorted(set(twice))} appear more than once",
                    "rebuild this group (rerun its stage with --force into a new store)")]


def _done(scans, hurt) -> np.ndarray:
    """The done flags, False for rows of damaged chunks (listed on their own)."""
    done = np.asarray(scans[dims.DONE].values, dtype=bool).copy()
    done[list(hurt)] = False
    return done


def _probe_rows(path, group, scans, hurt, models) -> list[Problem]:
    out = []
    mids = _mids(scans)
    done = _done(scans, hurt)
    recorded = [str(d) for d in scans[DIGEST].values.tolist()]
    source = [str(s) for s in scans[SOURCE].values.tolist()]
    damaged, altered = [], []
    zgroup = zarr_group(path, group, mode="r", committed=True)
    arrays = {name: zgroup[name] for name in RESPONSES + UNIT_ARRAYS if name in zgroup}
    labels = zgroup[dims.UNIT_LABEL][:].tolist() if dims.UNIT_LABEL in zgroup else []
    for row, values in read_rows(arrays, np.flatnonzero(done)):
        units = {name: values.pop(name) for name in UNIT_ARRAYS if name in values}
        bad = [name for name, v in values.items()
               if (v.dtype.kind == "f" and not np.isfinite(v).all())
               or (name == dims.PREDICTION and (v < 0).any())]
        if units and labels:  # NaN padding aside (a unit NaN throughout), finite
            own = ~np.isnan(units[dims.UNIT_RESPONSE].reshape(-1, len(labels))).all(axis=0)
            bad += [name for name, v in units.items() if not np.isfinite(v[..., own]).all()]
            if own.any():
                values.update(unit_digest_values([labels[k] for k in np.flatnonzero(own)],
                                                 {n: v[..., own] for n, v in units.items()}))
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
    sha = scanned_values(models, CHECKPOINT_SHA) if models is not None else None
    if sha is not None and dims.MID in models:
        model_sha = {m: str(s) for k, (m, s) in enumerate(zip(_mids(models), sha.tolist()))
                     if k not in models[CHECKPOINT_SHA].bad_rows()}
        stale = [m for m, ok, s in zip(mids, done, source)
                 if ok and model_sha.get(m) and s != model_sha[m]]
        if stale:
            out.append(Problem(group, f"{len(stale)} done model(s) were probed from another "
                               f"checkpoint than the model's now, e.g. {stale[0]}",
                               "run 'ml4ml probe' (it redoes them), or 'ml4ml store "
                               "repair' to clear their done flags", repair="clear",
                               mids=tuple(stale)))
    return out


def _derived_rows(group, scans, hurt, probes, probes_hurt) -> list[Problem]:
    mids = _mids(scans)
    done = _done(scans, hurt)
    probe_done, probe_digest = probe_state(mids, _mids(probes), _done(probes, set()),
                                           probes[DIGEST].values)
    fresh = fresh_rows(done, scans[PROBE_DIGEST].values, probe_done, probe_digest)
    unknown = {m for k, m in enumerate(_mids(probes)) if k in probes_hurt}
    stale = [m for m, ok, new in zip(mids, done, fresh) if ok and not new and m not in unknown]
    if not stale:
        return []
    return [Problem(group, f"{len(stale)} done row(s) were computed from other probe data "
                    f"than the store holds now, e.g. {stale[0]}",
                    "run 'ml4ml measure' (it redoes them), or 'ml4ml store repair' to "
                    "clear their done flags", repair="clear", mids=tuple(stale))]


# ------------------------------------------------------------ rows of unknown models
DERIVED = ("probes", "matrices", "measures", "labels", "assess")


def _unregistered(path, scans, hurt) -> list[Problem]:
    """Rows of derived groups whose model id the ``models`` table does not have.

    A probe, matrices or measures row counts once it is complete (``done``): a row not done
    yet is a placeholder (a model of the spec not trained yet, say). Every row of a labels
    or assess group counts: their ``mid`` axis is written from the models table. The other
    way round is no damage: a model with no row in a group is one its stage has not
    reached yet (the next run of that stage does it). Nothing is judged while the models
    table's own ids are unreadable (that damage is listed on its own).
    """
    models = scans.get(MODELS_GROUP)
    if models is not None and dims.MID in models and models[dims.MID].bad_rows():
        return []
    known = set(_mids(models)) if models is not None and dims.MID in models else set()
    out = []
    for group in sorted(scans):
        kind, rows = group.split("/")[0], scans[group]
        if kind not in DERIVED or dims.MID not in rows:
            continue
        lost = rows[dims.MID].bad_rows() | hurt.get(group, set())
        counts = (_done(rows, lost) if kind in FLAGS and dims.DONE in rows
                  else np.ones(len(_mids(rows)), dtype=bool))
        unknown = [m for k, m in enumerate(_mids(rows)) if counts[k] and k not in lost
                   and m not in known]
        if unknown:
            out.append(_unknown_problem(path, group, kind, unknown, known, scans))
    return out


def _unknown_problem(path, group, kind, unknown, known, scans) -> Problem:
    import difflib

    hints = [f"{m!r} (the table has {close[0]!r})" for m in unknown
             if (close := difflib.get_close_matches(m, sorted(known), n=1, cutoff=0.5))]
    what = (f"{len(unknown)} row(s) hold results of model id(s) the models table does not "
            f"have: {listed(unknown)}" + (f"; a changed id? {listed(hints, 3)}" if hints
                                          else ""))
    parts = group.split("/")
    example = unknown[0]
    spec = spec_command(path, "train")
    if spec.endswith("PIPELINE"):  # no spec recorded: a store of imported models
        suite, transform = (parts[1], parts[2]) if kind in ("probes", "matrices",
                                                            "measures") else ("SUITE", parts[1])
        register = (f"'ml4ml import-legacy {path} --mid {example} --suite {suite} "
                    f"--transform {transform} --force --results FILE --act FILE'")
    else:
        register = (f"'{spec}' if the spec lists it, or 'ml4ml add-models {path} FILE "
                    f"--mid {example}' for a model trained elsewhere")
    register = f"register each under its id, e.g. {register}"
    if kind in ("matrices", "measures"):
        return Problem(group, what, f"run 'ml4ml store repair {path}' (it clears their done "
                       f"flags), {register}, then 'ml4ml measure {path}'", repair="clear",
                       mids=tuple(unknown))
    if kind == "assess":
        attrs = (layout.committed_nodes(path) or {}).get(group, {}).get("attributes", {})
        return Problem(group, what, f"{register}, or rerun the assessment, which writes the "
                       f"group anew from the models table: "
                       f"'{assess_command(path, parts[1], attrs, scans[group])}'")
    rebuild = ("; if an id is wrong, rebuild the store (rerun its stages into a new one): "
               "'store repair' cannot rename a model")
    return Problem(group, what, register + rebuild)


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
