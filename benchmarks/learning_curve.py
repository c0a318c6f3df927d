"""How honest the labelling page's learning curve is under the active order (by hand).

    python benchmarks/learning_curve.py                 # 48 databases, seeds 1000..1047
    python benchmarks/learning_curve.py --seeds 16 --first 0

The simulation of tests/simulate_labelling.py (the review's setup: 200 models, 60 labels):
each database is labelled in active order (20% random picks) and in random order. For each,
the truth (the assessor's accuracy on the models not labelled), the curve's last point
(the random picks, corrected for the assessor's picks), the random picks' plain
out-of-fold accuracy (uncorrected) and every label's (the curve before). Reported: the mean
of each over the databases, the curve's bias (mean of curve - truth, +- its standard
error), and per group of 8 databases (the test's size) active - random for each.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from simulate_labelling import COLUMNS, ORDERS, one_database  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=48, help="databases (a multiple of 8)")
    parser.add_argument("--first", type=int, default=1000, help="first database's seed")
    args = parser.parse_args(argv)
    start = time.time()
    seeds = range(args.first, args.first + args.seeds)
    table = {order: np.array([[one_database(s, order)[c] for c in COLUMNS] for s in seeds])
             for order in ORDERS}
    print(f"{args.seeds} databases (seeds {seeds[0]}..{seeds[-1]}), 200 models, 60 labels; "
          f"{time.time() - start:.0f} s")
    print(f"{'order':8s} " + " ".join(f"{c:>18s}" for c in COLUMNS) + "  curve - truth")
    for order, rows in table.items():
        bias = rows[:, 1] - rows[:, 0]
        print(f"{order:8s} " + " ".join(f"{v:18.3f}" for v in np.nanmean(rows, axis=0))
              + f"  {bias.mean():+.3f} +- {bias.std(ddof=1) / np.sqrt(bias.size):.3f}")
    groups = args.seeds // 8
    for k, name in enumerate(COLUMNS):
        a = table["active"][: groups * 8, k].reshape(groups, 8).mean(axis=1)
        b = table["random"][: groups * 8, k].reshape(groups, 8).mean(axis=1)
        print(f"active - random, per group of 8, {name}: "
              + " ".join(f"{v:+.3f}" for v in a - b))


if __name__ == "__main__":
    main()
