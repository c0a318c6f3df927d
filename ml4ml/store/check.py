"""``ml4ml store check`` and ``store repair``: find what is wrong with a store, mend what is safe.

``check_store`` lists every problem it finds, each with where it is, what is wrong and how
to mend it: the schema; uncommitted or missing layout; the chunk layout; every chunk of
every group, read once (``store.chunks``): a truncated, corrupt or missing one is named
with its group, variable and the model ids it holds, a missing one counting as damage
only where a complete (``done``) row must have written it; duplicate model ids; ``done`` flags against the data (a done probe row holds no NaN or -1, and its
responses still hash to the digest recorded when they were written); lineage (a probe made
from another checkpoint than the model's; a matrices or measures row computed from other
probe data); rows of probes, matrices, measures, labels and assess whose model id the
``models`` table lacks (``_unregistered``); temporary files a killed writer left. ``repair_store`` mends what can be
mended without touching a finished model: it rolls back uncommitted layout, clears the
``done`` flag of rows whose data is missing, damaged or stale (the next run of their stage
redoes them), first deleting unreadable chunks (they read as the fill value then), and
deletes temporary files.
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
from ml4ml.store.chunks import read_rows, scan_group
from ml4ml.store.groups import (MODELS_GROUP, list_groups, matrices_group, measures_group,
                                probe_group, store_attrs, zarr_group)
from ml4ml.store.lineage import fresh_rows, probe_state
from ml4ml.store.probes import DIGEST, RESPONSES, SOURCE, probe_digest
from ml4ml.store.rows import PROBE_DIGEST, clear_done

__all__ = ["Problem", "check_store", "repair_store"]

TRAINED = "trained"  # the models table's flag (ml4ml.zoo.stage)
CHECKPOINT_SHA = "checkpoint_sha256"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store: where, what, how to mend it, and what repair does."""

    where: str
    what: str
    mend: str
    repair: str = ""  # "rollback", "clear", "delete" or "" (repair cannot mend it)
    mids: tuple = ()  # rows a "clear" repair clears
    files: tuple = ()  # files a "delete" repair removes
    flag: str = dims.DONE  # the flag a "clear" repair clears ("": none)
    chunks: tuple = ()  # store keys of unreadable chunks a "clear" repair deletes first

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
    # every chunk of every group read once: damaged rows are listed here and left out of
    # the row checks below (their values are unknown)
    scans, hurt = {}, {}
    for group in _data_groups(committed):
        scans[group] = scan_group(path, group, keep=KEEP)
        found, hurt[group] = _chunk_damage(path, group, scans[group], committed)
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
    problems += _old_layout(path, committed)
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


# ------------------------------------------------------------------- damaged chunks
# the small arrays the row checks read, kept whole by the chunk scan
KEEP = frozenset({dims.MID, dims.DONE, TRAINED, DIGEST, SOURCE, PROBE_DIGEST, CHECKPOINT_SHA,
                  "source", "source_description", "rater", dims.ESTIMATOR,
                  dims.ESTIMATOR_KIND, "method"})
# per kind of group: the flag that says a model's row is complete, and the array whose
# value a complete row always holds (it tells a lost flag chunk from one never written)
FLAGS = {MODELS_GROUP: (TRAINED, CHECKPOINT_SHA), "probes": (dims.DONE, DIGEST),
         "matrices": (dims.DONE, PROBE_DIGEST), "measures": (dims.DONE, PROBE_DIGEST)}
# arrays along mid whose chunks may be missing for a complete row (they may hold nothing
# but the fill value, and Zarr writes no chunk then); every other one is written for it
OPTIONAL = {"probes": {"error"}, "matrices": set(), "measures": set()}
# models: the recipe and outcome values every trained model has
MODELS_REQUIRED = {"arch", "epochs", "lr", "batch_size", "checkpoint", CHECKPOINT_SHA,
                   "test_accuracy"}
# of those, the ones only a model ml4ml trained has (not one added as it is)
TRAINING_OUTCOMES = {"epochs", "lr", "batch_size", "test_accuracy"}
# groups without flags: the arrays that are never all fill (a missing chunk is damage)
LABELS_REQUIRED = {dims.MID, "source", "source_description", "written_at", "rater"}
ASSESS_REQUIRED = {dims.MID, "predicted", dims.ESTIMATOR, dims.ESTIMATOR_KIND, "feature",
                   "repeat",
                   "fold", "accuracy", "assessor"}


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


