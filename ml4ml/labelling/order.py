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
and the rater's name): the unrated ones first, then the skipped ones again.
``ActiveLabellingOrder`` (``--order active``) keeps that sequence for the arrow keys but
asks next the model that the assessor, fit on this rater's labels so far, is least sure
of, after a seeded random start and with a stated random fraction
(``labelling.active.ActiveOrder``).
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["ORDERS", "SeededOrder", "ActiveLabellingOrder"]


class SeededOrder:
    """Each rater's own random order, seeded by ``seed`` and the rater's name."""

    name = "seeded"

    def __init__(self, state, *, seed: int = 0):
        self.state = state
        self.mids = list(state.mids)
        self.seed = int(seed)
        self._sequences: dict = {}

    def describe(self) -> str:
        """One line for the page: how the models are ordered."""
        return "a random order of your own"

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


class ActiveLabellingOrder(SeededOrder):
    """Active labelling: a seeded random start of ``n_start`` models, then, with
    probability ``random_fraction``, a random unrated model, else the one whose label the
    assessor (fit on the rater's labels so far, on the store's feature set) is least sure
    of. Models without features (none, on a measured store) come after, in the seeded
    order; skipped models come last."""

    name = "active"

    def __init__(self, state, *, seed: int = 0, n_start: int | None = None,
                 random_fraction: float | None = None):
        from ml4ml.labelling.active import N_START, RANDOM_FRACTION, labelling_features

        super().__init__(state, seed=seed)
        self.n_start = N_START if n_start is None else n_start
        self.random_fraction = RANDOM_FRACTION if random_fraction is None else random_fraction
        features = labelling_features(state.path, state.transform, suite=state.suite)
        self.features = features[features.index.isin(self.mids)]
        self._orders: dict = {}
        self.reasons: dict = {}  # rater -> why the last model was offered (the server log)

    def describe(self) -> str:
        return (f"active: {self.n_start} models in a random order first, then mostly the "
                f"model the assessor is least sure of, a random one with probability "
                f"{self.random_fraction:g}")

    def _active(self, rater: str):
        from ml4ml.labelling.active import ActiveOrder

        if rater not in self._orders:
            self._orders[rater] = ActiveOrder(self.features, n_start=self.n_start,
                                              random_fraction=self.random_fraction,
                                              seed=self.seed, rater=rater)
        return self._orders[rater]

    def next_mid(self, rater: str, ratings: dict, after: str | None = None) -> str | None:
        labels = {m: v for m, (v, _) in ratings.items() if v in (0, 1)}
        skipped = [m for m, (v, _) in ratings.items() if v not in (0, 1)]
        fresh = [m for m in self.mids if m not in ratings]
        if any(m in self.features.index for m in fresh):
            # an unrated model with features is left: the active pick is one of them
            mid, why = self._active(rater).next(labels, skipped=skipped)
            self.reasons[rater] = why
            return mid
        return super().next_mid(rater, ratings, after=after)


ORDERS = {order.name: order for order in (SeededOrder, ActiveLabellingOrder)}
