"""Active against random labelling order, with the recipe labels as a simulated rater (by hand).

    python benchmarks/labelling.py                                  # stores/demo-digits.zarr
    python benchmarks/labelling.py /tmp/demo-digits-seed0.zarr --seeds 10

The store is only read. The simulated rater answers with the recipe labels (the store's
source "recipe", or the recipe rule on its models table). The pool it labels is the
regular models; the hold-out models (``t*``) are the fixed evaluation set and are never
labelled in the simulation. For every seed, the pool is labelled one model at a time in
active order (``ActiveOrder``: 10 random, then 20% random and 80% least sure) and in
random order (a seeded permutation); after each label the assessor (logistic regression, C = 0.03,
as in ``ml4ml.labelling.active``) is fit on the labels so far and its accuracy on the
evaluation set measured (undefined, so not yet reached, while the labels have one class).
Target: the accuracy the assessor reaches with every pool label, minus 0.02. Reported:
labels needed to reach it for good (from that count on, never below it again) and to reach
it first, median and interquartile range over the seeds, and active / random.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _data(path, transform):
    """(features of the pool, its labels, features of the evaluation set, its labels)."""
    from ml4ml import dims, store
    from ml4ml.assess.labels import recipe_labels
    from ml4ml.assess.stage import _tested_grid, stored_labels
    from ml4ml.labelling.active import labelling_features

    features = labelling_features(path, transform)
    try:
        _, labels = stored_labels(path, transform, "recipe")
    except Exception:  # noqa: BLE001 - no stored recipe source: apply the rule
        labels = recipe_labels(store.read_models(path), transform, _tested_grid(path, transform))
    models = store.read_models(path)
    holdout = dict(zip(np.asarray(models[dims.MID].values).astype(str),
                       np.asarray(models["holdout"].values, dtype=bool)))
    mids = features.index.to_numpy(str)
    y = np.array([labels.get(m, -1) for m in mids])
    out = np.array([holdout.get(m, m.startswith("t")) for m in mids])
    pool, evaluation = (y >= 0) & ~out, (y >= 0) & out
    return features[pool], y[pool], features.to_numpy(np.float64)[evaluation], y[evaluation]


def _accuracy(X, y, X_eval, y_eval, seed):
    from ml4ml.labelling.active import _fit

    if len(np.unique(y)) < 2:
        return np.nan
    return float(np.mean(_fit(None, seed, X, y).predict(X_eval) == y_eval))


def _simulate(pool, y, X_eval, y_eval, seed, active, **order):
    """(n_pool,) accuracy on the evaluation set after 1, 2, ..., n_pool labels."""
    from ml4ml.labelling.active import ActiveOrder

    X, n = pool.to_numpy(np.float64), len(y)
    row = {m: k for k, m in enumerate(pool.index)}
    if active:
        chooser, labels, picked = ActiveOrder(pool, seed=seed, rater="benchmark",
                                              **order), {}, []
        for _ in range(n):
            mid, _ = chooser.next(labels)
            labels[mid] = int(y[row[mid]])
            picked.append(row[mid])
    else:
        picked = np.random.default_rng(seed).permutation(n).tolist()
    picked = np.asarray(picked)
    return np.array([_accuracy(X[picked[:k]], y[picked[:k]], X_eval, y_eval, seed)
                     for k in range(1, n + 1)])


def needed(curves, target):
    """(for good, first): per curve (n_seeds, n_pool), the labels after which the accuracy
    stays >= target, and the labels at which it first is; n_pool + 1 where never."""
    ok = np.nan_to_num(curves, nan=-1.0) >= target
    n_pool = curves.shape[1]
    first = np.where(ok.any(axis=1), ok.argmax(axis=1) + 1, n_pool + 1)
    tail = np.flip(np.logical_and.accumulate(np.flip(ok, axis=1), axis=1), axis=1)
    good = np.where(tail.any(axis=1), n_pool - tail.sum(axis=1) + 1, n_pool + 1)
    return good, first


def _describe(values) -> str:
    """"median [q1, q3]" of ``values``."""
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return f"{median:.0f} [{q1:.0f}, {q3:.0f}]"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", nargs="?", default="stores/demo-digits.zarr")
    parser.add_argument("--transform", default="rotation")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--n-start", type=int, default=10)
    parser.add_argument("--random-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    pool, y, X_eval, y_eval = _data(args.store, args.transform)
    full = _accuracy(pool.to_numpy(np.float64), y, X_eval, y_eval, 0)
    target = full - args.tolerance
    print(f"{args.store} ({args.transform}): pool {len(y)} regular models "
          f"({int(y.sum())} invariant), evaluation {len(y_eval)} hold-out models "
          f"({int(y_eval.sum())} invariant), never labelled; {pool.shape[1]} features "
          f"({pool.attrs.get('feature_set')}/{pool.attrs.get('split')})")
    print(f"assessor: logistic regression (C = 0.03); accuracy with all {len(y)} pool labels: "
          f"{full:.3f}; target: {target:.3f} (within {args.tolerance})")
    order = {"n_start": args.n_start, "random_fraction": args.random_fraction}
    curves = {name: np.stack([_simulate(pool, y, X_eval, y_eval, seed, active, **order)
                              for seed in range(args.seeds)])
              for name, active in (("active", True), ("random", False))}
    results = {name: needed(c, target) for name, c in curves.items()}
    print(f"labels needed over {args.seeds} seeds (median [IQR]; {len(y) + 1} = never):")
    print("| order | to stay within | to first reach | accuracy at 20 / 40 / 60 labels (mean) |")
    print("|---|---|---|---|")
    for name, (good, first) in results.items():
        at = "/".join(f"{np.nanmean(curves[name][:, k - 1]):.3f}" for k in (20, 40, 60)
                      if k <= len(y))
        print(f"| {name} | {_describe(good)} | {_describe(first)} | {at} |")
    for label, k in (("to stay within", 0), ("to first reach", 1)):
        a, r = results["active"][k], results["random"][k]
        print(f"active / random, {label}: median {np.median(a) / np.median(r):.2f} "
              f"(per seed: median {np.median(a / r):.2f}); goal <= 0.60")
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
