"""Which models the raters are counted over, and how many each has labelled or skipped.

One set, counted the same way by the labelling page (its progress, "n of N labelled"),
``ml4ml label --show`` and ``ml4ml label --agreement``: **the models measured for the
transform** (fresh variance matrices and measures in the suite the page shows,
``page_models``), the only ones the page can show. The labels group of the store has a
row for every model of the models table (``store.labels``), so it may hold more: models
added after the measure pass, or that failed it; those are listed apart, never counted.

A rater's counts over that set (``rating_counts``): ``invariant`` and ``variant``
(``labelled`` = both), ``skipped`` (rating -1 with a time: asked, and skipped), and
``unrated`` (never rated); they add up to ``total``. ``outside`` counts the ratings on
models outside the set (a model measured when it was rated, stale now).
"""

from __future__ import annotations

import numpy as np

from ml4ml import dims

__all__ = ["page_models", "rating_counts", "set_text", "progress_text"]


def page_models(path, transform: str, suite=None) -> tuple[str, list[str]]:
    """(suite, mids): the models the labelling page shows for ``transform``: those with
    fresh matrices and measures in ``suite`` (default: the first suite measured for it),
    in the measures' row order. StoreError naming stale models (as the page)."""
    from ml4ml import store
    from ml4ml.report.stage import _pick_group

    suite, _ = _pick_group(path, transform, suite)
    return suite, list(store.fresh_mids(path, suite, transform,
                                         kinds=("matrices", "measures")))


def set_text(transform: str, suite: str, n: int) -> str:
    """What the counted set is, in words: "the 150 models measured for rotation (suite
    digits)"."""
    return f"the {n} model(s) measured for {transform} (suite {suite})"


def rating_counts(ds, mids) -> dict:
    """{rater: {"invariant", "variant", "labelled", "skipped", "unrated", "total",
    "outside"}} of the labels group ``ds`` (``store.labels.read_labels``) over ``mids``."""
    mids = list(mids)
    if ds is None:
        return {}
    all_mids = np.asarray(ds[dims.MID].values).astype(str)
    inside = np.isin(all_mids, np.asarray(mids, dtype=str))
    rating = np.asarray(ds["rating"].values, dtype=np.int64).reshape(-1, len(all_mids))
    timed = ~np.isnat(np.asarray(ds["rated_at"].values)).reshape(rating.shape)
    out = {}
    for k, rater in enumerate(np.asarray(ds["rater"].values).astype(str)):
        row, when = rating[k], timed[k]
        counts = {"invariant": int(((row == 1) & inside).sum()),
                  "variant": int(((row == 0) & inside).sum()),
                  "skipped": int(((row == -1) & when & inside).sum())}
        counts["labelled"] = counts["invariant"] + counts["variant"]
        counts["total"] = len(mids)  # a model the group has no row for yet is unrated
        counts["unrated"] = counts["total"] - counts["labelled"] - counts["skipped"]
        counts["outside"] = int((((row >= 0) | when) & ~inside).sum())
        out[str(rater)] = counts
    return out


def progress_text(labelled: int, skipped: int, total: int) -> str:
    """The page's progress line: "3 of 6 labelled, 1 skipped"."""
    return f"{labelled} of {total} labelled" + (f", {skipped} skipped" if skipped else "")
