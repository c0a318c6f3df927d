"""The report's ``index.html``: static, self-contained apart from its PNG files.

``render`` turns a report context (``report.stage.report_store``) into text and numbers
formatted as text; ``templates/report.html.j2`` lays them out (autoescaped: nothing from
the store is written unescaped), with its style (``report.css.j2``), its script
(``report.js``) and the answer (``answer.html.j2``, ``report.answer``).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections import defaultdict

import numpy as np

from ml4ml.assess.comparison import MIN_LABELLED, MIN_PER_CLASS
from ml4ml.report.answer import (CLASS_COLOURS, answer_view, card_classes, fmt as _f,
                                 gallery_buttons, gallery_order)
from ml4ml.report.templating import render as render_template
from ml4ml.zoo.recipe import recipe_range

__all__ = ["render", "recipe_range", "score_definition", "METHOD_COLUMNS", "recipe_columns",
           "RANK_COLUMNS"]

LABEL_TEXT = {1: "invariant", 0: "variant", -1: "unknown"}


def render(c: dict) -> str:
    """The page of a report context (``report.stage.report_store``)."""
    from ml4ml.report.figures import THUMBNAIL_WIDTH

    labels, a = np.asarray(c["labels"]), c["assessment"]
    params = c["params"]
    width, height = (c.get("strips") or {}).get("thumbnail", (THUMBNAIL_WIDTH, 0))
    return render_template(
        "ml4ml.report", "report.html.j2",
        thumb=THUMBNAIL_WIDTH, colours=CLASS_COLOURS,
        transform=c["transform"], n_models=len(c["mids"]), path=c["path"], suite=c["suite"],
        grid={"low": f"{params[0]:g}", "high": f"{params[1]:g}", "n": params[2]},
        units=c["units"], n_holdout=_n_holdout(c["models"]), label_source=c["label_source"],
        n_labels={"invariant": int((labels == 1).sum()), "variant": int((labels == 0).sum()),
                  "unknown": int((labels < 0).sum())},
        written=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        a=_assessment(a) if a is not None else None,
        answer=answer_view(a["judgements"], a["counts"], transform=c["transform"])
        if a is not None else None,
        sections=_sections(bool(a["top"]), c.get("rank") is not None)
        if a is not None else [],
        rank=_rank(c["rank"], c["label_source"]) if c.get("rank") is not None else None,
        rank_columns=RANK_COLUMNS,
        min_labelled=MIN_LABELLED, min_per_class=MIN_PER_CLASS, method_columns=METHOD_COLUMNS,
        recipes=_recipes(c), recipe_columns=recipe_columns(c),
        score_definition=score_definition(a), split=c["split"],
        scale=[(t, f"{v:.3g}") for t, v in c["scale"].items()],
        cards=_cards(c), thumbnail={"width": width, "height": height},
        full_size_style=_full_size_style(c))


def _n_holdout(models) -> int:
    return int(np.asarray(models["holdout"].values, dtype=bool).sum()) \
        if "holdout" in models else 0


def _sections(top: bool, rank: bool = False) -> list[tuple[str, str]]:
    """Links to the page's sections: (anchor, text)."""
    return [("answer", "the answer"), ("verdict", "verdict on the assessors")] + \
        ([("features", "top features")] if top else []) + \
        ([("rank", "measure rank")] if rank else []) + \
        [("accuracy", "accuracy"), ("database", "recipes"), ("gallery", "gallery")]


def _full_size_style(c: dict) -> str:
    """The enlarged strip: at its own size, shrunk to the window down to the width where
    its smallest text is still 10.5 px."""
    strips = c.get("strips") or {}
    width, _ = strips.get("full", (0, 0))
    if not width:
        return ""
    least = math.ceil(width * 10.5 / strips["full_font_px"])
    return f"width: min({width}px, calc(98vw - 40px)); min-width: {min(least, width)}px"


METHOD_COLUMNS = (
    ("method", "the assessor or baseline"),
    ("kind", "assessor (learned from the features) or baseline (a fixed rule)"),
    ("accuracy", "mean, over the protocol's evaluations (repeats x 3 test folds), of the "
                 "fraction of the test fold's models labelled correctly (0 to 1)"),
    ("min, max", "the lowest and highest of those accuracies (0 to 1)"),
    ("s.e.", "standard error of the mean accuracy: sample standard deviation over the "
             "evaluations / √(their number); it understates the uncertainty, the "
             "evaluations sharing training models"),
    ("F1", "mean F1 score of the class 'invariant' (0 to 1)"),
    ("kappa", "mean Cohen's kappa of predictions and labels (−1 to 1; 0 = chance), over "
              "the evaluations where it is defined"),
)


