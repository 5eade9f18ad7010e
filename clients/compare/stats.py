"""Small statistics for the report: means with t intervals, Welch differences, Spearman."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Two-sided confidence level of every interval in the report.
CONFIDENCE = 0.95


def _t_quantile(df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and the t interval's half-width of some values."""

    n: int
    mean: float
    std: float
    minimum: float
    maximum: float
    #: t(0.975, n-1) * std / sqrt(n); NaN with fewer than two values.
    half_width: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def text(self, digits: int = 3) -> str:
        if self.n < 2 or math.isnan(self.half_width):
            return f"{self.mean:.{digits}f} (n={self.n})"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f} (n={self.n})"


def summarize(values: Sequence[float]) -> Summary:
    """The Summary of values; NaN everywhere when there are none."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    half = _t_quantile(n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    return Summary(n, mean, std, min(xs), max(xs), half)


@dataclass(frozen=True)
class Difference:
    """a - b with Welch's t interval (unequal variances)."""

    estimate: float
    half_width: float

    @property
    def low(self) -> float:
        return self.estimate - self.half_width

    @property
    def high(self) -> float:
        return self.estimate + self.half_width


def welch(a: Summary, b: Summary) -> Difference:
    """The difference of two means and its interval; NaN width if either has n < 2."""
    estimate = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        return Difference(estimate, float("nan"))
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Difference(estimate, 0.0)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    return Difference(estimate, _t_quantile(df) * se)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get average ranks); NaN if either is constant."""
    if len(a) != len(b) or len(a) < 2:
        return float("nan")
    from scipy import stats

    if len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)
