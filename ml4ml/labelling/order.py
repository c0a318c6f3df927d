"""In what order the labelling page asks a rater for labels: one strategy per ``--order``.

A strategy is built once per page, ``ORDERS[name](state, seed=seed)`` (``state`` the
page's ``LabellingState``: the store, its models and their figures), and answers two
questions:

- ``sequence(rater)``: every model once, in the rater's order: what the arrow keys step
  through and the "n of N in your order" position;
- ``next_mid(rater, ratings, after=None)``: the model to ask next, given the rater's
  ratings so far (``{mid: (label, time)}``, label -1 for a skip), or None when every model
  is labelled. ``after`` is the model just answered or skipped.

``SeededOrder`` asks the models in a random order of the rater's own (seeded by ``seed``
and the rater's name): the unrated ones first, then the skipped ones again. Another order
(e.g. active learning) subclasses it and replaces ``next_mid``.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["ORDERS", "SeededOrder"]


class SeededOrder:
    """Each rater's own random order, seeded by ``seed`` and the rater's name."""

    name = "seeded"

    def __init__(self, state, *, seed: int = 0):
        self.state = state
        self.mids = list(state.mids)
        self.seed = int(seed)
        self._sequences: dict = {}

    def sequence(self, rater: str) -> list[str]:
        """The rater's own order of every model: a permutation seeded by seed and name."""
        if rater not in self._sequences:
            key = hashlib.sha256(f"{self.seed}:{rater}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(key[:8], "little"))
            self._sequences[rater] = [self.mids[k] for k in rng.permutation(len(self.mids))]
        return self._sequences[rater]

    def next_mid(self, rater: str, ratings: dict, after: str | None = None) -> str | None:
        """The first model after ``after`` (wrapping) the rater has not rated; else the
        first one they skipped; None when every model has a label."""
        order = self.sequence(rater)
        start = order.index(after) + 1 if after is not None else 0
        candidates = order[start:] + order[:start]
        fresh = next((m for m in candidates if m not in ratings), None)
        if fresh is not None:
            return fresh
        return next((m for m in candidates if ratings[m][0] == -1), None)


ORDERS = {SeededOrder.name: SeededOrder}
