"""Simulated raters labelling simulated model databases in active and in random order.

Used by tests/test_active_labelling.py and benchmarks/learning_curve.py. A database has
``n`` models whose label (invariant: 1) is a noisy threshold of one latent score,
``z + 0.3 N(0, 1) > 0.5``, and whose ``d`` features are that score through random
weights plus N(0, 1) noise (drawn at once, vectorised). A rater labels right whatever
``ActiveOrder`` picks (random order: ``random_fraction=1``), and the page's rule
(``labelling.order.reason_kind``, ``store.labels.RANDOM_PICKS``) says which picks were
random. For each database and order, after ``n_labels`` labels: the assessor's accuracy on
the models not labelled (the truth, fit on every label as the page's assessor), the
curve's last point (``learning_curve`` with the random picks scored), the random picks'
plain out-of-fold accuracy (uncorrected) and every label's (what the curve was before).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml4ml.assess.estimators import make_assessor
from ml4ml.labelling.active import PENALTY_C, ActiveOrder, learning_curve
from ml4ml.labelling.order import reason_kind
from ml4ml.store.labels import RANDOM_PICKS

ORDERS = {"active": 0.2, "random": 1.0}  # random_fraction of each order
COLUMNS = ("truth", "curve", "random_picks_only", "every_label")


def simulated_store(seed, n=200, d=20):
    """(features DataFrame (n, d) indexed by mid, labels (n,) int64)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = (z + 0.3 * rng.normal(size=n) > 0.5).astype(np.int64)
    X = np.outer(z, rng.normal(size=d)) + rng.normal(size=(n, d))
    return pd.DataFrame(X, index=[f"m{k:03d}" for k in range(n)]), y


def label_in_order(features, y, seed, random_fraction, n_labels=60):
    """([(mid, label)] in the order labelled, (n_labels,) bool: which were random picks)."""
    order = ActiveOrder(features, seed=seed, rater="sim", random_fraction=random_fraction)
    truth = dict(zip(features.index, y.tolist()))
    labels, kinds = {}, []
    for _ in range(n_labels):
        mid, why = order.next(labels)
        labels[mid] = truth[mid]
        kinds.append(reason_kind(why))
    return list(labels.items()), np.isin(kinds, RANDOM_PICKS)


def one_database(seed, order, n=200, n_labels=60, d=20) -> dict:
    """{column: value} of ``COLUMNS`` for database ``seed`` labelled in ``order``, and
    ``n_scored``: the random picks."""
    features, y = simulated_store(seed, n, d)
    ordered, scored = label_in_order(features, y, seed, ORDERS[order], n_labels)
    X = features.to_numpy()
    labelled = features.index.isin([m for m, _ in ordered])
    fit = make_assessor("logistic", 0).set_params(model__C=PENALTY_C).fit(
        X[labelled], y[labelled])
    last = {"curve": scored, "every_label": None}
    out = {name: float(learning_curve(features, ordered, scored=mask,
                                      min_labels=n_labels)["accuracy"].iloc[-1])
           for name, mask in last.items()}
    out["random_picks_only"] = uncorrected(features, ordered, scored)
    out["truth"] = float(np.mean(fit.predict(X[~labelled]) == y[~labelled]))
    out["n_scored"] = int(scored.sum())
    return out


def uncorrected(features, ordered, scored, folds=5, seed=0) -> float:
    """The random picks' plain out-of-fold accuracy: the share of them the assessor fit
    on the other folds (stratified k-fold over every label) predicts right."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    X = features.loc[[m for m, _ in ordered]].to_numpy()
    y = np.array([v for _, v in ordered])
    k = min(folds, int(np.bincount(y, minlength=2).min()))
    predicted = cross_val_predict(make_assessor("logistic", seed).set_params(
        model__C=PENALTY_C), X, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed))
    return float(np.mean(predicted[scored] == y[scored]))
