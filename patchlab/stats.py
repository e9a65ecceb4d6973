"""Hypothesis tests over clips: paired differences with a bootstrap CI and a sign-flip permutation p-value (or,
for heavy-tailed differences, signed ranks and the Hodges-Lehmann shift),
accuracy against chance, multiple-comparison corrections, and a verdict that says `inconclusive` when n is
too small for the test to reach its level.

A verdict row: hypothesis, effect, ci_lo, ci_hi, p, p_corrected, n, verdict (supported / refuted / inconclusive).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

LEVEL = 0.05
# The smallest effect that matters, per unit a hypothesis measures its effect in (docs/statistics.md): below it a
# significant effect is `negligible`, not `supported`.
MIN_EFFECT = {
    "accuracy": 0.05,  # share of clips: lens or probe accuracy over a constant guess, enrichment's gain, cue rates
    "restoration": 0.10,  # normalized restoration Δ (0 = the corrupted run, 1 = the clean run)
    "p_true": 0.05,  # the true label's probability (RQ1, RQ2)
    "layers": 1.0,  # a critical layer, in layers (RQ3 within label)
    "correlation": 0.10,  # Spearman's rho (RQ3 across cells)
    "logit": 0.10,  # the answer's logit difference (RQ4 knockout)
    "depth": 0.05,  # a critical layer as a share of the model's depth (cross-model)
}


@dataclass
class Verdict:
    """One tested hypothesis: the effect (in the hypothesis' direction, > 0 supports it), its two-sided CI at the
    stated level, the one-sided p, n; `min_effect`, the smallest effect that matters (in the effect's units);
    `kind`, a finding or a sanity check (an identity on the model at hand, reported apart); `n_needed`, for an
    inconclusive finding, the clips that would make it decisive at the observed effect."""

    hypothesis: str
    effect: float
    ci_lo: float
    ci_hi: float
    p: float
    n: int
    test: str
    p_corrected: float = float("nan")
    verdict: str = "inconclusive"
    note: str = ""
    min_effect: float = 0.0
    kind: str = "finding"
    n_needed: float = float("nan")

    def matters(self, min_effect: float) -> Verdict:
        """This verdict with its smallest effect of interest set (returns self, for chaining)."""
        self.min_effect = float(min_effect)
        return self

    def sanity(self, why: str) -> Verdict:
        """Mark as a sanity check: true by construction on this model, so not counted as a finding."""
        self.kind = "sanity"
        self.note = f"{why}; {self.note}" if self.note else why
        return self

    def as_row(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict, prefix: str = "") -> Verdict:
        """The tested hypothesis of a decided row (`as_row`), undecided again: to decide it in a larger family."""
        keep = ("effect", "ci_lo", "ci_hi", "p", "n", "test", "note", "min_effect", "kind")
        return cls(prefix + row["hypothesis"], **{k: row[k] for k in keep if k in row})


def min_p(n: int, alternative: str = "greater") -> float:
    """The smallest p-value an exact sign-flip test over n clips can give (2^-n one-sided)."""
    return (2.0 if alternative == "two-sided" else 1.0) / 2.0**n


def bootstrap_ci(values: np.ndarray, n_boot: int, level: float, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over samples (NaNs dropped), drawing from `rng`."""
    v = values[~np.isnan(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    means = rng.choice(v, size=(n_boot, v.size), replace=True).mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_mean_ci(d: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over clips, from its own seeded stream."""
    return bootstrap_ci(np.asarray(d, dtype=float), n_boot, level, np.random.default_rng(seed))


def mean_interval(name: str, values, seed: int = 0) -> dict[str, float]:
    """`name`, `name_lo`, `name_hi`: the mean over clips (non-finite values dropped) and its two-sided 95%
    percentile-bootstrap interval, widened to hold the mean: a printed mean always sits inside its interval."""
    d = np.asarray(values, dtype=float)
    d = d[np.isfinite(d)]
    if not d.size:
        return {name: float("nan"), f"{name}_lo": float("nan"), f"{name}_hi": float("nan")}
    lo, hi = bootstrap_mean_ci(d, seed=seed)
    mean = float(d.mean())
    return {name: mean, f"{name}_lo": min(lo, mean), f"{name}_hi": max(hi, mean)}


def sign_flip_p(d: np.ndarray, alternative: str = "greater", n_resamples: int = 9999, seed: int = 0) -> float:
    """Permutation p-value of mean(d) under the null that each clip's difference is symmetric about 0 (exact
    enumeration up to 2^16 sign patterns, seeded Monte Carlo beyond)."""
    d = np.asarray(d, dtype=float)
    if d.size == 0:
        return float("nan")
    if d.size == 1 or not d.any():  # scipy needs two clips; one clip's two sign patterns give p = 1/2 or 1
        flipped = np.array([d.mean(), -d.mean()])
        hits = {"greater": flipped >= d.mean(), "less": flipped <= d.mean()}.get(
            alternative, np.abs(flipped) >= abs(d.mean())
        )
        return float(hits.mean())
    res = stats.permutation_test(
        (d, np.zeros_like(d)),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        alternative=alternative,
        n_resamples=n_resamples,
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(res.pvalue)


def differences(x: Sequence[float], y: Sequence[float] | None = None) -> np.ndarray:
    """Paired differences x - y over clips (y = 0 when omitted), non-finite ones dropped."""
    d = np.asarray(x, dtype=float) - (0.0 if y is None else np.asarray(y, dtype=float))
    return d[np.isfinite(d)]


def paired(
    hypothesis: str,
    x: Sequence[float],
    y: Sequence[float] | None = None,
    seed: int = 0,
    n_boot: int = 2000,
    level: float = 0.95,
) -> Verdict:
    """H: mean(x - y) > 0 over paired clips (y = 0 when omitted). Sign-flip p (one-sided), bootstrap CI."""
    d = differences(x, y)
    lo, hi = bootstrap_mean_ci(d, n_boot, level, seed)
    return Verdict(
        hypothesis, float(d.mean()) if d.size else float("nan"), lo, hi, sign_flip_p(d, seed=seed), int(d.size),
        "sign-flip permutation (one-sided), bootstrap CI of the mean",
    )  # fmt: skip


def hodges_lehmann(d: np.ndarray) -> float:
    """The Hodges-Lehmann estimate of a paired shift: the median of the Walsh averages (d_i + d_j) / 2, i <= j
    (the estimate that goes with the signed-rank test; a few extreme clips move it little)."""
    i, j = np.triu_indices(d.size)
    return float(np.median((d[i] + d[j]) / 2)) if d.size else float("nan")


def paired_ranks(
    hypothesis: str,
    x: Sequence[float],
    y: Sequence[float] | None = None,
    seed: int = 0,
    n_boot: int = 2000,
    level: float = 0.95,
) -> Verdict:
    """H: x - y is shifted above 0 over paired clips: Wilcoxon's signed-rank p (one-sided, exact for small n), the
    Hodges-Lehmann shift with a percentile bootstrap CI. For heavy-tailed differences (restorations are ratios over
    each clip's gap, so a clip with a small gap can restore +12 or -11), where a mean is decided by a few clips."""
    d = differences(x, y)
    if d.size == 0 or not d.any():
        p = float("nan") if d.size == 0 else 1.0
        lo = hi = float("nan") if d.size == 0 else 0.0
    else:
        p = float(stats.wilcoxon(d, alternative="greater").pvalue)
        rng = np.random.default_rng(seed)
        boots = [hodges_lehmann(rng.choice(d, d.size)) for _ in range(n_boot)]
        lo, hi = (float(q) for q in np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]))
    return Verdict(hypothesis, hodges_lehmann(d), lo, hi, p, int(d.size),
                   "Wilcoxon signed-rank (one-sided), Hodges-Lehmann shift with bootstrap CI")  # fmt: skip


def above_chance(hypothesis: str, correct: Sequence[bool], chance: float, level: float = 0.95) -> Verdict:
    """H: accuracy > chance. Exact binomial test (one-sided p); effect = accuracy - chance with the two-sided Wilson
    interval at `level` (a one-sided interval would print an upper bound of 1 whatever the data)."""
    k, n = int(np.sum(correct)), len(correct)
    if n == 0:
        return Verdict(hypothesis, float("nan"), float("nan"), float("nan"), float("nan"), 0, "binomial")
    p = stats.binomtest(k, n, chance, alternative="greater").pvalue
    lo, hi = wilson(k, n, level)
    return Verdict(hypothesis, k / n - chance, lo - chance, hi - chance, float(p), n,
                   f"exact binomial vs chance {chance:.3f} (one-sided p), two-sided Wilson CI")  # fmt: skip


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval of the proportion k/n at `level` (it always contains k/n)."""
    ci = stats.binomtest(k, n, 0.5, alternative="two-sided").proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def two_sample(
    hypothesis: str,
    x: Sequence[float],
    y: Sequence[float],
    strata_x: Sequence | None = None,
    strata_y: Sequence | None = None,
    seed: int = 0,
    n_resamples: int = 9999,
    n_boot: int = 2000,
    level: float = 0.95,
) -> Verdict:
    """H: x is larger than y (independent clips), within strata (e.g. label): effect = the clip-weighted mean over
    strata of mean(x) - mean(y); p from permuting group membership within each stratum (one-sided, seeded Monte
    Carlo), CI from a bootstrap within each stratum and group. Strata holding only one group do not count."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    sx = np.zeros(len(x), int) if strata_x is None else np.asarray(strata_x)
    sy = np.zeros(len(y), int) if strata_y is None else np.asarray(strata_y)
    keep_x, keep_y = np.isfinite(x), np.isfinite(y)
    x, sx, y, sy = x[keep_x], sx[keep_x], y[keep_y], sy[keep_y]
    both = sorted(set(sx.tolist()) & set(sy.tolist()))
    groups = [(x[sx == s], y[sy == s]) for s in both]
    n = sum(len(a) + len(b) for a, b in groups)
    test = "stratified permutation (one-sided), stratified bootstrap CI"
    if not groups:
        return Verdict(hypothesis, float("nan"), float("nan"), float("nan"), float("nan"), 0, test,
                       note="no stratum holds clips of both groups")  # fmt: skip
    weights = np.array([len(a) + len(b) for a, b in groups], dtype=float) / n

    def effect(gs) -> float:
        return float(sum(w * (a.mean() - b.mean()) for w, (a, b) in zip(weights, gs)))

    observed = effect(groups)
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_resamples):
        perm = []
        for a, b in groups:
            both_ = rng.permutation(np.concatenate([a, b]))
            perm.append((both_[: len(a)], both_[len(a) :]))
        hits += effect(perm) >= observed - 1e-12
    boots = [effect([(rng.choice(a, len(a)), rng.choice(b, len(b))) for a, b in groups]) for _ in range(n_boot)]
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return Verdict(hypothesis, observed, float(lo), float(hi), (hits + 1) / (n_resamples + 1), n, test)


def rank_correlation(
    hypothesis: str, x: Sequence[float], y: Sequence[float], seed: int = 0, n_boot: int = 2000, level: float = 0.95
) -> Verdict:
    """H: x and y rise together (Spearman's rho > 0; scipy's p, one-sided), bootstrap CI of rho over the pairs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    test = "Spearman rank correlation (one-sided), bootstrap CI"
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Verdict(hypothesis, float("nan"), float("nan"), float("nan"), float("nan"), int(len(x)), test,
                       note="too few distinct values for a rank correlation")  # fmt: skip
    res = stats.spearmanr(x, y, alternative="greater")
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            boots.append(stats.spearmanr(x[i], y[i]).statistic)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]) if boots else (float("nan"), float("nan"))
    return Verdict(hypothesis, float(res.statistic), float(lo), float(hi), float(res.pvalue), int(len(x)), test)


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaNs stay NaN and do not count as tests)."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def benjamini_hochberg(p: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (scipy's false_discovery_control), NaNs kept."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


VERDICTS = ("supported", "refuted", "negligible", "inconclusive")


def decide(verdicts: list[Verdict], alpha: float = LEVEL, correction: str = "holm", min_n: int = 8) -> list[Verdict]:
    """Correct the p-values over the family of findings (sanity checks are not in it) and give each a verdict.

    With m = the hypothesis' smallest effect of interest: supported: corrected p <= alpha and the CI clears m;
    refuted: the CI lies wholly on the other side of 0; negligible: the CI lies within (-m, m) (the effect, whatever
    its sign, is too small to matter); inconclusive otherwise, and always where n < min_n or the exact test could not
    reach alpha with this n (a verdict from a handful of clips is no verdict). An inconclusive finding gets
    `n_needed` (see `clips_needed`).
    """
    adjust = holm if correction == "holm" else benjamini_hochberg
    findings = [v for v in verdicts if v.kind == "finding"]
    for v, pc in zip(findings, adjust([v.p for v in findings])):
        v.p_corrected = float(pc)
    for v in verdicts:
        if v.kind != "finding":
            v.p_corrected = v.p
        m, pc = v.min_effect, v.p_corrected
        if v.n < min_n or min_p(v.n) > alpha:
            few = f"n = {v.n} is too few (at least {min_n})"
            if few not in v.note:  # a row decided before (`Verdict.from_row`) already says so
                v.note = f"{few}; {v.note}" if v.note else few
            v.verdict = "inconclusive"
        elif pc <= alpha and v.ci_lo > m:
            v.verdict = "supported"
        elif v.ci_hi < 0:
            v.verdict = "refuted"
        elif m > 0 and -m < v.ci_lo and v.ci_hi < m:
            v.verdict = "negligible"
        else:
            v.verdict = "inconclusive"
        if v.verdict == "inconclusive" and v.kind == "finding":
            v.n_needed = clips_needed(v, alpha)
    return verdicts


def clips_needed(v: Verdict, alpha: float = LEVEL, power: float = 0.8) -> float:
    """Clips at which a study of this hypothesis would reach a decisive verdict with probability `power`, were the
    true effect the observed one (normal approximation; the spread per clip read off the CI's half-width):
    supported where the effect exceeds m, negligible where it lies within (-m, m), refuted where it lies below -m.
    NaN where it cannot be told (no spread, or an effect exactly at a boundary)."""
    if not all(np.isfinite([v.effect, v.ci_lo, v.ci_hi])) or v.n < 2:
        return float("nan")
    sd = (v.ci_hi - v.ci_lo) / (2 * stats.norm.ppf(0.975)) * np.sqrt(v.n)  # the CIs are two-sided 95%
    m, e = v.min_effect, v.effect
    gap = e - m if e > m else (m - abs(e) if abs(e) < m else abs(e))  # to m (supported), to +-m, or to 0 (refuted)
    if sd <= 0 or gap <= 0:
        return float("nan")
    z = stats.norm.ppf(1 - alpha) + stats.norm.ppf(power)
    return float(np.ceil((z * sd / gap) ** 2))
