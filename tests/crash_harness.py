"""Kill a small pipeline after its k-th store write, for every k; resume; compare.

Run by tests/test_crash.py as ``python crash_harness.py WORKDIR SIGNAL STAGE [WORKERS
[EVERY]]``, in a process of its own (EVERY = n: only after writes 1, 1 + n, ... and the
last). It imports everything first and never computes or opens a store before
forking, so each child forks from a clean process (no OpenMP or zarr threads yet).
STAGE is ``train``, ``probe``, ``measure``, ``assess``, ``remove`` (``remove-models`` of a
rated model, after every other stage and an expert's ratings), ``add-models`` (two models
trained elsewhere, state dicts, added to a trained store) or ``add-models-force`` (both
replaced with ``--force``, one by a torch.export program, in a trained, probed store that
holds them): a base store is built up to that stage, and for each k = 1 .. W (W: the writes of
an uninterrupted run of the stage, counted by a first run), on a copy of the base store:

1. a child runs the stage with ``ML4ML_FAULT_AFTER_WRITES=k`` and dies (SIGKILL) or gets a
   Ctrl-C (INT) right after its k-th write of a store key or checkpoint file;
2. the rows finished at that moment are recorded (their done flags and the bytes of
   their chunk files);
3. a second child runs the same stage again with no fault: it must finish;
4. the store is compared with the uninterrupted run's, array by array, bitwise (NaN
   equal to NaN), except wall-clock seconds and checkpoint paths; every row finished at
   the crash must still be done, with the same chunk bytes (for ``add-models-force``:
   every row but the replaced models'); no temporary file of an interrupted write is
   left (``leftover_files``: the rerun cleans up after the crash); for the add-models
   stages, ``store check`` finds nothing.

Writes a JSON report to WORKDIR/report.json.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np

SPEC = """
name = "crash"
[store]
path = "db.zarr"
[suites.digits]
n_samples = 12
[transforms.rotation]
grid = [-2, 2, 5]
[zoo]
arch = "cnn5"
epochs = 1
n_train = 48
batch_size = 24
augmentation = "rotation"
aug_range = 10
[[zoo.models]]
mid = "m001"
[[zoo.models]]
mid = "t001"
holdout = true
seed = 1
[probe]
batch_size = 64
lie_derivative = true   # the probes' lee (mid, sample) crashes and resumes with the rest
"""

# the same, probing every recorded channel too (the unit dim grown by the driver)
UNITS_SPEC = SPEC.replace("[probe]\n", "[probe]\nunits = \"channel\"\n")

# values that may differ between runs without the data differing
VOLATILE = {"models/train_seconds", "models/checkpoint", "labels/rotation/written_at"}


def canonical_skops(blob: bytes) -> tuple:
    """A skops file with its object ids made canonical.

    skops names the members that hold arrays, and tags every node, after ``id()`` of the
    objects, and stamps the members with the time: two runs give other bytes for the same
    estimator. Numbering the ids in their order of first mention in ``schema.json`` leaves
    the content to compare, bit for bit."""
    import io
    import re
    import zipfile

    with zipfile.ZipFile(io.BytesIO(bytes(blob))) as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    schema = members.pop("schema.json").decode()
    ids = re.compile(r'(?<="__id__": )\d+|(?<=")\d+(?=\.npy")')
    number = {}
    schema = ids.sub(lambda m: str(number.setdefault(m.group(), len(number))), schema)
    order = [f"{i}.npy" for i in number if f"{i}.npy" in members]
    return schema, [members[name] for name in order], len(members) - len(order)


# the assess stage needs both kinds of label and two hold-out models (its verdict's test
# is over them): two more models
ASSESS_MODELS = """
[[zoo.models]]
mid = "m002"
aug_range = 0
seed = 2
[[zoo.models]]
mid = "t002"
holdout = true
seed = 3
"""


ADDED = ("a1", "a2")  # the models trained elsewhere of the add-models stages


def _added_files(folder: Path, version: int) -> list[Path]:
    """Version 1: two cnn5 state dicts (they load fastest: these tests are about the
    store's writes); version 2 (for ``--force``): the first a torch.export program, so
    the replaced row differs in file, sha256 and format, the second other weights."""
    models = folder / "models"
    return [models / ("a1.pt2" if version == 2 else "a1.pt"), models / "a2.pt"]


def write_added_models(folder: Path, version: int) -> int:
    """The files of ``_added_files``, trained elsewhere (seeded weights)."""
    import torch

    from ml4ml.zoo.architectures import build_model

    (folder / "models").mkdir(exist_ok=True)
    for k, file in enumerate(_added_files(folder, version)):
        torch.manual_seed(100 * version + k)
        net = build_model("cnn5", num_classes=10, in_channels=1, image_size=28).eval()
        if file.suffix == ".pt2":
            program = torch.export.export(net, (torch.rand(2, 1, 28, 28),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},))
            torch.export.save(program, file)
        else:
            torch.save(net.state_dict(), file)
    return 0


def add_models(folder: Path, force: bool) -> None:
    """As ``ml4ml add-models db.zarr FILE FILE --mid a1 --mid a2 --arch cnn5 [--force]``."""
    from ml4ml.zoo.adding import AddedModel, register_added, store_suites

    path = str(folder / "db.zarr")
    files = _added_files(folder, 2 if force else 1)
    entries = [AddedModel(mid=mid, checkpoint=str(file), arch="cnn5", base=str(folder))
               for mid, file in zip(ADDED, files)]
    register_added(path, entries, suites=store_suites(path), force=force)


def run_stages(folder: Path, stages: str) -> None:
    from ml4ml.assess.stage import assess_store, label_store
    from ml4ml.config import load_pipeline
    from ml4ml.measure.stage import measure_store
    from ml4ml.probe.stage import probe_pipeline
    from ml4ml.zoo.stage import train_pipeline

    pipeline = load_pipeline(folder / "crash.toml")
    if "t" in stages:
        train_pipeline(pipeline, progress=False)
    if "p" in stages:
        probe_pipeline(pipeline, progress=False)
    if "m" in stages:
        from ml4ml.measure import stage

        stage.BATCH = 1  # a model per graph: the later batches extend the groups the first
        measure_store(pipeline.store, progress=False)  # laid out, and are crashed too
    if "l" in stages:
        label_store(pipeline.store, "rotation", "recipe")
    if "a" in stages:
        assess_store(pipeline.store, "rotation", repeats=2, assessors=["decision_tree"],
                     skip_current=True)
    if "e" in stages:  # expert ratings: a rater's row in the labels group
        from ml4ml.store import writing
        from ml4ml.store.labels import write_rating

        with writing(pipeline.store, "crash test ratings"):
            for mid, label in (("m002", 1), ("t001", 0)):
                write_rating(pipeline.store, "rotation", "ann", mid, label)
    if "r" in stages:  # a model, and every row of it, out of every group
        from ml4ml.zoo.removing import remove_models

        remove_models(pipeline.store, REMOVED, force=True)
    if "A" in stages:
        add_models(folder, force=False)
    if "F" in stages:
        add_models(folder, force=True)


def in_child(function, *args, env=None) -> tuple[int, object]:
    """Run ``function(*args)`` in a forked child; return (exit status, what it returned)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        code = 0
        try:
            if env:
                os.environ.update(env)
            from ml4ml.store import backend

            backend._WRITES["count"] = 0
            value = function(*args)
            payload = json.dumps({"value": value, "writes": backend.writes_done()})
        except KeyboardInterrupt:
            payload, code = json.dumps({"interrupted": True}), 130
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            payload, code = json.dumps({"error": f"{type(exc).__name__}: {exc}"}), 1
        with os.fdopen(write, "w") as stream:
            stream.write(payload)
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as stream:
        payload = stream.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status), None
    return os.WEXITSTATUS(status), json.loads(payload) if payload else None


