"""Measure stage: probe groups of a store -> ``matrices/...`` and ``measures/...`` groups.

For each probe group, the models that are done and not yet measured from their current
probe data (lineage: each measured row records the probe ``digest`` it came from; all of
them with ``force``) are measured in ONE dask graph: variance matrices, every registered
measure, accuracy and robust accuracy. One task per model writes that model's rows and
then its ``done`` flags, so a crash keeps every model finished before it. A measure
registered later (``register_measure``) is computed from the stored matrices for every
measured model and appended along ``measure`` in one committed change. Definitions:
docs/measures.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import dask
import numpy as np
import pandas as pd
import xarray as xr

from ml4ml import dims, store
from ml4ml.errors import InputError, StoreError
from ml4ml.failures import Failure, log_failure

__all__ = ["MeasureReport", "measure_store", "selected_groups", "open_measures",
           "store_features", "require_current_levels", "refresh_level_modules", "level_problem",
           "layer_modules"]


@dataclass
class MeasureReport:
    suite: str
    transform: str
    measured: list  # mids measured now
    added_measures: list  # measure names appended for already-measured models
    skipped: int  # done models already measured from their current probes
    seconds: float
    remeasured: dict = field(default_factory=dict)  # mid -> why its old rows were redone
    notes: list = field(default_factory=list)
    tasks: int = 0  # tasks in the graph of the rows measured now (before optimisation)
    failed: dict = field(default_factory=dict)  # mid -> why its rows could not be computed

    def summary(self) -> str:
        from ml4ml.failures import failed_text

        parts = [f"{self.suite}/{self.transform}: measured {len(self.measured)} model(s)"]
        if self.remeasured:
            mids = sorted(self.remeasured)
            named = ", ".join(mids) if len(mids) <= 8 else \
                f"{len(mids)} models ({', '.join(mids[:3])}, ..., {mids[-1]})"
            parts.append(f"re-measured {named} "
                         f"({'; '.join(sorted(set(self.remeasured.values())))})")
        if self.added_measures:
            parts.append(f"added {', '.join(self.added_measures)} for measured models")
        parts.append(f"{self.skipped} already measured")
        if self.failed:
            parts.append(failed_text(self.failed))
        return ", ".join(parts) + f" in {self.seconds:.1f} s"


def selected_groups(path, suite=None, transform=None) -> list[tuple[str, str]]:
    """The store's probe groups, filtered; InputError naming those that exist otherwise."""
    store.store_attrs(path)
    pairs = store.list_groups(path, "probes")
    if not pairs:
        raise StoreError("the store has no probe groups yet", file=path,
                         hint="probe models first ('ml4ml probe') or import reference files "
                              "('ml4ml import-legacy')")
    chosen = [(s, t) for s, t in pairs if (suite is None or s == suite)
              and (transform is None or t == transform)]
    if not chosen:
        have = ", ".join(f"{s}/{t}" for s, t in pairs)
        what = " and ".join(f"{name} {value!r}" for name, value in
                            (("suite", suite), ("transform", transform)) if value)
        raise InputError(f"the store has no probe group for {what}; it has {have}",
                         file=path, field="--suite" if suite and not transform else
                         "--transform")
    return chosen


