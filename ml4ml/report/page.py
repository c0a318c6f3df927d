"""The report's ``index.html``: static, self-contained apart from its PNG files."""

from __future__ import annotations

import datetime as _dt
import math
from collections import defaultdict
from html import escape

import numpy as np

from ml4ml.assess.comparison import MIN_LABELLED, MIN_PER_CLASS
from ml4ml.report.answer import (CLASS_STYLE, answer_section, card_classes, fmt as _f,
                                 gallery_filter, gallery_order, judgement_badges, legend)
from ml4ml.zoo.recipe import recipe_range

__all__ = ["render", "recipe_range", "score_definition", "METHOD_COLUMNS"]

LABEL_TEXT = {1: "invariant", 0: "variant", -1: "unknown"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1180px;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; font-size: 1.2em; }
.meta { color: #555; font-size: 0.9em; }
.verdict { background: #f4f4f4; border-left: 5px solid #555; padding: 10px 14px;
           font-size: 1.05em; }
table { border-collapse: collapse; font-size: 0.88em; }
th, td { padding: 3px 9px; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.chosen td { font-weight: bold; } tr.baseline td { color: #444; }
.warning { background: #fff4e5; border-left: 5px solid #b54708; padding: 8px 14px; }
dl.defs { font-size: 0.85em; color: #444; margin: 6px 0 0; }
dl.defs dt { font-weight: bold; float: left; clear: left; margin-right: 0.5em; }
dl.defs dd { margin: 0 0 2px 0; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 6px; width: %(thumb)spx; }
.card img { display: block; width: %(thumb)spx; height: auto; }
.card a.enlarge { display: block; cursor: zoom-in; }
.card a.enlarge:focus-visible { outline: 3px solid #111; outline-offset: 2px; }
.card .caption { font-size: 0.82em; }
nav.sections { font-size: 0.88em; margin: 4px 0 0; } nav.sections a { margin-right: 0.9em; }
img.figure { max-width: 100%%; }
dialog#enlarged { max-width: 98vw; max-height: 96vh; overflow: auto; padding: 8px 12px;
                  border: 1px solid #888; border-radius: 6px; }
dialog#enlarged::backdrop { background: rgba(0, 0, 0, 0.6); }
dialog#enlarged img { display: block; height: auto; }
dialog#enlarged .bar { display: flex; justify-content: space-between; gap: 1em;
                       align-items: baseline; }
"""

# the enlarge dialog: a click (or Enter) on a gallery card opens its full-size strip; Esc,
# the close button or a click beside the picture closes it, and the focus returns
SCRIPT = """
(() => {
  const dialog = document.getElementById('enlarged');
  let picture = null;  // made on the first click: no <img> without a picture in the page
  let opener = null;
  document.addEventListener('click', event => {
    const link = event.target.closest('a.enlarge');
    if (!link) return;
    event.preventDefault();
    opener = link;
    if (!picture) {
      picture = document.createElement('img');
      picture.setAttribute('style', dialog.querySelector('.picture').dataset.style);
      dialog.querySelector('.picture').appendChild(picture);
    }
    picture.src = link.getAttribute('href');
    picture.alt = 'variance matrices of ' + link.dataset.mid + ' at full size';
    picture.dataset.mid = link.dataset.mid;
    dialog.querySelector('.title').textContent = link.dataset.mid + ': variance matrices '
      + 'at full size';
    dialog.showModal();
    dialog.querySelector('button').focus();
  });
  dialog.addEventListener('click', event => { if (event.target === dialog) dialog.close(); });
  dialog.addEventListener('close', () => { if (opener) opener.focus(); });
  // the gallery's filter: all cards, or the variant, invariant or disagreeing ones
  const gallery = document.querySelector('.gallery');
  const buttons = document.querySelectorAll('.filter button');
  const show = key => {
    gallery.dataset.show = key;
    buttons.forEach(b => b.setAttribute('aria-pressed', String(b.dataset.show === key)));
  };
  buttons.forEach(b => b.addEventListener('click', () => show(b.dataset.show)));
  // a link to a card the filter hides shows every card again
  window.addEventListener('hashchange', () => {
    const card = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (card && card.classList.contains('card') && card.offsetParent === null) {
      show('all');
      card.scrollIntoView();
    }
  });
})();
"""


def render(c: dict) -> str:
    """The page of a report context (``report.stage.report_store``)."""
    mids, labels = list(c["mids"]), np.asarray(c["labels"])
    a = c["assessment"]
    params = c["params"]
    n_hold = int(np.asarray(c["models"]["holdout"].values, dtype=bool).sum()) \
        if "holdout" in c["models"] else 0
    from ml4ml.report.figures import THUMBNAIL_WIDTH

    style = STYLE % {"thumb": THUMBNAIL_WIDTH} + CLASS_STYLE
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>ml4ml report: {escape(c['transform'])}</title><style>{style}</style>"
             f"</head><body>",
             f"<h1>{escape(c['transform'])} invariance of {len(mids)} models</h1>",
             f"<p class='meta'>store <code>{escape(c['path'])}</code>, suite "
             f"<b>{escape(c['suite'])}</b>, grid {params[0]:g} .. {params[1]:g} "
             f"{escape(c['units'])} ({params[2]} values); {n_hold} hold-out models; labels "
             f"<b>{escape(c['label_source'] or 'none')}</b> "
             f"({int((labels == 1).sum())} invariant, {int((labels == 0).sum())} variant, "
             f"{int((labels < 0).sum())} unknown); written "
             f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}</p>"]
    if a is not None:
        parts.append(_sections(bool(a["top"])))
        parts.append(answer_section(a["judgements"], a["counts"], transform=c["transform"]))
        parts.append("<h2 id='verdict'>The verdict on the assessors</h2>")
        if a.get("underpowered"):
            parts.append(f"<p class='warning'><b>Underpowered comparison:</b> "
                         f"{escape(a['underpowered'])} (a verdict needs at least "
                         f"{MIN_LABELLED} labelled models and {MIN_PER_CLASS} of each "
                         f"class). Label more models before trusting it.</p>")
        parts.append(f"<p class='verdict'>{escape(a['verdict'])}</p>")
        parts.append(_methods_table(a))
        if a["top"]:
            parts.append(f"<h2 id='features'>Top features of {escape(a['chosen'])}</h2>"
                         f"<p class='meta'>Permutation importance on the protocol's test "
                         f"folds: each bar is the mean, over the {3 * a['repeats']} test "
                         f"folds, of the drop in test accuracy when the feature's column is "
                         f"shuffled ({a.get('n_permutations') or 'several'} shuffles per "
                         f"fold, averaged); each whisker is ± 1 standard deviation of those "
                         f"fold means.</p>"
                         "<img class='figure' src='importance.png' alt='top features'>")
    else:
        parts.append("<p class='verdict'>No assessment yet: run <code>ml4ml assess</code>."
                     "</p>")
    parts.append("<h2 id='accuracy'>Accuracy against the parameter</h2>"
                 "<p class='meta'>One line per model: its accuracy (fraction of the test "
                 "samples classified correctly) at each parameter of the grid, coloured by "
                 "its label.</p>"
                 "<img class='figure' src='accuracy.png' alt='accuracy curves'>")
    parts.append(_database_table(c))
    parts.append(_gallery(c))
    parts.append("<dialog id='enlarged' aria-label='variance matrices at full size'>"
                 "<div class='bar'><b class='title'></b><form method='dialog'>"
                 "<button>close (Esc)</button></form></div>"
                 f"<div class='picture' data-style='{_full_size_style(c)}'></div></dialog>")
    parts.append(f"<script>{SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _sections(top: bool) -> str:
    """Links to the page's sections."""
    links = [("answer", "the answer"), ("verdict", "verdict on the assessors")] + \
        ([("features", "top features")] if top else []) + \
        [("accuracy", "accuracy"), ("database", "recipes"), ("gallery", "gallery")]
    return ("<nav class='sections' aria-label='sections'>" + "".join(
        f"<a href='#{key}'>{escape(text)}</a>" for key, text in links) + "</nav>")


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


def _definitions(columns) -> str:
    return ("<dl class='defs'>" + "".join(f"<dt>{escape(name)}</dt><dd>{escape(text)}</dd>"
                                          for name, text in columns) + "</dl>")


def _methods_table(a: dict) -> str:
    comparison = a["comparison"]
    rows = ["<h3>Assessors and baselines</h3>",
            f"<p class='meta'>the paper's protocol: hold-out models always one fold, the "
            f"regular ones split at random into two; train on two, test on the third, all "
            f"three ways, {a['repeats']} repeats; the table is over every evaluation. "
            f"The verdict compares the chosen assessor ({escape(a['chosen'])}) with the best "
            f"baseline ({escape(a['best_baseline'])}) on the {a['n_holdout']} hold-out models "
            f"only, both chosen on them: accuracy {comparison['accuracy_assessor']:.3f} vs "
            f"{comparison['accuracy_baseline']:.3f}, difference "
            f"{comparison['difference']:+.3f} (95% CI {comparison['ci_low']:+.3f} to "
            f"{comparison['ci_high']:+.3f}), p = {comparison['p_value']:.3g}; "
            f"{escape(a['test'])}.</p>",
            "<table><tr><th>method</th><th>kind</th><th>accuracy</th><th>min</th>"
            "<th>max</th><th>s.e.</th><th>F1</th><th>kappa</th></tr>"]
    for row in a["rows"]:
        cls = "chosen" if row["method"] in (a["chosen"], a["best_baseline"]) else row["kind"]
        rows.append(f"<tr class='{cls}'><td>{escape(row['method'])}</td>"
                    f"<td>{escape(row['kind'])}</td><td>{_f(row['accuracy_mean'])}</td>"
                    f"<td>{_f(row['accuracy_min'])}</td><td>{_f(row['accuracy_max'])}</td>"
                    f"<td>{_f(row['accuracy_sem'])}</td><td>{_f(row['f1_mean'])}</td>"
                    f"<td>{_f(row['kappa_mean'])}</td></tr>")
    rows.append("</table>")
    if a.get("best_feature"):
        from ml4ml.assess.comparison import best_feature_text

        text = best_feature_text(a["best_feature"])
        rows.append(f"<p class='meta' id='best-feature'>{escape(text)}.</p>")
    rows.append(_definitions(METHOD_COLUMNS))
    return "\n".join(rows)


def score_definition(a: dict | None) -> str:
    """What the tables and cards call the refit score."""
    if a is None:
        return "no assessment yet"
    kind = a.get("score_kind") or "score"
    return (f"the {kind}, by the chosen assessor ({a['chosen']}) refit on every labelled "
            f"model; in-sample for labelled models (the refit saw their labels)")


def _database_table(c: dict) -> str:
    models = c["models"]
    mids, labels = list(c["mids"]), np.asarray(c["labels"])
    if "augmentation" not in models:
        return ""
    table_mids = [str(m) for m in models["mid"].values]
    at = {m: k for k, m in enumerate(table_mids)}
    score = c["assessment"]["score"] if c["assessment"] else np.full(len(mids), np.nan)
    groups = defaultdict(list)
    for k, mid in enumerate(mids):
        row = at[mid]
        key = (str(models["augmentation"].values[row]), float(models["aug_range"].values[row]),
               str(models["anomaly_name"].values[row]) if "anomaly_name" in models else "")
        groups[key].append((k, row))
    out = ["<h2 id='database'>The database: recipes and outcomes</h2>",
           "<table><tr><th>augmentation</th><th>range</th><th>anomaly</th><th>models</th>"
           "<th>hold-out</th><th>invariant</th><th>judged not invariant</th>"
           "<th>clean accuracy</th><th>robust accuracy</th><th>refit score (in-sample)</th>"
           "</tr>"]
    judged = (c["assessment"]["judgements"].set_index("mid")["judgement"].reindex(mids)
              .fillna(-1).to_numpy() if c["assessment"] else np.full(len(mids), -1))
    units = c.get("units") or "the parameter's units"
    holdout = np.asarray(models["holdout"].values, dtype=bool) if "holdout" in models else \
        np.zeros(len(table_mids), bool)
    accuracy = np.asarray(models["test_accuracy"].values, dtype=float) \
        if "test_accuracy" in models else np.full(len(table_mids), np.nan)
    for (augmentation, span, anomaly), members in sorted(groups.items()):
        ks = [k for k, _ in members]
        rows = [r for _, r in members]
        out.append(f"<tr><td>{escape(augmentation)}</td>"
                   f"<td>{escape(recipe_range(augmentation, span))}</td>"
                   f"<td>{escape(anomaly)}</td><td>{len(ks)}</td>"
                   f"<td>{int(holdout[rows].sum())}</td>"
                   f"<td>{int((labels[ks] == 1).sum())}</td>"
                   f"<td>{int((judged[ks] == 0).sum())}</td>"
                   f"<td>{_f(float(np.nanmean(accuracy[rows])) if np.isfinite(accuracy[rows]).any() else float('nan'))}</td>"
                   f"<td>{_f(float(np.nanmean(c['robust'][ks])))}</td>"
                   f"<td>{_f(float(np.nanmean(score[ks])) if np.isfinite(score[ks]).any() else float('nan'))}</td></tr>")
    out.append("</table>")
    out.append(_definitions((
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
    )))
    return "\n".join(out)


def _judged(row) -> str:
    """A gallery card's judgement (``judgements``' row): the out-of-fold label and
    probability (or, unlabelled, the refit label), the refit score named as such, and why
    they differ where they do."""
    oof, refit = int(row["oof_prediction"]), int(row["refit_prediction"])
    score = f"refit score {_f(float(row['refit_score']))} (in-sample)"
    if oof < 0:
        if refit < 0:
            return "not assessed"
        return (f"predicted <span class='judged {LABEL_TEXT[refit]}'>{LABEL_TEXT[refit]}"
                f"</span> by the refit assessor (not in the protocol), refit score "
                f"{_f(float(row['refit_score']))}")
    text = (f"predicted <span class='judged {LABEL_TEXT[oof]}'>{LABEL_TEXT[oof]}</span> out "
            f"of fold (P(invariant) {_f(float(row['oof_probability']))}), {score}")
    if refit != oof:
        text += (f" (the refit assessor says {LABEL_TEXT[refit]}: it saw this model's "
                 f"label)")
    return text


def _gallery(c: dict) -> str:
    mids, labels = list(c["mids"]), np.asarray(c["labels"])
    a = c["assessment"]
    if a is not None:
        table = a["judgements"].set_index("mid", drop=False)
        order = gallery_order(a["judgements"], mids)
        intro = (f"judged not invariant first (lowest out-of-fold probability of invariant "
                 f"first), then invariant: the top border is the class judged by the "
                 f"chosen assessor ({escape(a['chosen'])}), a hatched left edge and "
                 f"'≠ label' mark a judgement that differs from the label; 'predicted out "
                 f"of fold' is the majority of its predictions over the repeats' test "
                 f"folds, by fits that never saw that model's label, the refit score "
                 f"{escape(score_definition(a))}; models without a label are judged by "
                 f"the refit assessor")
    else:
        table, order = None, list(mids)
        intro = "in store order (no assessment yet)"
    scale = ", ".join(f"{escape(t)} 0..{v:.3g}" for t, v in c["scale"].items())
    out = ["<h2 id='gallery'>Gallery: every model's variance matrices</h2>",
           f"<p class='meta'>{intro}. Each matrix: cell (i, j) is the RMS Δ, the "
           f"root-mean-square over the {escape(c['split'])} test samples of the change in "
           f"one response between parameters i and j ({escape(c['units'])}), "
           f"D[i, j] = ‖R(p_i) − R(p_j)‖₂ / √n; the confidence in probability, a layer "
           f"statistic in the units of the layer's output. One colour scale per matrix "
           f"across models: {scale}. Click a card (or focus it and press Enter) to see "
           f"its matrices at full size; Esc closes.</p>"]
    if a is not None:
        out += [legend(a["counts"]), gallery_filter(a["counts"])]
    out.append("<div class='gallery' data-show='all'>")
    from ml4ml.report.figures import THUMBNAIL_WIDTH

    width, height = (c.get("strips") or {}).get("thumbnail", (THUMBNAIL_WIDTH, 0))
    models = c["models"]
    at = {str(m): k for k, m in enumerate(models["mid"].values)}
    position = {m: k for k, m in enumerate(mids)}
    for mid in order:
        k = position[mid]
        label = int(labels[k])
        row = table.loc[mid] if table is not None else None
        judged = _judged(row) if row is not None else ""
        classes = card_classes(row) if row is not None else "card"
        badge = judgement_badges(row) if row is not None else ""
        size = f" width='{width}' height='{height}'" if height else ""
        out.append(f"<div class='{classes}' id='{escape(mid)}'>"
                   f"<a class='enlarge' href='models/full/{escape(mid)}.png' "
                   f"data-mid='{escape(mid)}' title='enlarge {escape(mid)}'>"
                   f"<img src='models/{escape(mid)}.png' alt='matrices of {escape(mid)}' "
                   f"loading='lazy'{size}></a><div class='caption'><b>{escape(mid)}</b>"
                   f"{badge} label {LABEL_TEXT[label]}; {judged}; robust accuracy "
                   f"{_f(float(c['robust'][k]))}; {_source(models, at.get(mid), row)}"
                   f"</div></div>")
    out.append("</div>")
    return "\n".join(out)


def _source(models, row, judged) -> str:
    """A card's recipe or source: the judgements' ``source``, else the recipe fields."""
    if judged is not None:
        return escape(str(judged["source"]))
    if row is None or "augmentation" not in models:
        return ""
    augmentation = str(models["augmentation"].values[row])
    span = recipe_range(augmentation, float(models["aug_range"].values[row]))
    return (f"{escape(augmentation)} {escape(span)}, "
            f"{escape(str(models['anomaly_name'].values[row]))}")