def fresh(folder: Path, spec: str = SPEC) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "crash.toml").write_text(spec)
    return folder


def _groups(path: Path) -> list[str]:
    """The committed groups that hold arrays."""
    from ml4ml.store.layout import committed_nodes

    nodes = committed_nodes(str(path)) or {}
    return sorted({node.rsplit("/", 1)[0] for node, m in nodes.items()
                   if m.get("node_type") == "array" and "/" in node})


def snapshot(path: Path) -> dict:
    """{group/array: values} of every committed array, plus {file: bytes} of every chunk."""
    from ml4ml.store.groups import read_group

    arrays, files = {}, {}
    for group in _groups(path):
        ds = read_group(str(path), group)
        for name, var in ds.variables.items():
            arrays[f"{group}/{name}"] = var.values
            if group.startswith("assess/") and name == "assessor":
                arrays[f"{group}/{name}"] = canonical_skops(var.values.tobytes())
    for file in path.rglob("*"):
        if file.is_file() and "/c/" in "/" + str(file.relative_to(path)):
            files[str(file.relative_to(path))] = file.read_bytes()
    return {"arrays": arrays, "files": files}


def done_rows(path: Path) -> dict:
    """{group: [mids done]} (``trained`` for the models table) at this moment."""
    from ml4ml.store.groups import read_group

    out = {}
    for group in _groups(path):
        ds = read_group(str(path), group)
        flag = "trained" if group == "models" else "done"
        if flag in ds:
            out[group] = [str(m) for m, f in zip(ds["mid"].values, ds[flag].values) if f]
    return out


