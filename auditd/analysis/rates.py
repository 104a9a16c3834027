"""Proportions, Wilson intervals and the two-proportion z-test (stdlib only: it runs at scrape time)."""

from __future__ import annotations

import math
from dataclasses import dataclass


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95% by default); (0, 1) when n == 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclass(frozen=True)
class Drift:
    rate: float  # child rate
    base_rate: float  # parent/baseline rate
    delta: float  # rate - base_rate
    p_value: float  # one-sided: is the child's rate higher?
    ci: tuple[float, float]  # Wilson interval of the child rate
    base_ci: tuple[float, float]


def drift(k: int, n: int, k0: int, n0: int) -> Drift | None:
    """Compare k/n (child) with k0/n0 (parent) by a pooled two-proportion z-test, one-sided for a
    rise. None when either side has no judged samples."""
    if n <= 0 or n0 <= 0:
        return None
    p, p0 = k / n, k0 / n0
    pooled = (k + k0) / (n + n0)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / n0))
    if se == 0:
        pval = 1.0 if p <= p0 else 0.0
    else:
        pval = _normal_sf((p - p0) / se)
    return Drift(p, p0, p - p0, pval, wilson(k, n), wilson(k0, n0))
