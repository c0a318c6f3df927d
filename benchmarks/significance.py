"""Level and power of the verdict's test (select, then test), by simulation (run by hand).

    python benchmarks/significance.py                  # 2,000 databases per row
    python benchmarks/significance.py --databases 500  # quicker

Every database: 100 regular models and 20, 50 or 100 hold-out models, 10 repeats; the
methods are threshold rules on one feature each (tests/simulate_protocol.py); the
assessor and the baseline of highest 5-fold CV accuracy on the regular models are
compared on the hold-out models by the sign-flip test (``sign_flip_p_values``, exact).

Nulls (every method equally accurate; tests/test_significance.py checks each at 1,000
databases): exchangeable methods (3 assessors, 2 baselines), duplicated baselines, three
highly correlated assessors (noisy copies of one feature) against one independent
baseline, a noisy assessor (fresh randomness in every fit) against a deterministic
baseline, unbalanced labels (20% positive); 30% positive otherwise. Columns: the rejection
rate at alpha = 0.05 with its standard error, the side found, the earlier test (best
assessor minus best baseline, both chosen on the hold-out models, a within-model
permutation of every method) on the same databases for contrast, and the rate when the
rules' thresholds are fitted (each fit's accuracy then differs a little from the
method's: the test's null is that the fitted pair is equally accurate on new models).

Power: three assessors 0.05 or 0.10 more accurate than two baselines (balanced labels);
the rate of p < 0.05, and how often the 95% interval (the test's inversion) covers the
true difference of the pair chosen.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from simulate_protocol import (alternative, nulls, previous_test_p,  # noqa: E402
                               simulate, true_accuracy)

from ml4ml.assess.significance import sign_flip_p_values, sign_flip_test  # noqa: E402

ALPHA = 0.05
SIZES = (20, 50, 100)


def _rate(rejected):
    rate = float(np.mean(rejected))
    return rate, float(np.sqrt(rate * (1 - rate) / len(rejected)))


def _null_row(name, design, n_holdout, n_databases, seed, previous):
    sim = simulate(n_databases, design, n_holdout=n_holdout, seed=seed)
    statistic, p, _, _ = sign_flip_p_values(sim["differences"])
    rate, se = _rate(p < ALPHA)
    wins = (float(np.mean((p < ALPHA) & (statistic > 0))),
            float(np.mean((p < ALPHA) & (statistic < 0))))
    old = (float(np.mean(previous_test_p(sim["correct"], design.is_assessor) < ALPHA))
           if previous else float("nan"))
    fitted = simulate(n_databases, design, n_holdout=n_holdout, seed=seed, fitted=True)
    _, p_fitted, _, _ = sign_flip_p_values(fitted["differences"])
    return (f"| {name} | {n_holdout} | {rate:.3f} ({se:.3f}) | {wins[0]:.3f} / {wins[1]:.3f} "
            f"| {old:.3f} | {np.mean(p_fitted < ALPHA):.3f} |")


def _power_row(delta, n_holdout, n_databases, seed):
    design = alternative(delta)
    sim = simulate(n_databases, design, n_holdout=n_holdout, seed=seed)
    _, p, _, _ = sign_flip_p_values(sim["differences"])
    rate, se = _rate(p < ALPHA)
    accuracy = true_accuracy(design, sim["thresholds"])
    rows = np.arange(n_databases)
    truth = accuracy[rows, sim["chosen"][:, 0]] - accuracy[rows, sim["chosen"][:, 1]]
    covered = []
    for d, true in zip(sim["differences"], truth):
        result = sign_flip_test(d)
        covered.append(result["ci_low"] <= true <= result["ci_high"])
    return rate, se, float(np.mean(covered)), float(np.mean(truth))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", type=int, default=2000)
    parser.add_argument("--no-previous", action="store_true",
                        help="skip the earlier test's column (the slowest part)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    n = args.databases
    print(f"{n} databases per row, 100 regular models, 10 repeats, alpha = {ALPHA}\n")
    print("| null | hold-out models | rejection rate (s.e.) | assessor / baseline found | "
          "earlier test | thresholds fitted |")
    print("|---|---|---|---|---|---|")
    for k, (name, design) in enumerate(nulls().items()):
        for size in SIZES:
            print(_null_row(name, design, size, n, 1000 + 10 * k + size, not args.no_previous),
                  flush=True)
    print("\n| true difference | hold-out models | power (s.e.) | 95% CI covers the truth |")
    print("|---|---|---|---|")
    for delta in (0.05, 0.10):
        for size in SIZES:
            rate, se, coverage, truth = _power_row(delta, size, n, 2000 + size)
            print(f"| {delta:.2f} (chosen pair: {truth:+.3f}) | {size} | {rate:.3f} ({se:.3f}) "
                  f"| {coverage:.3f} |", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