def same(a, b) -> bool:
    if isinstance(a, tuple):
        return a == b
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
        return False
    if a.dtype.kind in "fmM":  # NaN (NaT: a rating time never given) equal to NaN
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a.astype(object) if a.dtype.kind == "T" else a,
                               b.astype(object) if b.dtype.kind == "T" else b))


def compare(reference: dict, got: dict) -> list[str]:
    problems = []
    for name, values in reference["arrays"].items():
        if name in VOLATILE:
            continue
        if name not in got["arrays"]:
            problems.append(f"{name} missing")
        elif not same(values, got["arrays"][name]):
            problems.append(f"{name} differs")
    extra = sorted(set(got["arrays"]) - set(reference["arrays"]))
    if extra:
        problems.append(f"extra arrays {extra[:3]}")
    return problems


def leftover_files(store_path) -> list[str]:
    """Temporary files an interrupted write left: ``*.partial`` files anywhere in the store
    (zarr writes each key to one, then renames it into place) and temporary checkpoints
    (``.tmp-*.pt``) in its checkpoints folder; paths relative to the store's parent."""
    store_path = Path(store_path)
    checkpoints = store_path.with_name(store_path.name + ".checkpoints")
    found = [f for f in store_path.rglob("*.partial")] if store_path.is_dir() else []
    if checkpoints.is_dir():
        found += [f for f in checkpoints.rglob("*") if f.name.endswith(".partial")
                  or (f.name.startswith(".tmp-") and f.name.endswith(".pt"))]
    return sorted(str(f.relative_to(store_path.parent)) for f in found)


def assert_no_partial_files(store_path) -> None:
    """AssertionError naming every temporary file an interrupted write left in the store
    (``leftover_files``): a rerun after a crash must clean up after it."""
    left = leftover_files(store_path)
    assert not left, f"{len(left)} temporary file(s) left: {', '.join(left[:5])}"


def _save(obj, file: Path) -> None:
    import pickle

    file.write_bytes(pickle.dumps(obj))


def _load(file: Path):
    import pickle

    return pickle.loads(file.read_bytes())


def _reference_snapshot(store_path: Path, out: Path) -> list[str]:
    """Save the snapshot; the names of its arrays (the report lists them, so a test can
    see which arrays every crash was compared on)."""
    taken = snapshot(store_path)
    _save(taken, out)
    return sorted(taken["arrays"])


STAGES = {"train": ("", "t"), "probe": ("t", "p"), "probe-units": ("t", "p"),
          "measure": ("tp", "m"),
          "assess": ("tpm", "la"), "remove": ("tpmlae", "r"), "add-models": ("t", "A"),
          "add-models-force": ("tpA", "F")}
