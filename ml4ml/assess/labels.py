"""Labels of models: read from files, derived from recipes, merged from expert ratings.

Pure functions over tables; the labels group itself is written by ``ml4ml.store.labels``.

Files (``read_label_file``) come in two layouts, told apart by their header:

- a CSV with a header ``mid,label`` and one model per line;
- the reference's ``mlabel.txt``: whitespace-separated with a header line; column 0 is the
  model id, columns 1, 2 and 3 its labels for rotation, brightness and scaling.

Every label is 0 (variant) or 1 (invariant). Unknown or repeated model ids and any other
value are refused, naming the file and line, before anything is written.

The recipe proxy (``recipe_labels``, ``RECIPE_RULE``) calls a model invariant to a
transform when it was trained with that augmentation over at least the tested range and
no anomaly breaks it.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np

from ml4ml.errors import InputError

__all__ = ["read_label_file", "recipe_labels", "RECIPE_RULE", "BREAKING_ANOMALIES",
           "majority", "agreement", "cohen_kappa", "fleiss_kappa", "krippendorff_alpha",
           "MLABEL_COLUMNS"]

# the reference's mlabel.txt: column of each transform's labels
MLABEL_COLUMNS = {"rotation": 1, "brightness": 2, "scaling": 3}
# anomalies whose effect on invariance falls inside the tested range: the model never
# learned (class-ordered), an augmentation hole within the range, the test images learned
BREAKING_ANOMALIES = {4: "class-ordered training", 6: "an augmentation hole in the range",
                      8: "test-data leakage"}
RECIPE_RULE = (
    "invariant (1) when the model was trained with the transform's own augmentation over a "
    "range that covers the whole tested grid (rotation: aug_range >= max |angle|; scaling "
    "and brightness: [1 - a, 1 + a] contains every tested factor) and no anomaly breaks "
    "it: not class-ordered training (4), no impaired-augmentation hole (6) that overlaps "
    "the tested range, no test-data leakage (8); variant (0) otherwise; unknown (-1) for a "
    "model without a recipe (imported)")


def read_label_file(path, transform: str, known_mids) -> dict[str, int]:
    """{mid: 0/1} from a ``mid,label`` CSV or the reference's ``mlabel.txt``.

    known_mids : the store's model ids; any other id is refused.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError("label file not found", file=path, field="--from") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the label file: {exc}", file=path,
                         field="--from") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError("the label file is empty", file=path, field="--from")
    header = lines[0]
    if "," in header:
        rows = _csv_rows(path, lines)
    else:
        rows = _mlabel_rows(path, lines, transform)
    known = set(str(m) for m in known_mids)
    labels: dict[str, int] = {}
    for line_number, mid, value in rows:
        where = f"line {line_number}"
        if mid not in known:
            raise InputError(f"unknown model id {mid!r}; the store has "
                             f"{_brief(sorted(known))}", file=path, field=where)
        if mid in labels:
            raise InputError(f"model {mid!r} is labelled twice", file=path, field=where)
        if value not in ("0", "1"):
            raise InputError(f"label {value!r} of model {mid!r} is not 0 or 1 (1 invariant, "
                             f"0 variant)", file=path, field=where)
        labels[mid] = int(value)
    if not labels:
        raise InputError("the label file has a header but no labels", file=path,
                         field="--from")
    return labels


def _csv_rows(path, lines):
    reader = csv.reader(lines)
    header = [h.strip().lower() for h in next(reader)]
    if "mid" not in header or "label" not in header:
        raise InputError(f"a CSV label file needs a header 'mid,label'; found {header}",
                         file=path, field="line 1")
    m, k = header.index("mid"), header.index("label")
    for number, row in enumerate(reader, start=2):
        if len(row) <= max(m, k):
            raise InputError(f"expected {len(header)} columns, found {len(row)}", file=path,
                             field=f"line {number}")
        yield number, row[m].strip(), row[k].strip()