RANK_COLUMNS = (
    ("#", "the measure's place among every measure of the rank (1: the best hold-out AUC, "
          "then accuracy, then name; unscored measures last)"),
    ("measure", "the measure column: level, measure (and split, interval); (−): smaller "
                "values mean invariant (direction learned on the regular models)"),
    ("family", "matrix: a measure of a variance matrix; response: a measure of the "
               "responses (docs/measures.md)"),
    ("AUC", "ROC AUC of the measure on the hold-out models, its direction applied (0.5: "
            "chance, 1: every invariant model above every variant one)"),
    ("95% interval", "2.5th and 97.5th percentiles of the AUC over stratified bootstrap "
                     "resamples of the hold-out models"),
    ("accuracy", "hold-out accuracy of the measure's best threshold on the regular models "
                 "(0 to 1)"),
    ("chosen", "share of the protocol's training parts (repeats x 3 folds) in which the "
               "best-single-feature baseline chose this measure (0 to 1)"),
)


def _rank(r: dict, label_source: str) -> dict:
    """The rank's section (``report.stage.rank_view``): its table's rows and its notes, as
    text."""
    attrs = r["attrs"]
    rows = [{"position": str(int(row["rank_position"])),
             "measure": row["measure"] + ("" if row["rank_direction"] > 0 else " (−)"),
             "family": str(row["rank_family"]),
             "numbers": [_f(row["rank_auc"]), f"{_f(row['rank_auc_low'])} – "
                         f"{_f(row['rank_auc_high'])}", _f(row["rank_accuracy"]),
                         _f(row["rank_chosen"], 2)]} for row in r["rows"]]
    source = str(attrs.get("label_source", ""))
    return {"rows": rows, "stale": r["stale"], "figure": r["figure"] is not None,
            "n_figure": len(r["figure"]["names"]) if r["figure"] else 0,
            "label_source": source, "other_labels": bool(label_source) and source != label_source,
            "n_models": int(attrs.get("n_models", 0)), "n_holdout": int(attrs.get("n_holdout", 0)),
            "n_regular": int(attrs.get("n_regular", 0)), "repeats": int(attrs.get("repeats", 0)),
            "n_boot": int(attrs.get("n_boot", 0)), "n_columns": r["n_columns"],
            "n_scored": r["n_scored"], "written": str(attrs.get("written_at", "")),
            "families": " and ".join(json.loads(str(attrs.get("families", "[]"))))
            or "matrix"}


def _assessment(a: dict) -> dict:
    """The verdict, the table of assessors and baselines, the top features: as text."""
    comparison = a["comparison"]
    best_feature = ""
    if a.get("best_feature"):
        from ml4ml.assess.comparison import best_feature_text

        best_feature = best_feature_text(a["best_feature"], a.get("layer_modules"))
    rows = [{"method": row["method"], "kind": row["kind"],
             "classes": "chosen" if row["method"] in (a["chosen"], a["best_baseline"])
             else row["kind"],
             "numbers": [_f(row[k]) for k in ("accuracy_mean", "accuracy_min", "accuracy_max",
                                              "accuracy_sem", "f1_mean", "kappa_mean")]}
            for row in a["rows"]]
    return {"underpowered": a.get("underpowered") or "", "verdict": a["verdict"],
            "repeats": a["repeats"], "chosen": a["chosen"], "best_baseline": a["best_baseline"],
            "selection": a["selection"], "n_holdout": a["n_holdout"], "test": a["test"],
            "comparison": {
                "accuracy_assessor": f"{comparison['accuracy_assessor']:.3f}",
                "accuracy_baseline": f"{comparison['accuracy_baseline']:.3f}",
                "difference": f"{comparison['difference']:+.3f}",
                "ci_low": f"{comparison['ci_low']:+.3f}",
                "ci_high": f"{comparison['ci_high']:+.3f}",
                "p_value": f"{comparison['p_value']:.3g}"},
            "rows": rows, "best_feature": best_feature, "top": bool(a["top"]),
            "n_evaluations": 3 * a["repeats"], "n_permutations": a.get("n_permutations"),
            "counts": a["counts"], "buttons": gallery_buttons(a["counts"])}


def score_definition(a: dict | None) -> str:
    """What the tables and cards call the refit score."""
    if a is None:
        return "no assessment yet"
    kind = a.get("score_kind") or "score"
    return (f"the {kind}, by the chosen assessor ({a['chosen']}) refit on every labelled "
            f"model; in-sample for labelled models (the refit saw their labels)")


