"""Report stage: a store -> one static ``index.html`` with PNG figures (no server needed).

``report_store`` reads the models table, the labels, the measures, the matrices and the
assessment of one transform, draws the figures (``report.figures``: per model a gallery
thumbnail ``models/<mid>.png`` and its full-size strip ``models/full/<mid>.png``) and
writes the page
(``report.page``, opening with ``report.answer``: the models judged not invariant; with
the best single measures where ``ml4ml measures rank`` ranked them, ``rank.png``) and
``judgements.csv`` (every model's judgement, ``ml4ml.assess.judgements``) into a fresh
folder that then replaces the old one, so a report is never half written.
``plot_model`` draws one model's strip of matrices.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml4ml import dims, store
from ml4ml.errors import InputError, StoreError

__all__ = ["report_store", "plot_model", "model_figures", "ReportResult", "strip_levels",
           "rank_view", "rank_stamp", "RANK_TABLE_ROWS", "RANK_FIGURE_ROWS"]

RANK_TABLE_ROWS = 15  # the rank's table: its best scored measures
RANK_FIGURE_ROWS = 20  # its figure


@dataclass
class ReportResult:
    folder: Path
    index: Path
    n_models: int
    n_figures: int
    seconds: float


def _pick_group(path, transform=None, suite=None) -> tuple[str, str]:
    pairs = store.list_groups(path, "measures")
    if not pairs:
        raise StoreError("the store has no measures to report yet", file=path,
                         hint=f"run 'ml4ml measure {path}' first")
    chosen = [(s, t) for s, t in pairs if (transform is None or t == transform)
              and (suite is None or s == suite)]
    if not chosen:
        have = ", ".join(f"{s}/{t}" for s, t in pairs)
        wanted = " and ".join(f"{kind} {name!r}" for kind, name in (("suite", suite),
                                                                   ("transform", transform))
                              if name is not None)
        raise InputError(f"no measures for {wanted}; the store has {have}", file=path,
                         field="--transform" if transform is not None else "--suite")
    return chosen[0]


def strip_levels(levels, level_modules=None) -> tuple[list[str], list[str]]:
    """Levels and titles of a strip, from a group's ``level`` (and ``level_module``)
    coordinate: the confidence and the paper80 statistics of the last two layers; each
    title is its level's label, with the module every model recorded there beside it
    ("layer-1_max (conv3)") where they all recorded the same."""
    from ml4ml.measure.feature_sets import PAPER80_STATS

    chosen = [dims.CONFIDENCE_LEVEL] + [
        dims.layer_level(prefix, stat) for prefix in dims.prefixes_of_levels(levels)[-2:]
        for stat in PAPER80_STATS]
    modules = dims.modules_of_levels(levels, level_modules)
    return chosen, [dims.module_note(level, modules) for level in chosen]


def _matrices(path, suite, transform, split):
    from ml4ml.measure.stage import require_current_levels

    require_current_levels(path, suite, transform)  # an earlier version's: store check
    ds = store.open_group(path, store.matrices_group(suite, transform))
    # only rows computed from the probe data held now (StoreError naming stale ones)
    done = store.fresh_mids(path, suite, transform, kinds=("matrices", "measures"))
    ds = ds.sel({dims.MID: done})
    levels, titles = strip_levels(ds[dims.LEVEL].values, ds[dims.LEVEL_MODULE].values
                                  if dims.LEVEL_MODULE in ds.coords else None)
    matrix = ds[dims.MATRIX].sel({dims.LEVEL: levels, dims.SPLIT: split, dims.KIND: "l2"})
    values = np.asarray(matrix.transpose(dims.MID, dims.LEVEL, ...).values)
    params = np.asarray(ds[dims.AUG_PARAM_I].values)
    units = str(ds[dims.AUG_PARAM_I].attrs.get("units", ""))
    return done, values, titles, params, units


def model_figures(path, folder, *, transform=None, suite=None, split="all", vmax=None,
                  mids=None, layout="thumbnail") -> dict:
    """Draw every (or ``mids``') model's strip into ``folder``; {mid: file name}.

    layout : "thumbnail" (the report's gallery) or "full" (``figures.LAYOUTS``)."""
    from ml4ml.report.figures import MatrixStrips, shared_scale

    suite, transform = _pick_group(path, transform, suite)
    done, values, titles, params, units = _matrices(path, suite, transform, split)
    scale = shared_scale(values, vmax)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    strips = MatrixStrips(titles, params, scale, units=units, layout=layout)
    try:
        for k, mid in enumerate(done):
            if mids is not None and mid not in mids:
                continue
            name = f"{mid}.png"
            strips.draw(folder / name, values[k])
            out[mid] = name
    finally:
        strips.close()
    return out


def plot_model(path, mid: str, file, *, transform=None, suite=None, split="all", vmax=None):
    """One model's strip of variance matrices, on the store's shared colour scale."""
    from ml4ml.report.figures import matrix_strip, shared_scale

    suite, transform = _pick_group(path, transform, suite)
    done, values, titles, params, units = _matrices(path, suite, transform, split)
    if mid not in done:
        raise InputError(f"model {mid!r} has no matrices for {suite}/{transform}; measured: "
                         f"{', '.join(done[:8])}{' ...' if len(done) > 8 else ''}",
                         file=path, field="--mid")
    scale = shared_scale(values, vmax)
    matrix_strip(file, values[done.index(mid)], titles, params, scale,
                 caption=f"{mid}: variance matrices ({split} samples, {suite}/{transform})",
                 units=units, layout="full")


def report_store(path, folder, *, transform=None, suite=None, split="all", vmax=None,
                 progress: bool = False) -> ReportResult:
    """Write the report of ``transform`` (default: the first measured) to ``folder``."""
    from ml4ml.progress import progress as stage_progress
    from ml4ml.report import page
    from ml4ml.report.figures import MatrixStrips, accuracy_curves, importance_bars, \
        rank_bars, shared_scale

    started = time.perf_counter()
    store.store_attrs(path)
    suite, transform = _pick_group(path, transform, suite)
    folder = Path(folder)
    work = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    (work / "models").mkdir(parents=True)
    models = store.read_models(path)
    done, values, titles, params, units = _matrices(path, suite, transform, split)
    measures = store.open_group(path, store.measures_group(suite, transform))
    accuracy = np.asarray(measures["accuracy"].sel({dims.MID: done}).values)
    robust = np.asarray(measures["robust_accuracy"].sel({dims.MID: done, dims.INTERVAL: 0})
                        .values)
    labels, label_source = _labels(path, transform, done)
    assessment = _assessment(path, transform, done, models, measures)
    bar = stage_progress("report", len(done) + 3, progress, unit="figure")
    scale = shared_scale(values, vmax)
    # per model: the gallery's thumbnail, and the full-size strip a click on it opens
    (work / "models" / "full").mkdir()
    thumbnails = MatrixStrips(titles, params, scale, units=units, layout="thumbnail")
    full = MatrixStrips(titles, params, scale, units=units, layout="full")
    for k, mid in enumerate(done):
        thumbnails.draw(work / "models" / f"{mid}.png", values[k])
        full.draw(work / "models" / "full" / f"{mid}.png", values[k])
        bar.advance(mid)
    accuracy_curves(work / "accuracy.png", params, accuracy, labels, units=units,
                    title=f"accuracy of every model under {transform} ({suite})")
    bar.advance("accuracy")
    figures = 2 * len(done) + 1  # thumbnails, full-size strips, accuracy
    if assessment is not None and assessment["top"]:
        names, importance, std = zip(*assessment["top"])
        names = [dims.module_note(n, assessment.get("layer_modules")) for n in names]
        importance_bars(work / "importance.png", names, importance, std,
                        title=f"top features of {assessment['chosen']} (permutation "
                              f"importance)", n_evaluations=3 * assessment["repeats"],
                        n_permutations=assessment["n_permutations"])
        figures += 1
    bar.advance("importance")
    rank = rank_view(path, transform)
    if rank is not None and rank["figure"] is not None:
        rank_bars(work / "rank.png", **rank["figure"],
                  title=f"the {len(rank['figure']['names'])} best single measures of "
                        f"{transform}")
        figures += 1
    context = {
        "path": str(path), "suite": suite, "transform": transform, "split": split,
        "units": units, "params": [float(params[0]), float(params[-1]), len(params)],
        "scale": dict(zip(titles, [float(v) for v in scale])), "label_source": label_source,
        "mids": done, "labels": labels, "robust": robust, "assessment": assessment,
        "models": models, "accuracy": accuracy, "titles": titles, "rank": rank,
        "strips": {"thumbnail": thumbnails.size, "full": full.size,
                   "full_font_px": float(full.metadata["font_px_min"])},
    }
    (work / "index.html").write_text(page.render(context))
    if assessment is not None:  # the answer's list, whole: every model's judgement
        assessment["judgements"].to_csv(work / "judgements.csv", index=False)
    (work / "report.json").write_text(json.dumps({
        "store": str(path), "suite": suite, "transform": transform, "models": len(done),
        "assess_inputs": assessment["digest"] if assessment else "",
        "label_source": label_source, "rank": rank_stamp(path, transform),
        "written": time.time()}, indent=1))
    bar.advance("page")
    bar.close()
    if folder.exists():
        shutil.rmtree(folder)
    work.rename(folder)  # whole, at once
    return ReportResult(folder=folder, index=folder / "index.html", n_models=len(done),
                        n_figures=figures, seconds=time.perf_counter() - started)


def rank_stamp(path, transform) -> str:
    """What identifies the stored rank of ``transform`` ("" where there is none): when it
    was written and the digests of what it was made from."""
    group = store.rank_group(transform)
    if not store.group_exists(path, group):
        return ""
    attrs = store.open_group(path, group).attrs
    return " ".join(str(attrs.get(key, "")) for key in ("written_at", "labels_digest",
                                                          "features_digest"))


def rank_view(path, transform, n_table: int = RANK_TABLE_ROWS,
              n_figure: int = RANK_FIGURE_ROWS) -> dict | None:
    """The stored rank of ``transform`` for the report (None where there is none): its
    best ``n_table`` scored measures (``rows``: the rank's own variables, in rank order),
    the figure's best ``n_figure`` (``figure``: ``rank_bars``' arguments; None where no
    measure was scored), why it is stale (``stale``: ``check_rank``, "" while current) and
    its attributes."""
    from ml4ml.assess.rank_stage import check_rank, read_rank

    ds = read_rank(path, transform)
    if ds is None:
        return None
    ds = ds.sortby("rank_position")
    scored = ds.isel(score=np.flatnonzero(ds["rank_reason"].values == ""))
    top = scored.isel(score=slice(0, n_figure))
    names = [str(n) + ("" if d > 0 else " (−)") for n, d in
             zip(top["score"].values, top["rank_direction"].values)]
    figure = None if not names else {
        "names": names, "auc": top["rank_auc"].values, "low": top["rank_auc_low"].values,
        "high": top["rank_auc_high"].values, "families": top["rank_family"].values}
    rows = scored.isel(score=slice(0, n_table))
    return {"rows": [{key: rows[key].values[k].item() for key in (
                "rank_position", "rank_auc", "rank_auc_low", "rank_auc_high",
                "rank_accuracy", "rank_chosen", "rank_family", "rank_direction")}
                     | {"measure": str(rows["score"].values[k])}
                     for k in range(rows.sizes["score"])],
            "figure": figure, "stale": check_rank(path, transform, ds),
            "attrs": dict(ds.attrs), "n_columns": int(ds.sizes["score"]),
            "n_scored": int(scored.sizes["score"])}


def _labels(path, transform, mids) -> tuple[np.ndarray, str]:
    from ml4ml.assess.stage import stored_labels

    try:
        source, by_mid = stored_labels(path, transform)
    except (StoreError, InputError):
        return np.full(len(mids), -1), ""
    return np.array([by_mid.get(m, -1) for m in mids]), source


def _assessment(path, transform, mids, models, measures) -> dict | None:
    from ml4ml.assess.judgements import (answer_counts, clean_accuracy, judgement_table)
    from ml4ml.assess.stage import check_assessment, stored_labels

    group = store.assess_group(transform)
    if not store.group_exists(path, group):
        return None
    ds = store.open_group(path, group).load()
    if dims.ESTIMATOR not in ds.dims:
        raise StoreError(f"'{group}' has the old layout (dim 'method', renamed "
                         f"'{dims.ESTIMATOR}')", file=path, field=f"{group}/method",
                         hint=f"run 'ml4ml store check {path}' to see how to upgrade it")
    # shown beside the current labels: made from them and from the features held now
    check_assessment(path, transform, current_labels=True)
    chosen = str(ds.attrs["chosen_assessor"])
    methods = [str(m) for m in ds[dims.ESTIMATOR].values]
    rows = []
    for k, method in enumerate(methods):
        rows.append({"method": method, "kind": str(ds[dims.ESTIMATOR_KIND].values[k]),
                     **{name: float(ds[f"summary_{name}"].values[k]) for name in
                        ("accuracy_mean", "accuracy_min", "accuracy_max", "accuracy_sem",
                         "f1_mean", "kappa_mean")}})
    importance = ds["importance"].sel({dims.ESTIMATOR: chosen})
    std = ds["importance_std"].sel({dims.ESTIMATOR: chosen})
    top = [(str(f), float(importance.sel({"feature": f}).values),
            float(std.sel({"feature": f}).values)) for f in ds["top_feature"].values]
    position = {str(m): k for k, m in enumerate(ds[dims.MID].values)}
    score = np.array([float(ds["score"].values[position[m]]) if m in position else np.nan
                      for m in mids])
    predicted = np.array([int(ds["predicted"].values[position[m]]) if m in position else -1
                          for m in mids])
    # out-of-fold: the chosen assessor's majority test-fold prediction over the repeats
    from ml4ml.assess.comparison import out_of_fold
    from ml4ml.assess.stage import COMPARISON

    stored = ds["out_of_fold"] if "out_of_fold" in ds else out_of_fold(ds, chosen)
    oof = np.array([int(stored.values[position[m]]) if m in position else -1 for m in mids])
    missing = [f"comparison_{key}" for key in COMPARISON if f"comparison_{key}" not in ds]
    missing += [] if "out_of_fold_probability" in ds else ["out_of_fold_probability"]
    if missing:
        raise StoreError(f"'{group}' holds the verdict of an older ml4ml (no {missing[0]})",
                         file=path, field=f"{group}/{missing[0]}",
                         hint=f"run 'ml4ml assess {path} --transform {transform}' again")
    _, labels = stored_labels(path, transform, str(ds.attrs["label_source"]))
    judged = judgement_table(ds, models, labels, clean_accuracy(measures))
    return {"chosen": chosen, "judgements": judged, "counts": answer_counts(judged), "rows": rows, "verdict": str(ds.attrs.get("verdict", "")),
            "comparison": {key: float(ds[f"comparison_{key}"].values) for key in COMPARISON},
            "n_holdout": int(ds.attrs.get("comparison_models", 0)),
            "test": str(ds.attrs.get("comparison_test", "")),
            "best_baseline": str(ds.attrs.get("best_baseline", "")), "top": top,
            "selection": str(ds.attrs.get("comparison_selection", "cross-validation on the "
                                          "regular models")),
            "score": score, "predicted": predicted, "out_of_fold": oof,
            "repeats": int(ds.attrs.get("repeats", 0)),
            "n_permutations": int(ds.attrs.get("n_permutations", 0)) or None,
            "underpowered": str(ds.attrs.get("underpowered_reason", "")),
            "best_feature": {key: ds.attrs[key] for key in (
                "best_feature", "best_feature_rule", "best_feature_folds",
                "best_feature_fits") if key in ds.attrs},
            "score_kind": str(ds.attrs.get("score_kind", "")),
            "layer_modules": json.loads(str(ds.attrs.get("layer_modules", "{}"))),
            "digest": str(ds.attrs.get("inputs_digest", ""))}
