"""The report's answer, first on the page: which models the chosen assessor judges not
invariant, with the colours of the classes and the mark of a disagreement with the label.

Small functions of a judgements table (``ml4ml.assess.judgements.judgement_table``):
``answer_section`` (the count, how it was judged, the legend, the list of variant models;
template ``templates/answer.html.j2``, which escapes every text from the store),
``card_classes`` (the gallery card's class colour and disagreement mark),
``gallery_order`` and ``gallery_buttons`` (the gallery's order and filter). The class
colours are the figures' (``LABEL_COLOURS``, filled into ``templates/report.css.j2``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ml4ml.report.figures import LABEL_COLOURS
from ml4ml.report.templating import render

__all__ = ["answer_section", "answer_view", "card_classes", "gallery_order", "gallery_buttons", "fmt",
           "ANSWER_COLUMNS", "CLASS_COLOURS", "CLASS_NAMES"]

CLASS_NAMES = {1: "invariant", 0: "variant", -1: "unjudged"}
# the classes' colours on the page: those of the figures
CLASS_COLOURS = {name: LABEL_COLOURS[k] for k, name in CLASS_NAMES.items()}

# the list's columns, defined under it
ANSWER_COLUMNS = (
    ("model", "the model's id (a link to its card in the gallery)"),
    ("P(invariant)", "out-of-fold probability that the model is invariant: {kind}; for an "
                     "unlabelled model (in no test fold), the refit assessor's score"),
    ("label", "the model's label (≠ label: the judgement differs from it)"),
    ("hold-out", "yes for a hold-out model"),
    ("source", "its training recipe, or the file it was added or imported from"),
    ("clean accuracy", "accuracy on the probed suite at the identity (0 to 1)"),
)
LABEL_TEXT = {1: "invariant", 0: "variant", -1: "unknown"}


def fmt(value, digits=3) -> str:
    """A number with ``digits`` decimals; "n/a" for None or NaN."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def card_classes(row) -> str:
    """The gallery card's classes: its judged class, and ``disagrees``."""
    judged = CLASS_NAMES[int(row["judgement"])]
    return f"card {judged}" + (" disagrees" if bool(row["disagrees_with_label"]) else "")


def _probability(row) -> str:
    if row["judged_by"] == "out_of_fold":
        return fmt(float(row["oof_probability"]))
    if row["judged_by"] == "refit":
        return f"refit {fmt(float(row['refit_score']))}"
    return "n/a"


def _ranked(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` ordered: variant, invariant, unjudged; each by P(invariant) (out of fold,
    else the refit score) ascending, then id."""
    order = table["judgement"].map({0: 0, 1: 1, -1: 2})
    p = table["oof_probability"].where(table["judged_by"] == "out_of_fold",
                                       table["refit_score"])
    return table.assign(_order=order, _p=p.fillna(np.inf)).sort_values(
        ["_order", "_p", "mid"], kind="stable").drop(columns=["_order", "_p"])


def gallery_order(table: pd.DataFrame, mids) -> list[str]:
    """``mids`` in the gallery's order: judged variant first (most surely variant first),
    then invariant, then the rest."""
    wanted = set(mids)
    ranked = [m for m in _ranked(table)["mid"] if m in wanted]
    return ranked + [m for m in mids if m not in set(ranked)]


def gallery_buttons(counts: dict) -> list[tuple[str, str]]:
    """The gallery's filter: (key, text) of the buttons that show all cards, or only the
    variant, invariant or disagreeing ones."""
    return [("all", f"all ({counts['judged'] + counts['unjudged']})"),
            ("variant", f"not invariant ({counts['variant']})"),
            ("invariant", f"invariant ({counts['invariant']})"),
            ("disagrees", f"≠ label ({counts['disagree']})")]


def _rows(variant: pd.DataFrame) -> list[dict]:
    """The list's rows, as text."""
    return [{"mid": str(row["mid"]), "probability": _probability(row),
             "classes": "variant disagrees" if row["disagrees_with_label"] else "variant",
             "label": LABEL_TEXT[int(row["label"])],
             "disagrees": bool(row["disagrees_with_label"]),
             "holdout": "yes" if row["holdout"] else "no", "source": str(row["source"]),
             "clean_accuracy": fmt(float(row["clean_accuracy"]))}
            for _, row in variant.iterrows()]


def _agreement(counts: dict) -> str:
    """How often the judgements agree with the labels (out of fold, so an honest rate)."""
    labelled = counts["labelled"]
    if not labelled:
        return f"{counts['disagree']} judgement(s) differ from the label."
    agree = labelled - counts["disagree"]
    return (f"Out of fold it agrees with {agree} of the {labelled} labels "
            f"({agree / labelled:.0%}; {counts['disagree']} differ, marked ≠ label).")


def answer_view(table: pd.DataFrame, counts: dict, *, transform: str,
                csv: str = "judgements.csv") -> dict:
    """What the answer shows, as text (``templates/answer.html.j2`` lays it out)."""
    from ml4ml.assess.judgements import PROBABILITY_KINDS, how_judged

    chosen, repeats = table.attrs.get("assessor", ""), table.attrs.get("repeats", 0)
    kind = PROBABILITY_KINDS[table.attrs.get("probability_kind", "probability")]
    return {"counts": counts, "transform": transform, "chosen": chosen, "csv": csv,
            "how": ", ".join(how_judged(counts, chosen, repeats)),
            "agreement": _agreement(counts),
            "rows": _rows(_ranked(table[table["judgement"] == 0])),
            "columns": [(name, text.format(kind=kind)) for name, text in ANSWER_COLUMNS]}


def answer_section(table: pd.DataFrame, counts: dict, *, transform: str,
                   csv: str = "judgements.csv") -> str:
    """The answer: how many models are judged not invariant, by which assessor and how,
    the legend, then the list of those models (most surely variant first)."""
    return render("ml4ml.report", "answer.html.j2",
                  answer=answer_view(table, counts, transform=transform, csv=csv))
