"""The report's ``index.html``: static, self-contained apart from its PNG files."""

from __future__ import annotations

import datetime as _dt
import math
from collections import defaultdict
from html import escape

import numpy as np

__all__ = ["render"]

LABEL_TEXT = {1: "invariant", 0: "variant", -1: "unknown"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1180px;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; font-size: 1.2em; }
.meta { color: #555; font-size: 0.9em; }
.verdict { background: #f4f7fb; border-left: 5px solid #2166ac; padding: 10px 14px;
           font-size: 1.05em; }
table { border-collapse: collapse; font-size: 0.88em; }
th, td { padding: 3px 9px; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.chosen td { font-weight: bold; } tr.baseline td { color: #444; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 6px; width: 560px; }
.card img { width: 100%; } .card .caption { font-size: 0.82em; }
.ok { color: #1a7f37; } .wrong { color: #b42318; } .unknown { color: #777; }
img.figure { max-width: 100%; }
"""


def _f(value, digits=3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def render(c: dict) -> str:
    """The page of a report context (``report.stage.report_store``)."""
    mids, labels = list(c["mids"]), np.asarray(c["labels"])
    a = c["assessment"]
    params = c["params"]
    n_hold = int(np.asarray(c["models"]["holdout"].values, dtype=bool).sum()) \
        if "holdout" in c["models"] else 0
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>ml4ml report: {escape(c['transform'])}</title><style>{STYLE}</style>"
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
        parts.append(f"<p class='verdict'>{escape(a['verdict'])}</p>")
        parts.append(_methods_table(a))
        if a["top"]:
            parts.append(f"<h2>Top features of {escape(a['chosen'])}</h2>"
                         "<img class='figure' src='importance.png' alt='top features'>")
    else:
        parts.append("<p class='verdict'>No assessment yet: run <code>ml4ml assess</code>."
                     "</p>")
    parts.append("<h2>Accuracy against the parameter</h2>"
                 "<img class='figure' src='accuracy.png' alt='accuracy curves'>")
    parts.append(_database_table(c))
    parts.append(_gallery(c))
    parts.append("</body></html>")
    return "\n".join(parts)


def _methods_table(a: dict) -> str:
    comparison = a["comparison"]
    rows = ["<h2>Assessors and baselines</h2>",
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
    return "\n".join(rows)


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
    out = ["<h2>The database: recipes and outcomes</h2>",
           "<table><tr><th>augmentation</th><th>range</th><th>anomaly</th><th>models</th>"
           "<th>hold-out</th><th>invariant</th><th>clean accuracy</th>"
           "<th>robust accuracy</th><th>refit score (in-sample)</th></tr>"]
    holdout = np.asarray(models["holdout"].values, dtype=bool) if "holdout" in models else \
        np.zeros(len(table_mids), bool)
    accuracy = np.asarray(models["test_accuracy"].values, dtype=float) \
        if "test_accuracy" in models else np.full(len(table_mids), np.nan)
    for (augmentation, span, anomaly), members in sorted(groups.items()):
        ks = [k for k, _ in members]
        rows = [r for _, r in members]
        out.append(f"<tr><td>{escape(augmentation)}</td><td>{span:g}</td>"
                   f"<td>{escape(anomaly)}</td><td>{len(ks)}</td>"
                   f"<td>{int(holdout[rows].sum())}</td>"
                   f"<td>{int((labels[ks] == 1).sum())}</td>"
                   f"<td>{_f(float(np.nanmean(accuracy[rows])) if np.isfinite(accuracy[rows]).any() else float('nan'))}</td>"
                   f"<td>{_f(float(np.nanmean(c['robust'][ks])))}</td>"
                   f"<td>{_f(float(np.nanmean(score[ks])) if np.isfinite(score[ks]).any() else float('nan'))}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _judged(a: dict, k: int, label: int) -> str:
    """A gallery card's judgement: the out-of-fold label (or, unlabelled, the refit one),
    the refit score named as such, and why they differ where they do."""
    oof, refit = int(a["out_of_fold"][k]), int(a["predicted"][k])
    score = f"refit score {_f(float(a['score'][k]))} (in-sample)"
    if oof < 0:
        if refit < 0:
            return "not assessed"
        return (f"predicted <span class='unknown'>{LABEL_TEXT[refit]}</span> by the refit "
                f"assessor (not in the protocol), refit score {_f(float(a['score'][k]))}")
    mark = "unknown" if label < 0 else "ok" if oof == label else "wrong"
    text = (f"predicted <span class='{mark}'>{LABEL_TEXT[oof]}</span> out of fold, {score}")
    if refit != oof:
        text += (f" (the refit assessor says {LABEL_TEXT[refit]}: it saw this model's "
                 f"label)")
    return text


def _gallery(c: dict) -> str:
    mids, labels = list(c["mids"]), np.asarray(c["labels"])
    a = c["assessment"]
    if a is not None:
        order = sorted(range(len(mids)), key=lambda k: (-np.nan_to_num(a["score"][k],
                                                                       nan=-np.inf), mids[k]))
        intro = (f"sorted by the refit score of {escape(a['chosen'])} (refit on every "
                 f"label, so in-sample for labelled models; highest: most invariant); "
                 f"'predicted out of fold' is the majority of its predictions over the "
                 f"repeats' test folds, by fits that never saw that model's label; models "
                 f"without a label are judged by the refit assessor")
    else:
        order = list(range(len(mids)))
        intro = "in store order (no assessment yet)"
    scale = ", ".join(f"{escape(t)} 0..{v:.3g}" for t, v in c["scale"].items())
    out = ["<h2>Gallery: every model's variance matrices</h2>",
           f"<p class='meta'>{intro}. One colour scale per matrix across models "
           f"({c['split']} samples, l2): {scale}.</p><div class='gallery'>"]
    models = c["models"]
    at = {str(m): k for k, m in enumerate(models["mid"].values)}
    for k in order:
        mid = mids[k]
        label = int(labels[k])
        if a is not None:
            judged = _judged(a, k, label)
        else:
            judged = ""
        row = at.get(mid)
        recipe = ""
        if row is not None and "augmentation" in models:
            recipe = (f"{escape(str(models['augmentation'].values[row]))} "
                      f"±{float(models['aug_range'].values[row]):g}, "
                      f"{escape(str(models['anomaly_name'].values[row]))}")
        out.append(f"<div class='card' id='{escape(mid)}'>"
                   f"<img src='models/{escape(mid)}.png' alt='matrices of {escape(mid)}' "
                   f"loading='lazy'><div class='caption'><b>{escape(mid)}</b> "
                   f"label {LABEL_TEXT[label]}; {judged}; robust accuracy "
                   f"{_f(float(c['robust'][k]))}; {recipe}</div></div>")
    out.append("</div>")
    return "\n".join(out)
