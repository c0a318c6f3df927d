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

__all__ = [
    "RESPONSE_MEASURES",
    "TMEASURES_MEASURES",
    "ANOVA_ALPHA",
    "ANOVA_BONFERRONI",
    "GOODFELLOW_ALPHA",
    "GOODFELLOW_MIN_STD",
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
    # scipy.stats.f.ppf is this function (its ``_ppf``); scipy.stats itself costs the
    # measure command a third of a second to import
    return float(scipy.special.fdtri(n_params - 1, (n_samples - 1) * n_params, quantile))


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


def _sum_units(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis (..., U) -> (...) (a BLAS product: numpy's own sum over a short
    last axis is several times slower); one unit (a layer statistic) is its own sum."""
    if a.shape[-1] == 1:
        return a[..., 0]
    return a @ np.ones(a.shape[-1])


def _sum_samples(a: np.ndarray) -> np.ndarray:
    """Sum over samples (B, P, S, U) -> (B, P, U)."""
    return np.einsum("bpsu->bpu", a)


def _sum_grid_samples(a: np.ndarray) -> np.ndarray:
    """Sum over grid and samples (B, P, S, U) -> (B, U)."""
    return np.einsum("bpsu->bu", a)


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
        return _sum_samples(self.x) / self.n_samples

    @cached_property
    def sample_sum_sq(self):
        """Sum over samples of squared deviations from ``sample_mean`` (B, P, U)."""
        deviation = self.x - self.sample_mean[:, :, None, :]
        return _sum_samples(np.multiply(deviation, deviation, out=deviation))

    @cached_property
    def centroid(self):
        """Each sample's orbit centroid: the mean over the grid (B, S, U)."""
        return self.x.sum(axis=1) / self.n_params

    # whether ``_orbit`` also takes the deviations' dot product with the centroid (for
    # ``geed_cos`` of the whole response; ``builtin_measures`` sets it when asked for it)
    needs_orbit_dot = True

    @cached_property
    def _orbit(self):
        """Squared deviations from the centroid (B, P, S, U) and their dot product with
        it summed over units (B, P, S) (taken before squaring, for ``geed_cos``; None
        unless ``needs_orbit_dot``)."""
        deviation = self.x - self.centroid[:, None]
        dot = _sum_units(deviation * self.centroid[:, None]) if self.needs_orbit_dot else None
        return np.multiply(deviation, deviation, out=deviation), dot

    @property
    def orbit_sq(self):
        return self._orbit[0]

    @cached_property
    def orbit_sq_units(self):
        """Squared distance to the centroid summed over units (B, P, S)."""
        return _sum_units(self.orbit_sq)

    @cached_property
    def identity_threshold(self):
        """Goodfellow's firing threshold per unit (B, U): ``mu + sigma z`` of the identity."""
        c = self.identity_index
        sigma = _std_from_sum_of_squares(self.sample_sum_sq[:, c], self.n_samples)
        sigma = np.where(sigma < GOODFELLOW_MIN_STD, GOODFELLOW_MIN_STD, sigma)
        return self.sample_mean[:, c] + sigma * self.z

    # --- tmeasures' per-unit measures, (B, U) ----------------------------------------
    @cached_property
    def _tv(self):
        return _std_from_sum_of_squares(self.orbit_sq.sum(axis=1), self.n_params).mean(axis=1)

    @cached_property
    def _sv(self):
        return _std_from_sum_of_squares(self.sample_sum_sq, self.n_samples).mean(axis=1)

    def tv(self):
        """Mean over samples of the std over the grid (ddof 1)."""
        return self._tv

    def sv(self):
        """Mean over the grid of the std over samples (ddof 1)."""
        return self._sv

    def nv(self):
        """``tv / sv`` with tmeasures' 0/0 = 1 and x/0 = inf."""
        return safe_divide(self._tv, self._sv)

    def anova(self):
        """1 where the one-way ANOVA F of the unit exceeds tmeasures' critical value, else 0."""
        p, s = self.n_params, self.n_samples
        between = self.sample_mean - self.sample_mean.mean(axis=1, keepdims=True)
        ssb = s * (between * between).sum(axis=1) / (p - 1)
        ssw = self.sample_sum_sq.sum(axis=1) / ((s - 1) * p)
        f_score = ssb / ssw  # 0/0 -> NaN (never above), x/0 -> inf (above), as tmeasures
        return (f_score > self.anova_critical).astype(np.float64)

    def goodfellow(self):
        """Firing rate over the grid over the firing rate at the identity (``safe_divide``)."""
        fires = (self.x > self.identity_threshold[:, None, None, :]).view(np.int8)
        local = np.einsum("bpsu->bu", fires, dtype=np.int64) / (self.n_params * self.n_samples)
        global_ = np.einsum("bsu->bu", fires[:, self.identity_index], dtype=np.int64)
        global_ = global_ / self.n_samples
        return safe_divide(local, global_)

    # --- distances to the orbit centroid, (B,) or per unit (B, U) ---------------------
    def _mean_grid_samples(self, a, per_unit: bool):
        """Mean over grid and samples of (B, P, S, U) per unit, or of (B, P, S)."""
        total = _sum_grid_samples(a) if per_unit else a.reshape(a.shape[0], -1).sum(axis=1)
        return total / (self.n_params * self.n_samples)

    def geed_l2(self, per_unit: bool):
        """Mean over grid and samples of ``||x - centroid||_2``."""
        sq = self.orbit_sq if per_unit else self.orbit_sq_units
        return self._mean_grid_samples(np.sqrt(sq), per_unit)

    def geed_cos(self, per_unit: bool):
        """Mean of ``1 - cos(x, centroid)``; 0 where both are zero, 1 where one is."""
        centroid = self.centroid[:, None]
        if per_unit:
            dot, x_sq, c_sq = self.x * centroid, self.x * self.x, centroid * centroid
        else:  # x = d + c: x.c = d.c + c.c, x.x = d.d + 2 d.c + c.c
            c_sq = _sum_units(self.centroid * self.centroid)[:, None]
            dot = self._orbit[1] + c_sq
            x_sq = np.maximum(self.orbit_sq_units + 2.0 * self._orbit[1] + c_sq, 0.0)
        norms = np.sqrt(x_sq) * np.sqrt(c_sq)
        cosine = np.divide(dot, norms, out=np.zeros(np.broadcast(dot, norms).shape),
                           where=norms > 0)
        distance = np.where((x_sq == 0) & (c_sq == 0), 0.0, 1.0 - cosine)
        return self._mean_grid_samples(distance, per_unit)

    def geed_kl(self, per_unit: bool):
        """Mean of ``KL(x || centroid) = sum_u x_u log(x_u / c_u)`` (``0 log 0 = 0``), as
        ``mean_p sum_u x log x - sum_u c log c`` (the mean over the grid of x is c)."""
        tiny = np.finfo(np.float64).tiny  # log(0) -> a finite number times 0
        x_log_x = np.maximum(self.x, tiny)
        x_log_x = np.multiply(np.log(x_log_x, out=x_log_x), self.x, out=x_log_x)
        c_log_c = self.centroid * np.log(np.maximum(self.centroid, tiny))  # (B, S, U)
        if per_unit:
            return (self._mean_grid_samples(x_log_x, True)
                    - c_log_c.sum(axis=1) / self.n_samples)
        return (self._mean_grid_samples(_sum_units(x_log_x), False)
                - _sum_units(c_log_c).sum(axis=1) / self.n_samples)

    # --- around the identity --------------------------------------------------------
    def consistency(self):
        """Fraction of (grid value, sample) whose prediction is the identity's (B,)."""
        same = self.predictions == self.predictions[:, self.identity_index][:, None]
        return same.reshape(same.shape[0], -1).mean(axis=1)

    def lee_fd(self, per_unit: bool):
        """Mean over samples (and units) of ``|x(p_{c+1}) - x(p_{c-1})| / spacing``."""
        c = self.identity_index
        derivative = np.abs(self.x[:, c + 1] - self.x[:, c - 1]) / self.spacing  # (B, S, U)
        if per_unit:
            return derivative.mean(axis=1)
        return derivative.reshape(derivative.shape[0], -1).mean(axis=1)


def builtin_measures(block: ResponseBlock, names, *, per_unit: bool) -> dict[str, np.ndarray]:
    """Each built-in measure in ``names``: (B, U) per unit, else (B,) (tmeasures' measures
    averaged over their finite units)."""
    n_units = block.x.shape[-1]
    block.needs_orbit_dot = "geed_cos" in names and not per_unit
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
