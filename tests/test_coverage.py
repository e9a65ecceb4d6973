"""Coverage of patchlab's intervals, measured by simulation against a known truth at n = 8, 24 and 150 (the table in
docs/statistics.md was made by the same code with more simulations). Seeded, so the numbers are fixed; the bands are
the nominal 95% within a margin, or, where an interval is known to cover less at small n, the documented value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from patchlab import screen, stats
from patchlab.lens import critical_layer
from patchlab.verdicts import critical_layer_ci


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


def _screened(rng, n: int, share: float) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """A screened track of n clips: real restorations y, AtP's estimates x = 0.8 y + noise, a random `share` of the
    clips verified by real patching; the truth is the mean real restoration over all n (a finite population)."""
    y = 0.5 + 0.4 * rng.standard_normal(n)
    x = 0.8 * y + 0.15 * rng.standard_normal(n)
    ids = [f"c{i}" for i in range(n)]
    atp = pd.DataFrame({"sample": ids, "layer": 0, "position": "audio", "atp_restored": x, "gap": 1.0})
    ver = rng.choice(n, max(3, round(share * n)), replace=False)
    real = pd.DataFrame({"sample": [ids[i] for i in ver], "layer": 0, "position": "audio", "direction": "denoise",
                         "site": "resid_pre", "logit_diff_restored": y[ver]})  # fmt: skip
    return atp, real, float(y.mean())


@pytest.mark.parametrize("n, low", [(8, 0.90), (24, 0.91), (150, 0.92)])
def test_the_screening_interval_covers_the_mean_real_patching_would_give(n, low):
    """The regression estimator's t interval with the finite-population correction (patchlab.screen.estimate), half
    of the clips verified: it covers the mean over every screened clip's real restoration."""
    rng = np.random.default_rng(n)
    hits = 0
    for _ in range(400):
        atp, real, truth = _screened(rng, n, 0.5)
        row = screen.estimate(atp, real)[0].iloc[0]
        hits += row["lo"] <= truth <= row["hi"]
    assert low <= hits / 400 <= 0.99, hits / 400


@pytest.mark.parametrize("n, band", [(8, (0.70, 0.99)), (24, (0.85, 0.99)), (150, (0.87, 0.99))])
def test_the_critical_layer_interval_covers_the_population_critical_layer(n, band):
    """Percentile bootstrap over clips of the critical layer (patchlab.verdicts.critical_layer_ci): clips turn
    correct at a layer drawn around 20 of 30; the truth is the critical layer of the expected curve. The basic
    bootstrap undoes most of the plug-in's small-n bias (a percentile interval covered 2% at n = 8, 24% at 24); still
    below 95% at n = 8 (measured: docs/statistics.md)."""
    layers, labels = 30, 2
    turn = norm(20, 4)
    turned = turn.cdf(np.arange(layers) + 0.5)  # P(a clip has turned by layer l): rint(turn) <= l
    truth = critical_layer(turned + 0.5 * (1 - turned), labels)
    rng = np.random.default_rng(n)
    hits, sims = 0, 150
    for i in range(sims):
        at = np.rint(turn.rvs(n, random_state=rng))
        guess = rng.random((n, layers)) < 0.5  # before its turn a clip is right by chance
        correct = np.where(np.arange(layers)[None] >= at[:, None], 1.0, guess.astype(float))
        per = pd.DataFrame({"sample": np.repeat(np.arange(n), layers), "layer": np.tile(np.arange(layers), n),
                            "position": "final", "correct": correct.ravel()})  # fmt: skip
        lo, hi = critical_layer_ci(per, labels, 0.2, "excess", n_boot=300, seed=i)
        hits += lo <= truth <= hi
    assert band[0] <= hits / sims <= band[1], hits / sims