def measure_store(path, *, suite=None, transform=None, measures=None, force=False,
                  progress=False) -> list[MeasureReport]:
    """Measure every done model of every selected probe group not measured from its probes.

    measures : names of registered measures to compute, matrix (``register_measure``) and
        response (``register_response_measure``) alike; a family none of whose names is
        given is computed whole (default: every registered measure of both).
    Runs on the active dask scheduler (a ``distributed.Client`` if one is current).
    """
    from ml4ml.measure.measures import registered_measures
    from ml4ml.measure.response_rows import LEE
    from ml4ml.measure.responses import registered_response_measures

    store.store_attrs(path)
    known = list(registered_measures())
    responses = list(registered_response_measures()) + [LEE]
    named = [] if measures is None else list(measures)
    unknown = [m for m in named if m not in known and m not in responses]
    if unknown:
        raise InputError(f"unknown measure(s) {unknown}; registered: {', '.join(known)}; "
                         f"response measures: {', '.join(responses)}", field="--measure",
                         hint="register it with ml4ml.measure.register_measure or "
                              "register_response_measure (or --plugin MODULE)")
    wanted = [m for m in named if m in known] or known
    wanted_responses = [m for m in named if m in responses and m not in known] or None
    with store.writing(path, "ml4ml measure") as notes:
        groups = selected_groups(path, suite, transform)
        reports = [_measure_group(path, s, t, (wanted, wanted_responses), force, progress)
                   for s, t in groups]
    if reports:
        reports[0].notes = list(notes)
    return reports


def _stored_rows(path, group) -> tuple[dict, dict, list]:
    """A derived group's {mid: probe digest} of done rows, of every row written once, and
    its measure names."""
    if not store.group_exists(path, group):
        return {}, {}, []
    ds = store.open_group(path, group)
    done = np.asarray(ds[dims.DONE].values, dtype=bool)
    mids = [str(m) for m in ds[dims.MID].values]
    digests = [str(d) for d in ds[store.PROBE_DIGEST].values]
    current = {m: d for m, d, ok in zip(mids, digests, done) if ok}
    written = {m: d for m, d in zip(mids, digests) if d}
    names = [str(m) for m in ds[dims.MEASURE].values] if dims.MEASURE in ds.coords else []
    return current, written, names


def level_problem(group: str, stored, n_layers: int | None = None) -> str | None:
    """Why ``group``'s ``level`` labels are not this version's (``dims.level_names``), in
    one line, or None when they are. n_layers : the recorded layers its probes hold."""
    stored = [str(level) for level in stored]
    found = dims.n_layers_of_levels(stored)
    if found is None:
        example = stored[1] if len(stored) > 1 else (stored[0] if stored else "none")
        expected = dims.level_names(n_layers or dims.DEFAULT_N_LAYERS)
        return (f"'{group}' names its levels {example}, ... (an earlier ml4ml's naming); "
                f"levels are now named by position from the output, {expected[1]}, ..., "
                f"{expected[-1]}")
    if n_layers is not None and found != n_layers:
        return (f"'{group}' has the levels of {found} recorded layer(s); its probes record "
                f"{n_layers}")
    return None


def require_current_levels(path, suite: str, transform: str) -> None:
    """StoreError (one line, pointing to ``store check``) unless the matrices and measures
    groups of ``suite``/``transform`` name their levels as this version does."""
    for group in (store.matrices_group(suite, transform),
                  store.measures_group(suite, transform)):
        if not store.group_exists(path, group):
            continue
        why = level_problem(group, store.open_group(path, group)[dims.LEVEL].values)
        if why:
            raise StoreError(why, file=path, field=f"{group}/{dims.LEVEL}",
                             hint=f"run 'ml4ml store check {path}' to see how to upgrade it")


def _check_levels(path, groups, n_layers, force) -> None:
    """StoreError unless the stored groups label their levels as this version does for
    probes of ``n_layers`` recorded layers (stores of earlier versions: ``store check``);
    with ``force`` such groups are removed, so every model is measured again into new ones."""
    for group in groups:
        if not store.group_exists(path, group):
            continue
        why = level_problem(group, store.open_group(path, group)[dims.LEVEL].values,
                            n_layers)
        if why and force:
            store.delete_group(path, group)
        elif why:
            raise StoreError(why, file=path, field=f"{group}/{dims.LEVEL}",
                             hint=f"run 'ml4ml store check {path}' to see how to upgrade it")