def recipe_columns(c: dict) -> tuple:
    """The recipe table's columns, defined under it."""
    units = c.get("units") or "the parameter's units"
    return (
        ("augmentation", "the transform applied at random to the training images"),
        ("range", "its range: ± degrees for rotation, a factor 1 ± a for scaling and "
                  "brightness"),
        ("anomaly", "the training anomaly of the recipe (none: a plain run)"),
        ("models, hold-out, invariant", "numbers of models: of this recipe, of them hold-out, "
                                        "of them labelled invariant"),
        ("judged not invariant", "of them judged variant by the chosen assessor (the "
                                 "answer at the top: out of fold where labelled)"),
        ("clean accuracy", "mean over the recipe's models of the test accuracy at the "
                           "identity (fraction of test samples correct, 0 to 1)"),
        ("robust accuracy", f"mean over the recipe's models of the fraction of test "
                            f"samples classified correctly at every parameter of the grid "
                            f"(0 to 1; {c['transform']} in {units})"),
        ("refit score", "mean over the recipe's models of " + score_definition(
            c["assessment"])),
    )


def _mean(values) -> str:
    """The mean of the finite ``values`` as text; "n/a" where none is."""
    values = np.asarray(values, dtype=float)
    return _f(float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"))


def _recipes(c: dict) -> list[list]:
    """The database table: one row of text per recipe (augmentation, range, anomaly), none
    where the store has no recipes."""
    models = c["models"]
    mids, labels = list(c["mids"]), np.asarray(c["labels"])
    if "augmentation" not in models:
        return []
    table_mids = [str(m) for m in models["mid"].values]
    at = {m: k for k, m in enumerate(table_mids)}
    score = c["assessment"]["score"] if c["assessment"] else np.full(len(mids), np.nan)
    groups = defaultdict(list)
    for k, mid in enumerate(mids):
        row = at[mid]
        key = (str(models["augmentation"].values[row]), float(models["aug_range"].values[row]),
               str(models["anomaly_name"].values[row]) if "anomaly_name" in models else "")
        groups[key].append((k, row))
    judged = (c["assessment"]["judgements"].set_index("mid")["judgement"].reindex(mids)
              .fillna(-1).to_numpy() if c["assessment"] else np.full(len(mids), -1))
    holdout = np.asarray(models["holdout"].values, dtype=bool) if "holdout" in models else \
        np.zeros(len(table_mids), bool)
    accuracy = np.asarray(models["test_accuracy"].values, dtype=float) \
        if "test_accuracy" in models else np.full(len(table_mids), np.nan)
    out = []
    for (augmentation, span, anomaly), members in sorted(groups.items()):
        ks = [k for k, _ in members]
        rows = [r for _, r in members]
        out.append([augmentation, recipe_range(augmentation, span), anomaly, len(ks),
                    int(holdout[rows].sum()), int((labels[ks] == 1).sum()),
                    int((judged[ks] == 0).sum()), _mean(accuracy[rows]),
                    _f(float(np.nanmean(c["robust"][ks]))), _mean(score[ks])])
    return out


def _judged(row) -> dict:
    """A gallery card's judgement (``judgements``' row): the out-of-fold label and
    probability (or, unlabelled, the refit label), the refit score named as such, and why
    they differ where they do; ``by``: "out_of_fold", "refit", "none" (not assessed)."""
    oof, refit = int(row["oof_prediction"]), int(row["refit_prediction"])
    by = "out_of_fold" if oof >= 0 else "refit" if refit >= 0 else "none"
    return {"by": by, "oof": LABEL_TEXT[oof], "refit": LABEL_TEXT[refit],
            "probability": _f(float(row["oof_probability"])),
            "refit_score": _f(float(row["refit_score"]))}


def _cards(c: dict) -> list[dict]:
    """The gallery's cards in its order (judged variant first), as text."""
    mids, labels = list(c["mids"]), np.asarray(c["labels"])
    a = c["assessment"]
    table = a["judgements"].set_index("mid", drop=False) if a is not None else None
    order = gallery_order(a["judgements"], mids) if a is not None else list(mids)
    models = c["models"]
    at = {str(m): k for k, m in enumerate(models["mid"].values)}
    position = {m: k for k, m in enumerate(mids)}
    cards = []
    for mid in order:
        k = position[mid]
        row = table.loc[mid] if table is not None else None
        cards.append({
            "mid": mid, "label": LABEL_TEXT[int(labels[k])],
            "classes": card_classes(row) if row is not None else "card",
            "disagrees": bool(row["disagrees_with_label"]) if row is not None else False,
            "judged": _judged(row) if row is not None else {"by": ""},
            "robust": _f(float(c["robust"][k])), "source": _source(models, at.get(mid), row)})
    return cards


def _source(models, row, judged) -> str:
    """A card's recipe or source: the judgements' ``source``, else the recipe fields."""
    if judged is not None:
        return str(judged["source"])
    if row is None or "augmentation" not in models:
        return ""
    augmentation = str(models["augmentation"].values[row])
    span = recipe_range(augmentation, float(models["aug_range"].values[row]))
    return f"{augmentation} {span}, {models['anomaly_name'].values[row]}"
