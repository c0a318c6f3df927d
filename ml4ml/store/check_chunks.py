"""``store check``'s chunk scan: the chunk layout, and every chunk of every group read once.

``chunk_layout_problems`` checks that writers never share a chunk (one row per chunk along
``mid`` where workers write, ``ROW_CHUNK`` rows in the driver's tables).
``chunk_damage`` maps the unreadable and missing chunks of one group (scanned by
``store.chunks.scan_group``) to the rows and model ids they hold, a missing chunk counting
as damage only where a complete (``done``) row must have written it, each with the command
that mends it. ``Problem``, the one result type of ``store check``, is defined here and
re-exported by ``store.check``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml4ml import dims
from ml4ml.store.arrays import ROW_CHUNK, ROW_TABLE_VARIABLES
from ml4ml.store.groups import MODELS_GROUP, store_attrs
from ml4ml.store.probes import DIGEST, SOURCE
from ml4ml.store.rows import PROBE_DIGEST

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


def chunk_layout_problems(committed: dict) -> list[Problem]:
    """Arrays along ``mid`` whose chunks writers could share (from the committed layout)."""
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


def data_groups(committed: dict) -> list[str]:
    """The committed groups that hold arrays (models, probes/s/t, ..., assess/t)."""
    return sorted({node.rsplit("/", 1)[0] for node, meta in committed.items()
                   if meta.get("node_type") == "array" and "/" in node})


def chunk_damage(path, group, scans, committed) -> tuple[list[Problem], set]:
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
                + (f", holding the model ids of rows {listed([str(r) for r in sorted(rows)])}"
                   if name == dims.MID else f", holding model(s) {listed(held)}"
                   if not whole else f" (every model of the group: {listed(held)})"))
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
            sources = scanned_values(scans, "source")
            rows = {r for r in rows if sources is None or str(sources[r]) != "added"}
        return (not scan.along_mid) or (name in MODELS_REQUIRED and bool(rows & done))
    if kind in OPTIONAL:
        return (not scan.along_mid) or (name not in OPTIONAL[kind] and bool(rows & done))
    required = LABELS_REQUIRED if kind == "labels" else ASSESS_REQUIRED
    return name in required


def _written(value) -> bool:
    return value not in ("", None) and not (isinstance(value, float) and np.isnan(value))


def listed(names, most=20) -> str:
    """``names`` joined by commas, at most ``most`` of them and how many more."""
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
                       f"'{assess_command(path, parts[1], attrs, scans)}'")
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
            again = (f"'{spec_command(path, 'probe')}' (it probes exactly the models "
                     "repair cleared)")
    elif kind in ("matrices", "measures"):
        again = f"'ml4ml measure {path} --suite {parts[1]} --transform {parts[2]}'"
    else:
        again = (f"'{spec_command(path, 'train')}' (it retrains exactly them; "
                 f"'{spec_command(path, 'probe')}' then redoes their probes if a checkpoint "
                 "differs)")
    return Problem(group, what, repair + again, repair="clear", mids=mids, flag=flag,
                   chunks=tuple(keys))


def spec_command(path, verb: str) -> str:
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
    # the chunk index: the key's last components (keys "c/0/1", or "0/1" in the v2
    # encoding a group takes after 'remove-models')
    index = {tuple(int(i) for i in k.split("/")[-len(scan.dims):]) for k in keys}
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


def assess_command(path, transform, attrs, scans) -> str:
    """The ``ml4ml assess`` command that writes the assess group of ``transform`` anew."""
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


def scanned_values(scans, name):
    """The values the chunk scan kept of ``name`` (None when it has none)."""
    scan = scans.get(name)
    return None if scan is None else scan.values
