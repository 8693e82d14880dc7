"""Claims, their verdict rules and the one function that gives every verdict (science.md §6.1).

A claim's rule compares a measured 95 % interval with a threshold: ``"> 0"`` holds when the whole interval is
above 0, is "not reproduced" when the whole interval lies on the other side, and "inconclusive" otherwise; a
rule ``"within [a, b]"`` holds when the interval lies inside [a, b] and fails when it lies wholly outside.
A claim made of several parts (every ε, every pool) is reproduced when every part is, not reproduced when any
part is, and inconclusive otherwise. Intervals are percentile bootstraps over the unit a claim names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
Relation = str  # ">", "<", ">=", "<=", "within"


@dataclass(frozen=True)
class Claim:
    """One row of science.md §6.1: its id, paper, wording and rule (as the table states it)."""

    id: str
    paper: str
    wording: str
    rule: str


@dataclass
class Measurement:
    """A measured value with its 95 % interval, the count it rests on, and how it is tested against the rule."""

    value: float
    low: float
    high: float
    count: int
    unit: str  # what the interval resamples: "test points", "pool models", ...
    relation: Relation = ">"
    threshold: float | tuple[float, float] = 0.0
    label: str = ""  # which part of a claim this is (e.g. "ε = 1")
    note: str = ""

    @property
    def verdict(self) -> str:
        return verdict(self.relation, self.low, self.high, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "value": self.value,
            "ci": [self.low, self.high],
            "count": self.count,
            "unit": self.unit,
            "relation": self.relation,
            "threshold": self.threshold,
            "verdict": self.verdict,
            "note": self.note,
        }


@dataclass
class Result:
    """A claim with the measurements its rule was applied to, and any numbers reported beside them."""

    claim: Claim
    parts: list[Measurement]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return combine([m.verdict for m in self.parts])

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.claim.id,
            "paper": self.claim.paper,
            "claim": self.claim.wording,
            "rule": self.claim.rule,
            "verdict": self.verdict,
            "parts": [m.to_dict() for m in self.parts],
            "extra": self.extra,
        }


def verdict(relation: Relation, low: float, high: float, threshold: float | tuple[float, float] = 0.0) -> str:
    """Reproduced / not reproduced / inconclusive for the interval [low, high] against the rule.

    >>> verdict(">", 0.1, 0.3), verdict(">", -0.3, -0.1), verdict(">", -0.1, 0.3)
    ('reproduced', 'not reproduced', 'inconclusive')
    >>> verdict("within", 0.47, 0.52, (0.45, 0.55)), verdict("within", 0.56, 0.6, (0.45, 0.55))
    ('reproduced', 'not reproduced')
    """
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    if low > high:
        raise ValueError(f"interval [{low}, {high}] has low > high")
    if relation == "within":
        a, b = threshold  # type: ignore[misc]
        if a <= low and high <= b:
            return REPRODUCED
        return NOT_REPRODUCED if high < a or low > b else INCONCLUSIVE
    t = float(threshold)  # type: ignore[arg-type]
    holds: dict[str, Callable[[], bool]] = {
        ">": lambda: low > t,
        ">=": lambda: low >= t,
        "<": lambda: high < t,
        "<=": lambda: high <= t,
    }
    fails: dict[str, Callable[[], bool]] = {
        ">": lambda: high <= t,
        ">=": lambda: high < t,
        "<": lambda: low >= t,
        "<=": lambda: low > t,
    }
    if relation not in holds:
        raise ValueError(f"unknown relation {relation!r}")
    if holds[relation]():
        return REPRODUCED
    return NOT_REPRODUCED if fails[relation]() else INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """Every part reproduced → reproduced; any part not reproduced → not reproduced; else inconclusive."""
    if not verdicts:
        return INCONCLUSIVE
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    return NOT_REPRODUCED if NOT_REPRODUCED in verdicts else INCONCLUSIVE


def bootstrap(stat: Callable[[np.ndarray], float], n: int, resamples: int, seed: int) -> tuple[float, float, float]:
    """stat(all units), and the 2.5 / 97.5 % percentiles of stat over ``resamples`` resamples of the n units
    (``stat`` takes an index array into the units)."""
    rng = np.random.default_rng(seed)
    value = float(stat(np.arange(n)))
    draws = np.array([stat(rng.integers(0, n, n)) for _ in range(resamples)], dtype=float)
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return value, float("nan"), float("nan")
    return value, float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def mean_ci(values: np.ndarray, resamples: int, seed: int) -> tuple[float, float, float]:
    """The mean of per-unit values (NaN units dropped) and its bootstrap interval over the units."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bootstrap(lambda i: float(v[i].mean()), len(v), resamples, seed)