def group_level_modules(ds: xr.Dataset) -> list[str]:
    """The ``level_module`` labels a matrices or measures group should hold: from the
    ``layer_name`` of its rows (``dims.level_modules_of``)."""
    n_layers = ds.sizes.get(dims.LAYER, len(dims.prefixes_of_levels(ds[dims.LEVEL].values)))
    if dims.LAYER_NAME not in ds:
        return dims.level_modules([""] * n_layers)
    names = ds[dims.LAYER_NAME].transpose(dims.MID, dims.LAYER).values
    return dims.level_modules_of(names, n_layers)


def refresh_level_modules(path, groups) -> None:
    """Rewrite the ``level_module`` coordinate of ``groups`` from their rows (models
    measured, re-measured or removed since it was written). The caller holds the lock."""
    for group in groups:
        if not store.group_exists(path, group):
            continue
        ds = store.open_group(path, group)
        if dims.LEVEL_MODULE in ds.coords:
            store.rewrite_coordinate(path, group, dims.LEVEL_MODULE, group_level_modules(ds))


def _measure_group(path, suite, transform, wanted, force, progress) -> MeasureReport:
    from ml4ml.measure.measures import measure_matrices, registered_measures
    from ml4ml.measure.response_rows import add_response_measures

    wanted, wanted_responses = wanted
    start = time.perf_counter()
    probes = symmetric_grid(store.open_probes(path, suite, transform))
    done = store.done_mids(probes)
    digest = dict(zip([str(m) for m in probes[dims.MID].values],
                      [str(d) for d in probes[store.DIGEST].values]))
    m_group = store.measures_group(suite, transform)
    x_group = store.matrices_group(suite, transform)
    _check_levels(path, (x_group, m_group), probes.sizes[dims.LAYER], force)
    measured, written, have_names = _stored_rows(path, m_group)
    matrixed, _, _ = _stored_rows(path, x_group)

    # lineage: a row is current when both groups hold it fresh (``store.fresh_rows``)
    remeasured = {}
    todo = []
    now = [digest[m] for m in done]
    fresh = np.ones(len(done), dtype=bool)
    for rows in (measured, matrixed):
        fresh &= store.fresh_rows([m in rows for m in done], [rows.get(m, "") for m in done],
                                  np.ones(len(done), dtype=bool), now)
    for m, current in zip(done, fresh.tolist()):
        if force or not current:
            todo.append(m)
            if m in written:  # measured once before: say why it is done again
                remeasured[m] = ("its probe data changed" if written[m] != digest[m]
                                 else "forced" if force else "its rows were not complete")
    # rows whose probe is no longer done are stale: cleared, never left as current
    stale = [m for m in set(measured) | set(matrixed) if m not in set(done)]
    if stale:
        store.clear_done(path, m_group, stale)
        store.clear_done(path, x_group, stale)

    registered = set(registered_measures())
    names = list(dict.fromkeys(have_names + wanted))
    lost = [m for m in names if m not in registered]
    if lost and todo:
        raise InputError(f"measure(s) {lost} are in the store but not registered now, so "
                         f"{len(todo)} new model(s) cannot be measured alike; the stored "
                         f"values stay", file=path, field="--measure",
                         hint="load the measure's plugin again with --plugin FILE")

    # 1. new measure names for models measured before: from the stored matrices (no new
    #    matrices, no re-probing), appended along `measure` in one committed change
    added = []
    new_names = [m for m in wanted if m not in have_names]
    if have_names and new_names:
        old = store.open_group(path, m_group)
        old_mids = [str(m) for m in old[dims.MID].values]
        stored = store.open_group(path, x_group)
        with _single_threaded_blas():
            value = _compute(measure_matrices(stored.sel({dims.MID: old_mids}), new_names))
        store.append_measures(path, m_group, value)
        added = new_names
        names = have_names + new_names

    # response measures new to the group (all of them in a group of an earlier version):
    # from the stored probes of its measured rows (no re-probing), in one committed change
    responses, added_responses = add_response_measures(
        path, m_group, probes, wanted_responses,
        [m for m in measured if m in set(done) and m not in set(todo)], len(todo))
    added += added_responses

    # 2. rows of models not measured from their current probes (every name of the group),
    #    BATCH models per graph: the graph and each worker's memory stay bounded
    tasks, failed = 0, {}
    if todo:
        from ml4ml.progress import progress as stage_progress

        about = {"suite": suite, "transform": transform,
                 "measures_documentation": "docs/measures.md"}
        bar = stage_progress(f"measure {suite}/{transform}", len(todo), progress)
        try:
            tasks, failed = _measure_batches(path, (x_group, m_group), probes, todo,
                                             (names, responses), digest, about, bar)
        finally:
            bar.close()
    for mid, failure in failed.items():
        log_failure("measure", mid, failure, f"{suite}/{transform}")
    refresh_level_modules(path, (x_group, m_group))
    return MeasureReport(suite=suite, transform=transform,
                         measured=[m for m in todo if m not in failed],
                         added_measures=added, skipped=len(done) - len(todo),
                         seconds=time.perf_counter() - start, remeasured=remeasured,
                         tasks=tasks, failed={m: f.reason for m, f in failed.items()})


