"""Coverage of patchlab's intervals, measured by simulation against a known truth at n = 8, 24 and 150 (the table in
docs/statistics.md was made by the same code with more simulations). Seeded, so the numbers are fixed; the bands are
the nominal 95% within a margin, or, where an interval is known to cover less at small n, the documented value."""

from __future__ import annotations

import numpy as np
import pytest

from patchlab import stats


def _coverage(make, interval, truth: float, sims: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(sims):
        lo, hi = interval(make(rng), i)
        hits += lo <= truth <= hi
    return hits / sims


@pytest.mark.parametrize("n", [8, 24, 150])
def test_wilson_covers_a_proportion(n):
    cov = _coverage(lambda r: r.random(n) < 0.3, lambda x, i: stats.wilson(int(x.sum()), n), 0.3, 2000, n)
    assert 0.93 <= cov <= 0.975, cov  # two-sided 95%; discreteness moves it a little around 0.95


@pytest.mark.parametrize("n, low", [(8, 0.86), (24, 0.91), (150, 0.92)])
def test_the_bootstrap_interval_of_a_mean_covers_it(n, low):
    """Percentile bootstrap of a mean (also the paired bootstrap: a mean of differences): about 0.91 at n = 8, near
    0.95 from n = 24 on (docs/statistics.md)."""
    cov = _coverage(lambda r: 0.2 + 0.3 * r.standard_normal(n),
                    lambda x, i: stats.bootstrap_mean_ci(x, 500, 0.95, i), 0.2, 300, n)  # fmt: skip
    assert low <= cov <= 0.99, cov


@pytest.mark.parametrize("n", [8, 24])
def test_the_hodges_lehmann_interval_covers_a_symmetric_shift(n):
    """Heavy tails (Student t, 3 degrees of freedom) shifted by 0.2: the HL shift's bootstrap interval covers it."""

    def interval(x, i):
        v = stats.paired_ranks("h", x, seed=i, n_boot=300)
        return v.ci_lo, v.ci_hi

    cov = _coverage(lambda r: 0.2 + r.standard_t(3, n), interval, 0.2, 200, n)
    assert 0.88 <= cov <= 0.99, cov