def _data_groups(committed: dict) -> list[str]:
    """The committed groups that hold arrays (models, probes/s/t, ..., assess/t)."""
    return sorted({node.rsplit("/", 1)[0] for node, meta in committed.items()
                   if meta.get("node_type") == "array" and "/" in node})


def _chunk_damage(path, group, scans, committed) -> tuple[list[Problem], set]:
    """Problems of the unreadable and missing chunks of ``group``; the rows they hurt."""
    kind = group.split("/")[0]
    flag, evidence = FLAGS.get(kind, (None, None))
    ids = scans.get(dims.MID)
    n = ids.shape[0] if ids is not None else 0
    lost = ids.bad_rows() if ids is not None else set()
    done = set()
    if flag and flag in scans:
        done = set(np.flatnonzero(np.asarray(scans[flag].values, dtype=bool)).tolist())
    found = {}  # (name, state) -> [rows, keys, why]
    for name, scan in scans.items():
        chunks = [(index, "unreadable", scan.damaged[index]) for index in scan.damaged]
        for index in scan.missing:
            rows = set(scan.rows(index)) if scan.along_mid else set(range(n))
            if _is_damage(kind, name, scan, index, rows, done, scans, evidence):
                chunks.append((index, "missing", ""))
        for index, state, why in chunks:
            entry = found.setdefault((name, state), [set(), [], why, 0])
            entry[3] += 1
            rows = set(scan.rows(index)) if scan.along_mid else set(range(n))
            if state == "missing" and name == flag:  # only the rows that were complete
                rows = {r for r in rows if scan.values is None or
                        _written(scans[evidence].values[r] if evidence in scans else "")}
            entry[0] |= rows
            entry[1].append(scan.keys[index])
            if state == "missing" and name == flag:  # its evidence goes too: never done
                entry[1].append(scan.keys[index].replace(f"/{flag}/c", f"/{evidence}/c", 1))
    problems, hurt = [], set()
    mids = ids.values if ids is not None and ids.values is not None else np.array([])
    for (name, state), (rows, keys, why, count) in sorted(found.items()):
        hurt |= rows
        held = [str(mids[r]) if r not in lost and r < len(mids) else f"row {r}"
                for r in sorted(rows)]
        whole = not scans[name].along_mid or name == dims.MID
        what = (f"{count} chunk(s) of '{name}' "
                + (f"cannot be read (truncated or corrupt: {why})" if state == "unreadable"
                   else "are missing (written once, now gone)")
                + (f", holding the model ids of rows {_listed([str(r) for r in sorted(rows)])}"
                   if name == dims.MID else f", holding model(s) {_listed(held)}"
                   if not whole else f" (every model of the group: {_listed(held)})"))
        problems.append(_mend(path, group, kind, name, what, rows, keys, held,
                              lost or whole, flag, scans, committed))
    return problems, hurt


def _is_damage(kind, name, scan, index, rows, done, scans, evidence) -> bool:
    """Whether the missing chunk ``index`` of ``name`` lost data (else: never written)."""
    if not rows and scan.along_mid:
        return False
    if name == dims.MID:
        return True
    flag = FLAGS.get(kind, (None, None))[0]
    if name == flag:  # a lost flag chunk: complete rows hold their evidence value
        if evidence not in scans or scans[evidence].values is None:
            return False
        return any(_written(scans[evidence].values[r]) for r in rows)
    if kind == MODELS_GROUP:
        if name in TRAINING_OUTCOMES:  # models trained elsewhere have no training values
            sources = _values(scans, "source")
            rows = {r for r in rows if sources is None or str(sources[r]) != "added"}
        return (not scan.along_mid) or (name in MODELS_REQUIRED and bool(rows & done))
    if kind in OPTIONAL:
        return (not scan.along_mid) or (name not in OPTIONAL[kind] and bool(rows & done))
    required = LABELS_REQUIRED if kind == "labels" else ASSESS_REQUIRED
    return name in required


def _written(value) -> bool:
    return value not in ("", None) and not (isinstance(value, float) and np.isnan(value))