def _mlabel_rows(path, lines, transform):
    if transform not in MLABEL_COLUMNS:
        raise InputError(f"the reference's mlabel.txt has labels for "
                         f"{', '.join(MLABEL_COLUMNS)}, not {transform!r}", file=path,
                         field="--transform", hint="use a mid,label CSV for other transforms")
    column = MLABEL_COLUMNS[transform]
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split()
        if len(parts) <= column:
            raise InputError(f"expected at least {column + 1} columns (model id, rotation, "
                             f"brightness, scaling), found {len(parts)}", file=path,
                             field=f"line {number}")
        value = parts[column]
        if value in ("0.0", "1.0"):
            value = value[0]
        yield number, parts[0], value


def _brief(values) -> str:
    return ", ".join(values[:5]) + (f", ... ({len(values)} in all)" if len(values) > 5 else "")


def recipe_labels(models, transform: str, grid) -> dict[str, int]:
    """{mid: 1, 0 or -1} by ``RECIPE_RULE`` from the ``models`` table (dim mid)."""
    grid = np.asarray(grid, dtype=np.float64)
    low, high = float(grid.min()), float(grid.max())
    out = {}
    has_recipe = "augmentation" in models and "aug_range" in models
    sources = (np.asarray(models["source"].values).astype(str) if "source" in models
               else np.full(models.sizes.get("mid", 0), ""))
    for k, mid in enumerate(np.asarray(models["mid"].values).tolist()):
        # models trained elsewhere ("added") or imported ("legacy") have no recipe
        if not has_recipe or not str(models["augmentation"].values[k]) or sources[k]:
            out[str(mid)] = -1
            continue
        augmentation = str(models["augmentation"].values[k])
        a = float(models["aug_range"].values[k])
        anomaly = int(models["anomaly"].values[k]) if "anomaly" in models else 0
        if augmentation != transform:
            out[str(mid)] = 0
            continue
        if transform == "rotation":
            covered = (-a, a)
        else:
            covered = (1.0 - a, 1.0 + a)
        invariant = covered[0] <= low + 1e-9 and covered[1] >= high - 1e-9
        if anomaly in (4, 8):
            invariant = False
        elif anomaly == 6 and "anomaly_removed" in models:
            import json

            removed = json.loads(str(models["anomaly_removed"].values[k]) or "[]")
            if any(lo < high and hi > low for lo, hi in removed):
                invariant = False
        out[str(mid)] = int(invariant)
    return out