# the model the remove stage takes out (a regular one between others, rated by an expert)
REMOVED = ["m002"]
PRELOAD = ("torch", "torch._dynamo", "torch.optim", "torchvision", "sklearn.datasets",
           "sklearn.model_selection", "dask.array", "dask.diagnostics", "xarray", "zarr",
           "ml4ml.config", "ml4ml.zoo.stage", "ml4ml.zoo.training", "ml4ml.zoo.architectures",
           "ml4ml.probe.stage", "ml4ml.probe.responses", "ml4ml.data.suites",
           "ml4ml.measure.stage", "ml4ml.measure.measures", "ml4ml.measure.matrices",
           "ml4ml.measure.responses", "ml4ml.measure.response_rows",
           "ml4ml.store", "ml4ml.store.layout", "ml4ml.progress", "distributed",
           "ml4ml.assess.stage", "ml4ml.assess.protocol", "ml4ml.assess.estimators",
           "sklearn.ensemble", "sklearn.tree", "skops.io", "ml4ml.zoo.removing",
           "ml4ml.store.removal", "ml4ml.zoo.adding",
           "ml4ml.zoo.checkpoints", "ml4ml.zoo.export_files", "ml4ml.store.check",
           # what reading a torch.export program imports (else each child imports it again)
           "torch._export.serde.serialize", "torch.export.unflatten", "torch.export._trace",
           "torch._functorch.aot_autograd", "torch.fx.experimental.validator",
           "sympy.combinatorics", "sympy.tensor.tensor", "torch._inductor.sizevars",
           "torch._export.passes._node_metadata_hook")


def _resume_and_compare(folder: Path, stage: str, reference: Path) -> dict:
    """In a fresh child: the rows finished at the crash, the resumed run, the comparison."""
    store_path = folder / "db.zarr"
    finished = done_rows(store_path) if (store_path / "zarr.json").exists() else {}
    if "F" in stage:  # the replaced models' rows are meant to change
        finished = {g: [m for m in mids if m not in ADDED] for g, mids in finished.items()}
    before = snapshot(store_path) if finished and stage != "r" else {"arrays": {},
                                                                     "files": {}}
    run_stages(folder, stage)
    got = snapshot(store_path)
    problems = compare(_load(reference), got)
    if stage == "r":
        # the rows move up: the comparison with the uninterrupted removal is the check (a
        # snapshot taken after the crash reads any group as committed, old or new); and
        # nothing of the interrupted run is left
        problems += [f"left {name}" for name in (".ml4ml-removing", ".ml4ml-pending")
                     if (store_path / name).exists()]
    else:
        problems += untouched(before, got, finished, done_rows(store_path))
    problems += [f"left behind: {name}" for name in leftover_files(store_path)]
    if stage in ("A", "F", "r"):
        from ml4ml.store.check import check_store

        problems += [f"store check: {p.what}" for p in check_store(str(store_path))]
    return {"finished": sum(len(m) for m in finished.values()), "problems": problems}


def one_k(k: int, base: Path, work: Path, reference: Path, stage: str, signal_name: str):
    """Crash the stage after write k on a copy of ``base``, resume, compare; -> report."""
    folder = work / f"run{k}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(base, folder)
    out = {"k": k, "problems": [], "finished": 0}
    status, result = in_child(run_stages, folder, stage,
                              env={"ML4ML_FAULT_AFTER_WRITES": str(k),
                                   "ML4ML_FAULT_SIGNAL": signal_name})
    expected = -signal.SIGKILL if signal_name == "KILL" else 130
    if status != expected:
        out["problems"].append(f"crash run ended with {status}: {result}")
        return out
    # resumed here, in the runner (a fork of its own, which forks nothing after this)
    try:
        out.update(_resume_and_compare(folder, stage, reference))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out["problems"].append(f"resume failed: {type(exc).__name__}: {exc}")
        return out
    shutil.rmtree(folder, ignore_errors=True)
    return out


