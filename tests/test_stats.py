"""Hypothesis tests: a known effect is found, null data keeps its false-positive rate, Holm matches a hand-worked
example, and a handful of clips gives 'inconclusive'."""

from __future__ import annotations

import numpy as np
import pytest

from patchlab import stats


def test_a_true_effect_of_known_size_is_found_and_its_ci_covers_it():
    rng = np.random.default_rng(0)
    x = 0.4 + 0.3 * rng.standard_normal(40)
    (v,) = stats.decide([stats.paired("audio restores", x)])
    assert v.ci_lo <= 0.4 <= v.ci_hi and v.p < 1e-3 and v.verdict == "supported" and v.n == 40


def test_the_false_positive_rate_on_null_data_is_within_the_level():
    rng = np.random.default_rng(1)
    hits = sum(stats.paired("null", rng.standard_normal(20), seed=i, n_boot=200).p <= 0.05 for i in range(300))
    assert hits / 300 <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 300)  # within the level, up to 2 standard errors


def test_holm_matches_a_hand_worked_example():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> monotone 0.06)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(stats.holm([0.01, float("nan")])[1])
    assert stats.benjamini_hochberg([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])


def test_a_few_clips_give_inconclusive_however_large_the_effect():
    (v,) = stats.decide([stats.paired("tiny n", [1.0, 0.9, 1.1])])
    assert v.verdict == "inconclusive" and "too few" in v.note


def test_an_effect_the_other_way_is_refuted_and_chance_accuracy_is_not_supported():
    rng = np.random.default_rng(2)
    (v,) = stats.decide([stats.paired("audio restores", -0.5 + 0.1 * rng.standard_normal(30))])
    assert v.verdict == "refuted"
    acc = stats.above_chance("decodable", [True, False] * 20, chance=0.5)
    assert stats.decide([acc])[0].verdict == "inconclusive" and acc.effect == pytest.approx(0.0)


def test_one_clip_or_no_difference_gives_a_valid_p_not_an_error():
    assert stats.sign_flip_p(np.array([0.3])) == 0.5  # the two sign patterns: only the observed one is as large
    assert stats.sign_flip_p(np.zeros(5)) == 1.0
    (v,) = stats.decide([stats.paired("one clip", [1.0], [0.0])])
    assert v.n == 1 and v.verdict == "inconclusive"


def test_two_sample_within_strata_finds_a_known_shift_and_holds_its_level_on_null_data():
    rng = np.random.default_rng(3)
    # two labels with very different baselines: pooling them would blur a shift of 2.0 within each label
    sx, sy = np.repeat(["a", "b"], 20), np.repeat(["a", "b"], 20)
    x = np.where(sx == "a", 0.0, 10.0) + 2.0 + rng.standard_normal(40)
    y = np.where(sy == "a", 0.0, 10.0) + rng.standard_normal(40)
    (v,) = stats.decide([stats.two_sample("shift", x, y, sx, sy, n_resamples=999, n_boot=300)])
    assert v.ci_lo <= 2.0 <= v.ci_hi and v.verdict == "supported" and v.n == 80
    hits = 0
    for i in range(100):
        a, b = rng.standard_normal(12), rng.standard_normal(12)
        hits += stats.two_sample("null", a, b, seed=i, n_resamples=199, n_boot=10).p <= 0.05
    assert hits / 100 <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 100)
    # a stratum with clips of one group only does not count; none in common: no test, said
    only = stats.two_sample("no overlap", [1.0, 2.0], [0.0], ["a", "a"], ["b"])
    assert only.n == 0 and "no stratum" in only.note


def test_rank_correlation_finds_a_monotone_relation_and_refuses_constant_data():
    x = np.arange(12.0)
    v = stats.rank_correlation("rises", x, x**2 + 0.01 * np.sin(x))
    assert v.effect == pytest.approx(1.0) and v.p < 1e-3
    assert np.isnan(stats.rank_correlation("flat", x, np.ones(12)).p)


def test_signed_ranks_are_not_decided_by_two_extreme_clips_and_hold_their_level():
    """22 clips shifted by ~0.9 and two small-gap clips at +11.8 and -10.6 (as in the cross-model run): the mean's
    test is undecided, the signed-rank test finds the shift and its Hodges-Lehmann estimate is near 0.9; on
    symmetric heavy-tailed null data it keeps its level; the estimate is the median of the Walsh averages."""
    rng = np.random.default_rng(3)
    d = np.r_[0.9 + 0.4 * rng.standard_normal(22), 11.8, -10.6]
    mean_test, rank_test = stats.decide([stats.paired("mean", d), stats.paired_ranks("ranks", d)])
    assert mean_test.verdict == "inconclusive" and rank_test.verdict == "supported"
    assert rank_test.ci_lo <= 0.9 <= rank_test.ci_hi and rank_test.ci_hi - rank_test.ci_lo < 0.5
    null = [stats.paired_ranks("null", rng.standard_t(2, 20), seed=i, n_boot=20).p for i in range(300)]
    assert np.mean(np.array(null) <= 0.05) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 300)
    walsh = [(a + b) / 2 for k, a in enumerate([1.0, 4.0, 2.0]) for b in [1.0, 4.0, 2.0][k:]]
    assert stats.hodges_lehmann(np.array([1.0, 4.0, 2.0])) == pytest.approx(np.median(walsh))
    assert stats.paired_ranks("none", np.zeros(6)).p == 1.0


def test_a_significant_effect_below_the_smallest_that_matters_is_negligible_not_supported():
    """RQ1's dip on dev: significant, effect 0.013 in p(true): with m = 0.05 it is negligible (counted apart)."""
    rng = np.random.default_rng(0)
    tiny = stats.paired("a tiny but steady effect", 0.013 + 0.005 * rng.standard_normal(150)).matters(0.05)
    large = stats.paired("a large effect", 0.3 + 0.1 * rng.standard_normal(150)).matters(0.05)
    straddles = stats.paired("an effect near m", 0.05 + 0.05 * rng.standard_normal(40)).matters(0.05)
    stats.decide([tiny, large, straddles])
    assert tiny.p_corrected < 0.05 and tiny.ci_lo > 0  # the old rule said supported
    assert (tiny.verdict, large.verdict, straddles.verdict) == ("negligible", "supported", "inconclusive")
    assert straddles.n_needed > straddles.n and np.isnan(large.n_needed)


def test_sanity_checks_are_not_in_the_holm_family_and_are_kept_apart():
    """An identity (every clip restores 1) is a sanity check: its p is not corrected with the findings', and
    adding it does not change the findings' corrected p-values."""
    rng = np.random.default_rng(1)
    findings = [stats.paired(f"f{i}", 0.2 + rng.standard_normal(30)) for i in range(3)]
    identity = stats.paired("an identity", np.ones(30)).sanity("true by construction")
    stats.decide(findings + [identity])
    assert identity.kind == "sanity" and identity.p_corrected == identity.p
    assert [v.p_corrected for v in findings] == list(stats.holm([v.p for v in findings]))


def test_the_lens_interval_is_two_sided_and_contains_the_accuracy():
    """An accuracy of 0.8 over 150 clips: a two-sided Wilson interval below 1 (a one-sided one printed 1.000)."""
    v = stats.above_chance("h", [True] * 120 + [False] * 30, 0.5)
    lo, hi = v.ci_lo + 0.5, v.ci_hi + 0.5
    assert lo < 0.8 < hi < 0.9 and v.p < 1e-10
    assert stats.wilson(6, 6)[0] < 1.0 == stats.wilson(6, 6)[1]