def majority(ratings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Majority label per model of ``ratings`` (rater, mid) in {1, 0, -1 none}.

    Returns (labels (mid,) int8 with -1 where no rater labelled it or votes tie,
    tied (mid,) bool).
    """
    ratings = np.asarray(ratings)
    ones = (ratings == 1).sum(axis=0)
    zeros = (ratings == 0).sum(axis=0)
    labels = np.where(ones > zeros, 1, np.where(zeros > ones, 0, -1)).astype(np.int8)
    tied = (ones == zeros) & (ones > 0)
    return labels, tied


def cohen_kappa(a, b) -> float:
    """Cohen's kappa of two raters' 0/1 labels on the same models (NaN if undefined)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.size == 0:
        return float("nan")
    observed = float((a == b).mean())
    expected = float(sum((a == c).mean() * (b == c).mean() for c in (0, 1)))
    return float("nan") if expected == 1.0 else (observed - expected) / (1.0 - expected)


def fleiss_kappa(ratings: np.ndarray) -> float:
    """Fleiss' kappa over the models every rater labelled, ``ratings`` (rater, mid)."""
    ratings = np.asarray(ratings)
    complete = (ratings >= 0).all(axis=0)
    if ratings.shape[0] < 2 or complete.sum() == 0:
        return float("nan")
    r = ratings[:, complete]
    n_raters = r.shape[0]
    counts = np.stack([(r == c).sum(axis=0) for c in (0, 1)], axis=1)  # (mid, category)
    p_item = ((counts * (counts - 1)).sum(axis=1)) / (n_raters * (n_raters - 1))
    p_bar = p_item.mean()
    share = counts.sum(axis=0) / counts.sum()
    p_e = float((share ** 2).sum())
    return float("nan") if p_e == 1.0 else float((p_bar - p_e) / (1.0 - p_e))


def krippendorff_alpha(ratings: np.ndarray) -> float:
    """Krippendorff's alpha (nominal) of ``ratings`` (rater, mid), -1 for missing.

    Uses every model labelled by at least two raters (missing ratings allowed).
    """
    ratings = np.asarray(ratings)
    labelled = (ratings >= 0)
    m = labelled.sum(axis=0)
    usable = m >= 2
    if not usable.any():
        return float("nan")
    r = ratings[:, usable]
    m = m[usable].astype(np.float64)
    counts = np.stack([(r == c).sum(axis=0) for c in (0, 1)], axis=1).astype(np.float64)
    # coincidence matrix o[c, k] = sum over units of n_uc * (n_uk - [c == k]) / (m_u - 1)
    o = np.einsum("uc,uk,u->ck", counts, counts, 1.0 / (m - 1))
    o -= np.diag((counts / (m - 1)[:, None]).sum(axis=0))
    n_c = o.sum(axis=1)
    n = n_c.sum()
    observed = o[0, 1] + o[1, 0]
    expected = (n_c[0] * n_c[1] * 2) / (n - 1)
    return float("nan") if expected == 0 else float(1.0 - observed / expected)


def agreement(ratings: np.ndarray, raters, recipe=None, *, skipped=None,
              shared=None) -> dict:
    """Inter-rater agreement of ``ratings`` (rater, mid) in {1, 0, -1 none or skipped}.

    skipped : (rater, mid) bool, the -1 entries that are skips (asked, and skipped);
        default none. shared : (rater, mid) bool, the models each rater was asked as the
        shared overlap (``store.labels`` ``pick == overlap``); default none.
    recipe : (mid,) in {1, 0, -1}, the recipe proxy, or None.

    Returns {"counts": {rater: {"invariant", "variant", "skipped", "unrated"}},
    "pairwise": {(a, b): {"n" (both labelled: kappa's models), "n_overlap" (of them, in
    both raters' shared overlap), "skipped" (rated by both, skipped by one or both),
    "kappa"}}, "fleiss_kappa", "n_fleiss" (models every rater labelled),
    "krippendorff_alpha", "n_alpha" (models at least two labelled), "ties",
    "with_recipe"}: each rater's and the majority's agreement with the recipe proxy.
    """
    ratings = np.asarray(ratings)
    raters = [str(r) for r in raters]
    skipped = (np.zeros(ratings.shape, dtype=bool) if skipped is None
               else np.asarray(skipped, dtype=bool) & (ratings < 0))
    shared = (np.zeros(ratings.shape, dtype=bool) if shared is None
              else np.asarray(shared, dtype=bool))
    labelled = ratings >= 0
    rated = labelled | skipped
    counts = {r: {"invariant": int((ratings[i] == 1).sum()),
                  "variant": int((ratings[i] == 0).sum()),
                  "skipped": int(skipped[i].sum()),
                  "unrated": int((~rated[i]).sum())} for i, r in enumerate(raters)}
    pairs = {}
    for (i, a), (j, b) in itertools.combinations(enumerate(raters), 2):
        both = labelled[i] & labelled[j]
        pairs[(a, b)] = {"n": int(both.sum()),
                         "n_overlap": int((both & shared[i] & shared[j]).sum()),
                         "skipped": int((rated[i] & rated[j] & ~both).sum()),
                         "kappa": cohen_kappa(ratings[i][both], ratings[j][both])}
    merged, tied = majority(ratings)
    out = {"counts": counts, "pairwise": pairs, "fleiss_kappa": fleiss_kappa(ratings),
           "n_fleiss": int(labelled.all(axis=0).sum()) if len(raters) > 1 else 0,
           "krippendorff_alpha": krippendorff_alpha(ratings),
           "n_alpha": int((labelled.sum(axis=0) >= 2).sum()), "ties": int(tied.sum()),
           "with_recipe": {}}
    if recipe is not None:
        recipe = np.asarray(recipe)
        for name, row in [(r, ratings[i]) for i, r in enumerate(raters)] + [("majority", merged)]:
            both = (row >= 0) & (recipe >= 0)
            out["with_recipe"][name] = {
                "n": int(both.sum()),
                "agreement": float((row[both] == recipe[both]).mean()) if both.any()
                else float("nan"),
                "kappa": cohen_kappa(row[both], recipe[both])}
    return out