def _listed(names, most=20) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _mend(path, group, kind, name, what, rows, keys, held, whole, flag, scans,
          committed) -> Problem:
    """The Problem of one array's damaged chunks, with the command that mends them."""
    parts = group.split("/")
    mids = tuple(h for h in held if not h.startswith("row "))
    repair = f"run 'ml4ml store repair {path}', then "
    if kind == "assess":
        attrs = committed.get(group, {}).get("attributes", {})
        return Problem(group, what, "rerun the assessment, which writes the group anew: "
                       f"'{_assess_command(path, parts[1], attrs, scans)}'")
    if whole:
        return Problem(group, what, "the group's layout or model ids are lost: rebuild it "
                       "(rerun its stage into a new store)")
    if kind == "labels":
        return Problem(group, what, "run 'ml4ml store repair "
                       f"{path}' (it deletes them), then "
                       + _relabel(path, parts[1], name, keys, scans),
                       repair="clear", flag="", chunks=tuple(keys), mids=mids)
    if kind == "probes":
        sources = scans[SOURCE].values if SOURCE in scans else None
        if sources is not None and all(str(sources[r]) == "legacy" for r in rows):
            again = (f"'ml4ml import-legacy {path} --mid MID --suite {parts[1]} --transform "
                     f"{parts[2]} --force --results FILE --act FILE' for each of them")
        else:
            again = (f"'{_spec_command(path, 'probe')}' (it probes exactly the models "
                     "repair cleared)")
    elif kind in ("matrices", "measures"):
        again = f"'ml4ml measure {path} --suite {parts[1]} --transform {parts[2]}'"
    else:
        again = (f"'{_spec_command(path, 'train')}' (it retrains exactly them; "
                 f"'{_spec_command(path, 'probe')}' then redoes their probes if a checkpoint "
                 "differs)")
    return Problem(group, what, repair + again, repair="clear", mids=mids, flag=flag,
                   chunks=tuple(keys))


def _spec_command(path, verb: str) -> str:
    """``ml4ml VERB SPEC`` with the spec that created the store (``PIPELINE`` where it is
    not recorded or gone)."""
    from ml4ml.store.require import pipeline_command

    try:
        return pipeline_command(store_attrs(path), verb, path)
    except Exception:  # noqa: BLE001 - a damaged root: the placeholder
        return f"ml4ml {verb} PIPELINE"


def _relabel(path, transform, name, keys, scans) -> str:
    """The commands that write the labels or ratings of lost chunks again."""
    scan = scans[name]
    axis_name = "source" if "source" in scan.dims else "rater"
    axis = scan.dims.index(axis_name)
    index = {tuple(int(i) for i in k.rsplit("/c/", 1)[1].split("/")) for k in keys}
    names = scans[axis_name].values if axis_name in scans else None
    commands = []
    for position in sorted({i[axis] for i in index}):
        value = str(names[position]) if names is not None else "?"
        if axis_name == "rater":
            commands.append(f"'ml4ml label-ui {path} --transform {transform} --rater {value}' "
                            "(the lost ratings are given again)")
        elif value == "recipe":
            commands.append(f"'ml4ml label {path} --transform {transform} --from recipe'")
        elif value == "expert":
            commands.append(f"'ml4ml label {path} --transform {transform} --merge majority'")
        else:
            described = scans["source_description"].values
            commands.append(f"'ml4ml label {path} --transform {transform} --from FILE --as "
                            f"{value}' (FILE: {described[position] if described is not None else '?'})")
    return " and ".join(commands)


def _assess_command(path, transform, attrs, scans) -> str:
    command = f"ml4ml assess {path} --transform {transform}"
    if attrs.get("suite"):
        command += f" --suite {attrs['suite']}"
    if attrs.get("label_source"):
        command += f" --labels {attrs['label_source']}"
    if "repeats" in attrs:
        command += f" --repeats {attrs['repeats']}"
    if "seed" in attrs:
        command += f" --seed {attrs['seed']}"
    methods, kinds = scans.get(dims.ESTIMATOR), scans.get(dims.ESTIMATOR_KIND)
    if methods is not None and kinds is not None and not (methods.damaged or kinds.damaged):
        chosen = [str(m) for m, k in zip(methods.values, kinds.values) if str(k) == "assessor"]
        if chosen and len(chosen) < 6:
            command += "".join(f" --assessor {m}" for m in chosen)
    return command


# ------------------------------------------------------------------------ row checks
def _values(scans, name):
    scan = scans.get(name)
    return None if scan is None else scan.values


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
    arrays = {name: zgroup[name] for name in RESPONSES if name in zgroup}
    for row, values in read_rows(arrays, np.flatnonzero(done)):
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
    sha = _values(models, CHECKPOINT_SHA) if models is not None else None
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
            f"have: {_listed(unknown)}" + (f"; a changed id? {_listed(hints, 3)}" if hints
                                          else ""))
    parts = group.split("/")
    example = unknown[0]
    spec = _spec_command(path, "train")
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
                       f"'{_assess_command(path, parts[1], attrs, scans[group])}'")
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
