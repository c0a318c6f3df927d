"""In what order the labelling page asks a rater for labels: one strategy per ``--order``.

A strategy is built once per page, ``ORDERS[name](state, seed=seed, overlap=n)``
(``state`` the page's ``LabellingState``: the store, its models and their figures), and
answers:

- ``sequence(rater)``: every model once, in the rater's order: what the arrow keys step
  through and the "n of N in your order" position;
- ``pick(rater, ratings, after=None)``: ``(mid, kind, why)`` of the model to ask next,
  given the rater's ratings so far (``{mid: (label, time)}``, label -1 for a skip), or
  ``(None, "", why)`` when every model is labelled. ``after`` is the model just answered
  or skipped; ``kind`` says how it was picked (a name of ``store.labels.PICKS``: recorded
  with the rating, it tells the random picks the learning curve scores from the others);
- ``next_mid(rater, ratings, after=None)``: the mid of ``pick``.

**The overlap** (``overlap=N``, ``label-ui --overlap N``): the same N models are asked
first of every rater, each rater in their own order, so that inter-rater agreement can
be measured after N labels. They are the N models whose ``sha256(seed:mid)`` is smallest:
a seeded random sample of the models, the same for every rater, independent of any
label, that changes by at most one model when a model is added. While one of them is
unrated (not labelled, not skipped) it is asked next (kind ``overlap``); then the rest
come in the order's usual way.

``SeededOrder`` asks the models in a random order of the rater's own (seeded by ``seed``
and the rater's name): the first unrated one after ``after`` (wrapping; kind ``seeded``),
then the skipped ones again. ``ActiveLabellingOrder`` (``--order active``) keeps that
sequence for the arrow keys but asks next the model that the assessor, fit on this
rater's labels so far, is least sure of (kind ``least_sure``), after a seeded random start
(``start``; the overlap counts towards it) and with a stated random fraction (``random``)
(``labelling.active.ActiveOrder``).
"""

from __future__ import annotations

import hashlib

import numpy as np

from ml4ml.errors import InputError

__all__ = ["ORDERS", "SeededOrder", "ActiveLabellingOrder", "overlap_models", "reason_kind"]


def overlap_models(mids, n: int, seed: int = 0) -> list[str]:
    """The ``n`` models every rater is asked first: those whose sha256 of ``seed:mid`` is
    smallest (a seeded random sample, the same for every rater), in the order of ``mids``."""
    if n <= 0:
        return []
    ranks = sorted(mids, key=lambda m: hashlib.sha256(f"{seed}:{m}".encode()).digest())
    chosen = set(ranks[:n])
    return [m for m in mids if m in chosen]


def reason_kind(why: str) -> str:
    """The pick kind (a name of ``store.labels.PICKS``) of an ``ActiveOrder.next`` reason:
    "start", "random" or "least_sure"."""
    why = why.removeprefix("skipped before; ")
    if why.startswith("random start"):
        return "start"
    if why.startswith("random"):
        return "random"
    return "least_sure"