def measure(values: np.ndarray, unit: str, resamples: int, seed: int, **rule: Any) -> Measurement:
    """A :class:`Measurement` of the mean of per-unit values (e.g. per-test-point accuracy differences)."""
    v = np.asarray(values, dtype=float)
    value, low, high = mean_ci(v, resamples, seed)
    return Measurement(value, low, high, int(np.isfinite(v).sum()), unit, **rule)


def paired(a: np.ndarray, b: np.ndarray, unit: str, s: dict[str, Any], **rule: Any) -> Measurement:
    """mean(b − a) over units both were measured on (``s`` holds ``resamples`` and ``seed``)."""
    return measure(np.asarray(b, float) - np.asarray(a, float), unit, s["resamples"], s["seed"], **rule)


def unpaired(a: np.ndarray, b: np.ndarray, unit: str, s: dict[str, Any], **rule: Any) -> Measurement:
    """mean(b) − mean(a) over two independent sets of units, each resampled on its own."""
    rng = np.random.default_rng(s["seed"])
    a, b = np.asarray(a, float), np.asarray(b, float)
    draws = [rng.choice(b, len(b)).mean() - rng.choice(a, len(a)).mean() for _ in range(s["resamples"])]
    return Measurement(
        float(b.mean() - a.mean()),
        float(np.percentile(draws, 2.5)),
        float(np.percentile(draws, 97.5)),
        len(a) + len(b),
        unit,
        **rule,
    )


def ci(v: np.ndarray, s: dict[str, Any]) -> tuple[float, tuple[float, float]]:
    """The mean of ``v`` and its bootstrap interval, as (value, (low, high))."""
    value, lo, hi = mean_ci(v, s["resamples"], s["seed"])
    return value, (lo, hi)


def sign_test(diffs: np.ndarray, unit: str, label: str = "", level: float = 0.05) -> Measurement:
    """The paired sign test of "diff > 0" as a :class:`Measurement`: the median of the paired differences and its
    distribution-free order-statistic interval [d_(k), d_(m+1−k)], with k the largest index such that
    P(Bin(m, ½) ≤ k − 1) ≤ ``level`` (m nonzero differences; ties dropped, as the sign test drops them).

    By duality the interval's low end is above 0 exactly when the one-sided sign test rejects "median ≤ 0" at
    ``level`` (p = P(Bin(m, ½) ≥ #positive)), and its high end is below 0 exactly when the opposite one-sided test
    rejects; so the "> 0" rule is the sign test at p < ``level`` each way. The note gives both p-values.
    """
    from scipy.stats import binom

    d = np.asarray(diffs, dtype=float)
    d = np.sort(d[np.isfinite(d) & (d != 0)])
    m = len(d)
    positive = int((d > 0).sum())
    p_up = float(binom.sf(positive - 1, m, 0.5)) if m else 1.0
    p_down = float(binom.cdf(positive, m, 0.5)) if m else 1.0
    k = int((binom.cdf(np.arange(m), m, 0.5) <= level).sum())  # P(Bin ≤ k−1) ≤ level for k = 1..this
    if m == 0 or k == 0:
        low, high = float("-inf"), float("inf")
    else:
        low, high = float(d[k - 1]), float(d[m - k])
    note = f"{positive} of {m} positive; one-sided sign test p = {p_up:.2g} (>), {p_down:.2g} (<)"
    return Measurement(float(np.median(d)) if m else 0.0, low, high, m, unit, ">", 0.0, label, note)