def symmetric_grid(probes: xr.Dataset) -> xr.Dataset:
    """A probe dataset whose ``aug_param`` grid is one-sided (a corruption's severities
    0..5: its coordinate has ``identity_at = "start"``) mirrored about the identity, so
    that the paper's matrices, nested intervals and sample splits (all centred on the
    identity) apply: position ``-s`` holds severity ``s`` (lazily, no copy), nested interval
    ``k`` keeps severities ``0 .. P-1-k`` and the splits are decided at severity 0. Any
    other dataset is returned as is."""
    grid = probes[dims.AUG_PARAM]
    if grid.attrs.get("identity_at") != "start" or probes.sizes[dims.AUG_PARAM] < 2:
        return probes
    n = probes.sizes[dims.AUG_PARAM]
    order = np.r_[np.arange(n - 1, 0, -1), np.arange(n)]
    values = np.asarray(grid.values, np.float64)
    mirrored = np.where(np.arange(2 * n - 1) < n - 1, 2 * values[0] - values[order], values[order])
    attrs = dict(grid.attrs) | {
        "identity_at": "centre",
        "description": f"{grid.attrs.get('units', 'parameter')} of a one-sided family, mirrored "
                       f"about the identity (the centre): the value -s holds the responses at s",
        "mirrored": "one-sided grid mirrored about the identity (docs/transforms.md)"}
    return probes.isel({dims.AUG_PARAM: order}).assign_coords(
        {dims.AUG_PARAM: (dims.AUG_PARAM, mirrored, attrs)})


def _measure_batches(path, groups, probes, todo, names, digest, about, bar):
    """Lay out, compute and write the rows of ``todo`` in ``groups`` (matrices, measures),
    ``BATCH`` models per graph; ``(tasks that ran, {mid: Failure})``."""
    from ml4ml.measure.matrices import variance_matrices
    from ml4ml.measure.measures import measure_database
    from ml4ml.measure.response_rows import response_dataset

    suite, transform = about["suite"], about["transform"]
    x_group, m_group = groups
    names, responses = names
    tasks, failed = 0, {}
    for first in range(0, len(todo), BATCH):
        batch = todo[first:first + BATCH]
        selected = store.select_rows(probes, batch)  # slices: no copy of each chunk
        lazy = measure_database(selected, measures=names).assign_attrs(
            title=f"measures of every model's variance matrices, suite '{suite}', "
                  f"'{transform}'", **about)
        lazy[dims.RESPONSE_VALUE] = response_dataset(selected, responses)[dims.RESPONSE_VALUE]
        matrices = variance_matrices(selected).assign_attrs(
            title=f"variance matrices of every model, suite '{suite}', '{transform}'",
            **about)
        x_rows = store.prepare_rows(path, x_group, matrices, batch)
        m_rows = store.prepare_rows(path, m_group, lazy, batch)
        lineage = {store.PROBE_DIGEST: np.array([digest[m] for m in batch], dtype=object)}
        writes = [store.RowWrites(path, x_group, matrices, batch, x_rows, lineage),
                  store.RowWrites(path, m_group, lazy, batch, m_rows, lineage)]
        n_tasks, batch_failed = _compute_rows(writes, bar)
        tasks += n_tasks
        failed.update(batch_failed)
    return tasks, failed


