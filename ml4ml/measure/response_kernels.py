"""The fused numpy kernel of the response measures: every measure of a block in one read.

A block holds responses ``x`` (B, P, S, U) (models x levels flattened, grid, samples,
units), upcast once to float64. The intermediates the measures share (the mean over
samples at each grid value, the orbit centroid, the deviations from it) are computed at
most once per block (``ResponseBlock``'s cached properties), so asking for every measure
costs a few passes over the block, not one per measure. Definitions: docs/measures.md,
"Response measures". tmeasures 1.2.11's conventions are reproduced where named.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import scipy.special
import scipy.stats

__all__ = [
    "RESPONSE_MEASURES",
    "TMEASURES_MEASURES",
    "ANOVA_ALPHA",
    "ANOVA_BONFERRONI",
    "GOODFELLOW_ALPHA",
    "GOODFELLOW_MIN_STD",
    "KL_EPSILON",
    "ResponseBlock",
    "anova_critical_value",
    "goodfellow_z",
    "safe_divide",
    "finite_mean",
    "builtin_measures",
]

RESPONSE_MEASURES = ("tv", "sv", "nv", "anova", "goodfellow", "geed_kl", "geed_l2",
                     "geed_cos", "consistency", "lee_fd")
# measured per unit as tmeasures does, then averaged over the finite units
TMEASURES_MEASURES = ("tv", "sv", "nv", "anova", "goodfellow")
# tmeasures.np.ANOVAInvariance() defaults
ANOVA_ALPHA = 0.99
ANOVA_BONFERRONI = True
# tmeasures.pytorch.GoodfellowInvariance() defaults: NormalPValueThreshold(sign=1, alpha=0.99)
GOODFELLOW_ALPHA = 0.99
GOODFELLOW_MIN_STD = 1e-16
# floor of both arguments of the log in geed_kl (float underflow only; see docs)
KL_EPSILON = 1e-12


def safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """tmeasures' ``safe_divide`` / ``divide_activations``: ``num / den`` where ``den > 0``,
    1 where both are <= 0 (0/0), +inf where only ``den`` is (x/0); else ``num`` unchanged
    (a NaN denominator leaves the numerator, as tmeasures' masks do)."""
    out = np.array(numerator, dtype=np.float64, copy=True)
    positive = denominator > 0
    np.divide(numerator, denominator, out=out, where=positive)
    at_most_zero = denominator <= 0
    out[at_most_zero & (numerator <= 0)] = 1.0
    out[at_most_zero & (numerator > 0)] = np.inf
    return out


def finite_mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over ``axis`` of the finite entries (tmeasures' ``MeasureResult.per_layer_average``
    drops inf and NaN units); NaN where none is finite."""
    finite = np.isfinite(values)
    count = finite.sum(axis=axis)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def anova_critical_value(n_params: int, n_samples: int, n_units: int,
                         alpha: float = ANOVA_ALPHA, bonferroni: bool = ANOVA_BONFERRONI) -> float:
    """tmeasures' ANOVA critical value ``F.ppf(alpha / U, P - 1, (S - 1) P)`` (``alpha`` alone
    without Bonferroni): the quantile it passes is ``alpha / U``, reproduced as is."""
    quantile = alpha / n_units if bonferroni else alpha
    if n_params < 2 or n_samples < 2:
        return math.nan
    return float(scipy.stats.f.ppf(quantile, dfn=n_params - 1, dfd=(n_samples - 1) * n_params))


def goodfellow_z(alpha: float = GOODFELLOW_ALPHA) -> float:
    """The normal quantile of tmeasures' ``NormalPValueThreshold``: ``sqrt(2) erfinv(2a - 1)``
    with ``a`` the float32 value of ``alpha`` (tmeasures builds ``torch.tensor([alpha])``)."""
    return math.sqrt(2.0) * float(scipy.special.erfinv(2.0 * float(np.float32(alpha)) - 1.0))


def _std_from_sum_of_squares(sum_sq: np.ndarray, n: int) -> np.ndarray:
    """Sample std (ddof 1) from the sum of squared deviations of ``n`` values; 0 for n <= 1
    (tmeasures' ``RunningMeanAndVarianceWelford.var``)."""
    if n <= 1:
        return np.zeros_like(sum_sq)
    return np.sqrt(sum_sq / (n - 1))


class ResponseBlock:
    """One block of responses and the intermediates the measures share, each computed once.

    x : (B, P, S, U) float64; predictions : (B, P, S) or None; identity_index : int;
    spacing : ``p[c+1] - p[c-1]`` (the central difference's denominator) or None;
    anova_critical, z : ``anova_critical_value`` and ``goodfellow_z`` for this block's sizes.
    """

    def __init__(self, x, predictions, *, identity_index, spacing, anova_critical, z):
        self.x = x
        self.predictions = predictions
        self.identity_index = identity_index
        self.spacing = spacing
        self.anova_critical = anova_critical
        self.z = z
        self.n_params, self.n_samples = x.shape[1], x.shape[2]

    # --- shared intermediates -------------------------------------------------------
    @cached_property
    def sample_mean(self):
        """Mean over samples at each grid value (B, P, U)."""
        return self.x.mean(axis=2)

    @cached_property
    def sample_sum_sq(self):
        """Sum over samples of squared deviations from ``sample_mean`` (B, P, U)."""
        deviation = self.x - self.sample_mean[:, :, None, :]
        return np.einsum("bpsu,bpsu->bpu", deviation, deviation)

    @cached_property
    def centroid(self):
        """Each sample's orbit centroid: the mean over the grid (B, S, U)."""
        return self.x.mean(axis=1)

    @cached_property
    def orbit_sq(self):
        """Squared deviations from the orbit centroid (B, P, S, U)."""
        deviation = self.x - self.centroid[:, None]
        return deviation * deviation

    @cached_property
    def identity_threshold(self):
        """Goodfellow's firing threshold per unit (B, U): ``mu + sigma z`` of the identity."""
        c = self.identity_index
        sigma = _std_from_sum_of_squares(self.sample_sum_sq[:, c], self.n_samples)
        sigma = np.where(sigma < GOODFELLOW_MIN_STD, GOODFELLOW_MIN_STD, sigma)
        return self.sample_mean[:, c] + sigma * self.z

    # --- tmeasures' per-unit measures, (B, U) ----------------------------------------
    def tv(self):
        """Mean over samples of the std over the grid (ddof 1)."""
        return _std_from_sum_of_squares(self.orbit_sq.sum(axis=1), self.n_params).mean(axis=1)

    def sv(self):
        """Mean over the grid of the std over samples (ddof 1)."""
        return _std_from_sum_of_squares(self.sample_sum_sq, self.n_samples).mean(axis=1)

    def nv(self):
        """``tv / sv`` with tmeasures' 0/0 = 1 and x/0 = inf."""
        return safe_divide(self.tv(), self.sv())

    def anova(self):
        """1 where the one-way ANOVA F of the unit exceeds tmeasures' critical value, else 0."""
        p, s = self.n_params, self.n_samples
        between = self.sample_mean - self.sample_mean.mean(axis=1, keepdims=True)
        ssb = s * np.einsum("bpu,bpu->bu", between, between) / (p - 1)
        ssw = self.sample_sum_sq.sum(axis=1) / ((s - 1) * p)
        f_score = ssb / ssw  # 0/0 -> NaN (never above), x/0 -> inf (above), as tmeasures
        return (f_score > self.anova_critical).astype(np.float64)

    def goodfellow(self):
        """Firing rate over the grid over the firing rate at the identity (``safe_divide``)."""
        threshold = self.identity_threshold[:, None, None, :]
        fires = self.x > threshold  # (B, P, S, U)
        local = fires.mean(axis=(1, 2))
        global_ = fires[:, self.identity_index].mean(axis=1)
        return safe_divide(local, global_)

    # --- distances to the orbit centroid, (B,) or per unit (B, U) ---------------------
    def geed_l2(self, per_unit: bool):
        """Mean over grid and samples of ``||x - centroid||_2``."""
        sq = self.orbit_sq if per_unit else self.orbit_sq.sum(axis=-1)
        return np.sqrt(sq).mean(axis=(1, 2))

    def geed_cos(self, per_unit: bool):
        """Mean of ``1 - cos(x, centroid)``; 0 where both are zero, 1 where one is."""
        x, centroid = self.x, self.centroid[:, None]
        if per_unit:
            dot, x_sq, c_sq = x * centroid, x * x, centroid * centroid
        else:
            dot = np.einsum("bpsu,bsu->bps", x, self.centroid)
            x_sq = np.einsum("bpsu,bpsu->bps", x, x)
            c_sq = np.einsum("bsu,bsu->bs", self.centroid, self.centroid)[:, None]
        norms = np.sqrt(x_sq) * np.sqrt(c_sq)
        distance = 1.0 - np.divide(dot, norms, out=np.zeros(np.broadcast(dot, norms).shape),
                                   where=norms > 0)
        both_zero = (x_sq == 0) & (c_sq == 0)
        return np.where(both_zero, 0.0, distance).mean(axis=(1, 2))

    def geed_kl(self, per_unit: bool):
        """Mean of ``KL(x || centroid) = sum_u x_u (log x_u - log c_u)``, logs floored at
        ``KL_EPSILON``, ``0 log 0 = 0``."""
        x, centroid = self.x, self.centroid[:, None]
        log_ratio = (np.log(np.maximum(x, KL_EPSILON))
                     - np.log(np.maximum(centroid, KL_EPSILON)))
        terms = np.where(x > 0, x * log_ratio, 0.0)
        return (terms if per_unit else terms.sum(axis=-1)).mean(axis=(1, 2))

    # --- around the identity --------------------------------------------------------
    def consistency(self):
        """Fraction of (grid value, sample) whose prediction is the identity's (B,)."""
        same = self.predictions == self.predictions[:, self.identity_index][:, None]
        return same.mean(axis=(1, 2))

    def lee_fd(self, per_unit: bool):
        """Mean over samples (and units) of ``|x(p_{c+1}) - x(p_{c-1})| / spacing``."""
        c = self.identity_index
        derivative = np.abs(self.x[:, c + 1] - self.x[:, c - 1]) / self.spacing  # (B, S, U)
        return derivative.mean(axis=1) if per_unit else derivative.mean(axis=(1, 2))


def builtin_measures(block: ResponseBlock, names, *, per_unit: bool) -> dict[str, np.ndarray]:
    """Each built-in measure in ``names``: (B, U) per unit, else (B,) (tmeasures' measures
    averaged over their finite units)."""
    n_units = block.x.shape[-1]
    out = {}
    for name in names:
        if name in TMEASURES_MEASURES:
            value = getattr(block, name)()
            out[name] = value if per_unit else finite_mean(value)
        elif name == "consistency":
            value = block.consistency()
            out[name] = np.repeat(value[:, None], n_units, axis=1) if per_unit else value
        else:
            out[name] = getattr(block, name)(per_unit)
    return out
