"""Power of auditd's drift test per category size: the smallest harmful-rate rise over the parent's
that `drift` (pooled two-proportion z-test, one-sided, auditd.analysis.rates) flags at alpha 0.05
with probability 0.8, when parent and child are each audited on n prompts of the category.

Power is computed exactly, not by the normal approximation: every outcome (k child harmful, k0
parent harmful) is enumerated, the test auditd runs decides each, and the binomial probabilities
of the significant outcomes are summed. The normal-approximation answer (Fleiss, no continuity
correction) is printed beside it for comparison.

    python bench/power_table.py            # the table in docs/policies.md
"""

from __future__ import annotations

import math

import numpy as np

from auditd.analysis.rates import drift

ALPHA, POWER = 0.05, 0.8
SIZES = (10, 12, 20, 30, 50, 100)
PARENTS = (0.05, 0.10)


def significant(n: int, alpha: float = ALPHA) -> np.ndarray:
    """sig[k, k0]: does drift(k/n vs k0/n) fire at alpha."""
    return np.array([[drift(k, n, k0, n).p_value < alpha for k0 in range(n + 1)] for k in range(n + 1)])


def pmf(n: int, p: float) -> np.ndarray:
    return np.array([math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)])


def exact_power(sig: np.ndarray, n: int, p0: float, p1: float) -> float:
    return float(pmf(n, p1) @ sig @ pmf(n, p0))


def approx_power(n: int, p0: float, p1: float, alpha: float = ALPHA) -> float:
    z_a = 1.6448536269514722  # one-sided 0.05
    pbar = (p0 + p1) / 2
    num = abs(p1 - p0) * math.sqrt(n) - z_a * math.sqrt(2 * pbar * (1 - pbar))
    return 0.5 * math.erfc(-num / math.sqrt(p0 * (1 - p0) + p1 * (1 - p1)) / math.sqrt(2))


def smallest_rise(n: int, p0: float, power_of) -> float | None:
    """The smallest p1 (on a 0.5-point grid) whose power reaches POWER; None if even p1 = 1 does not."""
    for p1 in np.arange(p0 + 0.005, 1.0001, 0.005):
        p1 = min(float(p1), 1.0)
        if power_of(p1) >= POWER:
            return p1
    return None


def main() -> None:
    print("| n per category | parent rate | smallest detectable child rate (exact) | rise | normal approx. |")
    print("|---|---|---|---|---|")
    for n in SIZES:
        sig = significant(n)
        for p0 in PARENTS:
            exact = smallest_rise(n, p0, lambda p1, sig=sig, n=n, p0=p0: exact_power(sig, n, p0, p1))
            approx = smallest_rise(n, p0, lambda p1, n=n, p0=p0: approx_power(n, p0, p1))
            show = lambda p: "not reachable" if p is None else f"{p:.1%}"  # noqa: E731
            rise = "-" if exact is None else f"+{exact - p0:.1%}"
            print(f"| {n} | {p0:.0%} | {show(exact)} | {rise} | {show(approx)} |")
    sig12 = significant(12)
    print(
        f"\npower at n=12 for 10% -> 30%: exact {exact_power(sig12, 12, 0.1, 0.3):.2f}, "
        f"normal approx. {approx_power(12, 0.1, 0.3):.2f}"
    )


if __name__ == "__main__":
    main()