def main(workdir: str, signal_name: str, stage: str, workers: str = "2", every: str = "1") -> int:
    """The parent never opens a store itself: zarr starts an event-loop thread on first
    use, and a child forked after that would wait on a thread it does not have."""
    import importlib

    # Ctrl-C raises KeyboardInterrupt, as in a terminal, even when this process was started
    # with SIGINT ignored (a background job of a non-interactive shell)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for module in PRELOAD:  # imported once, before any fork: children start at once
        importlib.import_module(module)
    import gc

    gc.freeze()  # the collector then never touches these objects: children copy fewer pages
    before_stage, stages = STAGES[stage]
    work = Path(workdir)
    started = time.monotonic()
    base = fresh(work / "base", SPEC + ASSESS_MODELS if stage in ("assess", "remove")
                 else UNITS_SPEC if stage == "probe-units" else SPEC)
    if stage.startswith("add-models"):  # files trained elsewhere, written in a child
        status, result = in_child(write_added_models, base, 1)
        assert status == 0, result
    if before_stage:
        status, result = in_child(run_stages, base, before_stage)
        assert status == 0, result
    if stage == "add-models-force":  # other bytes in the same files: --force replaces them
        status, result = in_child(write_added_models, base, 2)
        assert status == 0, result
    reference_dir = work / "reference"
    shutil.rmtree(reference_dir, ignore_errors=True)
    shutil.copytree(base, reference_dir)
    status, result = in_child(run_stages, reference_dir, stages)
    assert status == 0, result
    total = result["writes"]
    reference = work / "reference.pkl"
    status, result = in_child(_reference_snapshot, reference_dir / "db.zarr", reference)
    assert status == 0, result
    report = {"stage": stage, "writes": total, "signal": signal_name, "failures": [],
              "killed": 0, "finished_rows_checked": 0, "every": int(every),
              "arrays": result["value"]}
    # every k (every: 1), or k = 1, 1 + every, ... and the last write
    pending = sorted(set(range(1, total + 1, int(every))) | {total})
    running = {}
    while pending or running:
        while pending and len(running) < int(workers):
            k = pending.pop(0)
            running[k] = _start(one_k, k, base, work, reference, stages, signal_name)
        pid, status = os.wait()
        k = next(k for k, (p, _) in running.items() if p == pid)
        _, read = running.pop(k)
        with os.fdopen(read) as stream:
            result = json.loads(stream.read() or "{}")
        if not result:
            report["failures"].append(f"k={k}: the runner died ({status})")
            continue
        report["killed"] += 1
        report["finished_rows_checked"] += result["finished"]
        report["failures"] += [f"k={k}: {p}" for p in result["problems"]]
    report["seconds"] = time.monotonic() - started
    (work / "report.json").write_text(json.dumps(report, indent=1))
    return 0


def _start(function, *args):
    """Fork a runner that writes ``function(*args)`` as JSON to a pipe; (pid, read end)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            payload = json.dumps(function(*args))
        except BaseException as exc:  # noqa: BLE001
            payload = json.dumps({"k": args[0], "problems": [f"runner: {exc!r}"],
                                  "finished": 0})
        with os.fdopen(write, "w") as stream:
            stream.write(payload)
        os._exit(0)
    os.close(write)
    return pid, read


def untouched(before: dict, after: dict, finished: dict, done_after: dict) -> list[str]:
    """Problems with the rows finished at the crash: still done, same values, same chunks."""
    problems = []
    for group, mids in finished.items():
        if not mids:
            continue
        old_mids = [str(m) for m in before["arrays"][f"{group}/mid"]]
        new_mids = [str(m) for m in after["arrays"][f"{group}/mid"]]
        for mid in mids:
            if mid not in done_after.get(group, []):
                problems.append(f"{group}/{mid} was done, is not now")
        for name, values in before["arrays"].items():
            if not name.startswith(group + "/") or name.count("/") != group.count("/") + 1:
                continue
            if name in VOLATILE or name.endswith("/mid") or values.ndim == 0:
                continue
            if f"{group}/mid" not in before["arrays"] or values.shape[:1] != (len(old_mids),):
                continue
            for mid in mids:
                a = values[old_mids.index(mid)]
                b = after["arrays"][name][new_mids.index(mid)]
                if not same(a, b):
                    problems.append(f"{name}[{mid}] of a finished row changed")
        # large per-model chunks (one model per chunk) of finished rows: the same bytes
        for file, data in before["files"].items():
            array, _, index = file.partition("/c/")
            if array.rsplit("/", 1)[0] != group or group == "models":
                continue
            if array.rsplit("/", 1)[1] in SMALL:
                continue
            row = index.split("/")[0]
            if row.isdigit() and int(row) < len(old_mids) and old_mids[int(row)] in mids \
                    and after["files"].get(file) != data:
                problems.append(f"{file} of finished row {old_mids[int(row)]} was rewritten")
    return problems


SMALL = {"done", "trained", "digest", "probe_digest", "source_sha256", "error", "layer_name",
         "unit_count",
         "mid"}


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
