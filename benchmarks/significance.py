"""Level and power of the assessor-vs-baseline tests, by simulation (run by hand).

    python benchmarks/significance.py                  # 1,000 databases per row
    python benchmarks/significance.py --databases 300  # quicker

Every database: 100 regular + 50 hold-out models, 10 repeats of the real folds
(``ProtocolSplit``), one-feature threshold rules fitted in numpy (tests/simulate_protocol.py),
2 assessors and 2 baselines. Scenarios: "independent" (each method reads its own feature,
errors independent given the label) and "shared" (all read one latent signal with their
own noise). Rows: the true accuracy difference of the best thresholds (0: the null).
Columns: the rejection rate at alpha = 0.05 of the new test (``significance_test``: the
permutation test over the hold-out models, two-sided and one-sided), of the same
permutation over all 150 models (ignores the shared fits), and of the old Nadeau-Bengio
test (``comparison.compare``), and how often the new 95% interval excludes 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from simulate_protocol import (nadeau_bengio_p, noise_for, separation_for,  # noqa: E402
                               simulate)

from ml4ml.assess.significance import (model_permutation_test,  # noqa: E402
                                       permutation_p_values)


def _row(scenario, delta, n_databases, n_draws, seed):
    shared = scenario == "shared"
    level = noise_for if shared else separation_for
    methods = np.r_[np.full(2, level(0.7 + delta)), np.full(2, level(0.7))]
    prediction, label, holdout, test_fold, is_assessor = simulate(
        n_databases, methods, n_assessors=2, seed=seed, shared=shared)
    correct = (prediction == label[:, None, :, None]).mean(axis=1)
    _, p, p_greater, _ = permutation_p_values(correct[:, holdout], is_assessor,
                                              n_draws=n_draws)
    _, p_all, _, _ = permutation_p_values(correct, is_assessor, n_draws=n_draws)
    p_old = nadeau_bengio_p(prediction, label, test_fold, is_assessor)
    excludes = [not (r["ci_low"] <= 0 <= r["ci_high"]) for r in (
        model_permutation_test(c, is_assessor, n_draws=n_draws)
        for c in correct[:min(n_databases, 300), holdout])]
    return [(p < 0.05).mean(), (p_greater < 0.05).mean(), (p_all < 0.05).mean(),
            (p_old < 0.05).mean(), np.mean(excludes)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=2000)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    print(f"{args.databases} databases per row, {args.draws} permutations, alpha = 0.05")
    print("| scenario | difference | new (2-sided) | new (1-sided) | all models | "
          "Nadeau-Bengio (old) | new CI excludes 0* |")
    print("|---|---|---|---|---|---|---|")
    for s, scenario in enumerate(("independent", "shared")):
        for d, delta in enumerate((0.0, 0.05, 0.10)):
            rates = _row(scenario, delta, args.databases, args.draws, seed=100 + 10 * s + d)
            print(f"| {scenario} | {delta:.2f} | " + " | ".join(f"{r:.3f}" for r in rates)
                  + " |")
    print(f"* on the first {min(args.databases, 300)} databases; "
          f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