def _single_threaded_blas():
    from ml4ml.measure.matrices import single_threaded_blas

    return single_threaded_blas()


def _compute(lazy):
    with store.layout.quiet():
        return lazy.compute()


FLUSH_EVERY_S = 1.0
# models per graph: large enough that dask keeps both cores busy, small enough that the
# graph and each worker's memory do not grow with the database (benchmarks/scale.py)
BATCH = 200


def _graph_size(collections) -> int:
    """Tasks that run for ``collections``: their merged graph culled to what they need
    (a batch's graph names every chunk of the probe group; only its models' are read)."""
    from dask.base import collections_to_expr
    from dask.optimization import cull

    graph = dict(collections_to_expr(collections, optimize_graph=False).__dask_graph__())
    return len(cull(graph, [c.key for c in collections])[0])


def _compute_rows(writes: list, bar):
    """Compute every group's row tasks in one graph; finish rows as their tasks complete.

    As a model's row task in a group completes, the driver writes that row's lineage and
    then its ``done`` flag (in batches, at most ``FLUSH_EVERY_S`` apart); a model counts
    as measured once its rows in every group are done.
    On a distributed cluster the futures are followed as they finish; in process, a
    dask callback does the same. A model whose task fails (probe data not finite, a
    registered measure that raises) keeps its flags cleared; the others are finished (in
    process, after a failure the models left are computed one at a time, so each failure
    is its model's). Returns the number of tasks in the graph and {mid: Failure}.
    """
    from ml4ml.failures import failure_of

    owner = {}
    for index, rows in enumerate(writes):
        for key, mid in rows.keys.items():
            owner[key] = (index, mid)
    pending = {index: [] for index in range(len(writes))}
    state = {"last": time.monotonic()}
    finished, failed = set(), {}

    def completed(key) -> None:
        if key not in owner:
            return
        finished.add(key)
        index, mid = owner[key]
        pending[index].append(mid)
        if time.monotonic() - state["last"] >= FLUSH_EVERY_S:
            flush()

    groups_done = {}

    def flush() -> None:
        state["last"] = time.monotonic()
        for index, rows in enumerate(writes):
            rows.finish(pending[index])
            for mid in pending[index]:
                groups_done[mid] = groups_done.get(mid, 0) + 1
                if groups_done[mid] == len(writes):
                    bar.advance(mid)
            pending[index] = []

    tasks = [task for rows in writes for task in rows.tasks]
    n_tasks = _graph_size(tasks)
    try:
        from distributed import as_completed, get_client

        client = get_client()
    except (ImportError, ValueError):
        client = None
    with store.layout.quiet():
        if client is not None:
            from ml4ml.cluster import future_outcome

            futures = client.compute(tasks)
            for future in as_completed(futures):
                outcome = future_outcome(future)
                if isinstance(outcome, Failure):
                    failed.setdefault(owner[future.key][1], outcome)
                else:
                    completed(future.key)
        else:
            from dask.callbacks import Callback

            class _Rows(Callback):
                def _posttask(self, key, result, dsk, state, id):
                    completed(key)

            try:
                with _Rows():
                    dask.compute(*tasks)
            except Exception:  # noqa: BLE001 - whose? each model left, alone, says
                flush()
                for mid, left in _tasks_left(tasks, owner, finished).items():
                    try:
                        with _Rows():
                            dask.compute(*left)
                    except Exception as exc:  # noqa: BLE001 - this model's failure
                        failed[mid] = failure_of(exc)
        flush()
    for _ in failed:
        bar.fail()
    return n_tasks, failed