class SeededOrder:
    """Each rater's own random order, seeded by ``seed`` and the rater's name; the
    ``overlap`` models first (each rater in their own order)."""

    name = "seeded"

    def __init__(self, state, *, seed: int = 0, overlap: int = 0):
        self.state = state
        self.mids = list(state.mids)
        self.seed = int(seed)
        if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) \
                or not 0 <= overlap <= len(self.mids):
            raise InputError(f"--overlap must be a whole number from 0 to {len(self.mids)} "
                             f"(the models the page shows); got {overlap!r}",
                             field="--overlap")
        self.overlap = overlap_models(self.mids, int(overlap), self.seed)
        self._shared = set(self.overlap)
        self._sequences: dict = {}

    def describe(self) -> str:
        """One line for the page: how the models are ordered."""
        return self._overlap_text("a random order of your own")

    def _overlap_text(self, rest: str) -> str:
        if not self.overlap:
            return rest
        return (f"first the {len(self.overlap)} models every rater is shown (in your own "
                f"order), so that the raters' agreement can be measured; then {rest}")

    def sequence(self, rater: str) -> list[str]:
        """The rater's own order of every model: a permutation seeded by seed and name,
        the overlap models moved to the front (in that permutation's order)."""
        if rater not in self._sequences:
            key = hashlib.sha256(f"{self.seed}:{rater}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(key[:8], "little"))
            order = [self.mids[k] for k in rng.permutation(len(self.mids))]
            self._sequences[rater] = ([m for m in order if m in self._shared]
                                      + [m for m in order if m not in self._shared])
        return self._sequences[rater]

    def _candidates(self, rater: str, after: str | None) -> list[str]:
        """The rater's sequence from the model after ``after`` on, wrapping."""
        order = self.sequence(rater)
        start = order.index(after) + 1 if after is not None else 0
        return order[start:] + order[:start]

    def _overlap_pick(self, rater: str, ratings: dict, after: str | None):
        candidates = self._candidates(rater, after)
        mid = next((m for m in candidates if m in self._shared and m not in ratings), None)
        return None if mid is None else (mid, "overlap", "the overlap every rater is shown")

    def pick(self, rater: str, ratings: dict, after: str | None = None):
        """(mid, kind, why): an unrated overlap model; else the first unrated model after
        ``after`` (wrapping); else the first one skipped; (None, "", why) when every model
        has a label."""
        shared = self._overlap_pick(rater, ratings, after)
        if shared is not None:
            return shared
        candidates = self._candidates(rater, after)
        fresh = next((m for m in candidates if m not in ratings), None)
        if fresh is not None:
            return fresh, "seeded", "your own random order"
        again = next((m for m in candidates if ratings[m][0] == -1), None)
        if again is not None:
            return again, "seeded", "skipped before"
        return None, "", "every model is labelled"

    def next_mid(self, rater: str, ratings: dict, after: str | None = None) -> str | None:
        """The mid of ``pick``."""
        return self.pick(rater, ratings, after=after)[0]


class ActiveLabellingOrder(SeededOrder):
    """Active labelling: a seeded random start of ``n_start`` models, then, with
    probability ``random_fraction``, a random unrated model, else the one whose label the
    assessor (fit on the rater's labels so far, on the store's feature set) is least sure
    of. The overlap models come first and count towards the start. Models without
    features (none, on a measured store) come after, in the seeded order; skipped models
    come last."""

    name = "active"

    def __init__(self, state, *, seed: int = 0, overlap: int = 0, n_start: int | None = None,
                 random_fraction: float | None = None):
        from ml4ml.labelling.active import N_START, RANDOM_FRACTION, labelling_features

        super().__init__(state, seed=seed, overlap=overlap)
        self.n_start = N_START if n_start is None else n_start
        self.random_fraction = RANDOM_FRACTION if random_fraction is None else random_fraction
        features = labelling_features(state.path, state.transform, suite=state.suite)
        self.features = features[features.index.isin(self.mids)]
        self._orders: dict = {}
        self.reasons: dict = {}  # rater -> why the last model was offered (the server log)

    def describe(self) -> str:
        return self._overlap_text(
            f"active: {self.n_start} models in a random order first, then mostly the "
            f"model the assessor is least sure of, a random one with probability "
            f"{self.random_fraction:g}")

    def _active(self, rater: str):
        from ml4ml.labelling.active import ActiveOrder

        if rater not in self._orders:
            self._orders[rater] = ActiveOrder(self.features, n_start=self.n_start,
                                              random_fraction=self.random_fraction,
                                              seed=self.seed, rater=rater)
        return self._orders[rater]

    def pick(self, rater: str, ratings: dict, after: str | None = None):
        shared = self._overlap_pick(rater, ratings, after)
        if shared is not None:
            self.reasons[rater] = shared[2]
            return shared
        labels = {m: v for m, (v, _) in ratings.items() if v in (0, 1)}
        skipped = [m for m, (v, _) in ratings.items() if v not in (0, 1)]
        fresh = [m for m in self.mids if m not in ratings]
        if any(m in self.features.index for m in fresh):
            # an unrated model with features is left: the active pick is one of them
            mid, why = self._active(rater).next(labels, skipped=skipped)
            self.reasons[rater] = why
            return mid, reason_kind(why), why
        return super().pick(rater, ratings, after=after)


ORDERS = {order.name: order for order in (SeededOrder, ActiveLabellingOrder)}
