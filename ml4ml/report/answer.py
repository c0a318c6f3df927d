"""The report's answer, first on the page: which models the chosen assessor judges not
invariant, with the colours of the classes and the mark of a disagreement with the label.

Small functions of a judgements table (``ml4ml.assess.judgements.judgement_table``), each
returning one piece of HTML with every text from the store escaped: ``answer_section``
(the count, how it was judged, the legend, the list of variant models), ``legend``,
``card_classes`` and ``judgement_badges`` (the gallery's class colour and disagreement
mark), ``gallery_order`` and ``gallery_filter``.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np
import pandas as pd

from ml4ml.report.figures import LABEL_COLOURS

__all__ = ["answer_section", "legend", "card_classes", "judgement_badges", "gallery_order",
           "gallery_filter", "fmt", "ANSWER_COLUMNS", "CLASS_STYLE", "CLASS_NAMES"]

CLASS_NAMES = {1: "invariant", 0: "variant", -1: "unjudged"}

# the classes' colours (those of the figures), the disagreement's hatching, the list's box
CLASS_STYLE = """
:root { --invariant: %(invariant)s; --variant: %(variant)s; --unjudged: %(unjudged)s;
        --hatch: repeating-linear-gradient(135deg, #222 0 2px, #fff 2px 5px); }
.swatch { display: inline-block; width: 0.95em; height: 0.95em; border-radius: 2px;
          vertical-align: -0.12em; margin-right: 0.25em; background: var(--unjudged); }
.swatch.invariant { background: var(--invariant); } .swatch.variant { background: var(--variant); }
.badge.differs { display: inline-block; padding: 0 5px; border: 1px solid #222;
                 border-radius: 3px; font-weight: bold; font-size: 0.9em; color: #111;
                 background: #fff; box-shadow: inset 4px 0 0 #222; }
.stripe { display: inline-block; width: 6px; height: 1.1em; vertical-align: -0.2em;
          background: var(--hatch); margin-right: 0.3em; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 18px; font-size: 0.88em; margin: 6px 0; }
.answer-list { max-height: min(52vh, 460px); overflow: auto; border: 1px solid #ddd;
               border-left: 6px solid var(--variant); }
.answer-list table { width: 100%%; }
.answer-list thead th { position: sticky; top: 0; background: #fff; }
.answer-list th.source, .answer-list td.source { text-align: left; }
.answer-list td:first-child, .answer-list th:first-child { padding-left: 14px; }
.answer-list tr.disagrees td:first-child { background: var(--hatch) left / 6px 100%% no-repeat; }
.card { border-top: 6px solid var(--unjudged); }
.card.invariant { border-top-color: var(--invariant); }
.card.variant { border-top-color: var(--variant); }
.card.disagrees { background: var(--hatch) left / 6px 100%% no-repeat; padding-left: 12px; }
.judged.invariant { color: var(--invariant); font-weight: bold; }
.judged.variant { color: #b34a00; font-weight: bold; }
.filter button[aria-pressed='true'] { font-weight: bold; border-width: 2px; }
.gallery[data-show='variant'] .card:not(.variant),
.gallery[data-show='invariant'] .card:not(.invariant),
.gallery[data-show='disagrees'] .card:not(.disagrees) { display: none; }
""" % {"invariant": LABEL_COLOURS[1], "variant": LABEL_COLOURS[0],
       "unjudged": LABEL_COLOURS[-1]}

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


def legend(counts: dict | None = None) -> str:
    """What the colours and the hatched mark mean (``counts``: ``answer_counts``)."""
    n = counts or {}

    def count(key):
        return f" ({n[key]})" if key in n else ""

    return ("<div class='legend' role='note' aria-label='legend'>"
            f"<span><span class='swatch invariant'></span>judged invariant{count('invariant')}"
            "</span>"
            f"<span><span class='swatch variant'></span>judged not invariant (variant)"
            f"{count('variant')}</span>"
            + ("<span><span class='swatch'></span>not judged (not in the assessment)"
               f"{count('unjudged')}</span>" if n.get("unjudged", 1) else "") +
            "<span><span class='stripe'></span><span class='badge differs'>≠ label</span> "
            f"the judgement differs from the model's label{count('disagree')}</span>"
            "</div>")


def card_classes(row) -> str:
    """The gallery card's classes: its judged class, and ``disagrees``."""
    judged = CLASS_NAMES[int(row["judgement"])]
    return f"card {judged}" + (" disagrees" if bool(row["disagrees_with_label"]) else "")


def judgement_badges(row) -> str:
    """The disagreement badge of a model, or nothing."""
    return " <span class='badge differs' title='the judgement differs from the label'>" \
           "≠ label</span>" if bool(row["disagrees_with_label"]) else ""


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


def gallery_filter(counts: dict) -> str:
    """Buttons that show all cards, or only the variant, invariant or disagreeing ones."""
    buttons = (("all", f"all ({counts['judged'] + counts['unjudged']})"),
               ("variant", f"not invariant ({counts['variant']})"),
               ("invariant", f"invariant ({counts['invariant']})"),
               ("disagrees", f"≠ label ({counts['disagree']})"))
    return ("<p class='filter' role='group' aria-label='show'>show: " + " ".join(
        f"<button type='button' data-show='{key}' aria-pressed='{str(key == 'all').lower()}'>"
        f"{escape(text)}</button>" for key, text in buttons) + "</p>")


def _definitions(kind: str) -> str:
    return ("<dl class='defs'>" + "".join(
        f"<dt>{escape(name)}</dt><dd>{escape(text.format(kind=kind))}</dd>"
        for name, text in ANSWER_COLUMNS) + "</dl>")


def _rows(variant: pd.DataFrame) -> list[str]:
    rows = []
    for _, row in variant.iterrows():
        mid = escape(str(row["mid"]))
        klass = "variant disagrees" if row["disagrees_with_label"] else "variant"
        rows.append(f"<tr class='{klass}'><td><a href='#{mid}'>{mid}</a></td>"
                    f"<td>{escape(_probability(row))}</td>"
                    f"<td>{LABEL_TEXT[int(row['label'])]}{judgement_badges(row)}</td>"
                    f"<td>{'yes' if row['holdout'] else 'no'}</td>"
                    f"<td class='source'>{escape(str(row['source']))}</td>"
                    f"<td>{fmt(float(row['clean_accuracy']))}</td></tr>")
    return rows


def _agreement(counts: dict) -> str:
    """How often the judgements agree with the labels (out of fold, so an honest rate)."""
    labelled = counts["labelled"]
    if not labelled:
        return f"{counts['disagree']} judgement(s) differ from the label."
    agree = labelled - counts["disagree"]
    return (f"Out of fold it agrees with {agree} of the {labelled} labels "
            f"({agree / labelled:.0%}; {counts['disagree']} differ, marked ≠ label).")


def answer_section(table: pd.DataFrame, counts: dict, *, transform: str,
                   csv: str = "judgements.csv") -> str:
    """The answer: how many models are judged not invariant, by which assessor and how,
    the legend, then the list of those models (most surely variant first)."""
    from ml4ml.assess.judgements import PROBABILITY_KINDS, how_judged

    chosen, repeats = table.attrs.get("assessor", ""), table.attrs.get("repeats", 0)
    kind = PROBABILITY_KINDS[table.attrs.get("probability_kind", "probability")]
    how = how_judged(counts, chosen, repeats)
    variant = _ranked(table[table["judgement"] == 0])
    out = ["<section id='answer' aria-labelledby='answer-heading'>",
           f"<h2 id='answer-heading'>The answer: {counts['variant']} of {counts['judged']} "
           f"models are not invariant to {escape(transform)}</h2>",
           f"<p class='meta'>judged by <b>{escape(chosen)}</b>, the chosen assessor: "
           f"{escape(', '.join(how))}. {_agreement(counts)} Whether it beats the formula "
           f"baselines: <a href='#verdict'>the verdict</a>, below. Every model's judgement: "
           f"<a href='{escape(csv)}'>{escape(csv)}</a>.</p>",
           legend(counts)]
    if len(variant):
        out += ["<div class='answer-list'><table id='variant-models'><thead><tr>"
                "<th>model</th><th>P(invariant)</th><th>label</th><th>hold-out</th>"
                "<th class='source'>source</th><th>clean accuracy</th></tr></thead><tbody>",
                *_rows(variant), "</tbody></table></div>", _definitions(kind)]
    else:
        out.append("<p>No model is judged not invariant.</p>")
    out.append("</section>")
    return "\n".join(out)