def _tasks_left(tasks, owner, finished) -> dict:
    """{mid: its row tasks not finished}, for models with any, in the batch's order."""
    left = {}
    for task in tasks:
        if task.key not in finished:
            left.setdefault(owner[task.key][1], []).append(task)
    return left


def open_measures(path, suite: str, transform: str) -> xr.Dataset:
    """The measures group of one suite and transform (lazy)."""
    return store.open_group(path, store.measures_group(suite, transform))


def layer_modules(path, transform: str, suite=None) -> dict:
    """{layer label: module name} of the layers every measured model of ``transform``
    recorded alike (``dims.modules_of_levels``): ``{"layer-2": "conv2", "layer-1": "conv3"}``
    for a store of CNN5s, ``{}`` where no layer is shared or nothing is measured."""
    pairs = [(s, t) for s, t in store.list_groups(path, "measures")
             if t == transform and (suite is None or s == suite)]
    if len(pairs) != 1:
        return {}
    ds = open_measures(path, *pairs[0])
    if dims.LEVEL_MODULE not in ds.coords:
        return {}
    return dims.modules_of_levels(ds[dims.LEVEL].values, ds[dims.LEVEL_MODULE].values)


def store_features(path, transform: str, *, suite=None, set: str = "paper80",
                   split: str = "correct", **selected) -> pd.DataFrame:
    """One row per measured model: ``mid`` then the feature set's columns, in order.

    Reads only rows measured from the probe data the store holds now; StoreError naming
    the models and ``ml4ml measure`` where some are stale (``store.fresh_mids``).

    selected : keywords of ``feature_sets.selection`` (levels, stats, intervals, names),
        for any selection of the measures instead of a named set.
    """
    from ml4ml.measure.feature_sets import FEATURE_SETS, features

    if set not in FEATURE_SETS and set != "selection":
        raise InputError(f"unknown feature set {set!r}; known: {', '.join(FEATURE_SETS)}, "
                         f"selection", field="--set")
    if split not in dims.SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {dims.SPLITS}",
                         field="--split")
    return features(store_measures(path, transform, suite=suite), set=set, split=split,
                    **selected)


def store_measures(path, transform: str, *, suite=None) -> xr.Dataset:
    """The measures dataset of ``transform`` (loaded), its rows measured from the probe
    data the store holds now (StoreError naming stale ones); one-line errors for an
    unknown transform or suite, or none measured."""
    store.store_attrs(path)
    groups = store.list_groups(path, "measures")
    pairs = [(s, t) for s, t in groups if t == transform and (suite is None or s == suite)]
    if not pairs and suite is not None and any(t == transform for _, t in groups):
        suites = sorted(s for s, t in groups if t == transform)
        raise InputError(f"no measures for suite {suite!r} and transform {transform!r}; "
                         f"{transform!r} is measured on: {', '.join(suites)}", file=path,
                         field="--suite")
    if not pairs:
        have = sorted({t for _, t in groups})
        if have:
            raise InputError(f"no measures for transform {transform!r}"
                             + (f" and suite {suite!r}" if suite else "")
                             + f"; the store has measures for: {', '.join(have)}",
                             file=path, field="--transform")
        raise StoreError("the store has no measures yet", file=path,
                         hint=f"run 'ml4ml measure {path}' first")
    if len(pairs) > 1:
        raise InputError(f"transform {transform!r} is measured on several suites "
                         f"({', '.join(s for s, _ in pairs)}); choose one with --suite",
                         file=path, field="--suite")
    require_current_levels(path, *pairs[0])
    ds = open_measures(path, *pairs[0])
    # only rows measured from the probe data held now (StoreError naming stale ones)
    return ds.sel({dims.MID: store.fresh_mids(path, *pairs[0])}).load()
